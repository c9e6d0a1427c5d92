//! `import`, `images`, `inspect`, `rmi`, `save`, `sample`.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::app::App;
use crate::cli::Format;
use crate::human;

pub fn import(app: &App, path: &Path, name: Option<&str>) -> Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let mut current_layer = 0;
    let mut on_progress = |p: &layer_store::Progress| {
        if let Some(bar) = &bar {
            if p.layer != current_layer {
                current_layer = p.layer;
                bar.reset();
                bar.set_message(format!("layer {}/{}", p.layer, p.layers));
            }
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
        }
    };
    let images = app
        .store
        .import_with_progress(path, name, &mut on_progress)
        .with_context(|| format!("importing {}", path.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for image in images {
        println!(
            "Imported {} {} ({} layers)",
            image.id.short(),
            names(&image.tags),
            image.chain_ids.len()
        );
    }
    Ok(())
}

/// A comma-separated list of an image's names, or `<none>`.
pub fn names(tags: &[layer_store::Reference]) -> String {
    if tags.is_empty() {
        "<none>".to_string()
    } else {
        tags.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn images(app: &App, format: Format) -> Result<()> {
    let images = app.store.images()?;
    let sizes: Vec<u64> = images
        .iter()
        .map(|i| app.image_size(i))
        .collect::<Result<_>>()?;
    match format {
        Format::Json => {
            let list: Vec<_> = images
                .iter()
                .zip(&sizes)
                .map(|(i, size)| {
                    json!({
                        "id": i.id.to_string(),
                        "names": i.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                        "layers": i.chain_ids.len(),
                        "size": size,
                        "created": i.created,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Table => {
            let mut rows = Vec::new();
            for (i, size) in images.iter().zip(&sizes) {
                let size = human::size(*size);
                let created = i.created.clone().unwrap_or_default();
                let names: Vec<String> = if i.tags.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.tags.iter().map(|t| t.to_string()).collect()
                };
                for n in names {
                    rows.push(vec![
                        n,
                        i.id.short().to_string(),
                        i.chain_ids.len().to_string(),
                        size.clone(),
                        created.clone(),
                    ]);
                }
            }
            human::table(&["NAME", "IMAGE ID", "LAYERS", "SIZE", "CREATED"], &rows);
        }
    }
    Ok(())
}

pub fn inspect(app: &App, reference: &str) -> Result<()> {
    let image = app.store.resolve_image(reference)?;
    let config = app.store.image_config(&image)?;
    let config_json: serde_json::Value = serde_json::from_slice(&config.raw)?;
    let layers: Vec<_> = app
        .layers(&image)?
        .iter()
        .map(|l| {
            json!({
                "chain_id": l.chain_id.to_string(),
                "diff_id": l.diff_id.to_string(),
                "blob": l.blob.to_string(),
                "compression": l.compression.to_string(),
                "blob_size": l.blob_size,
                "size": l.uncompressed_size,
                "media_type": l.media_type,
            })
        })
        .collect();
    let out = json!({
        "id": image.id.to_string(),
        "names": image.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "created": image.created,
        "size": app.image_size(&image)?,
        "layers": layers,
        "config": config_json,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn rmi(app: &App, reference: &str) -> Result<()> {
    let removed = app.store.remove_image(reference)?;
    for name in &removed.untagged {
        println!("Untagged: {name}");
    }
    if let Some(id) = &removed.deleted {
        println!("Deleted: {id}");
    }
    Ok(())
}

pub fn save(app: &App, reference: &str, output: &Path) -> Result<()> {
    let image = app.store.resolve_image(reference)?;
    crate::output::write_atomically(output, |out| Ok(app.store.save(&image, out)?))?;
    println!("Saved {} to {}", image.id.short(), output.display());
    Ok(())
}

pub fn sample(app: &App, name: &str) -> Result<()> {
    let Some(busybox) = test_support::sample::find_busybox() else {
        bail!(
            "the sample image needs a static busybox (install the Debian package busybox-static)"
        );
    };
    let image = test_support::sample::sample_image(&busybox)
        .with_context(|| format!("building the sample image from {}", busybox.display()))?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let archive = dir.path().join("sample.tar");
    image
        .write_docker_archive(&archive, &[name], test_support::DockerArchiveForm::Blobs)
        .context("writing the sample archive")?;
    import(app, &archive, Some(name))
}
