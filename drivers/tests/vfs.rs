//! The vfs driver: layer lifecycle, atomic apply, removal, mount specs, status.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{assert_same_tree, Attrs, TarBuilder};
use drivers::driver::Driver;
use drivers::{DriverError, FrontendKind, MountSpec, VfsDriver, WhiteoutFormat};

fn layer_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", Attrs::default().mode(0o755))
        .file("etc/hostname", b"box\n", Attrs::default())
        .file("bin/sh", b"#!sh", Attrs::default().mode(0o755))
        .finish()
}

fn staging_entries(home: &Path) -> Vec<String> {
    fs::read_dir(home.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn apply_diff_create_and_lineage() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    assert_eq!(driver.name(), "vfs");
    assert_eq!(driver.home(), tmp.path().join("vfs"));
    let stats = driver
        .apply_diff("base", None, &mut &layer_tar()[..])
        .unwrap();
    assert_eq!((stats.entries, stats.bytes), (3, 8));
    assert!(driver.exists("base"));
    assert_eq!(driver.parent("base").unwrap(), None);

    let top = TarBuilder::new()
        .file("etc/.wh.hostname", b"", Attrs::default().mode(0))
        .file("etc/motd", b"hi", Attrs::default())
        .finish();
    driver
        .apply_diff("top", Some("base"), &mut &top[..])
        .unwrap();
    assert_eq!(driver.parent("top").unwrap().as_deref(), Some("base"));
    let top_dir = driver.layer_dir("top");
    assert!(!top_dir.join("etc/hostname").exists());
    assert_eq!(fs::read(top_dir.join("etc/motd")).unwrap(), b"hi");
    assert_eq!(fs::read(top_dir.join("bin/sh")).unwrap(), b"#!sh");
    // The parent is untouched.
    assert!(driver.layer_dir("base").join("etc/hostname").exists());

    driver.create("empty-child", Some("top")).unwrap();
    assert_same_tree(&top_dir, &driver.layer_dir("empty-child"));
    driver.create("scratch", None).unwrap();
    assert_eq!(
        fs::read_dir(driver.layer_dir("scratch")).unwrap().count(),
        0
    );

    assert_eq!(
        driver.layers().unwrap(),
        ["base", "empty-child", "scratch", "top"]
    );
    assert!(staging_entries(driver.home()).is_empty());
}

#[test]
fn errors_for_bad_ids_duplicates_and_missing_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    assert!(matches!(
        driver.create("../evil", None),
        Err(DriverError::InvalidId(_))
    ));
    assert!(matches!(
        driver.create("UPPER", None),
        Err(DriverError::InvalidId(_))
    ));
    assert!(matches!(
        driver.create("child", Some("nope")),
        Err(DriverError::NoSuchLayer(_))
    ));
    driver.create("one", None).unwrap();
    assert!(matches!(
        driver.create("one", None),
        Err(DriverError::LayerExists(_))
    ));
    assert!(matches!(
        driver.apply_diff("one", None, &mut &layer_tar()[..]),
        Err(DriverError::LayerExists(_))
    ));
    assert!(matches!(
        driver.parent("two"),
        Err(DriverError::NoSuchLayer(_))
    ));
    assert!(matches!(
        driver.changes("two", None),
        Err(DriverError::NoSuchLayer(_))
    ));
    assert!(!driver.exists("two"));
    assert!(!driver.exists("../one"));
}

