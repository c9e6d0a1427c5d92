//! Layer diff production: the OCI layer tar that turns a parent into a layer.
//!
//! A [`DiffPlan`] lists what the tar carries, in canonical order: depth first,
//! siblings sorted by the bytes of their name, a directory before its children,
//! whiteout markers (`.wh.NAME`, `.wh..wh..opq`) sorted among their siblings by
//! the marker's name. Every ancestor directory of an entry is part of the plan.
//! A plan comes from a *change source*: [`DiffPlan::from_trees`] compares two
//! full trees (vfs), [`DiffPlan::from_layer_dir`] walks a layer directory that
//! records its own whiteouts (an overlay upper or an AUFS branch).
//! [`write_plan`] then streams the tar, reading every entry from a source
//! directory.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::changes::TreeDelta;
use crate::driver::ChangeKind;
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::{self, join_components, Meta};
use crate::layer::{FileKind, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};
use crate::mount::WhiteoutFormat;
use crate::whiteouts;
use crate::xattr::{self, XattrTarget};

/// What a diff records at one path of a [`DiffPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffAction {
    /// The entry at this path is written in full from the source directory.
    Entry,
    /// A `.wh.NAME` marker: `NAME` is deleted (the plan's key is the marker's path).
    Whiteout,
    /// A `.wh..wh..opq` marker: the directory holding it hides the layers below.
    Opaque,
}

/// The entries of a layer diff, in canonical tar order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffPlan {
    items: BTreeMap<Vec<OsString>, DiffAction>,
}

impl DiffPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the entry at `path` (components relative to the root) and its ancestor directories.
    pub fn add_entry(&mut self, path: &[OsString]) {
        self.add_ancestors(path);
        self.items.insert(path.to_vec(), DiffAction::Entry);
    }

    /// Records that `path` is deleted (a `.wh.` marker next to it) and adds its ancestors.
    /// An empty `path` (the root cannot be deleted) is ignored.
    pub fn add_whiteout(&mut self, path: &[OsString]) {
        let Some((name, parent)) = path.split_last() else {
            return;
        };
        self.add_ancestors(path);
        let mut marker = OsString::from(OCI_WHITEOUT_PREFIX);
        marker.push(name);
        let mut key = parent.to_vec();
        key.push(marker);
        self.items.insert(key, DiffAction::Whiteout);
    }

    /// Records that directory `dir` is opaque; the directory and its ancestors are added too.
    pub fn add_opaque(&mut self, dir: &[OsString]) {
        if !dir.is_empty() {
            self.add_entry(dir);
        }
        let mut key = dir.to_vec();
        key.push(OsString::from(OCI_OPAQUE));
        self.items.insert(key, DiffAction::Opaque);
    }

    /// Turns directory `dir` into an opaque one: whatever the plan held below it
    /// (entries and whiteouts) is replaced by the opaque marker and an entry for
    /// every path in `below` (the directory's whole new content).
    pub fn make_opaque(
        &mut self,
        dir: &[OsString],
        below: impl IntoIterator<Item = Vec<OsString>>,
    ) {
        let doomed: Vec<Vec<OsString>> = self
            .items
            .range(dir.to_vec()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(dir))
            .filter(|k| k.len() > dir.len())
            .cloned()
            .collect();
        for k in doomed {
            self.items.remove(&k);
        }
        self.add_opaque(dir);
        for path in below {
            self.add_entry(&path);
        }
    }

    /// Adds an entry for the root directory itself (`./`), carrying its metadata.
    pub fn include_root(&mut self) {
        self.items.insert(Vec::new(), DiffAction::Entry);
    }

    fn add_ancestors(&mut self, path: &[OsString]) {
        for depth in (1..path.len()).rev() {
            if self.items.contains_key(&path[..depth]) {
                break;
            }
            self.items.insert(path[..depth].to_vec(), DiffAction::Entry);
        }
    }

    /// The planned paths with their actions, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&[OsString], DiffAction)> + '_ {
        self.items.iter().map(|(k, v)| (k.as_slice(), *v))
    }

    /// Number of tar entries the plan produces.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the plan produces no entries.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The plan turning the full tree `parent_dir` (an empty tree when `None`)
    /// into the full tree `dir`: added and changed paths as entries, deleted
    /// paths as whiteouts, and the root (`./`) whenever anything changed.
    pub fn from_trees(parent_dir: Option<&Path>, dir: &Path) -> Result<DiffPlan> {
        let delta = TreeDelta::compute(parent_dir, dir)?;
        let mut plan = DiffPlan::new();
        // The root is the ancestor of every change: applying the changes alters its
        // times, so it is carried whenever anything changed.
        if delta.root_changed || !delta.entries.is_empty() {
            plan.include_root();
        }
        for (path, entry) in &delta.entries {
            match entry.kind {
                ChangeKind::Added | ChangeKind::Modified => plan.add_entry(path),
                // Replacing the directory by a non-directory removes its children already.
                ChangeKind::Deleted if entry.under_replaced => {}
                ChangeKind::Deleted => plan.add_whiteout(path),
            }
        }
        Ok(plan)
    }

    /// The plan of a layer directory holding only the layer's own changes, its
    /// deletions stored in `format` (overlay: 0/0 character devices and the
    /// `overlay.opaque` xattr; AUFS: `.wh.` files). With [`WhiteoutFormat::None`]
    /// every entry is written. The root directory is not included.
    pub fn from_layer_dir(dir: &Path, format: WhiteoutFormat) -> Result<DiffPlan> {
        let fd = fsutil::open_dir(dir).ctx("open layer directory", dir)?;
        let mut plan = DiffPlan::new();
        let mut prefix = Vec::new();
        walk_layer_dir(dir, fd.as_fd(), &mut prefix, format, &mut plan)?;
        Ok(plan)
    }
}

