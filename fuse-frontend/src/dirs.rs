//! Open directories: a merged listing taken at the first read of a directory
//! handle (and again on rewind), so offsets stay valid while the directory
//! changes. Opening takes no listing: the kernel caches listings
//! (`FOPEN_CACHE_DIR`) and often reads none through a new handle.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use drivers::layer::FileKind;
use fuser::FileAttr;

use crate::merged::Merged;
use crate::nodes::ROOT;
use crate::sys::errno;

/// One open directory.
struct DirHandle {
    ino: u64,
    /// The listing, once taken.
    entries: Option<Vec<(OsString, FileKind)>>,
    /// The listing was just taken (a read at offset 0 need not take it again).
    fresh: bool,
}

/// The open directories of a mount.
#[derive(Default)]
pub(crate) struct Dirs {
    handles: Mutex<HashMap<u64, DirHandle>>,
    next: AtomicU64,
}

/// One entry of a directory listing.
pub(crate) struct DirItem {
    /// Its position in the listing (`.` is 0, `..` is 1).
    pub index: u64,
    /// Its inode.
    pub ino: u64,
    /// Its name.
    pub name: OsString,
    /// Its type.
    pub kind: FileKind,
    /// Its attributes (for `readdirplus`).
    pub attr: Option<FileAttr>,
}

impl Merged {
    fn listing(&self, ino: u64) -> io::Result<Vec<(OsString, FileKind)>> {
        let t = self.lock();
        let node = t.get(ino)?;
        if node.kind != FileKind::Directory {
            return Err(errno(libc::ENOTDIR));
        }
        if ino != ROOT && node.names.is_empty() {
            return Ok(Vec::new());
        }
        let layers = node.layers.clone();
        self.layers.list(&layers, &t.path(ino)?)
    }

    /// Opens directory `ino` and returns its handle.
    pub fn opendir(&self, ino: u64) -> io::Result<u64> {
        if self.lock().get(ino)?.kind != FileKind::Directory {
            return Err(errno(libc::ENOTDIR));
        }
        let fh = self.dirs.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.dirs
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                DirHandle {
                    ino,
                    entries: None,
                    fresh: false,
                },
            );
        Ok(fh)
    }

    /// Closes directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.dirs
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }

    /// The entry at position `index` of directory handle `fh` (`.` and `..`
    /// first), `None` past the end. Reading position 0 again takes a new listing.
    /// With `plus`, the entry's attributes are included (the caller counts the
    /// lookup once the kernel accepted the entry).
    pub fn dir_entry(&self, fh: u64, index: u64, plus: bool) -> io::Result<Option<DirItem>> {
        let (dir, refresh) = {
            let mut handles = self.dirs.handles.lock().unwrap_or_else(|e| e.into_inner());
            let h = handles.get_mut(&fh).ok_or_else(|| errno(libc::EBADF))?;
            let refresh = h.entries.is_none() || (index == 0 && !h.fresh);
            h.fresh = false;
            (h.ino, refresh)
        };
        if refresh {
            let entries = self.listing(dir)?;
            let mut handles = self.dirs.handles.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = handles.get_mut(&fh) {
                h.entries = Some(entries);
            }
        }
        let mut index = index;
        loop {
            let (name, kind) = match index {
                0 => (OsString::from("."), FileKind::Directory),
                1 => (OsString::from(".."), FileKind::Directory),
                _ => {
                    let handles = self.dirs.handles.lock().unwrap_or_else(|e| e.into_inner());
                    let h = handles.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
                    match h.entries.as_ref().and_then(|e| e.get((index - 2) as usize)) {
                        Some(entry) => entry.clone(),
                        None => return Ok(None),
                    }
                }
            };
            match self.resolve_dir_entry(dir, index, &name, kind, plus)? {
                Some(item) => return Ok(Some(item)),
                // The name went away since the listing was taken.
                None => index += 1,
            }
        }
    }

    fn resolve_dir_entry(
        &self,
        dir: u64,
        index: u64,
        name: &OsStr,
        kind: FileKind,
        plus: bool,
    ) -> io::Result<Option<DirItem>> {
        let mut t = self.lock();
        let ino = match index {
            0 => dir,
            1 => t
                .get(dir)?
                .names
                .first()
                .map(|(parent, _)| *parent)
                .unwrap_or(ROOT),
            _ => match self.child(&mut t, dir, name) {
                Ok(Some(ino)) => ino,
                Ok(None) => return Ok(None),
                Err(e) if crate::upper::is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let kind = t.get(ino).map(|n| n.kind).unwrap_or(kind);
        let attr = if plus {
            Some(self.attr(&t, ino)?)
        } else {
            None
        };
        Ok(Some(DirItem {
            index,
            ino,
            name: name.to_os_string(),
            kind,
            attr,
        }))
    }
}
