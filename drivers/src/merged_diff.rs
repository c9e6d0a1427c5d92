//! Diffs of overlay-stacked layers computed on their merged views.
//!
//! overlay2, aufs and squashfs compute `changes`, `diff` and `diff_size` the
//! same way ([`MergedDiff`]): the parent's merged view and the layer's merged view are mounted
//! read-only side by side ([`DiffViews`]), compared like two vfs trees
//! ([`DiffPlan::from_trees`], `changes_between`), and every opaque directory of
//! the layer becomes one `.wh..wh..opq` marker plus its whole content
//! ([`merged_plan`]). An upper walk alone would miss the other names of a
//! copied-up hard link and report metadata-only copy-ups differently from vfs.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::changes::changes_between;
use crate::dirlayer::DirLayer;
use crate::driver::{Change, LayerId};
use crate::error::{DriverError, IoContext, Result};
use crate::export::{plan_size, write_plan, DiffPlan};
use crate::fsutil;
use crate::kernel;
use crate::layer::LayerReader;
use crate::mount::{MountSpec, StackViewer, WhiteoutFormat};
use crate::mount_table::MountInfo;
use crate::ownership::Ownership;
use crate::xattr::{self, XattrTarget};
use std::sync::Arc;

/// A driver whose layers' diffs come from merged views (overlay2, aufs,
/// squashfs): it mounts the views and knows its layers' opaque directories;
/// the diff, its changes and its size follow from those the same way for all.
pub(crate) trait MergedDiff {
    /// Runs `f` on the read-only merged views of `parent` (old) and `id` (new).
    fn with_views<T>(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        f: impl FnOnce(&Path, &Path) -> Result<T>,
    ) -> Result<T>;

    /// The opaque directories of layer `id`'s own diff, as path components.
    fn opaque_dirs(&self, id: &LayerId) -> Result<Vec<Vec<OsString>>>;

    /// Writes the OCI layer tar of `id` over `parent` to `out`.
    fn write_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        out: &mut dyn Write,
    ) -> Result<()> {
        self.with_views(id, parent, |old, new| {
            let plan = merged_plan(old, new, &self.opaque_dirs(id)?)?;
            write_plan(new, &plan, out).map(drop)
        })
    }

    /// What changed in `id` over `parent`, as `docker diff` lists it.
    fn list_changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.with_views(id, parent, |old, new| changes_between(Some(old), new))
    }

    /// The size of the files `id`'s diff over `parent` carries.
    fn size_of_diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.with_views(id, parent, |old, new| {
            plan_size(new, &merged_plan(old, new, &self.opaque_dirs(id)?)?)
        })
    }
}

/// Whether process `pid` is alive.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// A directory of temporary read-only mounts for one diff,
/// `<views root>/<pid>.<random>/` with `old/` and `new/`. Everything mounted
/// through it is unmounted (last first) and the directory removed on drop,
/// also on error or panic.
pub(crate) struct DiffViews {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl DiffViews {
    /// Creates a fresh views directory under `views_root`.
    pub fn create(views_root: &Path) -> Result<DiffViews> {
        let dir = views_root.join(format!(
            "{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let views = DiffViews {
            dir,
            mounted: Vec::new(),
        };
        for d in [views.old(), views.new_view()] {
            fs::create_dir_all(&d).ctx("create view directory", &d)?;
        }
        Ok(views)
    }

    /// Where the parent's merged view goes.
    pub fn old(&self) -> PathBuf {
        self.dir.join("old")
    }

    /// Where the layer's merged view goes.
    pub fn new_view(&self) -> PathBuf {
        self.dir.join("new")
    }

    /// A fresh directory inside the views directory (for private layer mounts).
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        fs::create_dir_all(&d).ctx("create view directory", &d)?;
        Ok(d)
    }

    /// Records that `target` was mounted, to be unmounted on drop.
    pub fn mounted(&mut self, target: PathBuf) {
        self.mounted.push(target);
    }
}

impl Drop for DiffViews {
    fn drop(&mut self) {
        for m in self.mounted.drain(..).rev() {
            if let Err(e) = kernel::unmount(&m) {
                warn!(mountpoint = %m.display(), error = %e, "detaching a diff view");
                kernel::detach(&m);
            }
        }
        if let Err(e) = fsutil::remove_tree(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "cannot remove a diff view directory");
        }
    }
}

/// Runs `f` on read-only merged views of the layer stacks `old` and `new` (top
/// first) served by `viewer` (the FUSE frontend): for drivers whose layers the
/// kernel cannot stack here (aufs without kernel aufs; every driver of an
/// unprivileged store, whose owners only a FUSE view presents). An empty `old`
/// is an empty tree.
pub(crate) fn with_stack_views<T>(
    viewer: Option<&Arc<dyn StackViewer>>,
    views_root: &Path,
    old: Vec<Arc<dyn LayerReader>>,
    new: Vec<Arc<dyn LayerReader>>,
    whiteouts: WhiteoutFormat,
    ownership: Ownership,
    f: impl FnOnce(&Path, &Path) -> Result<T>,
) -> Result<T> {
    let viewer = viewer.ok_or_else(|| {
        DriverError::Unsupported("this diff needs the FUSE frontend to serve merged views".into())
    })?;
    let views = DiffViews::create(views_root)?;
    let stack = |mut lowers: Vec<Arc<dyn LayerReader>>| -> Result<MountSpec> {
        if lowers.is_empty() {
            let empty = views.subdir("empty")?;
            let layer = DirLayer::open(&empty, WhiteoutFormat::None).ctx("open layer", &empty)?;
            lowers.push(Arc::new(layer));
        }
        Ok(MountSpec::Stack {
            lowers,
            upper: None,
            whiteouts,
            ownership,
        })
    };
    let old_view = viewer.view(stack(old)?, &views.old())?;
    let new_view = viewer.view(stack(new)?, &views.new_view())?;
    let result = f(&views.old(), &views.new_view());
    drop(new_view);
    drop(old_view);
    result
}

