//! The `overlay2` driver: one directory per layer in overlayfs's own format,
//! stacked by the kernel's overlayfs (or served by the FUSE frontend).
//!
//! Layout under `<store root>/overlay2/`, in the spirit of Docker's overlay2:
//! - `<id>/diff/`: the layer's own files; whiteouts are 0/0 character devices,
//!   opaque directories carry `trusted.overlay.opaque=y` (`user.overlay.opaque`
//!   when not root, with the `userxattr` mount option);
//! - `<id>/link`: the layer's short name; `l/<short>` is a symlink to `../<id>/diff`,
//!   so that long chains fit in a classic `mount(2)` option string;
//! - `<id>/lower`: the chain of short names of its parents (`l/A:l/B`, nearest first);
//! - `<id>/parent`: the parent's id (absent for a base layer);
//! - `<id>/work/`: overlayfs's work directory of a read-write (container) layer;
//! - `staging/<id>.<pid>.<random>`: layers being built, renamed into place when complete;
//! - `views/<pid>.<random>/`: temporary read-only mounts used to compute diffs.
//!
//! Mount options are chosen for exact diffs (see `docs/ARCHITECTURE.md`):
//! `index=on` so hard links stay linked after copy-up, `redirect_dir=off` so a
//! renamed lower directory is copied (`EXDEV` makes `mv` copy), `metacopy=off`
//! so every copied-up file carries its data. Diffs and change lists compare the
//! merged view of the container with the merged view of its parent (both
//! mounted read-only), so they agree with every other driver to the letter.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::apply::{apply_layer_as, WhiteoutMode};
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
use crate::ownership::Ownership;

const NAME: &str = "overlay2";
/// Length of a layer's short name (as Docker: 26 characters).
const SHORT_LEN: usize = 26;
const SHORT_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The overlay mount options of a read-write (container) mount, and why:
/// `index=on` keeps hard links linked when one of them is copied up;
/// `redirect_dir=off` makes renaming a lower directory return `EXDEV` (tools then
/// copy it), so the upper never holds redirects other tools cannot read;
/// `metacopy=off` so a copied-up file always carries its data.
pub const RW_OPTIONS: &[&str] = &["index=on", "redirect_dir=off", "metacopy=off"];

/// The overlay2 driver.
#[derive(Debug)]
pub struct Overlay2Driver {
    home: PathBuf,
    userxattr: bool,
    ownership: Ownership,
    viewer: Option<Arc<dyn StackViewer>>,
}

impl Overlay2Driver {
    /// Opens (and creates) the driver's home under `store_root`. Unprivileged
    /// processes store opaque markers as `user.overlay.*` xattrs (`userxattr`).
    pub fn new(store_root: &Path) -> Result<Self> {
        let home = driver_home(store_root, NAME);
        for sub in ["", "l", "staging", "views"] {
            let p = home.join(sub);
            fs::create_dir_all(&p).ctx("create driver directory", &p)?;
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).ctx("chmod", &home)?;
        // SAFETY: geteuid has no preconditions.
        let userxattr = unsafe { libc::geteuid() } != 0;
        let ownership = Ownership::for_store(store_root).ctx("open store", store_root)?;
        Ok(Overlay2Driver {
            home,
            userxattr: userxattr || !ownership.is_native(),
            ownership,
            viewer: None,
        })
    }

    /// Serves the read-only views an unprivileged store computes diffs on.
    pub fn with_viewer(mut self, viewer: Arc<dyn StackViewer>) -> Self {
        self.viewer = Some(viewer);
        self
    }

    /// An empty directory to stack under a lone layer.
    fn empty_lower(&self) -> Result<PathBuf> {
        let empty = self.home.join("empty");
        fs::create_dir_all(&empty).ctx("create", &empty)?;
        Ok(empty)
    }

    fn rw_options(&self) -> Vec<String> {
        let mut options = self.ro_options();
        options.extend(RW_OPTIONS.iter().map(|s| s.to_string()));
        options
    }

