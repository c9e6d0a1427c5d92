//! File data goes through FUSE passthrough where a real file backs it, and
//! through the server otherwise (or when passthrough is off).

mod common;

use std::fs;
use std::io::{Read, Write};

use common::*;

/// Whether the running kernel has FUSE passthrough (6.9 and later).
fn kernel_has_passthrough() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

fn layers() -> Vec<Vec<Item>> {
    vec![vec![
        Item::File("low", b"lower data", 0o644),
        Item::File("low2", b"to be copied up", 0o644),
        Item::File("low3", b"read while written", 0o644),
    ]]
}

#[test]
fn upper_files_and_read_only_stacks_use_passthrough() {
    if !gate("upper_files_and_read_only_stacks_use_passthrough") {
        return;
    }
    if !kernel_has_passthrough() {
        eprintln!("skipped: this kernel has no FUSE passthrough");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &layers(), OVERLAY);
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
    fs::write(m.join("up"), b"upper data").unwrap();
    assert_eq!(fs::read(m.join("up")).unwrap(), b"upper data");
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("low2"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    assert_eq!(fs::read(m.join("low2")).unwrap(), b"to be copied up!");
    let s = guard.stats();
    assert_eq!(
        (s.reads, s.writes),
        (0, 0),
        "upper file data never reaches the server: {s:?}"
    );
    assert!(s.passthrough_opens >= 4, "{s:?}");
    assert_eq!(s.copy_ups, 1);

    // A lower file of a writable stack is read through the server (its inode
    // moves to the copy once something writes it).
    assert_eq!(fs::read(m.join("low")).unwrap(), b"lower data");
    let s = guard.stats();
    assert!(s.reads > 0 && s.cached_opens >= 1, "{s:?}");

    // Written while open for reading: the writer goes direct, the data is right.
    let mut reader = fs::File::open(m.join("low3")).unwrap();
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .open(m.join("low3"))
        .unwrap();
    writer.write_all(b"READ").unwrap();
    drop(writer);
    let mut old = String::new();
    reader.read_to_string(&mut old).unwrap();
    assert_eq!(
        old, "read while written",
        "an open lower file keeps its content"
    );
    drop(reader);
    assert!(guard.stats().direct_opens >= 1);
    assert_eq!(fs::read(m.join("low3")).unwrap(), b"READ while written");
    guard.unmount();

    // Read-only stacks pass lower files through.
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, false), m, &fuse_options(true));
    assert_eq!(fs::read(m.join("low")).unwrap(), b"lower data");
    let s = guard.stats();
    assert_eq!(s.reads, 0, "{s:?}");
    assert_eq!(s.passthrough_opens, 1, "{s:?}");
    guard.unmount();
}

#[test]
fn without_passthrough_data_goes_through_the_server() {
    if !gate("without_passthrough_data_goes_through_the_server") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &layers(), OVERLAY);
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(false));
    fs::write(m.join("up"), b"upper data").unwrap();
    // A new open drops the page cache of an upper file, so this read reaches the server.
    assert_eq!(fs::read(m.join("up")).unwrap(), b"upper data");
    let s = guard.stats();
    assert!(s.reads > 0 && s.writes > 0, "{s:?}");
    assert_eq!(s.passthrough_opens, 0);
    guard.unmount();
}
