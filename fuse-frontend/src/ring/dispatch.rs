//! Decodes requests fetched from the io_uring queues, answers them through
//! the [`Server`] (the same answers fuser's `/dev/fuse` threads give) and
//! encodes the replies.
//!
//! The layouts are the kernel's FUSE protocol (`include/uapi/linux/fuse.h`,
//! 7.40+); over io_uring a request's first argument (its fixed in-struct, if
//! any) is in [`RingRequest::op_in`] and the rest (names, data) in
//! [`RingRequest::payload`]; a reply is its out-arguments only.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drivers::FileKind;
use fuser::{FileAttr, FileType, FopenFlags};
use tracing::debug;

use super::{read_u32, read_u64, write_u32, write_u64, RingHandler, RingReply, RingRequest};
use crate::attr::file_type;
use crate::backing::Backing;
use crate::merged::{Caller, SetAttr};
use crate::server::{self, Opened, Server, Sized};
use crate::stats::Counters;
use crate::sys::{decode_dev, TimeSpec};

/// FUSE opcodes.
mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

/// `fuse_setattr_in.valid` bits.
mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// `FOPEN_PASSTHROUGH`: the open's I/O goes to the backing file in `backing_id`.
const FOPEN_PASSTHROUGH: u32 = 1 << 7;
/// `FUSE_GETATTR_FH`: `fuse_getattr_in.fh` is set.
const GETATTR_FH: u32 = 1;
/// `FUSE_FSYNC_FDATASYNC`.
const FSYNC_FDATASYNC: u32 = 1;
/// Size of `struct fuse_attr`.
const ATTR_SIZE: usize = 88;

/// The io_uring transport's handler: decodes, answers through `server`,
/// encodes.
pub(crate) struct RingServer {
    server: Arc<Server>,
    /// The connection's device, to register passthrough backing files.
    dev: Arc<OwnedFd>,
}

impl RingServer {
    /// Answers through `server`; `dev` is the connection's `/dev/fuse`.
    pub fn new(server: Arc<Server>, dev: Arc<OwnedFd>) -> RingServer {
        RingServer { server, dev }
    }
}

impl RingHandler for RingServer {
    fn handle(&self, req: &RingRequest<'_>, reply: &mut RingReply<'_>) {
        Counters::bump(&self.server.merged.counters.ring_requests);
        if let Err(e) = self.answer(req, reply) {
            let errno = server::errno_of(&e);
            debug!(
                opcode = req.opcode,
                unique = req.unique,
                pid = req.pid,
                errno,
                "request failed"
            );
            reply.error(errno);
        }
    }

    /// See [`may_block`].
    fn may_block(&self, req: &RingRequest<'_>) -> bool {
        let m = &self.server.merged;
        let arg = Fields(req.op_in);
        match may_block(req.opcode, req.op_in) {
            Blocking::Never => false,
            Blocking::Always => true,
            // Changes in place of objects already in the upper are quick.
            Blocking::UnlessInUpper => m.kind_in_upper(req.nodeid, None).is_none(),
            Blocking::UnlessLinkedInUpper => m.kind_in_upper(arg.u64(0), None).is_none(),
            Blocking::UnlessRenamedInUpper => {
                let name = names(req.payload).next().unwrap_or_default();
                !matches!(m.kind_in_upper(req.nodeid, Some(name)), Some(k) if k != FileKind::Directory)
            }
        }
    }
}

/// When a request may block for long (copy a file or a subtree up, sync to
/// disk), so that it goes to the queue's workers instead of holding up the
/// other requests made on its CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocking {
    /// Answered on the queue thread.
    Never,
    /// Syncs, `FALLOCATE`, `COPY_FILE_RANGE`.
    Always,
    /// A change of the node (an open for writing or with `O_TRUNC`,
    /// `SETATTR`, the xattr changes): a copy-up unless it is in the upper.
    UnlessInUpper,
    /// `LINK`: a copy-up unless the linked node is in the upper.
    UnlessLinkedInUpper,
    /// `RENAME`/`RENAME2`: a copy-up (of a subtree, for a directory) unless
    /// the renamed object is a non-directory in the upper.
    UnlessRenamedInUpper,
}

