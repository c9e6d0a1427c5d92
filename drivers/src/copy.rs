//! Full copies of directory trees.
//!
//! [`copy_tree`] reproduces a tree exactly: types, owners, permission bits,
//! modification times, xattrs, hard-link groups, device nodes, fifos and the
//! holes of sparse files. Regular-file data is shared by reflink (`FICLONE`)
//! where the filesystem allows it, otherwise copied in the kernel with
//! `copy_file_range`, walking the data segments with `SEEK_DATA`/`SEEK_HOLE` so
//! that holes stay holes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::{self, Meta};
use crate::layer::FileKind;
use crate::xattr::XattrTarget;

/// How the content of one regular file was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Shared extents (`ioctl(FICLONE)`), no data copied.
    Reflink,
    /// In-kernel copy (`copy_file_range`), holes skipped.
    CopyFileRange,
    /// Plain reads and writes, holes skipped.
    ReadWrite,
}

impl std::fmt::Display for CopyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::ReadWrite => "read/write",
        })
    }
}

/// What [`copy_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries created (directories, files, links, nodes), the root excluded.
    pub entries: u64,
    /// Bytes of regular-file content (apparent sizes).
    pub bytes: u64,
    /// Regular files whose content was shared by reflink.
    pub reflinked_files: u64,
    /// Regular files whose content was copied (`copy_file_range` or read/write).
    pub copied_files: u64,
    /// Entries created as hard links to an earlier copied file.
    pub hardlinks: u64,
}

impl CopyStats {
    /// The method used for regular-file data: [`CopyMethod::Reflink`] when every
    /// file with content was reflinked, `None` when there was no file content.
    pub fn method(&self) -> Option<CopyMethod> {
        match (self.reflinked_files, self.copied_files) {
            (0, 0) => None,
            (_, 0) => Some(CopyMethod::Reflink),
            _ => Some(CopyMethod::CopyFileRange),
        }
    }
}

/// Copies the tree at `src` to `dst`, which must not exist or be an empty directory.
///
/// Symlinks are copied as symlinks and never followed. Hard-link groups inside
/// `src` become hard-link groups inside `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let src_fd = fsutil::open_dir(src).ctx("open copy source", src)?;
    match std::fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DriverError::Io {
                op: "copy into",
                path: dst.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir(dst).ctx("create copy target", dst)?;
        }
        Err(e) => return Err(e).ctx("stat copy target", dst),
    }
    let dst_fd = fsutil::open_dir(dst).ctx("open copy target", dst)?;
    let mut copier = Copier {
        src_root: src.to_path_buf(),
        dst_root: dst_fd.try_clone().ctx("dup", dst)?,
        links: HashMap::new(),
        stats: CopyStats::default(),
        try_reflink: true,
        try_copy_range: true,
    };
    copier.copy_dir(src_fd.as_fd(), dst_fd.as_fd(), Path::new(""))?;
    let root_meta = fsutil::stat_fd(src_fd.as_fd()).ctx("stat", src)?;
    copier.copy_meta_fd(src_fd.as_fd(), dst_fd.as_fd(), &root_meta, Path::new(""))?;
    debug!(src = %src.display(), dst = %dst.display(), stats = ?copier.stats, "copied tree");
    Ok(copier.stats)
}

struct Copier {
    src_root: PathBuf,
    dst_root: OwnedFd,
    /// First copied path (relative) of every multiply-linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
    try_reflink: bool,
    try_copy_range: bool,
}

impl Copier {
    fn err(&self, op: &'static str, rel: &Path, source: io::Error) -> DriverError {
        DriverError::Io {
            op,
            path: self.src_root.join(rel),
            source,
        }
    }

