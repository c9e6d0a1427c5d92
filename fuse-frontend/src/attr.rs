//! Attributes of merged-view inodes as FUSE reports them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drivers::layer::{Entry, FileKind};
use fuser::{FileAttr, FileType, INodeNo};

use crate::sys::encode_dev;

/// The block size reported for every inode.
const BLOCK_SIZE: u32 = 4096;

/// The FUSE file type of a layer entry kind.
pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice | FileKind::Whiteout => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

/// A point in time from seconds and nanoseconds since the epoch.
pub(crate) fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = nsec.clamp(0, 999_999_999) as u32;
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(u64::from(nsec))
    }
}

/// Attributes of inode `ino` from a `stat` of the file holding it.
pub(crate) fn from_stat(ino: u64, st: &libc::stat, kind: FileKind) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: time(st.st_mtime, st.st_mtime_nsec),
        kind: file_type(kind),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// Attributes of inode `ino` from a read-only layer's entry (which knows no
/// access or change time: both are reported as the modification time).
pub(crate) fn from_entry(ino: u64, entry: &Entry) -> FileAttr {
    let mtime = time(entry.mtime, i64::from(entry.mtime_nsec));
    FileAttr {
        ino: INodeNo(ino),
        size: entry.size,
        blocks: entry.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(entry.kind),
        perm: (entry.mode & 0o7777) as u16,
        nlink: entry.nlink.max(1),
        uid: entry.uid,
        gid: entry.gid,
        rdev: encode_dev(entry.rdev),
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}
