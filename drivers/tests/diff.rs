//! Changes and diff production on vfs layers, checked by applying the diff
//! onto a copy of the parent and comparing with the layer.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{assert_same_tree, set_mtime, set_xattr, Attrs, TarBuilder};
use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::copy::copy_tree;
use drivers::driver::{Change, ChangeKind, Driver};
use drivers::export::{DiffAction, DiffPlan};
use drivers::{VfsDriver, WhiteoutFormat};
use proptest::prelude::*;

const BASE: &str = "base";
const RW: &str = "rw";

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", Attrs::default().mode(0o755).mtime(1_600_000_001))
        .file("etc/conf", b"v1", Attrs::default().mtime(1_600_000_002))
        .file("etc/keep", b"keep!", Attrs::default().mtime(1_600_000_003))
        .dir("bin", Attrs::default().mode(0o755).mtime(1_600_000_004))
        .file(
            "bin/tool",
            b"tool",
            Attrs::default().mode(0o755).mtime(1_600_000_005),
        )
        .file(
            "del.txt",
            b"delete me",
            Attrs::default().mtime(1_600_000_006),
        )
        .dir("olddir", Attrs::default().mode(0o755).mtime(1_600_000_007))
        .file("olddir/a", b"aa", Attrs::default().mtime(1_600_000_008))
        .dir(
            "olddir/sub",
            Attrs::default().mode(0o755).mtime(1_600_000_009),
        )
        .file(
            "olddir/sub/b",
            b"bbb",
            Attrs::default().mtime(1_600_000_010),
        )
        .dir("mvsrc", Attrs::default().mode(0o755).mtime(1_600_000_011))
        .file(
            "mvsrc/child",
            b"child-content",
            Attrs::default().mtime(1_600_000_012),
        )
        .file("f2d", b"a file", Attrs::default().mtime(1_600_000_013))
        .file(
            "linked",
            b"linked content",
            Attrs::default().mtime(1_600_000_014),
        )
        .hardlink("linked2", "linked")
        .symlink("sym", "etc/conf", Attrs::default().mtime(1_600_000_015))
        .file(
            "x/y/deep",
            b"deep file!",
            Attrs::default()
                .mtime(1_600_000_016)
                .xattr("trusted.x", b"1"),
        )
        .finish()
}

/// A store with image layer `base` and read-write layer `rw` on top.
fn store() -> (tempfile::TempDir, VfsDriver) {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    driver.apply_diff(BASE, None, &mut &base_tar()[..]).unwrap();
    driver.create_rw(RW, Some(BASE)).unwrap();
    (tmp, driver)
}

/// Applies the diff of `rw` onto a copy of `base` and checks the result equals `rw`.
fn assert_round_trip(driver: &VfsDriver, tmp: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    driver.diff(RW, Some(BASE), &mut tar).unwrap();
    let check = tmp.join(format!("check-{}", rand_suffix()));
    copy_tree(&driver.layer_dir(BASE), &check).unwrap();
    apply_layer(&check, &mut &tar[..], WhiteoutMode::Remove).unwrap();
    assert_same_tree(&driver.layer_dir(RW), &check);
    fs::remove_dir_all(&check).unwrap();
    tar
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn tar_names(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type(),
            )
        })
        .collect()
}

fn change(kind: ChangeKind, path: &str) -> Change {
    Change {
        path: path.to_string(),
        kind,
    }
}