/// How a request (`opcode`, in-struct `op_in`) may block. Everything not
/// named (`CREATE`, `UNLINK`, `WRITE`, lookups…: they never copy up more than
/// a directory) is answered on the queue thread.
fn may_block(opcode: u32, op_in: &[u8]) -> Blocking {
    match opcode {
        op::OPEN => {
            // fuse_open_in.flags.
            let flags = Fields(op_in).u32(0) as i32;
            if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
                Blocking::UnlessInUpper
            } else {
                Blocking::Never
            }
        }
        op::SETATTR | op::SETXATTR | op::REMOVEXATTR => Blocking::UnlessInUpper,
        op::LINK => Blocking::UnlessLinkedInUpper,
        op::RENAME | op::RENAME2 => Blocking::UnlessRenamedInUpper,
        op::FSYNC | op::FSYNCDIR | op::FALLOCATE | op::COPY_FILE_RANGE => Blocking::Always,
        _ => Blocking::Never,
    }
}

/// Native-endian fields of a request's in-struct (0 past its end).
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&self, at: usize) -> u32 {
        read_u32(self.0, at)
    }

    fn u64(&self, at: usize) -> u64 {
        read_u64(self.0, at)
    }
}

/// The NUL-terminated strings at the start of `payload`, in order.
fn names(payload: &[u8]) -> impl Iterator<Item = &OsStr> {
    payload
        .split(|b| *b == 0)
        .map(OsStr::from_bytes)
        .chain(std::iter::repeat(OsStr::new("")))
}

