//! [`Tree`]: a comparable description of a file tree, read from disk with
//! [`scan_tree`] or computed from layers, and [`compare_trees`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::digest::sha256_hex_of_reader;

/// Extended attributes that [`scan_tree`] leaves out: bookkeeping of overlayfs and
/// the security module, which are not part of an image's content.
pub const IGNORED_XATTR_PREFIXES: &[&str] =
    &["trusted.overlay.", "user.overlay.", "security.selinux"];

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file, identified by the lowercase hex SHA-256 of its content.
    File {
        /// Hex SHA-256 of the content.
        sha256: String,
    },
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link target, verbatim.
        target: String,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl NodeKind {
    fn name(&self) -> &'static str {
        match self {
            NodeKind::File { .. } => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDevice { .. } => "char device",
            NodeKind::BlockDevice { .. } => "block device",
        }
    }
}

/// One path of a [`Tree`] with the metadata that an image defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Content length for files, target length for symlinks, 0 otherwise.
    pub size: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes (minus [`IGNORED_XATTR_PREFIXES`]).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a path hard-linked with other paths of the tree: the smallest path of
    /// its link group (the same string on every member); `None` otherwise.
    pub link_group: Option<String>,
}

/// A file tree: absolute paths below the root (`"/etc/passwd"`; the root itself
/// is not included) mapped to their [`Node`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// The nodes by path.
    pub nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// The node at `path` (`"/etc/passwd"`; a missing leading `/` is added).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&absolute(path))
    }

    /// Whether `path` exists in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The paths directly inside directory `dir` (`"/"` for the root), sorted.
    pub fn children(&self, dir: &str) -> Vec<&str> {
        let dir = absolute(dir);
        let prefix = if dir == "/" { dir } else { format!("{dir}/") };
        self.nodes
            .keys()
            .filter(|p| p.len() > prefix.len() && p.starts_with(&prefix))
            .filter(|p| !p[prefix.len()..].contains('/'))
            .map(String::as_str)
            .collect()
    }

    /// The members of `path`'s hard-link group, sorted (just `path` if it has none).
    pub fn link_group_of(&self, path: &str) -> Vec<&str> {
        let path = absolute(path);
        match self.nodes.get(&path).and_then(|n| n.link_group.as_ref()) {
            Some(group) => self
                .nodes
                .iter()
                .filter(|(_, n)| n.link_group.as_ref() == Some(group))
                .map(|(p, _)| p.as_str())
                .collect(),
            None => self
                .nodes
                .get_key_value(&path)
                .map(|(p, _)| vec![p.as_str()])
                .unwrap_or_default(),
        }
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has no paths.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl fmt::Display for Tree {
    /// One line per path, like `ls -l` (useful in assertion messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (path, n) in &self.nodes {
            write!(
                f,
                "{:>12} {:04o} {}:{} {:>8} {} {}",
                n.kind.name(),
                n.mode,
                n.uid,
                n.gid,
                n.size,
                n.mtime,
                path
            )?;
            match &n.kind {
                NodeKind::Symlink { target } => write!(f, " -> {target}")?,
                NodeKind::File { sha256 } => write!(f, " sha256:{}", &sha256[..12])?,
                NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                    write!(f, " {major},{minor}")?
                }
                NodeKind::Dir | NodeKind::Fifo => {}
            }
            if let Some(g) = &n.link_group {
                write!(f, " [link group {g}]")?;
            }
            for (k, v) in &n.xattrs {
                write!(f, " {k}={}", show_bytes(v))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

pub(crate) fn absolute(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn show_bytes(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("0x{}", hex::encode(v)),
    }
}

/// Assigns `link_group` from `(path, inode key)` pairs: keys shared by two or
/// more paths form a group named after its smallest path.
pub(crate) fn assign_link_groups<K: Ord>(tree: &mut Tree, members: Vec<(String, K)>) {
    let mut groups: BTreeMap<K, Vec<String>> = BTreeMap::new();
    for (path, key) in members {
        groups.entry(key).or_default().push(path);
    }
    for paths in groups.into_values().filter(|p| p.len() > 1) {
        let name = paths.iter().min().cloned();
        for p in &paths {
            if let Some(node) = tree.nodes.get_mut(p) {
                node.link_group = name.clone();
            }
        }
    }
}

/// Reads the tree below `dir` without following symlinks: lstat metadata,
/// symlink targets, content digests, xattrs (minus [`IGNORED_XATTR_PREFIXES`])
/// and hard-link groups (from device and inode of non-directories with
/// `nlink > 1`).
pub fn scan_tree(dir: &Path) -> io::Result<Tree> {
    let mut tree = Tree::default();
    let mut inodes = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((host_dir, rel_dir)) = stack.pop() {
        for entry in fs::read_dir(&host_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let rel = format!("{rel_dir}/{}", name.to_string_lossy());
            let host = entry.path();
            let meta = fs::symlink_metadata(&host)?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push((host.clone(), rel.clone()));
                NodeKind::Dir
            } else if ft.is_symlink() {
                let target = fs::read_link(&host)?;
                NodeKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                }
            } else if ft.is_file() {
                let (sha256, _) = sha256_hex_of_reader(fs::File::open(&host)?)?;
                NodeKind::File { sha256 }
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
                if ft.is_char_device() {
                    NodeKind::CharDevice { major, minor }
                } else {
                    NodeKind::BlockDevice { major, minor }
                }
            } else {
                return Err(io::Error::other(format!(
                    "{}: unsupported file type (socket?)",
                    host.display()
                )));
            };
            let size = match kind {
                NodeKind::File { .. } | NodeKind::Symlink { .. } => meta.size(),
                _ => 0,
            };
            if !ft.is_dir() && meta.nlink() > 1 {
                inodes.push((rel.clone(), (meta.dev(), meta.ino())));
            }
            let xattrs = read_xattrs(&host)?;
            tree.nodes.insert(
                rel,
                Node {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: u64::from(meta.uid()),
                    gid: u64::from(meta.gid()),
                    size,
                    mtime: meta.mtime(),
                    xattrs,
                    link_group: None,
                },
            );
        }
    }
    assign_link_groups(&mut tree, inodes);
    Ok(tree)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Reads the extended attributes of `path` itself (not following symlinks).
fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let c = cpath(path)?;
    let mut out = BTreeMap::new();
    let names = loop {
        // SAFETY: a NULL buffer with size 0 asks for the needed size.
        let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(out);
            }
            return Err(err);
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            break buf;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_str = String::from_utf8_lossy(name).into_owned();
        if IGNORED_XATTR_PREFIXES
            .iter()
            .any(|p| name_str.starts_with(p))
        {
            continue;
        }
        let cname = CString::new(name).expect("split on NUL");
        if let Some(value) = get_xattr(&c, &cname)? {
            out.insert(name_str, value);
        }
    }
    Ok(out)
}

