//! Helpers of the FUSE frontend's tests: overlay-format layer directories built
//! from a small description, kernel overlay and FUSE mounts undone by guards
//! (even when a test panics), and tree comparisons that tolerate what differs
//! legitimately between two mounts made a moment apart.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use drivers::dirlayer::DirLayer;
use drivers::{LayerReader, MountSpec, WhiteoutFormat};
use fuse_frontend::{spawn_mount, FuseMount, FuseOptions};
use test_support::{compare_trees, scan_tree, CompareOptions, NodeKind, Tree};

/// The modification time every fixture entry gets.
pub const FIXTURE_MTIME: i64 = 1_600_000_000;

/// The overlay whiteout format as root uses it.
pub const OVERLAY: WhiteoutFormat = WhiteoutFormat::Overlay { userxattr: false };

/// One entry of a layer directory.
#[derive(Debug, Clone)]
pub enum Item {
    /// A directory with its mode.
    Dir(&'static str, u32),
    /// A regular file with content and mode.
    File(&'static str, &'static [u8], u32),
    /// A symlink and its target.
    Symlink(&'static str, &'static str),
    /// A whiteout of the name in the layers below (in the directory's format).
    Whiteout(&'static str),
    /// Marks an existing directory opaque.
    Opaque(&'static str),
    /// A hard link (new path, existing path).
    Hardlink(&'static str, &'static str),
    /// A fifo.
    Fifo(&'static str),
    /// A character device (path, major, minor).
    CharDev(&'static str, u32, u32),
    /// An extended attribute on an existing entry.
    Xattr(&'static str, &'static str, &'static [u8]),
    /// Owner of an existing entry.
    Owner(&'static str, u32, u32),
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Sets an xattr on `path` without following it.
pub fn lset_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: valid strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an xattr of `path` without following it.
pub fn lget_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// Creates a device node or fifo.
pub fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: valid string.
    if unsafe { libc::mknod(p.as_ptr(), mode, dev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets both times of `path` without following it.
pub fn set_mtime(path: &Path, sec: i64) -> io::Result<()> {
    let p = cpath(path);
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    // SAFETY: valid string and two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == 0
    {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes the entries of one layer into `root` in whiteout `format`, every
/// entry with [`FIXTURE_MTIME`].
pub fn build_layer(root: &Path, items: &[Item], format: WhiteoutFormat) {
    fs::create_dir_all(root).unwrap();
    let at = |p: &str| root.join(p);
    let mut touched = BTreeSet::new();
    for item in items {
        match item {
            Item::Dir(p, mode) => {
                fs::create_dir_all(at(p)).unwrap();
                fs::set_permissions(at(p), fs::Permissions::from_mode(*mode)).unwrap();
                touched.insert(at(p));
            }
            Item::File(p, content, mode) => {
                fs::write(at(p), content).unwrap();
                fs::set_permissions(at(p), fs::Permissions::from_mode(*mode)).unwrap();
                touched.insert(at(p));
            }
            Item::Symlink(p, target) => {
                symlink(target, at(p)).unwrap();
                touched.insert(at(p));
            }
            Item::Whiteout(p) => match format {
                WhiteoutFormat::Overlay { .. } => {
                    mknod(&at(p), libc::S_IFCHR, 0).unwrap();
                    touched.insert(at(p));
                }
                WhiteoutFormat::Aufs => {
                    let path = Path::new(p);
                    let name = format!(".wh.{}", path.file_name().unwrap().to_str().unwrap());
                    let marker = root.join(path.parent().unwrap()).join(name);
                    fs::write(&marker, b"").unwrap();
                    touched.insert(marker);
                }
                WhiteoutFormat::None => panic!("no whiteouts in a plain layer"),
            },
            Item::Opaque(p) => match format {
                WhiteoutFormat::Overlay { .. } => {
                    lset_xattr(&at(p), "trusted.overlay.opaque", b"y").unwrap()
                }
                WhiteoutFormat::Aufs => {
                    fs::write(at(p).join(".wh..wh..opq"), b"").unwrap();
                    touched.insert(at(p).join(".wh..wh..opq"));
                }
                WhiteoutFormat::None => panic!("no opaque directories in a plain layer"),
            },
            Item::Hardlink(p, existing) => {
                fs::hard_link(at(existing), at(p)).unwrap();
            }
            Item::Fifo(p) => {
                mknod(&at(p), libc::S_IFIFO | 0o644, 0).unwrap();
                touched.insert(at(p));
            }
            Item::CharDev(p, major, minor) => {
                mknod(&at(p), libc::S_IFCHR | 0o600, libc::makedev(*major, *minor)).unwrap();
                touched.insert(at(p));
            }
            Item::Xattr(p, name, value) => lset_xattr(&at(p), name, value).unwrap(),
            Item::Owner(p, uid, gid) => {
                // chown clears setuid bits: put the mode back.
                let meta = fs::symlink_metadata(at(p)).unwrap();
                std::os::unix::fs::lchown(at(p), Some(*uid), Some(*gid)).unwrap();
                if !meta.file_type().is_symlink() {
                    fs::set_permissions(at(p), fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .unwrap();
                }
            }
        }
    }
    // Times last, deepest first, so that creating children does not move them.
    let mut all: Vec<PathBuf> = touched.into_iter().collect();
    all.push(root.to_path_buf());
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, FIXTURE_MTIME).unwrap();
    }
}

/// The directories of one stack: lowers (top first), upper, work and mountpoint.
pub struct StackDirs {
    /// Lower layer directories, top first.
    pub lowers: Vec<PathBuf>,
    /// The upper directory.
    pub upper: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// The mountpoint.
    pub merged: PathBuf,
}

impl StackDirs {
    /// Builds the layers `layers` (top first) below `base` in `format`.
    pub fn build(base: &Path, layers: &[Vec<Item>], format: WhiteoutFormat) -> StackDirs {
        let lowers: Vec<PathBuf> = (0..layers.len())
            .map(|i| base.join(format!("l{i}")))
            .collect();
        for (dir, items) in lowers.iter().zip(layers) {
            build_layer(dir, items, format);
        }
        let dirs = StackDirs {
            lowers,
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.merged] {
            fs::create_dir_all(d).unwrap();
        }
        dirs
    }

    /// The FUSE stack spec of these directories.
    pub fn spec(&self, format: WhiteoutFormat, writable: bool) -> MountSpec {
        let lowers: Vec<Arc<dyn LayerReader>> = self
            .lowers
            .iter()
            .map(|d| Arc::new(DirLayer::open(d, format).unwrap()) as Arc<dyn LayerReader>)
            .collect();
        MountSpec::Stack {
            lowers,
            upper: writable.then(|| (self.upper.clone(), self.work.clone())),
            whiteouts: format,
            ownership: Default::default(),
        }
    }
}

/// A read-only stack of the upper of `dirs`, read as a layer, over its lowers:
/// what an image made of the upper as its next layer shows.
pub fn upper_as_layer(dirs: &StackDirs, format: WhiteoutFormat) -> MountSpec {
    let mut lowers: Vec<Arc<dyn LayerReader>> =
        vec![Arc::new(DirLayer::open(&dirs.upper, format).unwrap())];
    for l in &dirs.lowers {
        lowers.push(Arc::new(DirLayer::open(l, format).unwrap()));
    }
    MountSpec::Stack {
        lowers,
        upper: None,
        whiteouts: format,
        ownership: Default::default(),
    }
}

/// The FUSE connection number of the mount at `target` (its device minor), from mountinfo.
pub fn fuse_connection(target: &Path) -> Option<u32> {
    let target = target.canonicalize().ok()?;
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        if f.len() > 4 && Path::new(f[4]) == target && f.get(sep + 1)?.starts_with("fuse") {
            f[2].split(':').nth(1)?.parse().ok()
        } else {
            None
        }
    })
}

/// Whether `target` is a mount point (of any type).
pub fn is_mounted(target: &Path) -> bool {
    let Ok(target) = target.canonicalize() else {
        return false;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|l| l.split(' ').nth(4).map(Path::new) == Some(target.as_path()))
        })
        .unwrap_or(false)
}

/// Aborts FUSE connection `conn` and detaches `target`: the last resort for a
/// mount whose server does not answer.
pub fn abort_and_detach(conn: Option<u32>, target: &Path) {
    if let Some(conn) = conn {
        let _ = fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
    }
    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
}

/// A FUSE mount served by this process, unmounted when dropped — aborted
/// through `/sys/fs/fuse/connections` if it does not go away in time.
pub struct FuseGuard {
    mount: Option<FuseMount>,
    target: PathBuf,
    conn: Option<u32>,
}

impl FuseGuard {
    /// Mounts `spec` on `target` with `options`.
    pub fn mount(spec: MountSpec, target: &Path, options: &FuseOptions) -> FuseGuard {
        let mount = spawn_mount(spec, target, options).expect("FUSE mount");
        FuseGuard {
            conn: fuse_connection(target),
            mount: Some(mount),
            target: target.to_path_buf(),
        }
    }

    /// What the server has done so far.
    pub fn stats(&self) -> fuse_frontend::ServeStats {
        self.mount.as_ref().unwrap().stats()
    }

    /// Unmounts now, failing the test if that does not work.
    pub fn unmount(mut self) {
        let mount = self.mount.take().unwrap();
        mount.unmount().expect("unmount");
    }
}

impl Drop for FuseGuard {
    fn drop(&mut self) {
        let Some(mount) = self.mount.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(mount.unmount());
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            _ => abort_and_detach(self.conn, &self.target),
        }
    }
}

/// A kernel overlay mount, detached when dropped.
pub struct KernelOverlay {
    target: PathBuf,
}

/// The kernel overlay options the differential tests compare against:
/// `index=on` keeps lower hard links linked across copy-up (as the FUSE
/// frontend does), `redirect_dir=off` and `metacopy=off` keep the upper in the
/// plain format both frontends share.
pub const KERNEL_OPTIONS: &str = "index=on,redirect_dir=off,metacopy=off";

impl KernelOverlay {
    /// Mounts kernel overlayfs over `dirs`.
    pub fn mount(dirs: &StackDirs) -> KernelOverlay {
        let lowers: Vec<String> = dirs
            .lowers
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={},{KERNEL_OPTIONS}",
            lowers.join(":"),
            dirs.upper.display(),
            dirs.work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &dirs.merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .expect("kernel overlay mount");
        KernelOverlay {
            target: dirs.merged.clone(),
        }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.target, nix::mount::MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Default options of the tests' FUSE mounts.
pub fn fuse_options(passthrough: bool) -> FuseOptions {
    FuseOptions {
        passthrough,
        threads: 2,
        ..FuseOptions::default()
    }
}

/// The tests' FUSE options with every request through `/dev/fuse` (no FUSE
/// over io_uring, which the default options use where the kernel offers it).
pub fn dev_fuse_options() -> FuseOptions {
    FuseOptions {
        io_uring: false,
        ..fuse_options(true)
    }
}

/// Makes the mtimes of `b` equal to `a`'s where they differ by at most two
/// seconds (both trees were changed "now", a moment apart).
pub fn align_recent_mtimes(a: &Tree, b: &mut Tree) {
    for (path, node) in b.nodes.iter_mut() {
        if let Some(want) = a.nodes.get(path) {
            if (want.mtime - node.mtime).abs() <= 2 {
                node.mtime = want.mtime;
            }
        }
    }
}

/// Lists the differences between two merged trees (directory mtimes ignored,
/// other mtimes within two seconds equal).
pub fn diff_merged(kernel: &Tree, fuse: &Tree) -> Vec<String> {
    let mut fuse = fuse.clone();
    align_recent_mtimes(kernel, &mut fuse);
    compare_trees(kernel, &fuse, CompareOptions::ignoring_dir_mtimes())
}

/// Recomputes link groups from the members still present.
fn regroup(tree: &mut Tree) {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, node) in &tree.nodes {
        if let Some(g) = &node.link_group {
            groups.entry(g.clone()).or_default().push(path.clone());
        }
    }
    for members in groups.into_values() {
        let name = (members.len() > 1)
            .then(|| members.iter().min().cloned())
            .flatten();
        for m in members {
            tree.nodes.get_mut(&m).unwrap().link_group = name.clone();
        }
    }
}

/// An overlay whiteout node (character device 0/0).
fn is_whiteout(kind: &NodeKind) -> bool {
    matches!(kind, NodeKind::CharDevice { major: 0, minor: 0 })
}

/// Lists the differences between the kernel's and the FUSE frontend's upper
/// directories. Whiteouts are compared by presence only (the kernel shares one
/// whiteout inode through hard links). `aliases` are the paths of lower hard
/// links: when a linked file is copied up, the FUSE frontend links its other
/// names into the upper too, where the kernel keeps the inode in its index
/// instead; such names only the FUSE upper holds are left out, with the
/// directories holding nothing else.
pub fn diff_uppers(kernel: &Tree, fuse: &Tree, aliases: &[&str]) -> Vec<String> {
    let mut kernel = kernel.clone();
    let mut fuse = fuse.clone();
    for tree in [&mut kernel, &mut fuse] {
        for node in tree.nodes.values_mut() {
            if is_whiteout(&node.kind) {
                node.link_group = None;
                node.mtime = 0;
            }
        }
    }
    let extra: Vec<String> = fuse
        .nodes
        .iter()
        .filter(|(p, n)| {
            !kernel.nodes.contains_key(*p)
                && n.kind != NodeKind::Dir
                && !is_whiteout(&n.kind)
                && aliases.iter().any(|a| p.trim_start_matches('/') == *a)
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in &extra {
        fuse.nodes.remove(p);
    }
    let mut dirs: Vec<String> = fuse
        .nodes
        .iter()
        .filter(|(p, n)| n.kind == NodeKind::Dir && !kernel.nodes.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for d in dirs {
        let prefix = format!("{d}/");
        let has_children = fuse.nodes.keys().any(|p| p.starts_with(&prefix));
        let had_alias = extra.iter().any(|p| p.starts_with(&prefix));
        if !has_children && had_alias {
            fuse.nodes.remove(&d);
        }
    }
    regroup(&mut kernel);
    regroup(&mut fuse);
    diff_merged(&kernel, &fuse)
}

/// Scans a tree, panicking with the path on failure.
pub fn scan(path: &Path) -> Tree {
    scan_tree(path).unwrap_or_else(|e| panic!("scanning {}: {e}", path.display()))
}

/// The errno of an I/O result (`Ok` as 0).
pub fn errno_of<T>(r: &io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The permission bits and owner of `path` (not followed).
pub fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Whether the privileged test `name` may run (root and `/dev/fuse`); see
/// `test_support::privilege`.
pub fn gate(name: &str) -> bool {
    test_support::privilege::require_privileged(name)
}
