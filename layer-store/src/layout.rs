//! The on-disk layout of a store root.
//!
//! ```text
//! <root>/blobs/sha256/<hex>        content-addressed blobs (layers as they arrived, configs, manifests)
//! <root>/layers/<chain-hex>.json   layer records
//! <root>/images/<id-hex>.json      image records
//! <root>/containers/<name>.json    container records
//! <root>/repositories.json         tags (name:tag -> image id)
//! <root>/store.lock                the store lock (flock)
//! <root>/tmp/<pid>-<random>/       staging directories of running operations
//! ```

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// Paths of everything inside a store root.
#[derive(Debug, Clone)]
pub(crate) struct StorePaths {
    root: PathBuf,
}

impl StorePaths {
    /// The layout under `root`.
    pub(crate) fn new(root: PathBuf) -> StorePaths {
        StorePaths { root }
    }

    /// The store root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of sha256 blobs.
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Where the blob `digest` lives.
    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Directory of layer records.
    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The record of layer `chain_id`.
    pub(crate) fn layer(&self, chain_id: &Digest) -> PathBuf {
        self.layers_dir().join(format!("{}.json", chain_id.hex()))
    }

    /// Directory of image records.
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The record of image `id`.
    pub(crate) fn image(&self, id: &Digest) -> PathBuf {
        self.images_dir().join(format!("{}.json", id.hex()))
    }

    /// Directory of container records.
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The record of container `name` (the name must be validated).
    pub(crate) fn container(&self, name: &str) -> PathBuf {
        self.containers_dir().join(format!("{name}.json"))
    }

    /// The tag table.
    pub(crate) fn repositories(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    /// Parent of all staging directories.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The lock file.
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    /// Every directory the store needs.
    pub(crate) fn directories(&self) -> [PathBuf; 5] {
        [
            self.blobs_dir(),
            self.layers_dir(),
            self.images_dir(),
            self.containers_dir(),
            self.tmp_dir(),
        ]
    }
}
