//! Reference-counted get/put of mounted roots.
//!
//! Every mount Lamina makes is recorded in `<store root>/mounts.json` under a
//! file lock. A second mount of a layer that is already mounted reuses the first
//! one (a bind mount of it) when the frontend presents both alike
//! ([`Frontend::presentation`]), so two views of a container share one overlay
//! upper or one FUSE daemon; one upper never gets a second read-write server.
//! The layer stays mounted until its last mountpoint is put. Records whose mount vanished (a crash, a manual `umount`) or died (a
//! killed FUSE daemon: `ENOTCONN`) are found and cleaned by the next command.
//!
//! A mount may stack layer mounts (squashfs images the kernel frontend mounted
//! through loop devices, shared by every overlay that stacks the layer). Its
//! record lists them; when a record goes (put, or pruned), each layer mount no
//! remaining record lists is unmounted, and its auto-clearing loop device goes
//! with it.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::{Driver, LayerId};
use crate::error::{DriverError, IoContext, Result};
use crate::kernel;
use crate::mount::{Frontend, FrontendKind, MountSpec};

/// One mountpoint Lamina made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Where it is mounted (canonical path).
    pub mountpoint: PathBuf,
    /// The driver holding the layer.
    pub driver: String,
    /// The driver's layer id.
    pub layer: String,
    /// What the user named (image or container), for listings.
    pub label: String,
    /// The frontend serving it.
    pub frontend: FrontendKind,
    /// Mounted read-only.
    pub read_only: bool,
    /// The mountpoint this one is a bind of, when it reused an existing mount.
    pub shares: Option<PathBuf>,
    /// The serving daemon's pid (FUSE).
    pub pid: Option<u32>,
    /// Layer mounts (squashfs images mounted by the kernel frontend) this mount
    /// stacks; each is unmounted when the last record using it is put.
    #[serde(default)]
    pub layer_mounts: Vec<PathBuf>,
    /// Served in the foreground by the process `pid` (`lamina mount
    /// --foreground`), which forgets the record when serving ends.
    #[serde(default)]
    pub foreground: bool,
    /// The frontend's [`Frontend::presentation`] of the mount.
    #[serde(default)]
    pub presentation: String,
}

impl MountRecord {
    /// The record of a new mount of `req` at `mountpoint` (no daemon yet,
    /// sharing nothing, stacking no layer mounts).
    fn new(
        mountpoint: &Path,
        driver: &dyn Driver,
        frontend: &dyn Frontend,
        req: &MountRequest<'_>,
    ) -> MountRecord {
        MountRecord {
            mountpoint: mountpoint.to_path_buf(),
            driver: driver.name().to_string(),
            layer: req.layer.to_string(),
            label: req.label.to_string(),
            frontend: frontend.kind(),
            read_only: req.read_only,
            shares: None,
            pid: None,
            layer_mounts: Vec::new(),
            foreground: false,
            presentation: frontend.presentation(),
        }
    }
}

/// The table of Lamina's mounts under one store root.
#[derive(Debug, Clone)]
pub struct MountTable {
    file: PathBuf,
    lock: PathBuf,
}

/// What a request to mount asks for.
#[derive(Debug, Clone)]
pub struct MountRequest<'a> {
    /// The layer to mount.
    pub layer: &'a LayerId,
    /// What the user named, for listings.
    pub label: &'a str,
    /// Read-only view.
    pub read_only: bool,
    /// Where to mount it.
    pub target: &'a Path,
}

/// The table's lock: a POSIX record lock on `mounts.lock`, released when the file
/// is closed. Unlike `flock`, a record lock belongs to the process, so a FUSE
/// daemon forked while the lock is held does not keep holding it.
struct TableLock {
    _file: File,
}

impl MountTable {
    /// The table of the store at `store_root`.
    pub fn new(store_root: &Path) -> Self {
        MountTable {
            file: store_root.join("mounts.json"),
            lock: store_root.join("mounts.lock"),
        }
    }

