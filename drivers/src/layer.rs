//! The layer trait: how the FUSE frontend reads one layer of any driver.
//!
//! A [`LayerReader`] presents the layer's *own* content (its diff against its
//! parent), with the driver's native whiteout format translated to
//! [`FileKind::Whiteout`] entries and [`Entry::opaque`] directories. Paths are
//! relative to the layer root, without a leading `/` (the root itself is `""`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The type of a layer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A unix socket.
    Socket,
    /// A whiteout: the name is deleted from the layers below.
    Whiteout,
}

/// Attributes of one layer entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's type.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (symlink: length of the target).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Hard-link count within the layer.
    pub nlink: u32,
    /// An inode number unique within the layer (same for hard links).
    pub ino: u64,
    /// For directories: hides everything below it in lower layers.
    pub opaque: bool,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The file name (one component).
    pub name: OsString,
    /// Its type ([`FileKind::Whiteout`] for deletions).
    pub kind: FileKind,
}

/// Read access to one layer's own content.
pub trait LayerReader: Send + Sync {
    /// Attributes of `path`, `Ok(None)` when the layer has nothing there.
    fn lookup(&self, path: &Path) -> io::Result<Option<Entry>>;

    /// The names directly inside directory `path`, whiteouts included, in a stable order.
    /// Driver housekeeping names and whiteout markers are never listed as ordinary names.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;

    /// Reads file content at `offset`; returns the bytes read (0 at end of file).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The target of symlink `path`.
    fn readlink(&self, path: &Path) -> io::Result<OsString>;

    /// Extended attributes of `path`, driver-private ones (overlay's, aufs's) excluded.
    fn xattrs(&self, path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>>;

    /// A real, read-only file descriptor of regular file `path` where the layer keeps
    /// it as a file (directory-backed layers), `Ok(None)` where it does not (squashfs
    /// images read in-process). Used for FUSE passthrough and for copy_up by reflink.
    fn open_file(&self, path: &Path) -> io::Result<Option<OwnedFd>>;

    /// A directory on disk holding this layer's content in native form, if there is one.
    fn directory(&self) -> Option<&Path>;
}

/// Whether `name` is an OCI/AUFS whiteout marker (`.wh.` prefix).
pub fn is_oci_whiteout(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".wh.")
}

/// The OCI marker of an opaque directory.
pub const OCI_OPAQUE: &str = ".wh..wh..opq";
/// The OCI whiteout prefix.
pub const OCI_WHITEOUT_PREFIX: &str = ".wh.";