/// The first NUL-terminated string of `payload` and the bytes after it.
fn name_and_rest(payload: &[u8]) -> (&OsStr, &[u8]) {
    match payload.iter().position(|b| *b == 0) {
        Some(end) => (OsStr::from_bytes(&payload[..end]), &payload[end + 1..]),
        None => (OsStr::from_bytes(payload), &[]),
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl RingServer {
    fn answer(&self, req: &RingRequest<'_>, reply: &mut RingReply<'_>) -> io::Result<()> {
        let s = &self.server;
        let m = &s.merged;
        let arg = Fields(req.op_in);
        let ino = req.nodeid;
        let caller = Caller {
            uid: req.uid,
            gid: req.gid,
        };
        let mut names = names(req.payload);
        match req.opcode {
            op::LOOKUP => {
                let attr = s.lookup(ino, names.next().unwrap_or_default())?;
                self.entry(reply, &attr);
            }
            op::FORGET => m.forget(ino, arg.u64(0)),
            op::GETATTR => {
                let fh = (arg.u32(0) & GETATTR_FH != 0).then(|| arg.u64(8));
                let attr = m.getattr(ino, fh)?;
                self.attr(reply, &attr);
            }
            op::SETATTR => {
                let valid = arg.u32(0);
                let has = |bit| valid & bit != 0;
                let time = |set, now, secs: u64, nsecs: u32| {
                    if has(now) {
                        Some(TimeSpec::Now)
                    } else if has(set) {
                        Some(TimeSpec::At(secs as i64, i64::from(nsecs)))
                    } else {
                        None
                    }
                };
                let changes = SetAttr {
                    mode: has(fattr::MODE).then(|| arg.u32(68)),
                    uid: has(fattr::UID).then(|| arg.u32(76)),
                    gid: has(fattr::GID).then(|| arg.u32(80)),
                    size: has(fattr::SIZE).then(|| arg.u64(16)),
                    atime: time(fattr::ATIME, fattr::ATIME_NOW, arg.u64(32), arg.u32(56)),
                    mtime: time(fattr::MTIME, fattr::MTIME_NOW, arg.u64(40), arg.u32(60)),
                };
                let fh = has(fattr::FH).then(|| arg.u64(8));
                let attr = m.setattr(ino, changes, fh)?;
                self.attr(reply, &attr);
            }
            op::READLINK => {
                let target = m.readlink(ino)?;
                push(reply, target.as_bytes())?;
            }
            op::SYMLINK => {
                let name = names.next().unwrap_or_default();
                let target = names.next().unwrap_or_default();
                let attr = m.symlink(ino, name, target, caller)?;
                self.entry(reply, &attr);
            }
            op::MKNOD => {
                let name = names.next().unwrap_or_default();
                let attr = m.mknod(ino, name, arg.u32(0), decode_dev(arg.u32(4)), caller)?;
                self.entry(reply, &attr);
            }
            op::MKDIR => {
                let name = names.next().unwrap_or_default();
                let attr = m.mkdir(ino, name, arg.u32(0), caller)?;
                self.entry(reply, &attr);
            }
            op::UNLINK => m.unlink(ino, names.next().unwrap_or_default())?,
            op::RMDIR => m.rmdir(ino, names.next().unwrap_or_default())?,
            op::RENAME | op::RENAME2 => {
                let new_parent = arg.u64(0);
                let flags = if req.opcode == op::RENAME2 {
                    arg.u32(8)
                } else {
                    0
                };
                let mode = server::rename_mode(flags)?;
                let name = names.next().unwrap_or_default();
                let new_name = names.next().unwrap_or_default();
                m.rename(ino, name, new_parent, new_name, mode)?;
            }
            op::LINK => {
                let attr = m.link(arg.u64(0), ino, names.next().unwrap_or_default())?;
                self.entry(reply, &attr);
            }
            op::OPEN => {
                let opened = s.open(ino, arg.u32(0) as i32, |f| Backing::register(&self.dev, f))?;
                open_out(reply, &opened)?;
            }
            op::READ => {
                let data = m.read(arg.u64(0), arg.u64(8), arg.u32(16) as usize)?;
                push(reply, &data)?;
            }
            op::WRITE => {
                let size = (arg.u32(16) as usize).min(req.payload.len());
                let n = m.write(arg.u64(0), arg.u64(8), &req.payload[..size])?;
                write_out(reply, n)?;
            }
            op::STATFS => {
                let st = m.statfs()?;
                let mut out = [0u8; 80];
                write_u64(&mut out, 0, st.f_blocks);
                write_u64(&mut out, 8, st.f_bfree);
                write_u64(&mut out, 16, st.f_bavail);
                write_u64(&mut out, 24, st.f_files);
                write_u64(&mut out, 32, st.f_ffree);
                write_u32(&mut out, 40, u32::try_from(st.f_bsize).unwrap_or(4096));
                write_u32(&mut out, 44, u32::try_from(st.f_namemax).unwrap_or(255));
                write_u32(&mut out, 48, u32::try_from(st.f_frsize).unwrap_or(4096));
                push(reply, &out)?;
            }
            op::RELEASE => m.release(arg.u64(0)),
            op::FSYNC => m.fsync(arg.u64(0), arg.u32(8) & FSYNC_FDATASYNC != 0)?,
            op::SETXATTR => {
                let size = arg.u32(0) as usize;
                let (name, rest) = name_and_rest(req.payload);
                let value = rest.get(..size).ok_or_else(einval)?;
                m.setxattr(ino, name, value, arg.u32(4) as i32)?;
            }
            op::GETXATTR => {
                let value = m.getxattr(ino, names.next().unwrap_or_default())?;
                sized_out(reply, &value, arg.u32(0))?;
            }
            op::LISTXATTR => {
                let list = s.xattr_names(ino)?;
                sized_out(reply, &list, arg.u32(0))?;
            }
            op::REMOVEXATTR => m.removexattr(ino, names.next().unwrap_or_default())?,
            // Writes reach the upper file synchronously; opens carry FOPEN_NOFLUSH.
            op::FLUSH => {}
            op::OPENDIR => {
                let fh = m.opendir(ino)?;
                let opened = Opened {
                    fh,
                    flags: Server::opendir_flags(),
                    backing: None,
                };
                open_out(reply, &opened)?;
            }
            op::READDIR | op::READDIRPLUS => {
                let plus = req.opcode == op::READDIRPLUS;
                let limit = (arg.u32(16) as usize).min(reply.room());
                let mut used = 0;
                let mut record = Vec::new();
                s.read_dir(arg.u64(0), arg.u64(8), plus, |item| {
                    record.clear();
                    if let Some(attr) = item.attr.as_ref().filter(|_| plus) {
                        record.extend_from_slice(&self.entry_bytes(attr));
                    }
                    dirent(&mut record, item.ino, item.index + 1, item.kind, &item.name);
                    if used + record.len() > limit || !reply.push(&record) {
                        return false;
                    }
                    used += record.len();
                    true
                })?;
            }
            op::RELEASEDIR => m.releasedir(arg.u64(0)),
            op::FSYNCDIR => m.fsyncdir(ino)?,
            op::ACCESS => m.access(ino, arg.u32(0) as i32, caller)?,
            op::CREATE => {
                let name = names.next().unwrap_or_default();
                let (attr, opened) =
                    s.create(ino, name, arg.u32(4), arg.u32(0) as i32, caller, |f| {
                        Backing::register(&self.dev, f)
                    })?;
                self.entry(reply, &attr);
                open_out(reply, &opened)?;
            }
            op::FALLOCATE => {
                m.fallocate(arg.u64(0), arg.u64(8), arg.u64(16), arg.u32(24) as i32)?;
            }
            op::LSEEK => {
                let pos = m.lseek(arg.u64(0), arg.u64(8) as i64, arg.u32(16) as i32)?;
                push(reply, &pos.to_ne_bytes())?;
            }
            op::COPY_FILE_RANGE => {
                let n = m.copy_file_range(
                    arg.u64(0),
                    arg.u64(8),
                    arg.u64(24),
                    arg.u64(32),
                    arg.u64(40),
                )?;
                write_out(reply, n)?;
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOSYS)),
        }
        Ok(())
    }

    /// `struct fuse_entry_out` of `attr`.
    fn entry_bytes(&self, attr: &FileAttr) -> [u8; 40 + ATTR_SIZE] {
        let ttl = self.server.ttl;
        let mut out = [0u8; 40 + ATTR_SIZE];
        write_u64(&mut out, 0, attr.ino.0);
        write_u64(&mut out, 16, ttl.as_secs());
        write_u64(&mut out, 24, ttl.as_secs());
        write_u32(&mut out, 32, ttl.subsec_nanos());
        write_u32(&mut out, 36, ttl.subsec_nanos());
        put_attr(&mut out[40..], attr);
        out
    }

    fn entry(&self, reply: &mut RingReply<'_>, attr: &FileAttr) {
        let bytes = self.entry_bytes(attr);
        reply.push(&bytes);
    }

    /// `struct fuse_attr_out` of `attr`.
    fn attr(&self, reply: &mut RingReply<'_>, attr: &FileAttr) {
        let ttl: Duration = self.server.ttl;
        let mut out = [0u8; 16 + ATTR_SIZE];
        write_u64(&mut out, 0, ttl.as_secs());
        write_u32(&mut out, 8, ttl.subsec_nanos());
        put_attr(&mut out[16..], attr);
        reply.push(&out);
    }
}

/// Appends `bytes`, `ERANGE` when the reply buffer cannot take them.
fn push(reply: &mut RingReply<'_>, bytes: &[u8]) -> io::Result<()> {
    if reply.push(bytes) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::ERANGE))
    }
}

