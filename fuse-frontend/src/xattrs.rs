//! Extended attributes of the merged view. The whiteout formats' private
//! attributes (`trusted.overlay.*`, `user.overlay.*`) are never listed, read
//! or set; changing an attribute copies the object up first.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;

use drivers::ownership;
use drivers::xattr::{self, XattrTarget};

use crate::merged::Merged;
use crate::sys::{self, errno};

/// Extended attributes private to the whiteout formats: never shown, never settable.
fn is_private_xattr(name: &OsStr) -> bool {
    xattr::is_overlay_xattr(name) || ownership::is_override_xattr(name)
}

impl Merged {
    /// The value of xattr `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> io::Result<Vec<u8>> {
        if is_private_xattr(name) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let t = self.lock();
        if self.in_upper(&t, ino)? {
            let (dir, entry) = self.upper_location(&t, ino)?;
            XattrTarget::of(dir.as_fd(), &entry)
                .get(name)?
                .ok_or_else(|| errno(libc::ENODATA))
        } else {
            let node = t.get(ino)?;
            let path = t.path(ino)?;
            self.layers
                .reader(node.layers[0])
                .xattrs(&path)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| errno(libc::ENODATA))
        }
    }

    /// The xattr names of `ino`, private ones left out.
    pub fn listxattr(&self, ino: u64) -> io::Result<Vec<OsString>> {
        let t = self.lock();
        let all = if self.in_upper(&t, ino)? {
            let (dir, entry) = self.upper_location(&t, ino)?;
            XattrTarget::of(dir.as_fd(), &entry).list()?
        } else {
            let node = t.get(ino)?;
            self.layers.reader(node.layers[0]).xattrs(&t.path(ino)?)?
        };
        Ok(all
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !is_private_xattr(n))
            .collect())
    }

    /// Sets xattr `name` of `ino` (`flags`: `XATTR_CREATE`/`XATTR_REPLACE`).
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        if is_private_xattr(name) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        self.upper()?;
        let mut t = self.lock();
        self.copy_up(&mut t, ino, None)?;
        let (dir, entry) = self.upper_location(&t, ino)?;
        sys::set_xattr_at(dir.as_fd(), &entry, name, value, flags)
    }

    /// Removes xattr `name` of `ino`.
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> io::Result<()> {
        if is_private_xattr(name) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        self.upper()?;
        let mut t = self.lock();
        if !self.in_upper(&t, ino)? {
            let node = t.get(ino)?;
            let has = self
                .layers
                .reader(node.layers[0])
                .xattrs(&t.path(ino)?)?
                .iter()
                .any(|(n, _)| n == name);
            if !has {
                return Err(errno(libc::ENODATA));
            }
        }
        self.copy_up(&mut t, ino, None)?;
        let (dir, entry) = self.upper_location(&t, ino)?;
        sys::remove_xattr_at(dir.as_fd(), &entry, name)
    }
}
