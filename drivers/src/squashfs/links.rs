//! Hard-link groups of image layers, copied into a new container's upper.
//!
//! Overlayfs keeps a lower hard-link group linked when one name is written only
//! with `index=on`, and it turns the index off as soon as two lower layers sit on
//! filesystems without a UUID, which is what every squashfs mount is ("null
//! uuid detected in lower fs ..., falling back to index=off"). So when a
//! container is created, every hard-link group of its image that has two or
//! more visible names is copied into the container's upper directory once, as
//! one inode with all those names, with the metadata of the merged view (its
//! parent directories too). Writing any name then changes all of them, under
//! the kernel and the FUSE frontend alike, and the container's merged view is
//! unchanged: same content, owners, modes, times and xattrs, so diffs are empty.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{DriverError, IoContext, Result};
use crate::fsutil;
use crate::layer::{Entry, FileKind, LayerReader};
use crate::xattr::XattrTarget;

/// Extended attributes as a layer reader lists them.
type Xattrs = Vec<(OsString, Vec<u8>)>;

/// One lower layer of a new container, top first, with its hard-link groups.
pub(crate) struct LowerWithLinks {
    /// The layer.
    pub layer: Arc<dyn LayerReader>,
    /// Groups of paths naming one inode inside this layer.
    pub groups: Vec<Vec<PathBuf>>,
}

