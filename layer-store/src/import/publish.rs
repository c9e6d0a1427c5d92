//! Publishing verified, staged images into the store.
//!
//! Runs under the store lock, in the order blobs → layer records → image
//! records → tags, so that a crash at any point leaves at most complete but
//! unreferenced blobs and records (which `gc` removes), never a record that
//! points at something missing. Everything already present (from an earlier
//! or concurrent import) is re-checked under the lock and kept.

use std::collections::HashSet;

use crate::blob::{stage_bytes, StagedBlob};
use crate::chain::chain_id;
use crate::digest::Digest;
use crate::error::Result;
use crate::image::Image;
use crate::layer::Layer;
use crate::reference::Reference;
use crate::staging::StagingDir;
use crate::store::Store;

/// An image whose content is staged and verified.
#[derive(Debug)]
pub(crate) struct ReadyImage<'a> {
    /// The config bytes (their digest is the image ID).
    pub(crate) config: Vec<u8>,
    /// `created` of the config.
    pub(crate) created: Option<String>,
    /// The manifest bytes, if any.
    pub(crate) manifest: Option<Vec<u8>>,
    /// Chain IDs of layers already in the store that the new layers go on
    /// top of (a commit's base image), bottom-most first; empty for imports.
    pub(crate) base_chain_ids: Vec<Digest>,
    /// The new layers, bottom-most first.
    pub(crate) layers: Vec<ReadyLayer<'a>>,
    /// Tags to point at the image.
    pub(crate) names: Vec<Reference>,
}

/// One staged layer of a [`ReadyImage`].
#[derive(Debug)]
pub(crate) struct ReadyLayer<'a> {
    /// The staged, verified blob.
    pub(crate) blob: &'a StagedBlob,
    /// Its media type.
    pub(crate) media_type: String,
}

/// Publishes `images` and returns them (deduplicated, in input order) with their tags.
pub(crate) fn publish(
    store: &Store,
    staging: &StagingDir,
    images: &[ReadyImage<'_>],
) -> Result<Vec<Image>> {
    let _lock = store.lock()?;

    let mut blobs: Vec<(std::path::PathBuf, Digest)> = Vec::new();
    let mut blob_digests: HashSet<Digest> = HashSet::new();
    let mut layer_records: Vec<Layer> = Vec::new();
    let mut chains_seen: HashSet<Digest> = HashSet::new();
    let mut records: Vec<Image> = Vec::new();

    for image in images {
        for base in &image.base_chain_ids {
            // The base must still be there (gc may have run since it was resolved).
            store.layer(base)?;
        }
        let mut chain = image.base_chain_ids.clone();
        for layer in &image.layers {
            let next = chain_id(chain.last(), &layer.blob.diff_id);
            chain.push(next);
        }
        let first_new = image.base_chain_ids.len();
        for (offset, layer) in image.layers.iter().enumerate() {
            let index = first_new + offset;
            let chain_id = &chain[index];
            if !chains_seen.insert(chain_id.clone()) {
                continue;
            }
            let existing = store.read_layer_record(chain_id)?;
            if existing.is_some_and(|record| store.has_blob(&record.blob)) {
                continue;
            }
            if blob_digests.insert(layer.blob.digest.clone()) {
                blobs.push((layer.blob.path.clone(), layer.blob.digest.clone()));
            }
            layer_records.push(Layer {
                chain_id: chain_id.clone(),
                diff_id: layer.blob.diff_id.clone(),
                parent: index.checked_sub(1).map(|below| chain[below].clone()),
                blob: layer.blob.digest.clone(),
                blob_size: layer.blob.size,
                compression: layer.blob.compression,
                uncompressed_size: layer.blob.uncompressed_size,
                media_type: layer.media_type.clone(),
            });
        }

        let config_digest = Digest::of_bytes(&image.config);
        if blob_digests.insert(config_digest.clone()) {
            blobs.push((stage_bytes(staging, &image.config)?, config_digest.clone()));
        }
        let manifest_digest = match &image.manifest {
            Some(manifest) => {
                let digest = Digest::of_bytes(manifest);
                if blob_digests.insert(digest.clone()) {
                    blobs.push((stage_bytes(staging, manifest)?, digest.clone()));
                }
                Some(digest)
            }
            None => None,
        };
        if !records.iter().any(|record| record.id == config_digest) {
            records.push(Image {
                id: config_digest.clone(),
                config_digest,
                chain_ids: chain,
                created: image.created.clone(),
                manifest_digest,
                tags: Vec::new(),
            });
        }
    }

    for (path, digest) in &blobs {
        store.publish_blob(path, digest)?;
    }
    store.sync_blobs()?;
    for layer in &layer_records {
        store.write_layer_record(staging, layer)?;
    }
    for record in &records {
        match store.read_image_record(&record.id)? {
            Some(existing)
                if existing.manifest_digest.is_some() || record.manifest_digest.is_none() => {}
            _ => store.write_image_record(staging, record)?,
        }
    }
    let mut tags = store.read_tags()?;
    let mut retagged = false;
    for image in images {
        let id = Digest::of_bytes(&image.config);
        for name in &image.names {
            if tags.get(name) != Some(&id) {
                tags.set(name.clone(), id.clone());
                retagged = true;
            }
        }
    }
    if retagged {
        store.write_tags(staging, &tags)?;
    }

    Ok(records
        .into_iter()
        .map(|mut record| {
            record.tags = tags.tags_of(&record.id);
            tracing::info!(image = %record.id, tags = ?record.tags, "published image");
            record
        })
        .collect())
}
