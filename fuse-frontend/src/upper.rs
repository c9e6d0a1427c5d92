//! The writable upper directory: where new and copied-up objects go, and how
//! deletions and opaque directories are recorded in its [`WhiteoutFormat`].
//!
//! Copies of lower objects, and new objects replacing a whiteout, are built in
//! a private work directory (on the same filesystem) under a temporary name,
//! given their final metadata there, and then renamed into place, so the upper
//! never shows a half-made copy. Brand-new names are created in place, as
//! overlayfs does (see `create`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use drivers::dircache::DirCache;
use drivers::fsutil;
use drivers::layer::{FileKind, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};
use drivers::ownership::Ownership;
use drivers::whiteouts;
use drivers::xattr;
use drivers::WhiteoutFormat;

use crate::sys::{self, errno};

/// The name of the frontend's own directory inside the work directory.
const WORK_SUBDIR: &str = "lamina-fuse";

/// The writable upper directory of a stack.
pub(crate) struct Upper {
    root: OwnedFd,
    work: OwnedFd,
    format: WhiteoutFormat,
    ownership: Ownership,
    counter: AtomicU64,
    /// Recently opened upper directories by merged path, shared with the upper
    /// read as a layer; emptied whenever a directory of the upper is removed or
    /// renamed (only this daemon changes it).
    dirs: Arc<DirCache>,
    /// Skip every flush to stable storage (overlayfs's `volatile`).
    volatile: AtomicBool,
}

/// How many upper directories stay open for the next operations.
pub(crate) const DIR_CACHE: usize = 64;

