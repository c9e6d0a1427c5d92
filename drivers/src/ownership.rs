//! How a store records owners, permission bits and device nodes.
//!
//! A store run by root keeps them as the kernel does ([`Ownership::Native`]):
//! `chown`, `chmod`, `mknod`. An unprivileged user can do none of that for other
//! uids, so a store created by one ([`Ownership::Xattr`]) keeps every object owned
//! by that user and records what the image says in the
//! `user.containers.override_stat` xattr (the format containers/storage and
//! fuse-overlayfs use: `UID:GID:0MODE:TYPE`, TYPE one of `file`, `dir`,
//! `symlink`, `pipe`, `socket`, `char-MAJ-MIN`, `block-MAJ-MIN`):
//!
//! - an object without the xattr belongs to `0:0` (the store's user stands for
//!   root) and has its real permission bits;
//! - the real permission bits always let the store's user read and write
//!   (`u+rw`, and `u+x` for directories), so the store can copy and remove what
//!   it holds; the image's bits are in the xattr when they differ;
//! - a device node is an empty regular file whose xattr names the device;
//! - symlinks, fifos and sockets cannot carry `user.*` xattrs: they always
//!   read as `0:0` (fifos and sockets with their real permission bits, no
//!   setuid/setgid/sticky).
//!
//! [`Ownership::present`] turns what is on disk back into what the image says;
//! the FUSE frontend serves that, so a container sees the image's owners.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::fsutil::{self, Meta};
use crate::layer::FileKind;
use crate::xattr::XattrTarget;

/// The xattr holding an object's owner, mode and type in an unprivileged store.
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// The file in a store root that marks it as created by an unprivileged user.
pub const ROOTLESS_MARKER: &str = "rootless";

/// How a store records owners, permission bits and device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Real owners, modes and device nodes (a store run by root).
    #[default]
    Native,
    /// Objects owned by the store's user, the image's metadata in
    /// `user.containers.override_stat` (a store run by an unprivileged user).
    Xattr,
}

/// An object's owner, permission bits and type as the image gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideStat {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// The object's type.
    pub kind: FileKind,
    /// Device number (device nodes only).
    pub rdev: u64,
}

impl OverrideStat {
    /// Parses `UID:GID:MODE[:TYPE]` (MODE in octal). `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<OverrideStat> {
        let text = std::str::from_utf8(value).ok()?.trim_end_matches('\0');
        let mut fields = text.split(':');
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        let mode = u32::from_str_radix(fields.next()?, 8).ok()? & 0o7777;
        let (kind, rdev) = match fields.next() {
            None | Some("file") => (FileKind::Regular, 0),
            Some("dir") => (FileKind::Directory, 0),
            Some("symlink") => (FileKind::Symlink, 0),
            Some("pipe") => (FileKind::Fifo, 0),
            Some("socket") => (FileKind::Socket, 0),
            Some(device) => {
                let (kind, numbers) = if let Some(n) = device.strip_prefix("char-") {
                    (FileKind::CharDevice, n)
                } else {
                    (FileKind::BlockDevice, device.strip_prefix("block-")?)
                };
                let (major, minor) = numbers.split_once('-')?;
                (
                    kind,
                    libc::makedev(major.parse().ok()?, minor.parse().ok()?),
                )
            }
        };
        if fields.next().is_some() {
            return None;
        }
        Some(OverrideStat {
            uid,
            gid,
            mode,
            kind,
            rdev,
        })
    }

    /// The xattr value.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self.kind {
            FileKind::Regular | FileKind::Whiteout => "file".to_string(),
            FileKind::Directory => "dir".to_string(),
            FileKind::Symlink => "symlink".to_string(),
            FileKind::Fifo => "pipe".to_string(),
            FileKind::Socket => "socket".to_string(),
            FileKind::CharDevice => {
                format!("char-{}-{}", libc::major(self.rdev), libc::minor(self.rdev))
            }
            FileKind::BlockDevice => {
                format!(
                    "block-{}-{}",
                    libc::major(self.rdev),
                    libc::minor(self.rdev)
                )
            }
        };
        format!(
            "{}:{}:{:04o}:{kind}",
            self.uid,
            self.gid,
            self.mode & 0o7777
        )
        .into_bytes()
    }
}

/// The real permission bits an unprivileged store gives an object that should have `mode`.
fn stored_mode(kind: FileKind, mode: u32) -> u32 {
    match kind {
        FileKind::Directory => (mode & 0o777) | 0o700,
        _ => (mode & 0o777) | 0o600,
    }
}

fn override_name() -> &'static OsStr {
    OsStr::new(OVERRIDE_STAT_XATTR)
}

/// Whether `name` is the override xattr (never shown to, nor set by, a container).
pub fn is_override_xattr(name: &OsStr) -> bool {
    name == override_name()
}

