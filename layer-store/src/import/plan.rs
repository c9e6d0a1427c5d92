//! What an import will store, and streaming its layers into staging.
//!
//! Format parsers turn their input into [`PlannedImage`]s (configs and
//! manifests already read and verified, layers named by archive path). The
//! layers are then streamed into a staging directory and verified against
//! their descriptors and the configs' diff IDs before anything is published.

use std::collections::HashMap;

use crate::blob::{stage_layer, StagedBlob};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::import::publish::{ReadyImage, ReadyLayer};
use crate::import::source::{open_member, Source};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::staging::StagingDir;

/// An image found in the input, with its config verified and layers yet to stream.
#[derive(Debug, Clone)]
pub(crate) struct PlannedImage {
    /// The config bytes exactly as found.
    pub(crate) config: Vec<u8>,
    /// `rootfs.diff_ids` of the config, one per layer.
    pub(crate) diff_ids: Vec<Digest>,
    /// `created` of the config.
    pub(crate) created: Option<String>,
    /// The manifest bytes, when the input has a content-addressed manifest.
    pub(crate) manifest: Option<Vec<u8>>,
    /// The layers, bottom-most first.
    pub(crate) layers: Vec<PlannedLayer>,
    /// The tags it gets.
    pub(crate) names: Vec<Reference>,
}

/// One layer of a [`PlannedImage`].
#[derive(Debug, Clone)]
pub(crate) struct PlannedLayer {
    /// Normalised path of the layer in the input.
    pub(crate) member: String,
    /// The blob digest the input promises, if it names one.
    pub(crate) expected_digest: Option<Digest>,
    /// The blob size the input promises, if it names one.
    pub(crate) expected_size: Option<u64>,
    /// The media type the input gives, if any.
    pub(crate) media_type: Option<String>,
    /// Names the layer in errors, e.g. "layer 2 of manifest.json".
    pub(crate) context: String,
}

/// Streams every distinct layer of `images` from `source` into `staging`,
/// verifies blob digests, sizes and diff IDs, and returns what to publish.
pub(crate) fn stage_images<'a>(
    staging: &StagingDir,
    source: &dyn Source,
    images: &[PlannedImage],
    staged: &'a mut HashMap<String, StagedBlob>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<ReadyImage<'a>>> {
    let mut members: Vec<(&str, &PlannedLayer)> = Vec::new();
    for layer in images.iter().flat_map(|image| &image.layers) {
        if !members.iter().any(|(member, _)| *member == layer.member) {
            members.push((&layer.member, layer));
        }
    }
    // Fail fast on missing blobs before streaming anything large.
    for (member, layer) in &members {
        if source.size_of(member)?.is_none() {
            return Err(StoreError::MissingFile {
                context: layer.context.clone(),
                path: member.to_string(),
                source_name: source.name(),
            });
        }
    }

    let count = members.len();
    for (index, (member, first_use)) in members.iter().enumerate() {
        let (mut reader, size) = open_member(source, member, &first_use.context)?;
        let mut report = |done: u64| {
            progress(&Progress {
                layer: index + 1,
                layers: count,
                digest: first_use.expected_digest.clone(),
                bytes_done: done,
                bytes_total: size,
            })
        };
        report(0);
        let blob = stage_layer(staging, &mut reader, &mut report, &first_use.context)?;
        tracing::debug!(member, digest = %blob.digest, diff_id = %blob.diff_id, "staged layer");
        staged.insert(member.to_string(), blob);
    }

    for image in images {
        for layer in &image.layers {
            verify_blob(&staged[&layer.member], layer)?;
        }
        for (layer, expected) in image.layers.iter().zip(&image.diff_ids) {
            let actual = &staged[&layer.member].diff_id;
            if actual != expected {
                return Err(StoreError::DiffIdMismatch {
                    context: layer.context.clone(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                });
            }
        }
    }

    let staged: &'a HashMap<String, StagedBlob> = staged;
    Ok(images
        .iter()
        .map(|image| ReadyImage {
            config: image.config.clone(),
            created: image.created.clone(),
            manifest: image.manifest.clone(),
            base_chain_ids: Vec::new(),
            layers: image
                .layers
                .iter()
                .map(|layer| {
                    let blob = &staged[&layer.member];
                    ReadyLayer {
                        blob,
                        media_type: layer
                            .media_type
                            .clone()
                            .unwrap_or_else(|| blob.compression.oci_layer_media_type().to_string()),
                    }
                })
                .collect(),
            names: image.names.clone(),
        })
        .collect())
}

/// Checks a staged blob against the digest and size its descriptor promises.
fn verify_blob(blob: &StagedBlob, layer: &PlannedLayer) -> Result<()> {
    if let Some(expected) = layer.expected_size {
        if expected != blob.size {
            return Err(StoreError::SizeMismatch {
                context: layer.context.clone(),
                expected,
                actual: blob.size,
            });
        }
    }
    if let Some(expected) = &layer.expected_digest {
        if expected != &blob.digest {
            return Err(StoreError::DigestMismatch {
                context: layer.context.clone(),
                expected: expected.clone(),
                actual: blob.digest.clone(),
            });
        }
    }
    Ok(())
}
