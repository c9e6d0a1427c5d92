//! `lamina bundle` makes an OCI runtime bundle that runc runs, on the kernel
//! and the FUSE frontend.

mod common;

use std::process::{Command, Stdio};

use common::{require_privileged, Lamina};

fn runc_runs_the_sample(driver: &str, frontend: &str) {
    let test = format!("runc on {driver} × {frontend}");
    if !require_privileged(&test) {
        return;
    }
    if !common::runc_and_busybox(&test) {
        return;
    }
    let l = Lamina::new();
    l.ok(["sample"]);
    l.ok(["create", "--driver", driver, "lamina-sample", "c"]);
    let bundle = l.path("bundle");
    l.ok([
        "bundle",
        "--frontend",
        frontend,
        "c",
        bundle.to_str().unwrap(),
    ]);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["cwd"], "/app",
        "WorkingDir from the image config"
    );
    assert_eq!(config["root"]["path"], "rootfs");
    assert!(config["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("PATH=")));
    // The container writes, deletes a lower file and renames a lower directory,
    // after printing what the image's Cmd prints.
    let cmd = config["process"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        cmd,
        ["/bin/sh", "-c", "cat /etc/motd; ls /app"],
        "Cmd from the image config"
    );
    config["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "cat /etc/motd; ls /app; echo written > /root/new; rm /app/hello.txt; mv /app /srv-app"
    ]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let name = format!(
        "lamina-test-{}",
        std::process::id() ^ bundle.as_os_str().len() as u32 ^ rand_suffix()
    );
    let out = Command::new("runc")
        .args(["run", "-b"])
        .arg(&bundle)
        .arg(&name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["delete", "--force", &name])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let unbundled = l.run(["bundle", "--remove", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{test}: runc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Welcome to the lamina sample image."),
        "{test}: the image's Cmd ran: {stdout}"
    );
    assert!(stdout.contains("run.sh"), "{test}: {stdout}");
    assert!(
        unbundled.status.success(),
        "{}",
        String::from_utf8_lossy(&unbundled.stderr)
    );
    assert!(!bundle.join("config.json").exists() && !bundle.join("rootfs").exists());
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

#[test]
fn runc_on_overlay2_kernel() {
    runc_runs_the_sample("overlay2", "kernel");
}

#[test]
fn runc_on_overlay2_fuse() {
    runc_runs_the_sample("overlay2", "fuse");
}

#[test]
fn runc_on_vfs_kernel() {
    runc_runs_the_sample("vfs", "kernel");
}

#[test]
fn runc_on_squashfs_fuse() {
    runc_runs_the_sample("squashfs", "fuse");
}

#[test]
fn runc_on_aufs_fuse() {
    runc_runs_the_sample("aufs", "fuse");
}

#[test]
fn runc_on_vfs_fuse() {
    runc_runs_the_sample("vfs", "fuse");
}

#[test]
fn runc_on_squashfs_kernel() {
    runc_runs_the_sample("squashfs", "kernel");
}