fn get_xattr(path: &CString, name: &CString) -> io::Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: a NULL buffer with size 0 asks for the needed size.
        let len = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(err),
            };
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// What [`compare_trees`] leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompareOptions {
    /// Skip directory mtimes (they change when entries are added below and
    /// implied directories get the extraction time).
    pub ignore_dir_mtimes: bool,
    /// Skip symlink mtimes (some extractors do not set them).
    pub ignore_symlink_mtimes: bool,
    /// Skip every mtime.
    pub ignore_all_mtimes: bool,
}

impl CompareOptions {
    /// Compare everything.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Compare everything except directory mtimes: the usual choice for an
    /// extracted or mounted image.
    pub fn ignoring_dir_mtimes() -> Self {
        CompareOptions {
            ignore_dir_mtimes: true,
            ..Self::default()
        }
    }
}

/// Lists the differences between `expected` and `actual`, one human-readable
/// line each (`"/etc/hostname: mode 0644 expected, found 0600"`); empty when
/// the trees are equal under `opts`.
pub fn compare_trees(expected: &Tree, actual: &Tree, opts: CompareOptions) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, want) in &expected.nodes {
        let Some(got) = actual.nodes.get(path) else {
            diffs.push(format!("{path}: missing (expected {})", want.kind.name()));
            continue;
        };
        compare_nodes(path, want, got, opts, &mut diffs);
    }
    for (path, got) in &actual.nodes {
        if !expected.nodes.contains_key(path) {
            diffs.push(format!("{path}: unexpected {}", got.kind.name()));
        }
    }
    diffs
}

