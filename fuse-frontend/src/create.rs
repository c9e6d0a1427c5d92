//! Creating objects in the merged view: directories, files, device nodes,
//! fifos, symlinks and hard links. Like overlayfs, a new name the upper holds
//! no whiteout for is created right in its upper directory; an object replacing
//! a whiteout is built in the work directory with its final owner, mode and
//! (for a directory) opaque mark, then swapped in in one step.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use drivers::fsutil;
use drivers::layer::FileKind;
use drivers::ownership::{OverrideStat, Target};
use drivers::WhiteoutFormat;
use fuser::FileAttr;

use crate::handles::{Content, IoMode, OpenFile};
use crate::merged::{Caller, Merged};
use crate::nodes::Table;
use crate::sys::errno;

impl Merged {
    /// Checks that `name` can be created in `parent` and prepares the upper
    /// directory for it.
    fn new_slot(&self, t: &mut Table, parent: u64, name: &OsStr) -> io::Result<Slot> {
        let upper = self.upper()?;
        if upper.is_reserved_name(name) {
            // AUFS refuses these names with EINVAL: they would read as whiteouts.
            return Err(errno(libc::EINVAL));
        }
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if self.child(t, parent, name)?.is_some() {
            return Err(errno(libc::EEXIST));
        }
        self.copy_up(t, parent, None)?;
        let dir = upper.dir(&t.path(parent)?)?;
        let over_whiteout = upper.has_whiteout(dir.as_fd(), name)?;
        let parent_attr = self.attr(t, parent)?;
        Ok(Slot {
            dir,
            over_whiteout,
            parent_setgid: u32::from(parent_attr.perm) & libc::S_ISGID != 0,
            parent_gid: self.identity.store_gid(parent_attr.gid).ok(),
        })
    }

