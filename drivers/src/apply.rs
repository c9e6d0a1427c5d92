//! The safe layer-tar applier shared by all directory-backed drivers.
//!
//! [`apply_layer`] streams an uncompressed OCI layer tar into a directory. Every
//! entry's parent directory is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to the root, and the final component is
//! created with `*at` calls relative to that parent without ever following it.
//! `..`, absolute paths and symlinks planted by the layer are thereby resolved
//! as if the root were `/`: nothing can be written outside the root. Hard-link
//! targets are resolved the same way.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) are translated according to the
//! driver's [`WhiteoutMode`]. Following the OCI image spec, a whiteout only
//! hides content from the layers below: entries added earlier in the same tar
//! are kept.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tracing::{debug, warn};

use crate::driver::ApplyStats;
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::{self, clean_components, join_components, Meta};
use crate::layer::{FileKind, OCI_OPAQUE, OCI_WHITEOUT_PREFIX};
use crate::mount::WhiteoutFormat;
use crate::ownership::{self, OverrideStat, Ownership, Target};
use crate::tar_reader::{TarEntry, TarKind, TarReader};
use crate::whiteouts;
use crate::xattr::{self, XattrTarget};

/// How whiteout entries of a layer tar are stored in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target is a full copy of the parent (vfs): a whiteout deletes the
    /// path, an opaque marker empties the directory of everything that came
    /// from the parent (entries added earlier in the same tar are kept).
    Remove,
    /// The target is an overlay layer directory: a whiteout becomes a 0/0
    /// character device, an opaque marker the `overlay.opaque=y` xattr.
    Overlay {
        /// Use `user.overlay.opaque` instead of `trusted.overlay.opaque`.
        userxattr: bool,
    },
    /// The target is an AUFS branch: `.wh.` entries are kept as the empty
    /// files the tar carries (AUFS housekeeping names `.wh..wh.*` other than
    /// the opaque marker are skipped).
    Aufs,
}

impl From<WhiteoutFormat> for WhiteoutMode {
    fn from(format: WhiteoutFormat) -> Self {
        match format {
            WhiteoutFormat::Overlay { userxattr } => WhiteoutMode::Overlay { userxattr },
            WhiteoutFormat::Aufs => WhiteoutMode::Aufs,
            WhiteoutFormat::None => WhiteoutMode::Remove,
        }
    }
}

/// Applies the uncompressed layer tar `tar` onto directory `root`.
///
/// Streams the tar entry by entry. Owners, permission bits (setuid/setgid/sticky
/// included), modification times (nanoseconds from PAX records), xattrs from
/// PAX `SCHILY.xattr.*` records, hard links, device nodes, fifos and holes of
/// sparse files are preserved; missing parent directories are created (0755,
/// root-owned). `trusted.overlay.*`/`user.overlay.*` xattrs in the tar are
/// dropped. A corrupt or truncated tar yields [`DriverError::BadLayer`].
pub fn apply_layer(root: &Path, tar: &mut dyn Read, mode: WhiteoutMode) -> Result<ApplyStats> {
    apply_layer_as(root, tar, mode, Ownership::Native)
}

/// [`apply_layer`] into a store whose owners, modes and device nodes are kept as
/// `ownership` says (see [`crate::ownership`]).
pub fn apply_layer_as(
    root: &Path,
    tar: &mut dyn Read,
    mode: WhiteoutMode,
    ownership: Ownership,
) -> Result<ApplyStats> {
    let root_fd = fsutil::open_dir(root).ctx("open layer root", root)?;
    let mut applier = Applier {
        root: root_fd,
        root_path: root.to_path_buf(),
        mode,
        ownership,
        created: HashSet::new(),
        created_ancestors: HashSet::new(),
        dir_times: HashMap::new(),
        parent_cache: None,
        stats: ApplyStats::default(),
        buf: vec![0u8; COPY_CHUNK],
    };
    let mut reader = TarReader::new(tar);
    loop {
        let entry = reader.next_entry().map_err(|e| {
            DriverError::BadLayer(format!("{e} (after {} entries)", applier.stats.entries))
        })?;
        let Some(entry) = entry else {
            break;
        };
        applier.apply_entry(entry, &mut reader)?;
    }
    applier.finish()?;
    debug!(root = %root.display(), entries = applier.stats.entries, bytes = applier.stats.bytes, "applied layer");
    Ok(applier.stats)
}