/// Panics with every difference (and both trees) unless `actual` matches
/// `expected` under `opts`.
#[track_caller]
pub fn assert_trees_match(expected: &Tree, actual: &Tree, opts: CompareOptions) {
    let diffs = compare_trees(expected, actual, opts);
    if !diffs.is_empty() {
        panic!(
            "{} difference(s):\n  {}\n--- expected ---\n{expected}--- actual ---\n{actual}",
            diffs.len(),
            diffs.join("\n  ")
        );
    }
}

fn compare_nodes(
    path: &str,
    want: &Node,
    got: &Node,
    opts: CompareOptions,
    diffs: &mut Vec<String>,
) {
    if want.kind != got.kind {
        let describe = |k: &NodeKind| match k {
            NodeKind::File { sha256 } => format!("file sha256:{sha256}"),
            NodeKind::Symlink { target } => format!("symlink -> {target}"),
            NodeKind::CharDevice { major, minor } => format!("char device {major},{minor}"),
            NodeKind::BlockDevice { major, minor } => format!("block device {major},{minor}"),
            other => other.name().to_string(),
        };
        diffs.push(format!(
            "{path}: {} expected, found {}",
            describe(&want.kind),
            describe(&got.kind)
        ));
    }
    if want.mode != got.mode {
        diffs.push(format!(
            "{path}: mode {:04o} expected, found {:04o}",
            want.mode, got.mode
        ));
    }
    if (want.uid, want.gid) != (got.uid, got.gid) {
        diffs.push(format!(
            "{path}: owner {}:{} expected, found {}:{}",
            want.uid, want.gid, got.uid, got.gid
        ));
    }
    if want.size != got.size {
        diffs.push(format!(
            "{path}: size {} expected, found {}",
            want.size, got.size
        ));
    }
    let skip_mtime = opts.ignore_all_mtimes
        || (opts.ignore_dir_mtimes && want.kind == NodeKind::Dir)
        || (opts.ignore_symlink_mtimes && matches!(want.kind, NodeKind::Symlink { .. }));
    if !skip_mtime && want.mtime != got.mtime {
        diffs.push(format!(
            "{path}: mtime {} expected, found {}",
            want.mtime, got.mtime
        ));
    }
    for (name, value) in &want.xattrs {
        match got.xattrs.get(name) {
            None => diffs.push(format!("{path}: xattr {name} missing")),
            Some(v) if v != value => diffs.push(format!(
                "{path}: xattr {name} = {} expected, found {}",
                show_bytes(value),
                show_bytes(v)
            )),
            Some(_) => {}
        }
    }
    for name in got.xattrs.keys().filter(|n| !want.xattrs.contains_key(*n)) {
        diffs.push(format!("{path}: unexpected xattr {name}"));
    }
    if want.link_group != got.link_group {
        let show = |g: &Option<String>| match g {
            Some(g) => format!("hard-linked in group {g}"),
            None => "not hard-linked".to_string(),
        };
        diffs.push(format!(
            "{path}: {} expected, found {}",
            show(&want.link_group),
            show(&got.link_group)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn file_node(content: &[u8], mode: u32) -> Node {
        Node {
            kind: NodeKind::File {
                sha256: crate::sha256_hex(content),
            },
            mode,
            uid: 0,
            gid: 0,
            size: content.len() as u64,
            mtime: 5,
            xattrs: BTreeMap::new(),
            link_group: None,
        }
    }

    #[test]
    fn compare_reports_each_kind_of_difference() {
        let mut a = Tree::default();
        a.nodes.insert("/a".into(), file_node(b"x", 0o644));
        a.nodes.insert("/gone".into(), file_node(b"y", 0o644));
        let mut b = a.clone();
        b.nodes.remove("/gone");
        b.nodes.insert("/extra".into(), file_node(b"z", 0o644));
        let n = b.nodes.get_mut("/a").unwrap();
        n.mode = 0o600;
        n.mtime = 6;
        n.xattrs.insert("user.k".into(), b"v".to_vec());
        let diffs = compare_trees(&a, &b, CompareOptions::strict());
        assert_eq!(
            diffs,
            [
                "/a: mode 0644 expected, found 0600",
                "/a: mtime 5 expected, found 6",
                "/a: unexpected xattr user.k",
                "/gone: missing (expected file)",
                "/extra: unexpected file",
            ]
        );
        let relaxed = CompareOptions {
            ignore_all_mtimes: true,
            ..CompareOptions::default()
        };
        assert_eq!(compare_trees(&a, &b, relaxed).len(), 4);
        assert!(compare_trees(&a, &a, CompareOptions::strict()).is_empty());
    }

    #[test]
    fn dir_mtimes_can_be_ignored() {
        let mut a = Tree::default();
        let mut dir = file_node(b"", 0o755);
        dir.kind = NodeKind::Dir;
        dir.size = 0;
        a.nodes.insert("/d".into(), dir);
        let mut b = a.clone();
        b.nodes.get_mut("/d").unwrap().mtime = 99;
        assert_eq!(compare_trees(&a, &b, CompareOptions::strict()).len(), 1);
        assert!(compare_trees(&a, &b, CompareOptions::ignoring_dir_mtimes()).is_empty());
    }

    #[test]
    fn scan_reads_kinds_modes_links_and_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"hello").unwrap();
        fs::set_permissions(root.join("d/f"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("d/f"), root.join("h")).unwrap();
        fs::hard_link(root.join("d/f"), root.join("a-link")).unwrap();
        fs::write(root.join("single"), b"").unwrap();
        symlink("../d/f", root.join("d/rel")).unwrap();
        symlink("/etc/passwd", root.join("abs")).unwrap();
        nix::unistd::mkfifo(
            &root.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        fs::set_permissions(root.join("pipe"), fs::Permissions::from_mode(0o640)).unwrap();
        let c = cpath(&root.join("single")).unwrap();
        let name = CString::new("user.test").unwrap();
        // SAFETY: valid C strings and a valid buffer.
        let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"v1".as_ptr().cast(), 2, 0) };
        let xattrs_supported = rc == 0;

        let tree = scan_tree(root).unwrap();
        let paths: Vec<_> = tree.nodes.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["/a-link", "/abs", "/d", "/d/f", "/d/rel", "/h", "/pipe", "/single"]
        );
        let f = tree.get("d/f").unwrap();
        assert_eq!(
            f.kind,
            NodeKind::File {
                sha256: crate::sha256_hex(b"hello")
            }
        );
        assert_eq!((f.mode, f.size), (0o4755, 5));
        assert_eq!(f.link_group.as_deref(), Some("/a-link"));
        assert_eq!(tree.link_group_of("/h"), ["/a-link", "/d/f", "/h"]);
        assert_eq!(tree.get("/single").unwrap().link_group, None);
        assert_eq!(
            tree.get("/d/rel").unwrap().kind,
            NodeKind::Symlink {
                target: "../d/f".into()
            }
        );
        assert_eq!(tree.get("/d/rel").unwrap().size, 6);
        assert_eq!(tree.get("/abs").unwrap().mode, 0o777);
        assert_eq!(tree.get("/pipe").unwrap().kind, NodeKind::Fifo);
        assert_eq!(tree.get("/pipe").unwrap().mode, 0o640);
        assert_eq!(tree.get("/d").unwrap().kind, NodeKind::Dir);
        assert_eq!(tree.get("/d").unwrap().size, 0);
        assert_eq!(
            tree.children("/"),
            ["/a-link", "/abs", "/d", "/h", "/pipe", "/single"]
        );
        assert_eq!(tree.children("/d"), ["/d/f", "/d/rel"]);
        if xattrs_supported {
            assert_eq!(
                tree.get("/single")
                    .unwrap()
                    .xattrs
                    .get("user.test")
                    .unwrap(),
                b"v1"
            );
        }
        // The rendering names every path.
        let shown = tree.to_string();
        assert!(shown.contains("/d/rel -> ../d/f"), "{shown}");
    }

    #[test]
    fn scan_reads_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("null");
        let made = nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            libc::makedev(1, 3),
        );
        if made.is_err() {
            // Not permitted here (not root): nothing to check.
            return;
        }
        let tree = scan_tree(tmp.path()).unwrap();
        assert_eq!(
            tree.get("/null").unwrap().kind,
            NodeKind::CharDevice { major: 1, minor: 3 }
        );
    }
}
