//! Extended attributes through file descriptors.
//!
//! Regular files and directories are addressed by an open descriptor
//! ([`XattrTarget::Fd`]). Symlinks, devices, fifos and sockets cannot be opened
//! for that without side effects, so they are addressed as
//! `/proc/self/fd/<parent>/<name>` with the `l*xattr` calls
//! ([`XattrTarget::At`]): the parent is pinned by its descriptor and the final
//! component is never followed.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::fsutil::{c_path, cvt, cvt_size};

/// Prefix of overlayfs's private xattrs when mounted as root.
pub const OVERLAY_TRUSTED_PREFIX: &[u8] = b"trusted.overlay.";
/// Prefix of overlayfs's private xattrs with the `userxattr` option.
pub const OVERLAY_USER_PREFIX: &[u8] = b"user.overlay.";

/// Whether `name` is one of overlayfs's private xattrs (`trusted.overlay.*` or `user.overlay.*`).
pub fn is_overlay_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(OVERLAY_TRUSTED_PREFIX) || b.starts_with(OVERLAY_USER_PREFIX)
}

/// The xattr marking an overlay directory opaque.
pub fn overlay_opaque_xattr(userxattr: bool) -> &'static OsStr {
    OsStr::new(if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    })
}

/// What an xattr operation acts on.
#[derive(Debug, Clone, Copy)]
pub enum XattrTarget<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// Entry `name` inside directory `dir`, not followed (any file type).
    At(BorrowedFd<'a>, &'a OsStr),
}

impl<'a> XattrTarget<'a> {
    /// `name` inside `dir`, or `dir` itself (an open directory) when `name` is empty.
    pub fn of(dir: BorrowedFd<'a>, name: &'a OsStr) -> XattrTarget<'a> {
        if name.is_empty() {
            XattrTarget::Fd(dir)
        } else {
            XattrTarget::At(dir, name)
        }
    }

    fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<CString> {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        c_path(OsStr::from_bytes(&p))
    }

    /// All xattr names and values; empty when the filesystem does not support xattrs.
    pub fn list(&self) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let names = match self.list_names() {
            Ok(n) => n,
            Err(e) if unsupported(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(value) = self.get(&name)? {
                out.push((name, value));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(out)
    }

    fn list_names(&self) -> io::Result<Vec<OsString>> {
        let path = match self {
            XattrTarget::Fd(_) => None,
            XattrTarget::At(dir, name) => Some(Self::proc_path(*dir, name)?),
        };
        let call = |buf: &mut [u8]| -> io::Result<usize> {
            let (ptr, len) = if buf.is_empty() {
                (std::ptr::null_mut(), 0)
            } else {
                (buf.as_mut_ptr().cast::<libc::c_char>(), buf.len())
            };
            // SAFETY: pointers are valid for `len` bytes (or null with len 0).
            cvt_size(unsafe {
                match (self, &path) {
                    (XattrTarget::Fd(fd), _) => libc::flistxattr(fd.as_raw_fd(), ptr, len),
                    (XattrTarget::At(..), Some(p)) => libc::llistxattr(p.as_ptr(), ptr, len),
                    (XattrTarget::At(..), None) => unreachable!("path computed above"),
                }
            })
        };
        let buf = read_sized(call)?;
        Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    /// The value of xattr `name`, `Ok(None)` when it is not set.
    pub fn get(&self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let cname = c_path(name)?;
        let path = match self {
            XattrTarget::Fd(_) => None,
            XattrTarget::At(dir, n) => Some(Self::proc_path(*dir, n)?),
        };
        let call = |buf: &mut [u8]| -> io::Result<usize> {
            let (ptr, len) = if buf.is_empty() {
                (std::ptr::null_mut(), 0)
            } else {
                (buf.as_mut_ptr().cast::<libc::c_void>(), buf.len())
            };
            // SAFETY: pointers are valid for `len` bytes (or null with len 0).
            cvt_size(unsafe {
                match (self, &path) {
                    (XattrTarget::Fd(fd), _) => {
                        libc::fgetxattr(fd.as_raw_fd(), cname.as_ptr(), ptr, len)
                    }
                    (XattrTarget::At(..), Some(p)) => {
                        libc::lgetxattr(p.as_ptr(), cname.as_ptr(), ptr, len)
                    }
                    (XattrTarget::At(..), None) => unreachable!("path computed above"),
                }
            })
        };
        match read_sized(call) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) || unsupported(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets xattr `name` to `value`.
    pub fn set(&self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let cname = c_path(name)?;
        let ptr = value.as_ptr().cast::<libc::c_void>();
        // SAFETY: valid strings and a value buffer of `value.len()` bytes.
        cvt(unsafe {
            match self {
                XattrTarget::Fd(fd) => {
                    libc::fsetxattr(fd.as_raw_fd(), cname.as_ptr(), ptr, value.len(), 0)
                }
                XattrTarget::At(dir, n) => {
                    let p = Self::proc_path(*dir, n)?;
                    libc::lsetxattr(p.as_ptr(), cname.as_ptr(), ptr, value.len(), 0)
                }
            }
        })
        .map(drop)
    }

    /// Removes xattr `name`; a missing attribute is not an error.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let cname = c_path(name)?;
        // SAFETY: valid strings.
        let ret = cvt(unsafe {
            match self {
                XattrTarget::Fd(fd) => libc::fremovexattr(fd.as_raw_fd(), cname.as_ptr()),
                XattrTarget::At(dir, n) => {
                    let p = Self::proc_path(*dir, n)?;
                    libc::lremovexattr(p.as_ptr(), cname.as_ptr())
                }
            }
        });
        match ret {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether an xattr error means "this filesystem or file type has no xattrs".
pub fn unsupported(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOTSUP)
}

/// Calls a size-probing xattr function until the buffer is large enough.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    loop {
        let size = call(&mut [])?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // The attribute grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
