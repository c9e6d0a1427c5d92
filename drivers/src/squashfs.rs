//! The `squashfs` driver: every image layer is one compressed, read-only
//! squashfs image, mounted by the kernel through a loop device or read
//! in-process by the FUSE frontend.
//!
//! Layout under `<store root>/squashfs/`:
//! - `<id>.sqfs`: the image of read-only layer `id`, written straight from the
//!   layer tar (no unpacking) by libsquashfs: the layer's own diff, whiteouts as
//!   0/0 character devices and opaque directories with `trusted.overlay.opaque=y`,
//!   so overlayfs stacks the images as they are;
//! - `meta/<id>.json`: parent, read-write flag, and for images the compressor,
//!   block size, size, SHA-256 and number of hard-link groups;
//! - `upper/<id>/{diff,work}/`: a container's overlay upper and work directories;
//! - `mnt/<id>/`: where the kernel frontend mounts layer `id` (shared by every
//!   overlay stacking it, reference-counted by the mount table);
//! - `staging/<id>.<pid>.<random>[.sqfs|.json]`: layers being built, renamed
//!   into place when complete (leftovers of dead processes go on `cleanup`);
//! - `views/<pid>.<random>/`: temporary read-only mounts used to compute diffs
//!   (with their own loop devices under `layers/`);
//! - `empty/`: an empty directory stacked under a lone layer.
//!
//! Settings come from the environment: [`COMPRESSOR_ENV`] (`zstd` by default,
//! also `gzip`, `xz`, `lz4`, each optionally `:level`), [`BLOCK_SIZE_ENV`]
//! (128K by default) and [`CACHE_MB_ENV`] (the in-process reader's cache of
//! decompressed blocks and metadata, shared by every image the driver opens,
//! 64 MiB by default). Data blocks are compressed on all cores.
//!
//! Integrity: an image's size and SHA-256 are recorded when it is written and
//! checked before the image is first mounted or read by a process (a mounted
//! layer is not checked again); a truncated or altered image is reported as
//! [`DriverError::CorruptLayer`] naming the layer. The reader also checks every
//! structure it parses.
//!
//! Containers: overlayfs turns its inode index off when two lowers have no
//! filesystem UUID (squashfs has none), so lower hard links would split on
//! copy-up; `create_rw` therefore copies each hard-link group with several
//! visible names into the upper at once (see `links`), and containers are
//! mounted with `index=off,redirect_dir=off,metacopy=off`. Diffs compare merged
//! views like overlay2 (`crate::merged_diff`).

mod cache;
mod ffi;
mod format;
mod links;
pub mod loopdev;
mod options;
mod reader;
mod tree;
mod writer;

pub use cache::HitCounts;
pub use options::{
    Compressor, SquashfsOptions, BLOCK_SIZE_ENV, CACHE_MB_ENV, COMPRESSOR_ENV, DEFAULT_BLOCK_SIZE,
    DEFAULT_CACHE_MB, DEFAULT_ZSTD_LEVEL,
};
pub use reader::{CacheStats, ReaderCache, SquashfsLayer};
pub use writer::{write_image, ImageSettings, ImageStats};

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::dirlayer::DirLayer;
use crate::driver::{
    driver_home, layer_ids, validate_id, ApplyStats, Change, Driver, DriverStatus, LayerId,
};
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil;
use crate::kernel::{self, OVERLAY_MAX_LOWERS};
use crate::layer::LayerReader;
use crate::merged_diff::{self, DiffViews, MergedDiff};
use crate::mount::{FrontendKind, MountSpec, StackViewer, WhiteoutFormat};
use crate::mount_table::MountInfo;
use crate::ownership::Ownership;

const NAME: &str = "squashfs";

/// Overlay options of a container mount (see the module documentation for
/// why the index is off).
pub const RW_OPTIONS: &[&str] = &["index=off", "redirect_dir=off", "metacopy=off"];

/// What `meta/<id>.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LayerMeta {
    parent: Option<String>,
    rw: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<ImageMeta>,
}

/// What is recorded about an image when it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ImageMeta {
    compressor: String,
    block_size: u32,
    size: u64,
    sha256: String,
    hardlink_groups: u32,
}

/// Identity of an image file whose digest this process verified.
type VerifiedKey = (u64, u64, u64, i64, i64);

