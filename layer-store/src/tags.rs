//! Tags (`<root>/repositories.json`): `name:tag` → image ID, tagging and untagging.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::fsutil::{remove_file_if_exists, sync_dir};
use crate::image::Image;
use crate::reference::Reference;
use crate::store::Store;

/// The tag table as stored in `repositories.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagTable {
    /// Every tag and the image it names.
    #[serde(default)]
    tags: BTreeMap<Reference, Digest>,
}

impl TagTable {
    /// The image a reference names.
    pub(crate) fn get(&self, reference: &Reference) -> Option<&Digest> {
        self.tags.get(reference)
    }

    /// Points `reference` at `id` (moving it if it named another image).
    pub(crate) fn set(&mut self, reference: Reference, id: Digest) {
        self.tags.insert(reference, id);
    }

    /// Removes a tag; returns the image it named.
    pub(crate) fn remove(&mut self, reference: &Reference) -> Option<Digest> {
        self.tags.remove(reference)
    }

    /// The tags naming `id`, sorted.
    pub(crate) fn tags_of(&self, id: &Digest) -> Vec<Reference> {
        self.tags
            .iter()
            .filter(|(_, target)| *target == id)
            .map(|(reference, _)| reference.clone())
            .collect()
    }

    /// Every tagged image ID.
    pub(crate) fn tagged_ids(&self) -> impl Iterator<Item = &Digest> {
        self.tags.values()
    }
}

/// What [`Store::remove_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Tags that were removed.
    pub untagged: Vec<Reference>,
    /// The image whose record was deleted (only when removed by ID).
    pub deleted: Option<Digest>,
}

impl Store {
    /// Tags `image` as `reference` (`name[:tag]`, default tag `latest`),
    /// moving the tag if it named another image.
    pub fn tag(&self, image: &Image, reference: &str) -> Result<Reference> {
        let reference = Reference::parse(reference)?;
        let _lock = self.lock()?;
        if self.read_image_record(&image.id)?.is_none() {
            return Err(StoreError::ImageNotFound {
                reference: image.id.to_string(),
            });
        }
        let staging = self.staging()?;
        let mut tags = self.read_tags()?;
        tags.set(reference.clone(), image.id.clone());
        self.write_tags(&staging, &tags)?;
        tracing::info!(image = %image.id, %reference, "tagged image");
        Ok(reference)
    }

    /// Removes an image reference.
    ///
    /// A `name[:tag]` that is tagged only removes that tag; the image record
    /// stays until [`Store::gc`] (or removal by ID). An image ID (full or
    /// unique prefix) removes all its tags and its record. Blobs and layer
    /// records stay until [`Store::gc`]. Refused with
    /// [`StoreError::ImageInUse`] when a container uses the image and the
    /// removal would leave it without a tag.
    pub fn remove_image(&self, reference: &str) -> Result<Removal> {
        let _lock = self.lock()?;
        let mut tags = self.read_tags()?;
        let containers = self.container_records()?;
        let in_use = |id: &Digest| -> Result<()> {
            match containers.iter().find(|container| &container.image == id) {
                Some(container) => Err(StoreError::ImageInUse {
                    image: id.clone(),
                    container: container.name.clone(),
                }),
                None => Ok(()),
            }
        };
        let staging = self.staging()?;

        if let Ok(parsed) = Reference::parse(reference) {
            if let Some(id) = tags.get(&parsed).cloned() {
                if tags.tags_of(&id).len() == 1 {
                    in_use(&id)?;
                }
                tags.remove(&parsed);
                self.write_tags(&staging, &tags)?;
                tracing::info!(image = %id, reference = %parsed, "untagged image");
                return Ok(Removal {
                    untagged: vec![parsed],
                    deleted: None,
                });
            }
        }

        let image = self.resolve_image_id(reference)?;
        in_use(&image.id)?;
        let untagged = tags.tags_of(&image.id);
        if !untagged.is_empty() {
            for tag in &untagged {
                tags.remove(tag);
            }
            self.write_tags(&staging, &tags)?;
        }
        remove_file_if_exists(&self.paths().image(&image.id))?;
        sync_dir(&self.paths().images_dir())?;
        tracing::info!(image = %image.id, "deleted image");
        Ok(Removal {
            untagged,
            deleted: Some(image.id),
        })
    }
}
