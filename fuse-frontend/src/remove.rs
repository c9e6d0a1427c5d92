//! Removing names from the merged view: the upper loses what it has, and a
//! whiteout records the deletion when a lower layer shows the name.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;

use drivers::fsutil;
use drivers::layer::FileKind;

use crate::merged::Merged;
use crate::nodes::Table;
use crate::sys::errno;
use crate::upper::Upper;

impl Merged {
    /// Removes the non-directory `name` from `parent`.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let upper = self.upper()?;
        let mut t = self.lock();
        let ino = self
            .child(&mut t, parent, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let kind = t.get(ino)?.kind;
        if kind == FileKind::Directory {
            return Err(errno(libc::EISDIR));
        }
        self.before_losing_a_name(&mut t, ino)?;
        self.remove_entry(&mut t, upper, parent, name, ino, kind)
    }

    /// A lower file with other hard links is copied up before one of its names
    /// goes: the copy-up links the other names into the upper, where they then
    /// show the right link count.
    pub(crate) fn before_losing_a_name(&self, t: &mut Table, ino: u64) -> io::Result<()> {
        let node = t.get(ino)?;
        if node.kind != FileKind::Directory && node.entry.nlink > 1 {
            self.copy_up(t, ino, None)?;
        }
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let upper = self.upper()?;
        let mut t = self.lock();
        let _fresh = self.upper_dirs_change();
        let ino = self
            .child(&mut t, parent, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let node = t.get(ino)?;
        if node.kind != FileKind::Directory {
            return Err(errno(libc::ENOTDIR));
        }
        let layers = node.layers.clone();
        if !self.layers.list(&layers, &t.path(ino)?)?.is_empty() {
            return Err(errno(libc::ENOTEMPTY));
        }
        self.remove_entry(&mut t, upper, parent, name, ino, FileKind::Directory)
    }

    /// Removes `name` (node `ino`) from `parent`: deletes it from the upper and
    /// records a whiteout when a lower layer shows the name.
    fn remove_entry(
        &self,
        t: &mut Table,
        upper: &Upper,
        parent: u64,
        name: &OsStr,
        ino: u64,
        kind: FileKind,
    ) -> io::Result<()> {
        let path = t.child_path(parent, name)?;
        let parent_layers = t.get(parent)?.layers.clone();
        let lower = self.layers.lower_has(&parent_layers, &path)?;
        let in_upper = self.in_upper(t, ino)?;
        self.copy_up(t, parent, None)?;
        let dir = upper.dir(&t.path(parent)?)?;
        if lower {
            upper.whiteout(dir.as_fd(), name, in_upper.then_some(kind))?;
        } else if kind == FileKind::Directory {
            let sub = fsutil::open_dir_at(dir.as_fd(), name)?;
            fsutil::remove_dir_contents(sub.as_fd())?;
            fsutil::unlink_at(dir.as_fd(), name, true)?;
        } else {
            fsutil::unlink_at(dir.as_fd(), name, false)?;
        }
        t.unlink(parent, name, self.layers.upper_index());
        Ok(())
    }
}
