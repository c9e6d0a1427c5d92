//! Image records and looking images up.

use serde::{Deserialize, Serialize};

use crate::config::ImageConfig;
use crate::digest::{is_sha256_hex, Digest};
use crate::error::{Result, StoreError};
use crate::reference::Reference;
use crate::store::Store;

/// Shortest ID prefix accepted by [`Store::resolve_image`].
pub const MIN_ID_PREFIX: usize = 4;

/// A stored image (`<root>/images/<id-hex>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image ID: the digest of its config blob.
    pub id: Digest,
    /// Digest of the config blob (equal to `id`).
    pub config_digest: Digest,
    /// Chain IDs of its layers, bottom-most first.
    pub chain_ids: Vec<Digest>,
    /// `created` from the config, if it has one.
    #[serde(default)]
    pub created: Option<String>,
    /// Digest of the manifest the image was imported from, if any (the blob is stored).
    #[serde(default)]
    pub manifest_digest: Option<Digest>,
    /// The tags naming this image when it was read from the store (not stored in the record).
    #[serde(skip)]
    pub tags: Vec<Reference>,
}

/// One layer of an image with the history entry that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerHistory {
    /// The layer's chain ID.
    pub chain_id: Digest,
    /// The layer's diff ID.
    pub diff_id: Digest,
    /// The layer's blob digest.
    pub blob: Digest,
    /// Blob size in bytes (as stored).
    pub blob_size: u64,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// `created` of the history entry.
    pub created: Option<String>,
    /// `created_by` of the history entry (empty when the config has none).
    pub created_by: String,
    /// `comment` of the history entry.
    pub comment: Option<String>,
}

impl Store {
    /// Every image, with its tags, ordered by ID.
    pub fn images(&self) -> Result<Vec<Image>> {
        let tags = self.read_tags()?;
        let mut images = self.image_records()?;
        for image in &mut images {
            image.tags = tags.tags_of(&image.id);
        }
        Ok(images)
    }

    /// The image with ID `id`, with its tags.
    pub fn image(&self, id: &Digest) -> Result<Image> {
        let mut image = self
            .read_image_record(id)?
            .ok_or_else(|| StoreError::ImageNotFound {
                reference: id.to_string(),
            })?;
        image.tags = self.read_tags()?.tags_of(id);
        Ok(image)
    }

    /// Finds an image by `name:tag`, by `name` (meaning `name:latest`), by full
    /// ID (`sha256:<hex>` or `<hex>`), or by a unique ID prefix of at least
    /// [`MIN_ID_PREFIX`] hex characters (optionally after `sha256:`). Tags win
    /// over ID prefixes.
    pub fn resolve_image(&self, reference: &str) -> Result<Image> {
        if let Ok(parsed) = Reference::parse(reference) {
            if let Some(id) = self.read_tags()?.get(&parsed) {
                return self.image(id);
            }
        }
        self.resolve_image_id(reference)
    }

    /// Finds an image by full ID or unique ID prefix only.
    pub(crate) fn resolve_image_id(&self, text: &str) -> Result<Image> {
        let not_found = || StoreError::ImageNotFound {
            reference: text.to_string(),
        };
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if is_sha256_hex(hex) {
            let id = Digest::from_hex(hex)?;
            return self.image(&id).map_err(|_| not_found());
        }
        let is_prefix = hex.len() >= MIN_ID_PREFIX
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_prefix {
            return Err(not_found());
        }
        let matches: Vec<Image> = self
            .image_records()?
            .into_iter()
            .filter(|image| image.id.hex().starts_with(hex))
            .collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => self.image(&matches[0].id),
            n => Err(StoreError::AmbiguousImage {
                prefix: hex.to_string(),
                matches: n,
            }),
        }
    }

    /// The parsed config of `image` (with the exact stored bytes in [`ImageConfig::raw`]).
    pub fn image_config(&self, image: &Image) -> Result<ImageConfig> {
        let raw = self.read_blob(&image.config_digest)?;
        ImageConfig::parse(&raw, &format!("config of image {}", image.id))
    }

    /// Per layer of `image`: its digests, sizes and the history entry that
    /// created it (history entries marked `empty_layer` are skipped when
    /// pairing entries with layers).
    pub fn history(&self, image: &Image) -> Result<Vec<LayerHistory>> {
        let config = self.image_config(image)?;
        let mut entries = config.layer_history();
        let mut history = Vec::with_capacity(image.chain_ids.len());
        for layer in self.image_layers(image)? {
            let entry = entries.next().cloned().unwrap_or_default();
            history.push(LayerHistory {
                chain_id: layer.chain_id,
                diff_id: layer.diff_id,
                blob: layer.blob,
                blob_size: layer.blob_size,
                size: layer.uncompressed_size,
                created: entry.created,
                created_by: entry.created_by.unwrap_or_default(),
                comment: entry.comment,
            });
        }
        Ok(history)
    }
}
