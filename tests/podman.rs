//! containers/storage drives Lamina as its `mount_program`: Podman runs a
//! container whose root filesystem Lamina's FUSE frontend serves.

mod common;

use std::process::Command;

use common::{require_privileged, Lamina};

#[test]
fn podman_runs_a_container_on_lamina_as_mount_program() {
    if !require_privileged("podman_runs_a_container_on_lamina_as_mount_program") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var("LAMINA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "CI installs podman (scripts/setup.sh)"
        );
        eprintln!("skipped: podman is not installed");
        return;
    }
    if test_support::sample::find_busybox().is_none() {
        eprintln!("skipped: no static busybox for the sample image");
        return;
    }
    let l = Lamina::new();
    l.ok(["sample"]);
    let archive = l.path("sample.tar");
    l.ok([
        "save".as_ref(),
        "lamina-sample".as_ref(),
        "-o".as_ref(),
        archive.as_os_str(),
    ]);
    let program = l.path("lamina-fuse-overlay");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lamina"), &program).unwrap();
    let graph = l.path("podman-graph");
    let run = l.path("podman-run");
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(&graph)
            .arg("--runroot")
            .arg(&run)
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.mount_program={}", program.display()))
            // crun refuses this machine's hybrid cgroup layout; runc works.
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .output()
            .expect("run podman");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = podman(&["load", "-i", archive.to_str().unwrap()]);
    assert!(ok, "podman load: {err}");
    let (ok, out, err) = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
        "lamina-sample:latest",
        "/bin/sh",
        "-c",
        "mount | grep ' / '; echo written > /tmp/proof; cat /tmp/proof /etc/motd; ls /app",
    ]);
    let _ = podman(&["system", "reset", "--force"]);
    assert!(ok, "podman run failed:\nstdout: {out}\nstderr: {err}");
    assert!(
        out.contains("fuse"),
        "the container's root is a FUSE mount: {out}"
    );
    assert!(out.contains("written"), "{out}");
    assert!(out.contains("Welcome to the lamina sample image."), "{out}");
    assert!(out.contains("run.sh"), "{out}");
}