/// The squashfs storage driver.
#[derive(Debug)]
pub struct SquashfsDriver {
    home: PathBuf,
    options: SquashfsOptions,
    userxattr: bool,
    verified: Mutex<HashSet<VerifiedKey>>,
    cache: Arc<ReaderCache>,
    ownership: Ownership,
    viewer: Option<Arc<dyn StackViewer>>,
}

impl SquashfsDriver {
    /// Opens (and creates) the driver's home under `store_root`, with the
    /// settings of the environment ([`SquashfsOptions::from_env`]).
    pub fn new(store_root: &Path) -> Result<Self> {
        let options = SquashfsOptions::from_env().map_err(DriverError::Unsupported)?;
        Self::with_options(store_root, options)
    }

    /// Opens (and creates) the driver's home under `store_root` with `options`.
    pub fn with_options(store_root: &Path, options: SquashfsOptions) -> Result<Self> {
        let home = driver_home(store_root, NAME);
        for sub in ["", "meta", "upper", "mnt", "staging", "views", "empty"] {
            let p = home.join(sub);
            fs::create_dir_all(&p).ctx("create driver directory", &p)?;
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).ctx("chmod", &home)?;
        // Mount tables list canonical paths: the layer mount directories must be canonical too.
        let home = fs::canonicalize(&home).ctx("resolve", &home)?;
        // SAFETY: geteuid has no preconditions.
        let userxattr = unsafe { libc::geteuid() } != 0;
        let ownership = Ownership::for_store(store_root).ctx("open store", store_root)?;
        Ok(SquashfsDriver {
            home,
            cache: Arc::new(ReaderCache::new(options.cache_bytes)),
            options,
            userxattr: userxattr || !ownership.is_native(),
            verified: Mutex::new(HashSet::new()),
            ownership,
            viewer: None,
        })
    }

    /// Serves the read-only views an unprivileged store computes diffs on.
    pub fn with_viewer(mut self, viewer: Arc<dyn StackViewer>) -> Self {
        self.viewer = Some(viewer);
        self
    }

    /// The settings this driver writes and reads images with.
    pub fn options(&self) -> &SquashfsOptions {
        &self.options
    }

    /// The image file of read-only layer `id`.
    pub fn image_path(&self, id: &LayerId) -> PathBuf {
        self.home.join(format!("{id}.sqfs"))
    }

