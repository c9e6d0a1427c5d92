//! Copy-ups caused by attribute changes: the data of a lower file is copied
//! exactly once (however many chmod/chown/utimens/writes follow), only as far
//! as a truncation keeps it, and the upper it leaves is read right by kernel
//! overlayfs with the options Lamina mounts (`metacopy=off`).

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

/// A lower file big enough that a second copy would show in the byte count.
const BIG: u64 = 3 << 20;

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn stack(base: &std::path::Path) -> StackDirs {
    let dirs = StackDirs::build(
        base,
        &[vec![
            Item::Dir("d", 0o755),
            Item::File("d/small", b"small file", 0o644),
        ]],
        OVERLAY,
    );
    fs::write(dirs.lowers[0].join("d/big"), pattern(BIG)).unwrap();
    dirs
}

#[test]
fn attribute_changes_copy_the_data_once() {
    if !gate("attribute_changes_copy_the_data_once") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let m = &dirs.merged;
    let big = m.join("d/big");
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));

    fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).unwrap();
    let s = guard.stats();
    assert_eq!(
        (s.copy_ups, s.copy_up_bytes),
        (2, BIG),
        "d and d/big: {s:?}"
    );
    // The upper holds the whole file with its new mode at once.
    let up = dirs.upper.join("d/big");
    assert_eq!(fs::metadata(&up).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::read(&up).unwrap(), pattern(BIG));

    std::os::unix::fs::lchown(&big, Some(12), Some(34)).unwrap();
    assert_eq!(fs::read(&big).unwrap(), pattern(BIG), "reads give the data");
    let mut f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"XYZ").unwrap();
    drop(f);
    set_mtime(&big, 1_234_567_890).unwrap();
    let s = guard.stats();
    assert_eq!(
        (s.copy_ups, s.copy_up_bytes),
        (2, BIG),
        "later changes and writes copy nothing more: {s:?}"
    );
    let mut want = pattern(BIG);
    want[10..13].copy_from_slice(b"XYZ");
    assert_eq!(fs::read(&big).unwrap(), want);
    assert_eq!(mode_owner(&big), (0o600, 12, 34));
    guard.unmount();

    // Kernel overlayfs, mounted as Lamina's diff and commit mount it, reads the
    // upper the same way.
    let _kernel = KernelOverlay::mount(&dirs);
    assert_eq!(fs::read(&big).unwrap(), want);
    assert_eq!(mode_owner(&big), (0o600, 12, 34));
    assert_eq!(fs::metadata(&big).unwrap().mtime(), 1_234_567_890);
}

#[test]
fn truncation_copies_only_what_stays() {
    if !gate("truncation_copies_only_what_stays") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));

    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.join("d/small"))
        .unwrap();
    f.set_len(5).unwrap();
    drop(f);
    let base = guard.stats().copy_up_bytes;
    assert_eq!(fs::read(m.join("d/small")).unwrap(), b"small");

    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.join("d/big"))
        .unwrap()
        .write_all(b"new")
        .unwrap();
    let s = guard.stats();
    assert_eq!(s.copy_up_bytes, base, "O_TRUNC copies no data: {s:?}");
    assert_eq!(fs::read(m.join("d/big")).unwrap(), b"new");

    // Growing a lower file by truncate copies its bytes and extends the copy.
    let dirs2 = t.path().join("second");
    fs::create_dir(&dirs2).unwrap();
    guard.unmount();
    let dirs = stack(&dirs2);
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), &dirs.merged, &fuse_options(true));
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dirs.merged.join("d/big"))
        .unwrap();
    f.set_len(BIG + 100).unwrap();
    drop(f);
    let mut want = pattern(BIG);
    want.resize((BIG + 100) as usize, 0);
    assert_eq!(fs::read(dirs.merged.join("d/big")).unwrap(), want);
    assert_eq!(guard.stats().copy_up_bytes, BIG);
}

#[test]
fn volatile_mounts_never_flush_the_upper() {
    if !gate("volatile_mounts_never_flush_the_upper") {
        return;
    }
    for volatile in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let dirs = stack(t.path());
        let m = &dirs.merged;
        let options = fuse_frontend::FuseOptions {
            volatile,
            ..fuse_options(true)
        };
        let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &options);
        fs::set_permissions(m.join("d/big"), fs::Permissions::from_mode(0o600)).unwrap();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("d/small"))
            .unwrap();
        f.write_all(b"+").unwrap();
        f.sync_all().unwrap();
        drop(f);
        let s = guard.stats();
        assert_eq!(s.copy_up_bytes, BIG + 10, "{s:?}");
        if volatile {
            assert_eq!(s.syncs, 0, "a volatile mount flushes nothing: {s:?}");
        } else {
            assert!(s.syncs >= 3, "two copy-ups and an fsync are flushed: {s:?}");
        }
        // Either way the upper holds the right data at once.
        assert_eq!(fs::read(dirs.upper.join("d/big")).unwrap(), pattern(BIG));
        assert_eq!(
            fs::read(dirs.upper.join("d/small")).unwrap(),
            b"small file+"
        );
        guard.unmount();
    }
}
