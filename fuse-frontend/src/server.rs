//! The FUSE server's answers, whichever transport carries them: fuser's
//! `/dev/fuse` threads ([`crate::fs`]) or the io_uring queues
//! ([`crate::ring`]). Both ask the same [`Server`], so a request means the
//! same thing on either.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{FopenFlags, InitFlags, KernelConfig};
use tracing::{debug, info, warn};

use crate::backing::Backing;
use crate::dirs::DirItem;
use crate::handles::{Choice, OpenFile};
use crate::merged::{Caller, Merged};
use crate::rename::RenameMode;
use crate::stats::Counters;

/// The largest write (and read) one request carries. The io_uring transport
/// needs a payload buffer this large per ring entry; passthrough files never
/// send their data through the server.
pub(crate) const MAX_WRITE: u32 = 1 << 20;

/// The server of one merged view.
pub(crate) struct Server {
    /// The merged view.
    pub merged: Arc<Merged>,
    /// How long the kernel may cache names and attributes.
    pub ttl: Duration,
    passthrough: AtomicBool,
    ring: AtomicBool,
}

/// The answer to an open or a create.
pub(crate) struct Opened {
    /// The file handle.
    pub fh: u64,
    /// `FOPEN_*` flags.
    pub flags: FopenFlags,
    /// The backing file, for a passthrough open.
    pub backing: Option<Arc<Backing>>,
}

/// The answer to a `getxattr` or `listxattr`, which first probe the size.
pub(crate) enum Sized<'a> {
    /// The length (the caller asked with size 0).
    Size(u32),
    /// The bytes.
    Data(&'a [u8]),
}

impl Server {
    /// Serves `merged`, letting the kernel cache names and attributes for `ttl`,
    /// with passthrough when `passthrough` and the kernel allow it.
    pub fn new(merged: Arc<Merged>, ttl: Duration, passthrough: bool) -> Server {
        Server {
            merged,
            ttl,
            passthrough: AtomicBool::new(passthrough),
            ring: AtomicBool::new(false),
        }
    }

    /// Negotiates the connection: the capabilities Lamina uses, passthrough,
    /// and — when `ring` — FUSE over io_uring.
    pub fn init(&self, config: &mut KernelConfig, ring: bool) {
        let wanted = [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
        ];
        for flag in wanted {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_write(MAX_WRITE);
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(2).is_ok();
            if !ok {
                info!(
                    "the kernel offers no FUSE passthrough; serving file data through the daemon"
                );
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        if ring {
            let granted = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            if !granted {
                info!("the kernel offers no FUSE over io_uring on this connection");
            }
            self.ring.store(granted, Ordering::Relaxed);
        }
    }

    /// Whether the connection was negotiated with FUSE over io_uring.
    pub fn ring_granted(&self) -> bool {
        self.ring.load(Ordering::Relaxed)
    }

    /// The entry of `name` in `parent`; a name that does not exist answers
    /// with inode 0, which the kernel caches as a negative entry (every change
    /// of the namespace passes through the kernel, which drops the negative
    /// entries it invalidates).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<fuser::FileAttr> {
        match self.merged.lookup(parent, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(negative_entry()),
            other => other,
        }
    }

    /// Opens inode `ino`; `open_backing` registers a passthrough backing file
    /// on the transport's connection.
    pub fn open(
        &self,
        ino: u64,
        flags: i32,
        open_backing: impl FnOnce(&File) -> io::Result<Backing>,
    ) -> io::Result<Opened> {
        let (fh, open) = self.merged.open(ino, flags)?;
        Ok(self.opened(fh, &open, open_backing))
    }

    /// Creates and opens `name` in `parent`.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
        open_backing: impl FnOnce(&File) -> io::Result<Backing>,
    ) -> io::Result<(fuser::FileAttr, Opened)> {
        let (attr, fh, open) = self.merged.create(parent, name, mode, flags, caller)?;
        Ok((attr, self.opened(fh, &open, open_backing)))
    }