#[test]
fn scripted_changes_and_diff() {
    let (tmp, driver) = store();
    let rw = driver.layer_dir(RW);
    fs::write(rw.join("new.txt"), b"brand new").unwrap();
    fs::write(rw.join("etc/conf"), b"version 2").unwrap();
    fs::set_permissions(rw.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(rw.join("del.txt")).unwrap();
    fs::remove_dir_all(rw.join("olddir")).unwrap();
    fs::rename(rw.join("mvsrc"), rw.join("mvdst")).unwrap();
    fs::remove_file(rw.join("f2d")).unwrap();
    fs::create_dir(rw.join("f2d")).unwrap();
    fs::write(rw.join("f2d/c"), b"c").unwrap();

    use ChangeKind::{Added as A, Deleted as D, Modified as C};
    let changes = driver.changes(RW, Some(BASE)).unwrap();
    assert_eq!(
        changes,
        vec![
            change(C, "/bin"),
            change(C, "/bin/tool"),
            change(D, "/del.txt"),
            change(C, "/etc"),
            change(C, "/etc/conf"),
            change(C, "/f2d"),
            change(A, "/f2d/c"),
            change(A, "/mvdst"),
            change(A, "/mvdst/child"),
            change(D, "/mvsrc"),
            change(A, "/new.txt"),
            change(D, "/olddir"),
        ]
    );
    assert_eq!(changes[0].to_string(), "C /bin");

    let tar = assert_round_trip(&driver, tmp.path());
    let names: Vec<String> = tar_names(&tar).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "./",
            ".wh.del.txt",
            ".wh.mvsrc",
            ".wh.olddir",
            "bin/",
            "bin/tool",
            "etc/",
            "etc/conf",
            "f2d/",
            "f2d/c",
            "mvdst/",
            "mvdst/child",
            "new.txt"
        ]
    );
    let size = driver.diff_size(RW, Some(BASE)).unwrap();
    assert_eq!(
        size,
        ("version 2".len() + "tool".len() + 1 + "child-content".len() + "brand new".len()) as u64
    );

    // Deterministic output.
    let mut again = Vec::new();
    driver.diff(RW, Some(BASE), &mut again).unwrap();
    assert_eq!(tar, again);
}

#[test]
fn dir_replaced_by_file_needs_no_whiteouts_for_its_children() {
    let (tmp, driver) = store();
    let rw = driver.layer_dir(RW);
    fs::remove_dir_all(rw.join("olddir")).unwrap();
    fs::write(rw.join("olddir"), b"now a file").unwrap();
    let changes = driver.changes(RW, Some(BASE)).unwrap();
    assert_eq!(
        changes,
        vec![
            change(ChangeKind::Modified, "/olddir"),
            change(ChangeKind::Deleted, "/olddir/a"),
            change(ChangeKind::Deleted, "/olddir/sub"),
        ]
    );
    let tar = assert_round_trip(&driver, tmp.path());
    let names: Vec<String> = tar_names(&tar).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["./", "olddir"]);
}

#[test]
fn hard_links_and_metadata_only_changes_round_trip() {
    let (tmp, driver) = store();
    let rw = driver.layer_dir(RW);
    // A new link to an unchanged file: the file is exported with it.
    fs::hard_link(rw.join("etc/keep"), rw.join("etc/keep-link")).unwrap();
    // Metadata-only changes.
    std::os::unix::fs::lchown(rw.join("sym"), Some(5), Some(6)).unwrap();
    set_xattr(&rw.join("x/y/deep"), "trusted.x", b"2");
    set_mtime(&rw.join("linked"), 1_700_000_000, 999_999_999);
    let changes = driver.changes(RW, Some(BASE)).unwrap();
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc",
            "/etc/keep",
            "/etc/keep-link",
            "/linked",
            "/linked2",
            "/sym",
            "/x",
            "/x/y",
            "/x/y/deep"
        ]
    );
    let tar = assert_round_trip(&driver, tmp.path());
    let entries = tar_names(&tar);
    let kind_of = |n: &str| entries.iter().find(|(name, _)| name == n).unwrap().1;
    assert_eq!(kind_of("etc/keep"), tar::EntryType::Regular);
    assert_eq!(kind_of("etc/keep-link"), tar::EntryType::Link);
    assert_eq!(kind_of("linked"), tar::EntryType::Regular);
    assert_eq!(kind_of("linked2"), tar::EntryType::Link);
    assert_eq!(kind_of("sym"), tar::EntryType::Symlink);
}

#[test]
fn full_export_of_a_base_layer_round_trips() {
    let (tmp, driver) = store();
    let mut tar = Vec::new();
    driver.diff(BASE, None, &mut tar).unwrap();
    let check = tmp.path().join("check");
    fs::create_dir(&check).unwrap();
    apply_layer(&check, &mut &tar[..], WhiteoutMode::Remove).unwrap();
    assert_same_tree(&driver.layer_dir(BASE), &check);
    let changes = driver.changes(BASE, None).unwrap();
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Added));
    assert!(changes.iter().any(|c| c.path == "/x/y/deep"));
}