#[test]
fn apply_diff_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    driver
        .apply_diff("base", None, &mut &layer_tar()[..])
        .unwrap();
    let good = TarBuilder::new()
        .file("first", b"written before the failure", Attrs::default())
        .file("big", &vec![1u8; 50_000], Attrs::default())
        .finish();
    let broken = &good[..20_000];
    let err = driver
        .apply_diff("broken", Some("base"), &mut &broken[..])
        .unwrap_err();
    assert!(matches!(err, DriverError::BadLayer(_)), "{err}");
    assert!(!driver.exists("broken"));
    assert!(!driver.layer_dir("broken").exists());
    assert!(!driver.home().join("meta/broken.json").exists());
    assert!(
        staging_entries(driver.home()).is_empty(),
        "failed builds clean up after themselves"
    );
    assert_eq!(driver.layers().unwrap(), ["base"]);

    // Leftovers of an interrupted process are removed by cleanup.
    let leftover = driver.home().join("staging/broken.0123456789abcdef");
    fs::create_dir_all(leftover.join("deep/tree")).unwrap();
    fs::write(leftover.join("deep/tree/f"), b"x").unwrap();
    fs::set_permissions(leftover.join("deep"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::write(
        driver.home().join("meta/ghost.json"),
        br#"{"parent":null,"rw":false}"#,
    )
    .unwrap();
    fs::create_dir(driver.home().join("work/ghost")).unwrap();
    driver.cleanup().unwrap();
    assert!(staging_entries(driver.home()).is_empty());
    assert!(!driver.home().join("meta/ghost.json").exists());
    assert!(!driver.home().join("work/ghost").exists());
    assert_eq!(driver.layers().unwrap(), ["base"]);

    // The id is free again.
    driver
        .apply_diff("broken", Some("base"), &mut &good[..])
        .unwrap();
    assert_eq!(
        fs::read(driver.layer_dir("broken").join("first")).unwrap(),
        b"written before the failure"
    );
}

#[test]
fn read_write_layers_and_mount_specs() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    driver
        .apply_diff("image", None, &mut &layer_tar()[..])
        .unwrap();
    driver.create_rw("container", Some("image")).unwrap();
    let dir = driver.layer_dir("container");
    assert_same_tree(&driver.layer_dir("image"), &dir);

    match driver
        .mount_spec("container", FrontendKind::Kernel, false)
        .unwrap()
    {
        MountSpec::Bind { source, read_only } => {
            assert_eq!(source, dir);
            assert!(!read_only);
        }
        other => panic!("unexpected {other:?}"),
    }
    match driver
        .mount_spec("image", FrontendKind::Kernel, true)
        .unwrap()
    {
        MountSpec::Bind { read_only, .. } => assert!(read_only),
        other => panic!("unexpected {other:?}"),
    }
    let err = driver
        .mount_spec("image", FrontendKind::Kernel, false)
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(driver
        .mount_spec("image", FrontendKind::Fuse, false)
        .is_err());

    match driver
        .mount_spec("container", FrontendKind::Fuse, false)
        .unwrap()
    {
        MountSpec::Stack {
            lowers,
            upper,
            whiteouts,
            ..
        } => {
            assert!(lowers.is_empty());
            let (up, work) = upper.unwrap();
            assert_eq!(up, dir);
            assert!(work.is_dir());
            assert_eq!(whiteouts, WhiteoutFormat::None);
        }
        other => panic!("unexpected {other:?}"),
    }
    match driver
        .mount_spec("container", FrontendKind::Fuse, true)
        .unwrap()
    {
        MountSpec::Stack {
            lowers,
            upper,
            whiteouts,
            ..
        } => {
            assert_eq!(lowers.len(), 1);
            assert!(upper.is_none());
            assert_eq!(whiteouts, WhiteoutFormat::None);
            assert_eq!(lowers[0].directory(), Some(dir.as_path()));
            let entry = lowers[0]
                .lookup(Path::new("etc/hostname"))
                .unwrap()
                .unwrap();
            assert_eq!(entry.size, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    let reader = driver.layer_reader("container").unwrap();
    assert_eq!(
        reader
            .readlink(Path::new("bin/sh"))
            .map_err(|e| e.raw_os_error()),
        Err(Some(libc::EINVAL))
    );
    assert!(driver.supports(FrontendKind::Kernel).is_ok());
    assert!(driver.supports(FrontendKind::Fuse).is_ok());

    // Removing the container removes its work directory too.
    driver.remove("container").unwrap();
    assert!(!driver.exists("container"));
    assert!(!driver.home().join("work/container").exists());
    assert!(driver.exists("image"));
}

#[test]
fn remove_handles_read_only_trees_and_reports_immutable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    let tar = TarBuilder::new()
        .dir("locked", Attrs::default().mode(0o000))
        .dir("locked/inner", Attrs::default().mode(0o500))
        .file("locked/inner/f", b"f", Attrs::default().mode(0o400))
        .finish();
    driver.apply_diff("ro", None, &mut &tar[..]).unwrap();
    driver.remove("ro").unwrap();
    assert!(!driver.exists("ro"));
    assert!(staging_entries(driver.home()).is_empty());
    // Removing a missing layer is fine.
    driver.remove("ro").unwrap();
    driver.remove("never-existed").unwrap();

    driver
        .apply_diff("sticky", None, &mut &layer_tar()[..])
        .unwrap();
    let victim = driver.layer_dir("sticky").join("etc/hostname");
    let chattr = |flag: &str| {
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&victim)
            .status()
            .unwrap();
        assert!(status.success(), "chattr {flag}");
    };
    chattr("+i");
    let err = driver.remove("sticky").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("immutable") && msg.contains("chattr"), "{msg}");
    assert!(
        !driver.exists("sticky"),
        "the layer is gone from its id even when deletion fails"
    );
    // Once the flag is cleared, cleanup finishes the job.
    let doomed: Vec<_> = fs::read_dir(driver.home().join("staging"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(doomed.len(), 1);
    let status = std::process::Command::new("chattr")
        .arg("-i")
        .arg(doomed[0].join("etc/hostname"))
        .status()
        .unwrap();
    assert!(status.success());
    driver.cleanup().unwrap();
    assert!(staging_entries(driver.home()).is_empty());
}

#[test]
fn status_reports_backing_filesystem_reflink_and_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    driver.create("a", None).unwrap();
    driver.create("b", Some("a")).unwrap();
    let status = driver.status();
    assert_eq!(status.driver, "vfs");
    let fact = |k: &str| {
        status
            .facts
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing fact {k}"))
    };
    assert_eq!(
        fact("Backing Filesystem"),
        drivers::fsutil::filesystem_name(tmp.path()).unwrap()
    );
    let reflink = drivers::copy::reflink_supported(tmp.path());
    assert_eq!(fact("Reflink"), if reflink { "yes" } else { "no" });
    assert_eq!(fact("Layers"), "2");
}

#[test]
fn diff_against_the_recorded_parent_of_an_image_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = VfsDriver::new(tmp.path()).unwrap();
    driver
        .apply_diff("l1", None, &mut &layer_tar()[..])
        .unwrap();
    let l2 = TarBuilder::new()
        .dir("etc", Attrs::default().mode(0o755))
        .file("etc/.wh.hostname", b"", Attrs::default().mode(0))
        .file("etc/new", b"new", Attrs::default())
        .finish();
    driver.apply_diff("l2", Some("l1"), &mut &l2[..]).unwrap();
    let changes: Vec<String> = driver
        .changes("l2", Some("l1"))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(changes, ["C /etc", "D /etc/hostname", "A /etc/new"]);
    assert_eq!(driver.diff_size("l2", Some("l1")).unwrap(), 3);
    let mut tar = Vec::new();
    driver.diff("l2", Some("l1"), &mut tar).unwrap();
    // Re-importing the produced diff on the same parent gives the same layer.
    driver
        .apply_diff("l2-again", Some("l1"), &mut &tar[..])
        .unwrap();
    assert_same_tree(&driver.layer_dir("l2"), &driver.layer_dir("l2-again"));
}
