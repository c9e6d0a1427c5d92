//! Mounting and unmounting: the [`drivers::Frontend`] implementation, serving
//! in the foreground or from threads of the calling process, unmounting, and
//! whether FUSE works on this host at all.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use drivers::kernel::FUSERMOUNT;
use drivers::{DriverError, Frontend, FrontendKind, MountSpec, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use tracing::{info, warn};

use crate::daemon;
use crate::fs::FuseFs;
use crate::fusermount;
use crate::ids::Identity;
use crate::merged::Merged;
use crate::options::FuseOptions;
use crate::ring::dispatch::RingServer;
use crate::ring::queues::{self, RingQueues};
use crate::server::{Server, MAX_WRITE};
use crate::stats::{Counters, ServeStats};
use crate::sys;

/// The FUSE frontend: serves [`MountSpec::Stack`] mounts in userspace.
#[derive(Debug, Clone, Default)]
pub struct FuseFrontend {
    options: FuseOptions,
}

impl FuseFrontend {
    /// A frontend mounting with `options`.
    pub fn new(options: FuseOptions) -> FuseFrontend {
        FuseFrontend { options }
    }

    /// The options mounts are made with.
    pub fn options(&self) -> &FuseOptions {
        &self.options
    }
}

impl Frontend for FuseFrontend {
    fn kind(&self) -> FrontendKind {
        FrontendKind::Fuse
    }

    /// Mounts a [`MountSpec::Stack`]. By default a daemon is forked (the caller
    /// must be single-threaded) and the daemon's pid is returned once the mount
    /// answers; with [`FuseOptions::foreground`] the stack is served in this
    /// process until it is unmounted, and `None` is returned.
    fn mount(&self, spec: MountSpec, target: &Path) -> Result<Option<u32>> {
        let merged = build(spec, target, &self.options)?;
        if self.options.foreground {
            serve(merged, target, &self.options, |_| {})?;
            return Ok(None);
        }
        daemon::start(merged, target, &self.options).map(Some)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        unmount(target)
    }

    /// The options that change what a mount shows or how it keeps data:
    /// id mappings, permission checks, flushing, and the transport.
    fn presentation(&self) -> String {
        let o = &self.options;
        let mut parts = Vec::new();
        if !o.uid_map.is_identity() {
            parts.push(format!("uidmap={}", o.uid_map));
        }
        if !o.gid_map.is_identity() {
            parts.push(format!("gidmap={}", o.gid_map));
        }
        if !o.check_permissions {
            parts.push("no default_permissions".to_string());
        }
        if o.volatile {
            parts.push("volatile".to_string());
        }
        if !o.io_uring {
            parts.push("no io_uring".to_string());
        }
        parts.join(", ")
    }
}

fn mount_error(target: &Path, reason: impl std::fmt::Display) -> DriverError {
    DriverError::Mount {
        target: target.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Builds the merged view of a stack spec.
pub(crate) fn build(spec: MountSpec, target: &Path, options: &FuseOptions) -> Result<Merged> {
    let MountSpec::Stack {
        lowers,
        upper,
        whiteouts,
        ownership,
    } = spec
    else {
        return Err(DriverError::Unsupported(format!(
            "the FUSE frontend serves layer stacks; {spec:?} is for the kernel frontend"
        )));
    };
    if let Some((upper_dir, work_dir)) = &upper {
        let canonical_target = target
            .canonicalize()
            .unwrap_or_else(|_| target.to_path_buf());
        for dir in [upper_dir, work_dir] {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            if canonical_target.starts_with(&dir) {
                return Err(mount_error(
                    target,
                    format!("the mountpoint lies inside {}", dir.display()),
                ));
            }
        }
    }
    let identity = Identity {
        ownership,
        uids: options.uid_map.clone(),
        gids: options.gid_map.clone(),
    };
    let merged = Merged::new(lowers, upper, whiteouts, identity)
        .map_err(|e| mount_error(target, format!("preparing the stack: {e}")))?;
    if let Some(upper) = &merged.upper {
        upper.set_volatile(options.volatile);
    }
    Ok(merged)
}

/// The fuser configuration of a mount.
fn config(options: &FuseOptions, writable: bool) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(options.fsname.clone()),
        MountOption::Subtype("lamina".into()),
        MountOption::Dev,
        MountOption::Suid,
        if writable {
            MountOption::RW
        } else {
            MountOption::RO
        },
    ];
    if options.check_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    config
}

/// Entries registered per io_uring queue (requests one CPU can have in flight
/// before the kernel queues more).
const RING_DEPTH: usize = 8;

/// A mounted session and, when the kernel granted them, its io_uring queues.
struct Served {
    session: Session<FuseFs>,
    rings: Option<RingQueues>,
}

impl Served {
    /// Serves until the filesystem is unmounted.
    fn run(self) -> std::io::Result<()> {
        let result = self.session.run();
        if let Some(rings) = self.rings {
            rings.join();
        }
        result
    }
}

/// Mounts `merged` on `target` and returns the session, ready to run, with its
/// io_uring queues started when the kernel offers them.
fn mount_session(merged: Merged, target: &Path, options: &FuseOptions) -> Result<Served> {
    let writable = merged.writable();
    let ring = options.io_uring && queues::kernel_enabled();
    // Without privileges passthrough is refused (it needs CAP_SYS_ADMIN).
    let passthrough = options.passthrough && sys::is_root();
    let server = Arc::new(Server::new(
        Arc::new(merged),
        options.ttl(writable),
        passthrough,
    ));
    let session = new_session(FuseFs::new(server.clone(), ring), target, options, writable)?;
    let rings = if server.ring_granted() {
        start_rings(&session, server)
    } else {
        None
    };
    Ok(Served { session, rings })
}

/// Starts the io_uring queues of `session`; `None` (serving through
/// `/dev/fuse`) when they cannot start.
fn start_rings(session: &Session<FuseFs>, server: Arc<Server>) -> Option<RingQueues> {
    let started = session.as_fd().try_clone_to_owned().and_then(|dev| {
        let handler = Arc::new(RingServer::new(server, Arc::new(dev)));
        RingQueues::start(session.as_fd(), handler, MAX_WRITE as usize, RING_DEPTH)
    });
    match started {
        Ok(rings) => {
            info!("serving through FUSE over io_uring, one queue per CPU");
            Some(rings)
        }
        Err(e) => {
            warn!(error = %e, "FUSE over io_uring did not start; serving through /dev/fuse");
            None
        }
    }
}

/// Mounts `fs` on `target` (through the setuid helper without privileges).
fn new_session(
    fs: FuseFs,
    target: &Path,
    options: &FuseOptions,
    writable: bool,
) -> Result<Session<FuseFs>> {
    sys::raise_nofile_limit();
    if sys::is_root() {
        return Session::new(fs, target, &config(options, writable))
            .map_err(|e| mount_error(target, e));
    }
    let allow_other = options.allow_other && fusermount::user_allow_other();
    if options.allow_other && !allow_other {
        info!("mounting for this user only: /etc/fuse.conf does not set user_allow_other");
    }
    let mut mount_options = vec![
        format!("fsname={}", options.fsname),
        "subtype=lamina".to_string(),
        if writable { "rw" } else { "ro" }.to_string(),
    ];
    if options.check_permissions {
        mount_options.push("default_permissions".to_string());
    }
    if allow_other {
        mount_options.push("allow_other".to_string());
    }
    let fd = fusermount::mount(target, &mount_options).map_err(|e| mount_error(target, e))?;
    let acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut config = config(options, writable);
    config.acl = acl;
    Session::from_fd(fs, fd, acl, config).map_err(|e| {
        detach(target);
        mount_error(target, format!("starting the session: {e}"))
    })
}

/// The signals that end a served mount.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Mounts `merged` on `target` and serves it in this process until it is
/// unmounted or the process receives `SIGTERM`, `SIGINT` or `SIGHUP` (then it
/// unmounts, lazily if busy). `mounted` is told whether the mount succeeded
/// before serving starts.
pub(crate) fn serve(
    merged: Merged,
    target: &Path,
    options: &FuseOptions,
    mounted: impl FnOnce(std::result::Result<(), String>),
) -> Result<()> {
    // Every serving thread (fuser's, the io_uring queues') inherits this mask;
    // one watcher takes the signals.
    let signals = stop_signals();
    let old_mask = match signals.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK) {
        Ok(mask) => mask,
        Err(e) => {
            let e = mount_error(target, format!("blocking signals: {e}"));
            mounted(Err(e.to_string()));
            return Err(e);
        }
    };
    let session = match mount_session(merged, target, options) {
        Ok(s) => s,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            mounted(Err(e.to_string()));
            return Err(e);
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let watched = target.to_path_buf();
        std::thread::Builder::new()
            .name("lamina-fuse-signals".into())
            .spawn(move || watch_signals(&watched, signals, &done))
    };
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            return Err(mount_error(
                target,
                format!("starting the signal watcher: {e}"),
            ));
        }
    };
    info!(target = %target.display(), "serving");
    mounted(Ok(()));
    let result = session.run();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let _ = old_mask.thread_set_mask();
    info!(target = %target.display(), "unmounted");
    result.map_err(|e| mount_error(target, format!("serving: {e}")))
}