/// `struct fuse_open_out`.
fn open_out(reply: &mut RingReply<'_>, opened: &Opened) -> io::Result<()> {
    let mut out = [0u8; 16];
    write_u64(&mut out, 0, opened.fh);
    let mut flags = opened.flags;
    let mut backing_id = 0;
    match opened.backing.as_deref() {
        Some(Backing::Device { id, .. }) => backing_id = *id,
        // Registered through /dev/fuse: the kernel takes direct I/O beside it.
        Some(Backing::Session(_)) => flags |= FopenFlags::FOPEN_DIRECT_IO,
        None => {}
    }
    let mut bits = flags.bits();
    if backing_id != 0 {
        bits |= FOPEN_PASSTHROUGH;
    }
    write_u32(&mut out, 8, bits);
    write_u32(&mut out, 12, backing_id);
    push(reply, &out)
}

/// `struct fuse_write_out`.
fn write_out(reply: &mut RingReply<'_>, n: usize) -> io::Result<()> {
    let mut out = [0u8; 8];
    write_u32(&mut out, 0, u32::try_from(n).unwrap_or(u32::MAX));
    push(reply, &out)
}

/// An xattr value or list: `struct fuse_getxattr_out` with its size for a size
/// probe, else the bytes.
fn sized_out(reply: &mut RingReply<'_>, data: &[u8], size: u32) -> io::Result<()> {
    match server::sized(data, size)? {
        Sized::Size(len) => {
            let mut out = [0u8; 8];
            write_u32(&mut out, 0, len);
            push(reply, &out)
        }
        Sized::Data(bytes) => push(reply, bytes),
    }
}

