//! Open files of the merged view and the kernel I/O mode of each inode.
//!
//! A file handle reads and writes either a real file (in the upper, or a lower
//! layer's file when the layer has one) or, for layers without real files, the
//! layer reader itself. The kernel lets an inode be open either in passthrough
//! mode (all passthrough opens sharing one backing file) or in cached mode, never
//! both; opens that would mix them use direct I/O, which is compatible with both.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::backing::Backing;
use crate::sys::errno;

/// Where a file handle's data comes from.
pub(crate) enum Content {
    /// A real file.
    File(File),
    /// A layer without real files, read through its reader.
    Layer {
        /// The layer index.
        layer: usize,
        /// The path in the layer.
        path: PathBuf,
    },
}

/// The kernel I/O mode of an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoMode {
    /// Not decided yet.
    Pending,
    /// Passthrough to the backing file.
    Passthrough,
    /// Through the kernel's page cache and the daemon.
    Cached,
    /// Direct I/O through the daemon.
    Direct,
}

/// One open file of the merged view.
pub(crate) struct OpenFile {
    /// The inode.
    pub ino: u64,
    /// The layer holding the content when it was opened.
    pub layer: usize,
    /// The content.
    pub content: Content,
    /// Opened for writing.
    pub writable: bool,
    /// The I/O mode the kernel was told.
    pub mode: Mutex<IoMode>,
}

impl OpenFile {
    /// The real file, if the content is one.
    pub fn file(&self) -> Option<&File> {
        match &self.content {
            Content::File(f) => Some(f),
            Content::Layer { .. } => None,
        }
    }

    /// The real file opened for writing, `EBADF` otherwise.
    pub fn writable_file(&self) -> io::Result<&File> {
        match (&self.content, self.writable) {
            (Content::File(f), true) => Ok(f),
            _ => Err(errno(libc::EBADF)),
        }
    }
}

/// Reads up to `size` bytes at `offset` from a real file (short only at end of file).
pub(crate) fn read_file(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// How an inode is open in the kernel right now.
#[derive(Default)]
struct InodeIo {
    cached: u64,
    passthrough: u64,
    backing: Option<(Arc<Backing>, usize)>,
}

/// The open files of a mount.
#[derive(Default)]
pub(crate) struct Files {
    handles: RwLock<HashMap<u64, Arc<OpenFile>>>,
    io: Mutex<HashMap<u64, InodeIo>>,
    next: AtomicU64,
}

/// What [`Files::choose_mode`] decided for one open.
pub(crate) enum Choice {
    /// Reply with passthrough to this backing file.
    Passthrough(Arc<Backing>),
    /// Reply in cached mode.
    Cached,
    /// Reply with direct I/O.
    Direct,
}

impl Files {
    /// Registers an open file and returns its handle number.
    pub fn insert(&self, file: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(file));
        fh
    }

    /// The open file `fh`, `EBADF` when there is none.
    pub fn get(&self, fh: u64) -> io::Result<Arc<OpenFile>> {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| errno(libc::EBADF))
    }

    /// Any open real file of inode `ino` (to reach an unlinked file).
    pub fn any_file_of(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|h| h.ino == ino && h.file().is_some())
            .cloned()
    }

    /// Decides the kernel I/O mode of a new open of `file`.
    ///
    /// The kernel requires every open of an inode that has a passthrough backing
    /// to use that same backing, and refuses passthrough while the inode is open
    /// in cached mode; direct I/O goes with neither restriction. So `file` gets
    /// passthrough when `allow_passthrough` and no cached open of the inode
    /// exists (sharing the inode's backing, or registering one with `register`),
    /// cached mode when passthrough is not wanted or possible and no backing
    /// exists, and direct I/O otherwise. Callers allow passthrough only for files
    /// whose backing never changes while open: upper files, or any file of a
    /// read-only stack (a lower file is replaced by its copy-up otherwise).
    pub fn choose_mode(
        &self,
        file: &OpenFile,
        allow_passthrough: bool,
        register: impl FnOnce(&File) -> Option<Backing>,
    ) -> Choice {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let state = io.entry(file.ino).or_default();
        let choice = match (file.file(), &state.backing) {
            (Some(_), Some((id, layer))) if allow_passthrough && *layer == file.layer => {
                Choice::Passthrough(id.clone())
            }
            (_, Some(_)) => Choice::Direct,
            (Some(real), None) if allow_passthrough && state.cached == 0 => match register(real) {
                Some(id) => {
                    let id = Arc::new(id);
                    state.backing = Some((id.clone(), file.layer));
                    Choice::Passthrough(id)
                }
                None => Choice::Cached,
            },
            (Some(_), None) if allow_passthrough => Choice::Direct,
            _ => Choice::Cached,
        };
        let mode = match &choice {
            Choice::Passthrough(_) => {
                state.passthrough += 1;
                IoMode::Passthrough
            }
            Choice::Cached => {
                state.cached += 1;
                IoMode::Cached
            }
            Choice::Direct => IoMode::Direct,
        };
        *file.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        choice
    }

    /// Forgets handle `fh`, returning it.
    pub fn remove(&self, fh: u64) -> Option<Arc<OpenFile>> {
        let file = self
            .handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)?;
        let mode = *file.mode.lock().unwrap_or_else(|e| e.into_inner());
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = io.get_mut(&file.ino) {
            match mode {
                IoMode::Passthrough => {
                    state.passthrough = state.passthrough.saturating_sub(1);
                    if state.passthrough == 0 {
                        state.backing = None;
                    }
                }
                IoMode::Cached => state.cached = state.cached.saturating_sub(1),
                IoMode::Direct | IoMode::Pending => {}
            }
            if state.cached == 0 && state.passthrough == 0 {
                io.remove(&file.ino);
            }
        }
        Some(file)
    }
}