#[test]
fn long_names_large_ids_and_nanosecond_times_are_exported() {
    let (tmp, driver) = store();
    let rw = driver.layer_dir(RW);
    let deep: PathBuf = ["p".repeat(150), "q".repeat(150), "r".repeat(200)]
        .iter()
        .collect();
    fs::create_dir_all(rw.join(deep.parent().unwrap())).unwrap();
    fs::write(rw.join(&deep), b"long").unwrap();
    std::os::unix::fs::lchown(rw.join(&deep), Some(3_000_000), Some(4_000_000)).unwrap();
    set_mtime(&rw.join(&deep), 1_650_000_000, 123);
    let long_target = "t".repeat(300);
    std::os::unix::fs::symlink(&long_target, rw.join("longlink")).unwrap();
    fs::write(rw.join("ünïcödé"), b"u").unwrap();
    assert_round_trip(&driver, tmp.path());
}

#[test]
fn whiteout_names_in_a_tree_are_refused() {
    let (_tmp, driver) = store();
    fs::write(driver.layer_dir(RW).join(".wh.sneaky"), b"").unwrap();
    let err = driver.diff(RW, Some(BASE), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("reserved for whiteouts"), "{err}");
}

#[test]
fn plans_from_layer_directories() {
    let tmp = tempfile::tempdir().unwrap();
    // An overlay upper: whiteout device, opaque directory, ordinary entries.
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("d/sub")).unwrap();
    fs::write(upper.join("d/sub/f"), b"f").unwrap();
    common::mknod(&upper.join("gone"), libc::S_IFCHR, 0, 0, 0);
    fs::create_dir(upper.join("opq")).unwrap();
    set_xattr(&upper.join("opq"), "trusted.overlay.opaque", b"y");
    set_xattr(&upper.join("d/sub/f"), "trusted.overlay.origin", b"x");
    let plan =
        DiffPlan::from_layer_dir(&upper, WhiteoutFormat::Overlay { userxattr: false }).unwrap();
    let listed: Vec<(String, DiffAction)> = plan
        .iter()
        .map(|(p, a)| {
            (
                p.iter()
                    .map(|c| c.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                a,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (".wh.gone".to_string(), DiffAction::Whiteout),
            ("d".to_string(), DiffAction::Entry),
            ("d/sub".to_string(), DiffAction::Entry),
            ("d/sub/f".to_string(), DiffAction::Entry),
            ("opq".to_string(), DiffAction::Entry),
            ("opq/.wh..wh..opq".to_string(), DiffAction::Opaque),
        ]
    );
    let mut tar = Vec::new();
    drivers::export::write_plan(&upper, &plan, &mut tar).unwrap();
    // Overlay metadata never leaves the layer.
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                assert!(!ext.unwrap().key().unwrap().contains("overlay"));
            }
        }
    }
    // Applying it in overlay mode reproduces the upper.
    let again = tmp.path().join("again");
    fs::create_dir(&again).unwrap();
    apply_layer(
        &again,
        &mut &tar[..],
        WhiteoutMode::Overlay { userxattr: false },
    )
    .unwrap();
    let gone = fs::symlink_metadata(again.join("gone")).unwrap();
    assert_eq!(gone.rdev(), 0);
    assert_eq!(
        common::get_xattr(&again.join("opq"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(fs::read(again.join("d/sub/f")).unwrap(), b"f");

    // An AUFS branch.
    let branch = tmp.path().join("branch");
    fs::create_dir_all(branch.join("o/.wh..wh.plnk")).unwrap();
    fs::write(branch.join(".wh.gone"), b"").unwrap();
    fs::write(branch.join("o/.wh..wh..opq"), b"").unwrap();
    fs::write(branch.join("o/kept"), b"k").unwrap();
    let plan = DiffPlan::from_layer_dir(&branch, WhiteoutFormat::Aufs).unwrap();
    let listed: Vec<(String, DiffAction)> = plan
        .iter()
        .map(|(p, a)| {
            (
                p.iter()
                    .map(|c| c.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                a,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (".wh.gone".to_string(), DiffAction::Whiteout),
            ("o".to_string(), DiffAction::Entry),
            ("o/.wh..wh..opq".to_string(), DiffAction::Opaque),
            ("o/kept".to_string(), DiffAction::Entry),
        ]
    );
    assert_eq!(drivers::export::plan_size(&branch, &plan).unwrap(), 1);
}

// ---- property test: random operations on a read-write layer round-trip ----

const NAMES: [&str; 5] = ["a", "b", "c", "dd", "e"];
const LINK_TARGETS: [&str; 4] = ["a", "b/c", "nowhere", "."];

#[derive(Debug, Clone)]
enum Op {
    WriteFile {
        dir: usize,
        name: usize,
        len: usize,
        seed: u8,
    },
    Overwrite {
        target: usize,
        len: usize,
        seed: u8,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Delete {
        target: usize,
    },
    Rename {
        target: usize,
        dir: usize,
        name: usize,
    },
    Chmod {
        target: usize,
        mode: u32,
    },
    Chown {
        target: usize,
        uid: u32,
    },
    Hardlink {
        target: usize,
        dir: usize,
        name: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
    },
    SetXattr {
        target: usize,
        value: u8,
    },
    RemoveXattr {
        target: usize,
    },
    Touch {
        target: usize,
        nsec: u32,
    },
    Sparse {
        dir: usize,
        name: usize,
    },
    Fifo {
        dir: usize,
        name: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let i = 0usize..64;
    prop_oneof![
        (i.clone(), 0..NAMES.len(), 0usize..3000, any::<u8>()).prop_map(
            |(dir, name, len, seed)| Op::WriteFile {
                dir,
                name,
                len,
                seed
            }
        ),
        (i.clone(), 0usize..3000, any::<u8>()).prop_map(|(target, len, seed)| Op::Overwrite {
            target,
            len,
            seed
        }),
        (i.clone(), 0..NAMES.len()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        i.clone().prop_map(|target| Op::Delete { target }),
        (i.clone(), i.clone(), 0..NAMES.len()).prop_map(|(target, dir, name)| Op::Rename {
            target,
            dir,
            name
        }),
        (
            i.clone(),
            prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755, 0o1777, 0o2750])
        )
            .prop_map(|(target, mode)| Op::Chmod { target, mode }),
        (i.clone(), 0u32..3).prop_map(|(target, uid)| Op::Chown { target, uid }),
        (i.clone(), i.clone(), 0..NAMES.len()).prop_map(|(target, dir, name)| Op::Hardlink {
            target,
            dir,
            name
        }),
        (i.clone(), 0..NAMES.len(), 0..LINK_TARGETS.len())
            .prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        (i.clone(), any::<u8>()).prop_map(|(target, value)| Op::SetXattr { target, value }),
        i.clone().prop_map(|target| Op::RemoveXattr { target }),
        (i.clone(), 0u32..1_000_000_000).prop_map(|(target, nsec)| Op::Touch { target, nsec }),
        (i.clone(), 0..NAMES.len()).prop_map(|(dir, name)| Op::Sparse { dir, name }),
        (i, 0..NAMES.len()).prop_map(|(dir, name)| Op::Fifo { dir, name }),
    ]
}

/// Every path below `root` (relative, sorted) and the subset that are real directories (root included).
fn listing(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut all = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                dirs.push(child.clone());
                stack.push(child.clone());
            }
            all.push(child);
        }
    }
    all.sort();
    dirs.sort();
    (all, dirs)
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// Runs one operation; failures (name clashes, renaming a directory into itself, ...) are ignored.
fn run_op(root: &Path, op: &Op) {
    let (all, dirs) = listing(root);
    let pick = |list: &[PathBuf], i: usize| -> Option<PathBuf> {
        (!list.is_empty()).then(|| root.join(&list[i % list.len()]))
    };
    let in_dir = |dir: usize, name: usize| pick(&dirs, dir).map(|d| d.join(NAMES[name]));
    let content = |len: usize, seed: u8| -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    };
    let nofollow_write = |p: &Path, data: &[u8], create: bool| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(create)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p)?;
        f.write_all(data)
    };
    let _ = match op {
        Op::WriteFile {
            dir,
            name,
            len,
            seed,
        } => in_dir(*dir, *name).map(|p| nofollow_write(&p, &content(*len, *seed), true)),
        Op::Overwrite { target, len, seed } => pick(&all, *target)
            .filter(|p| {
                fs::symlink_metadata(p)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
            })
            .map(|p| nofollow_write(&p, &content(*len, *seed), false)),
        Op::Mkdir { dir, name } => in_dir(*dir, *name).map(fs::create_dir),
        Op::Delete { target } => pick(&all, *target).map(|p| {
            if fs::symlink_metadata(&p)?.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            }
        }),
        Op::Rename { target, dir, name } => {
            pick(&all, *target).and_then(|from| in_dir(*dir, *name).map(|to| fs::rename(from, to)))
        }
        Op::Chmod { target, mode } => pick(&all, *target)
            .filter(|p| !is_symlink(p))
            .map(|p| fs::set_permissions(p, fs::Permissions::from_mode(*mode))),
        Op::Chown { target, uid } => {
            pick(&all, *target).map(|p| std::os::unix::fs::lchown(p, Some(*uid), Some(*uid)))
        }
        Op::Hardlink { target, dir, name } => pick(&all, *target)
            .filter(|p| !fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(true))
            .and_then(|from| in_dir(*dir, *name).map(|to| fs::hard_link(from, to))),
        Op::Symlink { dir, name, target } => {
            in_dir(*dir, *name).map(|p| std::os::unix::fs::symlink(LINK_TARGETS[*target], p))
        }
        Op::SetXattr { target, value } => pick(&all, *target).map(|p| {
            set_xattr(&p, "trusted.prop", &[*value]);
            Ok(())
        }),
        Op::RemoveXattr { target } => pick(&all, *target).map(|p| {
            let dir = drivers::fsutil::open_dir(p.parent().unwrap()).unwrap();
            drivers::xattr::XattrTarget::At(std::os::fd::AsFd::as_fd(&dir), p.file_name().unwrap())
                .remove(std::ffi::OsStr::new("trusted.prop"))
        }),
        Op::Touch { target, nsec } => pick(&all, *target).map(|p| {
            set_mtime(&p, 1_234_567_890, i64::from(*nsec));
            Ok(())
        }),
        Op::Sparse { dir, name } => in_dir(*dir, *name).map(|p| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(p)?;
            std::os::unix::fs::FileExt::write_all_at(&f, b"sparse", 1 << 20)?;
            f.set_len(3 << 20)
        }),
        Op::Fifo { dir, name } => in_dir(*dir, *name).map(|p| {
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
                .unwrap();
            // SAFETY: valid path string.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o640) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_round_trip(ops in prop::collection::vec(op_strategy(), 1..14)) {
        let (tmp, driver) = store();
        let rw = driver.layer_dir(RW);
        for op in &ops {
            run_op(&rw, op);
        }
        let base = driver.layer_dir(BASE);
        for c in driver.changes(RW, Some(BASE)).unwrap() {
            let rel = c.path.trim_start_matches('/');
            let in_base = fs::symlink_metadata(base.join(rel)).is_ok();
            let in_rw = fs::symlink_metadata(rw.join(rel)).is_ok();
            match c.kind {
                ChangeKind::Added => prop_assert!(in_rw && !in_base, "{c}"),
                ChangeKind::Deleted => prop_assert!(!in_rw && in_base, "{c}"),
                ChangeKind::Modified => prop_assert!(in_rw && in_base, "{c}"),
            }
        }
        assert_round_trip(&driver, tmp.path());
    }
}

#[test]
fn diff_reads_content_through_the_tree_not_symlinks() {
    let (tmp, driver) = store();
    let rw = driver.layer_dir(RW);
    // A symlink replacing a directory must be exported as a symlink.
    fs::remove_dir_all(rw.join("x")).unwrap();
    std::os::unix::fs::symlink("/etc", rw.join("x")).unwrap();
    let tar = assert_round_trip(&driver, tmp.path());
    let mut archive = tar::Archive::new(&tar[..]);
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if &*entry.path_bytes() == b"x" {
            assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            assert!(s.is_empty());
            found = true;
        }
    }
    assert!(found);
}
