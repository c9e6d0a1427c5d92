//! Change detection between two full trees (`docker diff` semantics).
//!
//! [`changes_between`] compares a layer's complete tree with its parent's:
//! `A` for added paths (every path inside an added directory included), `D`
//! for the top of a removed subtree, `C` for a path present in both that
//! differs, and `C` for every existing ancestor directory of a change (the
//! root excepted). Two entries differ when their type, permission bits, owner,
//! device number, symlink target or xattrs differ, or — like docker, without
//! re-reading content — their size or modification time (nanoseconds
//! included). Directories are compared without their size. A file that shares
//! its inode with an added or changed path is reported changed as well, so that
//! diffs can carry the hard link.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::driver::{Change, ChangeKind};
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::{self, join_components, Meta};
use crate::layer::FileKind;
use crate::xattr::XattrTarget;

/// Lists what changed from `parent_dir` (or an empty tree) to `dir`, sorted by path.
pub fn changes_between(parent_dir: Option<&Path>, dir: &Path) -> Result<Vec<Change>> {
    let delta = TreeDelta::compute(parent_dir, dir)?;
    let mut changes: Vec<Change> = delta
        .entries
        .iter()
        .map(|(components, d)| Change {
            path: absolute_path(components),
            kind: d.kind,
        })
        .collect();
    changes.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(changes)
}

/// `/a/b` for components `[a, b]` (non-UTF-8 bytes replaced).
pub(crate) fn absolute_path(components: &[OsString]) -> String {
    let mut s = String::new();
    for c in components {
        s.push('/');
        s.push_str(&c.to_string_lossy());
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// One changed path of a [`TreeDelta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaEntry {
    /// What happened.
    pub kind: ChangeKind,
    /// A deletion reported only because its directory was replaced by a
    /// non-directory (a diff does not need a whiteout for it).
    pub under_replaced: bool,
}

/// The differences between two trees, keyed by path components (canonical order).
#[derive(Debug, Default)]
pub(crate) struct TreeDelta {
    /// Changed paths.
    pub entries: BTreeMap<Vec<OsString>, DeltaEntry>,
    /// Whether the root directory's own metadata differs.
    pub root_changed: bool,
}

impl TreeDelta {
    /// Compares `parent_dir` (an empty tree when `None`) with `dir`.
    pub fn compute(parent_dir: Option<&Path>, dir: &Path) -> Result<TreeDelta> {
        let new_root = fsutil::open_dir(dir).ctx("open layer directory", dir)?;
        let old_root = match parent_dir {
            Some(p) => Some(fsutil::open_dir(p).ctx("open parent directory", p)?),
            None => None,
        };
        let mut walk = Walk {
            old_path: parent_dir.map(Path::to_path_buf),
            new_path: dir.to_path_buf(),
            delta: TreeDelta::default(),
            inode_paths: HashMap::new(),
        };
        walk.delta.root_changed = match &old_root {
            Some(old) => {
                let om = fsutil::stat_fd(old.as_fd()).ctx("stat", parent_dir.unwrap_or(dir))?;
                let nm = fsutil::stat_fd(new_root.as_fd()).ctx("stat", dir)?;
                walk.differ(
                    Side::Fd(old.as_fd()),
                    Side::Fd(new_root.as_fd()),
                    &om,
                    &nm,
                    &[],
                )?
            }
            None => true,
        };
        let mut prefix = Vec::new();
        walk.compare_dirs(
            old_root.as_ref().map(OwnedFd::as_fd),
            Some(new_root.as_fd()),
            &mut prefix,
            false,
        )?;
        walk.mark_link_groups();
        walk.mark_ancestors();
        Ok(walk.delta)
    }
}

/// How to reach an entry for xattr and symlink reads.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// An open directory (the root).
    Fd(BorrowedFd<'a>),
    /// An entry inside an open directory.
    At(BorrowedFd<'a>, &'a OsStr),
}

impl<'a> Side<'a> {
    fn xattr_target(self) -> XattrTarget<'a> {
        match self {
            Side::Fd(fd) => XattrTarget::Fd(fd),
            Side::At(dir, name) => XattrTarget::At(dir, name),
        }
    }
}