/// Size of the buffer regular-file content is copied through.
const COPY_CHUNK: usize = 256 * 1024;
/// Granularity of hole detection: all-zero blocks of this size are not written.
const HOLE_BLOCK: usize = 4096;

/// The kind of a tar entry with its kind-specific data.
#[derive(Debug)]
enum EntryKind {
    Regular,
    Directory,
    Symlink(OsString),
    Hardlink(Vec<OsString>),
    Device(FileKind, u64),
    Fifo,
}

/// Everything the applier needs from one tar header (and its PAX records).
#[derive(Debug)]
struct EntryInfo {
    /// Clean path components (empty for the root).
    components: Vec<OsString>,
    /// The path as the tar spells it, for messages.
    display: String,
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    size: u64,
    /// Data segments of a sparse file (everything else is a hole).
    sparse: Option<Vec<(u64, u64)>>,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl EntryInfo {
    fn rel(&self) -> PathBuf {
        join_components(&self.components)
    }
}

fn bad(msg: impl Into<String>) -> DriverError {
    DriverError::BadLayer(msg.into())
}

/// Resolution errors caused by the layer's own content (a path component that
/// is a file, a symlink loop, a symlink leading across a mount).
fn is_layer_shape_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENAMETOOLONG)
    )
}

fn parse_entry(entry: TarEntry) -> Result<EntryInfo> {
    let shown = String::from_utf8_lossy(&entry.path).into_owned();
    let kind = match entry.kind {
        TarKind::Regular => EntryKind::Regular,
        TarKind::Directory => EntryKind::Directory,
        TarKind::Symlink => {
            if entry.link.is_empty() {
                return Err(bad(format!("symlink {shown} has no target")));
            }
            EntryKind::Symlink(OsString::from_vec(entry.link))
        }
        TarKind::Hardlink => {
            let comps = clean_components(&entry.link);
            if comps.is_empty() {
                return Err(bad(format!("hard link {shown} points at the layer root")));
            }
            EntryKind::Hardlink(comps)
        }
        TarKind::CharDevice => EntryKind::Device(
            FileKind::CharDevice,
            libc::makedev(entry.dev_major, entry.dev_minor),
        ),
        TarKind::BlockDevice => EntryKind::Device(
            FileKind::BlockDevice,
            libc::makedev(entry.dev_major, entry.dev_minor),
        ),
        TarKind::Fifo => EntryKind::Fifo,
        TarKind::Other(flag) => {
            return Err(bad(format!(
                "{shown}: unsupported tar entry type {:?}",
                flag as char
            )))
        }
    };
    let to_u32 = |field: &str, v: u64| {
        u32::try_from(v).map_err(|_| bad(format!("{shown}: {field} {v} out of range")))
    };
    let uid = to_u32("uid", entry.uid)?;
    let gid = to_u32("gid", entry.gid)?;
    let mut xattrs = Vec::with_capacity(entry.xattrs.len());
    for (name, value) in entry.xattrs {
        if xattr::is_overlay_xattr(&name) || ownership::is_override_xattr(&name) {
            warn!(path = %shown, xattr = ?name, "dropping storage xattr carried by the layer");
            continue;
        }
        xattrs.push((name, value));
    }
    Ok(EntryInfo {
        components: clean_components(&entry.path),
        display: shown,
        kind,
        mode: entry.mode,
        uid,
        gid,
        mtime: entry.mtime,
        mtime_nsec: entry.mtime_nsec,
        size: entry.size,
        sparse: entry.sparse,
        xattrs,
    })
}