    /// Builds object `name` with `make` (given the directory to build in and
    /// the name to build), gives it its owner and mode, and puts it into `slot`;
    /// returns the new node's attributes after counting one lookup.
    ///
    /// Like overlayfs, a name the upper has no whiteout for is created right
    /// where it belongs: nothing else can hold that name, and a crash can leave
    /// at most a brand-new empty object there (with the daemon's owner when it
    /// strikes between creation and `chown`). Over a whiteout the object is built
    /// in the work directory and swapped in, so the whiteout is replaced in one
    /// step (a directory then also gets its opaque mark first).
    fn finish_new(
        &self,
        t: &mut Table,
        parent: u64,
        name: &OsStr,
        slot: &Slot,
        owner: Option<Owner>,
        make: impl FnOnce(BorrowedFd<'_>, &OsStr) -> io::Result<()>,
    ) -> io::Result<(u64, FileAttr)> {
        let upper = self.upper()?;
        let (dir, build_name) = if slot.over_whiteout {
            (upper.work(), upper.temp_name())
        } else {
            (slot.dir.as_fd(), name.to_os_string())
        };
        let mut made = false;
        let result = (|| {
            make(dir, &build_name)?;
            made = true;
            if let Some(owner) = owner {
                let uid = self.identity.store_uid(owner.caller.uid)?;
                let gid = match slot.parent_gid {
                    Some(gid) if slot.parent_setgid => gid,
                    _ => self.identity.store_gid(owner.caller.gid)?,
                };
                let meta = fsutil::stat_at(dir, &build_name)?.ok_or_else(|| errno(libc::ENOENT))?;
                let mut mode = owner.mode & 0o7777;
                if meta.kind == FileKind::Directory && slot.parent_setgid {
                    mode |= libc::S_ISGID;
                }
                let want = OverrideStat {
                    uid,
                    gid,
                    mode,
                    kind: owner.kind.unwrap_or(meta.kind),
                    rdev: owner.rdev,
                };
                upper
                    .ownership()
                    .set(Target::At(dir, &build_name), meta.kind, &want)?;
                if meta.kind == FileKind::Directory && slot.over_whiteout {
                    let fd = fsutil::open_dir_at(dir, &build_name)?;
                    upper.set_opaque(fd.as_fd())?;
                }
            }
            if slot.over_whiteout {
                upper.place(&build_name, slot.dir.as_fd(), name, true)
            } else {
                Ok(())
            }
        })();
        if let Err(e) = result {
            if made {
                let _ = fsutil::remove_tree_at(dir, &build_name);
            }
            return Err(e);
        }
        let ino = self
            .child(t, parent, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let attr = self.attr(t, ino)?;
        t.add_lookups(ino, 1);
        Ok((ino, attr))
    }

    /// Creates a directory.
    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> io::Result<FileAttr> {
        let mut t = self.lock();
        let slot = self.new_slot(&mut t, parent, name)?;
        let (_, attr) = self.finish_new(
            &mut t,
            parent,
            name,
            &slot,
            Some(Owner::new(caller, mode)),
            |dir, tmp| fsutil::mkdir_at(dir, tmp, 0o700),
        )?;
        Ok(attr)
    }

    /// Creates a regular file, fifo, socket or device node.
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> io::Result<FileAttr> {
        let kind = fsutil::kind_from_mode(mode);
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        let mut t = self.lock();
        let slot = self.new_slot(&mut t, parent, name)?;
        let format = self.upper()?.format();
        if kind == FileKind::CharDevice
            && rdev == 0
            && matches!(format, WhiteoutFormat::Overlay { .. })
        {
            // A 0/0 character device is how the upper records deletions.
            return Err(errno(libc::EPERM));
        }
        let ownership = self.upper()?.ownership();
        let (_, attr) = self.finish_new(
            &mut t,
            parent,
            name,
            &slot,
            Some(Owner {
                kind: Some(kind),
                rdev,
                ..Owner::new(caller, mode)
            }),
            |dir, tmp| {
                if kind == FileKind::Regular {
                    fsutil::create_empty_at(dir, tmp, 0o600)
                } else {
                    ownership.make_node(dir, tmp, kind, 0o600, rdev).map(drop)
                }
            },
        )?;
        Ok(attr)
    }

    /// Creates a symlink.
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        caller: Caller,
    ) -> io::Result<FileAttr> {
        let mut t = self.lock();
        let slot = self.new_slot(&mut t, parent, name)?;
        let (_, attr) = self.finish_new(
            &mut t,
            parent,
            name,
            &slot,
            Some(Owner::new(caller, 0o777)),
            |dir, tmp| fsutil::symlink_at(target, dir, tmp),
        )?;
        Ok(attr)
    }

    /// Creates a hard link `new_parent/new_name` to `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> io::Result<FileAttr> {
        let mut t = self.lock();
        if t.get(ino)?.kind == FileKind::Directory {
            return Err(errno(libc::EPERM));
        }
        if t.get(ino)?.names.is_empty() {
            return Err(errno(libc::ENOENT));
        }
        let slot = self.new_slot(&mut t, new_parent, new_name)?;
        self.copy_up(&mut t, ino, None)?;
        let (src_dir, src_name) = self.upper_location(&t, ino)?;
        let (linked, attr) =
            self.finish_new(&mut t, new_parent, new_name, &slot, None, |dir, tmp| {
                fsutil::link_at(src_dir.as_fd(), &src_name, dir, tmp)
            })?;
        debug_assert_eq!(linked, ino);
        Ok(attr)
    }

    /// Creates and opens a regular file; returns its attributes and open handle.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> io::Result<(FileAttr, u64, Arc<OpenFile>)> {
        let mut t = self.lock();
        let slot = self.new_slot(&mut t, parent, name)?;
        let mut opened: Option<File> = None;
        let (ino, attr) = self.finish_new(
            &mut t,
            parent,
            name,
            &slot,
            Some(Owner::new(caller, mode)),
            |dir, tmp| {
                let fd =
                    fsutil::open_at(dir, tmp, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600)?;
                opened = Some(File::from(fd));
                Ok(())
            },
        )?;
        let file = opened.ok_or_else(|| errno(libc::EIO))?;
        let open = OpenFile {
            ino,
            layer: 0,
            content: Content::File(file),
            writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
            mode: Mutex::new(IoMode::Pending),
        };
        t.get_mut(ino)?.opens += 1;
        let fh = self.files.insert(open);
        Ok((attr, fh, self.files.get(fh)?))
    }
}

/// Where a new object goes in the upper.
struct Slot {
    dir: Arc<OwnedFd>,
    over_whiteout: bool,
    parent_setgid: bool,
    /// The parent's stored gid (`None` when no mapping covers it).
    parent_gid: Option<u32>,
}

/// Who creates a new object and the mode and type asked for.
struct Owner {
    caller: Caller,
    mode: u32,
    /// The type asked for, when it may differ from what the store makes (device nodes).
    kind: Option<FileKind>,
    rdev: u64,
}

impl Owner {
    fn new(caller: Caller, mode: u32) -> Owner {
        Owner {
            caller,
            mode,
            kind: None,
            rdev: 0,
        }
    }
}