struct Walk {
    old_path: Option<std::path::PathBuf>,
    new_path: std::path::PathBuf,
    delta: TreeDelta,
    /// Paths of every multiply-linked non-directory of the new tree, by inode,
    /// with whether one of them was added or changed.
    inode_paths: HashMap<(u64, u64), LinkGroup>,
}

/// The paths of one multiply-linked inode of the new tree.
#[derive(Default)]
struct LinkGroup {
    paths: Vec<Vec<OsString>>,
    /// One of the paths was added or changed.
    touched: bool,
}

impl Walk {
    fn err(
        &self,
        op: &'static str,
        old: bool,
        components: &[OsString],
        e: io::Error,
    ) -> DriverError {
        let base = if old {
            self.old_path.clone().unwrap_or_default()
        } else {
            self.new_path.clone()
        };
        DriverError::Io {
            op,
            path: base.join(join_components(components)),
            source: e,
        }
    }

    fn record(&mut self, path: &[OsString], kind: ChangeKind, under_replaced: bool) {
        self.delta.entries.insert(
            path.to_vec(),
            DeltaEntry {
                kind,
                under_replaced,
            },
        );
    }

    fn note_inode(&mut self, meta: &Meta, path: &[OsString], changed: bool) {
        if meta.is_dir() || meta.nlink < 2 {
            return;
        }
        let group = self.inode_paths.entry((meta.dev, meta.ino)).or_default();
        group.paths.push(path.to_vec());
        group.touched |= changed;
    }