    fn ro_options(&self) -> Vec<String> {
        if self.userxattr {
            vec!["userxattr".to_string()]
        } else {
            Vec::new()
        }
    }

    fn format(&self) -> WhiteoutFormat {
        WhiteoutFormat::Overlay {
            userxattr: self.userxattr,
        }
    }

    fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id)
    }

    /// The directory holding layer `id`'s own files.
    pub fn diff_dir(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    fn work_dir(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join("work")
    }

    fn checked(&self, id: &LayerId) -> Result<()> {
        validate_id(id)?;
        if self.exists(id) {
            Ok(())
        } else {
            Err(DriverError::NoSuchLayer(id.to_string()))
        }
    }

    fn read_small(&self, id: &LayerId, file: &str) -> Result<Option<String>> {
        let p = self.layer_dir(id).join(file);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read", p),
        }
    }

    fn is_rw(&self, id: &LayerId) -> bool {
        self.work_dir(id).is_dir()
    }

    /// The layer's short name, recreating its `l/` link if a crash lost it.
    fn short_name(&self, id: &LayerId) -> Result<String> {
        let short = self
            .read_small(id, "link")?
            .ok_or_else(|| DriverError::Other(format!("overlay2 layer {id} has no link file")))?;
        let link = self.home.join("l").join(&short);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..").join(id).join("diff"), &link)
                .ctx("create short link", &link)?;
        }
        Ok(short)
    }

    /// The layer and its ancestors, nearest first.
    fn chain(&self, id: &LayerId) -> Result<Vec<String>> {
        let mut chain = vec![id.to_string()];
        let mut current = id.to_string();
        while let Some(parent) = self.parent(&current)? {
            if chain.contains(&parent) || chain.len() > 10_000 {
                return Err(DriverError::Other(format!(
                    "overlay2 layer {id} has a cyclic parent chain"
                )));
            }
            self.checked(&parent)?;
            chain.push(parent.clone());
            current = parent;
        }
        Ok(chain)
    }

    /// Paths of the lower directories of `ids` (through the short links).
    fn lower_paths(&self, ids: &[String]) -> Result<Vec<PathBuf>> {
        ids.iter()
            .map(|id| Ok(self.home.join("l").join(self.short_name(id)?)))
            .collect()
    }

    fn staging_path(&self, id: &LayerId) -> PathBuf {
        self.home.join("staging").join(format!(
            "{id}.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    fn new_short_name(&self) -> String {
        loop {
            let name: String = (0..SHORT_LEN)
                .map(|_| SHORT_ALPHABET[rand::random::<usize>() % SHORT_ALPHABET.len()] as char)
                .collect();
            if fs::symlink_metadata(self.home.join("l").join(&name)).is_err() {
                return name;
            }
        }
    }

    /// Builds layer `id` in a staging directory and renames it into place.
    fn build<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        validate_id(id)?;
        if let Some(p) = parent {
            self.checked(p)?;
        }
        if self.exists(id) {
            return Err(DriverError::LayerExists(id.to_string()));
        }
        let staging = self.staging_path(id);
        let result = self
            .fill_staging(&staging, parent, rw, fill)
            .and_then(|value| {
                self.install(id, &staging)?;
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
        parent: Option<&LayerId>,
        rw: bool,
        fill: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        fs::create_dir(staging).ctx("create layer directory", staging)?;
        let diff = staging.join("diff");
        fs::create_dir(&diff).ctx("create layer directory", &diff)?;
        fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)).ctx("chmod", &diff)?;
        if rw {
            let work = staging.join("work");
            fs::create_dir(&work).ctx("create work directory", &work)?;
        }
        let short = self.new_short_name();
        fs::write(staging.join("link"), &short).ctx("write link", staging)?;
        if let Some(parent) = parent {
            let mut lowers = vec![format!("l/{}", self.short_name(parent)?)];
            if let Some(grand) = self.read_small(parent, "lower")? {
                lowers.extend(
                    grand
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            fs::write(staging.join("lower"), lowers.join(":")).ctx("write lower", staging)?;
            fs::write(staging.join("parent"), parent).ctx("write parent", staging)?;
        }
        let value = fill(&diff)?;
        let fd = fsutil::open_dir(staging).ctx("open", staging)?;
        fsutil::sync_filesystem(fd.as_fd()).ctx("sync", staging)?;
        Ok(value)
    }

    fn install(&self, id: &LayerId, staging: &Path) -> Result<()> {
        let staging_parent =
            fsutil::open_dir(&self.home.join("staging")).ctx("open", &self.home)?;
        let home = fsutil::open_dir(&self.home).ctx("open", &self.home)?;
        let name = staging.file_name().expect("staging paths have a name");
        match fsutil::rename_noreplace(staging_parent.as_fd(), name, home.as_fd(), OsStr::new(id)) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                return Err(DriverError::LayerExists(id.to_string()));
            }
            Err(e) => return Err(e).ctx("install layer", self.layer_dir(id)),
        }
        self.short_name(id)?;
        fsutil::sync_filesystem(home.as_fd()).ctx("sync", &self.home)?;
        info!(driver = NAME, id, "created layer");
        Ok(())
    }

    /// Readers of layers `ids` (top first) for the FUSE frontend.
    fn readers(&self, ids: &[String]) -> Result<Vec<Arc<dyn LayerReader>>> {
        ids.iter()
            .map(|lid| {
                let dir = self.diff_dir(lid);
                DirLayer::open_as(&dir, self.format(), self.ownership)
                    .map(|l| Arc::new(l) as Arc<dyn LayerReader>)
                    .ctx("open layer", dir)
            })
            .collect()
    }
}

