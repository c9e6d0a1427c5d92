//! Directories of one tree kept open by relative path, so that lookups in a
//! directory do not walk its path from the root again each time.
//!
//! The tree must not change under a cache, or its owner must [`DirCache::clear`]
//! it before and after moving or removing a directory: a cached descriptor
//! follows its directory, not its path.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::fsutil;

/// A bounded cache of open directories of one tree.
#[derive(Debug)]
pub struct DirCache {
    flags: libc::c_int,
    open: Mutex<LruCache<PathBuf, Arc<OwnedFd>>>,
}

impl DirCache {
    /// A cache of up to `capacity` directories, opened with `flags`
    /// (`O_PATH` or `O_RDONLY`; `O_DIRECTORY` is added).
    pub fn new(capacity: usize, flags: libc::c_int) -> DirCache {
        DirCache {
            flags,
            open: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("at least 1"),
            )),
        }
    }

    /// The directory at `rel` inside `root` (`""` is the root), never through a
    /// symlink; from the cache when it is there.
    pub fn open(&self, root: BorrowedFd<'_>, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.lock().get(rel) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(fsutil::open_in_root(
            root,
            rel,
            self.flags | libc::O_DIRECTORY,
            0,
            libc::RESOLVE_NO_SYMLINKS,
        )?);
        self.lock().put(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// Forgets every open directory.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<PathBuf, Arc<OwnedFd>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}