/// Removes the entries of a driver's `staging` directory (named
/// `<id>.<pid>.<random>[...]`) whose building process is dead; a crash in the
/// middle of building or removing a layer leaves them behind.
pub(crate) fn remove_dead_staging(staging: &Path) -> Result<()> {
    for entry in fs::read_dir(staging).ctx("list staging", staging)? {
        let entry = entry.ctx("list staging", staging)?;
        let name = entry.file_name().to_string_lossy().to_string();
        let owner = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
        if owner.is_some_and(pid_alive) {
            continue;
        }
        let path = entry.path();
        fsutil::remove_tree(&path).ctx("remove staging leftover", &path)?;
        tracing::debug!(path = %path.display(), "removed staging leftover");
    }
    Ok(())
}

/// Removes the views directories of dead processes under `views_root`,
/// detaching whatever is still mounted inside them (deepest first).
pub(crate) fn remove_stale_views(views_root: &Path) -> Result<()> {
    for entry in fs::read_dir(views_root).ctx("list views", views_root)? {
        let entry = entry.ctx("list views", views_root)?;
        let name = entry.file_name().to_string_lossy().to_string();
        let owner = name.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if owner.is_none() || owner.is_some_and(pid_alive) {
            continue;
        }
        let path = entry.path();
        let mut inside: Vec<PathBuf> = MountInfo::read()?
            .mountpoints()
            .filter(|m| m.starts_with(&path))
            .map(Path::to_path_buf)
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in inside {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        fsutil::remove_tree(&path).ctx("remove stale diff view", &path)?;
    }
    Ok(())
}

/// Mounts a read-only overlay of `lowers`. A single layer is stacked on an empty
/// directory: it may hold whiteouts, which overlay hides and a bind would not.
pub(crate) fn mount_lower_view(lowers: &[PathBuf], target: &Path, empty: &Path) -> Result<()> {
    if lowers.len() == 1 {
        return kernel::overlay_mount(&[lowers[0].clone(), empty.to_path_buf()], None, &[], target);
    }
    kernel::overlay_mount(lowers, None, &[], target)
}

/// The diff from merged view `old` to merged view `new`, with each directory of
/// `opaque` (components) written as one `.wh..wh..opq` marker plus its whole content.
pub(crate) fn merged_plan(old: &Path, new: &Path, opaque: &[Vec<OsString>]) -> Result<DiffPlan> {
    let mut plan = DiffPlan::from_trees(Some(old), new)?;
    for dir in opaque {
        let mut below = Vec::new();
        paths_below(&new.join(fsutil::join_components(dir)), dir, &mut below)?;
        plan.make_opaque(dir, below);
    }
    Ok(plan)
}

/// The relative paths of everything below `dir`, as components after `prefix`.
fn paths_below(dir: &Path, prefix: &[OsString], out: &mut Vec<Vec<OsString>>) -> Result<()> {
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let mut path = prefix.to_vec();
        path.push(entry.file_name());
        let is_dir = entry.file_type().ctx("stat", entry.path())?.is_dir();
        out.push(path.clone());
        if is_dir {
            paths_below(&entry.path(), &path, out)?;
        }
    }
    Ok(())
}

/// The outermost opaque directories of an overlay upper directory, as components.
pub(crate) fn upper_opaque_dirs(upper: &Path, userxattr: bool) -> Result<Vec<Vec<OsString>>> {
    let mut out = Vec::new();
    opaque_dirs(upper, &mut Vec::new(), userxattr, &mut out)?;
    Ok(out)
}

fn opaque_dirs(
    upper: &Path,
    prefix: &mut Vec<OsString>,
    userxattr: bool,
    out: &mut Vec<Vec<OsString>>,
) -> Result<()> {
    let here = upper.join(fsutil::join_components(prefix));
    for entry in fs::read_dir(&here).ctx("list", &here)? {
        let entry = entry.ctx("list", &here)?;
        if !entry.file_type().ctx("stat", entry.path())?.is_dir() {
            continue;
        }
        let dir = fsutil::open_dir(&entry.path()).ctx("open", entry.path())?;
        let opaque = XattrTarget::Fd(dir.as_fd())
            .get(xattr::overlay_opaque_xattr(userxattr))
            .ctx("read opaque xattr", entry.path())?;
        prefix.push(entry.file_name());
        if opaque.as_deref() == Some(b"y") {
            out.push(prefix.clone());
        } else {
            opaque_dirs(upper, prefix, userxattr, out)?;
        }
        prefix.pop();
    }
    Ok(())
}
