//! A [`LayerReader`] over a directory on disk.
//!
//! [`DirLayer`] presents a layer directory whose deletions are stored in a
//! given [`WhiteoutFormat`]: overlay (0/0 character devices, the
//! `overlay.opaque=y` xattr), AUFS (`.wh.NAME` files, `.wh..wh..opq`, hidden
//! `.wh..wh.*` housekeeping names) or none (a plain tree). Every access goes
//! through descriptors: paths are resolved by the kernel inside the layer root
//! and never through a symlink (`RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), so a
//! layer's own symlinks are presented, not followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dircache::DirCache;
use crate::fsutil::{self, clean_components, join_components, Meta};
use crate::layer::{DirEntry, Entry, FileKind, LayerReader, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};
use crate::mount::WhiteoutFormat;
use crate::ownership::{self, Ownership, Target};
use crate::whiteouts;
use crate::xattr::{self, XattrTarget};

/// A layer stored as a directory, read through descriptors.
#[derive(Debug)]
pub struct DirLayer {
    root: PathBuf,
    root_fd: OwnedFd,
    format: WhiteoutFormat,
    ownership: Ownership,
    /// Recently opened parent directories by path.
    parents: Arc<DirCache>,
}

/// How many parent directories a layer keeps open for lookups.
const PARENT_CACHE: usize = 32;

/// Where an entry of the layer lives: its parent directory and name, or the root.
enum Location {
    Root,
    In(Arc<OwnedFd>, OsString),
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// Errors meaning "there is no such path in this layer".
fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
    )
}

impl DirLayer {
    /// Opens the layer directory `dir`, whose whiteouts are stored in `format`.
    pub fn open(dir: &Path, format: WhiteoutFormat) -> io::Result<DirLayer> {
        Ok(DirLayer {
            root: dir.to_path_buf(),
            root_fd: fsutil::open_dir(dir)?,
            format,
            ownership: Ownership::Native,
            parents: Arc::new(DirCache::new(PARENT_CACHE, libc::O_PATH)),
        })
    }

    /// Looks parent directories up through `cache`, which whoever writes the
    /// layer while it is read (the FUSE frontend, for its upper) shares and
    /// clears when directories move or go. Other layers of a stack are fixed
    /// while it is mounted, as for overlayfs, and keep a cache of their own.
    pub fn with_dir_cache(mut self, cache: Arc<DirCache>) -> DirLayer {
        self.parents = cache;
        self
    }

    /// Opens the layer directory `dir` of a store whose owners, modes and device
    /// nodes are kept as `ownership` says.
    pub fn open_as(
        dir: &Path,
        format: WhiteoutFormat,
        ownership: Ownership,
    ) -> io::Result<DirLayer> {
        Ok(DirLayer::open(dir, format)?.with_ownership(ownership))
    }

    /// Reads owners, modes and device nodes as a store with `ownership` keeps them.
    pub fn with_ownership(mut self, ownership: Ownership) -> DirLayer {
        self.ownership = ownership;
        self
    }

    /// `meta` of the object `target` as the image gives it.
    fn present(&self, target: Target<'_>, mut meta: Meta) -> io::Result<Meta> {
        self.ownership.present(target, &mut meta)?;
        Ok(meta)
    }

    /// The whiteout format this layer is read in.
    pub fn format(&self) -> WhiteoutFormat {
        self.format
    }

