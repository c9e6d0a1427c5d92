//! Behaviour of the FUSE frontend beyond what the differential tests compare:
//! copy-up atomicity and metadata, hard links across copy-up and remounts,
//! inode numbers, directory streams under concurrent changes, whiteouts in both
//! formats, a stack without lowers, and read-only stacks.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use drivers::WhiteoutFormat;

const CAPS: &[u8] = &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

fn work_leftovers(work: &Path) -> Vec<String> {
    names(&work.join("lamina-fuse"))
}

#[test]
fn copy_up_is_atomic_and_keeps_all_metadata() {
    if !gate("copy_up_is_atomic_and_keeps_all_metadata") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[vec![
            Item::Dir("etc", 0o750),
            Item::Owner("etc", 3, 4),
            Item::Xattr("etc", "user.dir", b"d"),
            Item::File("etc/prog", b"#!/bin/true\n", 0o4750),
            Item::Owner("etc/prog", 1234, 5678),
            Item::Xattr("etc/prog", "user.a", b"1"),
            Item::Xattr("etc/prog", "security.capability", CAPS),
            Item::File("big", b"", 0o640),
            Item::Symlink("etc/link", "prog"),
            Item::Owner("etc/link", 9, 9),
            Item::Fifo("etc/fifo"),
            Item::CharDev("etc/null", 1, 3),
        ]],
        OVERLAY,
    );
    // A 48 MiB lower file with data throughout.
    let big_size: u64 = 48 << 20;
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(dirs.lowers[0].join("big"))
            .unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..(big_size >> 20) {
            f.write_all(&chunk).unwrap();
        }
        set_mtime(&dirs.lowers[0].join("big"), FIXTURE_MTIME).unwrap();
    }
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), &dirs.merged, &fuse_options(true));
    let m = &dirs.merged;

    // Metadata-only changes copy everything up once, keeping every attribute.
    lset_xattr(&m.join("etc/prog"), "user.b", b"2").unwrap();
    let up = dirs.upper.join("etc/prog");
    let meta = fs::symlink_metadata(&up).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o4750, 1234, 5678)
    );
    assert_eq!(meta.mtime(), FIXTURE_MTIME);
    assert_eq!(fs::read(&up).unwrap(), b"#!/bin/true\n");
    assert_eq!(lget_xattr(&up, "user.a").unwrap(), b"1");
    assert_eq!(lget_xattr(&up, "user.b").unwrap(), b"2");
    assert_eq!(lget_xattr(&up, "security.capability").unwrap(), CAPS);
    let parent = fs::symlink_metadata(dirs.upper.join("etc")).unwrap();
    assert_eq!(
        (parent.mode() & 0o7777, parent.uid(), parent.gid()),
        (0o750, 3, 4)
    );
    assert_eq!(
        lget_xattr(&dirs.upper.join("etc"), "user.dir").unwrap(),
        b"d"
    );

    std::os::unix::fs::lchown(m.join("etc/link"), Some(10), Some(11)).unwrap();
    let link = fs::symlink_metadata(dirs.upper.join("etc/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid()), (10, 11));
    assert_eq!(
        fs::read_link(dirs.upper.join("etc/link")).unwrap(),
        Path::new("prog")
    );
    fs::set_permissions(m.join("etc/fifo"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(fs::symlink_metadata(dirs.upper.join("etc/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    fs::set_permissions(m.join("etc/null"), fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(
        fs::symlink_metadata(dirs.upper.join("etc/null"))
            .unwrap()
            .rdev(),
        libc::makedev(1, 3)
    );

    // While a big file is copied up, the upper never shows part of it.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, upper_big) = (stop.clone(), dirs.upper.join("big"));
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(meta) = fs::symlink_metadata(&upper_big) {
                    assert!(
                        meta.len() >= big_size,
                        "a partial copy is visible: {} bytes",
                        meta.len()
                    );
                    seen += 1;
                }
            }
            seen
        })
    };
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.join("big"))
        .unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let meta = fs::metadata(dirs.upper.join("big")).unwrap();
    assert_eq!(meta.len(), big_size + 1);
    assert_eq!(
        fs::read(m.join("big")).unwrap()[..251],
        (0..251).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    assert!(
        work_leftovers(&dirs.work).is_empty(),
        "nothing stays behind in the work directory"
    );

    // Truncating a lower file copies only what is kept.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.join("etc/prog"))
        .unwrap();
    assert_eq!(fs::metadata(dirs.upper.join("etc/prog")).unwrap().len(), 0);
    guard.unmount();
}

#[test]
fn hard_links_stay_linked_across_copy_up_and_remounts() {
    if !gate("hard_links_stay_linked_across_copy_up_and_remounts") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[vec![
            Item::Dir("d", 0o755),
            Item::File("h1", b"shared", 0o644),
            Item::Hardlink("h2", "h1"),
            Item::Hardlink("d/h3", "h1"),
            Item::File("lone", b"lone", 0o644),
        ]],
        OVERLAY,
    );
    let m = &dirs.merged;
    {
        let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
        let before = ino(&m.join("h1"));
        assert_eq!(ino(&m.join("h2")), before);
        assert_eq!(fs::metadata(m.join("d/h3")).unwrap().nlink(), 3);
        fs::OpenOptions::new()
            .append(true)
            .open(m.join("h2"))
            .unwrap()
            .write_all(b"+")
            .unwrap();
        for p in ["h1", "h2", "d/h3"] {
            assert_eq!(fs::read(m.join(p)).unwrap(), b"shared+", "{p}");
            assert_eq!(ino(&m.join(p)), before, "{p} keeps its inode number");
            assert_eq!(fs::metadata(m.join(p)).unwrap().nlink(), 3);
        }
        let up = ino(&dirs.upper.join("h1"));
        assert_eq!(ino(&dirs.upper.join("h2")), up);
        assert_eq!(ino(&dirs.upper.join("d/h3")), up);

        // Links made through the mount are real links too.
        fs::hard_link(m.join("lone"), m.join("d/lone2")).unwrap();
        assert_eq!(ino(&m.join("lone")), ino(&m.join("d/lone2")));
        assert_eq!(fs::metadata(m.join("lone")).unwrap().nlink(), 2);
        fs::write(m.join("d/lone2"), b"changed").unwrap();
        assert_eq!(fs::read(m.join("lone")).unwrap(), b"changed");
        fs::remove_file(m.join("h1")).unwrap();
        assert_eq!(fs::metadata(m.join("h2")).unwrap().nlink(), 2);
        guard.unmount();
    }
    // A new mount of the same upper sees the same links.
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(false));
    assert_eq!(ino(&m.join("h2")), ino(&m.join("d/h3")));
    assert_eq!(fs::metadata(m.join("h2")).unwrap().nlink(), 2);
    assert_eq!(fs::read(m.join("d/h3")).unwrap(), b"shared+");
    assert!(!m.join("h1").exists());
    assert_eq!(ino(&m.join("lone")), ino(&m.join("d/lone2")));
    guard.unmount();
}