fn walk_layer_dir(
    root: &Path,
    dir: BorrowedFd<'_>,
    prefix: &mut Vec<OsString>,
    format: WhiteoutFormat,
    plan: &mut DiffPlan,
) -> Result<()> {
    let here = root.join(join_components(prefix));
    let names = fsutil::read_dir_names(dir).ctx("read directory", &here)?;
    for name in names {
        let bytes = name.as_bytes();
        if format == WhiteoutFormat::Aufs && bytes.starts_with(OCI_WHITEOUT_PREFIX.as_bytes()) {
            if bytes == OCI_OPAQUE.as_bytes() {
                plan.add_opaque(prefix);
            } else if !bytes.starts_with(b".wh..wh.") {
                prefix.push(OsStr::from_bytes(&bytes[OCI_WHITEOUT_PREFIX.len()..]).to_os_string());
                plan.add_whiteout(prefix);
                prefix.pop();
            }
            continue;
        }
        let child = here.join(&name);
        let Some(meta) = fsutil::stat_at(dir, &name).ctx("stat", &child)? else {
            continue;
        };
        prefix.push(name.clone());
        let whiteout = match format {
            WhiteoutFormat::Overlay { userxattr } => {
                whiteouts::is_whiteout_at(dir, &name, &meta, userxattr)
                    .ctx("read whiteout xattr", &child)?
            }
            _ => false,
        };
        if whiteout {
            plan.add_whiteout(prefix);
        } else if meta.is_dir() {
            plan.add_entry(prefix);
            let sub = fsutil::open_dir_at(dir, &name).ctx("open directory", &child)?;
            if let WhiteoutFormat::Overlay { userxattr } = format {
                let opaque = XattrTarget::Fd(sub.as_fd())
                    .get(xattr::overlay_opaque_xattr(userxattr))
                    .ctx("read opaque xattr", &child)?;
                if opaque.as_deref() == Some(b"y") {
                    plan.add_opaque(prefix);
                }
            }
            walk_layer_dir(root, sub.as_fd(), prefix, format, plan)?;
        } else {
            plan.add_entry(prefix);
        }
        prefix.pop();
    }
    Ok(())
}