/// Waits for a stop signal and unmounts `target` when one arrives.
fn watch_signals(target: &Path, signals: SigSet, done: &AtomicBool) {
    let raw = signals.as_ref();
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    while !done.load(Ordering::Relaxed) {
        // SAFETY: valid signal set and timeout; no siginfo is requested.
        let sig = unsafe { libc::sigtimedwait(raw, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            info!(signal = sig, target = %target.display(), "stopping: unmounting");
            if let Err(e) = unmount(target) {
                warn!(error = %e, "unmount failed; detaching the mount");
                detach(target);
            }
        }
    }
}

/// A stack served by threads of this process; unmounted when dropped.
#[derive(Debug)]
pub struct FuseMount {
    target: PathBuf,
    thread: Option<JoinHandle<Result<()>>>,
    counters: Arc<Counters>,
}

/// Mounts a [`MountSpec::Stack`] on `target` and serves it from threads of the
/// calling process until the returned [`FuseMount`] is unmounted or dropped.
/// Returns once the mount answers.
pub fn spawn_mount(spec: MountSpec, target: &Path, options: &FuseOptions) -> Result<FuseMount> {
    let merged = build(spec, target, options)?;
    let counters = merged.counters.clone();
    let session = mount_session(merged, target, options)?;
    let thread = std::thread::Builder::new()
        .name("lamina-fuse".into())
        .spawn(move || {
            session
                .run()
                .map_err(|e| DriverError::Other(format!("serving FUSE: {e}")))
        })
        .map_err(|e| mount_error(target, e))?;
    let mount = FuseMount {
        target: target.to_path_buf(),
        thread: Some(thread),
        counters,
    };
    daemon::wait_answering(target, options.start_timeout, || {
        mount.thread.as_ref().is_some_and(|t| t.is_finished())
    })?;
    Ok(mount)
}

impl FuseMount {
    /// The mountpoint.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// What the server has done so far.
    pub fn stats(&self) -> ServeStats {
        self.counters.snapshot()
    }

    /// Unmounts and waits for the serving threads to finish. On failure (the
    /// mount is busy) the mount is detached lazily when the value is dropped.
    pub fn unmount(mut self) -> Result<()> {
        unmount(&self.target)?;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| DriverError::Other("the FUSE serving thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for FuseMount {
    /// Unmounts, detaching lazily when the mount is busy; the serving threads
    /// end once the kernel lets go of the mount.
    fn drop(&mut self) {
        if self.thread.take().is_none() {
            return;
        }
        if let Err(e) = unmount(&self.target) {
            warn!(error = %e, target = %self.target.display(), "unmount failed; detaching");
            detach(&self.target);
        }
    }
}

/// Unmounts `target`; a dead mount (its daemon gone, `ENOTCONN`) is detached.
/// As root this is `umount2`, otherwise `fusermount3 -u`.
pub fn unmount(target: &Path) -> Result<()> {
    drivers::kernel::unmount(target)
}

/// Detaches `target` lazily: it disappears now and goes away for good once
/// nobody uses it any more.
fn detach(target: &Path) {
    drivers::kernel::detach(target)
}

/// Whether this host can mount FUSE filesystems: `/dev/fuse` exists, and as
/// root it opens; without root, `fusermount3` (which opens it for the user) is
/// on `PATH` and setuid root. The error says what is missing.
pub fn supported() -> std::result::Result<(), String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err("/dev/fuse does not exist (load the fuse module: modprobe fuse)".into());
    }
    if sys::is_root() {
        if let Err(e) = OpenOptions::new().read(true).write(true).open(dev) {
            return Err(format!("cannot open /dev/fuse: {e}"));
        }
        return Ok(());
    }
    // fusermount3 opens the device with the caller's own rights.
    let dev_c = std::ffi::CString::new("/dev/fuse").expect("no NUL");
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::access(dev_c.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        return Err(
            "/dev/fuse is not readable and writable for this user (a stock udev setup makes it 0666: chmod 0666 /dev/fuse)"
                .into(),
        );
    }
    let Some(helper) = find_on_path(OsStr::new(FUSERMOUNT)) else {
        return Err(format!(
            "not running as root and {} is not on PATH (install the fuse3 package)",
            FUSERMOUNT
        ));
    };
    use std::os::unix::fs::MetadataExt;
    let setuid_root = std::fs::metadata(&helper)
        .map(|m| m.uid() == 0 && m.mode() & libc::S_ISUID != 0)
        .unwrap_or(false);
    if !setuid_root {
        return Err(format!(
            "{} is not setuid root, so it cannot mount for an unprivileged user",
            helper.display()
        ));
    }
    Ok(())
}

/// The first executable `name` in the directories of `PATH`.
fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    path.as_bytes()
        .split(|b| *b == b':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(OsStr::from_bytes(d)).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.is_file() && m.permissions().mode() & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

/// How long to sleep between checks while waiting for a mount.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);
