//! The safe tar applier: fidelity of every entry kind, whiteouts in every mode,
//! containment of escape attempts, and errors on corrupt input.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{assert_same_tree, cap_net_bind_service, get_xattr, snapshot, Attrs, TarBuilder};
use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::DriverError;

fn apply(
    root: &Path,
    tar: &[u8],
    mode: WhiteoutMode,
) -> drivers::Result<drivers::driver::ApplyStats> {
    apply_layer(root, &mut &tar[..], mode)
}

#[test]
fn every_entry_kind_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(200));
    let unicode = "héllo-世界-🦀.txt";
    let tar = TarBuilder::new()
        .dir("tmp", Attrs::default().mode(0o1777).mtime(1_500_000_000))
        .dir("bin", Attrs::default().mode(0o755).owner(0, 0))
        .file(
            "bin/suid",
            b"#!/bin/true\n",
            Attrs::default().mode(0o4755).owner(1000, 1001),
        )
        .file("bin/sgid", b"x", Attrs::default().mode(0o2711).owner(0, 50))
        .file(
            "bin/ping",
            b"ping",
            Attrs::default()
                .mode(0o755)
                .owner(0, 0)
                .xattr("security.capability", &cap_net_bind_service()),
        )
        .file(
            "bin/xattrs",
            b"data",
            Attrs::default()
                .xattr("user.colour", b"blue")
                .xattr("trusted.k", b"v"),
        )
        .file("empty", b"", Attrs::default().mode(0o600).owner(7, 8))
        .file(
            "nsec",
            b"t",
            Attrs::default().pax("mtime", "1700000000.123456789"),
        )
        .symlink(
            "link",
            "/bin/suid",
            Attrs::default()
                .owner(33, 34)
                .xattr("trusted.on-link", b"yes"),
        )
        .hardlink("bin/suid-again", "bin/suid")
        .device("null", false, 1, 3, Attrs::default().mode(0o666))
        .device(
            "loop0",
            true,
            7,
            0,
            Attrs::default().mode(0o660).owner(0, 6),
        )
        .fifo("pipe", Attrs::default().mode(0o620))
        .file(&long_name, b"long", Attrs::default())
        .file(unicode, "ünï".as_bytes(), Attrs::default())
        .finish();
    let stats = apply(root, &tar, WhiteoutMode::Remove).unwrap();
    assert_eq!(stats.entries, 15);
    assert_eq!(stats.bytes, (12 + 1 + 4 + 4 + 1 + 4 + "ünï".len()) as u64);

    let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("tmp").mtime(), 1_500_000_000);
    let suid = md("bin/suid");
    assert_eq!(suid.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((suid.uid(), suid.gid()), (1000, 1001));
    assert_eq!(suid.nlink(), 2);
    assert_eq!(md("bin/suid-again").ino(), suid.ino());
    assert_eq!(md("bin/sgid").mode() & 0o7777, 0o2711);
    assert_eq!(md("bin/sgid").gid(), 50);
    assert_eq!(
        get_xattr(&root.join("bin/ping"), "security.capability"),
        Some(cap_net_bind_service())
    );
    assert_eq!(
        get_xattr(&root.join("bin/xattrs"), "user.colour"),
        Some(b"blue".to_vec())
    );
    assert_eq!(
        get_xattr(&root.join("bin/xattrs"), "trusted.k"),
        Some(b"v".to_vec())
    );
    let empty = md("empty");
    assert_eq!(
        (empty.len(), empty.mode() & 0o7777, empty.uid(), empty.gid()),
        (0, 0o600, 7, 8)
    );
    assert_eq!(
        (md("nsec").mtime(), md("nsec").mtime_nsec()),
        (1_700_000_000, 123_456_789)
    );
    let link = md("link");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("/bin/suid")
    );
    assert_eq!((link.uid(), link.gid()), (33, 34));
    assert_eq!(link.mtime(), 1_600_000_000);
    assert_eq!(
        get_xattr(&root.join("link"), "trusted.on-link"),
        Some(b"yes".to_vec())
    );
    let null = md("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let loop0 = md("loop0");
    assert!(loop0.file_type().is_block_device());
    assert_eq!((loop0.rdev(), loop0.gid()), (libc::makedev(7, 0), 6));
    assert!(md("pipe").file_type().is_fifo());
    assert_eq!(md("pipe").mode() & 0o7777, 0o620);
    assert_eq!(fs::read(root.join(&long_name)).unwrap(), b"long");
    assert_eq!(fs::read(root.join(unicode)).unwrap(), "ünï".as_bytes());
    // Missing parents of the long name were created 0755, root-owned.
    let long_parent = md(&long_dir);
    assert_eq!((long_parent.mode() & 0o7777, long_parent.uid()), (0o755, 0));
}

