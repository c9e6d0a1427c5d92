//! File data: opening regular files (copying them up for writing), reading,
//! writing and the other operations on open files.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drivers::fsutil;
use drivers::layer::FileKind;

use crate::handles::{read_file, Content, IoMode, OpenFile};
use crate::merged::Merged;
use crate::nodes::{Table, ROOT};
use crate::stats::Counters;
use crate::sys::{self, errno};

impl Merged {
    /// Opens regular file `ino` with open(2) `flags`, copying it up for writing.
    pub fn open(&self, ino: u64, flags: i32) -> io::Result<(u64, Arc<OpenFile>)> {
        let access = flags & libc::O_ACCMODE;
        let truncate = flags & libc::O_TRUNC != 0;
        let write = access != libc::O_RDONLY || truncate;
        let mut t = self.lock();
        let node = t.get(ino)?;
        match node.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(errno(libc::EISDIR)),
            _ => return Err(errno(libc::EINVAL)),
        }
        if write {
            self.upper()?;
        }
        if ino != ROOT && node.names.is_empty() {
            return self.reopen_deleted(&mut t, ino, flags);
        }
        if write {
            self.copy_up(&mut t, ino, truncate.then_some(0))?;
        }
        let extra = flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_TRUNC);
        let open = if self.in_upper(&t, ino)? {
            let (dir, name) = self.upper_location(&t, ino)?;
            let fd = fsutil::open_at(dir.as_fd(), &name, access | extra | libc::O_NONBLOCK, 0)?;
            OpenFile {
                ino,
                layer: 0,
                content: Content::File(File::from(fd)),
                writable: access != libc::O_RDONLY,
                mode: Mutex::new(IoMode::Pending),
            }
        } else {
            let layer = t.get(ino)?.layers[0];
            let path = t.path(ino)?;
            let content = match self.layers.reader(layer).open_file(&path)? {
                Some(fd) => Content::File(File::from(fd)),
                None => Content::Layer { layer, path },
            };
            OpenFile {
                ino,
                layer,
                content,
                writable: false,
                mode: Mutex::new(IoMode::Pending),
            }
        };
        t.get_mut(ino)?.opens += 1;
        let fh = self.files.insert(open);
        Ok((fh, self.files.get(fh)?))
    }

    /// Opens an unlinked file again through one of its open descriptors.
    fn reopen_deleted(
        &self,
        t: &mut Table,
        ino: u64,
        flags: i32,
    ) -> io::Result<(u64, Arc<OpenFile>)> {
        let other = self
            .files
            .any_file_of(ino)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let file = other.file().ok_or_else(|| errno(libc::ENOENT))?;
        let access = flags & libc::O_ACCMODE;
        if access != libc::O_RDONLY && other.layer != 0 {
            return Err(errno(libc::ENOENT));
        }
        let proc = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let reopened = std::fs::OpenOptions::new()
            .read(access != libc::O_WRONLY)
            .write(access != libc::O_RDONLY)
            .open(proc)?;
        let open = OpenFile {
            ino,
            layer: other.layer,
            content: Content::File(reopened),
            writable: access != libc::O_RDONLY,
            mode: Mutex::new(IoMode::Pending),
        };
        t.get_mut(ino)?.opens += 1;
        let fh = self.files.insert(open);
        Ok((fh, self.files.get(fh)?))
    }

    /// Reads up to `size` bytes at `offset` through open file `fh`.
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        Counters::bump(&self.counters.reads);
        let open = self.files.get(fh)?;
        match &open.content {
            Content::File(file) => read_file(file, offset, size),
            Content::Layer { layer, path } => {
                let reader = self.layers.reader(*layer);
                let mut buf = vec![0u8; size];
                let mut done = 0;
                while done < size {
                    let n = reader.read_at(path, offset + done as u64, &mut buf[done..])?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                buf.truncate(done);
                Ok(buf)
            }
        }
    }

    /// Writes `data` at `offset` through open file `fh`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        Counters::bump(&self.counters.writes);
        let open = self.files.get(fh)?;
        open.writable_file()?.write_all_at(data, offset)?;
        Ok(data.len())
    }

    /// Flushes open file `fh` to stable storage.
    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let open = self.files.get(fh)?;
        if self.upper.as_ref().is_some_and(|u| u.is_volatile()) {
            return Ok(());
        }
        match open.file() {
            Some(file) if open.layer == 0 => {
                Counters::bump(&self.counters.syncs);
                if datasync {
                    file.sync_data()
                } else {
                    file.sync_all()
                }
            }
            _ => Ok(()),
        }
    }

    /// Closes open file `fh`.
    pub fn release(&self, fh: u64) {
        if let Some(open) = self.files.remove(fh) {
            let mut t = self.lock();
            if let Ok(node) = t.get_mut(open.ino) {
                node.opens = node.opens.saturating_sub(1);
            }
            t.drop_if_unused(open.ino);
        }
    }

    /// Allocates or punches space in open file `fh`.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> io::Result<()> {
        let open = self.files.get(fh)?;
        let file = open.writable_file()?;
        // SAFETY: plain syscall on a descriptor we own.
        sys::cvt(unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        })
        .map(drop)
    }

    /// `SEEK_DATA`/`SEEK_HOLE` (and the plain kinds) in open file `fh`.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> io::Result<i64> {
        let open = self.files.get(fh)?;
        match &open.content {
            Content::File(file) => {
                // SAFETY: plain syscall on a descriptor we own; it does not move our
                // offset in a way anyone relies on (all our I/O is positional).
                let ret = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
                if ret < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(ret)
                }
            }
            Content::Layer { .. } => {
                let size = {
                    let t = self.lock();
                    t.get(open.ino)?.entry.size as i64
                };
                match whence {
                    libc::SEEK_DATA if offset < size => Ok(offset),
                    libc::SEEK_HOLE if offset < size => Ok(size),
                    libc::SEEK_DATA | libc::SEEK_HOLE => Err(errno(libc::ENXIO)),
                    libc::SEEK_SET => Ok(offset),
                    libc::SEEK_END => Ok(size + offset),
                    _ => Err(errno(libc::EINVAL)),
                }
            }
        }
    }

    /// Copies `len` bytes between two open files inside the mount.
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let input = self.files.get(fh_in)?;
        let output = self.files.get(fh_out)?;
        let out = output.writable_file()?;
        if let Some(src) = input.file() {
            let mut off_in = offset_in as libc::loff_t;
            let mut off_out = offset_out as libc::loff_t;
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
            // SAFETY: valid descriptors and offset pointers.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    out.as_raw_fd(),
                    &mut off_out,
                    len,
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if !matches!(
                err.raw_os_error(),
                Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ) {
                return Err(err);
            }
        }
        let chunk = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20);
        let data = self.read(fh_in, offset_in, chunk)?;
        out.write_all_at(&data, offset_out)?;
        Ok(data.len())
    }
}
