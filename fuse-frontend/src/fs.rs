//! The `/dev/fuse` transport: `fuser::Filesystem` answering through [`Server`].

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::debug;

use crate::attr::file_type;
use crate::backing::Backing;
use crate::merged::{Caller, Merged, SetAttr};
use crate::server::{self, Server, Sized};
use crate::sys::{decode_dev, TimeSpec};

/// The FUSE filesystem serving one merged view through fuser's `/dev/fuse`
/// threads (and, when the kernel grants it, starting the io_uring transport's
/// negotiation).
pub(crate) struct FuseFs {
    server: Arc<Server>,
    ring: bool,
}

impl FuseFs {
    /// Serves through `server`, asking for FUSE over io_uring when `ring`.
    pub fn new(server: Arc<Server>, ring: bool) -> FuseFs {
        FuseFs { server, ring }
    }

    fn merged(&self) -> &Merged {
        &self.server.merged
    }
}

/// The errno of an I/O error (`EIO` when it carries none).
fn errno_of(err: &io::Error) -> Errno {
    Errno::from_i32(server::errno_of(err))
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
        self.server.init(config, self.ring);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.server.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.server.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "lookup", e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.merged().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.merged().getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.server.ttl, &attr),
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
        match self.merged().setattr(ino.0, changes, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.server.ttl, &attr),
            Err(e) => reply_err!(reply, "setattr", e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        use std::os::unix::ffi::OsStrExt;
        match self.merged().readlink(ino.0) {
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
            .merged()
            .mknod(parent.0, name, mode, decode_dev(rdev), caller(req))
        {
            Ok(attr) => reply.entry(&self.server.ttl, &attr, Generation(0)),
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
        match self.merged().mkdir(parent.0, name, mode, caller(req)) {
            Ok(attr) => reply.entry(&self.server.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "mkdir", e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged().unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "unlink", e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged().rmdir(parent.0, name) {
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
            .merged()
            .symlink(parent.0, link_name, target.as_os_str(), caller(req))
        {
            Ok(attr) => reply.entry(&self.server.ttl, &attr, Generation(0)),
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
        let mode = match server::rename_mode(flags.bits()) {
            Ok(mode) => mode,
            Err(e) => return reply_err!(reply, "rename", e),
        };
        match self
            .merged()
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
        match self.merged().link(ino.0, newparent.0, newname) {
            Ok(attr) => reply.entry(&self.server.ttl, &attr, Generation(0)),
            Err(e) => reply_err!(reply, "link", e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.server.open(ino.0, flags.0, |f| {
            reply.open_backing(f).map(Backing::Session)
        });
        match opened {
            Ok(o) => match o.backing.as_deref() {
                Some(Backing::Session(id)) => {
                    reply.opened_passthrough(FileHandle(o.fh), o.flags, id)
                }
                // Registered by the other transport: the kernel takes direct I/O beside it.
                Some(Backing::Device { .. }) => {
                    reply.opened(FileHandle(o.fh), o.flags | FopenFlags::FOPEN_DIRECT_IO)
                }
                None => reply.opened(FileHandle(o.fh), o.flags),
            },
            Err(e) => reply_err!(reply, "open", e),
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
        let created = self
            .server
            .create(parent.0, name, mode, flags, caller(req), |f| {
                reply.open_backing(f).map(Backing::Session)
            });
        let ttl = &self.server.ttl;
        match created {
            Ok((attr, o)) => match o.backing.as_deref() {
                Some(Backing::Session(id)) => reply.created_passthrough(
                    ttl,
                    &attr,
                    Generation(0),
                    FileHandle(o.fh),
                    o.flags,
                    id,
                ),
                Some(Backing::Device { .. }) => reply.created(
                    ttl,
                    &attr,
                    Generation(0),
                    FileHandle(o.fh),
                    o.flags | FopenFlags::FOPEN_DIRECT_IO,
                ),
                None => reply.created(ttl, &attr, Generation(0), FileHandle(o.fh), o.flags),
            },
            Err(e) => reply_err!(reply, "create", e),
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
        match self.merged().read(fh.0, offset, size as usize) {
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
        match self.merged().write(fh.0, offset, data) {
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
        self.merged().release(fh.0);
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
        match self.merged().fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fsync", e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.merged().opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), Server::opendir_flags()),
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
        let listed = self.server.read_dir(fh.0, offset, false, |item| {
            !reply.add(
                INodeNo(item.ino),
                item.index + 1,
                file_type(item.kind),
                &item.name,
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "readdir", e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.server.ttl;
        let listed = self.server.read_dir(fh.0, offset, true, |item| {
            let Some(attr) = &item.attr else { return false };
            !reply.add(
                INodeNo(item.ino),
                item.index + 1,
                &item.name,
                &ttl,
                attr,
                Generation(0),
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "readdirplus", e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.merged().releasedir(fh.0);
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
        match self.merged().fsyncdir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "fsyncdir", e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.merged().statfs() {
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
        match self.merged().setxattr(ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "setxattr", e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.merged().getxattr(ino.0, name) {
            Ok(value) => reply_sized(reply, &value, size),
            Err(e) => reply_err!(reply, "getxattr", e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.server.xattr_names(ino.0) {
            Ok(names) => reply_sized(reply, &names, size),
            Err(e) => reply_err!(reply, "listxattr", e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.merged().removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply_err!(reply, "removexattr", e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.merged().access(ino.0, mask.bits(), caller(req)) {
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
        match self.merged().fallocate(fh.0, offset, length, mode) {
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
        match self.merged().lseek(fh.0, offset, whence) {
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
            .merged()
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply_err!(reply, "copy_file_range", e),
        }
    }
}

/// Replies to a size probe (`size == 0`) with the length, else with the data or `ERANGE`.
fn reply_sized(reply: ReplyXattr, data: &[u8], size: u32) {
    match server::sized(data, size) {
        Ok(Sized::Size(len)) => reply.size(len),
        Ok(Sized::Data(data)) => reply.data(data),
        Err(e) => reply.error(errno_of(&e)),
    }
}