/// The entries of directory `dir` with their inode numbers, `.` and `..` included.
fn dir_entries(dir: &Path) -> Vec<(String, u64)> {
    let d = nix::dir::Dir::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut d = d;
    for e in d.iter() {
        let e = e.unwrap();
        out.push((e.file_name().to_string_lossy().into_owned(), e.ino()));
    }
    out
}

#[test]
fn inode_numbers_are_stable_and_dot_entries_are_right() {
    if !gate("inode_numbers_are_stable_and_dot_entries_are_right") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[
            vec![Item::Dir("d", 0o755), Item::File("d/top", b"t", 0o644)],
            vec![
                Item::Dir("d", 0o755),
                Item::Dir("d/sub", 0o755),
                Item::File("d/sub/f", b"f", 0o644),
            ],
        ],
        OVERLAY,
    );
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
    let paths = ["", "d", "d/top", "d/sub", "d/sub/f"];
    let before: HashMap<&str, u64> = paths.iter().map(|p| (*p, ino(&m.join(p)))).collect();
    let distinct: BTreeSet<u64> = before.values().copied().collect();
    assert_eq!(
        distinct.len(),
        paths.len(),
        "every object has its own inode number"
    );
    let dev = fs::metadata(m).unwrap().dev();
    for p in paths {
        assert_eq!(
            fs::symlink_metadata(m.join(p)).unwrap().dev(),
            dev,
            "{p}: one st_dev for the mount"
        );
    }

    // Copy-up and the kernel forgetting inodes change nothing.
    fs::set_permissions(m.join("d/sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    for p in paths {
        assert_eq!(ino(&m.join(p)), before[p], "{p}");
    }

    // readdir reports the same numbers, with `.` and `..` right.
    let entries: HashMap<String, u64> = dir_entries(&m.join("d")).into_iter().collect();
    assert_eq!(entries["."], before["d"]);
    assert_eq!(entries[".."], before[""]);
    assert_eq!(entries["top"], before["d/top"]);
    assert_eq!(entries["sub"], before["d/sub"]);
    let root: HashMap<String, u64> = dir_entries(m).into_iter().collect();
    assert_eq!(root["."], before[""]);
    assert_eq!(root["d"], before["d"]);
    drop(guard);
}