impl Upper {
    /// Opens `upper` with its work directory `work` (which must be on the same
    /// filesystem), emptying the frontend's part of the work directory.
    pub fn open(
        upper: &Path,
        work: &Path,
        format: WhiteoutFormat,
        ownership: Ownership,
        dirs: Arc<DirCache>,
    ) -> io::Result<Upper> {
        let root = fsutil::open_dir(upper)?;
        let work_root = fsutil::open_dir(work)?;
        let (up, wk) = (
            sys::stat_fd(root.as_fd())?,
            sys::stat_fd(work_root.as_fd())?,
        );
        if up.st_dev != wk.st_dev {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the work directory {} is not on the filesystem of the upper directory {}",
                    work.display(),
                    upper.display()
                ),
            ));
        }
        fsutil::remove_tree_at(work_root.as_fd(), OsStr::new(WORK_SUBDIR))?;
        fsutil::mkdir_at(work_root.as_fd(), OsStr::new(WORK_SUBDIR), 0o700)?;
        let work = fsutil::open_dir_at(work_root.as_fd(), OsStr::new(WORK_SUBDIR))?;
        Ok(Upper {
            root,
            work,
            format,
            ownership,
            counter: AtomicU64::new(0),
            volatile: AtomicBool::new(false),
            dirs,
        })
    }

    /// Like overlayfs's `volatile` option: no `fsync` of copied-up data and
    /// `fsync`/`fsyncdir` do nothing, so a crash of the *host* may leave the
    /// upper incomplete (a killed daemon cannot: the page cache survives it).
    pub fn set_volatile(&self, volatile: bool) {
        self.volatile.store(volatile, Ordering::Relaxed);
    }

    /// Whether flushes to stable storage are skipped.
    pub fn is_volatile(&self) -> bool {
        self.volatile.load(Ordering::Relaxed)
    }

    /// How the upper keeps owners, modes and device nodes.
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// The whiteout format of the upper.
    pub fn format(&self) -> WhiteoutFormat {
        self.format
    }

    /// The upper root directory.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The private work directory.
    pub fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Opens the upper directory at merged path `rel` (`""` is the root), never
    /// through a symlink.
    pub fn dir(&self, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        self.dirs.open(self.root.as_fd(), rel)
    }

    /// Forgets the open directories: a directory of the upper is about to be
    /// removed or moved, so a path may stop naming the directory cached for it.
    pub fn forget_dirs(&self) {
        self.dirs.clear();
    }

    /// A fresh name for an object being built in the work directory.
    pub fn temp_name(&self) -> OsString {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#{}-{n}", std::process::id()))
    }

    /// Whether `name` cannot be used in the merged view because the upper's
    /// format gives it a meaning (AUFS `.wh.` markers).
    pub fn is_reserved_name(&self, name: &OsStr) -> bool {
        self.format == WhiteoutFormat::Aufs
            && name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes())
    }

    fn aufs_marker(name: &OsStr) -> OsString {
        let mut marker = OsString::from(OCI_WHITEOUT_PREFIX);
        marker.push(name);
        marker
    }

    /// `EPERM`: deleting lower content needs a whiteout the upper cannot store.
    fn no_whiteouts() -> io::Error {
        tracing::warn!(
            "the upper directory has no whiteout format, so lower content cannot be deleted"
        );
        errno(libc::EPERM)
    }

    /// Whether the upper directory `dir` records a whiteout of `name`.
    pub fn has_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        match self.format {
            WhiteoutFormat::Overlay { userxattr } => match fsutil::stat_at(dir, name)? {
                Some(m) => whiteouts::is_whiteout_at(dir, name, &m, userxattr),
                None => Ok(false),
            },
            WhiteoutFormat::Aufs => Ok(fsutil::stat_at(dir, &Self::aufs_marker(name))?.is_some()),
            WhiteoutFormat::None => Ok(false),
        }
    }

    /// Creates a whiteout in the work directory (overlay format only), to be
    /// moved into upper directory `dest`: returns its temporary name.
    fn overlay_whiteout_in_work(
        &self,
        dest: BorrowedFd<'_>,
        userxattr: bool,
    ) -> io::Result<OsString> {
        let tmp = self.temp_name();
        if whiteouts::make_whiteout_at(self.work(), &tmp, userxattr)? == FileKind::Regular {
            if let Err(e) = whiteouts::mark_holds_xattr_whiteouts(dest, userxattr) {
                let _ = fsutil::unlink_at(self.work(), &tmp, false);
                return Err(e);
            }
        }
        Ok(tmp)
    }

    /// Records a deletion of `name` in upper directory `dir`, replacing what the
    /// upper has there (`existing`: its kind, if any) in one step where the format allows.
    pub fn whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        existing: Option<FileKind>,
    ) -> io::Result<()> {
        match self.format {
            WhiteoutFormat::None => Err(Self::no_whiteouts()),
            WhiteoutFormat::Overlay { userxattr } => {
                let tmp = self.overlay_whiteout_in_work(dir, userxattr)?;
                let result = match existing {
                    Some(FileKind::Directory) => {
                        sys::rename_at(self.work(), &tmp, dir, name, libc::RENAME_EXCHANGE)
                            .and_then(|()| fsutil::remove_tree_at(self.work(), &tmp))
                    }
                    Some(_) => sys::rename_at(self.work(), &tmp, dir, name, 0),
                    None => sys::rename_at(self.work(), &tmp, dir, name, libc::RENAME_NOREPLACE),
                };
                if result.is_err() {
                    let _ = fsutil::unlink_at(self.work(), &tmp, false);
                }
                result
            }
            WhiteoutFormat::Aufs => {
                let marker = Self::aufs_marker(name);
                if fsutil::stat_at(dir, &marker)?.is_none() {
                    fsutil::create_empty_at(dir, &marker, 0o444)?;
                }
                if existing.is_some() {
                    fsutil::remove_tree_at(dir, name)?;
                }
                Ok(())
            }
        }
    }

    /// Removes the whiteout of `name` from upper directory `dir` if there is one.
    pub fn remove_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let target = match self.format {
            WhiteoutFormat::None => return Ok(()),
            WhiteoutFormat::Overlay { .. } => {
                if !self.has_whiteout(dir, name)? {
                    return Ok(());
                }
                name.to_os_string()
            }
            WhiteoutFormat::Aufs => Self::aufs_marker(name),
        };
        match fsutil::unlink_at(dir, &target, false) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// Moves `tmp` from the work directory to `name` in upper directory `dir`,
    /// replacing a whiteout of `name` (`over_whiteout`) in the same step where the
    /// format allows.
    pub fn place(
        &self,
        tmp: &OsStr,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        over_whiteout: bool,
    ) -> io::Result<()> {
        if !over_whiteout {
            return sys::rename_at(self.work(), tmp, dir, name, libc::RENAME_NOREPLACE);
        }
        match self.format {
            WhiteoutFormat::None => {
                sys::rename_at(self.work(), tmp, dir, name, libc::RENAME_NOREPLACE)
            }
            WhiteoutFormat::Overlay { .. } => {
                let is_dir = fsutil::stat_at(self.work(), tmp)?.is_some_and(|m| m.is_dir());
                if is_dir {
                    // A directory cannot replace a non-directory: swap, then drop the whiteout.
                    sys::rename_at(self.work(), tmp, dir, name, libc::RENAME_EXCHANGE)?;
                    fsutil::unlink_at(self.work(), tmp, false)
                } else {
                    sys::rename_at(self.work(), tmp, dir, name, 0)
                }
            }
            WhiteoutFormat::Aufs => {
                sys::rename_at(self.work(), tmp, dir, name, libc::RENAME_NOREPLACE)?;
                self.remove_whiteout(dir, name)
            }
        }
    }

    /// Marks the upper directory `dir` (an open directory) opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        match self.format {
            WhiteoutFormat::None => Ok(()),
            WhiteoutFormat::Overlay { userxattr } => {
                xattr::XattrTarget::Fd(dir).set(xattr::overlay_opaque_xattr(userxattr), b"y")
            }
            WhiteoutFormat::Aufs => {
                match fsutil::open_at(
                    dir,
                    OsStr::new(OCI_OPAQUE),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o444,
                ) {
                    Ok(_) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Removes the opaque mark of the upper directory `dir` (an open directory).
    pub fn clear_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        match self.format {
            WhiteoutFormat::None => Ok(()),
            WhiteoutFormat::Overlay { userxattr } => {
                xattr::XattrTarget::Fd(dir).remove(xattr::overlay_opaque_xattr(userxattr))
            }
            WhiteoutFormat::Aufs => match fsutil::unlink_at(dir, OsStr::new(OCI_OPAQUE), false) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                other => other,
            },
        }
    }

    /// Removes every whiteout and opaque mark below the upper directory `dir`
    /// (not `dir`'s own opaque mark): used when a directory moves to a place where
    /// no lower layer merges into it any more.
    pub fn strip_markers(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        for name in fsutil::read_dir_names(dir)? {
            let Some(meta) = fsutil::stat_at(dir, &name)? else {
                continue;
            };
            let marker = match self.format {
                WhiteoutFormat::None => false,
                WhiteoutFormat::Overlay { userxattr } => {
                    whiteouts::is_whiteout_at(dir, &name, &meta, userxattr)?
                }
                WhiteoutFormat::Aufs => name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes()),
            };
            if marker {
                fsutil::remove_tree_at(dir, &name)?;
            } else if meta.is_dir() {
                let sub = fsutil::open_dir_at(dir, &name)?;
                self.clear_opaque(sub.as_fd())?;
                self.strip_markers(sub.as_fd())?;
            }
        }
        Ok(())
    }
}

/// Whether an error means "no such entry".
pub(crate) fn is_not_found(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// An `EROFS` error for writes to a read-only stack.
pub(crate) fn read_only() -> io::Error {
    errno(libc::EROFS)
}
