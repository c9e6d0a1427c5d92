//! The squashfs driver: image fidelity (kernel mounts, `unsquashfs`, the
//! in-process reader), tar semantics against the directory applier, the
//! reader's cache and parallelism, corrupt images, loop device reference
//! counting and hard links in containers.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::dirlayer::DirLayer;
use drivers::kernel::KernelFrontend;
use drivers::layer::{FileKind, LayerReader};
use drivers::mount::{Frontend, FrontendKind, MountSpec, WhiteoutFormat};
use drivers::mount_table::{MountInfo, MountRequest, MountTable};
use drivers::squashfs::{
    loopdev, write_image, Compressor, ImageSettings, SquashfsLayer, SquashfsOptions,
};
use drivers::{Driver, DriverError, SquashfsDriver};
use proptest::prelude::*;
use test_support::privilege::require_privileged;
use test_support::tree::{compare_trees, scan_tree, CompareOptions, Node, NodeKind, Tree};
use test_support::{expected_tree_of_layers, fixtures, sha256_hex, LayerBuilder};

fn options(cache_mb: usize) -> SquashfsOptions {
    SquashfsOptions {
        cache_bytes: cache_mb << 20,
        ..SquashfsOptions::default()
    }
}

fn settings(compressor: Compressor, block_size: u32) -> ImageSettings {
    ImageSettings {
        compressor,
        level: compressor.default_level(),
        block_size,
        workers: 2,
    }
}

/// Writes `tar` as an image at `path` with default settings.
fn image_of(path: &Path, tar: &[u8]) -> PathBuf {
    write_image(
        path,
        &mut &tar[..],
        &settings(Compressor::Zstd, 128 * 1024),
        1_700_000_000,
    )
    .unwrap();
    path.to_path_buf()
}

/// The rich fixture's layers applied to a fresh driver: (tempdir, driver, layer ids).
fn rich_store() -> (tempfile::TempDir, SquashfsDriver, Vec<String>) {
    let t = tempfile::tempdir().unwrap();
    let d = SquashfsDriver::with_options(t.path(), options(8)).unwrap();
    let image = fixtures::rich_image();
    let mut ids = Vec::new();
    for (i, layer) in image.layers().iter().enumerate() {
        let id = format!("layer-{i}");
        d.apply_diff(
            &id,
            ids.last().map(String::as_str),
            &mut &layer.to_tar()[..],
        )
        .unwrap();
        ids.push(id);
    }
    (t, d, ids)
}

/// Detaches every mount below a test's directory on drop (layer mounts, views,
/// overlays), deepest first, so that a failing test leaves no mount and, by
/// autoclear, no loop device behind.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let Ok(root) = fs::canonicalize(&self.0) else {
            return;
        };
        let Ok(info) = MountInfo::read() else {
            return;
        };
        let mut below: Vec<PathBuf> = info
            .mountpoints()
            .filter(|m| m.starts_with(&root))
            .map(Path::to_path_buf)
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in below {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A mount undone on drop (lazily, so a failing test never leaves it behind).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A mount-table mount put back on drop.
struct TableMount<'a> {
    table: &'a MountTable,
    target: PathBuf,
}

impl Drop for TableMount<'_> {
    fn drop(&mut self) {
        let frontend = |_: FrontendKind| Ok(Box::new(KernelFrontend) as Box<dyn Frontend>);
        if self.table.put(&self.target, &frontend).is_err() {
            let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn table_mount<'a>(
    table: &'a MountTable,
    driver: &dyn Driver,
    layer: &str,
    read_only: bool,
    target: &Path,
) -> TableMount<'a> {
    fs::create_dir_all(target).unwrap();
    table
        .get(
            driver,
            &KernelFrontend,
            &MountRequest {
                layer,
                label: layer,
                read_only,
                target,
            },
        )
        .unwrap();
    TableMount {
        table,
        target: fs::canonicalize(target).unwrap(),
    }
}

fn assert_same(what: &str, expected: &Tree, actual: &Tree, opts: CompareOptions) {
    let diffs = compare_trees(expected, actual, opts);
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}\nexpected:\n{expected}\nactual:\n{actual}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// The tree a layer reader presents, in `scan_tree`'s terms (whiteouts as the
/// 0/0 character devices a kernel mount of the image shows).
fn reader_tree(layer: &dyn LayerReader) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(PathBuf::new(), String::new())];
    while let Some((dir, shown)) = stack.pop() {
        for e in layer.read_dir(&dir).unwrap() {
            let path = dir.join(&e.name);
            let rel = format!("{shown}/{}", e.name.to_string_lossy());
            let entry = layer.lookup(&path).unwrap().expect("listed entries exist");
            assert_eq!(entry.kind, e.kind, "{rel}: listing and lookup agree");
            let kind = match entry.kind {
                FileKind::Directory => {
                    stack.push((path.clone(), rel.clone()));
                    NodeKind::Dir
                }
                FileKind::Regular => NodeKind::File {
                    sha256: sha256_hex(&read_all(layer, &path)),
                },
                FileKind::Symlink => NodeKind::Symlink {
                    target: layer
                        .readlink(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                },
                FileKind::Fifo => NodeKind::Fifo,
                FileKind::CharDevice => NodeKind::CharDevice {
                    major: libc::major(entry.rdev),
                    minor: libc::minor(entry.rdev),
                },
                FileKind::BlockDevice => NodeKind::BlockDevice {
                    major: libc::major(entry.rdev),
                    minor: libc::minor(entry.rdev),
                },
                FileKind::Whiteout => NodeKind::CharDevice { major: 0, minor: 0 },
                FileKind::Socket => panic!("{rel}: no sockets in the fixtures"),
            };
            let size = match kind {
                NodeKind::File { .. } | NodeKind::Symlink { .. } => entry.size,
                _ => 0,
            };
            if entry.kind != FileKind::Directory && entry.nlink > 1 {
                inodes.entry(entry.ino).or_default().push(rel.clone());
            }
            let xattrs = layer
                .xattrs(&path)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (n.to_string_lossy().into_owned(), v))
                .filter(|(n, _)| !n.starts_with("security.selinux"))
                .collect();
            tree.nodes.insert(
                rel,
                Node {
                    kind,
                    mode: entry.mode,
                    uid: u64::from(entry.uid),
                    gid: u64::from(entry.gid),
                    size,
                    mtime: entry.mtime,
                    xattrs,
                    link_group: None,
                },
            );
        }
    }
    for paths in inodes.into_values().filter(|p| p.len() > 1) {
        let name = paths.iter().min().cloned();
        for p in &paths {
            tree.nodes.get_mut(p).unwrap().link_group = name.clone();
        }
    }
    tree
}

