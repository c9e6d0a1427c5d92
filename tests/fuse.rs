//! The FUSE frontend through the CLI: the background daemon's lifecycle
//! (returns once the mount answers, SIGTERM and `umount` stop it, a killed
//! daemon's dead mount is cleared), `--foreground`, and the fuse-overlayfs
//! compatible entry.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_privileged, Lamina};
use drivers::mount_table::MountInfo;

fn recorded_pid(l: &Lamina) -> u32 {
    let ps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    ps[0]["pid"]
        .as_u64()
        .expect("the FUSE daemon's pid is recorded") as u32
}

fn alive(pid: u32) -> bool {
    // A zombie (a daemon whose parent has not reaped it) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) != Some("Z"))
        .unwrap_or(false)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_mounted(p: &std::path::Path) -> bool {
    MountInfo::read().unwrap().is_mountpoint(
        &std::fs::canonicalize(p.parent().unwrap())
            .unwrap()
            .join(p.file_name().unwrap()),
    )
}

#[test]
fn a_background_daemon_serves_until_umount() {
    if !require_privileged("a_background_daemon_serves_until_umount") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    l.ok(["create", "--driver", "overlay2", "img:1", "c"]);
    let m = l.mountpoint("m");
    let g = l.mount(&["--frontend", "fuse", "c"], &m);
    let fstype = MountInfo::read()
        .unwrap()
        .fstype(&std::fs::canonicalize(&m).unwrap())
        .map(str::to_string);
    assert!(
        fstype.as_deref().is_some_and(|t| t.starts_with("fuse")),
        "{fstype:?}"
    );
    let pid = recorded_pid(&l);
    assert!(alive(pid));
    std::fs::write(m.join("etc/new"), "via fuse").unwrap();
    std::fs::remove_file(m.join("etc/a")).unwrap();
    let logs: Vec<_> = std::fs::read_dir(l.root.join("logs")).unwrap().collect();
    assert!(!logs.is_empty(), "the daemon logs under the store");
    g.unmount();
    wait_for("the daemon to exit", || !alive(pid));
    assert_eq!(l.ok(["diff", "c"]), "C /etc\nD /etc/a\nA /etc/new\n");
    // Whatever frontend wrote the upper, the kernel reads it the same way.
    let g = l.mount(&["--frontend", "kernel", "c"], &m);
    assert_eq!(
        std::fs::read_to_string(m.join("etc/new")).unwrap(),
        "via fuse"
    );
    assert!(!m.join("etc/a").exists());
    g.unmount();
}

#[test]
fn sigterm_unmounts_and_a_killed_daemon_is_cleared() {
    if !require_privileged("sigterm_unmounts_and_a_killed_daemon_is_cleared") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let m = l.mountpoint("m");
    let g = l.mount(&["--frontend", "fuse", "img:1"], &m);
    let pid = recorded_pid(&l);
    let _still_guarded = g;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("SIGTERM to unmount", || !is_mounted(&m));
    wait_for("the daemon to exit", || !alive(pid));
    l.ok(["ps"]);
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    assert_eq!(
        table.as_array().unwrap().len(),
        0,
        "the next command forgot the unmounted record"
    );

    let g = l.mount(&["--frontend", "fuse", "img:1"], &m);
    let pid = recorded_pid(&l);
    let _still_guarded = g;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the daemon to die", || !alive(pid));
    let err = std::fs::metadata(m.join("etc")).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) | Some(libc::ECANCELED)
        ),
        "a dead FUSE mount answers ENOTCONN: {err}"
    );
    l.ok(["umount".as_ref(), m.as_os_str()]);
    assert!(!is_mounted(&m), "lamina umount cleared the dead mount");
}

#[test]
fn foreground_serves_in_the_command_itself() {
    if !require_privileged("foreground_serves_in_the_command_itself") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let m = l.mountpoint("m");
    let mut fg = Foreground::start(&l, "img:1", &m);
    wait_for("the foreground mount", || {
        is_mounted(&m) && m.join("etc/c").exists()
    });
    assert_eq!(std::fs::read_to_string(m.join("etc/c")).unwrap(), "c");
    assert!(fg.child.try_wait().unwrap().is_none(), "still serving");
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    assert!(fg.wait().success());
    let err = l.fails([
        "mount",
        "--foreground",
        "--frontend",
        "kernel",
        "img:1",
        m.to_str().unwrap(),
    ]);
    assert!(
        err.contains("--foreground applies to the FUSE frontend"),
        "{err}"
    );
}

/// A foreground `lamina mount` child, stopped (and its mount detached) when
/// dropped, also on panic.
struct Foreground {
    child: std::process::Child,
    mountpoint: std::path::PathBuf,
}

