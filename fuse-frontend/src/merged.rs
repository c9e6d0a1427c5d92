//! The merged filesystem, independent of the FUSE protocol (which `fs` adapts
//! to): its layers, upper directory and inode table, name resolution,
//! attributes and the operations on the filesystem as a whole. The other
//! operations live beside it: `create`, `remove`, `rename`, `data`, `xattrs`,
//! `dirs` and `copy_up`.
//!
//! One lock guards the inode table and every change to the upper directory, so
//! metadata operations are serialised; file data moves without it (and mostly
//! without the daemon at all, through passthrough).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use drivers::dircache::DirCache;
use drivers::dirlayer::DirLayer;
use drivers::fsutil;
use drivers::layer::{FileKind, LayerReader};
use drivers::ownership::Target;
use drivers::WhiteoutFormat;
use fuser::FileAttr;

use crate::attr;
use crate::dirs::Dirs;
use crate::handles::Files;
use crate::ids::Identity;
use crate::layers::Layers;
use crate::nodes::{Table, ROOT};
use crate::stats::Counters;
use crate::sys::{self, errno, TimeSpec};
use crate::upper::{read_only, Upper, DIR_CACHE};

/// The user asking for a new object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The attribute changes of one `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSpec>,
    /// New modification time.
    pub mtime: Option<TimeSpec>,
}

/// The hard-link groups of one layer: its inode number to the paths linking it.
pub(crate) type AliasIndex = HashMap<u64, Vec<PathBuf>>;

/// The merged filesystem of one mount.
pub(crate) struct Merged {
    pub(crate) layers: Layers,
    pub(crate) upper: Option<Upper>,
    table: Mutex<Table>,
    pub(crate) files: Files,
    pub(crate) dirs: Dirs,
    pub(crate) aliases: Mutex<HashMap<usize, Arc<AliasIndex>>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) identity: Identity,
}

