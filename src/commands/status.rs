//! `gc`, `df`, `drivers`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::json;

use crate::app::App;
use crate::cli::Format;
use crate::human;
use crate::registry;

/// Removes unreferenced store data, then every driver's layers that no image or
/// container refers to any more, and unmounted single-layer views.
pub fn gc(app: &App) -> Result<()> {
    let report = app
        .store
        .gc()
        .context("collecting unreferenced store data")?;
    let mut live: BTreeSet<String> = BTreeSet::new();
    for image in app.store.images()? {
        live.extend(image.chain_ids.iter().map(|c| c.hex().to_string()));
    }
    let containers = app.store.containers()?;
    live.extend(containers.iter().map(|c| c.id.clone()));
    live.extend(containers.iter().map(|c| crate::init_layer::init_id(&c.id)));
    let mounted: BTreeSet<(String, String)> = app
        .mounts
        .list()?
        .into_iter()
        .map(|m| (m.driver, m.layer))
        .collect();
    let mut driver_layers = 0;
    let _lock = app.driver_lock()?;
    for name in registry::DRIVER_NAMES {
        let Ok(driver) = app.driver(name) else {
            continue;
        };
        if !driver.home().exists() {
            continue;
        }
        driver.cleanup()?;
        for id in driver.layers()? {
            if !live.contains(&id) && !mounted.contains(&(name.to_string(), id.clone())) {
                driver
                    .remove(&id)
                    .with_context(|| format!("removing {name} layer {id}"))?;
                driver_layers += 1;
            }
        }
    }
    let views = app.root().join("layer-views");
    if let Ok(entries) = std::fs::read_dir(&views) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !mounted.contains(&("layer-view".to_string(), name)) {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    println!(
        "Removed {} images, {} layers, {} blobs ({}), {} driver layers",
        report.removed_images.len(),
        report.removed_layers.len(),
        report.removed_blobs.len(),
        human::size(report.reclaimed_bytes),
        driver_layers
    );
    Ok(())
}

pub fn df(app: &App, format: Format) -> Result<()> {
    let usage = app.store.df()?;
    match format {
        Format::Json => {
            let images: Vec<_> = usage
                .images
                .iter()
                .map(|i| {
                    json!({"id": i.id.to_string(), "names": i.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                           "size": i.size, "shared_size": i.shared_size, "unique_size": i.unique_size,
                           "containers": i.containers})
                })
                .collect();
            let out = json!({"images": images, "layers": usage.layer_count, "layers_size": usage.layers_size,
                             "blob_bytes": usage.blob_bytes, "containers": usage.containers});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = usage
                .images
                .iter()
                .map(|i| {
                    vec![
                        crate::commands::image::names(&i.tags),
                        i.id.short().to_string(),
                        human::size(i.size),
                        human::size(i.shared_size),
                        human::size(i.unique_size),
                    ]
                })
                .collect();
            human::table(&["IMAGE", "ID", "SIZE", "SHARED", "UNIQUE"], &rows);
            println!();
            println!(
                "Images: {}  Layers: {}  Containers: {}  Total (shared layers once): {}  Blobs on disk: {}",
                usage.images.len(),
                usage.layer_count,
                usage.containers,
                human::size(usage.layers_size),
                human::size(usage.blob_bytes)
            );
        }
    }
    Ok(())
}

pub fn drivers(app: &App, format: Format) -> Result<()> {
    let rows = registry::availability(app.root());
    let (default_driver, default_frontend) = registry::default_choice(app.root());
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "default": {"driver": default_driver, "frontend": default_frontend},
                "drivers": rows,
            }))?
        ),
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let default = r.driver == default_driver && r.frontend == default_frontend;
                    vec![
                        r.driver.clone(),
                        r.frontend.to_string(),
                        if r.available {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        match (&r.reason, default) {
                            (Some(why), _) => why.clone(),
                            (None, true) => "default".into(),
                            (None, false) => String::new(),
                        },
                    ]
                })
                .collect();
            human::table(&["DRIVER", "FRONTEND", "AVAILABLE", "NOTE"], &table);
        }
    }
    Ok(())
}