#[test]
fn directory_times_are_applied_after_children() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .dir("a", Attrs::default().mode(0o755).mtime(1_000))
        .dir("a/b", Attrs::default().mode(0o755).mtime(2_000))
        .file("a/b/c", b"c", Attrs::default().mtime(3_000))
        .file("a/d", b"d", Attrs::default().mtime(4_000))
        .finish();
    apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap();
    let mtime = |p: &str| fs::symlink_metadata(tmp.path().join(p)).unwrap().mtime();
    assert_eq!(mtime("a"), 1_000);
    assert_eq!(mtime("a/b"), 2_000);
    assert_eq!(mtime("a/b/c"), 3_000);
    assert_eq!(mtime("a/d"), 4_000);
}

#[test]
fn sparse_files_keep_their_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let sparse = src.join("sparse");
    let size: u64 = 64 << 20;
    {
        let f = fs::File::create(&sparse).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        f.set_len(size).unwrap();
    }
    // A GNU sparse entry, and a plain entry full of zeros.
    let zeros = vec![0u8; 8 << 20];
    let mut with_zeros = b"head".to_vec();
    with_zeros.extend_from_slice(&zeros);
    with_zeros.extend_from_slice(b"tail");
    let tar = TarBuilder::new()
        .sparse_file_from("gnu-sparse", &sparse)
        .file("zeros", &with_zeros, Attrs::default())
        .finish();
    assert!(
        tar.len() < 16 << 20,
        "the GNU sparse entry must not store the holes"
    );
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    apply(&root, &tar, WhiteoutMode::Remove).unwrap();

    let applied = fs::symlink_metadata(root.join("gnu-sparse")).unwrap();
    assert_eq!(applied.len(), size);
    assert!(
        applied.blocks() * 512 < 1 << 20,
        "holes kept: {} blocks",
        applied.blocks()
    );
    assert_eq!(
        fs::read(root.join("gnu-sparse")).unwrap(),
        fs::read(&sparse).unwrap()
    );

    let z = fs::symlink_metadata(root.join("zeros")).unwrap();
    assert_eq!(z.len(), with_zeros.len() as u64);
    assert!(
        z.blocks() * 512 < 1 << 20,
        "zero blocks written as holes: {} blocks",
        z.blocks()
    );
    assert_eq!(fs::read(root.join("zeros")).unwrap(), with_zeros);
}

#[test]
fn existing_entries_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("dir/keep")).unwrap();
    fs::write(root.join("dir/child"), b"old").unwrap();
    fs::create_dir_all(root.join("becomes-file/sub")).unwrap();
    fs::write(root.join("becomes-file/sub/x"), b"x").unwrap();
    fs::write(root.join("becomes-dir"), b"file").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("was-link")).unwrap();
    let tar = TarBuilder::new()
        .dir("dir", Attrs::default().mode(0o700).owner(5, 5))
        .file("becomes-file", b"now a file", Attrs::default())
        .dir("becomes-dir", Attrs::default().mode(0o755))
        .file("was-link", b"plain", Attrs::default())
        .finish();
    apply(root, &tar, WhiteoutMode::Remove).unwrap();
    let dir = fs::symlink_metadata(root.join("dir")).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.uid()), (0o700, 5));
    assert!(
        root.join("dir/keep").is_dir(),
        "a directory replaced by a directory keeps its children"
    );
    assert_eq!(fs::read(root.join("dir/child")).unwrap(), b"old");
    assert_eq!(fs::read(root.join("becomes-file")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(root.join("becomes-dir"))
        .unwrap()
        .is_dir());
    let was_link = fs::symlink_metadata(root.join("was-link")).unwrap();
    assert!(was_link.is_file());
    assert_eq!(fs::read(root.join("was-link")).unwrap(), b"plain");
}