    /// Whether `name` is a whiteout marker or housekeeping name that is never an ordinary entry.
    fn is_hidden(&self, name: &OsStr) -> bool {
        self.format == WhiteoutFormat::Aufs
            && name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes())
    }

    /// Resolves `path` to its parent directory and name. `Ok(None)` when a
    /// parent is missing, not a directory, a symlink, or a hidden name.
    fn locate(&self, path: &Path) -> io::Result<Option<Location>> {
        let components = clean_components(path.as_os_str().as_bytes());
        let Some((name, parent)) = components.split_last() else {
            return Ok(Some(Location::Root));
        };
        if components.iter().any(|c| self.is_hidden(c)) {
            return Ok(None);
        }
        match self
            .parents
            .open(self.root_fd.as_fd(), &join_components(parent))
        {
            Ok(fd) => Ok(Some(Location::In(fd, name.clone()))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn locate_existing(&self, path: &Path) -> io::Result<Location> {
        self.locate(path)?.ok_or_else(not_found)
    }

    /// Whether directory `name` inside `dir` (or the root) is opaque.
    fn is_opaque(&self, dir: Option<BorrowedFd<'_>>, name: &OsStr) -> io::Result<bool> {
        match self.format {
            WhiteoutFormat::None => Ok(false),
            WhiteoutFormat::Overlay { userxattr } => {
                let target = match dir {
                    Some(d) => XattrTarget::At(d, name),
                    None => XattrTarget::Fd(self.root_fd.as_fd()),
                };
                Ok(target
                    .get(xattr::overlay_opaque_xattr(userxattr))?
                    .as_deref()
                    == Some(b"y"))
            }
            WhiteoutFormat::Aufs => {
                let sub = match dir {
                    Some(d) => fsutil::open_at(d, name, libc::O_PATH | libc::O_DIRECTORY, 0)?,
                    None => fsutil::open_dir_at(self.root_fd.as_fd(), OsStr::new(""))?,
                };
                Ok(fsutil::stat_at(sub.as_fd(), OsStr::new(OCI_OPAQUE))?.is_some())
            }
        }
    }

    /// Whether the empty file `name` in `dir` is an xattr whiteout (only the
    /// `userxattr` overlay form of unprivileged stores writes them).
    fn is_xattr_whiteout(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
    ) -> io::Result<bool> {
        match self.format {
            WhiteoutFormat::Overlay { userxattr: true }
                if meta.kind == FileKind::Regular && meta.size == 0 =>
            {
                whiteouts::is_whiteout_at(dir, name, meta, true)
            }
            _ => Ok(false),
        }
    }

    fn entry_from(&self, meta: &Meta, opaque: bool) -> Entry {
        let whiteout =
            matches!(self.format, WhiteoutFormat::Overlay { .. }) && meta.is_overlay_whiteout();
        Entry {
            kind: if whiteout {
                FileKind::Whiteout
            } else {
                meta.kind
            },
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            rdev: meta.rdev,
            nlink: u32::try_from(meta.nlink).unwrap_or(u32::MAX),
            ino: meta.ino,
            opaque,
        }
    }

    fn open_regular(&self, path: &Path) -> io::Result<File> {
        let Location::In(dir, name) = self.locate_existing(path)? else {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        let wrong_kind = |kind: FileKind| {
            io::Error::from_raw_os_error(if kind == FileKind::Directory {
                libc::EISDIR
            } else {
                libc::EINVAL
            })
        };
        // Check the type before opening: opening a device node can have side effects.
        let meta = fsutil::stat_at(dir.as_fd(), &name)?.ok_or_else(not_found)?;
        if meta.kind != FileKind::Regular {
            return Err(wrong_kind(meta.kind));
        }
        let fd = fsutil::open_at(dir.as_fd(), &name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
        let meta = fsutil::stat_fd(fd.as_fd())?;
        if meta.kind != FileKind::Regular {
            return Err(wrong_kind(meta.kind));
        }
        Ok(File::from(fd))
    }
}

impl LayerReader for DirLayer {
    fn lookup(&self, path: &Path) -> io::Result<Option<Entry>> {
        let Some(location) = self.locate(path)? else {
            return Ok(None);
        };
        match location {
            Location::Root => {
                let root = self.root_fd.as_fd();
                let meta = self.present(Target::Fd(root), fsutil::stat_fd(root)?)?;
                let opaque = self.is_opaque(None, OsStr::new(""))?;
                Ok(Some(self.entry_from(&meta, opaque)))
            }
            Location::In(dir, name) => match fsutil::stat_at(dir.as_fd(), &name)? {
                Some(meta) => {
                    if self.is_xattr_whiteout(dir.as_fd(), &name, &meta)? {
                        return Ok(Some(Entry {
                            kind: FileKind::Whiteout,
                            ..self.entry_from(&meta, false)
                        }));
                    }
                    let meta = self.present(Target::At(dir.as_fd(), &name), meta)?;
                    let opaque = meta.is_dir() && self.is_opaque(Some(dir.as_fd()), &name)?;
                    Ok(Some(self.entry_from(&meta, opaque)))
                }
                None if self.format == WhiteoutFormat::Aufs => {
                    let mut marker = OsString::from(OCI_WHITEOUT_PREFIX);
                    marker.push(&name);
                    Ok(fsutil::stat_at(dir.as_fd(), &marker)?.map(|meta| Entry {
                        kind: FileKind::Whiteout,
                        ..self.entry_from(&meta, false)
                    }))
                }
                None => Ok(None),
            },
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let dir = match self.locate_existing(path)? {
            Location::Root => fsutil::open_dir_at(self.root_fd.as_fd(), OsStr::new(""))?,
            Location::In(parent, name) => fsutil::open_dir_at(parent.as_fd(), &name)?,
        };
        let listed = fsutil::read_dir_typed(dir.as_fd())?;
        let mut out = Vec::with_capacity(listed.len());
        for (name, reported) in &listed {
            let bytes = name.as_bytes();
            if self.format == WhiteoutFormat::Aufs
                && bytes.starts_with(OCI_WHITEOUT_PREFIX.as_bytes())
            {
                if bytes.starts_with(b".wh..wh.") {
                    continue;
                }
                let target = OsStr::from_bytes(&bytes[OCI_WHITEOUT_PREFIX.len()..]);
                let shadowed = listed
                    .binary_search_by(|(n, _)| n.as_bytes().cmp(target.as_bytes()))
                    .is_ok();
                if !target.is_empty() && !shadowed {
                    out.push(DirEntry {
                        name: target.to_os_string(),
                        kind: FileKind::Whiteout,
                    });
                }
                continue;
            }
            // The directory's own type is enough unless a character device may be
            // an overlay whiteout or an empty file may stand in for a device node.
            let xattr_whiteouts = self.format == WhiteoutFormat::Overlay { userxattr: true };
            let trusted = match reported {
                Some(FileKind::CharDevice) | None => false,
                Some(FileKind::Regular) => self.ownership.is_native() && !xattr_whiteouts,
                Some(_) => true,
            };
            if let (true, Some(kind)) = (trusted, reported) {
                out.push(DirEntry {
                    name: name.clone(),
                    kind: *kind,
                });
                continue;
            }
            let Some(mut meta) = fsutil::stat_at(dir.as_fd(), name)? else {
                continue;
            };
            if self.is_xattr_whiteout(dir.as_fd(), name, &meta)? {
                out.push(DirEntry {
                    name: name.clone(),
                    kind: FileKind::Whiteout,
                });
                continue;
            }
            if !self.ownership.is_native() && meta.kind == FileKind::Regular && meta.size == 0 {
                // It may stand in for a device node.
                meta = self.present(Target::At(dir.as_fd(), name), meta)?;
            }
            out.push(DirEntry {
                name: name.clone(),
                kind: self.entry_from(&meta, false).kind,
            });
        }
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.open_regular(path)?;
        loop {
            match file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn readlink(&self, path: &Path) -> io::Result<OsString> {
        match self.locate_existing(path)? {
            Location::Root => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            Location::In(dir, name) => fsutil::readlink_at(dir.as_fd(), &name),
        }
    }

    fn xattrs(&self, path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let all = match self.locate_existing(path)? {
            Location::Root => XattrTarget::Fd(self.root_fd.as_fd()).list()?,
            Location::In(dir, name) => {
                if fsutil::stat_at(dir.as_fd(), &name)?.is_none() {
                    return Err(not_found());
                }
                XattrTarget::At(dir.as_fd(), &name).list()?
            }
        };
        Ok(all
            .into_iter()
            .filter(|(n, _)| !xattr::is_overlay_xattr(n) && !ownership::is_override_xattr(n))
            .collect())
    }

    fn open_file(&self, path: &Path) -> io::Result<Option<OwnedFd>> {
        self.open_regular(path).map(|f| Some(OwnedFd::from(f)))
    }

    fn directory(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
