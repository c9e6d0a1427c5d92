//! Requests reach the server through FUSE over io_uring where the kernel
//! offers it (one queue per CPU), and through `/dev/fuse` otherwise or when
//! the mount asks for it; either way they get the same answers (the
//! differential suite runs over both).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::*;

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel routes FUSE requests to io_uring queues for new mounts.
/// A kernel without the feature skips the test; one where it is only switched
/// off fails it when privileged tests are required (`scripts/setup.sh` turns
/// it on).
fn ring_offered(test: &str) -> bool {
    match fs::read_to_string(ENABLE_URING) {
        Err(_) => {
            eprintln!("skipped {test}: this kernel has no FUSE over io_uring");
            false
        }
        Ok(v) if v.trim() == "Y" => true,
        Ok(_) if std::env::var("LAMINA_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("{test}: {ENABLE_URING} is N; scripts/setup.sh turns it on")
        }
        Ok(_) => {
            eprintln!("skipped {test}: {ENABLE_URING} is N (scripts/setup.sh turns it on)");
            false
        }
    }
}

fn layers() -> Vec<Vec<Item>> {
    vec![vec![
        Item::Dir("d", 0o755),
        Item::File("d/low", b"lower data", 0o644),
        Item::Xattr("d/low", "user.k", b"v"),
    ]]
}

/// A little of everything: lookups, creates, data, xattrs, listings, renames,
/// removals. Returns what the merged tree reads back as.
fn exercise(m: &std::path::Path) -> Vec<String> {
    fs::write(m.join("new"), b"written").unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.join("d/low"))
        .unwrap();
    f.write_all(b" and appended").unwrap();
    drop(f);
    fs::set_permissions(m.join("d/low"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(lget_xattr(&m.join("d/low"), "user.k").unwrap(), b"v");
    fs::create_dir(m.join("sub")).unwrap();
    fs::rename(m.join("new"), m.join("sub/moved")).unwrap();
    std::os::unix::fs::symlink("sub/moved", m.join("link")).unwrap();
    assert_eq!(fs::read(m.join("link")).unwrap(), b"written");
    fs::remove_file(m.join("d/low")).unwrap();
    assert!(fs::symlink_metadata(m.join("d/low")).is_err());
    let mut seen = names(m);
    seen.extend(
        names(&m.join("sub"))
            .into_iter()
            .map(|n| format!("sub/{n}")),
    );
    seen
}

#[test]
fn requests_go_through_io_uring_where_the_kernel_offers_it() {
    let name = "requests_go_through_io_uring_where_the_kernel_offers_it";
    if !gate(name) || !ring_offered(name) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &layers(), OVERLAY);
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), &dirs.merged, &fuse_options(true));
    let seen = exercise(&dirs.merged);
    assert_eq!(seen, ["d", "link", "sub", "sub/moved"]);
    let s = guard.stats();
    assert!(s.ring_requests > 20, "answered through the rings: {s:?}");
    assert!(s.passthrough_opens > 0, "passthrough over io_uring: {s:?}");
    assert_eq!((s.reads, s.writes), (0, 0), "{s:?}");
    guard.unmount();
    assert!(!is_mounted(&dirs.merged));
}

#[test]
fn file_data_goes_through_the_rings_without_passthrough() {
    let name = "file_data_goes_through_the_rings_without_passthrough";
    if !gate(name) || !ring_offered(name) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &layers(), OVERLAY);
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(false));
    // Larger than one request: reads and writes are split at the payload size.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(m.join("big"), &big).unwrap();
    assert_eq!(fs::read(m.join("big")).unwrap(), big);
    assert_eq!(fs::read(m.join("d/low")).unwrap(), b"lower data");
    let s = guard.stats();
    assert!(s.reads > 0 && s.writes > 0, "{s:?}");
    assert!(s.ring_requests >= s.reads + s.writes, "{s:?}");
    guard.unmount();
}

#[test]
fn a_mount_may_keep_to_dev_fuse() {
    let name = "a_mount_may_keep_to_dev_fuse";
    if !gate(name) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &layers(), OVERLAY);
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), &dirs.merged, &dev_fuse_options());
    let seen = exercise(&dirs.merged);
    assert_eq!(seen, ["d", "link", "sub", "sub/moved"]);
    let s = guard.stats();
    assert_eq!(s.ring_requests, 0, "{s:?}");
    guard.unmount();
}
