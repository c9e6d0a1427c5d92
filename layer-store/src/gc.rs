//! Garbage collection: removing what nothing references any more.

use std::collections::HashSet;
use std::fs;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::fsutil::{list_names, remove_file_if_exists, sync_dir};
use crate::store::Store;

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Image records removed (untagged and unused by containers).
    pub removed_images: Vec<Digest>,
    /// Chain IDs of the layer records removed; drivers should drop their data for these.
    pub removed_layers: Vec<Digest>,
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Bytes freed by removing blobs.
    pub reclaimed_bytes: u64,
}

impl Store {
    /// Removes image records that have no tag and no container, then layer
    /// records no remaining image uses, then blobs no remaining image or layer
    /// references. Holds the store lock throughout.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();

        let tags = self.read_tags()?;
        let tagged: HashSet<&Digest> = tags.tagged_ids().collect();
        let containers = self.container_records()?;
        let used: HashSet<&Digest> = containers
            .iter()
            .map(|container| &container.image)
            .collect();
        let mut kept_images = Vec::new();
        for image in self.image_records()? {
            if tagged.contains(&image.id) || used.contains(&image.id) {
                kept_images.push(image);
            } else {
                remove_file_if_exists(&self.paths().image(&image.id))?;
                report.removed_images.push(image.id);
            }
        }
        if !report.removed_images.is_empty() {
            sync_dir(&self.paths().images_dir())?;
        }

        let live_chains: HashSet<&Digest> = kept_images
            .iter()
            .flat_map(|image| &image.chain_ids)
            .collect();
        let mut live_blobs: HashSet<Digest> = HashSet::new();
        for image in &kept_images {
            live_blobs.insert(image.config_digest.clone());
            live_blobs.extend(image.manifest_digest.clone());
        }
        for layer in self.layer_records()? {
            if live_chains.contains(&layer.chain_id) {
                live_blobs.insert(layer.blob);
            } else {
                remove_file_if_exists(&self.paths().layer(&layer.chain_id))?;
                report.removed_layers.push(layer.chain_id);
            }
        }
        if !report.removed_layers.is_empty() {
            sync_dir(&self.paths().layers_dir())?;
        }

        for hex in list_names(&self.paths().blobs_dir(), "")? {
            let Ok(digest) = Digest::from_hex(&hex) else {
                continue;
            };
            if live_blobs.contains(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            let size = fs::metadata(&path)
                .io_context(|| format!("reading {}", path.display()))?
                .len();
            if remove_file_if_exists(&path)? {
                report.reclaimed_bytes += size;
                report.removed_blobs.push(digest);
            }
        }
        if !report.removed_blobs.is_empty() {
            self.sync_blobs()?;
        }
        tracing::info!(
            images = report.removed_images.len(),
            layers = report.removed_layers.len(),
            blobs = report.removed_blobs.len(),
            bytes = report.reclaimed_bytes,
            "garbage collected"
        );
        Ok(report)
    }
}
