//! `create`, `rm`, `ps`, `diff`, `commit`.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::app::App;
use crate::cli::Format;
use crate::human;

pub fn create(app: &App, driver: Option<&str>, reference: &str, name: &str) -> Result<()> {
    let image = app.store.resolve_image(reference)?;
    let (driver, frontend) = app.choose(driver, None)?;
    let top = app.materialize(driver.as_ref(), &image, None)?;
    let missing = crate::init_layer::missing(app, driver.as_ref(), frontend, &top)?;
    let _lock = app.driver_lock()?;
    let container = app.store.create_container(name, &image, driver.name())?;
    let init = crate::init_layer::init_id(&container.id);
    let created =
        crate::init_layer::create(driver.as_ref(), &top, &init, &missing).and_then(|()| {
            driver
                .create_rw(&container.id, Some(&init))
                .with_context(|| format!("creating the writable layer of {name}"))
        });
    if let Err(e) = created {
        let _ = driver.remove(&init);
        let _ = app.store.remove_container(&container.name);
        return Err(e);
    }
    println!("{}", container.id);
    Ok(())
}

pub fn rm(app: &App, name: &str) -> Result<()> {
    let container = app.store.container(name)?;
    let mounted = app.mounts.mounts_of(&container.driver, &container.id)?;
    if let Some(m) = mounted.first() {
        bail!(
            "container {} is mounted at {}; run `lamina umount {}` first",
            container.name,
            m.mountpoint.display(),
            m.mountpoint.display()
        );
    }
    let driver = app.driver(&container.driver)?;
    let _lock = app.driver_lock()?;
    driver
        .remove(&container.id)
        .with_context(|| format!("removing the writable layer of {}", container.name))?;
    let init = crate::init_layer::init_id(&container.id);
    driver
        .remove(&init)
        .with_context(|| format!("removing the init layer of {}", container.name))?;
    app.store.remove_container(&container.name)?;
    println!("{}", container.name);
    Ok(())
}

pub fn ps(app: &App, format: Format) -> Result<()> {
    let containers = app.store.containers()?;
    let mounts = app.mounts.list()?;
    let rows: Vec<_> = containers
        .iter()
        .map(|c| {
            let at: Vec<String> = mounts
                .iter()
                .filter(|m| m.driver == c.driver && m.layer == c.id)
                .map(|m| m.mountpoint.display().to_string())
                .collect();
            let image = app
                .store
                .resolve_image(&c.image.to_string())
                .ok()
                .and_then(|i| i.tags.first().map(|t| t.to_string()))
                .unwrap_or_else(|| c.image.short().to_string());
            (c, image, at)
        })
        .collect();
    match format {
        Format::Json => {
            let list: Vec<_> = rows
                .iter()
                .map(|(c, image, at)| {
                    json!({"name": c.name, "id": c.id, "image": c.image.to_string(), "image_name": image,
                           "driver": c.driver, "created": c.created, "mounts": at})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(c, image, at)| {
                    vec![
                        c.name.clone(),
                        c.id.chars().take(12).collect(),
                        image,
                        c.driver.clone(),
                        if at.is_empty() {
                            "-".into()
                        } else {
                            at.join(",")
                        },
                    ]
                })
                .collect();
            human::table(&["NAME", "ID", "IMAGE", "DRIVER", "MOUNTED AT"], &table);
        }
    }
    Ok(())
}

pub fn diff(app: &App, name: &str, format: Format) -> Result<()> {
    let container = app.store.container(name)?;
    let driver = app.driver(&container.driver)?;
    let parent = app.container_parent(&container)?;
    let changes = driver
        .changes(&container.id, Some(&parent))
        .with_context(|| format!("listing the changes of {}", container.name))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&changes)?),
        Format::Table => {
            for c in changes {
                println!("{c}");
            }
        }
    }
    Ok(())
}

pub fn commit(app: &App, name: &str, reference: &str) -> Result<()> {
    let container = app.store.container(name)?;
    let driver = app.driver(&container.driver)?;
    let base = app.container_image(&container)?;
    let parent = app.container_parent(&container)?;
    let (mut reader, mut writer) = std::io::pipe().context("creating a pipe")?;
    let image = std::thread::scope(|s| {
        let (driver, container, parent) = (&driver, &container, &parent);
        let producer = s.spawn(move || {
            let r = driver.diff(&container.id, Some(parent), &mut writer);
            drop(writer);
            r
        });
        let created_by = format!("lamina commit {name}");
        let stored = app.store.commit_layer(
            &base,
            &mut reader,
            reference,
            &created_by,
            &layer_store::ConfigChanges::default(),
        );
        drop(reader);
        let produced = producer.join().expect("the diff writer does not panic");
        produced.with_context(|| format!("producing the diff of {name}"))?;
        stored.with_context(|| format!("storing the new layer of {name}"))
    })?;
    // The new layer joins the container's driver right away (for squashfs this
    // writes the layer's image), so the committed image is ready to use.
    app.materialize(driver.as_ref(), &image, None)
        .with_context(|| format!("adding the committed layer to {}", driver.name()))?;
    println!("{}", image.id);
    Ok(())
}