    fn lock(&self) -> Result<TableLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .ctx("open", &self.lock)?;
        // SAFETY: an all-zero `flock` is a valid value; the fields are set below.
        let mut range: libc::flock = unsafe { std::mem::zeroed() };
        range.l_type = libc::F_WRLCK as libc::c_short;
        range.l_whence = libc::SEEK_SET as libc::c_short;
        loop {
            // SAFETY: F_SETLKW with a valid `flock` on a descriptor we own.
            if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLKW, &range) } == 0 {
                return Ok(TableLock { _file: f });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err).ctx("lock", &self.lock);
            }
        }
    }

    fn load(&self) -> Result<Vec<MountRecord>> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DriverError::Other(format!("{} is corrupt: {e}", self.file.display()))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).ctx("read", &self.file),
        }
    }

    fn save(&self, records: &[MountRecord]) -> Result<()> {
        let tmp = self.file.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(records).expect("mount records serialize");
        std::fs::write(&tmp, bytes).ctx("write", &tmp)?;
        std::fs::rename(&tmp, &self.file).ctx("rename", &self.file)
    }

    /// All live mounts, after cleaning stale records.
    pub fn list(&self) -> Result<Vec<MountRecord>> {
        let _g = self.lock()?;
        let records = self.prune_locked()?;
        Ok(records)
    }

    /// The live mounts of one layer.
    pub fn mounts_of(&self, driver: &str, layer: &LayerId) -> Result<Vec<MountRecord>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.driver == driver && r.layer == layer)
            .collect())
    }

    /// Removes records whose mount is gone and detaches dead mounts. Returns what stays.
    fn prune_locked(&self) -> Result<Vec<MountRecord>> {
        let records = self.load()?;
        let table = MountInfo::read()?;
        let mut keep = Vec::with_capacity(records.len());
        let mut dropped = Vec::new();
        for r in records {
            if !table.is_mountpoint(&r.mountpoint) && !starting_in_foreground(&r) {
                tracing::info!(mountpoint = %r.mountpoint.display(), "forgetting a mount that is gone");
                dropped.push(r);
                continue;
            }
            if kernel::server_gone(&r.mountpoint) {
                tracing::warn!(mountpoint = %r.mountpoint.display(), "detaching a dead mount");
                let _ = nix::mount::umount2(&r.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                dropped.push(r);
                continue;
            }
            keep.push(r);
        }
        if !dropped.is_empty() {
            self.save(&keep)?;
            release_unused_layer_mounts(&dropped, &keep)?;
        }
        Ok(keep)
    }

    /// Cleans stale records and dead mounts (every command may call this first).
    pub fn prune(&self) -> Result<()> {
        let _g = self.lock()?;
        self.prune_locked().map(|_| ())
    }

    /// Mounts `req.layer` of `driver` at `req.target` through `frontend`, reusing an
    /// existing mount of the same layer when there is one.
    pub fn get(
        &self,
        driver: &dyn Driver,
        frontend: &dyn Frontend,
        req: &MountRequest<'_>,
    ) -> Result<MountRecord> {
        let target = mountpoint_dir(req.target)?;
        let _g = self.lock()?;
        let mut records = self.prune_locked()?;
        let same_layer = admissible(&records, driver, frontend.kind(), req, &target)?;
        // SAFETY: geteuid has no preconditions.
        let unprivileged = unsafe { libc::geteuid() } != 0;
        if unprivileged && !req.read_only {
            if let Some(other) = same_layer.first() {
                return Err(DriverError::Mount {
                    target: target.clone(),
                    reason: format!(
                        "{} is already mounted at {}, and an unprivileged user cannot bind that \
                         mount elsewhere; use it there or unmount it first",
                        req.label,
                        other.mountpoint.display()
                    ),
                });
            }
        }
        let presentation = frontend.presentation();
        if !req.read_only {
            // One upper must not have two servers writing it.
            if let Some(other) = same_layer
                .iter()
                .find(|r| !r.read_only && r.presentation != presentation)
            {
                return Err(DriverError::Mount {
                    target: target.clone(),
                    reason: format!(
                        "{} is mounted read-write at {} with other options ({}); \
                         use that mount or unmount it first",
                        req.label,
                        other.mountpoint.display(),
                        if other.presentation.is_empty() {
                            "the defaults"
                        } else {
                            &other.presentation
                        }
                    ),
                });
            }
        }
        // Without privileges there are no bind mounts: a read-only view gets its own mount.
        let reuse = same_layer
            .iter()
            .filter(|r| !unprivileged && !r.foreground && r.presentation == presentation)
            // A read-only view of a mounted layer is a read-only bind of its mount.
            .find(|r| {
                r.frontend == frontend.kind() && (r.read_only == req.read_only || req.read_only)
            })
            .map(|r| (*r).clone());
        // The record is written before the mount is made, so a crash in between
        // leaves a record of a mount that is not there (pruned by the next
        // command) rather than a mount nobody knows about.
        let (mut record, spec) = match reuse {
            Some(first) => (
                MountRecord {
                    mountpoint: target.clone(),
                    shares: Some(first.mountpoint.clone()),
                    pid: None,
                    foreground: false,
                    ..first
                },
                None,
            ),
            None => (
                MountRecord::new(&target, driver, frontend, req),
                Some(driver.mount_spec(req.layer, frontend.kind(), req.read_only)?),
            ),
        };
        if let Some(MountSpec::Overlay { images, .. }) = &spec {
            record.layer_mounts = images.iter().map(|(_, dir)| dir.clone()).collect();
        }
        records.push(record.clone());
        self.save(&records)?;
        let mounted = match (&record.shares, spec) {
            (Some(first), _) => kernel::bind_mount(first, &target, req.read_only).map(|()| None),
            (None, Some(spec)) => frontend.mount(spec, &target),
            (None, None) => unreachable!("a new mount always has a spec"),
        };
        match mounted {
            Ok(pid) => {
                let last = records.last_mut().expect("just pushed");
                last.pid = pid;
                let record = last.clone();
                self.save(&records)?;
                Ok(record)
            }
            Err(e) => {
                records.pop();
                self.save(&records)?;
                Err(e)
            }
        }
    }

    /// Serves `req.layer` of `driver` at `req.target` through `frontend` in the
    /// calling process (the FUSE frontend in the foreground) until it is
    /// unmounted. The mount is recorded like any other, with this process's pid,
    /// so `lamina umount` finds it and other mounts of the layer respect it; the
    /// record goes when serving ends. A served mount never shares another:
    /// the layer must not be mounted read-write elsewhere, nor at all when this
    /// one is read-write.
    pub fn serve(
        &self,
        driver: &dyn Driver,
        frontend: &dyn Frontend,
        req: &MountRequest<'_>,
    ) -> Result<()> {
        let target = mountpoint_dir(req.target)?;
        let spec = {
            let _g = self.lock()?;
            let mut records = self.prune_locked()?;
            let same_layer = admissible(&records, driver, frontend.kind(), req, &target)?;
            if let Some(other) = same_layer.iter().find(|r| !(r.read_only && req.read_only)) {
                return Err(DriverError::Mount {
                    target,
                    reason: format!(
                        "{} is already mounted{} at {}, and a mount served in the foreground \
                         cannot share it; unmount it first",
                        req.label,
                        if other.read_only { "" } else { " read-write" },
                        other.mountpoint.display()
                    ),
                });
            }
            let spec = driver.mount_spec(req.layer, frontend.kind(), req.read_only)?;
            records.push(MountRecord {
                pid: Some(std::process::id()),
                foreground: true,
                ..MountRecord::new(&target, driver, frontend, req)
            });
            self.save(&records)?;
            spec
        };
        let served = frontend.mount(spec, &target);
        let _g = self.lock()?;
        let mut records = self.load()?;
        let ours = |r: &MountRecord| r.mountpoint == target && r.pid == Some(std::process::id());
        if let Some(pos) = records.iter().position(ours) {
            records.remove(pos);
            self.save(&records)?;
        }
        served.map(|_| ())
    }

    /// Mounts something that is not a driver layer (e.g. a single layer's view) with
    /// `mount`, and records it so `put` and pruning treat it like any other mount.
    pub fn adopt(
        &self,
        record: MountRecord,
        mount: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<MountRecord> {
        let _g = self.lock()?;
        let mut records = self.prune_locked()?;
        if MountInfo::read()?.is_mountpoint(&record.mountpoint) {
            return Err(DriverError::Mount {
                target: record.mountpoint,
                reason: "the mountpoint is already in use (something is mounted there)".into(),
            });
        }
        mount(&record.mountpoint)?;
        records.push(record.clone());
        self.save(&records)?;
        Ok(record)
    }

    /// Unmounts `target` and forgets it. A dead mount is detached. The layer stays
    /// mounted elsewhere while other mountpoints of it remain.
    pub fn put(
        &self,
        target: &Path,
        frontend_of: &dyn Fn(FrontendKind) -> Result<Box<dyn Frontend>>,
    ) -> Result<MountRecord> {
        let canonical = canonical_mountpoint(target);
        let _g = self.lock()?;
        let mut records = self.load()?;
        let Some(pos) = records.iter().position(|r| r.mountpoint == canonical) else {
            if kernel::server_gone(&canonical) && MountInfo::read()?.is_mountpoint(&canonical) {
                kernel::unmount(&canonical)?;
                return Err(DriverError::Mount {
                    target: canonical,
                    reason: "was a dead mount Lamina did not record; detached it".into(),
                });
            }
            return Err(DriverError::Mount {
                target: canonical,
                reason: "not a Lamina mount".into(),
            });
        };
        let record = records[pos].clone();
        if MountInfo::read()?.is_mountpoint(&canonical) {
            if record.shares.is_some() || kernel::server_gone(&canonical) {
                kernel::unmount(&canonical)?;
            } else {
                frontend_of(record.frontend)?.unmount(&canonical)?;
            }
        }
        records.remove(pos);
        self.save(&records)?;
        release_unused_layer_mounts(std::slice::from_ref(&record), &records)?;
        Ok(record)
    }
}

/// Unmounts the layer mounts of `gone` records that no record of `remaining`
/// stacks. A layer mount still busy (e.g. under a diff's private view) stays.
fn release_unused_layer_mounts(gone: &[MountRecord], remaining: &[MountRecord]) -> Result<()> {
    let mut unused: Vec<&PathBuf> = gone
        .iter()
        .flat_map(|r| &r.layer_mounts)
        .filter(|dir| !remaining.iter().any(|r| r.layer_mounts.contains(dir)))
        .collect();
    unused.sort();
    unused.dedup();
    if unused.is_empty() {
        return Ok(());
    }
    let table = MountInfo::read()?;
    for dir in unused {
        if table.is_mountpoint(dir) {
            match kernel::unmount(dir) {
                Ok(()) => tracing::debug!(dir = %dir.display(), "released a layer mount"),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "layer mount still busy; leaving it")
                }
            }
        }
    }
    Ok(())
}

