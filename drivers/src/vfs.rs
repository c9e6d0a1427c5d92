//! The `vfs` driver: every layer is a complete copy of its root filesystem.
//!
//! Layout under `<store root>/vfs/`:
//! - `dir/<id>/`: the layer's full tree;
//! - `meta/<id>.json`: `{"parent": ..., "rw": ...}`;
//! - `staging/<id>.<random>`: work in progress, renamed into `dir/<id>` when
//!   complete (and trees being removed), so nothing partial is ever visible
//!   under an id;
//! - `work/<id>/`: the FUSE frontend's work directory of a read-write mount.
//!
//! A layer exists when both its directory and its metadata exist. Creating a
//! layer writes the metadata first and renames the directory into place last.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::apply::{apply_layer_as, WhiteoutMode};
use crate::changes::changes_between;
use crate::copy::{copy_tree, reflink_supported};
use crate::dirlayer::DirLayer;
use crate::driver::{
    driver_home, layer_ids, validate_id, ApplyStats, Change, Driver, DriverStatus, LayerId,
};
use crate::error::{DriverError, IoContext, Result};
use crate::export::{diff_size, write_layer_diff};
use crate::fsutil;
use crate::kernel;
use crate::layer::LayerReader;
use crate::merged_diff;
use crate::mount::{FrontendKind, MountSpec, StackViewer, WhiteoutFormat};
use crate::ownership::Ownership;

/// The driver's name.
const NAME: &str = "vfs";

/// What `meta/<id>.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LayerMeta {
    parent: Option<String>,
    rw: bool,
}

/// The `vfs` storage driver (full copies, no copy-on-write).
#[derive(Debug)]
pub struct VfsDriver {
    home: PathBuf,
    reflink: OnceLock<bool>,
    ownership: Ownership,
    viewer: Option<Arc<dyn StackViewer>>,
}

