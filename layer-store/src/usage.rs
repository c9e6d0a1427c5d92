//! Disk usage (`df`): image sizes with shared layers accounted for.

use std::collections::HashMap;
use std::fs;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::fsutil::list_names;
use crate::reference::Reference;
use crate::store::Store;

/// Disk usage of one image. Sizes are uncompressed layer sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// The image ID.
    pub id: Digest,
    /// Its tags.
    pub tags: Vec<Reference>,
    /// Total size of its layers.
    pub size: u64,
    /// Size of its layers that other images also use.
    pub shared_size: u64,
    /// Size of its layers no other image uses (`size - shared_size`).
    pub unique_size: u64,
    /// How many containers use it.
    pub containers: usize,
}

/// Disk usage of the whole store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Per image, ordered by ID.
    pub images: Vec<ImageUsage>,
    /// Uncompressed size of all layers used by images, shared layers counted once.
    pub layers_size: u64,
    /// Number of layer records.
    pub layer_count: usize,
    /// Bytes of all blob files on disk (layers as stored, configs, manifests).
    pub blob_bytes: u64,
    /// Number of containers.
    pub containers: usize,
}

impl Store {
    /// Computes disk usage.
    pub fn df(&self) -> Result<DiskUsage> {
        let images = self.images()?;
        let containers = self.container_records()?;
        let layers: HashMap<Digest, u64> = self
            .layer_records()?
            .into_iter()
            .map(|layer| (layer.chain_id, layer.uncompressed_size))
            .collect();
        let mut users: HashMap<&Digest, usize> = HashMap::new();
        for image in &images {
            for chain_id in &image.chain_ids {
                *users.entry(chain_id).or_default() += 1;
            }
        }
        let size_of = |chain_id: &Digest| layers.get(chain_id).copied().unwrap_or(0);
        let layers_size = users.keys().map(|chain_id| size_of(chain_id)).sum();
        let usage = images
            .iter()
            .map(|image| {
                let size: u64 = image.chain_ids.iter().map(size_of).sum();
                let shared_size: u64 = image
                    .chain_ids
                    .iter()
                    .filter(|chain_id| users.get(chain_id).copied().unwrap_or(0) > 1)
                    .map(size_of)
                    .sum();
                ImageUsage {
                    id: image.id.clone(),
                    tags: image.tags.clone(),
                    size,
                    shared_size,
                    unique_size: size - shared_size,
                    containers: containers.iter().filter(|c| c.image == image.id).count(),
                }
            })
            .collect();
        let blobs_dir = self.paths().blobs_dir();
        let mut blob_bytes = 0;
        for name in list_names(&blobs_dir, "")? {
            let path = blobs_dir.join(&name);
            blob_bytes += fs::metadata(&path)
                .io_context(|| format!("reading {}", path.display()))?
                .len();
        }
        Ok(DiskUsage {
            images: usage,
            layers_size,
            layer_count: layers.len(),
            blob_bytes,
            containers: containers.len(),
        })
    }
}
