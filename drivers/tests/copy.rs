//! Full tree copies: every entry kind, hard-link groups, xattrs and holes survive.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use common::{assert_same_tree, cap_net_bind_service, set_mtime, set_xattr, Attrs, TarBuilder};
use drivers::apply::{apply_layer, WhiteoutMode};
use drivers::copy::{copy_tree, CopyMethod};

#[test]
fn copy_tree_reproduces_the_tree_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let tar = TarBuilder::new()
        .dir("etc", Attrs::default().mode(0o755).mtime(1_000))
        .file(
            "etc/passwd",
            b"root:x:0:0\n",
            Attrs::default().pax("mtime", "1000.5"),
        )
        .file(
            "bin/ping",
            b"ping",
            Attrs::default()
                .mode(0o4755)
                .owner(1, 2)
                .xattr("security.capability", &cap_net_bind_service())
                .xattr("user.note", b"n"),
        )
        .hardlink("bin/ping2", "bin/ping")
        .hardlink("etc/ping3", "bin/ping")
        .file("bin/other", b"o", Attrs::default())
        .hardlink("other-link", "bin/other")
        .symlink(
            "bin/sh",
            "busybox",
            Attrs::default().owner(9, 9).xattr("trusted.t", b"1"),
        )
        .device("dev/null", false, 1, 3, Attrs::default().mode(0o666))
        .device("dev/sda", true, 8, 0, Attrs::default().mode(0o660))
        .fifo("run/fifo", Attrs::default().mode(0o600))
        .dir("tmp", Attrs::default().mode(0o1777))
        .file("empty", b"", Attrs::default())
        .finish();
    apply_layer(&src, &mut &tar[..], WhiteoutMode::Remove).unwrap();
    let sparse = src.join("sparse");
    {
        let f = fs::File::create(&sparse).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.write_all_at(b"more", 40 << 20).unwrap();
        f.set_len(80 << 20).unwrap();
    }
    set_mtime(&sparse, 5, 6);
    set_xattr(&src, "trusted.root", b"r");
    set_mtime(&src, 77, 88);

    let dst = tmp.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_same_tree(&src, &dst);
    assert_eq!(stats.hardlinks, 3);
    assert_eq!(
        stats.copied_files + stats.reflinked_files,
        4,
        "files with content"
    );
    let copied = fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(copied.len(), 80 << 20);
    assert!(
        copied.blocks() * 512 < 1 << 20,
        "holes kept: {} blocks",
        copied.blocks()
    );
    let expected = if drivers::copy::reflink_supported(tmp.path()) {
        CopyMethod::Reflink
    } else {
        CopyMethod::CopyFileRange
    };
    assert_eq!(stats.method(), Some(expected));
}

#[test]
fn copy_into_existing_empty_directory_and_refuse_file_target() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    copy_tree(&src, &dst).unwrap();
    assert_same_tree(&src, &dst);

    let file_target = tmp.path().join("file");
    fs::write(&file_target, b"").unwrap();
    assert!(copy_tree(&src, &file_target).is_err());
}

/// Reflinks on a filesystem that supports them (btrfs on a loop device).
#[test]
fn copy_tree_reflinks_on_btrfs() {
    let Some(btrfs) = BtrfsMount::create() else {
        panic!("mkfs.btrfs and loop mounts are expected to work on the test machine");
    };
    let src = btrfs.path.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![1u8; 1 << 20]).unwrap();
    fs::write(src.join("b"), b"small").unwrap();
    assert!(drivers::copy::reflink_supported(&btrfs.path));
    let dst = btrfs.path.join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.method(), Some(CopyMethod::Reflink));
    assert_eq!(stats.reflinked_files, 2);
    assert_same_tree(&src, &dst);
}

/// A small btrfs filesystem mounted from an image file, unmounted on drop.
struct BtrfsMount {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl BtrfsMount {
    fn create() -> Option<BtrfsMount> {
        use std::process::Command;
        let dir = tempfile::tempdir().ok()?;
        let image = dir.path().join("image");
        let f = fs::File::create(&image).ok()?;
        f.set_len(128 << 20).ok()?;
        let mkfs = Command::new("mkfs.btrfs")
            .arg("-q")
            .arg(&image)
            .stdout(std::process::Stdio::null())
            .status()
            .ok()?;
        if !mkfs.success() {
            return None;
        }
        let path = dir.path().join("mnt");
        fs::create_dir(&path).ok()?;
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&path)
            .status()
            .ok()?;
        if !mount.success() {
            return None;
        }
        Some(BtrfsMount { _dir: dir, path })
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn reflink_probe_of_a_missing_directory_is_false() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!drivers::copy::reflink_supported(
        &tmp.path().join("missing")
    ));
}