impl VfsDriver {
    /// Opens (creating if needed) the vfs driver's home under `store_root`.
    pub fn new(store_root: &Path) -> Result<Self> {
        let home = driver_home(store_root, NAME);
        for sub in ["dir", "meta", "staging", "work"] {
            let p = home.join(sub);
            fs::create_dir_all(&p).ctx("create driver directory", &p)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).ctx("chmod", &p)?;
        }
        Ok(VfsDriver {
            home,
            reflink: OnceLock::new(),
            ownership: Ownership::for_store(store_root).ctx("open store", store_root)?,
            viewer: None,
        })
    }

    /// Serves the read-only views an unprivileged store computes diffs on.
    pub fn with_viewer(mut self, viewer: Arc<dyn StackViewer>) -> Self {
        self.viewer = Some(viewer);
        self
    }

    /// Runs `f` on the trees of the parent (`None`: no parent) and of `id`: the
    /// layer directories themselves, or read-only FUSE views of them in an
    /// unprivileged store (only a view presents the owners kept in xattrs).
    fn with_trees<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce(Option<&Path>, &Path) -> Result<T>,
    ) -> Result<T> {
        let dir = self.existing_dir(id)?;
        let parent_dir = self.optional_parent_dir(parent)?;
        if self.ownership.is_native() {
            return f(parent_dir.as_deref(), &dir);
        }
        let reader = |dir: &Path| -> Result<Vec<Arc<dyn LayerReader>>> {
            let layer = DirLayer::open_as(dir, WhiteoutFormat::None, self.ownership)
                .ctx("open layer", dir)?;
            Ok(vec![Arc::new(layer)])
        };
        let old = match &parent_dir {
            Some(p) => reader(p)?,
            None => Vec::new(),
        };
        merged_diff::with_stack_views(
            self.viewer.as_ref(),
            &self.home.join("views"),
            old,
            reader(&dir)?,
            WhiteoutFormat::None,
            self.ownership,
            |old, new| f(Some(old), new),
        )
    }

    /// The full tree of layer `id`.
    pub fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("dir").join(id)
    }

    fn meta_path(&self, id: &LayerId) -> PathBuf {
        self.home.join("meta").join(format!("{id}.json"))
    }

    fn work_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("work").join(id)
    }

    fn staging_path(&self, id: &LayerId, what: &str) -> PathBuf {
        self.home
            .join("staging")
            .join(format!("{id}.{what}{:016x}", rand::random::<u64>()))
    }

    fn read_meta(&self, id: &LayerId) -> Result<LayerMeta> {
        validate_id(id)?;
        if !self.exists(id) {
            return Err(DriverError::NoSuchLayer(id.to_string()));
        }
        let path = self.meta_path(id);
        let bytes = fs::read(&path).ctx("read layer metadata", &path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            DriverError::Other(format!("corrupt layer metadata {}: {e}", path.display()))
        })
    }

    /// The directory of an existing layer.
    fn existing_dir(&self, id: &LayerId) -> Result<PathBuf> {
        validate_id(id)?;
        if !self.exists(id) {
            return Err(DriverError::NoSuchLayer(id.to_string()));
        }
        Ok(self.layer_dir(id))
    }

    fn optional_parent_dir(&self, parent: Option<&LayerId>) -> Result<Option<PathBuf>> {
        parent.map(|p| self.existing_dir(p)).transpose()
    }

    /// Builds layer `id` in a staging directory (a copy of `parent`, filled by
    /// `fill`) and moves it into place; on error nothing is left behind.
    fn build<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        validate_id(id)?;
        let parent_dir = self.optional_parent_dir(parent)?;
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let staging = self.staging_path(id, "");
        let result = self
            .fill_staging(&staging, parent_dir.as_deref(), fill)
            .and_then(|value| {
                self.commit(id, parent, rw, &staging)?;
                Ok(value)
            });
        if result.is_err() {
            if let Err(e) = fsutil::remove_tree(&staging) {
                warn!(staging = %staging.display(), error = %e, "cannot remove staging directory; cleanup will retry");
            }
        }
        result
    }

    fn fill_staging<T>(
        &self,
        staging: &Path,
        parent_dir: Option<&Path>,
        fill: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        match parent_dir {
            Some(p) => {
                let stats = copy_tree(p, staging)?;
                debug!(method = ?stats.method(), files = stats.copied_files + stats.reflinked_files, "copied parent layer");
            }
            None => {
                fs::create_dir(staging).ctx("create layer directory", staging)?;
                fs::set_permissions(staging, fs::Permissions::from_mode(0o755))
                    .ctx("chmod", staging)?;
            }
        }
        let value = fill(staging)?;
        let fd = fsutil::open_dir(staging).ctx("open", staging)?;
        fsutil::sync_filesystem(fd.as_fd()).ctx("sync", staging)?;
        Ok(value)
    }

    /// Records the metadata, then renames the staging directory into place.
    fn commit(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        staging: &Path,
    ) -> Result<()> {
        // Another build of the same id may have finished meanwhile.
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let meta = LayerMeta {
            parent: parent.map(str::to_string),
            rw,
        };
        let tmp = self.staging_path(id, "meta.");
        {
            let mut f = fs::File::create(&tmp).ctx("write layer metadata", &tmp)?;
            let json = serde_json::to_vec(&meta).map_err(|e| DriverError::Other(e.to_string()))?;
            f.write_all(&json).ctx("write layer metadata", &tmp)?;
            f.sync_all().ctx("sync layer metadata", &tmp)?;
        }
        let meta_path = self.meta_path(id);
        if let Err(e) = fs::rename(&tmp, &meta_path) {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx("install layer metadata", meta_path);
        }
        let staging_parent =
            fsutil::open_dir(&self.home.join("staging")).ctx("open", &self.home)?;
        let dir_parent = fsutil::open_dir(&self.home.join("dir")).ctx("open", &self.home)?;
        let staging_name = staging.file_name().expect("staging paths have a name");
        match fsutil::rename_noreplace(
            staging_parent.as_fd(),
            staging_name,
            dir_parent.as_fd(),
            OsStr::new(id),
        ) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                return Err(DriverError::LayerExists(id.to_string()));
            }
            Err(e) => return Err(e).ctx("install layer", self.layer_dir(id)),
        }
        fsutil::sync_filesystem(dir_parent.as_fd()).ctx("sync", &self.home)?;
        info!(driver = NAME, id, parent = ?parent, rw, "created layer");
        Ok(())
    }

    fn count_layers(&self) -> usize {
        self.layers().map(|l| l.len()).unwrap_or(0)
    }
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn status(&self) -> DriverStatus {
        let backing =
            fsutil::filesystem_name(&self.home).unwrap_or_else(|e| format!("unknown ({e})"));
        let reflink = *self
            .reflink
            .get_or_init(|| reflink_supported(&self.home.join("staging")));
        DriverStatus {
            driver: NAME.to_string(),
            facts: vec![
                ("Backing Filesystem".to_string(), backing),
                (
                    "Reflink".to_string(),
                    if reflink { "yes" } else { "no" }.to_string(),
                ),
                ("Layers".to_string(), self.count_layers().to_string()),
            ],
        }
    }

    fn supports(&self, frontend: FrontendKind) -> std::result::Result<(), String> {
        match frontend {
            FrontendKind::Kernel => kernel::kernel_mounts_usable(self.ownership),
            FrontendKind::Fuse => Ok(()),
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        validate_id(id).is_ok() && self.layer_dir(id).is_dir() && self.meta_path(id).is_file()
    }

    fn layers(&self) -> Result<Vec<String>> {
        layer_ids(&self.home.join("dir"), "", |id| self.exists(id))
    }

    fn parent(&self, id: &LayerId) -> Result<Option<String>> {
        Ok(self.read_meta(id)?.parent)
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build(id, parent, false, |_| Ok(()))
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build(id, parent, true, |_| Ok(()))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        let dir = self.layer_dir(id);
        let meta = self.meta_path(id);
        let work = self.work_dir(id);
        // Make the layer disappear atomically, then delete at leisure.
        let doomed = self.staging_path(id, "removing.");
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove layer", dir),
        }
        match fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove layer metadata", meta),
        }
        fsutil::remove_tree(&work).ctx("remove work directory", &work)?;
        fsutil::remove_tree(&doomed).ctx("remove layer", &doomed)?;
        info!(driver = NAME, id, "removed layer");
        Ok(())
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<ApplyStats> {
        self.build(id, parent, false, |staging| {
            apply_layer_as(staging, diff, WhiteoutMode::Remove, self.ownership)
        })
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<()> {
        self.with_trees(id, parent, |old, new| {
            write_layer_diff(old, new, out).map(drop)
        })
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.with_trees(id, parent, changes_between)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.with_trees(id, parent, diff_size)
    }

    fn mount_spec(
        &self,
        id: &LayerId,
        frontend: FrontendKind,
        read_only: bool,
    ) -> Result<MountSpec> {
        let meta = self.read_meta(id)?;
        let dir = self.layer_dir(id);
        if !read_only && !meta.rw {
            return Err(DriverError::Other(format!(
                "layer {id} is read-only: mount it read-only or create a read-write layer on top of it"
            )));
        }
        Ok(match (frontend, read_only) {
            (FrontendKind::Kernel, _) => MountSpec::Bind {
                source: dir,
                read_only,
            },
            (FrontendKind::Fuse, true) => {
                let layer = DirLayer::open_as(&dir, WhiteoutFormat::None, self.ownership)
                    .ctx("open layer", &dir)?;
                MountSpec::Stack {
                    lowers: vec![Arc::new(layer)],
                    upper: None,
                    whiteouts: WhiteoutFormat::None,
                    ownership: self.ownership,
                }
            }
            (FrontendKind::Fuse, false) => {
                let work = self.work_dir(id);
                fs::create_dir_all(&work).ctx("create work directory", &work)?;
                MountSpec::Stack {
                    lowers: Vec::new(),
                    upper: Some((dir, work)),
                    whiteouts: WhiteoutFormat::None,
                    ownership: self.ownership,
                }
            }
        })
    }

    /// For vfs the reader presents the layer's complete tree (each layer is a full copy).
    fn layer_reader(&self, id: &LayerId) -> Result<Box<dyn LayerReader>> {
        let dir = self.existing_dir(id)?;
        Ok(Box::new(
            DirLayer::open_as(&dir, WhiteoutFormat::None, self.ownership)
                .ctx("open layer", &dir)?,
        ))
    }

    /// Removes staging leftovers, metadata without a layer directory, and work
    /// directories of missing layers. Call it when no other operation is running.
    fn cleanup(&self) -> Result<()> {
        let staging = self.home.join("staging");
        for entry in fs::read_dir(&staging).ctx("list staging", &staging)? {
            let path = entry.ctx("list staging", &staging)?.path();
            fsutil::remove_tree(&path).ctx("remove staging leftover", &path)?;
            debug!(path = %path.display(), "removed staging leftover");
        }
        let views = self.home.join("views");
        if views.exists() {
            merged_diff::remove_stale_views(&views)?;
        }
        let meta_dir = self.home.join("meta");
        for entry in fs::read_dir(&meta_dir).ctx("list metadata", &meta_dir)? {
            let path = entry.ctx("list metadata", &meta_dir)?.path();
            let id = path
                .file_stem()
                .and_then(OsStr::to_str)
                .unwrap_or_default()
                .to_string();
            let orphan = path.extension() != Some(OsStr::new("json"))
                || validate_id(&id).is_err()
                || !self.layer_dir(&id).is_dir();
            if orphan {
                fs::remove_file(&path).ctx("remove stale metadata", &path)?;
                debug!(path = %path.display(), "removed stale metadata");
            }
        }
        for sub in ["work", "dir"] {
            let base = self.home.join(sub);
            for entry in fs::read_dir(&base).ctx("list", &base)? {
                let entry = entry.ctx("list", &base)?;
                let keep = entry.file_name().to_str().is_some_and(|id| self.exists(id));
                if !keep {
                    let path = entry.path();
                    fsutil::remove_tree(&path).ctx("remove stale directory", &path)?;
                    debug!(path = %path.display(), "removed stale directory");
                }
            }
        }
        Ok(())
    }
}
