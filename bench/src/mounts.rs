//! Guards that undo what a sample set up — mounts, containers, upper
//! directories, mountpoint directories, the whole work directory — when they
//! are dropped, also on error and on panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use tracing::warn;

use crate::error::{BenchError, IoContext};
use crate::host;
use crate::lamina_cli::LaminaCli;

/// How long an unmounted FUSE daemon we started may take to exit before it is killed.
const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(10);

/// An empty directory made to mount on; removed (never recursively) when dropped.
#[derive(Debug)]
pub(crate) struct Mountpoint {
    path: PathBuf,
}

impl Mountpoint {
    /// Creates directory `path`.
    pub fn create(path: PathBuf) -> Result<Mountpoint, BenchError> {
        fs::create_dir(&path).ctx("create mountpoint", &path)?;
        Ok(Mountpoint { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mountpoint {
    fn drop(&mut self) {
        // remove_dir, not remove_dir_all: if an unmount failed, the mounted tree stays untouched.
        if let Err(e) = fs::remove_dir(&self.path) {
            warn!(mountpoint = %self.path.display(), error = %e, "cannot remove mountpoint");
        }
    }
}

/// How a mount is undone.
pub(crate) enum Unmount {
    /// `lamina umount` (falling back to a lazy detach).
    Lamina(LaminaCli),
    /// `umount2` of a kernel mount.
    Kernel,
    /// A FUSE daemon we started in the foreground: unmount, then wait for it to exit.
    FuseChild(Child),
    /// A view stacked on per-layer mounts made for it: the view is undone
    /// first, then each layer mount, then the layer mountpoints.
    Layered {
        /// How the view itself is undone.
        view: Box<Unmount>,
        /// The layer mounts, each at its directory.
        layers: Vec<(PathBuf, Unmount)>,
        /// The directory holding the layer mountpoints, removed last.
        dir: PathBuf,
    },
}

/// Writable state of a container that is removed after its mount is undone.
pub(crate) enum ContainerLease {
    /// A Lamina container, removed with `lamina rm`.
    Lamina {
        /// The binary and store.
        cli: LaminaCli,
        /// The container's name.
        name: String,
    },
    /// Upper and work directories of a peer mount, removed with their parent.
    Upper {
        /// The parent of both.
        _dir: tempfile::TempDir,
    },
}

impl ContainerLease {
    /// Creates Lamina container `name` of `image` in `driver`.
    pub fn lamina(
        cli: &LaminaCli,
        driver: &str,
        image: &str,
        name: String,
    ) -> Result<ContainerLease, BenchError> {
        cli.create(driver, image, &name)?;
        Ok(ContainerLease::Lamina {
            cli: cli.clone(),
            name,
        })
    }
}

impl Drop for ContainerLease {
    fn drop(&mut self) {
        if let ContainerLease::Lamina { cli, name } = self {
            if let Err(e) = cli.rm(name) {
                warn!(container = %name, error = %e, "cannot remove benchmark container");
            }
        }
    }
}

/// A mounted view that a sample works in; unmounted when dropped (or by
/// [`Mounted::unmount`], which reports errors).
pub(crate) struct Mounted {
    unmount: Option<Unmount>,
    daemon: Option<u32>,
    // Dropped in this order after the unmount: the directory, then the container.
    mountpoint: Mountpoint,
    _container: Option<ContainerLease>,
}

impl Mounted {
    /// A mount on `mountpoint` undone by `unmount`, served by `daemon` when a
    /// userspace process serves it, holding `container` until it is undone.
    pub fn new(
        mountpoint: Mountpoint,
        unmount: Unmount,
        daemon: Option<u32>,
        container: Option<ContainerLease>,
    ) -> Mounted {
        Mounted {
            unmount: Some(unmount),
            daemon,
            mountpoint,
            _container: container,
        }
    }

    /// The root of the mounted view.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// The peak resident set size of the serving daemon so far, in KiB. For
    /// Lamina's mounts the daemon is the pid `<root>/mounts.json` records.
    pub fn daemon_peak_rss_kib(&self) -> Option<u64> {
        let daemon = self.daemon.or_else(|| match &self.unmount {
            Some(Unmount::Lamina(cli)) => cli.daemon_pid(self.path()),
            _ => None,
        });
        daemon.and_then(host::peak_rss_kib)
    }

    /// Unmounts now and reports whether that went cleanly.
    pub fn unmount(mut self) -> Result<(), BenchError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), BenchError> {
        let Some(how) = self.unmount.take() else {
            return Ok(());
        };
        undo_at(self.mountpoint.path(), how)
    }
}

/// Undoes the mount on `target` as `how` says.
pub(crate) fn undo_at(target: &Path, how: Unmount) -> Result<(), BenchError> {
    match how {
        Unmount::Lamina(cli) => cli.umount(target).inspect_err(|_| detach(target)),
        Unmount::Kernel => umount2(target, MntFlags::empty()).map_err(|e| {
            detach(target);
            BenchError::Mount(format!("unmounting {}: {e}", target.display()))
        }),
        Unmount::FuseChild(child) => unmount_fuse_child(target, child),
        Unmount::Layered { view, layers, dir } => {
            let view = undo_at(target, *view);
            let layers = undo_layers(layers, &dir);
            view.and(layers)
        }
    }
}

/// Undoes layer mounts made for a stacked view (in order), then removes their
/// mountpoints and `dir` — never recursively, so a mount that stays keeps its tree.
pub(crate) fn undo_layers(layers: Vec<(PathBuf, Unmount)>, dir: &Path) -> Result<(), BenchError> {
    let mut result = Ok(());
    for (path, how) in layers {
        let undone = undo_at(&path, how);
        if undone.is_ok() {
            if let Err(e) = fs::remove_dir(&path) {
                warn!(mountpoint = %path.display(), error = %e, "cannot remove layer mountpoint");
            }
        }
        result = result.and(undone);
    }
    if let Err(e) = fs::remove_dir(dir) {
        warn!(dir = %dir.display(), error = %e, "cannot remove layer mountpoints' directory");
    }
    result
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.undo() {
            warn!(mountpoint = %self.mountpoint.path().display(), error = %e, "unmount failed");
        }
    }
}

/// Lazily detaches whatever is mounted on `target` (the last resort).
fn detach(target: &Path) {
    if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
        warn!(mountpoint = %target.display(), error = %e, "cannot detach mount");
    }
}

/// Unmounts a FUSE mount whose daemon is our child, waits for the daemon to
/// exit and kills it if it does not.
fn unmount_fuse_child(target: &Path, mut child: Child) -> Result<(), BenchError> {
    let mut result = Ok(());
    if host::is_mountpoint(target).unwrap_or(false) {
        if let Err(first) = umount2(target, MntFlags::empty()) {
            let fusermount = Command::new("fusermount3")
                .arg("-u")
                .arg(target)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !fusermount.is_ok_and(|s| s.success()) {
                detach(target);
                result = Err(BenchError::Mount(format!(
                    "unmounting {}: {first}",
                    target.display()
                )));
            }
        }
    }
    let deadline = Instant::now() + DAEMON_EXIT_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return result,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                warn!(
                    pid = child.id(),
                    "FUSE daemon did not exit after unmount; killing it"
                );
                let _ = child.kill();
                let _ = child.wait();
                return result;
            }
        }
    }
}