impl Ownership {
    /// The ownership of the store at `root`: [`Ownership::Xattr`] when the calling
    /// user is not root or the store was created by an unprivileged user (which
    /// this marks in the store the first time).
    pub fn for_store(root: &Path) -> io::Result<Ownership> {
        let marker = root.join(ROOTLESS_MARKER);
        if marker.exists() {
            return Ok(Ownership::Xattr);
        }
        if nix::unistd::geteuid().is_root() {
            return Ok(Ownership::Native);
        }
        fs::create_dir_all(root)?;
        fs::write(
            &marker,
            "this store belongs to an unprivileged user: owners, modes and device nodes \
             are kept in the user.containers.override_stat xattr\n",
        )?;
        Ok(Ownership::Xattr)
    }

    /// Whether objects carry their real owners and types.
    pub fn is_native(self) -> bool {
        self == Ownership::Native
    }

    /// Gives the object `target` (already created, of real type `real`) the owner
    /// `uid:gid`, permission bits `mode` and, for device stand-ins, the type
    /// `kind` with device `rdev`.
    pub fn set(self, target: Target<'_>, real: FileKind, want: &OverrideStat) -> io::Result<()> {
        match self {
            Ownership::Native => {
                // chown first: it clears setuid/setgid and security.capability.
                target.chown(want.uid, want.gid)?;
                if real != FileKind::Symlink {
                    target.chmod(want.mode)?;
                }
                Ok(())
            }
            Ownership::Xattr => {
                match real {
                    FileKind::Regular | FileKind::Directory => {}
                    // user.* xattrs are allowed on regular files and directories
                    // only: the others read as root's, with their real bits.
                    FileKind::Symlink => return Ok(()),
                    _ => return target.chmod(want.mode & 0o777),
                }
                let stored = stored_mode(want.kind, want.mode);
                target.chmod(stored)?;
                let plain =
                    want.uid == 0 && want.gid == 0 && stored == want.mode && real == want.kind;
                let xattr = target.xattr();
                if plain {
                    match xattr.remove(override_name()) {
                        Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(e),
                        _ => Ok(()),
                    }
                } else {
                    xattr.set(override_name(), &want.encode())
                }
            }
        }
    }

    /// Changes only the owner and/or permission bits of `target` (`None` keeps one),
    /// as `chown`/`chmod` on a presented object do.
    pub fn change(
        self,
        target: Target<'_>,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> io::Result<()> {
        match self {
            Ownership::Native => {
                if uid.is_some() || gid.is_some() {
                    target.chown(uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
                }
                if let Some(mode) = mode {
                    target.chmod(mode)?;
                }
                Ok(())
            }
            Ownership::Xattr => {
                let mut meta = target.stat()?;
                if !matches!(meta.kind, FileKind::Regular | FileKind::Directory) {
                    if meta.kind != FileKind::Symlink
                        && uid.unwrap_or(0) == 0
                        && gid.unwrap_or(0) == 0
                    {
                        if let Some(mode) = mode {
                            target.chmod(mode & 0o777)?;
                        }
                        return Ok(());
                    }
                    return if mode.is_some()
                        || uid.is_some_and(|u| u != 0)
                        || gid.is_some_and(|g| g != 0)
                    {
                        Err(io::Error::from_raw_os_error(libc::EPERM))
                    } else {
                        Ok(())
                    };
                }
                let real = meta.kind;
                self.present(target, &mut meta)?;
                let mut want = OverrideStat {
                    uid: uid.unwrap_or(meta.uid),
                    gid: gid.unwrap_or(meta.gid),
                    mode: mode.unwrap_or(meta.mode),
                    kind: meta.kind,
                    rdev: meta.rdev,
                };
                if mode.is_none()
                    && (uid.is_some() || gid.is_some())
                    && want.kind != FileKind::Directory
                {
                    // Like chown(2): a change of owner drops setuid/setgid.
                    want.mode &= !(libc::S_ISUID | libc::S_ISGID);
                }
                self.set(target, real, &want)
            }
        }
    }

    /// Creates a fifo, socket or device node `name` in `dir` with permission bits
    /// `mode` (owner and final bits are given by [`Ownership::set`] afterwards).
    /// Returns the real type created: an unprivileged store makes device nodes
    /// as empty regular files.
    pub fn make_node(
        self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: FileKind,
        mode: u32,
        rdev: u64,
    ) -> io::Result<FileKind> {
        let device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        if self == Ownership::Xattr && device {
            fsutil::create_empty_at(dir, name, 0o600)?;
            return Ok(FileKind::Regular);
        }
        fsutil::mknod_at(dir, name, kind, mode, rdev)?;
        Ok(kind)
    }

    /// Turns `meta` (a `stat` of `target`) into what the image says: its owner,
    /// permission bits and type from the override xattr.
    pub fn present(self, target: Target<'_>, meta: &mut Meta) -> io::Result<()> {
        if self == Ownership::Native {
            return Ok(());
        }
        let recorded = if !matches!(meta.kind, FileKind::Regular | FileKind::Directory) {
            None
        } else {
            match target.xattr().get(override_name()) {
                Ok(value) => value.and_then(|v| OverrideStat::parse(&v)),
                Err(e) if crate::xattr::unsupported(&e) => None,
                Err(e) => return Err(e),
            }
        };
        apply_override(meta, recorded.as_ref());
        Ok(())
    }
}

/// Sets `meta` to the recorded override (or `0:0` with the real bits when there is none).
pub fn apply_override(meta: &mut Meta, recorded: Option<&OverrideStat>) {
    match recorded {
        None => {
            meta.uid = 0;
            meta.gid = 0;
        }
        Some(o) => {
            meta.uid = o.uid;
            meta.gid = o.gid;
            meta.mode = o.mode;
            if meta.kind == FileKind::Regular
                && matches!(o.kind, FileKind::CharDevice | FileKind::BlockDevice)
            {
                meta.kind = o.kind;
                meta.rdev = o.rdev;
                meta.size = 0;
            }
        }
    }
}

/// An object whose metadata is changed: an open descriptor or a name in a directory.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// An open descriptor (not `O_PATH`).
    Fd(BorrowedFd<'a>),
    /// `name` inside directory `dir`, not followed if it is a symlink.
    At(BorrowedFd<'a>, &'a OsStr),
}

impl<'a> Target<'a> {
    /// `name` inside `dir`, or `dir` itself when `name` is empty (a root).
    pub fn of(dir: BorrowedFd<'a>, name: &'a OsStr) -> Target<'a> {
        if name.is_empty() {
            Target::Fd(dir)
        } else {
            Target::At(dir, name)
        }
    }