struct Applier {
    root: OwnedFd,
    root_path: PathBuf,
    mode: WhiteoutMode,
    ownership: Ownership,
    /// Paths created by this tar (whiteouts never remove them).
    created: HashSet<PathBuf>,
    /// Ancestors of created paths.
    created_ancestors: HashSet<PathBuf>,
    /// Directory times, applied at the end (deepest first).
    dir_times: HashMap<PathBuf, (i64, u32)>,
    /// The last parent directory opened, by relative path.
    parent_cache: Option<(PathBuf, Rc<OwnedFd>)>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

impl EntryInfo {
    /// The owner and mode the entry asks for, as an object of type `kind`.
    fn wanted(&self, kind: FileKind, rdev: u64) -> OverrideStat {
        OverrideStat {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode & 0o7777,
            kind,
            rdev,
        }
    }
}

impl Applier {
    fn io(&self, op: &'static str, rel: &Path, err: io::Error) -> DriverError {
        DriverError::Io {
            op,
            path: self.root_path.join(rel),
            source: err,
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: TarEntry, data: &mut TarReader<R>) -> Result<()> {
        let info = parse_entry(entry)?;
        self.stats.entries += 1;
        let Some((name, parent)) = info.components.split_last() else {
            return self.apply_root(&info);
        };
        if name.as_bytes().starts_with(OCI_WHITEOUT_PREFIX.as_bytes()) {
            return self.apply_whiteout(parent, name, &info);
        }
        let parent_fd = self.ensure_dir(parent)?;
        let pfd = parent_fd.as_fd();
        let rel = info.rel();
        match &info.kind {
            EntryKind::Directory => self.make_dir(pfd, name, &rel, &info)?,
            EntryKind::Regular => self.make_file(pfd, name, &rel, &info, data)?,
            EntryKind::Symlink(target) => {
                self.clear_slot(pfd, name, &rel, false)?;
                fsutil::symlink_at(target, pfd, name).map_err(|e| self.io("symlink", &rel, e))?;
                let link = FileKind::Symlink;
                self.set_meta_at(pfd, name, &rel, &info, link, &info.wanted(link, 0))?;
            }
            EntryKind::Hardlink(target) => {
                if *target == info.components {
                    return Ok(());
                }
                self.make_hardlink(pfd, name, &rel, target, &info)?;
            }
            EntryKind::Device(FileKind::CharDevice, 0)
                if matches!(self.mode, WhiteoutMode::Overlay { .. }) =>
            {
                // In overlay format a 0/0 character device *is* a whiteout: a layer
                // must not hide lower content except through OCI whiteouts.
                warn!(path = %info.display, "not creating a 0/0 character device from the layer: it would act as an overlay whiteout");
                return Ok(());
            }
            EntryKind::Device(kind, rdev) => {
                self.clear_slot(pfd, name, &rel, false)?;
                let real = self
                    .ownership
                    .make_node(pfd, name, *kind, info.mode, *rdev)
                    .map_err(|e| self.io("mknod", &rel, e))?;
                self.set_meta_at(pfd, name, &rel, &info, real, &info.wanted(*kind, *rdev))?;
            }
            EntryKind::Fifo => {
                self.clear_slot(pfd, name, &rel, false)?;
                fsutil::mknod_at(pfd, name, FileKind::Fifo, info.mode, 0)
                    .map_err(|e| self.io("mkfifo", &rel, e))?;
                let fifo = FileKind::Fifo;
                self.set_meta_at(pfd, name, &rel, &info, fifo, &info.wanted(fifo, 0))?;
            }
        }
        self.mark_created(rel);
        Ok(())
    }

    /// An entry for the layer root itself: only a directory is acceptable; it updates the root's metadata.
    fn apply_root(&mut self, info: &EntryInfo) -> Result<()> {
        if !matches!(info.kind, EntryKind::Directory) {
            return Err(bad(format!(
                "entry {:?} would replace the layer root with a non-directory",
                info.display
            )));
        }
        let root = fsutil::open_dir_at(self.root.as_fd(), OsStr::new(""))
            .map_err(|e| self.io("open", Path::new(""), e))?;
        self.set_dir_meta(root.as_fd(), Path::new(""), info, true)
    }

    fn make_dir(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        info: &EntryInfo,
    ) -> Result<()> {
        let replaces_whiteout = match self.mode {
            WhiteoutMode::Overlay { userxattr } => {
                match fsutil::stat_at(pfd, name).map_err(|e| self.io("stat", rel, e))? {
                    Some(m) => whiteouts::is_whiteout_at(pfd, name, &m, userxattr)
                        .map_err(|e| self.io("read whiteout xattr", rel, e))?,
                    None => false,
                }
            }
            _ => false,
        };
        let existing = self.clear_slot(pfd, name, rel, true)?;
        let keep = existing.is_some_and(|m| m.is_dir());
        if !keep {
            fsutil::mkdir_at(pfd, name, 0o700).map_err(|e| self.io("mkdir", rel, e))?;
        }
        let fd = fsutil::open_dir_at(pfd, name).map_err(|e| self.io("open directory", rel, e))?;
        self.set_dir_meta(fd.as_fd(), rel, info, keep)?;
        if replaces_whiteout {
            // The whiteout (removed by clear_slot) hid a lower directory; the new one must keep hiding it.
            if let WhiteoutMode::Overlay { userxattr } = self.mode {
                XattrTarget::Fd(fd.as_fd())
                    .set(xattr::overlay_opaque_xattr(userxattr), b"y")
                    .map_err(|e| self.io("set opaque xattr", rel, e))?;
            }
        }
        Ok(())
    }

    fn set_dir_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        rel: &Path,
        info: &EntryInfo,
        existed: bool,
    ) -> Result<()> {
        let dir = FileKind::Directory;
        self.ownership
            .set(Target::Fd(fd), dir, &info.wanted(dir, 0))
            .map_err(|e| self.io("set owner and mode", rel, e))?;
        if existed {
            // The tar describes the directory completely: drop xattrs it does not list
            // (overlay metadata is managed by the applier itself and stays).
            let target = XattrTarget::Fd(fd);
            let current = target.list().map_err(|e| self.io("list xattrs", rel, e))?;
            for (name, _) in current {
                let listed = info.xattrs.iter().any(|(n, _)| *n == name);
                let ours = xattr::is_overlay_xattr(&name) || ownership::is_override_xattr(&name);
                if !listed && !ours {
                    target
                        .remove(&name)
                        .map_err(|e| self.io("remove xattr", rel, e))?;
                }
            }
        }
        self.set_xattrs(XattrTarget::Fd(fd), rel, info)?;
        self.dir_times
            .insert(rel.to_path_buf(), (info.mtime, info.mtime_nsec));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        info: &EntryInfo,
        data: &mut TarReader<R>,
    ) -> Result<()> {
        self.clear_slot(pfd, name, rel, false)?;
        let fd = fsutil::open_at(
            pfd,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
        .map_err(|e| self.io("create", rel, e))?;
        let file = File::from(fd);
        self.write_content(&file, rel, info, data)?;
        self.set_meta_fd(file.as_fd(), rel, info)
    }

    /// Copies the entry's content into `file`, leaving holes where the tar has
    /// sparse holes and where the content has all-zero blocks.
    fn write_content<R: Read>(
        &mut self,
        file: &File,
        rel: &Path,
        info: &EntryInfo,
        data: &mut TarReader<R>,
    ) -> Result<()> {
        match &info.sparse {
            Some(segments) => {
                for &(offset, len) in segments {
                    self.write_segment(file, rel, info, data, offset, len)?;
                }
            }
            None => self.write_segment(file, rel, info, data, 0, info.size)?,
        }
        file.set_len(info.size)
            .map_err(|e| self.io("truncate", rel, e))?;
        self.stats.bytes += info.size;
        Ok(())
    }

    /// Copies `len` bytes of the tar into `file` at `offset`, skipping all-zero blocks.
    fn write_segment<R: Read>(
        &mut self,
        file: &File,
        rel: &Path,
        info: &EntryInfo,
        data: &mut TarReader<R>,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let mut done: u64 = 0;
        while done < len {
            let want = (len - done).min(self.buf.len() as u64) as usize;
            let mut filled = 0;
            while filled < want {
                let n = data.read_data(&mut self.buf[filled..want]).map_err(|e| {
                    bad(format!(
                        "{}: cannot read content from the layer tar: {e}",
                        info.display
                    ))
                })?;
                if n == 0 {
                    return Err(bad(format!(
                        "{}: truncated layer tar: content ends early",
                        info.display
                    )));
                }
                filled += n;
            }
            let chunk = &self.buf[..filled];
            let base = offset + done;
            let mut start = 0;
            while start < chunk.len() {
                let end = (start + HOLE_BLOCK).min(chunk.len());
                if chunk[start..end].iter().all(|b| *b == 0) {
                    start = end;
                    continue;
                }
                // Extend the run over the following non-zero blocks.
                let mut run_end = end;
                while run_end < chunk.len() {
                    let next = (run_end + HOLE_BLOCK).min(chunk.len());
                    if chunk[run_end..next].iter().all(|b| *b == 0) {
                        break;
                    }
                    run_end = next;
                }
                file.write_all_at(&chunk[start..run_end], base + start as u64)
                    .map_err(|e| DriverError::Io {
                        op: "write",
                        path: self.root_path.join(rel),
                        source: e,
                    })?;
                start = run_end;
            }
            done += filled as u64;
        }
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        target: &[OsString],
        info: &EntryInfo,
    ) -> Result<()> {
        let target_display = join_components(target);
        let Some((target_name, target_parent)) = target.split_last() else {
            return Err(bad(format!("hard link {} has no target", info.display)));
        };
        let missing = || {
            bad(format!(
                "hard link {} points at {}, which is not in the layer",
                info.display,
                target_display.display()
            ))
        };
        let tparent = fsutil::open_in_root(
            self.root.as_fd(),
            &join_components(target_parent),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            0,
        )
        .map_err(|_| missing())?;
        let tmeta = fsutil::stat_at(tparent.as_fd(), target_name)
            .map_err(|e| self.io("stat", &target_display, e))?
            .ok_or_else(missing)?;
        if tmeta.is_dir() {
            return Err(bad(format!(
                "hard link {} points at directory {}",
                info.display,
                target_display.display()
            )));
        }
        if let Some(existing) = fsutil::stat_at(pfd, name).map_err(|e| self.io("stat", rel, e))? {
            if existing.dev == tmeta.dev && existing.ino == tmeta.ino {
                return Ok(());
            }
        }
        self.clear_slot(pfd, name, rel, false)?;
        fsutil::link_at(tparent.as_fd(), target_name, pfd, name)
            .map_err(|e| self.io("link", rel, e))
    }

    /// Makes room for a new entry at `name`: an existing directory is kept when the
    /// new entry is a directory, anything else is removed. Returns what was there.
    fn clear_slot(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        new_is_dir: bool,
    ) -> Result<Option<Meta>> {
        let existing = fsutil::stat_at(pfd, name).map_err(|e| self.io("stat", rel, e))?;
        if let Some(meta) = existing {
            if meta.is_dir() {
                if !new_is_dir {
                    self.parent_cache = None;
                    fsutil::remove_tree_at(pfd, name).map_err(|e| self.io("remove", rel, e))?;
                }
            } else {
                fsutil::unlink_at(pfd, name, false).map_err(|e| self.io("remove", rel, e))?;
            }
        }
        Ok(existing)
    }

    fn set_meta_fd(&self, fd: BorrowedFd<'_>, rel: &Path, info: &EntryInfo) -> Result<()> {
        let file = FileKind::Regular;
        self.ownership
            .set(Target::Fd(fd), file, &info.wanted(file, 0))
            .map_err(|e| self.io("set owner and mode", rel, e))?;
        self.set_xattrs(XattrTarget::Fd(fd), rel, info)?;
        fsutil::set_times_fd(fd, info.mtime, info.mtime_nsec)
            .map_err(|e| self.io("set times", rel, e))
    }

    fn set_meta_at(
        &self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        info: &EntryInfo,
        real: FileKind,
        want: &OverrideStat,
    ) -> Result<()> {
        self.ownership
            .set(Target::At(pfd, name), real, want)
            .map_err(|e| self.io("set owner and mode", rel, e))?;
        if real == FileKind::Symlink && !self.ownership.is_native() {
            // No user.* xattrs on symlinks.
            return fsutil::set_times_at(pfd, name, info.mtime, info.mtime_nsec)
                .map_err(|e| self.io("set times", rel, e));
        }
        self.set_xattrs(XattrTarget::At(pfd, name), rel, info)?;
        fsutil::set_times_at(pfd, name, info.mtime, info.mtime_nsec)
            .map_err(|e| self.io("set times", rel, e))
    }

    fn set_xattrs(&self, target: XattrTarget<'_>, rel: &Path, info: &EntryInfo) -> Result<()> {
        for (name, value) in &info.xattrs {
            match target.set(name, value) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                    warn!(path = %info.display, xattr = ?name, error = %e, "cannot set xattr, skipping it");
                }
                Err(e) => return Err(self.io("set xattr", rel, e)),
            }
        }
        Ok(())
    }