impl MergedDiff for Overlay2Driver {
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
                "overlay2 layer {id} sits on {}, not on {}",
                recorded.as_deref().unwrap_or("nothing"),
                parent.unwrap_or("nothing")
            )));
        }
        let chain = self.chain(id)?;
        if !self.ownership.is_native() {
            // Only a FUSE view presents the owners an unprivileged store keeps in xattrs.
            return merged_diff::with_stack_views(
                self.viewer.as_ref(),
                &self.home.join("views"),
                self.readers(&chain[1..])?,
                self.readers(&chain)?,
                self.format(),
                self.ownership,
                f,
            );
        }
        let mut views = DiffViews::create(&self.home.join("views"))?;
        let (old, new) = (views.old(), views.new_view());
        let old_lowers = if chain.len() > 1 {
            self.lower_paths(&chain[1..])?
        } else {
            vec![self.empty_lower()?]
        };
        merged_diff::mount_lower_view(&old_lowers, &old, &self.empty_lower()?)?;
        views.mounted(old.clone());
        // A container's own view: its upper mounted read-only with the same
        // options, so that the index keeps copied-up hard links linked. When the
        // container is mounted read-write elsewhere the kernel refuses a second
        // user of the upper; the upper then joins the lowers, which shows the same
        // tree except for lower hard links of a copied-up file.
        let mut mounted = false;
        if self.is_rw(id) {
            let options: Vec<String> = self.rw_options();
            let upper = (self.diff_dir(id), self.work_dir(id));
            match kernel::overlay_mount_with(
                &old_lowers,
                Some((&upper.0, &upper.1)),
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
            merged_diff::mount_lower_view(&self.lower_paths(&chain)?, &new, &self.empty_lower()?)?;
        }
        views.mounted(new.clone());
        f(&old, &new)
    }

    /// The opaque directories of `id`'s diff directory.
    fn opaque_dirs(&self, id: &LayerId) -> Result<Vec<Vec<OsString>>> {
        merged_diff::upper_opaque_dirs(&self.diff_dir(id), self.userxattr)
    }
}