/// What [`write_plan`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (whiteout markers included).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Writes the OCI layer tar turning `parent_dir` (an empty tree when `None`) into `dir`.
pub fn write_layer_diff(
    parent_dir: Option<&Path>,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<DiffStats> {
    let plan = DiffPlan::from_trees(parent_dir, dir)?;
    write_plan(dir, &plan, out)
}

/// Bytes of regular-file content [`write_layer_diff`] would write.
pub fn diff_size(parent_dir: Option<&Path>, dir: &Path) -> Result<u64> {
    let plan = DiffPlan::from_trees(parent_dir, dir)?;
    plan_size(dir, &plan)
}

/// Bytes of regular-file content `plan` carries, reading sizes from `source`
/// (hard links after the first are free).
pub fn plan_size(source: &Path, plan: &DiffPlan) -> Result<u64> {
    let mut reader = SourceTree::open(source)?;
    let mut seen = HashMap::new();
    let mut total = 0;
    for (path, action) in plan.iter() {
        if action != DiffAction::Entry || path.is_empty() {
            continue;
        }
        let meta = reader.stat(path)?;
        if meta.kind != FileKind::Regular {
            continue;
        }
        if meta.nlink > 1 && seen.insert((meta.dev, meta.ino), ()).is_some() {
            continue;
        }
        total += meta.size;
    }
    Ok(total)
}

/// Streams the tar described by `plan`, reading entries from directory `source`.
pub fn write_plan(source: &Path, plan: &DiffPlan, out: &mut dyn Write) -> Result<DiffStats> {
    let mut writer = DiffWriter {
        tree: SourceTree::open(source)?,
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        stats: DiffStats::default(),
    };
    for (path, action) in plan.iter() {
        match action {
            DiffAction::Entry => writer.write_entry(path)?,
            DiffAction::Whiteout | DiffAction::Opaque => writer.write_marker(path)?,
        }
    }
    writer.builder.finish().ctx("write layer tar", source)?;
    debug!(source = %source.display(), entries = writer.stats.entries, bytes = writer.stats.bytes, "wrote layer diff");
    Ok(writer.stats)
}

/// Read access to the directory a diff's entries come from.
struct SourceTree {
    path: PathBuf,
    root: OwnedFd,
    parent_cache: Option<(Vec<OsString>, OwnedFd)>,
}

impl SourceTree {
    fn open(path: &Path) -> Result<SourceTree> {
        Ok(SourceTree {
            path: path.to_path_buf(),
            root: fsutil::open_dir(path).ctx("open layer directory", path)?,
            parent_cache: None,
        })
    }

    fn full(&self, path: &[OsString]) -> PathBuf {
        self.path.join(join_components(path))
    }

    /// The open parent directory of `path` (non-empty).
    fn parent(&mut self, path: &[OsString]) -> Result<BorrowedFd<'_>> {
        let parent = &path[..path.len() - 1];
        let hit = matches!(&self.parent_cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = fsutil::open_in_root(
                self.root.as_fd(),
                &join_components(parent),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
                libc::RESOLVE_NO_SYMLINKS,
            )
            .ctx("open directory", self.full(parent))?;
            self.parent_cache = Some((parent.to_vec(), fd));
        }
        Ok(self.parent_cache.as_ref().expect("just filled").1.as_fd())
    }

    /// Metadata of `path` (the root when empty).
    fn stat(&mut self, path: &[OsString]) -> Result<Meta> {
        if path.is_empty() {
            return fsutil::stat_fd(self.root.as_fd()).ctx("stat", &self.path);
        }
        let full = self.full(path);
        let name = path.last().expect("non-empty").clone();
        let pfd = self.parent(path)?;
        let meta = fsutil::stat_at(pfd, &name)
            .ctx("stat", &full)?
            .ok_or_else(|| DriverError::Io {
                op: "export",
                path: full.clone(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "vanished while the diff was written",
                ),
            })?;
        Ok(meta)
    }
}

struct DiffWriter<'w> {
    tree: SourceTree,
    builder: tar::Builder<&'w mut dyn Write>,
    /// Tar path of the first entry of every multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: DiffStats,
}

/// The tar path of `components`: `a/b`, `a/b/` for directories, `./` for the root.
fn tar_path(components: &[OsString], dir: bool) -> Vec<u8> {
    if components.is_empty() {
        return b"./".to_vec();
    }
    let mut out = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_bytes());
    }
    if dir {
        out.push(b'/');
    }
    out
}

const USTAR_NAME: usize = 100;
const USTAR_PREFIX: usize = 155;
const USTAR_ID_MAX: u64 = 0o7_777_777;
const USTAR_NUM12_MAX: u64 = 0o77_777_777_777;

/// Builds ustar headers, moving what ustar cannot hold into PAX records.
struct HeaderBuilder {
    header: tar::Header,
    pax: Vec<(String, Vec<u8>)>,
}