/// What [`copy_up_link_groups`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CopiedLinks {
    /// Groups copied.
    pub groups: usize,
    /// Names created (all names of all copied groups).
    pub names: usize,
    /// Bytes of file content copied.
    pub bytes: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DriverError + 'a {
    move |source| DriverError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` of layer `index` shows through the layers above it: none of
/// them has an entry at `path`, a non-directory or whiteout at an ancestor, or
/// an opaque ancestor.
fn visible(lowers: &[LowerWithLinks], index: usize, path: &Path) -> io::Result<bool> {
    let components: Vec<&OsStr> = path.iter().collect();
    for above in &lowers[..index] {
        let mut prefix = PathBuf::new();
        for (depth, c) in components.iter().enumerate() {
            prefix.push(c);
            let Some(entry) = above.layer.lookup(&prefix)? else {
                break;
            };
            if depth + 1 == components.len() || entry.kind != FileKind::Directory || entry.opaque {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The merged view's directory at `dir` (the topmost layer holding it as a directory, down to `index`).
fn merged_dir(lowers: &[LowerWithLinks], index: usize, dir: &Path) -> io::Result<(Entry, Xattrs)> {
    for lower in &lowers[..=index] {
        if let Some(e) = lower.layer.lookup(dir)? {
            if e.kind == FileKind::Directory {
                let xattrs = lower.layer.xattrs(dir)?;
                return Ok((e, xattrs));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("directory {} is in no lower layer", dir.display()),
    ))
}

/// Copies every hard-link group with two or more visible names into `upper`
/// (an empty overlay upper directory).
pub(crate) fn copy_up_link_groups(lowers: &[LowerWithLinks], upper: &Path) -> Result<CopiedLinks> {
    let mut copier = Copier {
        upper,
        created_dirs: Vec::new(),
        stats: CopiedLinks::default(),
    };
    for (index, lower) in lowers.iter().enumerate() {
        for group in &lower.groups {
            let mut names = Vec::new();
            for path in group {
                if visible(lowers, index, path).ctx("look up", path)? {
                    names.push(path.as_path());
                }
            }
            if names.len() >= 2 {
                copier.copy_group(lowers, index, &names)?;
            }
        }
    }
    copier.finish()?;
    Ok(copier.stats)
}

struct Copier<'a> {
    upper: &'a Path,
    /// Directories made in the upper, with the mtime they must end with.
    created_dirs: Vec<(PathBuf, i64)>,
    stats: CopiedLinks,
}

impl Copier<'_> {
    fn open_upper_dir(&self, rel: &Path) -> Result<OwnedFd> {
        let p = self.upper.join(rel);
        fsutil::open_dir(&p).ctx("open", p)
    }

    /// Makes the directories above `path` in the upper, with the merged view's metadata.
    fn ensure_parents(
        &mut self,
        lowers: &[LowerWithLinks],
        index: usize,
        path: &Path,
    ) -> Result<()> {
        let mut rel = PathBuf::new();
        let parents: Vec<&OsStr> = path
            .parent()
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        for c in parents {
            let parent_fd = self.open_upper_dir(&rel)?;
            rel.push(c);
            if fsutil::stat_at(parent_fd.as_fd(), c)
                .ctx("stat", self.upper.join(&rel))?
                .is_some()
            {
                continue;
            }
            let (entry, xattrs) = merged_dir(lowers, index, &rel).ctx("look up", &rel)?;
            let here = self.upper.join(&rel);
            fsutil::mkdir_at(parent_fd.as_fd(), c, 0o700).map_err(io_err("mkdir", &here))?;
            let fd = fsutil::open_dir(&here).ctx("open", &here)?;
            set_meta(fd.as_fd(), &entry, &xattrs, &here)?;
            self.created_dirs.push((rel.clone(), entry.mtime));
        }
        Ok(())
    }

    fn copy_group(
        &mut self,
        lowers: &[LowerWithLinks],
        index: usize,
        names: &[&Path],
    ) -> Result<()> {
        let layer = &lowers[index].layer;
        let first = names[0];
        let entry = layer.lookup(first).ctx("look up", first)?.ok_or_else(|| {
            DriverError::Other(format!("{} vanished from its layer", first.display()))
        })?;
        let xattrs = layer.xattrs(first).ctx("read xattrs", first)?;
        self.ensure_parents(lowers, index, first)?;
        let (parent, name) = fsutil::split_rel(first);
        let dir = self.open_upper_dir(&parent)?;
        let target = self.upper.join(first);
        match entry.kind {
            FileKind::Regular => {
                let fd = fsutil::open_at(
                    dir.as_fd(),
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(io_err("create", &target))?;
                let file = File::from(fd);
                self.stats.bytes +=
                    copy_content(layer.as_ref(), first, &file, entry.size, &target)?;
                set_meta(file.as_fd(), &entry, &xattrs, &target)?;
            }
            FileKind::Symlink => {
                let link = layer.readlink(first).ctx("readlink", first)?;
                fsutil::symlink_at(&link, dir.as_fd(), &name)
                    .map_err(io_err("symlink", &target))?;
                set_meta_at(dir.as_fd(), &name, &entry, &xattrs, &target)?;
            }
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                fsutil::mknod_at(dir.as_fd(), &name, entry.kind, entry.mode, entry.rdev)
                    .map_err(io_err("mknod", &target))?;
                set_meta_at(dir.as_fd(), &name, &entry, &xattrs, &target)?;
            }
            FileKind::Directory | FileKind::Whiteout => return Ok(()),
        }
        for other in &names[1..] {
            self.ensure_parents(lowers, index, other)?;
            let (oparent, oname) = fsutil::split_rel(other);
            let odir = self.open_upper_dir(&oparent)?;
            fsutil::link_at(dir.as_fd(), &name, odir.as_fd(), &oname)
                .map_err(io_err("link", &self.upper.join(other)))?;
        }
        self.stats.groups += 1;
        self.stats.names += names.len();
        Ok(())
    }

    /// Gives the directories made their merged view's times (deepest first).
    fn finish(&mut self) -> Result<()> {
        self.created_dirs
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mtime) in &self.created_dirs {
            let p = self.upper.join(rel);
            let fd = fsutil::open_dir(&p).ctx("open", &p)?;
            fsutil::set_times_fd(fd.as_fd(), *mtime, 0).ctx("set times", &p)?;
        }
        Ok(())
    }
}

/// Copies file content, leaving holes where the content is zero.
fn copy_content(
    layer: &dyn LayerReader,
    path: &Path,
    out: &File,
    size: u64,
    target: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut at = 0u64;
    while at < size {
        let n = layer.read_at(path, at, &mut buf).ctx("read", path)?;
        if n == 0 {
            return Err(DriverError::Other(format!(
                "{} ends at {at} bytes of {size}",
                path.display()
            )));
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            out.write_all_at(chunk, at).ctx("write", target)?;
        }
        at += n as u64;
    }
    out.set_len(size).ctx("truncate", target)?;
    Ok(size)
}

fn set_meta(
    fd: std::os::fd::BorrowedFd<'_>,
    e: &Entry,
    xattrs: &[(OsString, Vec<u8>)],
    path: &Path,
) -> Result<()> {
    // chown first: it clears setuid/setgid and security.capability.
    fsutil::chown_fd(fd, e.uid, e.gid).ctx("chown", path)?;
    fsutil::chmod_fd(fd, e.mode).ctx("chmod", path)?;
    for (name, value) in xattrs {
        XattrTarget::Fd(fd)
            .set(name, value)
            .ctx("set xattr", path)?;
    }
    fsutil::set_times_fd(fd, e.mtime, e.mtime_nsec).ctx("set times", path)
}

fn set_meta_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    e: &Entry,
    xattrs: &[(OsString, Vec<u8>)],
    path: &Path,
) -> Result<()> {
    fsutil::chown_at(dir, name, e.uid, e.gid).ctx("chown", path)?;
    if e.kind != FileKind::Symlink {
        fsutil::chmod_at(dir, name, e.mode).ctx("chmod", path)?;
    }
    for (xname, value) in xattrs {
        XattrTarget::At(dir, name)
            .set(xname, value)
            .ctx("set xattr", path)?;
    }
    fsutil::set_times_at(dir, name, e.mtime, e.mtime_nsec).ctx("set times", path)
}
