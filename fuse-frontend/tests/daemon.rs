//! The mount daemon's life: a background mount returns once it answers,
//! `SIGTERM` unmounts it, a killed daemon leaves a dead mount that `unmount`
//! clears, and failures inside the daemon come back to the caller.
//!
//! Each test is its own process under nextest; the daemon is forked from it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use drivers::{Frontend, FrontendKind};
use fuse_frontend::{supported, unmount, FuseFrontend, FuseOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A daemon-served mount: on drop the mount is removed (aborting the
/// connection if needed) and the daemon killed.
struct DaemonGuard {
    target: PathBuf,
    pid: u32,
    conn: Option<u32>,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_mounted(&self.target) && unmount(&self.target).is_err() {
            abort_and_detach(self.conn, &self.target);
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(dirs: &StackDirs, log: &Path) -> DaemonGuard {
    let frontend = FuseFrontend::new(FuseOptions {
        log: Some(log.to_path_buf()),
        ..FuseOptions::default()
    });
    assert_eq!(frontend.kind(), FrontendKind::Fuse);
    let pid = frontend
        .mount(dirs.spec(OVERLAY, true), &dirs.merged)
        .expect("daemon mount")
        .expect("a daemon pid");
    DaemonGuard {
        target: dirs.merged.clone(),
        pid,
        conn: fuse_connection(&dirs.merged),
    }
}

fn stack(base: &Path) -> StackDirs {
    StackDirs::build(base, &[vec![Item::File("hello", b"world", 0o644)]], OVERLAY)
}

#[test]
fn this_host_supports_fuse() {
    if !gate("this_host_supports_fuse") {
        return;
    }
    assert_eq!(supported(), Ok(()));
}

#[test]
fn a_background_mount_answers_at_once_and_sigterm_unmounts_it() {
    if !gate("a_background_mount_answers_at_once_and_sigterm_unmounts_it") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let log = t.path().join("daemon.log");
    let guard = start(&dirs, &log);
    assert_ne!(guard.pid, std::process::id());
    // The mount answers as soon as mount() returns.
    assert!(is_mounted(&dirs.merged));
    assert_eq!(fs::read(dirs.merged.join("hello")).unwrap(), b"world");
    fs::write(dirs.merged.join("new"), b"n").unwrap();
    assert_eq!(fs::read(dirs.upper.join("new")).unwrap(), b"n");

    kill(Pid::from_raw(guard.pid as i32), Signal::SIGTERM).unwrap();
    wait_for("the mount to go", || !is_mounted(&dirs.merged));
    wait_for("the daemon to exit", || exited(guard.pid));
    let log = fs::read_to_string(&log).unwrap();
    assert!(log.contains("unmounted, exiting"), "daemon log: {log}");
}

#[test]
fn a_killed_daemon_leaves_a_dead_mount_that_unmount_clears() {
    if !gate("a_killed_daemon_leaves_a_dead_mount_that_unmount_clears") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let guard = start(&dirs, &t.path().join("daemon.log"));
    assert_eq!(fs::read(dirs.merged.join("hello")).unwrap(), b"world");
    kill(Pid::from_raw(guard.pid as i32), Signal::SIGKILL).unwrap();
    wait_for("the daemon to die", || exited(guard.pid));
    // ENOTCONN, or for a request the kernel had queued before it noticed the
    // daemon's end (its descriptors close after it turns zombie) ECONNABORTED
    // (on /dev/fuse) or ECANCELED (on an io_uring queue).
    let err = errno_of(&fs::metadata(dirs.merged.join("hello")));
    assert!(
        [libc::ENOTCONN, libc::ECONNABORTED, libc::ECANCELED].contains(&err),
        "errno {err}"
    );
    assert!(is_mounted(&dirs.merged));
    FuseFrontend::default()
        .unmount(&dirs.merged)
        .expect("unmount of a dead mount");
    assert!(!is_mounted(&dirs.merged));
    assert!(fs::read_dir(&dirs.merged).unwrap().next().is_none());
}

#[test]
fn failures_inside_the_daemon_come_back_to_the_caller() {
    if !gate("failures_inside_the_daemon_come_back_to_the_caller") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let frontend = FuseFrontend::new(FuseOptions {
        log: Some(t.path().join("daemon.log")),
        ..FuseOptions::default()
    });
    let missing = t.path().join("no-such-mountpoint");
    let err = frontend
        .mount(dirs.spec(OVERLAY, true), &missing)
        .expect_err("mounting on a missing directory fails");
    let message = err.to_string();
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(
        message.contains("daemon.log"),
        "the error points at the log: {message}"
    );

    let err = frontend
        .mount(
            drivers::MountSpec::Bind {
                source: dirs.upper.clone(),
                read_only: true,
            },
            &dirs.merged,
        )
        .expect_err("a bind spec is not for FUSE");
    assert!(err.to_string().contains("kernel frontend"), "{err}");
    assert!(!is_mounted(&dirs.merged));
}

#[test]
fn a_foreground_mount_serves_until_unmounted() {
    if !gate("a_foreground_mount_serves_until_unmounted") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let spec = dirs.spec(OVERLAY, true);
    let target = dirs.merged.clone();
    let server = std::thread::spawn(move || {
        FuseFrontend::new(FuseOptions {
            foreground: true,
            ..FuseOptions::default()
        })
        .mount(spec, &target)
    });
    wait_for("the mount to answer", || {
        is_mounted(&dirs.merged) && fs::read(dirs.merged.join("hello")).is_ok()
    });
    let conn = fuse_connection(&dirs.merged);
    if let Err(e) = unmount(&dirs.merged) {
        abort_and_detach(conn, &dirs.merged);
        panic!("unmount: {e}");
    }
    let served = server.join().unwrap();
    assert_eq!(served.expect("foreground serving ends cleanly"), None);
}

#[test]
fn a_daemon_killed_after_chmod_leaves_an_upper_the_kernel_reads_right() {
    if !gate("a_daemon_killed_after_chmod_leaves_an_upper_the_kernel_reads_right") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = stack(t.path());
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    fs::write(dirs.lowers[0].join("big"), &data).unwrap();
    let guard = start(&dirs, &t.path().join("daemon.log"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dirs.merged.join("big"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&dirs.merged.join("hello"), 1_000_000_000).unwrap();
    kill(Pid::from_raw(guard.pid as i32), Signal::SIGKILL).unwrap();
    wait_for("the daemon to die", || exited(guard.pid));
    FuseFrontend::default()
        .unmount(&dirs.merged)
        .expect("unmount of a dead mount");

    // Mounted as Lamina's diff and commit mount it (metacopy=off), the kernel
    // sees the changed metadata over the whole, unchanged data.
    let _kernel = KernelOverlay::mount(&dirs);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::read(dirs.merged.join("big")).unwrap(), data);
    assert_eq!(mode_owner(&dirs.merged.join("big")).0, 0o640);
    assert_eq!(fs::read(dirs.merged.join("hello")).unwrap(), b"world");
    assert_eq!(
        fs::metadata(dirs.merged.join("hello")).unwrap().mtime(),
        1_000_000_000
    );
}