impl Foreground {
    fn start(l: &Lamina, target: &str, mountpoint: &std::path::Path) -> Foreground {
        let child = Command::new(env!("CARGO_BIN_EXE_lamina"))
            .arg("--root")
            .arg(&l.root)
            .args(["mount", "--frontend", "fuse", "--foreground", target])
            .arg(mountpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Foreground {
            child,
            mountpoint: mountpoint.to_path_buf(),
        }
    }

    /// Waits (up to 20 s) for the command to return; its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the foreground command did not return"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn foreground_mounts_are_recorded_and_not_shared() {
    if !require_privileged("foreground_mounts_are_recorded_and_not_shared") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    l.ok(["create", "img:1", "c1"]);
    let m = l.mountpoint("m");
    let other = l.mountpoint("other");
    let mut fg = Foreground::start(&l, "c1", &m);
    wait_for("the foreground mount", || {
        is_mounted(&m) && m.join("etc/c").exists()
    });
    std::fs::write(m.join("etc/new"), "n").unwrap();
    let ps = l.ok(["ps"]);
    assert!(ps.contains(m.to_str().unwrap()), "ps lists it: {ps}");
    assert_eq!(
        recorded_pid(&l),
        fg.child.id(),
        "the serving process is recorded"
    );
    // Nothing may share or shadow a writable mount served in the foreground.
    for frontend in ["fuse", "kernel"] {
        let err = l.fails([
            "mount",
            "--frontend",
            frontend,
            "c1",
            other.to_str().unwrap(),
        ]);
        assert!(
            err.contains(m.to_str().unwrap())
                && (frontend == "kernel" || err.contains("served in the foreground")),
            "{frontend}: {err}"
        );
        assert!(!is_mounted(&other));
    }
    // A second foreground mount of the container is refused too, and returns.
    let mut second = Foreground::start(&l, "c1", &other);
    assert!(!second.wait().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("served in the foreground"), "{stderr}");
    // `lamina umount` stops it; the command returns and forgets the record.
    l.ok(["umount".as_ref(), m.as_os_str()]);
    assert!(fg.wait().success());
    assert!(!is_mounted(&m));
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.root.join("mounts.json")).unwrap()).unwrap();
    assert_eq!(
        table,
        serde_json::json!([]),
        "the record went with the mount"
    );
    assert!(l.ok(["diff", "c1"]).contains("A /etc/new"));
}

#[test]
fn the_fuse_overlay_entry_takes_fuse_overlayfs_arguments() {
    if !require_privileged("the_fuse_overlay_entry_takes_fuse_overlayfs_arguments") {
        return;
    }
    let l = Lamina::new();
    let (l1, l2, u, w, m) = (
        l.path("l1"),
        l.path("l2"),
        l.path("u"),
        l.path("w"),
        l.mountpoint("m"),
    );
    for d in [&l1, &l2, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(l2.join("bottom"), "bottom").unwrap();
    std::fs::write(l2.join("shadowed"), "bottom").unwrap();
    std::fs::write(l1.join("shadowed"), "top").unwrap();
    // Invoked under the name containers/storage's mount_program uses.
    let exe = l.path("lamina-fuse-overlay");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lamina"), &exe).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={},fsync=0",
        l1.display(),
        l2.display(),
        u.display(),
        w.display()
    );
    let out = Command::new(&exe)
        .args(["-o", &opts])
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(m.join("shadowed")).unwrap(),
        "top",
        "the first lowerdir is the top"
    );
    std::fs::remove_file(m.join("bottom")).unwrap();
    std::fs::write(m.join("new"), "new").unwrap();
    let unmounted = Command::new("umount").arg(&m).status().unwrap();
    assert!(unmounted.success());
    let wh = std::fs::symlink_metadata(u.join("bottom")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "the deletion is an overlay whiteout in the upper"
    );
    assert_eq!(std::fs::read_to_string(u.join("new")).unwrap(), "new");
    let out = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(["fuse-overlay", "-o", "upperdir=/x"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowerdir"));
}

#[test]
fn mounts_share_only_when_they_present_alike() {
    use std::os::unix::fs::MetadataExt;
    if !require_privileged("mounts_share_only_when_they_present_alike") {
        return;
    }
    let l = Lamina::new();
    common::import_two_layer_image(&l);
    let (plain, mapped) = (l.mountpoint("plain"), l.mountpoint("mapped"));
    let _plain = l.mount(&["--frontend", "fuse", "img:1"], &plain);
    // Another presentation of the same image is a mount of its own, not a bind.
    let _mapped = l.mount(
        &["--frontend", "fuse", "--uidmap", "0:1000:1", "img:1"],
        &mapped,
    );
    assert_eq!(std::fs::metadata(plain.join("etc/c")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(mapped.join("etc/c")).unwrap().uid(), 1000);

    // A container's upper gets one server: a second read-write mount with
    // other options is refused; with the same options it shares the first.
    l.ok(["create", "img:1", "c1"]);
    let (rw, again) = (l.mountpoint("rw"), l.mountpoint("again"));
    let _rw = l.mount(&["--frontend", "fuse", "c1"], &rw);
    let err = l.fails([
        "mount",
        "--frontend",
        "fuse",
        "--volatile",
        "c1",
        again.to_str().unwrap(),
    ]);
    assert!(
        err.contains("with other options") && err.contains(rw.to_str().unwrap()),
        "{err}"
    );
    assert!(!is_mounted(&again));
    let _again = l.mount(&["--frontend", "fuse", "c1"], &again);
    std::fs::write(again.join("etc/shared"), "s").unwrap();
    assert_eq!(std::fs::read(rw.join("etc/shared")).unwrap(), b"s");
}