/// The throw-away directory of one run: the store and the scratch space. On
/// drop, anything still mounted below it is detached first, and the directory
/// is only removed when nothing is mounted there any more.
pub(crate) struct WorkDir {
    dir: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// Creates a fresh directory inside `parent` (the system temp dir when `None`).
    pub fn create(parent: Option<&Path>) -> Result<WorkDir, BenchError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("lamina-bench-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p).ctx("create work directory in", p)?,
            None => builder
                .tempdir()
                .ctx("create work directory in", std::env::temp_dir())?,
        };
        for sub in ["store", "scratch"] {
            let p = dir.path().join(sub);
            fs::create_dir(&p).ctx("create", &p)?;
        }
        Ok(WorkDir { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    /// The throw-away Lamina store root.
    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// Scratch space for archives, mountpoints and peers' upper directories.
    pub fn scratch(&self) -> PathBuf {
        self.path().join("scratch")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let path = dir.path().to_path_buf();
        match host::mounts_under(&path) {
            Ok(left) => {
                for m in &left {
                    warn!(mountpoint = %m.display(), "detaching a mount left behind");
                    detach(m);
                }
                match host::mounts_under(&path) {
                    Ok(still) if still.is_empty() => {
                        if let Err(e) = dir.close() {
                            warn!(dir = %path.display(), error = %e, "cannot remove work directory");
                        }
                    }
                    _ => {
                        warn!(dir = %path.display(), "mounts remain; keeping the work directory");
                        let _ = dir.keep();
                    }
                }
            }
            Err(e) => {
                warn!(dir = %path.display(), error = %e, "cannot read the mount table; keeping the work directory");
                let _ = dir.keep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_dir_is_removed_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let work = WorkDir::create(Some(parent.path())).unwrap();
        let store = work.store();
        assert!(store.is_dir() && work.scratch().is_dir());
        fs::write(work.scratch().join("x"), b"1").unwrap();
        drop(work);
        assert!(!store.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_mountpoint_with_content_is_not_removed() {
        let parent = tempfile::tempdir().unwrap();
        let mp = Mountpoint::create(parent.path().join("m")).unwrap();
        fs::write(mp.path().join("keep"), b"1").unwrap();
        drop(mp);
        assert!(parent.path().join("m/keep").exists());
        let empty = Mountpoint::create(parent.path().join("e")).unwrap();
        drop(empty);
        assert!(!parent.path().join("e").exists());
    }
}