/// Reads entries of the open directory `fd` with a small buffer, at most `max` of them.
fn getdents(fd: &OwnedFd, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1024];
    while out.len() < max {
        // SAFETY: valid descriptor and buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            // SAFETY: the kernel NUL-terminates d_name inside the record.
            let name = unsafe { CStr::from_ptr(buf[off + 19..].as_ptr().cast()) };
            out.push(name.to_string_lossy().into_owned());
            off += reclen;
        }
    }
    out
}

#[test]
fn directory_streams_survive_concurrent_changes() {
    if !gate("directory_streams_survive_concurrent_changes") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(t.path(), &[vec![Item::Dir("big", 0o755)]], OVERLAY);
    let lower_names: Vec<String> = (0..300)
        .map(|i| format!("lower-entry-with-a-long-name-{i:04}"))
        .collect();
    for n in &lower_names {
        fs::write(dirs.lowers[0].join("big").join(n), b"x").unwrap();
    }
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
    let upper_names: Vec<String> = (0..100)
        .map(|i| format!("upper-entry-with-a-long-name-{i:04}"))
        .collect();
    for n in &upper_names {
        fs::write(m.join("big").join(n), b"y").unwrap();
    }
    let path = CString::new(m.join("big").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path string; the descriptor is owned below.
    let fd = unsafe {
        OwnedFd::from_raw_fd(libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        ))
    };
    let mut seen = getdents(&fd, 60);
    assert!(seen.len() < 200, "the stream is read in several steps");

    // Change the directory under the open stream: delete names not read yet, add new ones.
    let unread: Vec<&String> = lower_names
        .iter()
        .chain(&upper_names)
        .filter(|n| !seen.contains(n))
        .collect();
    let deleted: BTreeSet<String> = unread.iter().step_by(3).map(|n| (*n).clone()).collect();
    for n in &deleted {
        fs::remove_file(m.join("big").join(n)).unwrap();
    }
    for i in 0..50 {
        fs::write(m.join("big").join(format!("added-{i}")), b"z").unwrap();
    }
    seen.extend(getdents(&fd, usize::MAX));

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &seen {
        *counts.entry(n).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dupes.is_empty(), "names returned twice: {dupes:?}");
    for n in lower_names
        .iter()
        .chain(&upper_names)
        .filter(|n| !deleted.contains(*n))
    {
        assert_eq!(
            counts.get(n.as_str()),
            Some(&1),
            "{n} existed throughout and must be listed once"
        );
    }
    assert!(counts.contains_key(".") && counts.contains_key(".."));

    // Rewinding shows the directory as it is now.
    // SAFETY: valid descriptor.
    assert_eq!(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) }, 0);
    let now: BTreeSet<String> = getdents(&fd, usize::MAX)
        .into_iter()
        .filter(|n| n != "." && n != "..")
        .collect();
    let expected: BTreeSet<String> = names(&m.join("big")).into_iter().collect();
    assert_eq!(now, expected);
    assert_eq!(now.len(), 300 + 100 - deleted.len() + 50);
    drop(fd);
    guard.unmount();
}

