//! OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`), as a
//! directory or a tar, with OCI or Docker v2 media types.
//!
//! Index entries are followed through nested indexes down to image
//! manifests; per image the manifest for linux and the host architecture is
//! chosen (a lone manifest without a platform is taken as is). Every blob read
//! is checked against its descriptor's digest and size.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::import::naming::{fallback_reference, reference_for_ref_name};
use crate::import::plan::{PlannedImage, PlannedLayer};
use crate::import::source::{read_metadata, Source, METADATA_LIMIT};
use crate::media_type::{is_config, is_layer, manifest_kind, ManifestKind};
use crate::oci::{Descriptor, Index, LayoutFile, Manifest};
use crate::platform::Platform;
use crate::reference::Reference;

/// The layout marker file.
pub(crate) const LAYOUT_FILE: &str = "oci-layout";
/// The top-level index.
pub(crate) const INDEX_FILE: &str = "index.json";

/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 8;

/// Reads the layout's indexes, manifests and configs; see [`crate::import::naming`] for names.
pub(crate) fn plan(
    source: &dyn Source,
    name: Option<&Reference>,
    input: &Path,
) -> Result<Vec<PlannedImage>> {
    let _layout: LayoutFile = parse_json(
        &read_metadata(source, LAYOUT_FILE, LAYOUT_FILE)?,
        LAYOUT_FILE,
    )?;
    let index: Index = parse_json(&read_metadata(source, INDEX_FILE, INDEX_FILE)?, INDEX_FILE)?;
    if let Some(media_type) = &index.media_type {
        if manifest_kind(media_type) != Some(ManifestKind::Index) {
            return Err(StoreError::UnknownMediaType {
                context: INDEX_FILE.to_string(),
                media_type: media_type.clone(),
            });
        }
    }
    let host = Platform::host();
    let named: Vec<(&Descriptor, &str)> = index
        .manifests
        .iter()
        .filter_map(|descriptor| descriptor.ref_name().map(|ref_name| (descriptor, ref_name)))
        .collect();

    if named.is_empty() {
        let mut leaves = Vec::new();
        for (position, descriptor) in index.manifests.iter().enumerate() {
            let context = format!("entry {} of {INDEX_FILE}", position + 1);
            collect_manifests(source, descriptor, &context, 0, &mut leaves)?;
        }
        let chosen = select_platform(&leaves, &host, INDEX_FILE)?;
        let mut image = plan_manifest(source, chosen)?;
        image
            .names
            .push(name.cloned().unwrap_or_else(|| fallback_reference(input)));
        return Ok(vec![image]);
    }

    let mut images: Vec<PlannedImage> = Vec::new();
    let mut name_used = false;
    for (descriptor, ref_name) in named {
        let context = format!("{INDEX_FILE} entry {ref_name:?}");
        let mut leaves = Vec::new();
        collect_manifests(source, descriptor, &context, 0, &mut leaves)?;
        let chosen = select_platform(&leaves, &host, &context)?;
        let (reference, used) = reference_for_ref_name(ref_name, name, input)?;
        name_used |= used;
        match images
            .iter_mut()
            .find(|image| image.manifest_digest() == chosen.digest)
        {
            Some(image) => image.names.push(reference),
            None => {
                let mut image = plan_manifest(source, chosen)?;
                image.names.push(reference);
                images.push(image);
            }
        }
    }
    if let (Some(name), false) = (name, name_used) {
        if images.len() != 1 {
            return Err(StoreError::NameNeedsSingleImage {
                path: input.to_path_buf(),
                count: images.len(),
            });
        }
        images[0].names.push(name.clone());
    }
    Ok(images)
}

impl PlannedImage {
    /// Digest of the manifest this image was read from.
    fn manifest_digest(&self) -> Digest {
        Digest::of_bytes(self.manifest.as_deref().unwrap_or_default())
    }
}

