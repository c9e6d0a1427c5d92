//! The FUSE protocol side: `fuser::Filesystem` over [`Merged`].

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, info, warn};

use crate::attr::file_type;
use crate::handles::{Choice, OpenFile};
use crate::merged::{Caller, Merged, SetAttr};
use crate::rename::RenameMode;
use crate::stats::Counters;
use crate::sys::{decode_dev, TimeSpec};

/// The FUSE filesystem serving one merged view.
pub(crate) struct FuseFs {
    merged: Arc<Merged>,
    ttl: Duration,
    passthrough: AtomicBool,
}

impl FuseFs {
    /// Serves `merged`, letting the kernel cache names and attributes for `ttl`,
    /// with passthrough when `passthrough` and the kernel allow it.
    pub fn new(merged: Arc<Merged>, ttl: Duration, passthrough: bool) -> FuseFs {
        FuseFs {
            merged,
            ttl,
            passthrough: AtomicBool::new(passthrough),
        }
    }

    /// Registers `file` as a passthrough backing file, turning passthrough off
    /// for good when the kernel refuses it for reasons that will not change.
    fn register(
        &self,
        file: &File,
        open_backing: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Option<BackingId> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        match open_backing(file) {
            Ok(id) => Some(id),
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

    /// Whether `open` may use passthrough: its backing file must stay the file
    /// the inode shows while open, which holds for upper files and for anything
    /// in a read-only stack, but not for a lower file of a writable stack (a
    /// write elsewhere copies it up and the inode moves to the copy).
    fn may_pass_through(&self, open: &OpenFile) -> bool {
        !self.merged.writable() || self.merged.layers.is_upper(open.layer)
    }

    fn count(&self, choice: &Choice) {
        let c = &self.merged.counters;
        Counters::bump(match choice {
            Choice::Passthrough(_) => &c.passthrough_opens,
            Choice::Cached => &c.cached_opens,
            Choice::Direct => &c.direct_opens,
        });
    }

    /// The open flags for a file served in the kernel's cached mode.
    fn cached_flags(&self, open: &OpenFile) -> FopenFlags {
        if self.merged.layers.is_upper(open.layer) {
            FopenFlags::empty()
        } else {
            // Read-only layers never change: the page cache stays valid across opens.
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }
}

/// The errno of an I/O error (`EIO` when it carries none).
fn errno_of(err: &io::Error) -> Errno {
    Errno::from_i32(err.raw_os_error().unwrap_or(libc::EIO))
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_spec(t: Option<TimeOrNow>) -> Option<TimeSpec> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSpec::Now,
        TimeOrNow::SpecificTime(at) => match at.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::At(d.as_secs() as i64, i64::from(d.subsec_nanos())),
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                TimeSpec::At(sec, nsec)
            }
        },
    })
}

