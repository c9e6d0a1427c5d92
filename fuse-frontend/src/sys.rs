//! Thin wrappers of the system calls the frontend needs beyond `drivers::fsutil`.

use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use drivers::fsutil::c_path;

/// An error carrying `errno`.
pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Converts a `-1`-on-error return value.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, the directory itself for an empty name.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let c = c_path(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor, string and output buffer.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled the buffer.
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of an open descriptor.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor and output buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled the buffer.
    Ok(unsafe { st.assume_init() })
}

/// `renameat2` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, `RENAME_WHITEOUT` or 0).
pub(crate) fn rename_at(
    old_dir: BorrowedFd<'_>,
    old_name: &OsStr,
    new_dir: BorrowedFd<'_>,
    new_name: &OsStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    let o = c_path(old_name)?;
    let n = c_path(new_name)?;
    // SAFETY: valid descriptors and strings.
    cvt(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// A time to set with [`set_times_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeSpec {
    /// Leave the time as it is.
    Omit,
    /// The current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, i64),
}

impl TimeSpec {
    fn to_timespec(self) -> libc::timespec {
        match self {
            TimeSpec::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            TimeSpec::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            TimeSpec::At(sec, nsec) => libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        }
    }
}

/// `utimensat(dir, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`; an empty name is `dir` itself.
pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    let c = c_path(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid descriptor, string and two timespecs.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

/// `fchmodat` of a non-symlink `name` inside `dir` (an empty name is `dir` itself),
/// through `/proc/self/fd` so that the final component is never followed.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let pinned;
    let fd = if name.is_empty() {
        dir.as_raw_fd()
    } else {
        pinned = drivers::fsutil::open_at(dir, name, libc::O_PATH, 0)?;
        pinned.as_raw_fd()
    };
    let c = c_path(OsStr::new(&format!("/proc/self/fd/{fd}")))?;
    // SAFETY: valid string; the descriptor keeps the inode pinned during the call.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) }).map(drop)
}

/// `fstatvfs` of an open descriptor.
pub(crate) fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid descriptor and output buffer.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

/// Sets an extended attribute of `name` inside `dir` without following it, with
/// `XATTR_CREATE`/`XATTR_REPLACE` `flags`.
pub(crate) fn set_xattr_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let attr = c_path(attr)?;
    // SAFETY: valid strings and a value buffer of `value.len()` bytes.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            attr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// Removes an extended attribute of `name` inside `dir` without following it;
/// `ENODATA` when it is not set.
pub(crate) fn remove_xattr_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> io::Result<()> {
    let path = proc_path(dir, name)?;
    let attr = c_path(attr)?;
    // SAFETY: valid strings.
    cvt(unsafe { libc::lremovexattr(path.as_ptr(), attr.as_ptr()) }).map(drop)
}

/// `/proc/self/fd/<dir>/<name>` (or the directory itself for an empty name): the
/// directory is pinned by its descriptor and `name` is resolved inside it.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    c_path(OsStr::from_bytes(&p))
}

/// Encodes a 64-bit `dev_t` the way FUSE attributes carry it (32 bits, `new_encode_dev`).
pub(crate) fn encode_dev(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Decodes the 32-bit device number of a FUSE `mknod` request.
pub(crate) fn decode_dev(dev: u32) -> u64 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

/// Raises the soft limit of open files to the hard limit (the frontend keeps
/// descriptors of open files and registered passthrough backings).
pub(crate) fn raise_nofile_limit() {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: valid output buffer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: getrlimit succeeded.
    let mut lim = unsafe { lim.assume_init() };
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: valid input buffer.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// Whether the calling process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_through_the_fuse_encoding() {
        for (major, minor) in [(0, 0), (1, 3), (8, 17), (259, 5), (4095, 1 << 19)] {
            let dev = libc::makedev(major, minor);
            let back = decode_dev(encode_dev(dev));
            assert_eq!((libc::major(back), libc::minor(back)), (major, minor));
        }
    }
}