impl Merged {
    /// Builds the merged view of `lowers` (top first) and an optional upper
    /// directory with its work directory, whose whiteouts are in `format`;
    /// owners are stored and presented as `identity` says.
    pub fn new(
        lowers: Vec<Arc<dyn LayerReader>>,
        upper: Option<(PathBuf, PathBuf)>,
        format: WhiteoutFormat,
        identity: Identity,
    ) -> io::Result<Merged> {
        let ownership = identity.ownership;
        let (upper, upper_reader) = match upper {
            Some((dir, work)) => {
                // One cache of open upper directories, forgotten whenever one moves or goes.
                let dirs = Arc::new(DirCache::new(DIR_CACHE, libc::O_RDONLY));
                let reader: Arc<dyn LayerReader> = Arc::new(
                    DirLayer::open_as(&dir, format, ownership)?.with_dir_cache(dirs.clone()),
                );
                (
                    Some(Upper::open(&dir, &work, format, ownership, dirs)?),
                    Some(reader),
                )
            }
            None => (None, None),
        };
        if upper.is_none() && lowers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a stack needs at least one layer or an upper directory",
            ));
        }
        let layers = Layers::new(upper_reader, lowers);
        let root = layers.root()?;
        Ok(Merged {
            layers,
            upper,
            table: Mutex::new(Table::new(root.layers, root.entry)),
            files: Files::default(),
            dirs: Dirs::default(),
            aliases: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
            identity,
        })
    }

    /// Forgets every cached upper directory: called before a directory of the
    /// upper is removed or moved (rmdir, rename).
    pub(crate) fn forget_upper_dirs(&self) {
        if let Some(upper) = &self.upper {
            upper.forget_dirs();
        }
    }

    /// Marks the start of an operation that removes or moves upper directories
    /// (taken with the table lock held): cached directories are forgotten now
    /// and again when the returned guard drops, since the operation may itself
    /// have opened one at a path it then changed.
    pub(crate) fn upper_dirs_change(&self) -> UpperDirsChange<'_> {
        self.forget_upper_dirs();
        UpperDirsChange(self)
    }

    /// Whether writes are possible.
    pub fn writable(&self) -> bool {
        self.upper.is_some()
    }

    /// Takes the lock of the inode table (and of changes to the upper).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upper directory, `EROFS` for a read-only stack.
    pub(crate) fn upper(&self) -> io::Result<&Upper> {
        self.upper.as_ref().ok_or_else(read_only)
    }

    /// Whether the node's topmost layer is the upper.
    pub(crate) fn in_upper(&self, t: &Table, ino: u64) -> io::Result<bool> {
        Ok(t.get(ino)?
            .layers
            .first()
            .is_some_and(|&l| self.layers.is_upper(l)))
    }

    /// The kind of `ino` (or, with `name`, of that child of directory `ino`)
    /// when it surely lives in the upper, so changing it copies nothing up
    /// (renaming a directory still may: lower layers can merge into it).
    /// Never waits: `None` when the table is busy, the node unknown or lower.
    pub(crate) fn kind_in_upper(&self, ino: u64, name: Option<&OsStr>) -> Option<FileKind> {
        let t = self.table.try_lock().ok()?;
        let ino = match name {
            None => ino,
            Some(name) => *t.get(ino).ok()?.children.get(name)?,
        };
        let node = t.get(ino).ok()?;
        let upper = node
            .layers
            .first()
            .is_some_and(|&l| self.layers.is_upper(l));
        upper.then_some(node.kind)
    }

    /// The open upper directory holding `ino` and its name there (`""` and the
    /// root itself for the root).
    pub(crate) fn upper_location(
        &self,
        t: &Table,
        ino: u64,
    ) -> io::Result<(Arc<OwnedFd>, OsString)> {
        let upper = self.upper()?;
        if ino == ROOT {
            return Ok((upper.dir(Path::new(""))?, OsString::new()));
        }
        let (parent, name) = t
            .get(ino)?
            .names
            .first()
            .cloned()
            .ok_or_else(|| errno(libc::ENOENT))?;
        Ok((upper.dir(&t.path(parent)?)?, name))
    }

    /// The child `name` of directory `parent`, resolved through the layers when
    /// the table does not know it yet. Does not count a kernel lookup.
    pub(crate) fn child(
        &self,
        t: &mut Table,
        parent: u64,
        name: &OsStr,
    ) -> io::Result<Option<u64>> {
        if let Some(ino) = t.child(parent, name) {
            return Ok(Some(ino));
        }
        let pnode = t.get(parent)?;
        if pnode.kind != FileKind::Directory {
            return Err(errno(libc::ENOTDIR));
        }
        let parent_layers = pnode.layers.clone();
        let path = t.child_path(parent, name)?;
        let Some(found) = self.layers.resolve(&parent_layers, &path)? else {
            return Ok(None);
        };
        let ino = if found.kind == FileKind::Directory {
            t.insert(found.kind, found.layers, found.entry)
        } else {
            let (layer, layer_ino) = (found.layers[0], found.entry.ino);
            match t.by_identity(layer, layer_ino) {
                Some(ino) if t.get(ino)?.kind == found.kind => ino,
                _ => {
                    let ino = t.insert(found.kind, found.layers, found.entry);
                    t.add_identity(ino, layer, layer_ino);
                    ino
                }
            }
        };
        t.link(ino, parent, name)?;
        Ok(Some(ino))
    }

    /// The node at merged path `path`, resolving every component.
    pub(crate) fn lookup_path(&self, t: &mut Table, path: &Path) -> io::Result<Option<u64>> {
        let mut cur = ROOT;
        for component in path.iter() {
            match self.child(t, cur, component)? {
                Some(ino) => cur = ino,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The attributes of `ino`.
    pub(crate) fn attr(&self, t: &Table, ino: u64) -> io::Result<FileAttr> {
        let node = t.get(ino)?;
        let mut attr = if self.in_upper(t, ino)? {
            let (dir, name) = self.upper_location(t, ino)?;
            let st = sys::stat_at(dir.as_fd(), &name)?;
            let mut attr = attr::from_stat(ino, &st, node.kind);
            self.identity
                .present_stored(Target::of(dir.as_fd(), &name), &st, &mut attr)?;
            attr
        } else {
            attr::from_entry(ino, &node.entry)
        };
        self.identity.to_host(&mut attr);
        if node.kind == FileKind::Directory && node.layers.len() > 1 {
            // Like overlayfs: counting subdirectories of a merged directory is not worth it.
            attr.nlink = 1;
        }
        Ok(attr)
    }

    /// Looks `name` up in `parent`, counting one kernel lookup.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<FileAttr> {
        let mut t = self.lock();
        let ino = self
            .child(&mut t, parent, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let attr = self.attr(&t, ino)?;
        t.add_lookups(ino, 1);
        Ok(attr)
    }

    /// Counts `n` more kernel lookups of `ino` (entries of `readdirplus`).
    pub fn add_lookup(&self, ino: u64) {
        self.lock().add_lookups(ino, 1);
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.lock().forget(ino, n);
    }

    /// The attributes of `ino` (through open file `fh` when the inode is deleted).
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> io::Result<FileAttr> {
        let t = self.lock();
        let node = t.get(ino)?;
        if ino == ROOT || !node.names.is_empty() {
            return self.attr(&t, ino);
        }
        let kind = node.kind;
        let entry = node.entry.clone();
        let open = fh
            .and_then(|fh| self.files.get(fh).ok())
            .or_else(|| self.files.any_file_of(ino));
        let mut attr = match open.as_ref().and_then(|h| h.file()) {
            Some(file) => {
                let st = sys::stat_fd(file.as_fd())?;
                let mut attr = attr::from_stat(ino, &st, kind);
                self.identity
                    .present_stored(Target::Fd(file.as_fd()), &st, &mut attr)?;
                attr
            }
            None => {
                let mut attr = attr::from_entry(ino, &entry);
                attr.nlink = 0;
                attr
            }
        };
        self.identity.to_host(&mut attr);
        Ok(attr)
    }

    /// Changes attributes of `ino`, copying it up first.
    pub fn setattr(&self, ino: u64, changes: SetAttr, fh: Option<u64>) -> io::Result<FileAttr> {
        self.upper()?;
        let changes = self.stored_ids(changes)?;
        let mut t = self.lock();
        let deleted = ino != ROOT && t.get(ino)?.names.is_empty();
        if deleted {
            return self.setattr_deleted(&t, ino, changes, fh);
        }
        let kind = t.get(ino)?.kind;
        if changes.size.is_some() && kind == FileKind::Directory {
            return Err(errno(libc::EISDIR));
        }
        if self.copy_up_with(&mut t, ino, changes.size, Some(&changes))? {
            // The copy has the new size (its data was copied only that far) and
            // the new owner, mode and times already.
            return self.attr(&t, ino);
        }
        let (dir, name) = self.upper_location(&t, ino)?;
        if let Some(size) = changes.size {
            let handle = fh.and_then(|fh| self.files.get(fh).ok());
            match handle.as_ref().and_then(|h| h.writable_file().ok()) {
                Some(file) if handle.as_ref().is_some_and(|h| h.layer == 0) => {
                    file.set_len(size)?
                }
                _ => {
                    let fd =
                        fsutil::open_at(dir.as_fd(), &name, libc::O_WRONLY | libc::O_NONBLOCK, 0)?;
                    File::from(fd).set_len(size)?;
                }
            }
        }
        crate::copy_up::apply_changes(
            self.upper()?.ownership(),
            dir.as_fd(),
            &name,
            kind,
            &changes,
        )?;
        self.attr(&t, ino)
    }

    /// `setattr` of an unlinked file, through one of its open descriptors.
    fn setattr_deleted(
        &self,
        t: &Table,
        ino: u64,
        changes: SetAttr,
        fh: Option<u64>,
    ) -> io::Result<FileAttr> {
        let kind = t.get(ino)?.kind;
        let open = fh
            .and_then(|fh| self.files.get(fh).ok())
            .or_else(|| self.files.any_file_of(ino))
            .filter(|h| h.layer == 0)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let file = open.file().ok_or_else(|| errno(libc::ENOENT))?;
        if let Some(size) = changes.size {
            open.writable_file()?.set_len(size)?;
        }
        let fd = file.as_fd();
        self.upper()?
            .ownership()
            .change(Target::Fd(fd), changes.uid, changes.gid, changes.mode)?;
        if changes.atime.is_some() || changes.mtime.is_some() {
            sys::set_times_at(
                fd,
                OsStr::new(""),
                changes.atime.unwrap_or(TimeSpec::Omit),
                changes.mtime.unwrap_or(TimeSpec::Omit),
            )?;
        }
        let st = sys::stat_fd(fd)?;
        let mut attr = attr::from_stat(ino, &st, kind);
        self.identity
            .present_stored(Target::Fd(fd), &st, &mut attr)?;
        self.identity.to_host(&mut attr);
        Ok(attr)
    }

    /// `changes` with the owner it sets turned into stored ids.
    fn stored_ids(&self, mut changes: SetAttr) -> io::Result<SetAttr> {
        changes.uid = changes
            .uid
            .map(|u| self.identity.store_uid(u))
            .transpose()?;
        changes.gid = changes
            .gid
            .map(|g| self.identity.store_gid(g))
            .transpose()?;
        Ok(changes)
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> io::Result<OsString> {
        let t = self.lock();
        let node = t.get(ino)?;
        if node.kind != FileKind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        if self.in_upper(&t, ino)? {
            let (dir, name) = self.upper_location(&t, ino)?;
            fsutil::readlink_at(dir.as_fd(), &name)
        } else {
            let layer = node.layers[0];
            let path = t.path(ino)?;
            self.layers.reader(layer).readlink(&path)
        }
    }

    /// Statistics of the filesystem holding the upper (or the top layer).
    pub fn statfs(&self) -> io::Result<libc::statvfs> {
        if let Some(upper) = &self.upper {
            return sys::statvfs_fd(upper.root());
        }
        for index in 0..self.layers.count() {
            if let Some(dir) = self.layers.reader(index).directory() {
                let fd = fsutil::open_dir(dir)?;
                return sys::statvfs_fd(fd.as_fd());
            }
        }
        // SAFETY: statvfs is plain old data; all zero is a valid (empty) value.
        Ok(unsafe { std::mem::zeroed() })
    }

    /// Whether `caller` may access `ino` with `mask` (`R_OK`, `W_OK`, `X_OK`, `F_OK`).
    pub fn access(&self, ino: u64, mask: i32, caller: Caller) -> io::Result<()> {
        let t = self.lock();
        let attr = self.attr(&t, ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 && self.upper.is_none() {
            return Err(errno(libc::EROFS));
        }
        let perm = u32::from(attr.perm);
        if caller.uid == 0 {
            let any_exec = perm & 0o111 != 0 || attr.kind == fuser::FileType::Directory;
            return if mask & libc::X_OK != 0 && !any_exec {
                Err(errno(libc::EACCES))
            } else {
                Ok(())
            };
        }
        let bits = if caller.uid == attr.uid {
            perm >> 6
        } else if caller.gid == attr.gid {
            perm >> 3
        } else {
            perm
        } & 0o7;
        let want = (if mask & libc::R_OK != 0 { 4 } else { 0 })
            | (if mask & libc::W_OK != 0 { 2 } else { 0 })
            | (if mask & libc::X_OK != 0 { 1 } else { 0 });
        if bits & want == want {
            Ok(())
        } else {
            Err(errno(libc::EACCES))
        }
    }

    /// Flushes directory `ino` of the upper to stable storage.
    pub fn fsyncdir(&self, ino: u64) -> io::Result<()> {
        let volatile = self.upper.as_ref().is_none_or(|u| u.is_volatile());
        let (dir, name) = {
            let t = self.lock();
            if volatile || !self.in_upper(&t, ino)? {
                return Ok(());
            }
            self.upper_location(&t, ino)?
        };
        // Synced without the table: other requests go on meanwhile.
        if name.is_empty() {
            return nix::unistd::fsync(dir.as_raw_fd()).map_err(io::Error::from);
        }
        File::from(fsutil::open_dir_at(dir.as_fd(), &name)?).sync_all()
    }
}

/// Forgets the cached upper directories when dropped (see [`Merged::upper_dirs_change`]).
pub(crate) struct UpperDirsChange<'a>(&'a Merged);

impl Drop for UpperDirsChange<'_> {
    fn drop(&mut self) {
        self.0.forget_upper_dirs();
    }
}