macro_rules! reply_err {
    ($reply:expr, $op:expr, $err:expr) => {{
        let e: &io::Error = &$err;
        debug!(op = $op, error = %e, "request failed");
        $reply.error(errno_of(e))
    }};
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
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
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.merged.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            // Every change of the namespace passes through the kernel, which drops
            // negative entries it invalidates: the absence may be cached too.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&self.ttl, &negative_entry(), Generation(0))
            }
            Err(e) => reply_err!(reply, "lookup", e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.merged.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.merged.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply_err!(reply, "getattr", e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_spec(atime),
            mtime: time_spec(mtime),
        };
        match self.merged.setattr(ino.0, changes, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.ttl, &attr),
            Err(e) => reply_err!(reply, "setattr", e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        use std::os::unix::ffi::OsStrExt;
        match self.merged.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply_err!(reply, "readlink", e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self
            .merged
            .mknod(parent.0, name, mode, decode_dev(rdev), caller(req))
        {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "mknod", e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.merged.mkdir(parent.0, name, mode, caller(req)) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "mkdir", e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "unlink", e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "rmdir", e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .merged
            .symlink(parent.0, link_name, target.as_os_str(), caller(req))
        {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "symlink", e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        match self
            .merged
            .rename(parent.0, name, newparent.0, newname, mode)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "rename", e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.merged.link(ino.0, newparent.0, newname) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "link", e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fh, open) = match self.merged.open(ino.0, flags.0) {
            Ok(opened) => opened,
            Err(e) => return reply_err!(reply, "open", e),
        };
        let choice = self
            .merged
            .files
            .choose_mode(&open, self.may_pass_through(&open), |file| {
                self.register(file, |f| reply.open_backing(f))
            });
        self.count(&choice);
        match choice {
            Choice::Passthrough(id) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id)
            }
            Choice::Cached => reply.opened(
                FileHandle(fh),
                self.cached_flags(&open) | FopenFlags::FOPEN_NOFLUSH,
            ),
            Choice::Direct => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (attr, fh, open) = match self.merged.create(parent.0, name, mode, flags, caller(req)) {
            Ok(created) => created,
            Err(e) => return reply_err!(reply, "create", e),
        };
        let choice = self
            .merged
            .files
            .choose_mode(&open, self.may_pass_through(&open), |file| {
                self.register(file, |f| reply.open_backing(f))
            });
        self.count(&choice);
        match choice {
            Choice::Passthrough(id) => reply.created_passthrough(
                &self.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
                &id,
            ),
            Choice::Cached => reply.created(
                &self.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
            ),
            Choice::Direct => reply.created(
                &self.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.merged.read(fh.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply_err!(reply, "read", e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.merged.write(fh.0, offset, data) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply_err!(reply, "write", e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes reach the upper file synchronously; nothing is buffered here.
        // Opens carry FOPEN_NOFLUSH, so the kernel does not even ask.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.merged.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.merged.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fsync", e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.merged.opendir(ino.0) {
            // Every change of a listing passes through the kernel, which then drops
            // its cached copy (and checks the directory's mtime on each open).
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply_err!(reply, "opendir", e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut index = offset;
        loop {
            match self.merged.dir_entry(fh.0, index, false) {
                Ok(Some(item)) => {
                    if reply.add(
                        INodeNo(item.ino),
                        item.index + 1,
                        file_type(item.kind),
                        &item.name,
                    ) {
                        break;
                    }
                    index = item.index + 1;
                }
                Ok(None) => break,
                Err(e) => return reply_err!(reply, "readdir", e),
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut index = offset;
        loop {
            match self.merged.dir_entry(fh.0, index, true) {
                Ok(Some(item)) => {
                    let Some(attr) = item.attr else { break };
                    if reply.add(
                        INodeNo(item.ino),
                        item.index + 1,
                        &item.name,
                        &self.ttl,
                        &attr,
                        Generation(0),
                    ) {
                        break;
                    }
                    if item.index >= 2 {
                        self.merged.add_lookup(item.ino);
                    }
                    index = item.index + 1;
                }
                Ok(None) => break,
                Err(e) => return reply_err!(reply, "readdirplus", e),
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.merged.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.merged.fsyncdir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fsyncdir", e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.merged.statfs() {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                u32::try_from(st.f_bsize).unwrap_or(4096),
                u32::try_from(st.f_namemax).unwrap_or(255),
                u32::try_from(st.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply_err!(reply, "statfs", e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.merged.setxattr(ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "setxattr", e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.merged.getxattr(ino.0, name) {
            Ok(value) => reply_sized(reply, &value, size),
            Err(e) => reply_err!(reply, "getxattr", e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        use std::os::unix::ffi::OsStrExt;
        match self.merged.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for name in names {
                    buf.extend_from_slice(name.as_bytes());
                    buf.push(0);
                }
                reply_sized(reply, &buf, size);
            }
            Err(e) => reply_err!(reply, "listxattr", e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "removexattr", e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.merged.access(ino.0, mask.bits(), caller(req)) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "access", e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.merged.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fallocate", e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.merged.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply_err!(reply, "lseek", e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .merged
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply_err!(reply, "copy_file_range", e),
        }
    }
}

/// The entry of a name that does not exist (inode 0: the kernel caches the absence).
fn negative_entry() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(0),
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

/// Replies to a size probe (`size == 0`) with the length, else with the data or `ERANGE`.
fn reply_sized(reply: ReplyXattr, data: &[u8], size: u32) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}