/// The canonical path of a mountpoint, found through its parent directory so that
/// a dead mount (which cannot be stat-ed) resolves too.
fn canonical_mountpoint(target: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(target) {
        return p;
    }
    match (target.parent(), target.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)
                .map(|p| p.join(name))
                .unwrap_or_else(|_| target.to_path_buf())
        }
        _ => target.to_path_buf(),
    }
}

/// Whether a mountpoint answers `ENOTCONN` (a FUSE daemon that died).
/// `target` canonicalized, checked to be a directory.
fn mountpoint_dir(target: &Path) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(target).ctx("mountpoint", target)?;
    if !canonical.is_dir() {
        return Err(DriverError::Mount {
            target: canonical,
            reason: "the mountpoint is not a directory".into(),
        });
    }
    Ok(canonical)
}

/// Checks that `req` may be mounted at `target` beside `records` (the
/// mountpoint is free, the layer exists, no other frontend has the layer
/// read-write, no foreground mount of it is writable or asked to share with a
/// writable one); returns the records of the same layer.
fn admissible<'r>(
    records: &'r [MountRecord],
    driver: &dyn Driver,
    frontend: FrontendKind,
    req: &MountRequest<'_>,
    target: &Path,
) -> Result<Vec<&'r MountRecord>> {
    if MountInfo::read()?.is_mountpoint(target) {
        return Err(DriverError::Mount {
            target: target.to_path_buf(),
            reason: "the mountpoint is already in use (something is mounted there)".into(),
        });
    }
    if !driver.exists(req.layer) {
        return Err(DriverError::NoSuchLayer(req.layer.to_string()));
    }
    let same_layer: Vec<&MountRecord> = records
        .iter()
        .filter(|r| r.driver == driver.name() && r.layer == req.layer)
        .collect();
    if let Some(other) = same_layer
        .iter()
        .find(|r| r.frontend != frontend && !r.read_only)
    {
        return Err(DriverError::Mount {
            target: target.to_path_buf(),
            reason: format!(
                "{} is mounted read-write through the {} frontend at {}; unmount it first",
                req.label,
                other.frontend,
                other.mountpoint.display()
            ),
        });
    }
    if let Some(other) = same_layer
        .iter()
        .find(|r| r.foreground && !(r.read_only && req.read_only))
    {
        return Err(DriverError::Mount {
            target: target.to_path_buf(),
            reason: format!(
                "{} is served in the foreground at {} (pid {}); stop that first",
                req.label,
                other.mountpoint.display(),
                other.pid.unwrap_or_default()
            ),
        });
    }
    Ok(same_layer)
}

