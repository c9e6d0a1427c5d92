//! Copy-up: bringing an object from a read-only layer into the upper before it
//! changes.
//!
//! The copy is built in the work directory — data (by reflink where the
//! filesystem allows, else `copy_file_range` keeping holes, else reads through
//! the layer), extended attributes, owner, mode and times, the data synced —
//! and renamed into the upper in one step, so a crash never leaves a partial
//! object visible. A copy-up caused by an attribute change (chmod, chown,
//! utimens, truncate) gets the new attributes before the rename, so the upper
//! shows the old object or the changed one, never a copy with stale metadata,
//! and the data is copied exactly once (see `docs/decisions.md`: why the data
//! cannot be deferred past the rename). Parent directories are copied up first. A file with other
//! hard links in its layer has those names linked to the copy in the same go,
//! so the links survive.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use drivers::copy::copy_file_content;
use drivers::fsutil;
use drivers::layer::{Entry, FileKind, LayerReader};
use drivers::ownership::{OverrideStat, Ownership, Target};
use drivers::xattr::XattrTarget;
use tracing::{debug, warn};

use crate::merged::{AliasIndex, Merged, SetAttr};
use crate::nodes::{Table, ROOT};
use crate::stats::Counters;
use crate::sys::{self, errno, TimeSpec};
use crate::upper::Upper;

impl Merged {
    /// Copies `ino` into the upper unless it is there already. With `size`, a
    /// regular file's data is copied only up to that length (it is about to be
    /// truncated).
    pub(crate) fn copy_up(&self, t: &mut Table, ino: u64, size: Option<u64>) -> io::Result<()> {
        self.copy_up_with(t, ino, size, None).map(drop)
    }

    /// [`Merged::copy_up`] that also applies `changes` (owner, mode, times; the
    /// size is `size`) to the copy before it enters the upper. Returns whether a
    /// copy was made (`false`: the object was in the upper already and
    /// `changes` are still to be applied).
    pub(crate) fn copy_up_with(
        &self,
        t: &mut Table,
        ino: u64,
        size: Option<u64>,
        changes: Option<&SetAttr>,
    ) -> io::Result<bool> {
        let upper = self.upper()?;
        if self.in_upper(t, ino)? {
            return Ok(false);
        }
        if ino == ROOT {
            // The upper directory itself is the root; it always exists.
            return Err(errno(libc::EIO));
        }
        let (parent, name) = t
            .get(ino)?
            .names
            .first()
            .cloned()
            .ok_or_else(|| errno(libc::ENOENT))?;
        self.copy_up(t, parent, None)?;
        let parent_path = t.path(parent)?;
        let path = parent_path.join(&name);
        let node = t.get(ino)?;
        let (layer, kind, entry) = (node.layers[0], node.kind, node.entry.clone());
        let reader = self.layers.reader(layer);
        let dir = upper.dir(&parent_path)?;
        let tmp = upper.temp_name();
        debug!(path = %path.display(), "copy up");
        Counters::bump(&self.counters.copy_ups);
        let built = build_copy(upper, reader, &path, &entry, &tmp, size, &self.counters)
            .and_then(|()| match changes {
                Some(c) => {
                    if let Some(size) = size.filter(|_| kind == FileKind::Regular) {
                        // Only the layer's bytes up to `size` were copied; `ftruncate`
                        // extends the copy and, as on an upper file, sets its mtime.
                        let fd = fsutil::open_at(upper.work(), &tmp, libc::O_WRONLY, 0)?;
                        File::from(fd).set_len(size)?;
                    }
                    apply_changes(upper.ownership(), upper.work(), &tmp, kind, c)
                }
                None => Ok(()),
            })
            .and_then(|()| upper.place(&tmp, dir.as_fd(), &name, false));
        if let Err(e) = built {
            let _ = fsutil::remove_tree_at(upper.work(), &tmp);
            warn!(path = %path.display(), error = %e, "copy up failed");
            return Err(e);
        }
        let upper_ino = sys::stat_at(dir.as_fd(), &name)?.st_ino;
        let upper_index = 0;
        if kind == FileKind::Directory {
            t.get_mut(ino)?.layers.insert(0, upper_index);
        } else {
            t.get_mut(ino)?.layers = vec![upper_index];
            t.add_identity(ino, upper_index, upper_ino);
            if entry.nlink > 1 {
                self.link_aliases(t, ino, layer, &entry, &path)?;
            }
        }
        Ok(true)
    }