    /// Opens directory `components`, creating it and its missing ancestors.
    fn ensure_dir(&mut self, components: &[OsString]) -> Result<Rc<OwnedFd>> {
        self.parent_dir(components, true)?.ok_or_else(|| {
            bad(format!(
                "directory {} cannot be created inside the layer",
                join_components(components).display()
            ))
        })
    }

    /// Opens directory `components` (relative to the root, resolved inside it),
    /// creating missing directories (0755, root-owned) when `create` is set.
    /// `Ok(None)` when it does not exist and `create` is not set.
    fn parent_dir(&mut self, components: &[OsString], create: bool) -> Result<Option<Rc<OwnedFd>>> {
        let rel = join_components(components);
        if let Some((cached, fd)) = &self.parent_cache {
            if *cached == rel {
                return Ok(Some(fd.clone()));
            }
        }
        let open = |root: BorrowedFd<'_>, rel: &Path| {
            fsutil::open_in_root(root, rel, libc::O_RDONLY | libc::O_DIRECTORY, 0, 0)
        };
        let fd = match open(self.root.as_fd(), &rel) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                self.create_dirs(components)?
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if is_layer_shape_error(&e) => {
                return Err(bad(format!(
                    "cannot open directory {} inside the layer: {e}",
                    rel.display()
                )))
            }
            Err(e) => return Err(self.io("open directory", &rel, e)),
        };
        let fd = Rc::new(fd);
        self.parent_cache = Some((rel, fd.clone()));
        Ok(Some(fd))
    }

    /// Creates the missing directories along `components`, each resolved inside the root.
    fn create_dirs(&mut self, components: &[OsString]) -> Result<OwnedFd> {
        let mut current = fsutil::open_dir_at(self.root.as_fd(), OsStr::new(""))
            .map_err(|e| self.io("open", Path::new(""), e))?;
        for depth in 1..=components.len() {
            let prefix = join_components(&components[..depth]);
            let open = |root: BorrowedFd<'_>| {
                fsutil::open_in_root(root, &prefix, libc::O_RDONLY | libc::O_DIRECTORY, 0, 0)
            };
            current = match open(self.root.as_fd()) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = &components[depth - 1];
                    match fsutil::mkdir_at(current.as_fd(), name, 0o755) {
                        Ok(()) => {
                            let dir = FileKind::Directory;
                            let root_owned = OverrideStat {
                                uid: 0,
                                gid: 0,
                                mode: 0o755,
                                kind: dir,
                                rdev: 0,
                            };
                            self.ownership
                                .set(Target::At(current.as_fd(), name), dir, &root_owned)
                                .map_err(|e| self.io("chown", &prefix, e))?;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(self.io("mkdir", &prefix, e)),
                    }
                    open(self.root.as_fd()).map_err(|e| {
                        let dangling = fsutil::stat_at(current.as_fd(), name)
                            .ok()
                            .flatten()
                            .is_some_and(|m| m.kind == FileKind::Symlink);
                        if dangling {
                            bad(format!(
                                "cannot create directory {}: it is a symlink to a directory missing from the layer",
                                prefix.display()
                            ))
                        } else {
                            bad(format!(
                                "cannot create directory {} inside the layer: {e}",
                                prefix.display()
                            ))
                        }
                    })?
                }
                Err(e) if is_layer_shape_error(&e) => {
                    return Err(bad(format!(
                        "cannot open directory {} inside the layer: {e}",
                        prefix.display()
                    )))
                }
                Err(e) => return Err(self.io("open directory", &prefix, e)),
            };
        }
        Ok(current)
    }

    fn mark_created(&mut self, rel: PathBuf) {
        let mut ancestor = rel.parent();
        while let Some(a) = ancestor {
            if !self.created_ancestors.insert(a.to_path_buf()) {
                break;
            }
            ancestor = a.parent();
        }
        self.created.insert(rel);
    }

    fn touches_created(&self, rel: &Path) -> bool {
        self.created.contains(rel) || self.created_ancestors.contains(rel)
    }

    fn apply_whiteout(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        info: &EntryInfo,
    ) -> Result<()> {
        let bytes = name.as_bytes();
        if bytes == OCI_OPAQUE.as_bytes() {
            return self.apply_opaque(parent, name, info);
        }
        if bytes.starts_with(b".wh..wh.") {
            debug!(path = %info.display, "skipping AUFS housekeeping entry");
            return Ok(());
        }
        let target = OsStr::from_bytes(&bytes[OCI_WHITEOUT_PREFIX.len()..]);
        if target.is_empty() || target == "." || target == ".." {
            return Err(bad(format!("invalid whiteout entry {}", info.display)));
        }
        let mut target_rel = join_components(parent);
        target_rel.push(target);
        match self.mode {
            WhiteoutMode::Aufs => self.write_marker(parent, name, info),
            WhiteoutMode::Remove => {
                let Some(pfd) = self.parent_dir(parent, false)? else {
                    return Ok(());
                };
                self.remove_lower(pfd.as_fd(), target, &target_rel)
            }
            WhiteoutMode::Overlay { .. } => {
                let pfd = self.ensure_dir(parent)?;
                let pfd = pfd.as_fd();
                let existing =
                    fsutil::stat_at(pfd, target).map_err(|e| self.io("stat", &target_rel, e))?;
                if existing.is_some() && self.touches_created(&target_rel) {
                    // The entry comes from this very layer: a whiteout hides lower layers only.
                    return Ok(());
                }
                if existing.is_some() {
                    self.clear_slot(pfd, target, &target_rel, false)?;
                }
                let userxattr = matches!(self.mode, WhiteoutMode::Overlay { userxattr: true });
                let made = whiteouts::make_whiteout_at(pfd, target, userxattr).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EPERM) && !self.ownership.is_native() {
                        bad(format!(
                            "cannot create the overlay whiteout {}: this kernel lets \
                             unprivileged users make neither 0/0 character devices nor \
                             user.* xattrs here; use the aufs driver, whose whiteouts are .wh. files",
                            target_rel.display()
                        ))
                    } else {
                        self.io("mknod whiteout", &target_rel, e)
                    }
                })?;
                if made == FileKind::Regular {
                    whiteouts::mark_holds_xattr_whiteouts(pfd, userxattr)
                        .map_err(|e| self.io("mark xattr whiteouts", &target_rel, e))?;
                }
                Ok(())
            }
        }
    }

    fn apply_opaque(&mut self, dir: &[OsString], name: &OsStr, info: &EntryInfo) -> Result<()> {
        let rel = join_components(dir);
        match self.mode {
            WhiteoutMode::Aufs => self.write_marker(dir, name, info),
            WhiteoutMode::Remove => {
                let Some(fd) = self.parent_dir(dir, false)? else {
                    return Ok(());
                };
                for child in fsutil::read_dir_names(fd.as_fd())
                    .map_err(|e| self.io("read directory", &rel, e))?
                {
                    let child_rel = rel.join(&child);
                    self.remove_lower(fd.as_fd(), &child, &child_rel)?;
                }
                Ok(())
            }
            WhiteoutMode::Overlay { userxattr } => {
                let fd = self.ensure_dir(dir)?;
                XattrTarget::Fd(fd.as_fd())
                    .set(xattr::overlay_opaque_xattr(userxattr), b"y")
                    .map_err(|e| self.io("set opaque xattr", &rel, e))
            }
        }
    }

    /// Removes what came from the parent at `name` (inside `dir`), keeping
    /// everything this tar created there.
    fn remove_lower(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<()> {
        if !self.touches_created(rel) {
            self.parent_cache = None;
            return fsutil::remove_tree_at(dir, name).map_err(|e| self.io("remove", rel, e));
        }
        let Some(meta) = fsutil::stat_at(dir, name).map_err(|e| self.io("stat", rel, e))? else {
            return Ok(());
        };
        if meta.is_dir() {
            let sub =
                fsutil::open_dir_at(dir, name).map_err(|e| self.io("open directory", rel, e))?;
            for child in fsutil::read_dir_names(sub.as_fd())
                .map_err(|e| self.io("read directory", rel, e))?
            {
                let child_rel = rel.join(&child);
                self.remove_lower(sub.as_fd(), &child, &child_rel)?;
            }
        }
        Ok(())
    }

    /// Stores a whiteout marker as the plain empty file the tar carries (AUFS).
    fn write_marker(&mut self, parent: &[OsString], name: &OsStr, info: &EntryInfo) -> Result<()> {
        let pfd = self.ensure_dir(parent)?;
        let pfd = pfd.as_fd();
        let rel = info.rel();
        self.clear_slot(pfd, name, &rel, false)?;
        let fd = fsutil::open_at(
            pfd,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
        .map_err(|e| self.io("create", &rel, e))?;
        self.set_meta_fd(fd.as_fd(), &rel, info)?;
        self.mark_created(rel);
        Ok(())
    }

    /// Applies the recorded directory times, deepest first.
    fn finish(&mut self) -> Result<()> {
        let mut dirs: Vec<(PathBuf, (i64, u32))> = self.dir_times.drain().collect();
        dirs.sort_by(|a, b| {
            b.0.components()
                .count()
                .cmp(&a.0.components().count())
                .then_with(|| a.0.cmp(&b.0))
        });
        self.parent_cache = None;
        for (rel, (sec, nsec)) in dirs {
            let fd = match fsutil::open_in_root(
                self.root.as_fd(),
                &rel,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
                0,
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry of the tar.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(self.io("open directory", &rel, e)),
            };
            fsutil::set_times_fd(fd.as_fd(), sec, nsec)
                .map_err(|e| self.io("set times", &rel, e))?;
        }
        Ok(())
    }
}