    /// Compares the children of two directories (either may be absent).
    fn compare_dirs(
        &mut self,
        old: Option<BorrowedFd<'_>>,
        new: Option<BorrowedFd<'_>>,
        prefix: &mut Vec<OsString>,
        under_replaced: bool,
    ) -> Result<()> {
        let old_names = match old {
            Some(fd) => fsutil::read_dir_names(fd)
                .map_err(|e| self.err("read directory", true, prefix, e))?,
            None => Vec::new(),
        };
        let new_names = match new {
            Some(fd) => fsutil::read_dir_names(fd)
                .map_err(|e| self.err("read directory", false, prefix, e))?,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < old_names.len() || j < new_names.len() {
            let order = match (old_names.get(i), new_names.get(j)) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    prefix.push(old_names[i].clone());
                    self.record(prefix, ChangeKind::Deleted, under_replaced);
                    prefix.pop();
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let name = &new_names[j];
                    prefix.push(name.clone());
                    self.added(new.expect("names come from it"), name, prefix)?;
                    prefix.pop();
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &new_names[j];
                    prefix.push(name.clone());
                    self.compare_entry(
                        old.expect("names come from it"),
                        new.expect("names come from it"),
                        name,
                        prefix,
                    )?;
                    prefix.pop();
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// `path` exists only in the new tree: it and everything below it is added.
    fn added(
        &mut self,
        new_dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &mut Vec<OsString>,
    ) -> Result<()> {
        let Some(meta) =
            fsutil::stat_at(new_dir, name).map_err(|e| self.err("stat", false, path, e))?
        else {
            return Ok(());
        };
        self.record(path, ChangeKind::Added, false);
        self.note_inode(&meta, path, true);
        if meta.is_dir() {
            let sub = fsutil::open_dir_at(new_dir, name)
                .map_err(|e| self.err("open directory", false, path, e))?;
            self.compare_dirs(None, Some(sub.as_fd()), path, false)?;
        }
        Ok(())
    }

    /// `path` exists in both trees.
    fn compare_entry(
        &mut self,
        old_dir: BorrowedFd<'_>,
        new_dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &mut Vec<OsString>,
    ) -> Result<()> {
        let om = fsutil::stat_at(old_dir, name).map_err(|e| self.err("stat", true, path, e))?;
        let nm = fsutil::stat_at(new_dir, name).map_err(|e| self.err("stat", false, path, e))?;
        let (om, nm) = match (om, nm) {
            (Some(o), Some(n)) => (o, n),
            (None, Some(_)) => return self.added(new_dir, name, path),
            (Some(_), None) => {
                self.record(path, ChangeKind::Deleted, false);
                return Ok(());
            }
            (None, None) => return Ok(()),
        };
        let changed = self.differ(
            Side::At(old_dir, name),
            Side::At(new_dir, name),
            &om,
            &nm,
            path,
        )?;
        if changed {
            self.record(path, ChangeKind::Modified, false);
        }
        self.note_inode(&nm, path, changed);
        if om.is_dir() || nm.is_dir() {
            let old_sub = if om.is_dir() {
                Some(
                    fsutil::open_dir_at(old_dir, name)
                        .map_err(|e| self.err("open directory", true, path, e))?,
                )
            } else {
                None
            };
            let new_sub = if nm.is_dir() {
                Some(
                    fsutil::open_dir_at(new_dir, name)
                        .map_err(|e| self.err("open directory", false, path, e))?,
                )
            } else {
                None
            };
            let replaced = !nm.is_dir();
            self.compare_dirs(
                old_sub.as_ref().map(OwnedFd::as_fd),
                new_sub.as_ref().map(OwnedFd::as_fd),
                path,
                replaced,
            )?;
        }
        Ok(())
    }

    /// Whether two entries of the same path differ.
    fn differ(
        &self,
        old: Side<'_>,
        new: Side<'_>,
        om: &Meta,
        nm: &Meta,
        path: &[OsString],
    ) -> Result<bool> {
        if om.kind != nm.kind || om.mode != nm.mode || om.uid != nm.uid || om.gid != nm.gid {
            return Ok(true);
        }
        if om.mtime != nm.mtime || om.mtime_nsec != nm.mtime_nsec {
            return Ok(true);
        }
        match nm.kind {
            FileKind::Directory => {}
            FileKind::CharDevice | FileKind::BlockDevice => {
                if om.rdev != nm.rdev {
                    return Ok(true);
                }
            }
            _ => {
                if om.size != nm.size {
                    return Ok(true);
                }
            }
        }
        if nm.kind == FileKind::Symlink {
            if let (Side::At(od, on), Side::At(nd, nn)) = (old, new) {
                let ot =
                    fsutil::readlink_at(od, on).map_err(|e| self.err("readlink", true, path, e))?;
                let nt = fsutil::readlink_at(nd, nn)
                    .map_err(|e| self.err("readlink", false, path, e))?;
                if ot != nt {
                    return Ok(true);
                }
            }
        }
        let ox = old
            .xattr_target()
            .list()
            .map_err(|e| self.err("list xattrs", true, path, e))?;
        let nx = new
            .xattr_target()
            .list()
            .map_err(|e| self.err("list xattrs", false, path, e))?;
        Ok(ox != nx)
    }

    /// Marks every path sharing an inode with an added or changed path as changed.
    fn mark_link_groups(&mut self) {
        let groups: Vec<Vec<Vec<OsString>>> = self
            .inode_paths
            .drain()
            .filter(|(_, group)| group.touched)
            .map(|(_, group)| group.paths)
            .collect();
        for paths in groups {
            for path in paths {
                self.delta.entries.entry(path).or_insert(DeltaEntry {
                    kind: ChangeKind::Modified,
                    under_replaced: false,
                });
            }
        }
    }

    /// Reports every ancestor directory of a change (the root excepted) as changed.
    fn mark_ancestors(&mut self) {
        let mut seen: HashSet<&[OsString]> = HashSet::new();
        let mut missing: Vec<Vec<OsString>> = Vec::new();
        for path in self.delta.entries.keys() {
            for depth in (1..path.len()).rev() {
                let ancestor = &path[..depth];
                if !seen.insert(ancestor) {
                    break;
                }
                if !self.delta.entries.contains_key(ancestor) {
                    missing.push(ancestor.to_vec());
                }
            }
        }
        for a in missing {
            self.delta.entries.insert(
                a,
                DeltaEntry {
                    kind: ChangeKind::Modified,
                    under_replaced: false,
                },
            );
        }
    }
}
