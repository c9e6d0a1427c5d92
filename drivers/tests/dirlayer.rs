//! DirLayer: whiteout translation in every format, descriptor-based reads.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{mknod, set_xattr};
use drivers::dirlayer::DirLayer;
use drivers::layer::{DirEntry, LayerReader};
use drivers::{FileKind, WhiteoutFormat};

fn names(entries: &[DirEntry]) -> Vec<(String, FileKind)> {
    entries
        .iter()
        .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
        .collect()
}

#[test]
fn overlay_format() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("opq/sub")).unwrap();
    fs::write(root.join("opq/sub/f"), b"hello world").unwrap();
    set_xattr(&root.join("opq"), "trusted.overlay.opaque", b"y");
    set_xattr(&root.join("opq/sub/f"), "trusted.overlay.origin", b"o");
    set_xattr(&root.join("opq/sub/f"), "user.visible", b"v");
    mknod(&root.join("gone"), libc::S_IFCHR, 0, 0, 0);
    mknod(&root.join("null"), libc::S_IFCHR, 0o666, 1, 3);
    std::os::unix::fs::symlink("opq", root.join("link")).unwrap();

    let layer = DirLayer::open(root, WhiteoutFormat::Overlay { userxattr: false }).unwrap();
    assert_eq!(layer.directory(), Some(root));
    assert_eq!(
        names(&layer.read_dir(Path::new("")).unwrap()),
        [
            ("gone".to_string(), FileKind::Whiteout),
            ("link".to_string(), FileKind::Symlink),
            ("null".to_string(), FileKind::CharDevice),
            ("opq".to_string(), FileKind::Directory),
        ]
    );
    assert_eq!(
        layer.lookup(Path::new("gone")).unwrap().unwrap().kind,
        FileKind::Whiteout
    );
    let opq = layer.lookup(Path::new("opq")).unwrap().unwrap();
    assert!(opq.opaque);
    assert!(!layer.lookup(Path::new("opq/sub")).unwrap().unwrap().opaque);
    let f = layer.lookup(Path::new("opq/sub/f")).unwrap().unwrap();
    assert_eq!((f.kind, f.size), (FileKind::Regular, 11));
    assert_eq!(f.ino, fs::metadata(root.join("opq/sub/f")).unwrap().ino());
    assert_eq!(
        layer.xattrs(Path::new("opq/sub/f")).unwrap(),
        vec![(OsString::from("user.visible"), b"v".to_vec())],
        "overlay's private xattrs are hidden"
    );
    assert!(layer.xattrs(Path::new("opq")).unwrap().is_empty());
    let mut buf = [0u8; 5];
    assert_eq!(
        layer.read_at(Path::new("opq/sub/f"), 6, &mut buf).unwrap(),
        5
    );
    assert_eq!(&buf, b"world");
    assert_eq!(
        layer.read_at(Path::new("opq/sub/f"), 11, &mut buf).unwrap(),
        0
    );
    let fd = layer.open_file(Path::new("opq/sub/f")).unwrap().unwrap();
    let mut content = String::new();
    fs::File::from(fd).read_to_string(&mut content).unwrap();
    assert_eq!(content, "hello world");
    assert_eq!(layer.readlink(Path::new("link")).unwrap(), "opq");
    // Symlinks are presented, never followed.
    assert!(layer.lookup(Path::new("link/sub")).unwrap().is_none());
    assert!(layer.read_dir(Path::new("link")).is_err());
    assert!(layer.open_file(Path::new("link")).is_err());
    assert!(
        layer.open_file(Path::new("null")).is_err(),
        "device nodes are never opened"
    );
    assert!(layer.open_file(Path::new("opq")).is_err());
    assert!(layer.lookup(Path::new("missing")).unwrap().is_none());
    assert!(layer
        .lookup(Path::new("opq/sub/f/below-a-file"))
        .unwrap()
        .is_none());
    // `..` cannot leave the layer.
    let root_entry = layer.lookup(Path::new("")).unwrap().unwrap();
    assert_eq!(
        layer.lookup(Path::new("../../..")).unwrap().unwrap(),
        root_entry
    );
}

#[test]
fn overlay_format_with_userxattr() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("d")).unwrap();
    set_xattr(&tmp.path().join("d"), "user.overlay.opaque", b"y");
    let user = DirLayer::open(tmp.path(), WhiteoutFormat::Overlay { userxattr: true }).unwrap();
    assert!(user.lookup(Path::new("d")).unwrap().unwrap().opaque);
    assert!(user.xattrs(Path::new("d")).unwrap().is_empty());
    let trusted = DirLayer::open(tmp.path(), WhiteoutFormat::Overlay { userxattr: false }).unwrap();
    assert!(!trusted.lookup(Path::new("d")).unwrap().unwrap().opaque);
}

#[test]
fn aufs_format() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("d/.wh..wh.plnk")).unwrap();
    fs::write(root.join("d/.wh..wh..opq"), b"").unwrap();
    fs::write(root.join("d/kept"), b"k").unwrap();
    fs::write(root.join(".wh.gone"), b"").unwrap();
    fs::write(root.join(".wh..wh.aufs"), b"").unwrap();
    // A whiteout shadowed by an entry of the same layer lists the entry once.
    fs::write(root.join(".wh.back"), b"").unwrap();
    fs::write(root.join("back"), b"b").unwrap();

    let layer = DirLayer::open(root, WhiteoutFormat::Aufs).unwrap();
    assert_eq!(
        names(&layer.read_dir(Path::new("")).unwrap()),
        [
            ("back".to_string(), FileKind::Regular),
            ("d".to_string(), FileKind::Directory),
            ("gone".to_string(), FileKind::Whiteout),
        ]
    );
    assert_eq!(
        names(&layer.read_dir(Path::new("d")).unwrap()),
        [("kept".to_string(), FileKind::Regular)]
    );
    assert!(layer.lookup(Path::new("d")).unwrap().unwrap().opaque);
    assert_eq!(
        layer.lookup(Path::new("gone")).unwrap().unwrap().kind,
        FileKind::Whiteout
    );
    assert_eq!(
        layer.lookup(Path::new("back")).unwrap().unwrap().kind,
        FileKind::Regular
    );
    for hidden in [
        ".wh.gone",
        ".wh..wh.aufs",
        "d/.wh..wh..opq",
        "d/.wh..wh.plnk",
    ] {
        assert!(
            layer.lookup(Path::new(hidden)).unwrap().is_none(),
            "{hidden} is hidden"
        );
    }
    assert!(layer.read_dir(Path::new("d/.wh..wh.plnk")).is_err());
}

#[test]
fn plain_format() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::write(root.join(".wh.not-special"), b"").unwrap();
    mknod(&root.join("chr"), libc::S_IFCHR, 0, 0, 0);
    let layer = DirLayer::open(root, WhiteoutFormat::None).unwrap();
    assert_eq!(
        names(&layer.read_dir(Path::new("")).unwrap()),
        [
            (".wh.not-special".to_string(), FileKind::Regular),
            ("chr".to_string(), FileKind::CharDevice),
        ]
    );
    let root_entry = layer.lookup(Path::new("")).unwrap().unwrap();
    assert_eq!(root_entry.kind, FileKind::Directory);
    assert!(!root_entry.opaque);
}
