//! Looking at single layers: `history`, and `mount --layer N`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::mount_table::MountRecord;
use drivers::FrontendKind;
use layer_store::Image;
use serde::Serialize;

use crate::app::App;
use crate::cli::Format;
use crate::human;

/// What one layer does to the tree below it.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct LayerSummary {
    /// Paths the layer creates.
    pub added: u64,
    /// Paths the layer replaces (non-directories that existed below).
    pub changed: u64,
    /// Whiteouts and opaque markers.
    pub whited_out: u64,
}

/// Normalises a tar path: no leading `./` or `/`, no trailing `/`.
fn normalise(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = s
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    s.to_string()
}

fn remove_subtree(existing: &mut BTreeSet<String>, path: &str) {
    existing.remove(path);
    let prefix = format!("{path}/");
    let doomed: Vec<String> = existing
        .range(prefix.clone()..)
        .take_while(|p| p.starts_with(&prefix))
        .cloned()
        .collect();
    for p in doomed {
        existing.remove(&p);
    }
}

/// Reads one layer tar and counts what it adds, changes and whites out given the
/// paths that exist below it; updates `existing` to the tree after the layer.
pub fn summarize_layer(tar: impl Read, existing: &mut BTreeSet<String>) -> Result<LayerSummary> {
    let mut summary = LayerSummary::default();
    let mut archive = tar::Archive::new(tar);
    let mut opaque_dirs = Vec::new();
    let mut added_here = BTreeSet::new();
    for entry in archive.entries().context("reading the layer tar")? {
        let entry = entry.context("reading a layer tar entry")?;
        let path = normalise(&entry.path().context("a layer tar entry path")?);
        if path.is_empty() {
            continue;
        }
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            summary.whited_out += 1;
            opaque_dirs.push(dir);
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            summary.whited_out += 1;
            let victim = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            remove_subtree(existing, &victim);
            continue;
        }
        let is_dir = entry.header().entry_type().is_dir();
        if existing.contains(&path) {
            if !is_dir {
                summary.changed += 1;
            }
        } else {
            summary.added += 1;
            existing.insert(path.clone());
        }
        added_here.insert(path);
    }
    for dir in opaque_dirs {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = existing
            .iter()
            .filter(|p| p.starts_with(&prefix) && *p != &dir && !added_here.contains(*p))
            .cloned()
            .collect();
        for p in doomed {
            existing.remove(&p);
        }
    }
    Ok(summary)
}

#[derive(Serialize)]
struct HistoryRow {
    layer: usize,
    diff_id: String,
    blob: String,
    size: u64,
    created_by: String,
    #[serde(flatten)]
    summary: LayerSummary,
}

pub fn history(app: &App, reference: &str, format: Format) -> Result<()> {
    let image = app.store.resolve_image(reference)?;
    let history = app.store.history(&image)?;
    let layers = app.layers(&image)?;
    let mut existing = BTreeSet::new();
    let mut rows = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let tar = app.store.layer_tar(layer)?;
        let summary =
            summarize_layer(tar, &mut existing).with_context(|| format!("layer {}", i + 1))?;
        rows.push(HistoryRow {
            layer: i + 1,
            diff_id: layer.diff_id.to_string(),
            blob: layer.blob.to_string(),
            size: layer.uncompressed_size,
            created_by: history
                .get(i)
                .map(|h| h.created_by.clone())
                .unwrap_or_default(),
            summary,
        });
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.layer.to_string(),
                        human::short_id(&r.diff_id),
                        human::size(r.size),
                        r.summary.added.to_string(),
                        r.summary.changed.to_string(),
                        r.summary.whited_out.to_string(),
                        r.created_by.clone(),
                    ]
                })
                .collect();
            human::table(
                &[
                    "LAYER",
                    "DIFF ID",
                    "SIZE",
                    "ADDED",
                    "CHANGED",
                    "WHITED OUT",
                    "CREATED BY",
                ],
                &table,
            );
        }
    }
    Ok(())
}

/// Mounts layer `n` (1-based) of `image` on its own, read-only, with its whiteouts
/// shown as the `.wh.` files of the layer tar.
pub fn mount_layer_view(
    app: &App,
    image: &Image,
    n: usize,
    label: &str,
    mountpoint: &Path,
) -> Result<MountRecord> {
    let layers = app.layers(image)?;
    if n == 0 || n > layers.len() {
        bail!(
            "--layer {n}: image {label} has layers 1 to {}",
            layers.len()
        );
    }
    let layer = &layers[n - 1];
    let views = app.root().join("layer-views");
    let dir = views.join(layer.chain_id.hex());
    if !dir.exists() {
        std::fs::create_dir_all(&views).with_context(|| format!("creating {}", views.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&views)
            .context("creating a staging directory")?;
        let mut tar = app.store.layer_tar(layer)?;
        apply_layer(staging.path(), &mut tar, WhiteoutMode::Aufs)
            .with_context(|| format!("unpacking layer {n} ({})", layer.diff_id))?;
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &dir) {
            let _ = std::fs::remove_dir_all(&staged);
            if !dir.exists() {
                return Err(e).with_context(|| format!("publishing {}", dir.display()));
            }
        }
    }
    let record = MountRecord {
        mountpoint: std::fs::canonicalize(mountpoint)
            .with_context(|| format!("mountpoint {}", mountpoint.display()))?,
        driver: "layer-view".into(),
        layer: layer.chain_id.hex().to_string(),
        label: format!("{label} (layer {n} only)"),
        frontend: FrontendKind::Kernel,
        read_only: true,
        shares: None,
        pid: None,
        layer_mounts: Vec::new(),
        foreground: false,
        presentation: String::new(),
    };
    Ok(app.mounts.adopt(record, |target| {
        drivers::kernel::bind_mount(&dir, target, true)
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, bool)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, dir) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if *dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn counts_follow_the_tree_below() {
        let mut existing = BTreeSet::new();
        let l1 = tar_of(&[
            ("etc", true),
            ("etc/a", false),
            ("etc/b", false),
            ("opt", true),
            ("opt/x", false),
        ]);
        let s1 = summarize_layer(&l1[..], &mut existing).unwrap();
        assert_eq!(
            s1,
            LayerSummary {
                added: 5,
                changed: 0,
                whited_out: 0
            }
        );
        let l2 = tar_of(&[
            ("etc", true),
            ("etc/a", false),
            ("etc/.wh.b", false),
            ("opt", true),
            ("opt/.wh..wh..opq", false),
            ("opt/y", false),
        ]);
        let s2 = summarize_layer(&l2[..], &mut existing).unwrap();
        assert_eq!(
            s2,
            LayerSummary {
                added: 1,
                changed: 1,
                whited_out: 2
            }
        );
        assert!(!existing.contains("etc/b"));
        assert!(!existing.contains("opt/x"));
        assert!(existing.contains("opt/y"));
    }
}
