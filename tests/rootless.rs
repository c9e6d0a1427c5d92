//! Rootless: an unprivileged user (created by the test) imports images into a
//! store under its own directory, mounts them through `fusermount3`, sees the
//! image's owners, writes into a container, diffs and commits it, and runs it
//! with `runc --rootless`, on every driver through the FUSE frontend.
//!
//! Needs what a rootless FUSE setup needs on a normal distribution (and what
//! `scripts/setup.sh` gives this machine): `/dev/fuse` open to every user, the
//! setuid `fusermount3`, and `user_allow_other` in `/etc/fuse.conf` (so this
//! test, as root, can read the user's mounts).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{import_two_layer_image, require_privileged, Lamina};
use test_support::tree::{compare_trees, scan_tree, CompareOptions, NodeKind, Tree};
use test_support::{fixtures, DockerArchiveForm};

/// The unprivileged account the tests run Lamina as.
const USER: &str = "lamina-rootless";

/// What a rootless FUSE mount needs from the host, or why it cannot work.
fn missing_prerequisite() -> Option<String> {
    match std::fs::metadata("/dev/fuse") {
        Err(e) => return Some(format!("/dev/fuse: {e}")),
        Ok(m) if m.permissions().mode() & 0o006 != 0o006 => {
            return Some(format!(
                "/dev/fuse has mode {:o}; fusermount3 opens it as the user (udev normally makes it 0666; scripts/setup.sh does)",
                m.permissions().mode() & 0o777
            ))
        }
        Ok(_) => {}
    }
    let helper = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok());
    match helper {
        Some(m) if m.uid() == 0 && m.mode() & 0o4000 != 0 => {}
        _ => return Some("no setuid fusermount3 (install fuse3)".into()),
    }
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        return Some(
            "/etc/fuse.conf lacks user_allow_other (scripts/setup.sh adds it), so the test cannot read the user's mounts"
                .into(),
        );
    }
    if Command::new("/usr/bin/setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("setpriv (util-linux) is missing".into());
    }
    None
}

/// The test user's uid and gid, creating the account the first time.
fn test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(USER).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    for _ in 0..50 {
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return (uid, gid);
        }
        // Tests run in parallel processes: another one may be adding the user.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("cannot create the test user {USER}");
}

/// A store run by the unprivileged test user, or `None` (skipped) when the host
/// cannot do rootless FUSE.
fn rootless_store(test: &str) -> Option<(Lamina, u32, u32)> {
    if !require_privileged(test) {
        return None;
    }
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var("LAMINA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "{test}: CI sets up rootless FUSE, but: {why}"
        );
        eprintln!("skipped {test}: {why}");
        return None;
    }
    let (uid, gid) = test_user();
    Some((Lamina::new().run_as(uid, gid), uid, gid))
}

/// Every file of the store belongs to the unprivileged user.
fn assert_store_owned_by(dir: &Path, uid: u32) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!(
            meta.uid(),
            uid,
            "{} is not owned by the store's user",
            entry.path().display()
        );
        if meta.is_dir() && !is_mountpoint(&entry.path()) {
            assert_store_owned_by(&entry.path(), uid);
        }
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let parent = path.parent().map(|p| std::fs::metadata(p).map(|m| m.dev()));
    match (std::fs::metadata(path).map(|m| m.dev()), parent) {
        (Ok(dev), Some(Ok(pdev))) => dev != pdev,
        _ => false,
    }
}

/// What an unprivileged store keeps of a tree: `user.*` xattrs only (setting
/// `security.capability` needs CAP_SETFCAP) and symlinks and fifos owned by
/// root (they cannot carry the xattr holding an owner). The squashfs driver keeps
/// everything: its images are written by Lamina itself.
fn as_stored_rootless(mut tree: Tree, driver: &str) -> Tree {
    if driver == "squashfs" {
        return tree;
    }
    for node in tree.nodes.values_mut() {
        node.xattrs.retain(|name, _| name.starts_with("user."));
        if matches!(node.kind, NodeKind::Symlink { .. }) {
            node.uid = 0;
            node.gid = 0;
        }
        if node.kind == NodeKind::Fifo {
            node.uid = 0;
            node.gid = 0;
            node.mode &= 0o777;
        }
    }
    tree
}