    fn xattr(self) -> XattrTarget<'a> {
        match self {
            Target::Fd(fd) => XattrTarget::Fd(fd),
            Target::At(dir, name) => XattrTarget::At(dir, name),
        }
    }

    fn chown(self, uid: u32, gid: u32) -> io::Result<()> {
        match self {
            Target::Fd(fd) => fsutil::chown_fd(fd, uid, gid),
            Target::At(dir, name) => fsutil::chown_at(dir, name, uid, gid),
        }
    }

    fn chmod(self, mode: u32) -> io::Result<()> {
        match self {
            Target::Fd(fd) => fsutil::chmod_fd(fd, mode),
            Target::At(dir, name) => fsutil::chmod_at(dir, name, mode),
        }
    }

    fn stat(self) -> io::Result<Meta> {
        match self {
            Target::Fd(fd) => fsutil::stat_fd(fd),
            Target::At(dir, name) => fsutil::stat_at(dir, name)?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl<'a> From<&'a std::os::fd::OwnedFd> for Target<'a> {
    fn from(fd: &'a std::os::fd::OwnedFd) -> Self {
        Target::Fd(fd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_encodes_every_type() {
        for (text, kind) in [
            ("0:0:0755:dir", FileKind::Directory),
            ("33:33:4755:file", FileKind::Regular),
            ("1:2:0644:pipe", FileKind::Fifo),
            ("1:2:0644:socket", FileKind::Socket),
            ("0:0:0777:symlink", FileKind::Symlink),
            ("0:6:0660:block-8-1", FileKind::BlockDevice),
            ("0:5:0666:char-1-3", FileKind::CharDevice),
        ] {
            let parsed = OverrideStat::parse(text.as_bytes()).expect(text);
            assert_eq!(parsed.kind, kind, "{text}");
            assert_eq!(parsed.encode(), text.as_bytes(), "{text}");
        }
        let dev = OverrideStat::parse(b"0:5:0666:char-1-3").unwrap();
        assert_eq!((libc::major(dev.rdev), libc::minor(dev.rdev)), (1, 3));
        assert_eq!(
            OverrideStat::parse(b"1:2:755").unwrap().kind,
            FileKind::Regular
        );
        for bad in [
            "",
            "1:2",
            "a:2:0755",
            "1:2:9",
            "1:2:0755:weird",
            "1:2:0755:file:x",
        ] {
            assert!(OverrideStat::parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn no_override_reads_as_root() {
        let mut meta = Meta {
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            size: 3,
            mtime: 0,
            mtime_nsec: 0,
            rdev: 0,
            nlink: 1,
            dev: 0,
            ino: 1,
            blocks: 0,
        };
        apply_override(&mut meta, None);
        assert_eq!((meta.uid, meta.gid, meta.mode), (0, 0, 0o644));
        let dev = OverrideStat::parse(b"0:5:0620:char-136-0").unwrap();
        apply_override(&mut meta, Some(&dev));
        assert_eq!(meta.kind, FileKind::CharDevice);
        assert_eq!((meta.gid, meta.mode, meta.size), (5, 0o620, 0));
    }

    #[test]
    fn stored_modes_keep_the_store_able_to_work() {
        assert_eq!(stored_mode(FileKind::Directory, 0o500), 0o700);
        assert_eq!(stored_mode(FileKind::Regular, 0o4000), 0o600);
        assert_eq!(stored_mode(FileKind::Regular, 0o755), 0o755);
    }
}
