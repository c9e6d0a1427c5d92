//! Renames in the merged view, including `RENAME_NOREPLACE` and
//! `RENAME_EXCHANGE`. What moves must live in the upper with no lower layer
//! merging into it: a file is copied up, and a directory that lower layers
//! merge into has its whole subtree copied up, then moves as a plain upper
//! directory (made opaque where a lower layer shows something at its new
//! place). The old name gets a whiteout when a lower layer shows it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use drivers::fsutil;
use drivers::layer::FileKind;
use drivers::WhiteoutFormat;

use crate::merged::Merged;
use crate::nodes::Table;
use crate::sys::{self, errno};
use crate::upper::Upper;

/// How a rename treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameMode {
    /// Replace the target.
    Replace,
    /// Fail with `EEXIST` when the target exists.
    NoReplace,
    /// Swap source and target.
    Exchange,
}

impl Merged {
    /// Renames `parent/name` to `new_parent/new_name`.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> io::Result<()> {
        let upper = self.upper()?;
        if upper.is_reserved_name(new_name) {
            // AUFS refuses these names with EINVAL: they would read as whiteouts.
            return Err(errno(libc::EINVAL));
        }
        let mut t = self.lock();
        let _fresh = self.upper_dirs_change();
        let src = self
            .child(&mut t, parent, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let dst = self.child(&mut t, new_parent, new_name)?;
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        if dst == Some(src) {
            // Two names of one inode: rename does nothing.
            return Ok(());
        }
        let src_kind = t.get(src)?.kind;
        let dst_kind = match dst {
            Some(d) => Some(t.get(d)?.kind),
            None => None,
        };
        match (mode, dst, dst_kind) {
            (RenameMode::Exchange, None, _) => return Err(errno(libc::ENOENT)),
            (RenameMode::NoReplace, Some(_), _) => return Err(errno(libc::EEXIST)),
            (RenameMode::Replace, Some(d), Some(dk)) => {
                if src_kind == FileKind::Directory && dk != FileKind::Directory {
                    return Err(errno(libc::ENOTDIR));
                }
                if src_kind != FileKind::Directory && dk == FileKind::Directory {
                    return Err(errno(libc::EISDIR));
                }
                if dk == FileKind::Directory {
                    let layers = t.get(d)?.layers.clone();
                    if !self.layers.list(&layers, &t.path(d)?)?.is_empty() {
                        return Err(errno(libc::ENOTEMPTY));
                    }
                }
            }
            _ => {}
        }
        let src_path = t.child_path(parent, name)?;
        let dst_path = t.child_path(new_parent, new_name)?;
        let src_lower = self
            .layers
            .lower_has(&t.get(parent)?.layers.clone(), &src_path)?;
        let dst_lower = self
            .layers
            .lower_has(&t.get(new_parent)?.layers.clone(), &dst_path)?;

        // Everything that moves must live in the upper, with no lower layer merging into it.
        if let (RenameMode::Replace, Some(d)) = (mode, dst) {
            self.before_losing_a_name(&mut t, d)?;
        }
        let src_merged = self.prepare_move(&mut t, src)?;
        let dst_merged = match (mode, dst) {
            (RenameMode::Exchange, Some(d)) => self.prepare_move(&mut t, d)?,
            _ => false,
        };
        self.copy_up(&mut t, parent, None)?;
        self.copy_up(&mut t, new_parent, None)?;
        let old_dir = upper.dir(&t.path(parent)?)?;
        let new_dir = upper.dir(&t.path(new_parent)?)?;
        let (od, nd) = (old_dir.as_fd(), new_dir.as_fd());

        if mode == RenameMode::Exchange {
            sys::rename_at(od, name, nd, new_name, libc::RENAME_EXCHANGE)?;
            if src_kind == FileKind::Directory {
                self.settle_moved_dir(upper, nd, new_name, dst_lower, src_merged)?;
            }
            if dst_kind == Some(FileKind::Directory) {
                self.settle_moved_dir(upper, od, name, src_lower, dst_merged)?;
            }
            t.exchange(parent, name, new_parent, new_name)?;
        } else {
            let dst_entry = fsutil::stat_at(nd, new_name)?;
            let dst_whiteout = upper.has_whiteout(nd, new_name)?;
            // In overlay format the whiteout *is* the entry at the name; AUFS keeps it beside.
            let overlay = matches!(upper.format(), WhiteoutFormat::Overlay { .. });
            let dst_real = dst_entry.filter(|_| !(overlay && dst_whiteout));
            let mut src_whiteout_done = false;
            if src_kind == FileKind::Directory {
                match dst_real {
                    Some(m) if m.is_dir() => {
                        // Empty in the merged view: only whiteouts and markers inside.
                        let sub = fsutil::open_dir_at(nd, new_name)?;
                        fsutil::remove_dir_contents(sub.as_fd())?;
                        sys::rename_at(od, name, nd, new_name, 0)?;
                    }
                    Some(_) => return Err(errno(libc::ENOTDIR)),
                    None if dst_whiteout
                        && matches!(upper.format(), WhiteoutFormat::Overlay { .. }) =>
                    {
                        // A directory cannot replace the whiteout: swap them, which
                        // leaves the whiteout where the directory was.
                        sys::rename_at(od, name, nd, new_name, libc::RENAME_EXCHANGE)?;
                        if src_lower {
                            src_whiteout_done = true;
                        } else {
                            fsutil::unlink_at(od, name, false)?;
                        }
                    }
                    None => {
                        sys::rename_at(od, name, nd, new_name, libc::RENAME_NOREPLACE)?;
                        upper.remove_whiteout(nd, new_name)?;
                    }
                }
                self.settle_moved_dir(upper, nd, new_name, dst_lower || dst_whiteout, src_merged)?;
            } else {
                let mut flags = 0;
                if src_lower && matches!(upper.format(), WhiteoutFormat::Overlay { .. }) {
                    flags = libc::RENAME_WHITEOUT;
                }
                match sys::rename_at(od, name, nd, new_name, flags) {
                    Ok(()) => src_whiteout_done = flags != 0,
                    Err(e) if flags != 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                        sys::rename_at(od, name, nd, new_name, 0)?;
                    }
                    Err(e) => return Err(e),
                }
                if matches!(upper.format(), WhiteoutFormat::Aufs) {
                    upper.remove_whiteout(nd, new_name)?;
                }
            }
            if src_lower && !src_whiteout_done {
                upper.whiteout(od, name, None)?;
            }
            if dst.is_some() {
                t.unlink(new_parent, new_name, self.layers.upper_index());
            }
            t.rename(parent, name, new_parent, new_name)?;
        }
        Ok(())
    }

    /// Makes `ino` movable: copies it up, and for a directory that lower layers
    /// merge into, its whole subtree. Returns whether it was such a directory.
    fn prepare_move(&self, t: &mut Table, ino: u64) -> io::Result<bool> {
        let node = t.get(ino)?;
        if node.kind != FileKind::Directory {
            self.copy_up(t, ino, None)?;
            return Ok(false);
        }
        let merged = node.layers.iter().any(|&l| !self.layers.is_upper(l));
        if !merged {
            return Ok(false);
        }
        self.copy_up_tree(t, ino)?;
        let mut dirs = t.descendants(ino);
        dirs.push(ino);
        for d in dirs {
            let node = t.get_mut(d)?;
            if node.kind == FileKind::Directory {
                node.layers.retain(|&l| l == 0);
            }
        }
        Ok(true)
    }

    /// Copies directory `ino` and everything below it up.
    fn copy_up_tree(&self, t: &mut Table, ino: u64) -> io::Result<()> {
        self.copy_up(t, ino, None)?;
        let layers = t.get(ino)?.layers.clone();
        for (name, kind) in self.layers.list(&layers, &t.path(ino)?)? {
            let child = self
                .child(t, ino, &name)?
                .ok_or_else(|| errno(libc::ENOENT))?;
            if kind == FileKind::Directory {
                self.copy_up_tree(t, child)?;
            } else {
                self.copy_up(t, child, None)?;
            }
        }
        Ok(())
    }

    /// After a directory moved to `dir/name`: drops whiteouts inside it that
    /// referred to its old place (`merged`: lower layers merged into it there)
    /// and makes it opaque when lower layers show something at its new place.
    fn settle_moved_dir(
        &self,
        upper: &Upper,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        opaque: bool,
        merged: bool,
    ) -> io::Result<()> {
        let fd = fsutil::open_dir_at(dir, name)?;
        if merged {
            upper.strip_markers(fd.as_fd())?;
            upper.clear_opaque(fd.as_fd())?;
        }
        if opaque {
            upper.set_opaque(fd.as_fd())?;
        }
        Ok(())
    }
}