impl HeaderBuilder {
    fn new(kind: tar::EntryType, path: &[u8]) -> HeaderBuilder {
        let mut b = HeaderBuilder {
            header: tar::Header::new_ustar(),
            pax: Vec::new(),
        };
        b.header.set_entry_type(kind);
        b.set_path(path);
        b
    }

    fn set_path(&mut self, path: &[u8]) {
        let ustar = self.header.as_ustar_mut().expect("ustar header");
        if path.len() <= USTAR_NAME {
            ustar.name[..path.len()].copy_from_slice(path);
            return;
        }
        let split = path.iter().enumerate().position(|(i, b)| {
            *b == b'/'
                && i <= USTAR_PREFIX
                && path.len() - i - 1 <= USTAR_NAME
                && path.len() - i - 1 > 0
        });
        match split {
            Some(i) => {
                ustar.prefix[..i].copy_from_slice(&path[..i]);
                ustar.name[..path.len() - i - 1].copy_from_slice(&path[i + 1..]);
            }
            None => {
                ustar.name.copy_from_slice(&path[..USTAR_NAME]);
                self.pax.push(("path".into(), path.to_vec()));
            }
        }
    }

    fn set_link(&mut self, target: &[u8]) {
        let ustar = self.header.as_ustar_mut().expect("ustar header");
        if target.len() <= USTAR_NAME {
            ustar.linkname[..target.len()].copy_from_slice(target);
        } else {
            ustar.linkname.copy_from_slice(&target[..USTAR_NAME]);
            self.pax.push(("linkpath".into(), target.to_vec()));
        }
    }

    fn set_meta(&mut self, mode: u32, uid: u32, gid: u32, mtime: i64, mtime_nsec: u32) {
        self.header.set_mode(mode & 0o7777);
        if (mtime as u64) <= USTAR_NUM12_MAX && mtime >= 0 {
            self.header.set_mtime(mtime as u64);
        } else {
            self.header.set_mtime(0);
        }
        if mtime_nsec != 0 || mtime < 0 || (mtime as u64) > USTAR_NUM12_MAX {
            let value = if mtime_nsec == 0 {
                format!("{mtime}")
            } else if mtime >= 0 {
                format!("{mtime}.{mtime_nsec:09}")
            } else {
                // -1.25 means 1.25 s before the epoch: seconds -2 plus 0.75.
                let total = i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec);
                let abs = total.unsigned_abs();
                format!("-{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
            };
            self.pax.push(("mtime".into(), value.into_bytes()));
        }
        for (key, id) in [("uid", uid), ("gid", gid)] {
            let id = u64::from(id);
            let field = if id <= USTAR_ID_MAX { id } else { 0 };
            if key == "uid" {
                self.header.set_uid(field);
            } else {
                self.header.set_gid(field);
            }
            if id > USTAR_ID_MAX {
                self.pax.push((key.into(), id.to_string().into_bytes()));
            }
        }
    }

    fn set_size(&mut self, size: u64) {
        if size <= USTAR_NUM12_MAX {
            self.header.set_size(size);
        } else {
            self.header.set_size(0);
            self.pax
                .push(("size".into(), size.to_string().into_bytes()));
        }
    }

    fn add_xattrs(&mut self, xattrs: Vec<(OsString, Vec<u8>)>, shown: &[u8]) {
        for (name, value) in xattrs {
            if xattr::is_overlay_xattr(&name) {
                continue;
            }
            match name.to_str() {
                Some(n) => self.pax.push((format!("SCHILY.xattr.{n}"), value)),
                None => {
                    warn!(path = %String::from_utf8_lossy(shown), xattr = ?name, "xattr name is not UTF-8, not exported")
                }
            }
        }
    }