    /// Links the other names of a just copied-up file's layer inode to the copy,
    /// where the merged view still shows them as that inode.
    fn link_aliases(
        &self,
        t: &mut Table,
        ino: u64,
        layer: usize,
        entry: &Entry,
        copied: &Path,
    ) -> io::Result<()> {
        let upper = self.upper()?;
        let index = self.alias_index(layer)?;
        let Some(paths) = index.get(&entry.ino) else {
            return Ok(());
        };
        for alias in paths.iter().filter(|p| p.as_path() != copied) {
            let (Some(alias_parent), Some(alias_name)) = (alias.parent(), alias.file_name()) else {
                continue;
            };
            if self.lookup_path(t, alias)? != Some(ino) {
                continue;
            }
            let Some(parent_ino) = self.lookup_path(t, alias_parent)? else {
                continue;
            };
            self.copy_up(t, parent_ino, None)?;
            let alias_dir = upper.dir(alias_parent)?;
            if fsutil::stat_at(alias_dir.as_fd(), alias_name)?.is_some() {
                continue;
            }
            let (src_dir, src_name) = self.upper_location(t, ino)?;
            let tmp = upper.temp_name();
            fsutil::link_at(src_dir.as_fd(), &src_name, upper.work(), &tmp)?;
            if let Err(e) = upper.place(&tmp, alias_dir.as_fd(), alias_name, false) {
                let _ = fsutil::unlink_at(upper.work(), &tmp, false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The hard-link groups of layer `layer`: inode number to paths, for every
    /// non-directory with more than one link (built on first use).
    fn alias_index(&self, layer: usize) -> io::Result<Arc<AliasIndex>> {
        let mut cache = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = cache.get(&layer) {
            return Ok(index.clone());
        }
        let reader = self.layers.reader(layer);
        let mut index = AliasIndex::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            for child in reader.read_dir(&dir)? {
                let path = dir.join(&child.name);
                match child.kind {
                    FileKind::Directory => stack.push(path),
                    FileKind::Whiteout => {}
                    _ => {
                        if let Some(e) = reader.lookup(&path)? {
                            if e.nlink > 1 {
                                index.entry(e.ino).or_default().push(path);
                            }
                        }
                    }
                }
            }
        }
        let index = Arc::new(index);
        cache.insert(layer, index.clone());
        Ok(index)
    }
}

/// Builds a copy of `path` of `reader` (described by `entry`) as `tmp` in the
/// work directory.
fn build_copy(
    upper: &Upper,
    reader: &dyn LayerReader,
    path: &Path,
    entry: &Entry,
    tmp: &OsStr,
    size: Option<u64>,
    counters: &Counters,
) -> io::Result<()> {
    let work = upper.work();
    let mut real = entry.kind;
    let mut atime = TimeSpec::At(entry.mtime, i64::from(entry.mtime_nsec));
    match entry.kind {
        FileKind::Directory => fsutil::mkdir_at(work, tmp, 0o700)?,
        FileKind::Regular => {
            let dst = File::from(fsutil::open_at(
                work,
                tmp,
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )?);
            let len = size.map_or(entry.size, |s| s.min(entry.size));
            counters.copy_up_bytes.fetch_add(len, Ordering::Relaxed);
            match reader.open_file(path)? {
                Some(fd) => {
                    let src = File::from(fd);
                    let st = sys::stat_fd(src.as_fd())?;
                    atime = TimeSpec::At(st.st_atime, st.st_atime_nsec);
                    copy_file_content(&src, &dst, len)?;
                }
                None => copy_through_reader(reader, path, &dst, len)?,
            }
            if !upper.is_volatile() {
                dst.sync_all()?;
                Counters::bump(&counters.syncs);
            }
        }
        FileKind::Symlink => {
            let target = reader.readlink(path)?;
            fsutil::symlink_at(&target, work, tmp)?;
        }
        kind @ (FileKind::Fifo
        | FileKind::CharDevice
        | FileKind::BlockDevice
        | FileKind::Socket) => {
            real = upper
                .ownership()
                .make_node(work, tmp, kind, 0o600, entry.rdev)?;
        }
        FileKind::Whiteout => return Err(errno(libc::ENOENT)),
    }
    // chown drops security.capability and the setuid bits: owner first, then xattrs and mode.
    let want = OverrideStat {
        uid: entry.uid,
        gid: entry.gid,
        mode: entry.mode,
        kind: entry.kind,
        rdev: entry.rdev,
    };
    let ownership = upper.ownership();
    ownership.set(Target::At(work, tmp), real, &want)?;
    copy_xattrs(reader, path, work, tmp)?;
    if ownership.is_native() && entry.kind != FileKind::Symlink {
        // Again: copying security.capability may have needed the bits cleared.
        sys::chmod_at(work, tmp, entry.mode)?;
    }
    sys::set_times_at(
        work,
        tmp,
        atime,
        TimeSpec::At(entry.mtime, i64::from(entry.mtime_nsec)),
    )
}

/// Applies the owner, mode and time changes of a `setattr` to `tmp` in the
/// work directory, in the order `setattr` applies them to an upper object
/// (owner first: `chown` clears the setuid bits and `security.capability`).
pub(crate) fn apply_changes(
    ownership: Ownership,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    kind: FileKind,
    changes: &SetAttr,
) -> io::Result<()> {
    let target = Target::of(dir, name);
    let mode = changes.mode.filter(|_| kind != FileKind::Symlink);
    ownership.change(target, changes.uid, changes.gid, mode)?;
    if changes.atime.is_some() || changes.mtime.is_some() {
        sys::set_times_at(
            dir,
            name,
            changes.atime.unwrap_or(TimeSpec::Omit),
            changes.mtime.unwrap_or(TimeSpec::Omit),
        )?;
    }
    Ok(())
}

/// Copies `len` bytes of a layer file that has no real file behind it.
fn copy_through_reader(
    reader: &dyn LayerReader,
    path: &Path,
    dst: &File,
    len: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = reader.read_at(path, offset, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], offset)?;
        }
        offset += n as u64;
    }
    dst.set_len(len)
}

/// Copies the extended attributes of a layer entry to `tmp` in the work
/// directory; attributes the upper refuses (`user.*` on a symlink, an
/// unsupported namespace) are skipped with a warning.
fn copy_xattrs(
    reader: &dyn LayerReader,
    path: &Path,
    work: std::os::fd::BorrowedFd<'_>,
    tmp: &OsStr,
) -> io::Result<()> {
    let target = XattrTarget::At(work, tmp);
    let attrs: Vec<(OsString, Vec<u8>)> = reader.xattrs(path)?;
    for (name, value) in attrs {
        match target.set(&name, &value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                warn!(path = %path.display(), xattr = ?name, error = %e, "cannot copy xattr up, skipping it");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