/// A tree shared by the whiteout tests: what the parent layer had.
fn lower_tree(root: &Path) {
    fs::write(root.join("a"), b"a").unwrap();
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/x"), b"x").unwrap();
    fs::write(root.join("d/y"), b"y").unwrap();
    fs::create_dir_all(root.join("o/sub")).unwrap();
    fs::write(root.join("o/p"), b"p").unwrap();
    fs::write(root.join("o/sub/q"), b"q").unwrap();
    fs::write(root.join("g"), b"old g").unwrap();
    fs::create_dir_all(root.join("r/old")).unwrap();
}

fn whiteout_tar() -> Vec<u8> {
    TarBuilder::new()
        .file(".wh.a", b"", Attrs::default().mode(0))
        .dir("d", Attrs::default().mode(0o755))
        .file("d/.wh.x", b"", Attrs::default().mode(0))
        // Added before the opaque marker: must survive it.
        .dir("o", Attrs::default().mode(0o755))
        .file("o/new", b"new", Attrs::default())
        .dir("o/sub", Attrs::default().mode(0o755))
        .file("o/sub/mine", b"mine", Attrs::default())
        .file("o/.wh..wh..opq", b"", Attrs::default().mode(0))
        // Added, then whited out in the same layer: the whiteout only hides lower layers.
        .file("f", b"same layer", Attrs::default())
        .file(".wh.f", b"", Attrs::default().mode(0))
        // Whited out, then re-created.
        .file(".wh.g", b"", Attrs::default().mode(0))
        .file("g", b"new g", Attrs::default())
        // A directory deleted and re-created: the lower one must be hidden.
        .file(".wh.r", b"", Attrs::default().mode(0))
        .dir("r", Attrs::default().mode(0o755))
        .file("r/fresh", b"fresh", Attrs::default())
        // AUFS housekeeping.
        .file(".wh..wh.plnk", b"", Attrs::default())
        .finish()
}

#[test]
fn whiteouts_remove_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    lower_tree(root);
    apply(root, &whiteout_tar(), WhiteoutMode::Remove).unwrap();
    assert!(!root.join("a").exists());
    assert!(!root.join("d/x").exists());
    assert_eq!(fs::read(root.join("d/y")).unwrap(), b"y");
    assert!(!root.join("o/p").exists(), "opaque removes lower content");
    assert!(
        !root.join("o/sub/q").exists(),
        "opaque removes lower content below kept directories"
    );
    assert_eq!(fs::read(root.join("o/new")).unwrap(), b"new");
    assert_eq!(fs::read(root.join("o/sub/mine")).unwrap(), b"mine");
    assert_eq!(fs::read(root.join("f")).unwrap(), b"same layer");
    assert_eq!(fs::read(root.join("g")).unwrap(), b"new g");
    assert!(!root.join("r/old").exists());
    assert_eq!(fs::read(root.join("r/fresh")).unwrap(), b"fresh");
    for entry in walk(root) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".wh."),
            "no whiteout markers in remove mode: {entry:?}"
        );
    }
}

#[test]
fn whiteouts_overlay_mode() {
    for userxattr in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        apply(root, &whiteout_tar(), WhiteoutMode::Overlay { userxattr }).unwrap();
        let opaque = if userxattr {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        };
        let is_whiteout = |p: &str| {
            let m = fs::symlink_metadata(root.join(p)).unwrap();
            m.file_type().is_char_device() && m.rdev() == 0
        };
        assert!(is_whiteout("a"));
        assert!(is_whiteout("d/x"));
        assert_eq!(get_xattr(&root.join("o"), opaque), Some(b"y".to_vec()));
        assert_eq!(fs::read(root.join("o/new")).unwrap(), b"new");
        assert_eq!(
            fs::read(root.join("f")).unwrap(),
            b"same layer",
            "whiteout does not hide same-layer entries"
        );
        assert_eq!(fs::read(root.join("g")).unwrap(), b"new g");
        assert_eq!(
            get_xattr(&root.join("r"), opaque),
            Some(b"y".to_vec()),
            "a directory replacing a whiteout hides the lower directory"
        );
        assert!(get_xattr(&root.join("d"), opaque).is_none());
        assert!(!root.join(".wh..wh.plnk").exists());
        assert!(!root.join("o/.wh..wh..opq").exists());
    }
}