#[test]
fn rmdir_looks_through_whiteouts_and_recreated_directories_are_opaque() {
    if !gate("rmdir_looks_through_whiteouts_and_recreated_directories_are_opaque") {
        return;
    }
    for format in [OVERLAY, WhiteoutFormat::Aufs] {
        let t = tempfile::tempdir().unwrap();
        let layer = vec![
            Item::Dir("d", 0o755),
            Item::File("d/a", b"a", 0o644),
            Item::File("d/b", b"b", 0o644),
            Item::Dir("e", 0o755),
            Item::File("e/a", b"a", 0o644),
            Item::File("e/b", b"b", 0o644),
        ];
        let dirs = StackDirs::build(t.path(), &[layer], format);
        let m = &dirs.merged;
        let guard = FuseGuard::mount(dirs.spec(format, true), m, &fuse_options(true));
        fs::remove_file(m.join("d/a")).unwrap();
        fs::remove_file(m.join("d/b")).unwrap();
        fs::write(m.join("d/new"), b"n").unwrap();
        fs::remove_file(m.join("d/new")).unwrap();
        assert!(names(&m.join("d")).is_empty());
        fs::remove_dir(m.join("d")).unwrap();
        assert!(!m.join("d").exists());

        fs::remove_file(m.join("e/a")).unwrap();
        assert_eq!(
            errno_of(&fs::remove_dir(m.join("e"))),
            libc::ENOTEMPTY,
            "{format:?}"
        );
        assert_eq!(names(&m.join("e")), ["b"]);

        fs::create_dir(m.join("d")).unwrap();
        assert!(
            names(&m.join("d")).is_empty(),
            "{format:?}: a recreated directory hides the old content"
        );
        match format {
            WhiteoutFormat::Overlay { .. } => {
                assert_eq!(
                    lget_xattr(&dirs.upper.join("d"), "trusted.overlay.opaque").unwrap(),
                    b"y"
                );
                let wh = fs::symlink_metadata(dirs.upper.join("e/a")).unwrap();
                assert_eq!(wh.rdev(), 0);
            }
            _ => {
                assert!(dirs.upper.join("d/.wh..wh..opq").exists());
                assert!(dirs.upper.join("e/.wh.a").exists());
                assert_eq!(
                    errno_of(&fs::write(m.join(".wh.sneaky"), b"x")),
                    libc::EINVAL,
                    "AUFS marker names are reserved"
                );
            }
        }
        assert!(!names(m).iter().any(|n| n.starts_with(".wh.")));
        guard.unmount();
        // The upper reads back the same as a layer of a new mount.
        let guard = FuseGuard::mount(upper_as_layer(&dirs, format), m, &fuse_options(true));
        assert!(names(&m.join("d")).is_empty());
        assert_eq!(names(&m.join("e")), ["b"]);
        guard.unmount();
    }
}

#[test]
fn an_upper_reads_back_as_a_layer_in_both_formats() {
    if !gate("an_upper_reads_back_as_a_layer_in_both_formats") {
        return;
    }
    for format in [OVERLAY, WhiteoutFormat::Aufs] {
        let t = tempfile::tempdir().unwrap();
        let dirs = StackDirs::build(
            t.path(),
            &[vec![
                Item::Dir("d", 0o755),
                Item::File("d/a", b"a", 0o644),
                Item::Dir("d/sub", 0o755),
                Item::File("d/sub/x", b"x", 0o644),
                Item::File("gone", b"g", 0o644),
            ]],
            format,
        );
        let m = &dirs.merged;
        let guard = FuseGuard::mount(dirs.spec(format, true), m, &fuse_options(true));
        fs::remove_file(m.join("gone")).unwrap();
        fs::rename(m.join("d"), m.join("moved")).unwrap();
        fs::write(m.join("moved/new"), b"new").unwrap();
        fs::create_dir(m.join("d")).unwrap();
        let live = scan(m);
        guard.unmount();
        let view = t.path().join("view");
        fs::create_dir(&view).unwrap();
        let guard = FuseGuard::mount(upper_as_layer(&dirs, format), &view, &fuse_options(true));
        let replayed = scan(&view);
        let diffs = diff_merged(&live, &replayed);
        assert!(diffs.is_empty(), "{format:?}: {diffs:?}");
        assert!(
            replayed.contains("/moved/sub/x")
                && !replayed.contains("/gone")
                && !replayed.contains("/d/a")
        );
        guard.unmount();
    }
}

