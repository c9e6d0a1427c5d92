//! The conformance suite: one set of checks that every driver × frontend row
//! runs (in the spirit of containerd's snapshotter test suite).
//!
//! For each row it imports the test-support images, mounts them and compares the
//! merged tree entry by entry with the tree the OCI layer model predicts; then it
//! runs a container through a fixed script of operations and checks `lamina diff`,
//! the committed image and the exported root filesystem.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{require_privileged, Lamina};
use test_support::tree::{compare_trees, scan_tree, CompareOptions, Node, NodeKind, Tree};
use test_support::{fixtures, Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};

/// Rows that must work on this machine when privileged; any other row that is
/// unavailable is reported as a skip with the reason `lamina drivers` gives.
const REQUIRED_ROWS: &[(&str, &str)] = &[
    ("vfs", "kernel"),
    ("vfs", "fuse"),
    ("overlay2", "kernel"),
    ("overlay2", "fuse"),
    ("squashfs", "kernel"),
    ("squashfs", "fuse"),
    ("aufs", "fuse"),
];

/// Why a row cannot run here, as `lamina drivers` says, or `None`.
fn unavailable(l: &Lamina, driver: &str, frontend: &str) -> Option<String> {
    let out = l.ok(["drivers", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("drivers json");
    let row = v["drivers"]
        .as_array()
        .expect("drivers list")
        .iter()
        .find(|r| r["driver"] == driver && r["frontend"] == frontend)
        .unwrap_or_else(|| panic!("lamina drivers lists no {driver} × {frontend}"));
    if row["available"].as_bool() == Some(true) {
        None
    } else {
        Some(row["reason"].as_str().unwrap_or("unavailable").to_string())
    }
}

fn assert_trees_equal(what: &str, expected: &Tree, actual: &Tree) {
    let diffs = compare_trees(expected, actual, CompareOptions::ignoring_dir_mtimes());
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// `tree` as a container sees it: the init layer adds the runtime's mountpoints
/// the image lacks.
fn with_init_dirs(mut tree: Tree) -> Tree {
    for d in lamina::init_layer::INIT_DIRS {
        let path = format!("/{d}");
        tree.nodes.entry(path).or_insert_with(|| Node {
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            xattrs: Default::default(),
            link_group: None,
        });
    }
    tree
}

/// The base image of the container script: known paths the script touches.
fn script_base() -> ImageBuilder {
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/config", "key=1\n", 0o644)
        .file("etc/hosts", "127.0.0.1 localhost\n", 0o644)
        .dir("bin", 0o755)
        .file("bin/tool", "#!/bin/sh\necho tool\n", 0o755)
        .dir("var/log", 0o755)
        .file("var/log/old.log", "old\n", 0o640)
        .file("var/log/keep.log", "keep\n", 0o640)
        .dir("opt/app/lib", 0o755)
        .file("opt/app/lib/a.so", "elf", 0o755)
        .file("opt/app/readme", "app", 0o644)
        .dir("srv/data", 0o755)
        .file("srv/data/x", "x", 0o644)
        .dir("home/user", 0o750)
        .owner(1000, 1000)
        .file("etc/hl-a", "linked\n", 0o644)
        .hardlink("etc/hl-b", "etc/hl-a")
        .dir("usr/share/doc", 0o755)
        .file("usr/share/doc/a", "a", 0o644)
        .file("usr/share/doc/b", "b", 0o644)
        .file("big", vec![7u8; 256 * 1024], 0o644);
    let l2 = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/motd", "hello\n", 0o644)
        .whiteout("etc/hosts")
        .dir("srv/data", 0o755)
        .file("srv/data/y", "y", 0o600);
    ImageBuilder::new()
        .layer(l1, Compression::Gzip)
        .layer(l2, Compression::None)
}

/// The fixed script a container runs, and the `lamina diff` it must produce.
fn run_script(root: &Path) {
    use std::fs;
    fs::write(root.join("new.txt"), "new\n").unwrap();
    let mut config = fs::read_to_string(root.join("etc/config")).unwrap();
    config.push_str("key=2\n");
    fs::write(root.join("etc/config"), config).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(root.join("var/log/old.log")).unwrap();
    fs::remove_dir_all(root.join("opt/app")).unwrap();
    fs::create_dir(root.join("srv/moved")).unwrap();
    for name in ["x", "y"] {
        fs::copy(
            root.join("srv/data").join(name),
            root.join("srv/moved").join(name),
        )
        .unwrap();
    }
    fs::remove_dir_all(root.join("srv/data")).unwrap();
    fs::create_dir_all(root.join("home/user/new")).unwrap();
    fs::write(root.join("home/user/new/f"), "f").unwrap();
    std::os::unix::fs::symlink("etc/config", root.join("link")).unwrap();
    fs::hard_link(root.join("new.txt"), root.join("etc/new-link")).unwrap();
    fs::remove_file(root.join("etc/motd")).unwrap();
    fs::write(root.join("etc/hosts"), "recreated\n").unwrap();
    // Writing one name of a hard-link group changes every name of it.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("etc/hl-a"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended\n").unwrap();
    drop(f);
    // A directory deleted and made again hides everything it had.
    fs::remove_dir_all(root.join("usr/share/doc")).unwrap();
    fs::create_dir(root.join("usr/share/doc")).unwrap();
    fs::write(root.join("usr/share/doc/c"), "c").unwrap();
}

const SCRIPT_DIFF: &str = "\
C /bin
C /bin/tool
C /etc
C /etc/config
C /etc/hl-a
C /etc/hl-b
A /etc/hosts
D /etc/motd
A /etc/new-link
C /home
C /home/user
A /home/user/new
A /home/user/new/f
A /link
A /new.txt
C /opt
D /opt/app
C /srv
D /srv/data
A /srv/moved
A /srv/moved/x
A /srv/moved/y
C /usr
C /usr/share
C /usr/share/doc
D /usr/share/doc/a
D /usr/share/doc/b
A /usr/share/doc/c
C /var
C /var/log
D /var/log/old.log
";

fn conformance(driver: &str, frontend: &str) {
    let test = format!("conformance {driver} × {frontend}");
    if !require_privileged(&test) {
        return;
    }
    let l = Lamina::new();
    if let Some(why) = unavailable(&l, driver, frontend) {
        assert!(
            !REQUIRED_ROWS.contains(&(driver, frontend)),
            "{test}: this row must work here, but: {why}"
        );
        eprintln!("skipped {test}: {why}");
        return;
    }
    let row = ["--driver", driver, "--frontend", frontend];

    // 1. The rich image, in every import form, mounts as the model predicts.
    let rich = fixtures::rich_image();
    let archive = l.path("rich.tar");
    rich.write_docker_archive(&archive, &["rich:latest"], DockerArchiveForm::Legacy)
        .unwrap();
    l.ok(["import".as_ref(), archive.as_os_str()]);
    let expected = rich.expected_tree();
    let mnt = l.mountpoint("rich");
    {
        let mut args = row.to_vec();
        args.push("rich:latest");
        let guard = l.mount(&args, &mnt);
        let actual = scan_tree(&mnt).unwrap();
        assert_trees_equal(&format!("{test}: rich image"), &expected, &actual);
        guard.unmount();
    }
    for n in 1..=rich.layer_count() {
        let mut args = row.to_vec();
        let upto = n.to_string();
        args.extend(["--upto", &upto, "rich:latest"]);
        let guard = l.mount(&args, &mnt);
        let actual = scan_tree(&mnt).unwrap();
        drop(guard);
        assert_trees_equal(
            &format!("{test}: rich image up to layer {n}"),
            &rich.expected_tree_upto(n),
            &actual,
        );
    }

    // 2. A container runs the fixed script; diff, commit and export agree.
    let base = script_base();
    let base_archive = l.path("base.tar");
    base.write_oci_layout_tar(&base_archive, Some("v1"))
        .unwrap();
    l.ok([
        "import".as_ref(),
        base_archive.as_os_str(),
        "--name".as_ref(),
        "base:v1".as_ref(),
    ]);
    l.ok(["create", "--driver", driver, "base:v1", "c1"]);
    let cmnt = l.mountpoint("c1");
    let after = {
        let guard = l.mount(&["--frontend", frontend, "c1"], &cmnt);
        let before = scan_tree(&cmnt).unwrap();
        assert_trees_equal(
            &format!("{test}: fresh container"),
            &with_init_dirs(base.expected_tree()),
            &before,
        );
        run_script(&cmnt);
        let after = scan_tree(&cmnt).unwrap();
        guard.unmount();
        after
    };
    let diff = l.ok(["diff", "c1"]);
    assert_eq!(diff, SCRIPT_DIFF, "{test}: lamina diff after the script");

    // The container's view survives a remount.
    {
        let guard = l.mount(&["--frontend", frontend, "c1"], &cmnt);
        assert_trees_equal(
            &format!("{test}: remounted container"),
            &after,
            &scan_tree(&cmnt).unwrap(),
        );
        drop(guard);
    }

    l.ok(["commit", "c1", "committed:v1"]);
    l.ok(["create", "--driver", driver, "committed:v1", "c2"]);
    {
        let guard = l.mount(&["--frontend", frontend, "c2"], &cmnt);
        assert_trees_equal(
            &format!("{test}: container of the committed image"),
            &after,
            &scan_tree(&cmnt).unwrap(),
        );
        drop(guard);
    }
    assert_eq!(
        l.ok(["diff", "c2"]),
        "",
        "{test}: a fresh container has no changes"
    );

    let export = l.path("c1-export.tar");
    l.ok([
        "export".as_ref(),
        "c1".as_ref(),
        "-o".as_ref(),
        export.as_os_str(),
    ]);
    l.ok([
        "import".as_ref(),
        export.as_os_str(),
        "--name".as_ref(),
        "exported:c1".as_ref(),
    ]);
    {
        let mut args = row.to_vec();
        args.push("exported:c1");
        let guard = l.mount(&args, &mnt);
        assert_trees_equal(
            &format!("{test}: exported root filesystem"),
            &after,
            &scan_tree(&mnt).unwrap(),
        );
        drop(guard);
    }
    l.ok(["rm", "c1"]);
    l.ok(["rm", "c2"]);
}

macro_rules! rows {
    ($($name:ident: $driver:literal, $frontend:literal;)*) => {
        $(
            #[test]
            fn $name() {
                conformance($driver, $frontend);
            }
        )*
    };
}

rows! {
    vfs_kernel: "vfs", "kernel";
    vfs_fuse: "vfs", "fuse";
    overlay2_kernel: "overlay2", "kernel";
    overlay2_fuse: "overlay2", "fuse";
    aufs_kernel: "aufs", "kernel";
    aufs_fuse: "aufs", "fuse";
    squashfs_kernel: "squashfs", "kernel";
    squashfs_fuse: "squashfs", "fuse";
}