#[test]
fn whiteouts_aufs_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    apply(root, &whiteout_tar(), WhiteoutMode::Aufs).unwrap();
    for marker in [
        ".wh.a",
        "d/.wh.x",
        "o/.wh..wh..opq",
        ".wh.f",
        ".wh.g",
        ".wh.r",
    ] {
        let m = fs::symlink_metadata(root.join(marker)).unwrap();
        assert!(
            m.is_file() && m.len() == 0,
            "{marker} kept as an empty file"
        );
    }
    assert!(
        !root.join(".wh..wh.plnk").exists(),
        "housekeeping names are skipped"
    );
    assert_eq!(fs::read(root.join("f")).unwrap(), b"same layer");
    assert_eq!(fs::read(root.join("g")).unwrap(), b"new g");
}

#[test]
fn overlay_xattrs_in_the_tar_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tar = TarBuilder::new()
        .dir(
            "d",
            Attrs::default()
                .mode(0o755)
                .xattr("trusted.overlay.opaque", b"y")
                .xattr("user.overlay.redirect", b"/elsewhere"),
        )
        .file(
            "f",
            b"f",
            Attrs::default()
                .xattr("trusted.overlay.metacopy", b"")
                .xattr("user.keep", b"kept"),
        )
        .finish();
    for mode in [
        WhiteoutMode::Remove,
        WhiteoutMode::Overlay { userxattr: false },
    ] {
        let sub = root.join(format!("{mode:?}").replace(' ', ""));
        fs::create_dir(&sub).unwrap();
        apply(&sub, &tar, mode).unwrap();
        assert_eq!(get_xattr(&sub.join("d"), "trusted.overlay.opaque"), None);
        assert_eq!(get_xattr(&sub.join("d"), "user.overlay.redirect"), None);
        assert_eq!(get_xattr(&sub.join("f"), "trusted.overlay.metacopy"), None);
        assert_eq!(
            get_xattr(&sub.join("f"), "user.keep"),
            Some(b"kept".to_vec())
        );
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// Sets up `<tmp>/root` and `<tmp>/outside` (with a victim file) and returns them.
fn escape_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"untouched").unwrap();
    (tmp, root, outside)
}

fn assert_outside_untouched(tmp: &Path, outside: &Path, before: &common::TreeSnapshot) {
    assert_eq!(&snapshot(outside), before, "the outside directory changed");
    let mut names: Vec<_> = fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "root"],
        "nothing was created next to the root"
    );
}

#[test]
fn escapes_through_symlinks_are_contained() {
    let (tmp, root, outside) = escape_setup();
    let before = snapshot(&outside);
    let outside_abs = outside.to_str().unwrap().to_string();
    let rel_outside = outside_abs.trim_start_matches('/');
    let tar = TarBuilder::new()
        // The same path exists inside the root, so the absolute symlink resolves there.
        .dir(rel_outside, Attrs::default().mode(0o755))
        .symlink("evil", &outside_abs, Attrs::default())
        .file("evil/file", b"inside?", Attrs::default())
        .symlink("up", "../../../../..", Attrs::default())
        .file("up/escaped", b"inside?", Attrs::default())
        .symlink(
            "victim-link",
            &format!("{outside_abs}/victim"),
            Attrs::default(),
        )
        // Replaces the symlink itself, never writes through it.
        .file("victim-link", b"overwritten?", Attrs::default())
        .symlink("dirlink", &outside_abs, Attrs::default())
        .dir("dirlink", Attrs::default().mode(0o700))
        .symlink("evil2", &outside_abs, Attrs::default())
        .file("evil2/.wh.victim", b"", Attrs::default())
        .finish();
    apply(&root, &tar, WhiteoutMode::Remove).unwrap();
    assert_outside_untouched(tmp.path(), &outside, &before);
    // The writes landed inside the root, as if the root were `/`.
    assert_eq!(
        fs::read(root.join(rel_outside).join("file")).unwrap(),
        b"inside?"
    );
    assert_eq!(fs::read(root.join("escaped")).unwrap(), b"inside?");
    assert_eq!(fs::read(root.join("victim-link")).unwrap(), b"overwritten?");
    assert!(fs::symlink_metadata(root.join("dirlink")).unwrap().is_dir());
}