/// A foreground mount whose process lives but whose mount is not there yet
/// (its record is written before the mount is made).
fn starting_in_foreground(r: &MountRecord) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    r.foreground
        && r.pid
            .is_some_and(|pid| unsafe { libc::kill(pid as libc::pid_t, 0) } == 0)
}

/// The mount table of this process's namespace (`/proc/self/mountinfo`).
#[derive(Debug, Clone)]
pub struct MountInfo {
    mountpoints: Vec<(PathBuf, String)>,
}

impl MountInfo {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/self/mountinfo").ctx("read", "/proc/self/mountinfo")?;
        let mountpoints = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let mountpoint = fields.nth(4)?;
                let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
                Some((
                    PathBuf::from(unescape_octal(mountpoint)),
                    fstype.to_string(),
                ))
            })
            .collect();
        Ok(MountInfo { mountpoints })
    }

    /// Whether something is mounted exactly at `path`.
    pub fn is_mountpoint(&self, path: &Path) -> bool {
        self.mountpoints.iter().any(|(m, _)| m == path)
    }

    /// Every mountpoint, in mount order.
    pub fn mountpoints(&self) -> impl Iterator<Item = &Path> + '_ {
        self.mountpoints.iter().map(|(m, _)| m.as_path())
    }

    /// The filesystem type of the topmost mount at `path`.
    pub fn fstype(&self, path: &Path) -> Option<&str> {
        self.mountpoints
            .iter()
            .rev()
            .find(|(m, _)| m == path)
            .map(|(_, t)| t.as_str())
    }
}

/// Decodes mountinfo's `\040`-style escapes.
fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_octal(r"/mnt/a\040b"),
            std::ffi::OsString::from("/mnt/a b")
        );
        assert_eq!(
            unescape_octal(r"/plain"),
            std::ffi::OsString::from("/plain")
        );
        assert_eq!(unescape_octal(r"/x\134"), std::ffi::OsString::from("/x\\"));
    }

    #[test]
    fn the_root_is_a_mountpoint() {
        assert!(MountInfo::read().unwrap().is_mountpoint(Path::new("/")));
    }
}