fn read_all(layer: &dyn LayerReader, path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 100_000];
    loop {
        let n = layer.read_at(path, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The paths a layer tar whites out (`.wh.NAME` → `/dir/NAME`).
fn whiteouts_of(tar: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if let Some(target) = name.strip_prefix(".wh.") {
            if !target.starts_with(".wh.") {
                out.push(if dir.is_empty() {
                    format!("/{target}")
                } else {
                    format!("/{dir}/{target}")
                });
            }
        }
    }
    out
}

/// The model's tree of one layer plus its whiteouts as 0/0 character devices:
/// what the image of that layer holds.
fn image_model(layer: &LayerBuilder) -> Tree {
    let mut tree = expected_tree_of_layers(&[layer]);
    for path in whiteouts_of(&layer.to_tar()) {
        if tree.contains(&path) {
            // Recreated by the same layer: the entry stays, the whiteout only hides lower layers.
            continue;
        }
        let parent_is_there = Path::new(&path)
            .parent()
            .is_none_or(|p| p == Path::new("/") || tree.contains(&p.to_string_lossy()));
        assert!(parent_is_there, "{path}");
        tree.nodes.insert(
            path,
            Node {
                kind: NodeKind::CharDevice { major: 0, minor: 0 },
                mode: 0,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                xattrs: BTreeMap::new(),
                link_group: None,
            },
        );
    }
    tree
}

/// Whiteouts' metadata is the image writer's choice; parents of whiteouts
/// may be implied. Drops both from comparisons.
fn without_whiteout_metadata(tree: &Tree) -> Tree {
    let mut t = tree.clone();
    for n in t.nodes.values_mut() {
        if n.kind == (NodeKind::CharDevice { major: 0, minor: 0 }) {
            n.mode = 0;
            n.mtime = 0;
            n.uid = 0;
            n.gid = 0;
        }
    }
    t
}

#[test]
fn the_images_of_the_rich_layers_stack_like_the_model() {
    if !require_privileged("squashfs rich image stack") {
        return;
    }
    let (t, d, ids) = rich_store();
    let _unmount = Unmounter(t.path().to_path_buf());
    let image = fixtures::rich_image();
    let table = MountTable::new(t.path());
    let mnt = t.path().join("mnt");
    for n in 1..=ids.len() {
        let m = table_mount(&table, &d, &ids[n - 1], true, &mnt);
        let actual = scan_tree(&mnt).unwrap();
        drop(m);
        assert_same(
            &format!("layers 1..={n}"),
            &image.expected_tree_upto(n),
            &actual,
            CompareOptions::ignoring_dir_mtimes(),
        );
    }
    assert!(wait_no_loops(t.path()), "every loop device is released");
}

#[test]
fn a_kernel_mount_of_each_image_shows_the_layer_in_overlay_form() {
    if !require_privileged("squashfs image fidelity") {
        return;
    }
    let (t, d, ids) = rich_store();
    let _unmount = Unmounter(t.path().to_path_buf());
    let image = fixtures::rich_image();
    let mnt = t.path().join("raw");
    fs::create_dir(&mnt).unwrap();
    for (i, layer) in image.layers().iter().enumerate() {
        loopdev::mount_image(&d.image_path(&ids[i]), &mnt).unwrap();
        let guard = Mounted(mnt.clone());
        let actual = scan_tree(&mnt).unwrap();
        let opaque = xattr_of(&mnt.join("data"), "trusted.overlay.opaque");
        let reader = d.layer_reader(&ids[i]).unwrap();
        let through_reader = reader_tree(reader.as_ref());
        drop(guard);
        assert_same(
            &format!("kernel mount of layer {i}"),
            &without_whiteout_metadata(&image_model(layer)),
            &without_whiteout_metadata(&actual),
            CompareOptions::ignoring_dir_mtimes(),
        );
        assert_same(
            &format!("reader of layer {i} against its kernel mount"),
            &actual,
            &through_reader,
            CompareOptions::strict(),
        );
        if i == 1 {
            assert_eq!(
                opaque.as_deref(),
                Some(&b"y"[..]),
                "/data is opaque in layer 1"
            );
            assert!(reader.lookup(Path::new("data")).unwrap().unwrap().opaque);
            assert_eq!(
                reader
                    .lookup(Path::new("remove-me.txt"))
                    .unwrap()
                    .unwrap()
                    .kind,
                FileKind::Whiteout
            );
        }
    }
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// One line of `unsquashfs -lln`: type and permissions, owner, size or device, time, target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    perms: String,
    owner: String,
    size: String,
    time: String,
    target: Option<String>,
}

fn unsquashfs_listing(image: &Path) -> BTreeMap<String, Listed> {
    let out = Command::new("unsquashfs")
        .args(["-lln", "-d", "/R"])
        .arg(image)
        .env("TZ", "UTC")
        .output()
        .expect("unsquashfs is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let perms = f.next().unwrap().to_string();
        let owner = f.next().unwrap().to_string();
        let mut size = f.next().unwrap().to_string();
        if size.ends_with(',') {
            size.push_str(f.next().unwrap());
        }
        let date = f.next().unwrap();
        let time = format!("{date} {}", f.next().unwrap());
        let rest: Vec<&str> = f.collect();
        let rest = rest.join(" ");
        let (path, target) = match rest.split_once(" -> ") {
            Some((p, t)) => (p.to_string(), Some(t.to_string())),
            None => (rest, None),
        };
        let path = path.strip_prefix("/R").unwrap().to_string();
        if !path.is_empty() {
            map.insert(
                path,
                Listed {
                    perms,
                    owner,
                    size,
                    time,
                    target,
                },
            );
        }
    }
    map
}

fn listed_from_model(tree: &Tree) -> BTreeMap<String, Listed> {
    tree.nodes
        .iter()
        .map(|(path, n)| {
            let (t, size) = match &n.kind {
                NodeKind::File { .. } => ('-', n.size.to_string()),
                NodeKind::Dir => ('d', String::new()),
                NodeKind::Symlink { target } => ('l', target.len().to_string()),
                NodeKind::Fifo => ('p', "0".into()),
                NodeKind::CharDevice { major, minor } => ('c', format!("{major},{minor}")),
                NodeKind::BlockDevice { major, minor } => ('b', format!("{major},{minor}")),
            };
            let m = n.mode;
            let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
            let exec = |x: u32, s: u32, set: char| match (m & x != 0, m & s != 0) {
                (true, true) => set,
                (false, true) => set.to_ascii_uppercase(),
                (true, false) => 'x',
                (false, false) => '-',
            };
            let perms: String = [
                t,
                bit(0o400, 'r'),
                bit(0o200, 'w'),
                exec(0o100, 0o4000, 's'),
                bit(0o040, 'r'),
                bit(0o020, 'w'),
                exec(0o010, 0o2000, 's'),
                bit(0o004, 'r'),
                bit(0o002, 'w'),
                exec(0o001, 0o1000, 't'),
            ]
            .iter()
            .collect();
            let time = Command::new("date")
                .args(["-u", "-d", &format!("@{}", n.mtime), "+%Y-%m-%d %H:%M"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap();
            let target = match &n.kind {
                NodeKind::Symlink { target } => Some(target.clone()),
                _ => None,
            };
            (
                path.clone(),
                Listed {
                    perms,
                    owner: format!("{}/{}", n.uid, n.gid),
                    size,
                    time,
                    target,
                },
            )
        })
        .collect()
}

#[test]
fn unsquashfs_lists_what_each_layer_tar_holds() {
    let t = tempfile::tempdir().unwrap();
    for (i, layer) in fixtures::rich_image().layers().iter().enumerate() {
        let image = image_of(&t.path().join(format!("{i}.sqfs")), &layer.to_tar());
        let mut listed = unsquashfs_listing(&image);
        let mut expected = listed_from_model(&image_model(layer));
        // Directory sizes, whiteout times and implied directories' times are the writer's.
        for (path, l) in listed.iter_mut() {
            let e = expected.get_mut(path);
            if l.perms.starts_with('d') {
                l.size.clear();
                l.time.clear();
                if let Some(e) = e {
                    e.time.clear();
                }
            } else if l.perms.starts_with('c') && l.size == "0,0" {
                l.time.clear();
                if let Some(e) = e {
                    e.time.clear();
                    e.perms = l.perms.clone();
                }
            }
        }
        assert_eq!(
            listed, expected,
            "layer {i}: unsquashfs -lln against the tar"
        );
    }
}

/// Tars of the rich fixture with every compressor and some block sizes read
/// back identically through the reader and `unsquashfs`.
#[test]
fn every_compressor_and_block_size_reads_back() {
    let t = tempfile::tempdir().unwrap();
    let layer = &fixtures::rich_image().layers()[0].clone();
    let tar = layer.to_tar();
    let model = image_model(layer);
    for (compressor, block_size) in [
        (Compressor::Zstd, 4096),
        (Compressor::Gzip, 128 * 1024),
        (Compressor::Xz, 1 << 20),
        (Compressor::Lz4, 65536),
    ] {
        let path = t.path().join(format!("{compressor}-{block_size}.sqfs"));
        write_image(&path, &mut &tar[..], &settings(compressor, block_size), 1).unwrap();
        let reader = SquashfsLayer::open(&path, "l", 1 << 20).unwrap();
        assert_eq!(reader.compression(), (compressor.id(), block_size));
        assert_same(
            &format!("{compressor} {block_size}"),
            &without_whiteout_metadata(&model),
            &without_whiteout_metadata(&reader_tree(&reader)),
            CompareOptions::ignoring_dir_mtimes(),
        );
        let out = Command::new("unsquashfs")
            .args(["-s"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Compression {compressor}")),
            "{text}"
        );
    }
}

#[test]
fn an_empty_tar_is_an_image_with_an_empty_root() {
    let t = tempfile::tempdir().unwrap();
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    d.create("base", None).unwrap();
    let r = d.layer_reader("base").unwrap();
    assert!(r.read_dir(Path::new("")).unwrap().is_empty());
    assert_eq!(
        r.lookup(Path::new("")).unwrap().unwrap().kind,
        FileKind::Directory
    );
    assert!(d.exists("base"));
    assert_eq!(d.layers().unwrap(), vec!["base".to_string()]);
    assert!(matches!(
        d.create("base", None),
        Err(DriverError::LayerExists(_))
    ));
}

/// A random layer tar: entries over a small name space so that they collide,
/// replace each other, link and white each other out.
#[derive(Debug, Clone)]
enum Op {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Hardlink(String, String),
    Whiteout(String),
    Opaque(String),
    Fifo(String),
    Device(String, u32, u32),
    Xattr(String, String, Vec<u8>),
}

/// Directory paths (`d`, `e/d`, ...): where directories, opaque markers and
/// sometimes symlinks go.
fn dir_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["d", "e"]), 1..3).prop_map(|v| v.join("/"))
}

/// Leaf paths (`x`, `d/y`, ...): files, links and devices, colliding with each
/// other but rarely standing where a directory is needed.
fn leaf_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["d", "e"]), 0..3),
        prop::sample::select(vec!["x", "y", "z"]),
    )
        .prop_map(|(mut v, leaf)| {
            v.push(leaf);
            v.join("/")
        })
}