    /// Where the kernel frontend mounts the image of layer `id`.
    pub fn layer_mount_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("mnt").join(id)
    }

    /// The overlay upper directory of read-write layer `id`.
    pub fn diff_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("upper").join(id).join("diff")
    }

    fn work_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join("upper").join(id).join("work")
    }

    fn meta_path(&self, id: &LayerId) -> PathBuf {
        self.home.join("meta").join(format!("{id}.json"))
    }

    fn empty_dir(&self) -> PathBuf {
        self.home.join("empty")
    }

    fn staging_path(&self, id: &LayerId, suffix: &str) -> PathBuf {
        self.home.join("staging").join(format!(
            "{id}.{}.{:016x}{suffix}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    fn is_rw(&self, id: &LayerId) -> bool {
        self.diff_dir(id).is_dir()
    }

    fn whiteouts(&self) -> WhiteoutFormat {
        WhiteoutFormat::Overlay {
            userxattr: self.userxattr,
        }
    }

    fn settings(&self) -> ImageSettings {
        ImageSettings {
            compressor: self.options.compressor,
            level: self.options.level,
            block_size: self.options.block_size,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
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

    /// Writes `meta/<id>.json` atomically, failing if it exists.
    fn write_meta(&self, id: &LayerId, meta: &LayerMeta) -> Result<()> {
        let tmp = self.staging_path(id, ".json");
        let json = serde_json::to_vec(meta).map_err(|e| DriverError::Other(e.to_string()))?;
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx("write layer metadata", &tmp);
        }
        let target = self.meta_path(id);
        // A hard link never replaces: a concurrent build of the same id loses here.
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(DriverError::LayerExists(id.to_string()))
            }
            Err(e) => Err(e).ctx("install layer metadata", target),
        }
    }

    fn sync_home(&self) -> Result<()> {
        let fd = fsutil::open_dir(&self.home).ctx("open", &self.home)?;
        fsutil::sync_filesystem(fd.as_fd()).ctx("sync", &self.home)
    }

    fn checked(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        if self.exists(id) {
            Ok(())
        } else {
            Err(DriverError::NoSuchLayer(id.to_string()))
        }
    }

    /// The layer and its ancestors, nearest first.
    fn chain(&self, id: &LayerId) -> Result<Vec<String>> {
        let mut chain = vec![id.to_string()];
        let mut current = id.to_string();
        while let Some(parent) = self.parent(&current)? {
            if chain.contains(&parent) || chain.len() > 10_000 {
                return Err(DriverError::Other(format!(
                    "squashfs layer {id} has a cyclic parent chain"
                )));
            }
            self.checked(&parent)?;
            chain.push(parent.clone());
            current = parent;
        }
        Ok(chain)
    }

    /// Checks that the image of layer `id` is complete and unaltered (size and
    /// SHA-256 as recorded when it was written). Verified images are remembered
    /// for the life of the process.
    pub fn verify_image(&self, id: &LayerId) -> Result<()> {
        let meta = self.read_meta(id)?;
        let image = meta.image.ok_or_else(|| {
            DriverError::Other(format!("layer {id} is a container layer, it has no image"))
        })?;
        let path = self.image_path(id);
        let corrupt = |reason: String| DriverError::CorruptLayer {
            id: id.to_string(),
            reason,
        };
        let st = fs::metadata(&path).ctx("stat image", &path)?;
        let key: VerifiedKey = (st.dev(), st.ino(), st.len(), st.mtime(), st.mtime_nsec());
        if self.lock_verified().contains(&key) {
            return Ok(());
        }
        if st.len() != image.size {
            return Err(corrupt(format!(
                "image {} has {} bytes, {} were written",
                path.display(),
                st.len(),
                image.size
            )));
        }
        let (_, digest) = digest_file(&path)?;
        if digest != image.sha256 {
            return Err(corrupt(format!(
                "image {} does not match its recorded SHA-256 (damaged or altered)",
                path.display()
            )));
        }
        // The structures the kernel and the reader start from.
        SquashfsLayer::open(&path, id, 0)?;
        self.lock_verified().insert(key);
        Ok(())
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashSet<VerifiedKey>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_verified(&self, path: &Path) {
        if let Ok(st) = fs::metadata(path) {
            self.lock_verified().insert((
                st.dev(),
                st.ino(),
                st.len(),
                st.mtime(),
                st.mtime_nsec(),
            ));
        }
    }

    /// Opens the in-process reader of image layer `id` (verified first).
    pub fn open_layer(&self, id: &LayerId) -> Result<SquashfsLayer> {
        self.verify_image(id)?;
        SquashfsLayer::open_with_cache(&self.image_path(id), id, self.cache.clone())
    }

    /// Writes the image of layer `id` from `tar` and records it.
    fn build_image(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut dyn Read,
    ) -> Result<ApplyStats> {
        validate_id(id)?;
        if let Some(p) = parent {
            self.checked(p)?;
        }
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let staging = self.staging_path(id, ".sqfs");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32);
        let result = (|| {
            let stats = write_image(&staging, tar, &self.settings(), now)?;
            let (size, sha256) = digest_file(&staging)?;
            let image = self.image_path(id);
            fs::rename(&staging, &image).ctx("install image", &image)?;
            let meta = LayerMeta {
                parent: parent.map(str::to_string),
                rw: false,
                image: Some(ImageMeta {
                    compressor: match self.options.level {
                        Some(l) => format!("{}:{l}", self.options.compressor),
                        None => self.options.compressor.to_string(),
                    },
                    block_size: self.options.block_size,
                    size,
                    sha256,
                    hardlink_groups: stats.hardlink_groups,
                }),
            };
            if let Err(e) = self.write_meta(id, &meta) {
                let _ = fs::remove_file(&image);
                return Err(e);
            }
            self.sync_home()?;
            self.remember_verified(&image);
            info!(
                driver = NAME,
                id,
                size,
                entries = stats.entries,
                "created layer"
            );
            Ok(ApplyStats {
                entries: stats.entries,
                bytes: stats.bytes,
            })
        })();
        if result.is_err() {
            match fs::remove_file(&staging) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(staging = %staging.display(), error = %e, "cannot remove staging image; cleanup will retry")
                }
            }
        }
        result
    }

    /// The lower layers of a container on `parent`, with their hard-link groups.
    fn lowers_with_links(&self, parent: &LayerId) -> Result<Vec<links::LowerWithLinks>> {
        let mut out = Vec::new();
        for lid in self.chain(parent)? {
            if self.is_rw(&lid) {
                let dir = self.diff_dir(&lid);
                let layer = DirLayer::open_as(&dir, self.whiteouts(), self.ownership)
                    .ctx("open layer", &dir)?;
                out.push(links::LowerWithLinks {
                    layer: Arc::new(layer),
                    groups: Vec::new(),
                });
                continue;
            }
            let groups = self.read_meta(&lid)?.image.map_or(0, |i| i.hardlink_groups);
            let layer = if groups > 0 {
                self.open_layer(&lid)?
            } else {
                SquashfsLayer::open_with_cache(&self.image_path(&lid), &lid, self.cache.clone())?
            };
            let groups = if groups > 0 {
                layer
                    .hardlink_groups()
                    .ctx("list hard links", self.image_path(&lid))?
            } else {
                Vec::new()
            };
            out.push(links::LowerWithLinks {
                layer: Arc::new(layer),
                groups,
            });
        }
        Ok(out)
    }

    fn build_container(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        validate_id(id)?;
        if let Some(p) = parent {
            self.checked(p)?;
        }
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let staging = self.staging_path(id, "");
        let result = (|| {
            let diff = staging.join("diff");
            fs::create_dir_all(&diff).ctx("create layer directory", &diff)?;
            fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)).ctx("chmod", &diff)?;
            let work = staging.join("work");
            fs::create_dir(&work).ctx("create work directory", &work)?;
            // Only kernel overlay splits lower hard links on copy-up; an
            // unprivileged store is served by the FUSE frontend alone, which keeps them.
            if let Some(parent) = parent.filter(|_| self.ownership.is_native()) {
                let lowers = self.lowers_with_links(parent)?;
                let copied = links::copy_up_link_groups(&lowers, &diff)?;
                if copied.groups > 0 {
                    debug!(
                        id,
                        groups = copied.groups,
                        names = copied.names,
                        bytes = copied.bytes,
                        "copied hard-link groups into the container"
                    );
                }
            }
            let fd = fsutil::open_dir(&staging).ctx("open", &staging)?;
            fsutil::sync_filesystem(fd.as_fd()).ctx("sync", &staging)?;
            let uppers = fsutil::open_dir(&self.home.join("upper")).ctx("open", &self.home)?;
            let staging_dir =
                fsutil::open_dir(&self.home.join("staging")).ctx("open", &self.home)?;
            let name = staging.file_name().expect("staging paths have a name");
            match fsutil::rename_noreplace(
                staging_dir.as_fd(),
                name,
                uppers.as_fd(),
                OsStr::new(id),
            ) {
                Ok(()) => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) =>
                {
                    return Err(DriverError::LayerExists(id.to_string()))
                }
                Err(e) => return Err(e).ctx("install layer", self.home.join("upper").join(id)),
            }
            let meta = LayerMeta {
                parent: parent.map(str::to_string),
                rw: true,
                image: None,
            };
            if let Err(e) = self.write_meta(id, &meta) {
                let _ = fsutil::remove_tree(&self.home.join("upper").join(id));
                return Err(e);
            }
            self.sync_home()?;
            info!(driver = NAME, id, "created container layer");
            Ok(())
        })();
        if result.is_err() && staging.exists() {
            if let Err(e) = fsutil::remove_tree(&staging) {
                warn!(staging = %staging.display(), error = %e, "cannot remove staging directory; cleanup will retry");
            }
        }
        result
    }

    /// Whether a squashfs filesystem is mounted at `dir`.
    fn holds_layer_mount(dir: &Path) -> Result<bool> {
        Ok(MountInfo::read()?.fstype(dir) == Some("squashfs"))
    }

    fn total_image_bytes(&self) -> u64 {
        self.layers()
            .unwrap_or_default()
            .iter()
            .filter_map(|id| fs::metadata(self.image_path(id)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Size and hex SHA-256 of a file.
fn digest_file(path: &Path) -> Result<(u64, String)> {
    let mut f = fs::File::open(path).ctx("open image", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).ctx("read image", path),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Whether squashfs can be mounted by this kernel (built in, loaded, or a module on disk).
fn kernel_has_squashfs() -> bool {
    if kernel::kernel_has_filesystem("squashfs") || Path::new("/sys/module/squashfs").exists() {
        return true;
    }
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/fs/squashfs");
    fs::read_dir(dir)
        .map(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("squashfs.ko")))
        })
        .unwrap_or(false)
}

impl MergedDiff for SquashfsDriver {
    /// Runs `f` on read-only views of the merged trees of `parent` (an empty
    /// directory when `None`) and of `id` on top of it, unmounting both after.
    fn with_views<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce(&Path, &Path) -> Result<T>,
    ) -> Result<T> {
        self.checked(id)?;
        let recorded = self.parent(id)?;
        if recorded.as_deref() != parent {
            return Err(DriverError::Other(format!(
                "squashfs layer {id} sits on {}, not on {}",
                recorded.as_deref().unwrap_or("nothing"),
                parent.unwrap_or("nothing")
            )));
        }
        let chain = self.chain(id)?;
        if !self.ownership.is_native() {
            // No loop mounts without privileges: FUSE views read the images in-process.
            let readers = |ids: &[String]| -> Result<Vec<Arc<dyn LayerReader>>> {
                ids.iter()
                    .map(|lid| self.layer_reader(lid).map(Arc::from))
                    .collect()
            };
            return merged_diff::with_stack_views(
                self.viewer.as_ref(),
                &self.home.join("views"),
                readers(&chain[1..])?,
                readers(&chain)?,
                self.whiteouts(),
                self.ownership,
                f,
            );
        }
        let mut views = DiffViews::create(&self.home.join("views"))?;
        let (old, new) = (views.old(), views.new_view());
        // Private layer mounts: shared ones belong to the mount table.
        let lower_dir = |views: &mut DiffViews, lid: &str| -> Result<PathBuf> {
            if self.is_rw(lid) {
                return Ok(self.diff_dir(lid));
            }
            self.verify_image(lid)?;
            let dir = views.subdir(&format!("layers/{lid}"))?;
            loopdev::mount_image(&self.image_path(lid), &dir)?;
            views.mounted(dir.clone());
            Ok(dir)
        };
        let mut old_lowers = Vec::new();
        for lid in &chain[1..] {
            old_lowers.push(lower_dir(&mut views, lid)?);
        }
        if old_lowers.is_empty() {
            old_lowers.push(self.empty_dir());
        }
        merged_diff::mount_lower_view(&old_lowers, &old, &self.empty_dir())?;
        views.mounted(old.clone());
        let mut mounted = false;
        if self.is_rw(id) {
            let options: Vec<String> = RW_OPTIONS.iter().map(|s| s.to_string()).collect();
            match kernel::overlay_mount_with(
                &old_lowers,
                Some((&self.diff_dir(id), &self.work_dir(id))),
                &options,
                &new,
                true,
            ) {
                Ok(()) => mounted = true,
                Err(e) => {
                    debug!(id, error = %e, "container is in use; diffing its upper as a lower layer")
                }
            }
        }
        if !mounted {
            let mut lowers = vec![lower_dir(&mut views, id)?];
            if chain.len() > 1 {
                lowers.extend(old_lowers.iter().cloned());
            }
            merged_diff::mount_lower_view(&lowers, &new, &self.empty_dir())?;
        }
        views.mounted(new.clone());
        f(&old, &new)
    }

    /// The opaque directories of a container's upper, or of a read-only
    /// layer's image.
    fn opaque_dirs(&self, id: &LayerId) -> Result<Vec<Vec<OsString>>> {
        if self.is_rw(id) {
            merged_diff::upper_opaque_dirs(&self.diff_dir(id), self.userxattr)
        } else {
            self.open_layer(id)?
                .opaque_dirs()
                .ctx("list opaque directories", self.image_path(id))
        }
    }
}

