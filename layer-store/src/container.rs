//! Container records (`<root>/containers/<name>.json`).

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::fsutil::{read_json_if_exists, remove_file_if_exists, sync_dir, write_json_atomic};
use crate::image::{Image, MIN_ID_PREFIX};
use crate::store::Store;
use crate::timestamp::now_rfc3339;

const MAX_NAME_LEN: usize = 128;

/// A container: a named, writable instance of an image, owned by a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Unique name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// Random 64 hex character ID.
    pub id: String,
    /// The image it was created from.
    pub image: Digest,
    /// The storage driver holding its files.
    pub driver: String,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// Whether `name` is a valid container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
pub fn is_valid_container_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    first_ok
        && name.len() <= MAX_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Store {
    /// Records a new container `name` of `image` using `driver`.
    pub fn create_container(&self, name: &str, image: &Image, driver: &str) -> Result<Container> {
        if !is_valid_container_name(name) {
            return Err(StoreError::InvalidContainerName {
                name: name.to_string(),
            });
        }
        let _lock = self.lock()?;
        let path = self.paths().container(name);
        if path.exists() {
            return Err(StoreError::ContainerExists {
                name: name.to_string(),
            });
        }
        if self.read_image_record(&image.id)?.is_none() {
            return Err(StoreError::ImageNotFound {
                reference: image.id.to_string(),
            });
        }
        let mut id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut id);
        let container = Container {
            name: name.to_string(),
            id: hex::encode(id),
            image: image.id.clone(),
            driver: driver.to_string(),
            created: now_rfc3339(),
        };
        let staging = self.staging()?;
        write_json_atomic(&staging, &path, &container)?;
        tracing::info!(name, image = %image.id, driver, "created container");
        Ok(container)
    }

    /// Every container, ordered by name.
    pub fn containers(&self) -> Result<Vec<Container>> {
        self.container_records()
    }

    /// The container with this name, or with this ID (full or unique prefix of
    /// at least 4 hex characters).
    pub fn container(&self, name_or_id: &str) -> Result<Container> {
        let not_found = || StoreError::ContainerNotFound {
            name: name_or_id.to_string(),
        };
        if is_valid_container_name(name_or_id) {
            if let Some(container) =
                read_json_if_exists::<Container>(&self.paths().container(name_or_id))?
            {
                return Ok(container);
            }
        }
        if name_or_id.len() < MIN_ID_PREFIX {
            return Err(not_found());
        }
        let mut matches: Vec<Container> = self
            .container_records()?
            .into_iter()
            .filter(|container| container.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => Ok(matches.remove(0)),
            n => Err(StoreError::AmbiguousContainer {
                prefix: name_or_id.to_string(),
                matches: n,
            }),
        }
    }

    /// Deletes the record of the container with this name (or ID) and returns it.
    pub fn remove_container(&self, name_or_id: &str) -> Result<Container> {
        let _lock = self.lock()?;
        let container = self.container(name_or_id)?;
        remove_file_if_exists(&self.paths().container(&container.name))?;
        sync_dir(&self.paths().containers_dir())?;
        tracing::info!(name = %container.name, "removed container");
        Ok(container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_validated() {
        for good in ["a", "A1", "web-1.prod_x", "0"] {
            assert!(is_valid_container_name(good), "{good}");
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "ä", &"a".repeat(129)] {
            assert!(!is_valid_container_name(bad), "{bad}");
        }
    }
}
