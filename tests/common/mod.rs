//! Shared harness of the CLI integration tests: a throw-away store, a runner for
//! the `lamina` binary, mount guards and the privileged-test gate.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use test_support::privilege::require_privileged;

/// A `lamina` CLI bound to its own temporary store root.
pub struct Lamina {
    /// Keeps the temporary directory (store, mountpoints, files) alive.
    pub dir: tempfile::TempDir,
    /// The store root.
    pub root: PathBuf,
    envs: Vec<(String, String)>,
    /// Run every command as this unprivileged uid and gid (through `setpriv`).
    user: Option<(u32, u32)>,
}

impl Lamina {
    /// A new, empty store.
    pub fn new() -> Lamina {
        let dir = tempfile::Builder::new()
            .prefix("lamina-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("store");
        Lamina {
            dir,
            root,
            envs: Vec::new(),
            user: None,
        }
    }

    /// Runs every later command as unprivileged `uid`:`gid` (no supplementary
    /// groups), which then owns the temporary directory.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Lamina {
        std::os::unix::fs::chown(self.dir.path(), Some(uid), Some(gid)).expect("chown test dir");
        self.user = Some((uid, gid));
        self
    }

    /// A command running `program` as this harness's user (or as is).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.user {
            None => Command::new(program),
            Some((uid, gid)) => {
                let mut cmd = Command::new("/usr/bin/setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program)
                    .env("HOME", self.dir.path())
                    .env_remove("XDG_RUNTIME_DIR");
                cmd
            }
        }
    }

    /// Sets an environment variable for every later command.
    pub fn env(mut self, key: &str, value: &str) -> Lamina {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// A path inside the test's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh, empty directory to mount on.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).expect("create mountpoint");
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown mountpoint");
        }
        p
    }

    /// Runs `lamina --root <root> args...`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_lamina"));
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.env_remove("LAMINA_ROOT");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run lamina")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "lamina {:?} failed ({}):\nstdout: {}\nstderr: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.run(&args);
        assert!(
            !out.status.success(),
            "lamina {:?} succeeded but should have failed:\nstdout: {}",
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Mounts and returns a guard that unmounts on drop (even on panic).
    pub fn mount(&self, args: &[&str], mountpoint: &Path) -> MountGuard<'_> {
        let mut all: Vec<&OsStr> = vec![OsStr::new("mount")];
        all.extend(args.iter().map(OsStr::new));
        all.push(mountpoint.as_os_str());
        self.ok(&all);
        MountGuard {
            lamina: self,
            mountpoint: mountpoint.to_path_buf(),
            active: true,
        }
    }
}

/// Whether runc and a static busybox (the sample image's shell) are here for
/// `test`; without them it is skipped with a printed reason, or fails in CI
/// (which installs both).
pub fn runc_and_busybox(test: &str) -> bool {
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok()
        && test_support::sample::find_busybox().is_some()
    {
        return true;
    }
    assert!(
        std::env::var("LAMINA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: CI installs runc and busybox-static"
    );
    eprintln!("skipped {test}: runc or a static busybox is missing");
    false
}

/// Imports `img:1`: `/etc/a`, `/etc/b` in a gzip layer, then a plain layer that
/// whites out `/etc/b` and adds `/etc/c`.
pub fn import_two_layer_image(l: &Lamina) {
    use test_support::{Compression, DockerArchiveForm, ImageBuilder, LayerBuilder};
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/a", "a", 0o644)
                .file("etc/b", "b", 0o644),
            Compression::Gzip,
        )
        .layer(
            LayerBuilder::new()
                .whiteout("etc/b")
                .file("etc/c", "c", 0o644),
            Compression::None,
        );
    let p = l.path("img.tar");
    img.write_docker_archive(&p, &["img:1"], DockerArchiveForm::Blobs)
        .unwrap();
    l.ok(["import".as_ref(), p.as_os_str()]);
}

impl Drop for Lamina {
    /// Keeps the store (logs included) of a failing test for a post-mortem.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!(
                "keeping the failed test's store at {}",
                dir.keep().display()
            );
        }
    }
}

/// Undoes one `lamina mount` when dropped; detaches lazily if `lamina umount` fails.
pub struct MountGuard<'a> {
    lamina: &'a Lamina,
    /// The mountpoint.
    pub mountpoint: PathBuf,
    active: bool,
}

impl MountGuard<'_> {
    /// Unmounts now, asserting success.
    pub fn unmount(mut self) {
        self.active = false;
        self.lamina
            .ok([OsStr::new("umount"), self.mountpoint.as_os_str()]);
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let out = self
            .lamina
            .run([OsStr::new("umount"), self.mountpoint.as_os_str()]);
        if !out.status.success() {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