impl Driver for SquashfsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn status(&self) -> DriverStatus {
        let backing =
            fsutil::filesystem_name(&self.home).unwrap_or_else(|e| format!("unknown ({e})"));
        let compressor = match self.options.level {
            Some(l) => format!("{} (level {l})", self.options.compressor),
            None => self.options.compressor.to_string(),
        };
        DriverStatus {
            driver: NAME.to_string(),
            facts: vec![
                ("Backing Filesystem".into(), backing),
                ("Compressor".into(), compressor),
                ("Block Size".into(), self.options.block_size.to_string()),
                (
                    "Reader Cache".into(),
                    format!("{} MiB", self.options.cache_bytes >> 20),
                ),
                ("Container mount options".into(), RW_OPTIONS.join(",")),
                (
                    "Layers".into(),
                    self.layers().map(|l| l.len()).unwrap_or(0).to_string(),
                ),
                ("Image Bytes".into(), self.total_image_bytes().to_string()),
            ],
        }
    }

    fn supports(&self, frontend: FrontendKind) -> std::result::Result<(), String> {
        match frontend {
            FrontendKind::Kernel => {
                kernel::kernel_mounts_usable(self.ownership)?;
                kernel::overlay_usable()?;
                if !kernel_has_squashfs() {
                    return Err("this kernel cannot mount squashfs; use --frontend fuse".into());
                }
                loopdev::available()
            }
            FrontendKind::Fuse => Ok(()),
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        validate_id(id).is_ok()
            && self.meta_path(id).is_file()
            && (self.image_path(id).is_file() || self.diff_dir(id).is_dir())
    }

    fn layers(&self) -> Result<Vec<String>> {
        layer_ids(&self.home.join("meta"), ".json", |id| self.exists(id))
    }

    fn parent(&self, id: &LayerId) -> Result<Option<String>> {
        Ok(self.read_meta(id)?.parent)
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build_image(id, parent, &mut std::io::empty())
            .map(drop)
    }

    fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        self.build_container(id, parent)
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        let mnt = self.layer_mount_dir(id);
        if Self::holds_layer_mount(&mnt)? {
            kernel::unmount(&mnt).map_err(|e| DriverError::Mount {
                target: mnt.clone(),
                reason: format!("layer {id} is in use: {e}"),
            })?;
        }
        let meta = self.meta_path(id);
        match fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove layer metadata", meta),
        }
        let image = self.image_path(id);
        match fs::remove_file(&image) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove image", image),
        }
        let upper = self.home.join("upper").join(id);
        if upper.exists() {
            let doomed = self.staging_path(id, "");
            fs::rename(&upper, &doomed).ctx("remove layer", &upper)?;
            fsutil::remove_tree(&doomed).ctx("remove layer", &doomed)?;
        }
        match fs::remove_dir(&mnt) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("remove layer mount directory", mnt),
        }
        info!(driver = NAME, id, "removed layer");
        Ok(())
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<ApplyStats> {
        self.build_image(id, parent, diff)
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>, out: &mut dyn Write) -> Result<()> {
        self.write_diff(id, parent, out)
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.list_changes(id, parent)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.size_of_diff(id, parent)
    }

    fn mount_spec(
        &self,
        id: &LayerId,
        frontend: FrontendKind,
        read_only: bool,
    ) -> Result<MountSpec> {
        self.checked(id)?;
        let rw = self.is_rw(id);
        if !read_only && !rw {
            return Err(DriverError::Other(format!(
                "layer {id} is read-only: mount it read-only or create a read-write layer on top of it"
            )));
        }
        let chain = self.chain(id)?;
        let lower_ids = if rw { &chain[1..] } else { &chain[..] };
        match frontend {
            FrontendKind::Kernel => {
                if lower_ids.len() > OVERLAY_MAX_LOWERS {
                    return Err(DriverError::Unsupported(format!(
                        "the image has {} layers; the kernel's overlayfs stacks at most {OVERLAY_MAX_LOWERS} (use --frontend fuse)",
                        lower_ids.len()
                    )));
                }
                let mut images = Vec::new();
                let mut lowers = Vec::new();
                for lid in lower_ids {
                    if self.is_rw(lid) {
                        lowers.push(self.diff_dir(lid));
                        continue;
                    }
                    let dir = self.layer_mount_dir(lid);
                    // A mounted layer was checked when it was attached.
                    if !Self::holds_layer_mount(&dir)? {
                        self.verify_image(lid)?;
                    }
                    images.push((self.image_path(lid), dir.clone()));
                    lowers.push(dir);
                }
                // A container on no image still needs a lower directory, and a
                // read-only mount needs two (a single one may hold whiteouts).
                if lowers.is_empty() || (!rw && lowers.len() == 1) {
                    lowers.push(self.empty_dir());
                }
                Ok(MountSpec::Overlay {
                    images,
                    lowers,
                    upper: rw.then(|| (self.diff_dir(id), self.work_dir(id))),
                    options: if rw {
                        RW_OPTIONS.iter().map(|s| s.to_string()).collect()
                    } else {
                        Vec::new()
                    },
                    read_only,
                })
            }
            FrontendKind::Fuse => {
                let mut lowers: Vec<Arc<dyn LayerReader>> = Vec::new();
                if rw && read_only {
                    let dir = self.diff_dir(id);
                    lowers.push(Arc::new(
                        DirLayer::open_as(&dir, self.whiteouts(), self.ownership)
                            .ctx("open layer", &dir)?,
                    ));
                }
                for lid in lower_ids {
                    if self.is_rw(lid) {
                        let dir = self.diff_dir(lid);
                        lowers.push(Arc::new(
                            DirLayer::open_as(&dir, self.whiteouts(), self.ownership)
                                .ctx("open layer", &dir)?,
                        ));
                    } else {
                        lowers.push(Arc::new(self.open_layer(lid)?));
                    }
                }
                Ok(MountSpec::Stack {
                    lowers,
                    upper: (rw && !read_only).then(|| (self.diff_dir(id), self.work_dir(id))),
                    whiteouts: self.whiteouts(),
                    ownership: self.ownership,
                })
            }
        }
    }

    fn layer_reader(&self, id: &LayerId) -> Result<Box<dyn LayerReader>> {
        self.checked(id)?;
        if self.is_rw(id) {
            let dir = self.diff_dir(id);
            return Ok(Box::new(
                DirLayer::open_as(&dir, self.whiteouts(), self.ownership)
                    .ctx("open layer", &dir)?,
            ));
        }
        Ok(Box::new(self.open_layer(id)?))
    }

    /// Removes leftovers of dead processes (staging files and directories, diff
    /// views and their mounts), images and container directories without
    /// metadata, metadata without a layer, and unused layer mount directories.
    fn cleanup(&self) -> Result<()> {
        merged_diff::remove_dead_staging(&self.home.join("staging"))?;
        merged_diff::remove_stale_views(&self.home.join("views"))?;
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
                || !(self.image_path(&id).is_file() || self.diff_dir(&id).is_dir());
            if orphan {
                fs::remove_file(&path).ctx("remove stale metadata", &path)?;
                debug!(path = %path.display(), "removed stale metadata");
            }
        }
        for entry in fs::read_dir(&self.home).ctx("list images", &self.home)? {
            let path = entry.ctx("list images", &self.home)?.path();
            let Some(id) = path
                .file_name()
                .and_then(OsStr::to_str)
                .and_then(|n| n.strip_suffix(".sqfs"))
            else {
                continue;
            };
            if !self.meta_path(id).is_file() && !Self::holds_layer_mount(&self.layer_mount_dir(id))?
            {
                fs::remove_file(&path).ctx("remove image without metadata", &path)?;
                debug!(path = %path.display(), "removed image without metadata");
            }
        }
        let uppers = self.home.join("upper");
        for entry in fs::read_dir(&uppers).ctx("list containers", &uppers)? {
            let entry = entry.ctx("list containers", &uppers)?;
            let keep = entry
                .file_name()
                .to_str()
                .is_some_and(|id| self.meta_path(id).is_file());
            if !keep {
                let path = entry.path();
                fsutil::remove_tree(&path).ctx("remove container without metadata", &path)?;
            }
        }
        let mounts = self.home.join("mnt");
        let table = MountInfo::read()?;
        for entry in fs::read_dir(&mounts).ctx("list layer mounts", &mounts)? {
            let path = entry.ctx("list layer mounts", &mounts)?.path();
            if table.is_mountpoint(&path) {
                continue;
            }
            let used = path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|id| self.exists(id));
            if !used {
                let _ = fs::remove_dir(&path);
            }
        }
        Ok(())
    }
}