    /// Chooses how the kernel does I/O on a new open (see
    /// [`crate::handles::Files::choose_mode`]). Opens carry `FOPEN_NOFLUSH`:
    /// writes reach the upper file synchronously, nothing is buffered here.
    fn opened(
        &self,
        fh: u64,
        open: &OpenFile,
        open_backing: impl FnOnce(&File) -> io::Result<Backing>,
    ) -> Opened {
        // A lower file of a writable stack is replaced by its copy-up while
        // open, so only upper files, or any file of a read-only stack, keep
        // their backing.
        let may_pass_through = !self.merged.writable() || self.merged.layers.is_upper(open.layer);
        let choice = self
            .merged
            .files
            .choose_mode(open, may_pass_through, |file| {
                self.register(file, open_backing)
            });
        let c = &self.merged.counters;
        Counters::bump(match choice {
            Choice::Passthrough(_) => &c.passthrough_opens,
            Choice::Cached => &c.cached_opens,
            Choice::Direct => &c.direct_opens,
        });
        let (flags, backing) = match choice {
            Choice::Passthrough(backing) => (FopenFlags::empty(), Some(backing)),
            // Read-only layers never change: their page cache stays valid across opens.
            Choice::Cached if !self.merged.layers.is_upper(open.layer) => {
                (FopenFlags::FOPEN_KEEP_CACHE, None)
            }
            Choice::Cached => (FopenFlags::empty(), None),
            Choice::Direct => (FopenFlags::FOPEN_DIRECT_IO, None),
        };
        Opened {
            fh,
            flags: flags | FopenFlags::FOPEN_NOFLUSH,
            backing,
        }
    }

    /// Registers `file` as a passthrough backing file, turning passthrough off
    /// for good when the kernel refuses it for reasons that will not change.
    fn register(
        &self,
        file: &File,
        open_backing: impl FnOnce(&File) -> io::Result<Backing>,
    ) -> Option<Backing> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        match open_backing(file) {
            Ok(backing) => Some(backing),
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP)
                ) {
                    warn!(error = %e, "FUSE passthrough unavailable; serving file data through the daemon");
                    self.passthrough.store(false, Ordering::Relaxed);
                } else {
                    debug!(error = %e, "no passthrough for this file");
                }
                None
            }
        }
    }

    /// The open flags of a directory handle. Every change of a listing passes
    /// through the kernel, which then drops its cached copy (and checks the
    /// directory's mtime on each open).
    pub fn opendir_flags() -> FopenFlags {
        FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
    }

    /// Feeds the entries of directory handle `fh` from position `offset` to
    /// `add` until it returns false (the reply is full) or the listing ends.
    /// With `plus`, entries carry attributes, and each one the kernel takes
    /// (other than `.` and `..`) counts as a lookup.
    pub fn read_dir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirItem) -> bool,
    ) -> io::Result<()> {
        let mut index = offset;
        while let Some(item) = self.merged.dir_entry(fh, index, plus)? {
            if plus && item.attr.is_none() {
                break;
            }
            if !add(&item) {
                break;
            }
            if plus && item.index >= 2 {
                self.merged.add_lookup(item.ino);
            }
            index = item.index + 1;
        }
        Ok(())
    }

    /// The names of inode `ino`'s extended attributes, each followed by a NUL.
    pub fn xattr_names(&self, ino: u64) -> io::Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let mut buf = Vec::new();
        for name in self.merged.listxattr(ino)? {
            buf.extend_from_slice(name.as_bytes());
            buf.push(0);
        }
        Ok(buf)
    }
}

/// How a `rename` with `RENAME_*` `flags` is carried out; `EINVAL` for
/// `RENAME_WHITEOUT`, which only overlayfs itself may ask for.
pub(crate) fn rename_mode(flags: u32) -> io::Result<RenameMode> {
    if flags & libc::RENAME_WHITEOUT != 0 {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else if flags & libc::RENAME_EXCHANGE != 0 {
        Ok(RenameMode::Exchange)
    } else if flags & libc::RENAME_NOREPLACE != 0 {
        Ok(RenameMode::NoReplace)
    } else {
        Ok(RenameMode::Replace)
    }
}

/// The answer to an xattr request asking for `size` bytes of `data`: its
/// length when `size` is 0, `ERANGE` when it does not fit.
pub(crate) fn sized(data: &[u8], size: u32) -> io::Result<Sized<'_>> {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        Ok(Sized::Size(len))
    } else if len > size {
        Err(io::Error::from_raw_os_error(libc::ERANGE))
    } else {
        Ok(Sized::Data(data))
    }
}

/// The errno of an I/O error (`EIO` when it carries none).
pub(crate) fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

/// The entry of a name that does not exist (inode 0: the kernel caches the absence).
fn negative_entry() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: fuser::INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