/// Follows `descriptor` through nested indexes, appending every image manifest found.
fn collect_manifests(
    source: &dyn Source,
    descriptor: &Descriptor,
    context: &str,
    depth: usize,
    out: &mut Vec<Descriptor>,
) -> Result<()> {
    if depth > MAX_INDEX_DEPTH {
        return Err(StoreError::Corrupt {
            context: context.to_string(),
            reason: format!("indexes nest more than {MAX_INDEX_DEPTH} levels deep"),
        });
    }
    let kind = match &descriptor.media_type {
        Some(media_type) => {
            manifest_kind(media_type).ok_or_else(|| StoreError::UnknownMediaType {
                context: format!("{context} ({})", descriptor.digest),
                media_type: media_type.clone(),
            })?
        }
        None => kind_from_content(&read_blob(source, descriptor, context)?, context)?,
    };
    match kind {
        ManifestKind::Manifest => out.push(descriptor.clone()),
        ManifestKind::Index => {
            let index_context = format!("index {}", descriptor.digest);
            let index: Index = parse_json(
                &read_blob(source, descriptor, &index_context)?,
                &index_context,
            )?;
            for (position, entry) in index.manifests.iter().enumerate() {
                let entry_context = format!("entry {} of {index_context}", position + 1);
                collect_manifests(source, entry, &entry_context, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

/// The kind of a manifest-level document whose descriptor has no media type.
fn kind_from_content(bytes: &[u8], context: &str) -> Result<ManifestKind> {
    let value: Value = parse_json(bytes, context)?;
    if let Some(media_type) = value.get("mediaType").and_then(Value::as_str) {
        return manifest_kind(media_type).ok_or_else(|| StoreError::UnknownMediaType {
            context: context.to_string(),
            media_type: media_type.to_string(),
        });
    }
    if value.get("manifests").is_some() {
        Ok(ManifestKind::Index)
    } else if value.get("config").is_some() {
        Ok(ManifestKind::Manifest)
    } else {
        Err(StoreError::UnknownMediaType {
            context: context.to_string(),
            media_type: String::new(),
        })
    }
}

/// Picks the manifest for `host`; a lone manifest without a platform is taken.
fn select_platform<'a>(
    leaves: &'a [Descriptor],
    host: &Platform,
    context: &str,
) -> Result<&'a Descriptor> {
    let matching = leaves.iter().find(|leaf| {
        leaf.platform
            .as_ref()
            .is_some_and(|platform| platform.runs_on(host))
    });
    if let Some(leaf) = matching {
        return Ok(leaf);
    }
    if let [only] = leaves {
        if only.platform.is_none() {
            return Ok(only);
        }
    }
    let available: Vec<String> = leaves
        .iter()
        .map(|leaf| match &leaf.platform {
            Some(platform) => platform.to_string(),
            None => "unspecified".to_string(),
        })
        .collect();
    Err(StoreError::NoMatchingPlatform {
        context: context.to_string(),
        wanted: host.to_string(),
        available: if available.is_empty() {
            "no manifests".to_string()
        } else {
            available.join(", ")
        },
    })
}

/// Reads an image manifest and its config, and plans its layers.
fn plan_manifest(source: &dyn Source, descriptor: &Descriptor) -> Result<PlannedImage> {
    let context = format!("manifest {}", descriptor.digest);
    let bytes = read_blob(source, descriptor, &context)?;
    let manifest: Manifest = parse_json(&bytes, &context)?;
    if let Some(media_type) = &manifest.media_type {
        if manifest_kind(media_type) != Some(ManifestKind::Manifest) {
            return Err(StoreError::UnknownMediaType {
                context,
                media_type: media_type.clone(),
            });
        }
    }
    let config_context = format!("config of {context}");
    check_media_type(&manifest.config, &config_context, is_config)?;
    let config = read_blob(source, &manifest.config, &config_context)?;
    let parsed = ImageConfig::parse(&config, &config_context)?;
    if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(StoreError::LayerCountMismatch {
            context,
            manifest: manifest.layers.len(),
            config: parsed.rootfs.diff_ids.len(),
        });
    }
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(position, layer)| {
            let layer_context = format!("layer {} of {context}", position + 1);
            check_media_type(layer, &layer_context, is_layer)?;
            Ok(PlannedLayer {
                member: layer.blob_path(),
                expected_digest: Some(layer.digest.clone()),
                expected_size: Some(layer.size),
                media_type: layer.media_type.clone(),
                context: layer_context,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PlannedImage {
        diff_ids: parsed.rootfs.diff_ids,
        created: parsed.created,
        config,
        manifest: Some(bytes),
        layers,
        names: Vec::new(),
    })
}

/// Fails with [`StoreError::UnknownMediaType`] when a descriptor's media type is present and not accepted.
fn check_media_type(
    descriptor: &Descriptor,
    context: &str,
    accepted: fn(&str) -> bool,
) -> Result<()> {
    match &descriptor.media_type {
        Some(media_type) if !accepted(media_type) => Err(StoreError::UnknownMediaType {
            context: context.to_string(),
            media_type: media_type.clone(),
        }),
        _ => Ok(()),
    }
}

/// Reads a small blob and checks it against its descriptor's size and digest.
fn read_blob(source: &dyn Source, descriptor: &Descriptor, context: &str) -> Result<Vec<u8>> {
    if descriptor.size > METADATA_LIMIT {
        return Err(StoreError::MetadataTooLarge {
            context: context.to_string(),
            size: descriptor.size,
            limit: METADATA_LIMIT,
        });
    }
    let bytes = read_metadata(source, &descriptor.blob_path(), context)?;
    if bytes.len() as u64 != descriptor.size {
        return Err(StoreError::SizeMismatch {
            context: context.to_string(),
            expected: descriptor.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of_bytes(&bytes);
    if actual != descriptor.digest {
        return Err(StoreError::DigestMismatch {
            context: context.to_string(),
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], context: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::InvalidJson {
        context: context.to_string(),
        source,
    })
}