    fn copy_dir(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, rel: &Path) -> Result<()> {
        let names = fsutil::read_dir_names(src).map_err(|e| self.err("read directory", rel, e))?;
        for name in names {
            let child = rel.join(&name);
            let Some(meta) =
                fsutil::stat_at(src, &name).map_err(|e| self.err("stat", &child, e))?
            else {
                continue;
            };
            self.copy_entry(src, dst, &name, &child, &meta)?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        meta: &Meta,
    ) -> Result<()> {
        self.stats.entries += 1;
        if !meta.is_dir() && meta.nlink > 1 {
            if let Some(first) = self.links.get(&(meta.dev, meta.ino)) {
                let (first_parent, first_name) = fsutil::split_rel(first);
                let pfd = fsutil::open_in_root(
                    self.dst_root.as_fd(),
                    &first_parent,
                    libc::O_PATH | libc::O_DIRECTORY,
                    0,
                    libc::RESOLVE_NO_SYMLINKS,
                )
                .map_err(|e| self.err("open link target directory", rel, e))?;
                fsutil::link_at(pfd.as_fd(), &first_name, dst, name)
                    .map_err(|e| self.err("link", rel, e))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links.insert((meta.dev, meta.ino), rel.to_path_buf());
        }
        match meta.kind {
            FileKind::Directory => {
                fsutil::mkdir_at(dst, name, 0o700).map_err(|e| self.err("mkdir", rel, e))?;
                let s = fsutil::open_dir_at(src, name)
                    .map_err(|e| self.err("open directory", rel, e))?;
                let d = fsutil::open_dir_at(dst, name)
                    .map_err(|e| self.err("open directory", rel, e))?;
                self.copy_dir(s.as_fd(), d.as_fd(), rel)?;
                self.copy_meta_fd(s.as_fd(), d.as_fd(), meta, rel)?;
            }
            FileKind::Regular => {
                let s = fsutil::open_at(src, name, libc::O_RDONLY, 0)
                    .map_err(|e| self.err("open", rel, e))?;
                let d = fsutil::open_at(
                    dst,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(|e| self.err("create", rel, e))?;
                let (s, d) = (File::from(s), File::from(d));
                let size = fsutil::stat_fd(s.as_fd())
                    .map_err(|e| self.err("stat", rel, e))?
                    .size;
                if size > 0 {
                    let method = copy_data(
                        &s,
                        &d,
                        size,
                        &mut self.try_reflink,
                        &mut self.try_copy_range,
                    )
                    .map_err(|e| self.err("copy content", rel, e))?;
                    if method == CopyMethod::Reflink {
                        self.stats.reflinked_files += 1;
                    } else {
                        self.stats.copied_files += 1;
                    }
                    self.stats.bytes += size;
                }
                self.copy_meta_fd(s.as_fd(), d.as_fd(), meta, rel)?;
            }
            FileKind::Symlink => {
                let target =
                    fsutil::readlink_at(src, name).map_err(|e| self.err("readlink", rel, e))?;
                fsutil::symlink_at(&target, dst, name).map_err(|e| self.err("symlink", rel, e))?;
                self.copy_meta_at(src, dst, name, meta, rel)?;
            }
            FileKind::Fifo
            | FileKind::CharDevice
            | FileKind::BlockDevice
            | FileKind::Socket
            | FileKind::Whiteout => {
                fsutil::mknod_at(dst, name, meta.kind, meta.mode, meta.rdev)
                    .map_err(|e| self.err("mknod", rel, e))?;
                self.copy_meta_at(src, dst, name, meta, rel)?;
            }
        }
        Ok(())
    }

    fn copy_meta_fd(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        meta: &Meta,
        rel: &Path,
    ) -> Result<()> {
        fsutil::chown_fd(dst, meta.uid, meta.gid).map_err(|e| self.err("chown", rel, e))?;
        fsutil::chmod_fd(dst, meta.mode).map_err(|e| self.err("chmod", rel, e))?;
        copy_xattrs(XattrTarget::Fd(src), XattrTarget::Fd(dst))
            .map_err(|e| self.err("copy xattrs", rel, e))?;
        fsutil::set_times_fd(dst, meta.mtime, meta.mtime_nsec)
            .map_err(|e| self.err("set times", rel, e))
    }

    fn copy_meta_at(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        rel: &Path,
    ) -> Result<()> {
        fsutil::chown_at(dst, name, meta.uid, meta.gid).map_err(|e| self.err("chown", rel, e))?;
        fsutil::chmod_at(dst, name, meta.mode).map_err(|e| self.err("chmod", rel, e))?;
        copy_xattrs(XattrTarget::At(src, name), XattrTarget::At(dst, name))
            .map_err(|e| self.err("copy xattrs", rel, e))?;
        fsutil::set_times_at(dst, name, meta.mtime, meta.mtime_nsec)
            .map_err(|e| self.err("set times", rel, e))
    }
}

/// Copies every xattr of `src` to `dst`; attributes the target refuses
/// (unsupported filesystem, `user.*` on symlinks) are skipped with a warning.
pub fn copy_xattrs(src: XattrTarget<'_>, dst: XattrTarget<'_>) -> io::Result<()> {
    for (name, value) in src.list()? {
        match dst.set(&name, &value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                warn!(xattr = ?name, error = %e, "cannot copy xattr, skipping it");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether an error means "this way of copying is not available here".
fn copy_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP)
            | Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOTTY)
            | Some(libc::ENOSYS)
            | Some(libc::EBADF)
    )
}

/// Copies the first `size` bytes of `src` into the empty file `dst` and sets
/// `dst`'s length to `size`, by reflink when possible, else keeping holes.
pub fn copy_file_content(src: &File, dst: &File, size: u64) -> io::Result<CopyMethod> {
    copy_data(src, dst, size, &mut true, &mut true)
}

fn copy_data(
    src: &File,
    dst: &File,
    size: u64,
    try_reflink: &mut bool,
    try_copy_range: &mut bool,
) -> io::Result<CopyMethod> {
    if *try_reflink {
        // SAFETY: FICLONE takes the source descriptor as its argument.
        let ret = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if ret == 0 {
            dst.set_len(size)?;
            return Ok(CopyMethod::Reflink);
        }
        let err = io::Error::last_os_error();
        if !copy_unsupported(&err) {
            return Err(err);
        }
        *try_reflink = false;
    }
    let mut method = if *try_copy_range {
        CopyMethod::CopyFileRange
    } else {
        CopyMethod::ReadWrite
    };
    for (start, end) in data_segments(src, size)? {
        if method == CopyMethod::CopyFileRange {
            match copy_range(src, dst, start, end) {
                Ok(()) => continue,
                Err(e) if copy_unsupported(&e) => {
                    *try_copy_range = false;
                    method = CopyMethod::ReadWrite;
                }
                Err(e) => return Err(e),
            }
        }
        copy_range_rw(src, dst, start, end)?;
    }
    dst.set_len(size)?;
    Ok(method)
}

/// The `[start, end)` data segments of the first `size` bytes of `file`.
fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut segments = Vec::new();
    let mut offset: u64 = 0;
    while offset < size {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // No data after `offset`: the rest is a hole.
                Some(libc::ENXIO) => Ok(segments),
                // SEEK_DATA unsupported: treat everything left as data.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    segments.push((offset, size));
                    Ok(segments)
                }
                _ => Err(err),
            };
        }
        let data = data as u64;
        if data >= size {
            break;
        }
        // SAFETY: lseek on a valid descriptor.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        segments.push((data, hole));
        offset = hole;
    }
    Ok(segments)
}

fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut off_in = start as libc::loff_t;
    let mut off_out = start as libc::loff_t;
    while (off_in as u64) < end {
        let len = (end - off_in as u64).min(1 << 30) as usize;
        // SAFETY: valid descriptors and offset pointers.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            // The source shrank while being copied; the final set_len restores the size.
            break;
        }
    }
    Ok(())
}

fn copy_range_rw(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = start;
    while offset < end {
        let want = ((end - offset) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// Whether files in directory `dir` can be reflinked (probes with two temporary files).
pub fn reflink_supported(dir: &Path) -> bool {
    let probe = || -> io::Result<bool> {
        let dir_fd = fsutil::open_dir(dir)?;
        let open_tmp = || {
            fsutil::open_at(
                dir_fd.as_fd(),
                OsStr::new("."),
                libc::O_TMPFILE | libc::O_RDWR,
                0o600,
            )
        };
        let (a, b) = (File::from(open_tmp()?), File::from(open_tmp()?));
        a.write_all_at(&[0x5a; 4096], 0)?;
        // SAFETY: FICLONE takes the source descriptor as its argument.
        let ret = unsafe { libc::ioctl(b.as_raw_fd(), libc::FICLONE, a.as_raw_fd()) };
        Ok(ret == 0)
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_segments_of_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 8 << 20).unwrap();
        let size = (8 << 20) + 4;
        let segs = data_segments(&f, size).unwrap();
        assert!(segs.len() >= 2, "{segs:?}");
        assert_eq!(segs[0].0, 0);
        assert_eq!(segs.last().unwrap().1, size);
        let total: u64 = segs.iter().map(|(a, b)| b - a).sum();
        assert!(
            total < size / 2,
            "holes must not be reported as data: {segs:?}"
        );
    }
}