impl Driver for Overlay2Driver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn status(&self) -> DriverStatus {
        let backing =
            fsutil::filesystem_name(&self.home).unwrap_or_else(|e| format!("unknown ({e})"));
        let layers = self.layers().map(|l| l.len()).unwrap_or(0);
        DriverStatus {
            driver: NAME.to_string(),
            facts: vec![
                ("Backing Filesystem".into(), backing),
                (
                    "Whiteouts".into(),
                    if self.userxattr {
                        "user.overlay.* (userxattr)"
                    } else {
                        "trusted.overlay.*"
                    }
                    .into(),
                ),
                ("Container mount options".into(), RW_OPTIONS.join(",")),
                ("Layers".into(), layers.to_string()),
            ],
        }
    }

    fn supports(&self, frontend: FrontendKind) -> std::result::Result<(), String> {
        match frontend {
            FrontendKind::Kernel => {
                kernel::kernel_mounts_usable(self.ownership)?;
                kernel::overlay_usable()
            }
            FrontendKind::Fuse => Ok(()),
        }
    }

    fn exists(&self, id: &LayerId) -> bool {
        validate_id(id).is_ok()
            && self.diff_dir(id).is_dir()
            && self.layer_dir(id).join("link").is_file()
    }

    fn layers(&self) -> Result<Vec<String>> {
        layer_ids(&self.home, "", |id| {
            !matches!(id, "l" | "staging" | "views" | "empty") && self.exists(id)
        })
    }

    fn parent(&self, id: &LayerId) -> Result<Option<String>> {
        self.checked(id)?;
        self.read_small(id, "parent")
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
        if !dir.exists() {
            return Ok(());
        }
        if let Some(short) = self.read_small(id, "link")? {
            let link = self.home.join("l").join(short);
            match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove short link", link),
            }
        }
        let doomed = self.staging_path(id);
        fs::rename(&dir, &doomed).ctx("remove layer", &dir)?;
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
        let mode = WhiteoutMode::Overlay {
            userxattr: self.userxattr,
        };
        self.build(id, parent, false, |dir| {
            apply_layer_as(dir, diff, mode, self.ownership)
        })
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
        if !read_only && !self.is_rw(id) {
            return Err(DriverError::Other(format!(
                "layer {id} is read-only: mount it read-only or create a read-write layer on top of it"
            )));
        }
        // A container is always mounted with its upper (read-only views too), so
        // the kernel follows the upper's index and hard links stay linked.
        let rw = self.is_rw(id);
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
                let mut lowers = self.lower_paths(lower_ids)?;
                let (options, upper) = if rw {
                    (
                        self.rw_options(),
                        Some((self.diff_dir(id), self.work_dir(id))),
                    )
                } else {
                    (self.ro_options(), None)
                };
                // A container on no image still needs a lower directory, and a
                // read-only mount needs two (a single one may hold whiteouts).
                if lowers.is_empty() || (upper.is_none() && lowers.len() == 1) {
                    lowers.push(self.empty_lower()?);
                }
                Ok(MountSpec::Overlay {
                    images: Vec::new(),
                    lowers,
                    upper,
                    options,
                    read_only,
                })
            }
            FrontendKind::Fuse => {
                // A read-only view of a container reads its upper as the top layer.
                let lowers = if rw && read_only {
                    self.readers(&chain)?
                } else {
                    self.readers(lower_ids)?
                };
                Ok(MountSpec::Stack {
                    lowers,
                    upper: (rw && !read_only).then(|| (self.diff_dir(id), self.work_dir(id))),
                    whiteouts: self.format(),
                    ownership: self.ownership,
                })
            }
        }
    }

    fn layer_reader(&self, id: &LayerId) -> Result<Box<dyn LayerReader>> {
        self.checked(id)?;
        let dir = self.diff_dir(id);
        Ok(Box::new(
            DirLayer::open_as(&dir, self.format(), self.ownership).ctx("open layer", dir)?,
        ))
    }

    fn cleanup(&self) -> Result<()> {
        merged_diff::remove_dead_staging(&self.home.join("staging"))?;
        merged_diff::remove_stale_views(&self.home.join("views"))?;
        let links = self.home.join("l");
        for entry in fs::read_dir(&links).ctx("list short links", &links)? {
            let path = entry.ctx("list short links", &links)?.path();
            if fs::metadata(&path).is_err() {
                fs::remove_file(&path).ctx("remove dangling short link", &path)?;
            }
        }
        Ok(())
    }
}