/// Either kind of path.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![dir_path(), leaf_path()]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (dir_path(), prop::sample::select(vec![0o755u32, 0o700, 0o1777]))
            .prop_map(|(p, m)| Op::Dir(p, m)),
        3 => (
            leaf_path(),
            prop::collection::vec(any::<u8>(), 0..300),
            prop::sample::select(vec![0o644u32, 0o4755, 0o600])
        )
            .prop_map(|(p, c, m)| Op::File(p, c, m)),
        // Symlinks stay leaves: the applier caches a parent directory resolved
        // through a symlink even after the symlink is replaced (see the report on
        // `apply.rs`); resolution through a layer's symlinks has its own test.
        1 => (
            leaf_path(),
            prop::sample::select(vec!["d", "../e", "/d/x", "e/d", ".", "nowhere"])
        )
            .prop_map(|(p, t)| Op::Symlink(p, t.to_string())),
        1 => (leaf_path(), leaf_path()).prop_map(|(p, t)| Op::Hardlink(p, t)),
        1 => any_path().prop_map(Op::Whiteout),
        1 => dir_path().prop_map(Op::Opaque),
        1 => leaf_path().prop_map(Op::Fifo),
        1 => (
            leaf_path(),
            prop::sample::select(vec![(0u32, 0u32), (1, 3), (8, 1)])
        )
            .prop_map(|(p, (a, b))| Op::Device(p, a, b)),
        1 => (
            leaf_path(),
            prop::sample::select(vec!["user.x", "trusted.overlay.opaque", "user.y"]),
            prop::collection::vec(any::<u8>(), 0..20)
        )
            .prop_map(|(p, n, v)| Op::Xattr(p, n.to_string(), v)),
    ]
}

