//! How an overlay-format directory records a deletion.
//!
//! The classic form is a character device with device number 0/0, which Linux
//! lets any user create since 5.8. Where the kernel refuses that to an
//! unprivileged user, an unprivileged store (`userxattr` form) falls back to
//! overlayfs's own xattr form (Linux 6.7+ reads it): an empty regular file
//! carrying `user.overlay.whiteout`, in a directory marked
//! `user.overlay.opaque=x` ("holds xattr whiteouts", not opaque). Both forms are
//! recognised wherever an overlay-format directory is read.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use crate::fsutil::{self, Meta};
use crate::layer::FileKind;
use crate::xattr::{self, XattrTarget};

/// Setting this to `1` makes unprivileged stores write xattr whiteouts even where
/// the kernel would let them make 0/0 devices (for tests of the fallback).
pub const FORCE_XATTR_WHITEOUTS_ENV: &str = "LAMINA_FORCE_XATTR_WHITEOUTS";

/// The xattr marking an empty file as a whiteout.
pub fn whiteout_xattr(userxattr: bool) -> &'static OsStr {
    OsStr::new(if userxattr {
        "user.overlay.whiteout"
    } else {
        "trusted.overlay.whiteout"
    })
}

/// The `overlay.opaque` value of a directory holding xattr whiteouts.
const HOLDS_XATTR_WHITEOUTS: &[u8] = b"x";

fn forced() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var(FORCE_XATTR_WHITEOUTS_ENV).as_deref() == Ok("1"))
}

/// Whether `name` in `dir`, whose `stat` is `meta`, is an overlay whiteout in
/// either form.
pub fn is_whiteout_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    meta: &Meta,
    userxattr: bool,
) -> io::Result<bool> {
    if meta.is_overlay_whiteout() {
        return Ok(true);
    }
    if meta.kind != FileKind::Regular || meta.size != 0 {
        return Ok(false);
    }
    match XattrTarget::At(dir, name).get(whiteout_xattr(userxattr)) {
        Ok(value) => Ok(value.is_some()),
        Err(e) if xattr::unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates a whiteout `name` in `dir`: a 0/0 character device, or, for a
/// `userxattr` directory whose kernel refuses that device to this user, an
/// empty file with the whiteout xattr. Returns the type created; for the xattr
/// form the caller marks the directory the whiteout ends up in with
/// [`mark_holds_xattr_whiteouts`].
pub fn make_whiteout_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    userxattr: bool,
) -> io::Result<FileKind> {
    if !(userxattr && forced()) {
        match fsutil::mknod_at(dir, name, FileKind::CharDevice, 0, 0) {
            Ok(()) => return Ok(FileKind::CharDevice),
            Err(e) if userxattr && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    fsutil::create_empty_at(dir, name, 0o600)?;
    if let Err(e) = XattrTarget::At(dir, name).set(whiteout_xattr(userxattr), b"y") {
        let _ = fsutil::unlink_at(dir, name, false);
        return Err(e);
    }
    Ok(FileKind::Regular)
}

/// Marks directory `dir` (an open directory) as holding xattr whiteouts, unless
/// it is opaque already (which hides everything below it anyway).
pub fn mark_holds_xattr_whiteouts(dir: BorrowedFd<'_>, userxattr: bool) -> io::Result<()> {
    let target = XattrTarget::Fd(dir);
    let opaque = xattr::overlay_opaque_xattr(userxattr);
    if target.get(opaque)?.is_some() {
        return Ok(());
    }
    target.set(opaque, HOLDS_XATTR_WHITEOUTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn both_forms_read_as_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let fd = fsutil::open_dir(dir.path()).unwrap();
        let d = fd.as_fd();
        assert_eq!(
            make_whiteout_at(d, OsStr::new("dev"), true).unwrap(),
            FileKind::CharDevice
        );
        // The xattr form, as an unprivileged store writes it where mknod is refused.
        fsutil::open_at(d, OsStr::new("xw"), libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap();
        XattrTarget::At(d, OsStr::new("xw"))
            .set(whiteout_xattr(true), b"y")
            .unwrap();
        mark_holds_xattr_whiteouts(d, true).unwrap();
        fsutil::open_at(
            d,
            OsStr::new("empty"),
            libc::O_CREAT | libc::O_WRONLY,
            0o600,
        )
        .unwrap();
        for (name, whiteout) in [("dev", true), ("xw", true), ("empty", false)] {
            let meta = fsutil::stat_at(d, OsStr::new(name)).unwrap().unwrap();
            assert_eq!(
                is_whiteout_at(d, OsStr::new(name), &meta, true).unwrap(),
                whiteout,
                "{name}"
            );
        }
        let marker = XattrTarget::Fd(d)
            .get(xattr::overlay_opaque_xattr(true))
            .unwrap();
        assert_eq!(
            marker.as_deref(),
            Some(&b"x"[..]),
            "holds xattr whiteouts, not opaque"
        );
    }
}