#[test]
fn writing_through_a_dangling_symlink_is_refused() {
    let (tmp, root, outside) = escape_setup();
    let before = snapshot(&outside);
    let outside_abs = outside.to_str().unwrap().to_string();
    let tar = TarBuilder::new()
        .symlink("evil", &outside_abs, Attrs::default())
        .file("evil/file", b"escaped?", Attrs::default())
        .finish();
    let err = apply(&root, &tar, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_outside_untouched(tmp.path(), &outside, &before);
    assert!(!outside.join("file").exists());
}

#[test]
fn escapes_through_dotdot_and_absolute_paths_are_contained() {
    let (tmp, root, outside) = escape_setup();
    let before = snapshot(&outside);
    let tar = TarBuilder::new()
        .file_literal_path("../x", b"dotdot")
        .file_literal_path("../../outside/victim", b"dotdot victim")
        .file_literal_path("/abs/x", b"absolute")
        .file_literal_path("a/../../../y", b"nested dotdot")
        .finish();
    apply(&root, &tar, WhiteoutMode::Overlay { userxattr: false }).unwrap();
    assert_outside_untouched(tmp.path(), &outside, &before);
    assert_eq!(fs::read(root.join("x")).unwrap(), b"dotdot");
    assert_eq!(
        fs::read(root.join("outside/victim")).unwrap(),
        b"dotdot victim"
    );
    assert_eq!(fs::read(root.join("abs/x")).unwrap(), b"absolute");
    assert_eq!(fs::read(root.join("y")).unwrap(), b"nested dotdot");
}

#[test]
fn hardlinks_to_outside_are_refused() {
    let (tmp, root, outside) = escape_setup();
    let before = snapshot(&outside);
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let outside_abs = outside.to_str().unwrap().to_string();

    let tar = TarBuilder::new()
        .hardlink_literal("h", "../../etc/passwd")
        .finish();
    let err = apply(&root, &tar, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
    assert!(err.to_string().contains("not in the layer"), "{err}");

    // Through a symlink planted by the layer: resolved inside the root, so still missing.
    let tar = TarBuilder::new()
        .symlink("out", &outside_abs, Attrs::default())
        .hardlink("h2", "out/victim")
        .finish();
    let err = apply(&root, &tar, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");

    // Absolute target.
    let tar = TarBuilder::new()
        .hardlink_literal("h3", &format!("{outside_abs}/victim"))
        .finish();
    assert!(matches!(
        apply(&root, &tar, WhiteoutMode::Remove),
        Err(DriverError::BadLayer(_))
    ));

    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    assert_eq!(fs::metadata(outside.join("victim")).unwrap().nlink(), 1);
    assert_outside_untouched(tmp.path(), &outside, &before);
    assert!(!root.join("h").exists() && !root.join("h2").exists() && !root.join("h3").exists());
}

#[test]
fn hardlink_to_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .dir("d", Attrs::default().mode(0o755))
        .hardlink("h", "d")
        .finish();
    let err = apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
}

#[test]
fn corrupt_and_truncated_tars_are_bad_layers() {
    let good = TarBuilder::new()
        .dir("d", Attrs::default().mode(0o755))
        .file("d/big", &vec![7u8; 100_000], Attrs::default())
        .file("d/after", b"after", Attrs::default())
        .finish();

    // Truncated inside the content of d/big.
    let tmp = tempfile::tempdir().unwrap();
    let err = apply(tmp.path(), &good[..50_000], WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Truncated inside a header.
    let tmp = tempfile::tempdir().unwrap();
    let err = apply(tmp.path(), &good[..512 + 300], WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");

    // A corrupted header checksum.
    let mut corrupt = good.clone();
    corrupt[0] ^= 0x55;
    let tmp = tempfile::tempdir().unwrap();
    let err = apply(tmp.path(), &corrupt, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");

    // Garbage.
    let tmp = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8 + 1).collect();
    assert!(matches!(
        apply(tmp.path(), &garbage, WhiteoutMode::Remove),
        Err(DriverError::BadLayer(_))
    ));

    // The intact tar applies.
    let tmp = tempfile::tempdir().unwrap();
    let stats = apply(tmp.path(), &good, WhiteoutMode::Remove).unwrap();
    assert_eq!(stats.entries, 3);
    assert_eq!(stats.bytes, 100_005);
}

#[test]
fn root_entry_updates_root_metadata_and_cannot_be_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .dir("./", Attrs::default().mode(0o750).owner(3, 4).mtime(1_234))
        .file("f", b"f", Attrs::default())
        .finish();
    apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap();
    let m = fs::metadata(tmp.path()).unwrap();
    assert_eq!(
        (m.permissions().mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o750, 3, 4, 1_234)
    );

    let tar = TarBuilder::new().file_literal_path("./", b"").finish();
    let err = apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
}

#[test]
fn applying_twice_gives_the_same_tree() {
    let tar = TarBuilder::new()
        .dir("a", Attrs::default().mode(0o755))
        .file("a/f", b"f", Attrs::default().mode(0o4755).owner(1, 1))
        .hardlink("a/g", "a/f")
        .symlink("a/s", "f", Attrs::default())
        .finish();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    apply(one.path(), &tar, WhiteoutMode::Remove).unwrap();
    apply(two.path(), &tar, WhiteoutMode::Remove).unwrap();
    // Re-applying onto an existing result replaces everything in place.
    apply(two.path(), &tar, WhiteoutMode::Remove).unwrap();
    fs::set_permissions(one.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(two.path(), fs::Permissions::from_mode(0o755)).unwrap();
    common::set_mtime(one.path(), 1, 0);
    common::set_mtime(two.path(), 1, 0);
    assert_same_tree(one.path(), two.path());
}

#[test]
fn gnu_sparse_with_extension_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let sparse = tmp.path().join("many-holes");
    let f = fs::File::create(&sparse).unwrap();
    use std::os::unix::fs::FileExt;
    // 30 data segments: more than fit in the GNU header (4) and in one extension block (21).
    for i in 0..30u64 {
        f.write_all_at(format!("segment {i}").as_bytes(), i * (1 << 20))
            .unwrap();
    }
    f.set_len(31 << 20).unwrap();
    drop(f);
    let tar = TarBuilder::new()
        .sparse_file_from("many-holes", &sparse)
        .file("after", b"after", Attrs::default())
        .finish();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    apply(&root, &tar, WhiteoutMode::Remove).unwrap();
    assert_eq!(
        fs::read(root.join("many-holes")).unwrap(),
        fs::read(&sparse).unwrap()
    );
    let m = fs::metadata(root.join("many-holes")).unwrap();
    assert!(
        m.blocks() * 512 < 2 << 20,
        "holes kept: {} blocks",
        m.blocks()
    );
    assert_eq!(fs::read(root.join("after")).unwrap(), b"after");
}

#[test]
fn pax_sparse_format_1_0() {
    // GNU tar --format=posix --sparse: the map precedes the data, the real name is a PAX record.
    let mut data = b"2\n0\n4\n8192\n4\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"abcdwxyz");
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", &b"0"[..]),
            ("GNU.sparse.name", &b"dir/real-name"[..]),
            ("GNU.sparse.realsize", &b"12288"[..]),
        ])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    builder
        .append_data(&mut h, "dir/GNUSparseFile.0/real-name", &data[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap();
    let content = fs::read(tmp.path().join("dir/real-name")).unwrap();
    let mut expected = vec![0u8; 12288];
    expected[..4].copy_from_slice(b"abcd");
    expected[8192..8196].copy_from_slice(b"wxyz");
    assert_eq!(content, expected);
    assert!(!tmp.path().join("dir/GNUSparseFile.0").exists());
}

#[test]
fn binary_xattr_values_survive() {
    // CAP_DAC_OVERRIDE | CAP_FOWNER: the permitted mask is the byte 0x0a, a newline.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&0x0au32.to_le_bytes());
    cap.extend_from_slice(&[0u8; 12]);
    let weird = b"line1\nline2\0=x \n".to_vec();
    let tar = TarBuilder::new()
        .file(
            "tool",
            b"t",
            Attrs::default()
                .mode(0o755)
                .owner(10, 10)
                .xattr("security.capability", &cap)
                .xattr("trusted.weird", &weird),
        )
        .finish();
    let tmp = tempfile::tempdir().unwrap();
    apply(tmp.path(), &tar, WhiteoutMode::Remove).unwrap();
    assert_eq!(
        get_xattr(&tmp.path().join("tool"), "security.capability"),
        Some(cap)
    );
    assert_eq!(
        get_xattr(&tmp.path().join("tool"), "trusted.weird"),
        Some(weird)
    );
}