fn tar_of(ops: &[Op]) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    for op in ops {
        b = match op {
            Op::Dir(p, m) => b.dir(p, *m),
            Op::File(p, c, m) => b.file(p, c, *m).owner(1000, 100).mtime(1_650_000_000),
            Op::Symlink(p, t) => b.symlink(p, t),
            Op::Hardlink(p, t) => b.hardlink(p, t),
            Op::Whiteout(p) => b.whiteout(p),
            Op::Opaque(p) => b.opaque(p),
            Op::Fifo(p) => b.fifo(p, 0o640),
            Op::Device(p, a, c) => b.char_device(p, *a, *c),
            Op::Xattr(p, n, v) => b.file(p, "x", 0o644).xattr(n, v),
        };
    }
    b.to_tar()
}

/// What a layer reader presents, comparable across layer formats: kind,
/// metadata (directory and whiteout times aside), content, targets, devices,
/// xattrs, opaque flags and hard-link groups.
fn presented(layer: &dyn LayerReader) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for e in layer.read_dir(&dir).unwrap() {
            let path = dir.join(&e.name);
            let shown = path.to_string_lossy().into_owned();
            let entry = layer.lookup(&path).unwrap().unwrap();
            let desc = match entry.kind {
                FileKind::Directory => {
                    stack.push(path.clone());
                    format!(
                        "dir {:o} {}:{} opaque={}",
                        entry.mode, entry.uid, entry.gid, entry.opaque
                    )
                }
                FileKind::Whiteout => "whiteout".to_string(),
                FileKind::Regular => format!(
                    "file {:o} {}:{} {} {}",
                    entry.mode,
                    entry.uid,
                    entry.gid,
                    entry.mtime,
                    sha256_hex(&read_all(layer, &path))
                ),
                FileKind::Symlink => format!(
                    "symlink {}:{} {} -> {:?}",
                    entry.uid,
                    entry.gid,
                    entry.mtime,
                    layer.readlink(&path).unwrap()
                ),
                other => format!("{other:?} {:o} {} {}", entry.mode, entry.rdev, entry.mtime),
            };
            let xattrs: Vec<(OsString, Vec<u8>)> = layer.xattrs(&path).unwrap();
            if entry.kind != FileKind::Directory && entry.kind != FileKind::Whiteout {
                groups.entry(entry.ino).or_default().push(shown.clone());
            }
            out.insert(
                shown,
                format!(
                    "{desc} xattrs={xattrs:?} nlink={}",
                    if entry.kind == FileKind::Directory {
                        0
                    } else {
                        entry.nlink
                    }
                ),
            );
        }
    }
    for g in groups.values().filter(|g| g.len() > 1) {
        let name = g.iter().min().unwrap().clone();
        for p in g {
            out.get_mut(p)
                .unwrap()
                .push_str(&format!(" linked-with:{name}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The image of a tar presents exactly what the directory applier makes of it
    /// in overlay form, and both refuse the same tars.
    #[test]
    fn images_follow_the_appliers_tar_semantics(ops in prop::collection::vec(op_strategy(), 1..16)) {
        let t = tempfile::tempdir().unwrap();
        let tar = tar_of(&ops);
        let dir = t.path().join("dir");
        fs::create_dir(&dir).unwrap();
        let applied = apply_layer(&dir, &mut &tar[..], WhiteoutMode::Overlay { userxattr: false });
        let image = t.path().join("i.sqfs");
        let written = write_image(&image, &mut &tar[..], &settings(Compressor::Zstd, 4096), 1);
        match (&applied, &written) {
            (Ok(a), Ok(w)) => {
                prop_assert_eq!(a.entries, w.entries);
                let from_dir = presented(&DirLayer::open(&dir, WhiteoutFormat::Overlay { userxattr: false }).unwrap());
                let from_image = presented(&SquashfsLayer::open(&image, "p", 1 << 20).unwrap());
                prop_assert_eq!(from_dir, from_image);
            }
            (Err(DriverError::BadLayer(_)), Err(DriverError::BadLayer(_))) => {}
            _ => prop_assert!(false, "applier: {:?}\nimage writer: {:?}", applied, written),
        }
    }
}

/// Parents are resolved through the layer's own symlinks, inside the root,
/// as the applier resolves them.
#[test]
fn entries_below_a_symlinked_directory_land_where_the_applier_puts_them() {
    let t = tempfile::tempdir().unwrap();
    let tar = LayerBuilder::new()
        .dir("usr/lib", 0o755)
        .symlink("lib", "/usr/../../usr/lib")
        .symlink("here", ".")
        .file("lib/libx.so", "x", 0o755)
        .file("here/lib/liby.so", "y", 0o755)
        .whiteout("lib/gone")
        .opaque("here/usr")
        .to_tar();
    let dir = t.path().join("dir");
    fs::create_dir(&dir).unwrap();
    apply_layer(
        &dir,
        &mut &tar[..],
        WhiteoutMode::Overlay { userxattr: false },
    )
    .unwrap();
    let image = image_of(&t.path().join("s.sqfs"), &tar);
    let from_image = presented(&SquashfsLayer::open(&image, "s", 1 << 20).unwrap());
    assert_eq!(
        presented(&DirLayer::open(&dir, WhiteoutFormat::Overlay { userxattr: false }).unwrap()),
        from_image
    );
    assert!(
        from_image.contains_key("usr/lib/libx.so") && from_image.contains_key("usr/lib/liby.so")
    );
    assert_eq!(from_image["usr/lib/gone"], "whiteout xattrs=[] nlink=1");
    assert!(from_image["usr"].contains("opaque=true"));
    let dangling = LayerBuilder::new()
        .symlink("d", "missing")
        .file("d/x", "x", 0o644)
        .to_tar();
    let err = write_image(
        &t.path().join("d.sqfs"),
        &mut &dangling[..],
        &settings(Compressor::Zstd, 4096),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
}

/// A directory whose listing spans dozens of metadata blocks (an extended
/// directory inode with an index) reads back whole.
#[test]
fn large_directories_read_back_whole() {
    let t = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..3000)
        .map(|i| format!("entry-{i:04}-{}", "x".repeat(100 + i % 50)))
        .collect();
    let mut b = LayerBuilder::new().dir("big", 0o755);
    for (i, n) in names.iter().enumerate() {
        b = b.file(&format!("big/{n}"), format!("{i}"), 0o644);
    }
    let image = image_of(&t.path().join("l.sqfs"), &b.to_tar());
    let layer = SquashfsLayer::open(&image, "l", 4 << 20).unwrap();
    let listed: Vec<String> = layer
        .read_dir(Path::new("big"))
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    for i in [0, 1234, 2999] {
        let p = Path::new("big").join(&names[i]);
        assert_eq!(read_all(&layer, &p), format!("{i}").into_bytes());
    }
    assert!(layer
        .lookup(&Path::new("big").join("entry-9999"))
        .unwrap()
        .is_none());
    assert_eq!(unsquashfs_listing(&image).len(), names.len() + 1);
}

fn big_content(size: usize, seed: u8) -> Vec<u8> {
    // Compressible but not trivially: a repeating pattern with varying bytes.
    (0..size)
        .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i % 13) as u8)
        .collect()
}

#[test]
fn the_reader_cache_saves_decompressions() {
    let t = tempfile::tempdir().unwrap();
    let content = big_content(1 << 20, 1);
    let tar = LayerBuilder::new()
        .file("big", &content, 0o644)
        .file("small", "tail", 0o644)
        .to_tar();
    let image = image_of(&t.path().join("c.sqfs"), &tar);
    let cached = SquashfsLayer::open(&image, "c", 16 << 20).unwrap();
    assert_eq!(read_all(&cached, Path::new("big")), content);
    let first = cached.cache_stats();
    assert!(first.data.misses >= 8, "{first:?}");
    assert_eq!(read_all(&cached, Path::new("big")), content);
    let second = cached.cache_stats();
    assert_eq!(
        second.decompressions, first.decompressions,
        "a second read decompresses nothing"
    );
    assert!(second.data.hits >= 8, "{second:?}");
    assert!(
        second.metadata.hits + second.inodes.hits + second.directories.hits > first.metadata.hits
    );

    let uncached = SquashfsLayer::open(&image, "c", 0).unwrap();
    read_all(&uncached, Path::new("big"));
    let a = uncached.cache_stats();
    read_all(&uncached, Path::new("big"));
    let b = uncached.cache_stats();
    assert!(
        b.decompressions > a.decompressions,
        "without a cache every read decompresses"
    );
    assert_eq!(b.cached_bytes, 0);
}

#[test]
fn reads_of_different_files_decompress_in_parallel() {
    let t = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..4).map(|i| big_content(4 << 20, i as u8)).collect();
    let mut b = LayerBuilder::new();
    for (i, c) in contents.iter().enumerate() {
        b = b.file(&format!("f{i}"), c, 0o644);
    }
    let image = image_of(&t.path().join("p.sqfs"), &b.to_tar());
    let contents = Arc::new(contents);
    let mut overlapped = false;
    for _round in 0..10 {
        // No cache: every read decompresses.
        let layer = Arc::new(SquashfsLayer::open(&image, "p", 0).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (layer, barrier, contents) = (layer.clone(), barrier.clone(), contents.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let got = read_all(layer.as_ref(), Path::new(&format!("f{i}")));
                    assert!(got == contents[i], "f{i} reads back intact");
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        if layer.cache_stats().decompressors >= 2 {
            overlapped = true;
            break;
        }
    }
    assert!(overlapped, "two decompressions never ran at the same time");
}

fn corrupt_error(e: &DriverError, id: &str) -> bool {
    matches!(e, DriverError::CorruptLayer { id: i, .. } if i == id) && e.to_string().contains(id)
}

#[test]
fn damaged_images_are_reported_as_corrupt_layers() {
    let t = tempfile::tempdir().unwrap();
    let layer = fixtures::rich_image().layers()[0].clone();
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    d.apply_diff("victim", None, &mut &layer.to_tar()[..])
        .unwrap();
    let path = d.image_path("victim");
    let pristine = fs::read(&path).unwrap();
    let check_all = |what: &str| {
        // A fresh driver: nothing verified in this process yet.
        let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
        for frontend in [FrontendKind::Kernel, FrontendKind::Fuse] {
            let e = d.mount_spec("victim", frontend, true).unwrap_err();
            assert!(corrupt_error(&e, "victim"), "{what} ({frontend}): {e}");
        }
        let e = d.layer_reader("victim").map(drop).unwrap_err();
        assert!(corrupt_error(&e, "victim"), "{what}: {e}");
    };
    // Truncated.
    fs::write(&path, &pristine[..pristine.len() / 2]).unwrap();
    check_all("truncated");
    // One byte changed in the middle.
    let mut bad = pristine.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    fs::write(&path, &bad).unwrap();
    check_all("flipped byte");
    fs::write(&path, &pristine).unwrap();
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    assert!(d.layer_reader("victim").is_ok(), "restored image verifies");
}

/// Whatever bytes an image holds, the reader answers with data or an error
/// naming the layer, and never panics.
#[test]
fn the_reader_survives_arbitrary_damage() {
    let t = tempfile::tempdir().unwrap();
    let layer = fixtures::rich_image().layers()[0].clone();
    let pristine = fs::read(image_of(&t.path().join("ok.sqfs"), &layer.to_tar())).unwrap();
    let path = t.path().join("bad.sqfs");
    let step = (pristine.len() / 300).max(1);
    let mut errors = 0;
    for (k, at) in (0..pristine.len()).step_by(step).enumerate() {
        let mut bad = pristine.clone();
        bad[at] ^= 1 << (k % 8);
        fs::write(&path, &bad).unwrap();
        let layer = match SquashfsLayer::open(&path, "fuzzed", 1 << 20) {
            Ok(l) => l,
            Err(e) => {
                assert!(e.to_string().contains("fuzzed"), "{e}");
                errors += 1;
                continue;
            }
        };
        if let Err(e) = walk_everything(&layer) {
            assert!(e.to_string().contains("fuzzed"), "{e}");
            errors += 1;
        }
    }
    // Truncation at every tenth of the used bytes (the rest is padding).
    let used = u64::from_le_bytes(pristine[40..48].try_into().unwrap()) as usize;
    for tenth in 1..10 {
        fs::write(&path, &pristine[..used * tenth / 10]).unwrap();
        match SquashfsLayer::open(&path, "fuzzed", 1 << 20) {
            Ok(l) => assert!(
                walk_everything(&l).is_err(),
                "a truncated image cannot read fully"
            ),
            Err(e) => assert!(e.to_string().contains("fuzzed"), "{e}"),
        }
    }
    assert!(errors > 0, "damage was noticed at least sometimes");
}

fn walk_everything(layer: &SquashfsLayer) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    let mut buf = vec![0u8; 65536];
    while let Some(dir) = stack.pop() {
        layer.lookup(&dir)?;
        layer.xattrs(&dir)?;
        for e in layer.read_dir(&dir)? {
            let p = dir.join(&e.name);
            layer.lookup(&p)?;
            layer.xattrs(&p)?;
            match e.kind {
                FileKind::Directory => stack.push(p),
                FileKind::Regular => {
                    let mut at = 0;
                    loop {
                        let n = layer.read_at(&p, at, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        at += n as u64;
                    }
                }
                FileKind::Symlink => {
                    layer.readlink(&p)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Loop devices whose backing file lies under `root`.
fn loop_devices_of(root: &Path) -> Vec<String> {
    let root = fs::canonicalize(root).unwrap();
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) {
            if Path::new(backing.trim()).starts_with(&root) {
                out.push(name);
            }
        }
    }
    out
}

/// Waits for auto-cleared loop devices to go; true when none is left.
fn wait_no_loops(root: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if loop_devices_of(root).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn layer_mounts_are_shared_and_released_with_their_last_user() {
    if !require_privileged("squashfs loop device reference counting") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let _unmount = Unmounter(t.path().to_path_buf());
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    let base = LayerBuilder::new().file("etc/a", "a", 0o644).to_tar();
    let top = LayerBuilder::new().file("etc/b", "b", 0o644).to_tar();
    d.apply_diff("base", None, &mut &base[..]).unwrap();
    d.apply_diff("top", Some("base"), &mut &top[..]).unwrap();
    d.create_rw("c1", Some("top")).unwrap();
    d.create_rw("c2", Some("top")).unwrap();
    let table = MountTable::new(t.path());
    let layer_dirs = [d.layer_mount_dir("base"), d.layer_mount_dir("top")];
    {
        let m1 = table_mount(&table, &d, "c1", false, &t.path().join("m1"));
        let m2 = table_mount(&table, &d, "c2", false, &t.path().join("m2"));
        let image_view = table_mount(&table, &d, "top", true, &t.path().join("m3"));
        assert_eq!(
            loop_devices_of(t.path()).len(),
            2,
            "one loop device per layer"
        );
        assert_eq!(fs::read_to_string(t.path().join("m2/etc/a")).unwrap(), "a");
        fs::write(t.path().join("m1/etc/new"), "c1 only").unwrap();
        assert!(!t.path().join("m2/etc/new").exists());
        drop(m1);
        drop(image_view);
        let info = MountInfo::read().unwrap();
        assert!(
            layer_dirs.iter().all(|dir| info.is_mountpoint(dir)),
            "c2 still uses the layers"
        );
        assert_eq!(fs::read_to_string(t.path().join("m2/etc/b")).unwrap(), "b");
        drop(m2);
    }
    let info = MountInfo::read().unwrap();
    assert!(
        layer_dirs.iter().all(|dir| !info.is_mountpoint(dir)),
        "the last put releases the layer mounts"
    );
    assert!(
        wait_no_loops(t.path()),
        "no loop device is left: {:?}",
        loop_devices_of(t.path())
    );
    assert!(table.list().unwrap().is_empty());
}

#[test]
fn a_vanished_mount_releases_its_layer_mounts_on_the_next_command() {
    if !require_privileged("squashfs stale layer mounts") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let _unmount = Unmounter(t.path().to_path_buf());
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    let base = LayerBuilder::new().file("a", "a", 0o644).to_tar();
    d.apply_diff("base", None, &mut &base[..]).unwrap();
    let table = MountTable::new(t.path());
    let m = table_mount(&table, &d, "base", true, &t.path().join("m"));
    // Someone unmounts the overlay behind Lamina's back.
    nix::mount::umount2(&m.target, nix::mount::MntFlags::empty()).unwrap();
    std::mem::forget(m);
    table.prune().unwrap();
    assert!(!MountInfo::read()
        .unwrap()
        .is_mountpoint(&d.layer_mount_dir("base")));
    assert!(wait_no_loops(t.path()));
}

#[test]
fn containers_keep_lower_hard_links_linked() {
    if !require_privileged("squashfs hard links in containers") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let _unmount = Unmounter(t.path().to_path_buf());
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    let base = LayerBuilder::new()
        .dir("etc", 0o750)
        .owner(0, 4)
        .mtime(1_500_000_000)
        .file("etc/a", "linked\n", 0o640)
        .owner(7, 8)
        .xattr("user.k", "v")
        .hardlink("etc/b", "etc/a")
        .hardlink("c", "etc/a")
        .file("lone", "x", 0o644)
        .hardlink("lone2", "lone")
        .to_tar();
    let top = LayerBuilder::new()
        .whiteout("lone2")
        .file("x", "x", 0o644)
        .to_tar();
    d.apply_diff("base", None, &mut &base[..]).unwrap();
    d.apply_diff("top", Some("base"), &mut &top[..]).unwrap();
    d.create_rw("c", Some("top")).unwrap();
    // The copies are invisible: a fresh container has no changes.
    assert_eq!(d.changes("c", Some("top")).unwrap(), vec![]);
    let upper = d.diff_dir("c");
    assert!(upper.join("etc/a").exists() && upper.join("c").exists());
    assert!(
        !upper.join("lone").exists(),
        "a group with one visible name stays below"
    );
    let table = MountTable::new(t.path());
    let mnt = t.path().join("m");
    let before;
    {
        let _m = table_mount(&table, &d, "c", false, &mnt);
        before = scan_tree(&mnt).unwrap();
        assert_eq!(
            before.get("/etc/a").unwrap().link_group.as_deref(),
            Some("/c")
        );
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("etc/b"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"more\n").unwrap();
        drop(f);
        assert_eq!(
            fs::read_to_string(mnt.join("etc/a")).unwrap(),
            "linked\nmore\n"
        );
        assert_eq!(fs::read_to_string(mnt.join("c")).unwrap(), "linked\nmore\n");
    }
    let changes: Vec<String> = d
        .changes("c", Some("top"))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(changes, ["C /c", "C /etc", "C /etc/a", "C /etc/b"]);
    let mut diff = Vec::new();
    d.diff("c", Some("top"), &mut diff).unwrap();
    let names: Vec<String> = tar::Archive::new(&diff[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("etc/b")), "{names:?}");
    assert!(wait_no_loops(t.path()));
}

#[test]
fn cleanup_removes_leftovers_of_dead_processes_only() {
    let t = tempfile::tempdir().unwrap();
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    d.create("base", None).unwrap();
    let home = d.home().to_path_buf();
    let dead = home.join("staging/x.999999999.0123456789abcdef.sqfs");
    let alive = home.join(format!(
        "staging/y.{}.0123456789abcdef.sqfs",
        std::process::id()
    ));
    fs::write(&dead, "partial").unwrap();
    fs::write(&alive, "in progress").unwrap();
    fs::write(home.join("orphan.sqfs"), "no metadata").unwrap();
    fs::create_dir_all(home.join("upper/ghost/diff")).unwrap();
    fs::write(home.join("meta/gone.json"), "{}").unwrap();
    d.cleanup().unwrap();
    assert!(!dead.exists() && alive.exists());
    assert!(!home.join("orphan.sqfs").exists());
    assert!(!home.join("upper/ghost").exists());
    assert!(!home.join("meta/gone.json").exists());
    assert!(d.exists("base"));
}

#[test]
fn images_are_written_streaming_with_their_settings_recorded() {
    let t = tempfile::tempdir().unwrap();
    let d = SquashfsDriver::with_options(
        t.path(),
        SquashfsOptions {
            compressor: Compressor::Gzip,
            level: Some(6),
            block_size: 65536,
            cache_bytes: 1 << 20,
        },
    )
    .unwrap();
    let content = big_content(3 << 20, 9);
    // A reader that hands the tar over in odd-sized pieces.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(777);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let tar = LayerBuilder::new().file("f", &content, 0o644).to_tar();
    let stats = d.apply_diff("l", None, &mut Dribble(&tar)).unwrap();
    assert_eq!(stats.bytes, content.len() as u64);
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(d.home().join("meta/l.json")).unwrap()).unwrap();
    assert_eq!(meta["image"]["compressor"], "gzip:6");
    assert_eq!(meta["image"]["block_size"], 65536);
    let size = fs::metadata(d.image_path("l")).unwrap().len();
    assert_eq!(meta["image"]["size"], size);
    assert_eq!(size % 4096, 0, "images are padded to 4 KiB");
    assert!(size < content.len() as u64 / 2, "content is compressed");
    let r = d.layer_reader("l").unwrap();
    assert_eq!(read_all(r.as_ref(), Path::new("f")), content);
    let mut piece = [0u8; 10];
    let mid = 1_500_000u64;
    assert_eq!(r.read_at(Path::new("f"), mid, &mut piece).unwrap(), 10);
    assert_eq!(&piece, &content[mid as usize..mid as usize + 10]);
    let image_file = fs::File::open(d.image_path("l")).unwrap();
    let mut magic = [0u8; 4];
    image_file.read_exact_at(&mut magic, 0).unwrap();
    assert_eq!(&magic, b"hsqs");
}

#[test]
fn fuse_specs_stack_in_process_readers() {
    let (_t, d, ids) = rich_store();
    d.create_rw("c", Some(ids.last().unwrap())).unwrap();
    match d.mount_spec("c", FrontendKind::Fuse, false).unwrap() {
        MountSpec::Stack {
            lowers,
            upper,
            whiteouts,
            ..
        } => {
            assert_eq!(lowers.len(), ids.len());
            assert!(lowers.iter().all(|l| l.directory().is_none()));
            assert!(lowers[0].open_file(Path::new("x")).unwrap().is_none());
            assert_eq!(upper.unwrap().0, d.diff_dir("c"));
            assert!(matches!(whiteouts, WhiteoutFormat::Overlay { .. }));
        }
        other => panic!("{other:?}"),
    }
    match d.mount_spec("c", FrontendKind::Fuse, true).unwrap() {
        MountSpec::Stack { lowers, upper, .. } => {
            assert_eq!(lowers.len(), ids.len() + 1, "the upper joins the lowers");
            assert!(upper.is_none());
        }
        other => panic!("{other:?}"),
    }
    match d.mount_spec(&ids[1], FrontendKind::Kernel, true).unwrap() {
        MountSpec::Overlay {
            images,
            lowers,
            upper,
            ..
        } => {
            assert_eq!(images.len(), 2);
            assert_eq!(lowers[0], d.layer_mount_dir(&ids[1]));
            assert!(upper.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(d.mount_spec(&ids[1], FrontendKind::Kernel, false).is_err());
}

/// A container's diff applied as a new layer gives a container with the same
/// tree, hard links made inside the container included. (Without an inode index
/// overlayfs reports the first name of a lower file linked in this session with
/// the lower st_ino until the next mount; the link itself is real at once.)
#[test]
fn a_committed_container_has_the_containers_tree() {
    if !require_privileged("squashfs commit round trip") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let _unmount = Unmounter(t.path().to_path_buf());
    let d = SquashfsDriver::with_options(t.path(), options(1)).unwrap();
    let base = LayerBuilder::new()
        .file("a", "base a", 0o644)
        .dir("d", 0o755)
        .file("d/a", "base d/a", 0o640)
        .dir("d/e", 0o700)
        .owner(1000, 1000)
        .file("d/e/a", "deep", 0o644)
        .hardlink("d/b", "d/a")
        .to_tar();
    let second = LayerBuilder::new()
        .whiteout("a")
        .file("b", "upper b", 0o600)
        .to_tar();
    d.apply_diff("l1", None, &mut &base[..]).unwrap();
    d.apply_diff("l2", Some("l1"), &mut &second[..]).unwrap();
    d.create_rw("c1", Some("l2")).unwrap();
    let table = MountTable::new(t.path());
    let mnt = t.path().join("m");
    {
        let _m = table_mount(&table, &d, "c1", false, &mnt);
        fs::hard_link(mnt.join("d/e/a"), mnt.join("x")).unwrap();
        fs::write(mnt.join("x"), "through x").unwrap();
        assert_eq!(fs::read_to_string(mnt.join("d/e/a")).unwrap(), "through x");
        fs::write(mnt.join("d/a"), "one name of a lower group").unwrap();
        assert_eq!(
            fs::read_to_string(mnt.join("d/b")).unwrap(),
            "one name of a lower group"
        );
    }
    let after = {
        let _m = table_mount(&table, &d, "c1", true, &mnt);
        scan_tree(&mnt).unwrap()
    };
    assert_eq!(
        after.get("/x").unwrap().link_group.as_deref(),
        Some("/d/e/a")
    );
    let mut diff = Vec::new();
    d.diff("c1", Some("l2"), &mut diff).unwrap();
    d.apply_diff("l3", Some("l2"), &mut &diff[..]).unwrap();
    d.create_rw("c2", Some("l3")).unwrap();
    let committed = {
        let _m = table_mount(&table, &d, "c2", false, &mnt);
        scan_tree(&mnt).unwrap()
    };
    assert_same(
        "committed",
        &after,
        &committed,
        CompareOptions::ignoring_dir_mtimes(),
    );
    assert!(wait_no_loops(t.path()));
}
