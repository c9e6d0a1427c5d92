//! The store handle: opening a root, locking, and reading/writing records.

use std::fs;
use std::path::Path;

use crate::container::Container;
use crate::digest::Digest;
use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{list_names, read_json_if_exists, write_json_atomic};
use crate::image::Image;
use crate::layer::Layer;
use crate::layout::StorePaths;
use crate::lock::{LockState, StoreLock};
use crate::staging::{self, StagingDir};
use crate::tags::TagTable;

/// A content-addressed layer store rooted at one directory.
///
/// All methods take `&self`; a `Store` may be shared between threads, and
/// several processes may use the same root: metadata changes are serialised
/// by the store lock (see [`Store::lock`]).
#[derive(Debug)]
pub struct Store {
    paths: StorePaths,
    lock: LockState,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes staging
    /// directories left behind by processes that died.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let paths = StorePaths::new(root.as_ref().to_path_buf());
        for dir in paths.directories() {
            fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        }
        let removed = staging::remove_stale(&paths.tmp_dir())?;
        if removed > 0 {
            tracing::info!(removed, root = %paths.root().display(), "cleaned up after interrupted operations");
        }
        let lock = LockState::new(paths.lock_file());
        Ok(Store { paths, lock })
    }

    /// The store root directory.
    pub fn root(&self) -> &Path {
        self.paths.root()
    }

    /// Takes the store lock (an exclusive `flock` on `<root>/store.lock`),
    /// blocking until other holders release it. Store methods that change
    /// metadata take it themselves; it is re-entrant on the same thread and
    /// `Store`, so callers may hold it around several calls.
    pub fn lock(&self) -> Result<StoreLock<'_>> {
        self.lock.acquire()
    }

    pub(crate) fn paths(&self) -> &StorePaths {
        &self.paths
    }

    /// A new staging directory for one operation.
    pub(crate) fn staging(&self) -> Result<StagingDir> {
        StagingDir::create(&self.paths.tmp_dir())
    }

    pub(crate) fn read_layer_record(&self, chain_id: &Digest) -> Result<Option<Layer>> {
        read_json_if_exists(&self.paths.layer(chain_id))
    }

    pub(crate) fn write_layer_record(&self, staging: &StagingDir, layer: &Layer) -> Result<()> {
        write_json_atomic(staging, &self.paths.layer(&layer.chain_id), layer)
    }

    pub(crate) fn read_image_record(&self, id: &Digest) -> Result<Option<Image>> {
        read_json_if_exists(&self.paths.image(id))
    }

    pub(crate) fn write_image_record(&self, staging: &StagingDir, image: &Image) -> Result<()> {
        write_json_atomic(staging, &self.paths.image(&image.id), image)
    }

    /// Every image record (without tags filled in).
    pub(crate) fn image_records(&self) -> Result<Vec<Image>> {
        let mut images = Vec::new();
        for hex in list_names(&self.paths.images_dir(), ".json")? {
            let Ok(id) = Digest::from_hex(&hex) else {
                continue;
            };
            if let Some(image) = self.read_image_record(&id)? {
                images.push(image);
            }
        }
        Ok(images)
    }

    /// Every layer record.
    pub(crate) fn layer_records(&self) -> Result<Vec<Layer>> {
        let mut layers = Vec::new();
        for hex in list_names(&self.paths.layers_dir(), ".json")? {
            let Ok(chain_id) = Digest::from_hex(&hex) else {
                continue;
            };
            if let Some(layer) = self.read_layer_record(&chain_id)? {
                layers.push(layer);
            }
        }
        Ok(layers)
    }

    /// Every container record.
    pub(crate) fn container_records(&self) -> Result<Vec<Container>> {
        let mut containers = Vec::new();
        for name in list_names(&self.paths.containers_dir(), ".json")? {
            if let Some(container) = read_json_if_exists::<Container>(&self.paths.container(&name))?
            {
                containers.push(container);
            }
        }
        Ok(containers)
    }

    pub(crate) fn read_tags(&self) -> Result<TagTable> {
        Ok(read_json_if_exists(&self.paths.repositories())?.unwrap_or_default())
    }

    pub(crate) fn write_tags(&self, staging: &StagingDir, tags: &TagTable) -> Result<()> {
        write_json_atomic(staging, &self.paths.repositories(), tags)
    }

    /// An error for store metadata that contradicts itself.
    pub(crate) fn corrupt(&self, path: &Path, reason: impl Into<String>) -> StoreError {
        StoreError::CorruptStore {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