#[test]
fn a_stack_without_lowers_is_a_view_of_one_directory() {
    if !gate("a_stack_without_lowers_is_a_view_of_one_directory") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("dir");
    let work = t.path().join("work");
    let m = t.path().join("m");
    for d in [&dir, &work, &m] {
        fs::create_dir(d).unwrap();
    }
    fs::write(dir.join("f"), b"f").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    mknod(&dir.join("sub/dev00"), libc::S_IFCHR | 0o600, 0).unwrap();
    fs::write(dir.join(".wh.plain"), b"not special here").unwrap();
    let spec = drivers::MountSpec::Stack {
        lowers: Vec::new(),
        upper: Some((dir.clone(), work.clone())),
        whiteouts: WhiteoutFormat::None,
        ownership: Default::default(),
    };
    let guard = FuseGuard::mount(spec, &m, &fuse_options(true));
    assert_eq!(names(&m), [".wh.plain", "f", "sub"]);
    assert_eq!(
        fs::symlink_metadata(m.join("sub/dev00")).unwrap().rdev(),
        0,
        "a 0/0 device is just a device"
    );
    fs::write(m.join("g"), b"g").unwrap();
    fs::rename(m.join("sub"), m.join("renamed")).unwrap();
    fs::remove_file(m.join("f")).unwrap();
    mknod(&m.join("renamed/another00"), libc::S_IFCHR | 0o600, 0).unwrap();
    let want = scan(&dir);
    let got = scan(&m);
    assert!(
        diff_merged(&want, &got).is_empty(),
        "{:?}",
        diff_merged(&want, &got)
    );
    assert_eq!(names(&dir), [".wh.plain", "g", "renamed"]);
    assert!(dir.join("renamed/another00").exists());
    guard.unmount();
}

#[test]
fn a_read_only_stack_refuses_writes_and_serves_reads() {
    if !gate("a_read_only_stack_refuses_writes_and_serves_reads") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[
            vec![Item::File("f", b"top", 0o644), Item::Whiteout("g")],
            vec![
                Item::File("f", b"bottom", 0o644),
                Item::File("g", b"g", 0o644),
            ],
        ],
        OVERLAY,
    );
    let m = &dirs.merged;
    for passthrough in [true, false] {
        let guard = FuseGuard::mount(dirs.spec(OVERLAY, false), m, &fuse_options(passthrough));
        assert_eq!(fs::read(m.join("f")).unwrap(), b"top");
        assert_eq!(
            errno_of(&fs::OpenOptions::new().write(true).open(m.join("f"))),
            libc::EROFS
        );
        assert_eq!(errno_of(&fs::remove_file(m.join("f"))), libc::EROFS);
        assert_eq!(errno_of(&fs::create_dir(m.join("x"))), libc::EROFS);
        assert!(!m.join("g").exists());
        guard.unmount();
    }
    assert!(names(&dirs.upper).is_empty());
}

#[test]
fn unlinked_and_replaced_files_stay_usable_while_open() {
    if !gate("unlinked_and_replaced_files_stay_usable_while_open") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[vec![Item::File("lower", b"lower data", 0o644)]],
        OVERLAY,
    );
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("lower"))
        .unwrap();
    fs::remove_file(m.join("lower")).unwrap();
    f.write_all(b"still writable").unwrap();
    let meta = f.metadata().unwrap();
    assert_eq!(meta.nlink(), 0);
    assert_eq!(meta.len(), b"still writable".len() as u64);
    f.set_len(5).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 5);
    drop(f);

    fs::write(m.join("a"), b"old").unwrap();
    let old = fs::File::open(m.join("a")).unwrap();
    fs::write(m.join("b"), b"new").unwrap();
    fs::rename(m.join("b"), m.join("a")).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &old, &mut s).unwrap();
    assert_eq!(
        s, "old",
        "an open file keeps its content after being replaced"
    );
    assert_eq!(fs::read(m.join("a")).unwrap(), b"new");
    drop(old);
    assert!(work_leftovers(&dirs.work).is_empty());
    guard.unmount();
}

#[test]
fn private_xattrs_are_hidden_and_refused() {
    if !gate("private_xattrs_are_hidden_and_refused") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = StackDirs::build(
        t.path(),
        &[vec![
            Item::Dir("o", 0o755),
            Item::Opaque("o"),
            Item::Xattr("o", "user.x", b"1"),
        ]],
        OVERLAY,
    );
    let m = &dirs.merged;
    let guard = FuseGuard::mount(dirs.spec(OVERLAY, true), m, &fuse_options(true));
    assert_eq!(
        errno_of(&lget_xattr(&m.join("o"), "trusted.overlay.opaque")),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno_of(&lset_xattr(&m.join("o"), "trusted.overlay.opaque", b"n")),
        libc::EOPNOTSUPP
    );
    let mut buf = vec![0u8; 1024];
    let p = CString::new(m.join("o").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid string and buffer.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0);
    let listed: Vec<&OsStr> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(OsStr::from_bytes)
        .collect();
    assert_eq!(listed, [OsStr::new("user.x")]);
    guard.unmount();
}
