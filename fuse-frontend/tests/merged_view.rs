//! The merged view of read-only and writable stacks: which names show, with
//! which content and metadata, and how the view behaves as a filesystem.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

#[test]
fn names_resolve_top_down_with_whiteouts_and_opaque_directories() {
    if !gate("names_resolve_top_down_with_whiteouts_and_opaque_directories") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let top = vec![
        Item::File("shadowed", b"top", 0o644),
        Item::Whiteout("deleted"),
        Item::Dir("opaque", 0o755),
        Item::Opaque("opaque"),
        Item::File("opaque/new", b"n", 0o644),
        Item::Dir("merged", 0o750),
        Item::File("merged/from-top", b"t", 0o600),
    ];
    let bottom = vec![
        Item::File("shadowed", b"bottom", 0o644),
        Item::File("deleted", b"gone", 0o644),
        Item::File("kept", b"kept", 0o640),
        Item::Dir("opaque", 0o755),
        Item::File("opaque/hidden", b"h", 0o644),
        Item::Dir("merged", 0o755),
        Item::File("merged/from-bottom", b"b", 0o644),
    ];
    let dirs = StackDirs::build(t.path(), &[top, bottom], OVERLAY);
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, false), m, &fuse_options(true));
    assert_eq!(names(m), ["kept", "merged", "opaque", "shadowed"]);
    assert_eq!(fs::read(m.join("shadowed")).unwrap(), b"top");
    assert_eq!(names(&m.join("opaque")), ["new"]);
    assert_eq!(names(&m.join("merged")), ["from-bottom", "from-top"]);
    assert_eq!(
        mode_owner(&m.join("merged")).0,
        0o750,
        "a merged directory shows its top layer"
    );
    assert_eq!(fs::symlink_metadata(m.join("merged")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.join("merged/from-bottom")).unwrap(), b"b");
    assert_eq!(errno_of(&fs::metadata(m.join("deleted"))), libc::ENOENT);
    assert_eq!(errno_of(&fs::write(m.join("new"), b"x")), libc::EROFS);
    guard.unmount();
}
