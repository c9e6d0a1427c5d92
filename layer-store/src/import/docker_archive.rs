//! `docker save` archives: `manifest.json` listing each image's config and
//! layer files, either legacy (`<id>/layer.tar`, `<hex>.json`) or the newer
//! form with `blobs/sha256/<hex>` paths (layers possibly compressed).

use std::path::Path;

use serde::Deserialize;

use crate::config::{null_as_default, ImageConfig};
use crate::digest::{is_sha256_hex, Digest};
use crate::error::{Result, StoreError};
use crate::import::naming::fallback_reference;
use crate::import::plan::{PlannedImage, PlannedLayer};
use crate::import::source::{checked_member_path, read_metadata, Source};
use crate::reference::Reference;

/// The manifest file at the archive root.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// One image in `manifest.json`.
#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_default")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default, deserialize_with = "null_as_default")]
    layers: Vec<String>,
}

/// Reads `manifest.json` and the configs it names; see [`crate::import::naming`] for names.
pub(crate) fn plan(
    source: &dyn Source,
    name: Option<&Reference>,
    input: &Path,
) -> Result<Vec<PlannedImage>> {
    let bytes = read_metadata(source, MANIFEST_FILE, MANIFEST_FILE)?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(&bytes).map_err(|source| StoreError::InvalidJson {
            context: MANIFEST_FILE.to_string(),
            source,
        })?;
    if entries.is_empty() {
        return Err(StoreError::Corrupt {
            context: MANIFEST_FILE.to_string(),
            reason: "it lists no images".to_string(),
        });
    }
    if name.is_some() && entries.len() > 1 {
        return Err(StoreError::NameNeedsSingleImage {
            path: input.to_path_buf(),
            count: entries.len(),
        });
    }
    let single = entries.len() == 1;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let context = if single {
                MANIFEST_FILE.to_string()
            } else {
                format!("image {} of {MANIFEST_FILE}", index + 1)
            };
            let mut image = plan_entry(source, entry, &context)?;
            for tag in &entry.repo_tags {
                image.names.push(Reference::parse(tag)?);
            }
            if let Some(name) = name {
                image.names.push(name.clone());
            }
            if image.names.is_empty() && single {
                image.names.push(fallback_reference(input));
            }
            Ok(image)
        })
        .collect()
}

fn plan_entry(source: &dyn Source, entry: &ManifestEntry, context: &str) -> Result<PlannedImage> {
    let config_context = format!("config of {context}");
    let config_path = checked_member_path(&entry.config, &config_context)?;
    let config = read_metadata(source, &config_path, &config_context)?;
    let config_digest = Digest::of_bytes(&config);
    if let Some(expected) = digest_in_path(&config_path, true) {
        if expected != config_digest {
            return Err(StoreError::DigestMismatch {
                context: format!("{config_context} ({config_path})"),
                expected,
                actual: config_digest,
            });
        }
    }
    let parsed = ImageConfig::parse(&config, &format!("{config_context} ({config_path})"))?;
    if parsed.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(StoreError::LayerCountMismatch {
            context: context.to_string(),
            manifest: entry.layers.len(),
            config: parsed.rootfs.diff_ids.len(),
        });
    }
    let layers = entry
        .layers
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let layer_context = format!("layer {} of {context}", index + 1);
            let member = checked_member_path(path, &layer_context)?;
            Ok(PlannedLayer {
                expected_digest: digest_in_path(&member, false),
                expected_size: None,
                media_type: None,
                context: layer_context,
                member,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PlannedImage {
        diff_ids: parsed.rootfs.diff_ids,
        created: parsed.created,
        config,
        manifest: None,
        layers,
        names: Vec::new(),
    })
}

/// The digest a member path promises: `blobs/sha256/<hex>`, and for configs also `<hex>.json`.
fn digest_in_path(path: &str, config: bool) -> Option<Digest> {
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    let hex = path.strip_suffix(".json").filter(|_| config)?;
    is_sha256_hex(hex)
        .then(|| Digest::from_hex(hex).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_in_paths() {
        let hex = "a".repeat(64);
        assert!(digest_in_path(&format!("blobs/sha256/{hex}"), false).is_some());
        assert!(digest_in_path(&format!("{hex}.json"), true).is_some());
        assert!(digest_in_path(&format!("{hex}.json"), false).is_none());
        assert!(digest_in_path(&format!("{hex}/layer.tar"), false).is_none());
        assert!(digest_in_path("blobs/sha256/xyz", false).is_none());
    }
}