    fn append(
        mut self,
        builder: &mut tar::Builder<&mut dyn Write>,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        if !self.pax.is_empty() {
            builder
                .append_pax_extensions(self.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.header.set_cksum();
        builder.append(&self.header, data)
    }
}

/// Reads exactly `remaining` bytes from a file, failing if it ends early.
struct ExactReader {
    file: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the diff was written",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl DiffWriter<'_> {
    fn write_entry(&mut self, path: &[OsString]) -> Result<()> {
        let full = self.tree.full(path);
        if let Some(name) = path.last() {
            if name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes()) {
                return Err(DriverError::Unsupported(format!(
                    "cannot export {}: names starting with {OCI_WHITEOUT_PREFIX} are reserved for whiteouts",
                    full.display()
                )));
            }
        }
        let meta = self.tree.stat(path)?;
        let tpath = tar_path(path, meta.is_dir());
        let (xattrs, link_target) = if let Some(name) = path.last() {
            let pfd = self.tree.parent(path)?;
            let xattrs = XattrTarget::At(pfd, name)
                .list()
                .ctx("list xattrs", &full)?;
            let target = if meta.kind == FileKind::Symlink {
                Some(fsutil::readlink_at(pfd, name).ctx("readlink", &full)?)
            } else {
                None
            };
            (xattrs, target)
        } else {
            let xattrs = XattrTarget::Fd(self.tree.root.as_fd())
                .list()
                .ctx("list xattrs", &full)?;
            (xattrs, None)
        };

        if !meta.is_dir() && meta.nlink > 1 {
            if let Some(first) = self.links.get(&(meta.dev, meta.ino)).cloned() {
                let mut h = HeaderBuilder::new(tar::EntryType::Link, &tpath);
                h.set_meta(meta.mode, meta.uid, meta.gid, meta.mtime, meta.mtime_nsec);
                h.set_link(&first);
                h.set_size(0);
                h.append(&mut self.builder, &mut io::empty())
                    .ctx("write layer tar", &full)?;
                self.stats.entries += 1;
                return Ok(());
            }
            self.links.insert((meta.dev, meta.ino), tpath.clone());
        }

        let kind = match meta.kind {
            FileKind::Directory => tar::EntryType::Directory,
            FileKind::Regular => tar::EntryType::Regular,
            FileKind::Symlink => tar::EntryType::Symlink,
            FileKind::CharDevice | FileKind::Whiteout => tar::EntryType::Char,
            FileKind::BlockDevice => tar::EntryType::Block,
            FileKind::Fifo => tar::EntryType::Fifo,
            FileKind::Socket => {
                warn!(path = %full.display(), "sockets cannot be stored in a layer tar, skipping");
                return Ok(());
            }
        };
        let mut h = HeaderBuilder::new(kind, &tpath);
        h.set_meta(meta.mode, meta.uid, meta.gid, meta.mtime, meta.mtime_nsec);
        if let Some(target) = &link_target {
            h.set_link(target.as_bytes());
        }
        if matches!(meta.kind, FileKind::CharDevice | FileKind::BlockDevice) {
            let (major, minor) = (libc::major(meta.rdev), libc::minor(meta.rdev));
            let too_big = |e: io::Error| DriverError::Io {
                op: "export device",
                path: full.clone(),
                source: e,
            };
            h.header.set_device_major(major).map_err(too_big)?;
            h.header.set_device_minor(minor).map_err(too_big)?;
        }
        h.add_xattrs(xattrs, &tpath);
        if meta.kind == FileKind::Regular {
            h.set_size(meta.size);
            let pfd = self.tree.parent(path)?;
            let name = path.last().expect("regular files are never the root");
            let fd = fsutil::open_at(pfd, name, libc::O_RDONLY, 0).ctx("open", &full)?;
            let mut reader = ExactReader {
                file: File::from(fd),
                remaining: meta.size,
            };
            h.append(&mut self.builder, &mut reader)
                .ctx("write layer tar", &full)?;
            self.stats.bytes += meta.size;
        } else {
            h.set_size(0);
            h.append(&mut self.builder, &mut io::empty())
                .ctx("write layer tar", &full)?;
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes a `.wh.` marker (whiteout or opaque) at `path`, dated like its directory.
    fn write_marker(&mut self, path: &[OsString]) -> Result<()> {
        let parent = &path[..path.len() - 1];
        let parent_meta = self.tree.stat(parent)?;
        let mut h = HeaderBuilder::new(tar::EntryType::Regular, &tar_path(path, false));
        h.set_meta(0, 0, 0, parent_meta.mtime, 0);
        h.set_size(0);
        h.append(&mut self.builder, &mut io::empty())
            .ctx("write layer tar", self.tree.full(path))?;
        self.stats.entries += 1;
        Ok(())
    }
}