fn presents_the_images_owners(driver: &str) {
    let test = format!("rootless {driver} × fuse: image owners");
    let Some((l, uid, _gid)) = rootless_store(&test) else {
        return;
    };
    let rich = fixtures::rich_image();
    let archive = l.path("rich.tar");
    rich.write_docker_archive(&archive, &["rich:latest"], DockerArchiveForm::Legacy)
        .unwrap();
    std::os::unix::fs::chown(&archive, Some(uid), None).unwrap();
    l.ok(["import".as_ref(), archive.as_os_str()]);
    let mnt = l.mountpoint("rich");
    let guard = l.mount(
        &["--driver", driver, "--frontend", "fuse", "rich:latest"],
        &mnt,
    );
    let actual = scan_tree(&mnt).unwrap();
    guard.unmount();
    let expected = as_stored_rootless(rich.expected_tree(), driver);
    let diffs = compare_trees(&expected, &actual, CompareOptions::ignoring_dir_mtimes());
    assert!(
        diffs.is_empty(),
        "{test}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(
        actual.nodes.values().any(|n| n.uid == 100_000),
        "{test}: a file of uid 100000 keeps its owner"
    );
    assert!(
        l.root.join("rootless").is_file(),
        "{test}: the store is marked rootless"
    );
    assert_store_owned_by(&l.root, uid);
}

/// The container script, run by the unprivileged user inside the mount.
const SCRIPT: &str = "set -e; cd \"$1\"; echo new > etc/new; rm etc/a; chmod 0600 etc/c; \
                      mkdir -p srv/d; echo x > srv/d/f; ln srv/d/f srv/link";

fn container_round_trip(driver: &str) {
    round_trip(driver, false);
}

/// What an overlay-format layer of the store records deletions with.
fn whiteout_forms(dir: &Path, found: &mut Vec<(String, &'static str)>) {
    use std::os::unix::fs::FileTypeExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            found.push((path.display().to_string(), "device"));
        } else if ft.is_file()
            && meta.len() == 0
            && xattr_names(&path)
                .iter()
                .any(|n| n == "user.overlay.whiteout")
        {
            found.push((path.display().to_string(), "xattr"));
        } else if ft.is_dir() && !is_mountpoint(&path) {
            whiteout_forms(&path, found);
        }
    }
}

fn xattr_names(path: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-d", "-m", "-"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('=').next())
        .map(str::to_string)
        .collect()
}

/// The round trip with whiteouts forced into overlayfs's xattr form, as a kernel
/// that refuses 0/0 devices to unprivileged users makes Lamina write them.
fn xattr_whiteouts_round_trip(driver: &str) {
    round_trip(driver, true);
}

fn round_trip(driver: &str, xattr_whiteouts: bool) {
    let test = format!(
        "rootless {driver} × fuse: container diff and commit{}",
        if xattr_whiteouts {
            " (xattr whiteouts)"
        } else {
            ""
        }
    );
    let Some((l, uid, gid)) = rootless_store(&test) else {
        return;
    };
    let l = if xattr_whiteouts {
        l.env(drivers::whiteouts::FORCE_XATTR_WHITEOUTS_ENV, "1")
    } else {
        l
    };
    import_two_layer_image(&l);
    l.ok(["create", "--driver", driver, "img:1", "c1"]);
    let mnt = l.mountpoint("c1");
    let map_u = format!("0:{uid}:1");
    let map_g = format!("0:{gid}:1");
    {
        let guard = l.mount(
            &[
                "--frontend",
                "fuse",
                "--uidmap",
                &map_u,
                "--gidmap",
                &map_g,
                "c1",
            ],
            &mnt,
        );
        let out = l
            .command("sh")
            .args(["-c", SCRIPT, "script"])
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{test}: the script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = std::fs::metadata(mnt.join("etc/new")).unwrap();
        assert_eq!((st.uid(), st.gid()), (uid, gid), "{test}: mapped owner");
        guard.unmount();
    }
    assert_eq!(
        l.ok(["diff", "c1"]),
        "C /etc\nD /etc/a\nC /etc/c\nA /etc/new\nA /srv\nA /srv/d\nA /srv/d/f\nA /srv/link\n",
        "{test}: lamina diff"
    );
    l.ok(["commit", "c1", "img:2"]);
    l.ok(["create", "--driver", driver, "img:2", "c2"]);
    let mnt2 = l.mountpoint("c2");
    let guard = l.mount(&["--frontend", "fuse", "c2"], &mnt2);
    let tree = scan_tree(&mnt2).unwrap();
    guard.unmount();
    let node = |p: &str| {
        tree.nodes
            .get(p)
            .unwrap_or_else(|| panic!("{test}: {p} missing from the committed image"))
    };
    assert!(
        !tree.nodes.contains_key("/etc/a"),
        "{test}: /etc/a stays deleted"
    );
    assert!(
        !tree.nodes.contains_key("/etc/b"),
        "{test}: the image's whiteout holds"
    );
    if driver == "overlay2" || driver == "squashfs" {
        let mut forms = Vec::new();
        whiteout_forms(&l.root.join(driver), &mut forms);
        let want = if xattr_whiteouts { "xattr" } else { "device" };
        assert!(
            !forms.is_empty() && forms.iter().all(|(_, f)| *f == want),
            "{test}: every whiteout is a {want} whiteout: {forms:?}"
        );
    }
    assert_eq!(node("/etc/c").mode, 0o600, "{test}: chmod kept");
    let new = node("/etc/new");
    assert_eq!(
        (new.uid, new.gid),
        (0, 0),
        "{test}: written by the container's root, stored as root"
    );
    assert_eq!(
        node("/srv/d/f").link_group,
        node("/srv/link").link_group,
        "{test}: hard link kept"
    );
    assert!(node("/srv/d/f").link_group.is_some());
    assert_store_owned_by(&l.root, uid);
}

