//! `import`, `images`, `inspect`, `rmi`, `save`, `sample`.

use std::io::{IsTerminal, Write};
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
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut on_progress = |p: layer_store::Progress| {
        if let Some(bar) = &bar {
            bar.set_message(format!("layer {}/{}", p.layer, p.layers));
            bar.set_length(p.total);
            bar.set_position(p.done);
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
        let names = if image.names.is_empty() { "<none>".to_string() } else { image.names.join(", ") };
        println!("Imported {} {} ({} layers)", human::short_id(&image.id.to_string()), names, image.layers.len());
    }
    Ok(())
}

pub fn images(app: &App, format: Format) -> Result<()> {
    let images = app.store.images()?;
    match format {
        Format::Json => {
            let list: Vec<_> = images
                .iter()
                .map(|i| {
                    json!({
                        "id": i.id.to_string(),
                        "names": i.names,
                        "layers": i.layers.len(),
                        "size": i.size(),
                        "created": i.created,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Table => {
            let mut rows = Vec::new();
            for i in &images {
                let size = human::size(i.size());
                let created = i.created.clone().unwrap_or_default();
                let names = if i.names.is_empty() { vec!["<none>".to_string()] } else { i.names.clone() };
                for n in names {
                    rows.push(vec![n, human::short_id(&i.id.to_string()), i.layers.len().to_string(), size.clone(), created.clone()]);
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
    let config_json: serde_json::Value = serde_json::from_slice(config.raw())?;
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            json!({
                "chain_id": l.chain_id.to_string(),
                "diff_id": l.diff_id.to_string(),
                "blob": l.blob.to_string(),
                "compression": l.compression.to_string(),
                "blob_size": l.blob_size,
                "size": l.size,
            })
        })
        .collect();
    let out = json!({
        "id": image.id.to_string(),
        "names": image.names,
        "created": image.created,
        "size": image.size(),
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
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    app.store.save(&image, &mut std::io::BufWriter::new(tmp.as_file_mut()))?;
    tmp.as_file_mut().flush()?;
    tmp.persist(output).with_context(|| format!("writing {}", output.display()))?;
    println!("Saved {} to {}", human::short_id(&image.id.to_string()), output.display());
    Ok(())
}

pub fn sample(app: &App, name: &str) -> Result<()> {
    let Some(busybox) = test_support::sample::find_busybox() else {
        bail!("the sample image needs a static busybox (install the Debian package busybox-static)");
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