/// Appends `struct fuse_dirent` (padded to 8 bytes).
fn dirent(out: &mut Vec<u8>, ino: u64, off: u64, kind: FileKind, name: &OsStr) {
    let name = name.as_bytes();
    let start = out.len();
    out.extend_from_slice(&ino.to_ne_bytes());
    out.extend_from_slice(&off.to_ne_bytes());
    out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
    out.extend_from_slice(&(type_bits(file_type(kind)) >> 12).to_ne_bytes());
    out.extend_from_slice(name);
    let len = out.len() - start;
    out.resize(start + len.div_ceil(8) * 8, 0);
}

/// The `S_IFMT` bits of a file type.
fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// Seconds and nanoseconds of `t` relative to the epoch (negative before it).
fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (secs, nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nanos == 0 {
                (secs, 0)
            } else {
                (secs - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// Writes `struct fuse_attr` of `attr` at the start of `out`.
fn put_attr(out: &mut [u8], attr: &FileAttr) {
    let (atime, atime_ns) = split_time(attr.atime);
    let (mtime, mtime_ns) = split_time(attr.mtime);
    let (ctime, ctime_ns) = split_time(attr.ctime);
    write_u64(out, 0, attr.ino.0);
    write_u64(out, 8, attr.size);
    write_u64(out, 16, attr.blocks);
    write_u64(out, 24, atime as u64);
    write_u64(out, 32, mtime as u64);
    write_u64(out, 40, ctime as u64);
    write_u32(out, 48, atime_ns);
    write_u32(out, 52, mtime_ns);
    write_u32(out, 56, ctime_ns);
    write_u32(out, 60, type_bits(attr.kind) | u32::from(attr.perm));
    write_u32(out, 64, attr.nlink);
    write_u32(out, 68, attr.uid);
    write_u32(out, 72, attr.gid);
    write_u32(out, 76, attr.rdev);
    write_u32(out, 80, attr.blksize);
    write_u32(out, 84, attr.flags);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fuse_open_in` with `flags`, zero-padded like `op_in`.
    fn open_in(flags: i32) -> [u8; 128] {
        let mut op_in = [0u8; 128];
        op_in[..4].copy_from_slice(&flags.to_ne_bytes());
        op_in
    }

    #[test]
    fn writes_and_truncations_may_copy_up() {
        let read = |flags| may_block(op::OPEN, &open_in(flags));
        assert_eq!(read(libc::O_RDONLY), Blocking::Never);
        assert_eq!(read(libc::O_RDONLY | libc::O_NOFOLLOW), Blocking::Never);
        assert_eq!(read(libc::O_WRONLY), Blocking::UnlessInUpper);
        assert_eq!(read(libc::O_RDWR | libc::O_APPEND), Blocking::UnlessInUpper);
        assert_eq!(
            read(libc::O_RDONLY | libc::O_TRUNC),
            Blocking::UnlessInUpper
        );
    }

    #[test]
    fn only_the_slow_opcodes_may_block() {
        let none = [0u8; 128];
        let expected = [
            (op::SETATTR, Blocking::UnlessInUpper),
            (op::SETXATTR, Blocking::UnlessInUpper),
            (op::REMOVEXATTR, Blocking::UnlessInUpper),
            (op::LINK, Blocking::UnlessLinkedInUpper),
            (op::RENAME, Blocking::UnlessRenamedInUpper),
            (op::RENAME2, Blocking::UnlessRenamedInUpper),
            (op::FSYNC, Blocking::Always),
            (op::FSYNCDIR, Blocking::Always),
            (op::FALLOCATE, Blocking::Always),
            (op::COPY_FILE_RANGE, Blocking::Always),
        ];
        for (opcode, blocking) in expected {
            assert_eq!(may_block(opcode, &none), blocking, "opcode {opcode}");
        }
        for opcode in [
            op::LOOKUP,
            op::GETATTR,
            op::CREATE,
            op::MKDIR,
            op::UNLINK,
            op::RMDIR,
            op::READ,
            op::WRITE,
            op::READDIR,
            op::READDIRPLUS,
            op::OPENDIR,
            op::RELEASE,
            op::FLUSH,
            op::GETXATTR,
            op::STATFS,
        ] {
            assert_eq!(may_block(opcode, &none), Blocking::Never, "opcode {opcode}");
        }
    }
}