fn runc_rootless(driver: &str) {
    let test = format!("runc --rootless on {driver} × fuse");
    let Some((l, uid, _gid)) = rootless_store(&test) else {
        return;
    };
    if !common::runc_and_busybox(&test) {
        return;
    }
    l.ok(["sample"]);
    l.ok(["create", "--driver", driver, "lamina-sample", "c"]);
    let bundle = l.path("bundle");
    l.ok([
        "bundle",
        "--frontend",
        "fuse",
        "c",
        bundle.to_str().unwrap(),
    ]);
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["linux"]["uidMappings"][0]["hostID"], uid);
    config["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "id -u; ls -ln /app/run.sh; echo written > /root/new; rm /app/hello.txt; mv /app /srv-app"
    ]);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let name = format!("lamina-rootless-{}-{driver}", std::process::id());
    let state = l.path("runc-state");
    let out = l
        .command("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "-b"])
        .arg(&bundle)
        .arg(&name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = l
        .command("runc")
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &name])
        .output();
    let removed = l.run(["bundle", "--remove", bundle.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: runc failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{test}: root inside: {stdout}");
    let listing = lines.next().unwrap_or_default();
    assert!(
        listing.contains(" 0        0 ") || listing.split_whitespace().nth(2) == Some("0"),
        "{test}: the image's root owns its files inside the container: {listing}"
    );
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(
        l.ok(["diff", "c"]),
        "D /app\nC /root\nA /root/new\nA /srv-app\nA /srv-app/run.sh\n",
        "{test}: lamina diff after the container"
    );
}

macro_rules! rootless_rows {
    ($($driver:literal => $owners:ident, $roundtrip:ident, $runc:ident;)*) => {$(
        #[test]
        fn $owners() {
            presents_the_images_owners($driver);
        }
        #[test]
        fn $roundtrip() {
            container_round_trip($driver);
        }
        #[test]
        fn $runc() {
            runc_rootless($driver);
        }
    )*};
}

#[test]
fn overlay2_xattr_whiteouts_round_trip() {
    xattr_whiteouts_round_trip("overlay2");
}

#[test]
fn squashfs_xattr_whiteouts_round_trip() {
    xattr_whiteouts_round_trip("squashfs");
}

rootless_rows! {
    "overlay2" => overlay2_presents_image_owners, overlay2_container_round_trip, overlay2_runc_rootless;
    "vfs" => vfs_presents_image_owners, vfs_container_round_trip, vfs_runc_rootless;
    "aufs" => aufs_presents_image_owners, aufs_container_round_trip, aufs_runc_rootless;
    "squashfs" => squashfs_presents_image_owners, squashfs_container_round_trip, squashfs_runc_rootless;
}

/// Without root: the kernel frontend, a missing fusermount3 and a second
/// read-write mount of a container each get an error saying why and what works.
#[test]
fn rootless_errors_are_clear() {
    let Some((l, _, _)) = rootless_store("rootless kernel frontend error") else {
        return;
    };
    import_two_layer_image(&l);
    let mnt = l.mountpoint("m");
    let err = l.fails([
        "mount",
        "--frontend",
        "kernel",
        "img:1",
        mnt.to_str().unwrap(),
    ]);
    assert!(err.contains("--frontend fuse"), "{err}");
    let mnt = l.mountpoint("m2");
    let no_helper = l
        .command(env!("CARGO_BIN_EXE_lamina"))
        .arg("--root")
        .arg(&l.root)
        .args(["mount", "--frontend", "fuse", "img:1"])
        .arg(&mnt)
        .env("PATH", l.path("empty-path"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_helper.stderr);
    assert!(
        !no_helper.status.success() && stderr.contains("fusermount3 is not on PATH"),
        "{stderr}"
    );
    l.ok(["create", "img:1", "c"]);
    let first = l.mountpoint("first");
    let guard = l.mount(&["--frontend", "fuse", "c"], &first);
    let second = l.mountpoint("second");
    let err = l.fails(["mount", "--frontend", "fuse", "c", second.to_str().unwrap()]);
    assert!(err.contains("already mounted at"), "{err}");
    let ro = l.mount(&["--frontend", "fuse", "--read-only", "c"], &second);
    assert!(
        second.join("etc/c").is_file(),
        "a read-only view gets its own mount"
    );
    drop(ro);
    drop(guard);
}
