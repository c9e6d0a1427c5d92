//! Helpers shared by the drivers integration tests: building layer tars in
//! memory and snapshotting directory trees for exact comparison.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use drivers::fsutil;
use drivers::xattr::XattrTarget;

/// Builds an uncompressed layer tar in memory.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

/// Metadata of a tar entry under construction.
#[derive(Clone, Debug)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Extra PAX records (e.g. `SCHILY.xattr.*`, `mtime`).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Default for Attrs {
    fn default() -> Self {
        Attrs {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            pax: Vec::new(),
        }
    }
}

impl Attrs {
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.pax
            .push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        self
    }
    pub fn pax(mut self, key: &str, value: &str) -> Self {
        self.pax.push((key.to_string(), value.as_bytes().to_vec()));
        self
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(&mut self, kind: tar::EntryType, attrs: &Attrs, size: u64) -> tar::Header {
        if !attrs.pax.is_empty() {
            self.builder
                .append_pax_extensions(attrs.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(attrs.mode);
        h.set_uid(attrs.uid);
        h.set_gid(attrs.gid);
        h.set_mtime(attrs.mtime);
        h.set_size(size);
        h
    }

    pub fn dir(mut self, path: &str, attrs: Attrs) -> Self {
        let mut h = self.header(tar::EntryType::Directory, &attrs, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn file(mut self, path: &str, content: &[u8], attrs: Attrs) -> Self {
        let mut h = self.header(tar::EntryType::Regular, &attrs, content.len() as u64);
        self.builder.append_data(&mut h, path, content).unwrap();
        self
    }

    /// A file whose name bytes are given raw (non-UTF-8 allowed).
    pub fn file_raw_name(mut self, path: &[u8], content: &[u8], attrs: Attrs) -> Self {
        let mut h = self.header(tar::EntryType::Regular, &attrs, content.len() as u64);
        self.builder
            .append_data(&mut h, OsStr::from_bytes(path), content)
            .unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str, attrs: Attrs) -> Self {
        let mut h = self.header(tar::EntryType::Symlink, &attrs, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Link, &Attrs::default(), 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A hard link whose target is written verbatim into the header (may contain `..`).
    pub fn hardlink_literal(mut self, path: &str, target: &str) -> Self {
        let mut h = self.header(tar::EntryType::Link, &Attrs::default(), 0);
        h.set_link_name_literal(target).unwrap();
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn device(mut self, path: &str, block: bool, major: u32, minor: u32, attrs: Attrs) -> Self {
        let kind = if block {
            tar::EntryType::Block
        } else {
            tar::EntryType::Char
        };
        let mut h = self.header(kind, &attrs, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn fifo(mut self, path: &str, attrs: Attrs) -> Self {
        let mut h = self.header(tar::EntryType::Fifo, &attrs, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// An entry whose path is written verbatim into the header (may be absolute or contain `..`).
    pub fn file_literal_path(mut self, path: &str, content: &[u8]) -> Self {
        let mut h = self.header(
            tar::EntryType::Regular,
            &Attrs::default(),
            content.len() as u64,
        );
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.builder.append(&h, content).unwrap();
        self
    }

    /// Appends a GNU sparse entry built by the tar crate from a sparse file on disk.
    pub fn sparse_file_from(mut self, name: &str, source: &Path) -> Self {
        self.builder.sparse(true);
        self.builder.append_path_with_name(source, name).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// Everything compared about one entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    pub rdev: u64,
    pub target: Option<OsString>,
    pub content: Option<Vec<u8>>,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A whole tree: every path (relative, the root is "") and the hard-link groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSnapshot {
    pub nodes: BTreeMap<PathBuf, NodeSnapshot>,
    pub link_groups: BTreeSet<Vec<PathBuf>>,
}

fn kind_name(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

fn xattrs_of(path: &Path) -> Vec<(OsString, Vec<u8>)> {
    let parent = path.parent().unwrap();
    let dir = fsutil::open_dir(parent).unwrap();
    XattrTarget::At(dir.as_fd(), path.file_name().unwrap())
        .list()
        .unwrap()
}

/// Snapshots the tree at `root` (content of regular files included).
pub fn snapshot(root: &Path) -> TreeSnapshot {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&full).unwrap();
        let kind = kind_name(md.file_type());
        let xattrs = if rel.as_os_str().is_empty() {
            let fd = fsutil::open_dir(root).unwrap();
            XattrTarget::Fd(fd.as_fd()).list().unwrap()
        } else {
            xattrs_of(&full)
        };
        let node = NodeSnapshot {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            size: if kind == "dir" { 0 } else { md.size() },
            rdev: md.rdev(),
            target: (kind == "symlink").then(|| fs::read_link(&full).unwrap().into_os_string()),
            content: (kind == "file").then(|| {
                let mut v = Vec::new();
                fs::File::open(&full).unwrap().read_to_end(&mut v).unwrap();
                v
            }),
            xattrs,
        };
        if kind != "dir" && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        if kind == "dir" {
            for entry in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
        }
        nodes.insert(rel, node);
    }
    let link_groups = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    TreeSnapshot { nodes, link_groups }
}

/// Asserts two trees are identical, printing the first differences.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    if a == b {
        return;
    }
    let mut report = String::new();
    for (path, node) in &a.nodes {
        match b.nodes.get(path) {
            None => report.push_str(&format!("missing in actual: {path:?}\n")),
            Some(other) if other != node => report.push_str(&format!(
                "differs: {path:?}\n  expected {node:?}\n  actual   {other:?}\n"
            )),
            _ => {}
        }
    }
    for path in b.nodes.keys() {
        if !a.nodes.contains_key(path) {
            report.push_str(&format!("unexpected in actual: {path:?}\n"));
        }
    }
    if a.link_groups != b.link_groups {
        report.push_str(&format!(
            "hard-link groups differ:\n  expected {:?}\n  actual   {:?}\n",
            a.link_groups, b.link_groups
        ));
    }
    panic!(
        "trees differ ({} vs {}):\n{report}",
        expected.display(),
        actual.display()
    );
}

/// Sets an xattr on a path without following symlinks.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let dir = fsutil::open_dir(path.parent().unwrap()).unwrap();
    XattrTarget::At(dir.as_fd(), path.file_name().unwrap())
        .set(OsStr::new(name), value)
        .unwrap();
}

/// Reads an xattr of a path without following symlinks.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let dir = fsutil::open_dir(path.parent().unwrap()).unwrap();
    XattrTarget::At(dir.as_fd(), path.file_name().unwrap())
        .get(OsStr::new(name))
        .unwrap()
}

/// Creates a device node or fifo.
pub fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let ret = unsafe { libc::mknod(c.as_ptr(), kind | mode, libc::makedev(major, minor)) };
    assert_eq!(
        ret,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets the modification (and access) time of a path without following symlinks.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [ts, ts];
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        ret,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A valid v2 `security.capability` value granting CAP_NET_BIND_SERVICE (effective).
pub fn cap_net_bind_service() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}
