//! The queues against the kernel: a tiny fuser session on a temporary
//! directory, its requests answered through the rings (or, after a failed
//! registration, through `/dev/fuse`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, InitFlags, KernelConfig,
    MountOption, ReplyAttr, ReplyEntry, Request, Session, SessionACL,
};

use super::*;

/// The connection's max_write; the payload buffers must be at least this big.
const MAX_WRITE: u32 = 1 << 20;
/// How long a filesystem call or a join may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);
/// `FUSE_LOOKUP`.
const OP_LOOKUP: u32 = 1;
/// `FUSE_GETATTR`.
const OP_GETATTR: u32 = 3;
/// The root's permissions as the ring handler reports them.
const RING_PERM: u32 = 0o751;
/// The root's permissions as the fuser filesystem reports them.
const DEV_PERM: u16 = 0o755;
/// A name whose lookup makes the ring handler panic.
const PANIC_NAME: &str = "panic-here";
/// Names starting with this may block: their lookups go to the pool and sleep
/// for the handler's `slow` before answering ENOENT.
const SLOW_PREFIX: &str = "slow";
/// A slow name whose lookup panics (in a worker).
const SLOW_PANIC_NAME: &str = "slow-panic";

/// Whether the ring tests can run: root, `/dev/fuse` and `enable_uring`
/// (set to `Y` here when it is `N`, as setup does on CI machines). Prints why
/// not and returns false, or panics under `LAMINA_REQUIRE_PRIVILEGED=1`.
fn uring_ready(test: &str) -> bool {
    if !test_support::privilege::require_privileged(test) {
        return false;
    }
    if !kernel_enabled() {
        if let Err(e) = std::fs::write(ENABLE_URING_PARAM, "Y") {
            eprintln!("{test}: could not enable io_uring for FUSE: {ENABLE_URING_PARAM}: {e}");
        }
    }
    if kernel_enabled() {
        return true;
    }
    let why = format!("{ENABLE_URING_PARAM} is not Y and cannot be set");
    if std::env::var(test_support::privilege::REQUIRE_ENV).as_deref() == Ok("1") {
        panic!(
            "{test}: {}=1 but FUSE over io_uring is unavailable: {why}",
            test_support::privilege::REQUIRE_ENV
        );
    }
    eprintln!("skipped {test}: {why}");
    false
}

/// The fuser side: asks for io_uring, and answers what reaches `/dev/fuse`
/// (the root's attributes, no names).
struct DevFs {
    /// GETATTRs that arrived on `/dev/fuse`.
    getattrs: Arc<AtomicU64>,
}

impl Filesystem for DevFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        config
            .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
            .map_err(|missing| io::Error::other(format!("kernel does not offer {missing:?}")))?;
        // Lookups in one directory reach the server in parallel.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        config
            .set_max_write(MAX_WRITE)
            .map_err(|max| io::Error::other(format!("max_write is limited to {max}")))?;
        Ok(())
    }

    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::ENOENT);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 != 1 {
            reply.error(Errno::ENOENT);
            return;
        }
        self.getattrs.fetch_add(1, Ordering::Relaxed);
        let time = SystemTime::UNIX_EPOCH;
        reply.attr(
            &Duration::ZERO,
            &FileAttr {
                ino: INodeNo(1),
                size: 0,
                blocks: 0,
                atime: time,
                mtime: time,
                ctime: time,
                crtime: time,
                kind: FileType::Directory,
                perm: DEV_PERM,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            },
        );
    }
}

/// The ring side: GETATTR of the root, LOOKUP always ENOENT (panicking for
/// [`PANIC_NAME`] and [`SLOW_PANIC_NAME`]; the lookups of names starting with
/// [`SLOW_PREFIX`] may block and sleep for `slow` first), everything else
/// ENOSYS.
#[derive(Default)]
struct TestHandler {
    /// How long a slow lookup sleeps.
    slow: Duration,
    /// GETATTRs answered.
    getattrs: AtomicU64,
    /// Names looked up.
    lookups: Mutex<Vec<OsString>>,
    /// Where each slow lookup ran.
    slow_lookups: Mutex<Vec<SlowLookup>>,
    /// Slow lookups running now.
    in_flight: AtomicU64,
    /// The most slow lookups that ran at once.
    max_in_flight: AtomicU64,
}

/// Where a slow lookup ran.
#[derive(Clone, Debug)]
struct SlowLookup {
    /// The name looked up.
    name: OsString,
    /// The answering thread's name.
    thread: String,
    /// The CPU it ran on.
    cpu: i32,
}

impl TestHandler {
    /// A handler whose slow lookups sleep for `slow`.
    fn with_slow(slow: Duration) -> TestHandler {
        TestHandler {
            slow,
            ..TestHandler::default()
        }
    }

    /// Whether `name` was looked up.
    fn looked_up(&self, name: &str) -> bool {
        self.lookups.lock().unwrap().iter().any(|n| n == name)
    }

    /// Waits (within [`PATIENCE`]) until `name` was looked up.
    fn wait_for_lookup(&self, name: &str) {
        let start = Instant::now();
        while !self.looked_up(name) {
            assert!(
                start.elapsed() < PATIENCE,
                "no lookup of {name} within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The name a LOOKUP asks for.
fn lookup_name<'a>(req: &RingRequest<'a>) -> &'a OsStr {
    let end = req
        .payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.payload.len());
    OsStr::from_bytes(&req.payload[..end])
}

impl RingHandler for TestHandler {
    fn handle(&self, req: &RingRequest<'_>, reply: &mut RingReply<'_>) {
        match req.opcode {
            OP_GETATTR if req.nodeid == 1 => {
                self.getattrs.fetch_add(1, Ordering::Relaxed);
                assert!(reply.push(&root_attr_out()), "fuse_attr_out fits");
            }
            OP_LOOKUP => {
                let name = lookup_name(req).to_owned();
                let slow = name.as_bytes().starts_with(SLOW_PREFIX.as_bytes());
                let panics = name == PANIC_NAME || name == SLOW_PANIC_NAME;
                if slow {
                    let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    self.slow_lookups.lock().unwrap().push(SlowLookup {
                        name: name.clone(),
                        thread: std::thread::current().name().unwrap_or("").to_owned(),
                        // SAFETY: no arguments.
                        cpu: unsafe { libc::sched_getcpu() },
                    });
                }
                self.lookups.lock().unwrap().push(name);
                if slow {
                    std::thread::sleep(self.slow);
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                assert!(
                    !panics,
                    "the handler panics on {PANIC_NAME} and {SLOW_PANIC_NAME}"
                );
                reply.error(libc::ENOENT);
            }
            _ => reply.error(libc::ENOSYS),
        }
    }

    fn may_block(&self, req: &RingRequest<'_>) -> bool {
        req.opcode == OP_LOOKUP
            && lookup_name(req)
                .as_bytes()
                .starts_with(SLOW_PREFIX.as_bytes())
    }
}

/// `struct fuse_attr_out` (104 bytes) of the root directory, no caching.
fn root_attr_out() -> Vec<u8> {
    let mut out = vec![0u8; 104];
    // attr_valid, attr_valid_nsec, dummy: 0. fuse_attr at 16:
    write_u64(&mut out, 16, 1); // ino
    write_u32(&mut out, 16 + 60, libc::S_IFDIR | RING_PERM); // mode
    write_u32(&mut out, 16 + 64, 2); // nlink
    write_u32(&mut out, 16 + 80, 4096); // blksize
    out
}

/// A mounted test session: unmounts (aborting the connection if it is still
/// up) when dropped, so a failing test leaves nothing mounted.
struct Mounted {
    /// The mountpoint (inside `_dir`).
    target: PathBuf,
    /// The connection's number under `/sys/fs/fuse/connections`.
    conn: Option<u64>,
    /// Whether the normal teardown already ran.
    done: bool,
    /// Whether the mount was detached lazily (the connection may outlive it).
    detached: bool,
    /// A duplicate of the session's `/dev/fuse` descriptor: while it is open
    /// the connection's number cannot go to another mount, so the guard may
    /// abort it even once it is detached.
    _dev: Option<std::os::fd::OwnedFd>,
    /// Keeps the mountpoint directory.
    _dir: tempfile::TempDir,
}

impl Mounted {
    /// Mounts a [`DevFs`] on a fresh temporary directory.
    fn new(getattrs: Arc<AtomicU64>) -> (Mounted, Session<DevFs>) {
        let dir = tempfile::tempdir().expect("mountpoint");
        let target = dir.path().to_path_buf();
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lamina-ring-test".into())];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(1);
        let session = Session::new(DevFs { getattrs }, &target, &config).expect("mount");
        let conn = connection_of(&target);
        assert!(
            conn.is_some(),
            "{} not in /proc/self/mountinfo",
            target.display()
        );
        let dev = session.as_fd().try_clone_to_owned().ok();
        let mounted = Mounted {
            target,
            conn,
            done: false,
            detached: false,
            _dev: dev,
            _dir: dir,
        };
        (mounted, session)
    }

    /// Unmounts through fuser and waits for its thread and the queues to end.
    fn finish(mut self, session: fuser::BackgroundSession, queues: Option<RingQueues>) {
        within("unmounting and ending the fuser session", move || {
            session.umount_and_join()
        })
        .expect("unmount and end the fuser session");
        if let Some(queues) = queues {
            within("joining the ring queues", move || queues.join());
        }
        assert!(connection_of(&self.target).is_none(), "still mounted");
        self.done = true;
    }

    /// Unmounts the way Lamina does: `umount`, and a busy mount is detached
    /// lazily. Returns the error of the plain `umount`, if any.
    fn unmount_or_detach(&mut self) -> Option<io::Error> {
        let c = CString::new(self.target.as_os_str().as_bytes()).expect("no NUL in a temp path");
        // SAFETY: a valid path string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            return None;
        }
        let busy = io::Error::last_os_error();
        self.detached = true;
        // SAFETY: as above.
        let ret = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        assert_eq!(ret, 0, "detaching: {}", io::Error::last_os_error());
        assert!(connection_of(&self.target).is_none(), "still mounted");
        Some(busy)
    }

    /// After [`Mounted::unmount_or_detach`]: waits for fuser's thread and the
    /// queues to end (once the kernel lets go of the connection).
    fn finish_unmounted(mut self, session: fuser::BackgroundSession, queues: RingQueues) {
        within("ending the fuser session", move || session.join()).expect("end the fuser session");
        within("joining the ring queues", move || queues.join());
        self.done = true;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Only a connection still mounted here, or one whose device we still
        // hold, is ours for sure.
        if let Some(conn) = self.conn {
            let detached_alive = self.detached
                && Path::new("/sys/fs/fuse/connections")
                    .join(conn.to_string())
                    .exists();
            if detached_alive || connection_of(&self.target).is_some() {
                abort_connection(conn);
            }
        }
        if let Ok(c) = CString::new(self.target.as_os_str().as_bytes()) {
            // SAFETY: a valid path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The FUSE connection number (`st_dev`) of the mount on `target`, if mounted.
fn connection_of(target: &Path) -> Option<u64> {
    let target = target
        .canonicalize()
        .unwrap_or_else(|_| target.to_path_buf());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 || Path::new(fields[4]) != target {
            return None;
        }
        let (major, minor) = fields[2].split_once(':')?;
        Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
    })
}

/// Aborts FUSE connection `conn`, mounting fusectl for the occasion if needed.
fn abort_connection(conn: u64) {
    let connections = Path::new("/sys/fs/fuse/connections");
    let mounted_here = !connections.join(conn.to_string()).exists() && {
        let (src, dir) = (c"fusectl", c"/sys/fs/fuse/connections");
        // SAFETY: valid strings; no data argument.
        unsafe {
            libc::mount(
                src.as_ptr(),
                dir.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
        }
    };
    let abort = connections.join(conn.to_string()).join("abort");
    match std::fs::write(&abort, "1") {
        Ok(()) => eprintln!("aborted FUSE connection {conn}"),
        Err(e) => eprintln!(
            "could not abort FUSE connection {conn}: {}: {e}",
            abort.display()
        ),
    }
    if mounted_here {
        // SAFETY: a valid path string.
        unsafe { libc::umount(c"/sys/fs/fuse/connections".as_ptr()) };
    }
}

/// Runs `f` on a helper thread; panics if it takes longer than [`PATIENCE`]
/// (a hung FUSE call then gets released by the guard's abort).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("{what}: no answer within {PATIENCE:?} ({e})"))
}

/// `stat` of `path`, within [`PATIENCE`].
fn stat(path: &Path) -> io::Result<std::fs::Metadata> {
    let path = path.to_path_buf();
    let what = format!("stat {}", path.display());
    within(&what, move || std::fs::metadata(path))
}

#[test]
fn parses_cpu_lists() {
    assert_eq!(parse_cpu_list("0\n"), Some(1));
    assert_eq!(parse_cpu_list("0-1\n"), Some(2));
    assert_eq!(parse_cpu_list("0-3,5,7-9\n"), Some(10));
    assert_eq!(parse_cpu_list("\n"), None);
    assert_eq!(parse_cpu_list("x"), None);
}

#[test]
fn ring_answers_requests() {
    if !uring_ready("ring_answers_requests") {
        return;
    }
    let dev_getattrs = Arc::new(AtomicU64::new(0));
    let (mounted, session) = Mounted::new(Arc::clone(&dev_getattrs));
    let handler = Arc::new(TestHandler::default());
    let queues = RingQueues::start(
        session.as_fd(),
        Arc::clone(&handler) as Arc<dyn RingHandler>,
        MAX_WRITE as usize,
        2,
    )
    .expect("rings start");
    let session = session.spawn().expect("fuser session thread");
    let before = queues.answered();

    let meta = stat(&mounted.target).expect("stat of the root");
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        RING_PERM,
        "the root's attributes come from the ring"
    );
    let missing = stat(&mounted.target.join("missing")).expect_err("missing name");
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);

    // A panicking handler answers EIO and the queue goes on.
    let panicked = stat(&mounted.target.join(PANIC_NAME)).expect_err("panicking lookup");
    assert_eq!(panicked.raw_os_error(), Some(libc::EIO), "{panicked}");
    stat(&mounted.target).expect("stat after the panic");

    assert!(handler.getattrs.load(Ordering::Relaxed) >= 2);
    let lookups = handler.lookups.lock().unwrap().clone();
    assert!(lookups.iter().any(|n| n == "missing"), "{lookups:?}");
    assert!(lookups.iter().any(|n| n == PANIC_NAME), "{lookups:?}");
    assert!(
        queues.answered() >= before + 4,
        "answered {}",
        queues.answered()
    );
    assert_eq!(
        dev_getattrs.load(Ordering::Relaxed),
        0,
        "nothing went through /dev/fuse"
    );

    let counter = queues.answered_counter();
    mounted.finish(session, Some(queues));
    assert!(counter.get() >= 4);
}

#[test]
fn ring_registration_failure_falls_back_to_dev_fuse() {
    if !uring_ready("ring_registration_failure_falls_back_to_dev_fuse") {
        return;
    }
    let dev_getattrs = Arc::new(AtomicU64::new(0));
    let (mounted, session) = Mounted::new(Arc::clone(&dev_getattrs));
    let handler = Arc::new(TestHandler::default());
    let error = RingQueues::start(
        session.as_fd(),
        Arc::clone(&handler) as Arc<dyn RingHandler>,
        (MAX_WRITE / 16) as usize,
        2,
    )
    .err()
    .expect("a payload buffer below max_write is rejected");
    assert_eq!(
        error.raw_os_error(),
        None,
        "the error carries context: {error}"
    );
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    assert!(error.to_string().contains("REGISTER"), "{error}");
    let session = session.spawn().expect("fuser session thread");

    assert_root_answered_by_fuser(&mounted.target);
    let missing = stat(&mounted.target.join("missing")).expect_err("missing name");
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    assert!(dev_getattrs.load(Ordering::Relaxed) >= 1);
    assert_eq!(handler.getattrs.load(Ordering::Relaxed), 0);
    assert!(handler.lookups.lock().unwrap().is_empty());

    mounted.finish(session, None);
}

/// Asserts that a `stat` of the mount's root gets fuser's answer (its mode),
/// not the ring handler's.
fn assert_root_answered_by_fuser(target: &Path) {
    let meta = stat(target).expect("stat of the root");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        u32::from(DEV_PERM),
        "answered by fuser"
    );
}

/// Without any registration the connection waits for the rings; the REGISTER
/// start uses to give up on them must send its requests to `/dev/fuse`.
#[test]
fn ring_turn_off_releases_waiting_requests() {
    if !uring_ready("ring_turn_off_releases_waiting_requests") {
        return;
    }
    let dev_getattrs = Arc::new(AtomicU64::new(0));
    let (mounted, session) = Mounted::new(Arc::clone(&dev_getattrs));
    turn_uring_off(session.as_fd().as_raw_fd()).expect("io_uring turned off");
    let session = session.spawn().expect("fuser session thread");

    assert_root_answered_by_fuser(&mounted.target);
    assert!(dev_getattrs.load(Ordering::Relaxed) >= 1);

    mounted.finish(session, None);
}

/// Pins the calling thread to `cpu`, or panics.
fn pin_test_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it (cpu is small).
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        ret,
        0,
        "pinning a test thread to CPU {cpu}: {}",
        io::Error::last_os_error()
    );
}

/// A `stat` of `path` on a new thread pinned to `cpu`: its result and how long
/// it took arrive on the receiver.
fn stat_on_cpu(
    cpu: usize,
    path: PathBuf,
) -> mpsc::Receiver<(io::Result<std::fs::Metadata>, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        pin_test_thread(cpu);
        let start = Instant::now();
        let result = std::fs::metadata(&path);
        let _ = tx.send((result, start.elapsed()));
    });
    rx
}

/// The answer of a [`stat_on_cpu`], within [`PATIENCE`].
fn answer_of(
    what: &str,
    rx: &mpsc::Receiver<(io::Result<std::fs::Metadata>, Duration)>,
) -> (io::Result<std::fs::Metadata>, Duration) {
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("{what}: no answer within {PATIENCE:?} ({e})"))
}

/// Mounts a [`DevFs`] and starts the rings (`depth` entries per queue) with
/// `handler`, then fuser's thread.
fn mount_with_rings(
    handler: &Arc<TestHandler>,
    depth: usize,
) -> (Mounted, fuser::BackgroundSession, RingQueues) {
    let (mounted, session) = Mounted::new(Arc::new(AtomicU64::new(0)));
    let queues = RingQueues::start(
        session.as_fd(),
        Arc::clone(handler) as Arc<dyn RingHandler>,
        MAX_WRITE as usize,
        depth,
    )
    .expect("rings start");
    let session = session.spawn().expect("fuser session thread");
    (mounted, session, queues)
}

/// Asserts that a `stat` of the root gets the ring handler's answer.
fn assert_root_answered_by_ring(target: &Path) {
    let meta = stat(target).expect("stat of the root");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        RING_PERM,
        "answered by the ring"
    );
}

/// Asserts, when every test has its own process (nextest), that no ring
/// thread (queue or worker) is left.
fn assert_no_ring_threads() {
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() != Ok("process-per-test") {
        return;
    }
    let mut left = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let comm = task.expect("task entry").path().join("comm");
        // A thread may end meanwhile.
        if let Ok(name) = std::fs::read_to_string(comm) {
            if name.starts_with("lamina-ring") {
                left.push(name.trim().to_owned());
            }
        }
    }
    assert!(left.is_empty(), "ring threads left: {left:?}");
}

/// A request that may block goes to a worker on the same CPU: a `stat` of the
/// root made on that CPU meanwhile is answered at once.
#[test]
fn ring_slow_request_does_not_hold_up_its_cpu() {
    if !uring_ready("ring_slow_request_does_not_hold_up_its_cpu") {
        return;
    }
    let slow = Duration::from_secs(2);
    let handler = Arc::new(TestHandler::with_slow(slow));
    let (mounted, session, queues) = mount_with_rings(&handler, 4);

    let slow_stat = stat_on_cpu(0, mounted.target.join(SLOW_PREFIX));
    handler.wait_for_lookup(SLOW_PREFIX);
    let (root, root_took) = answer_of("stat of the root", &stat_on_cpu(0, mounted.target.clone()));
    let still_running = handler.in_flight.load(Ordering::SeqCst);
    let meta = root.expect("stat of the root");
    assert_eq!(meta.permissions().mode() & 0o7777, RING_PERM);
    assert_eq!(
        still_running, 1,
        "the root's stat (after {root_took:?}) was answered while the slow lookup ran"
    );

    let (missing, slow_took) = answer_of("stat of the slow name", &slow_stat);
    let missing = missing.expect_err("the slow name does not exist");
    assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
    assert!(
        slow_took >= slow - Duration::from_millis(100),
        "{slow_took:?}"
    );
    let ran = handler.slow_lookups.lock().unwrap().clone();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(
        ran[0].thread.starts_with("lamina-ring-0-w"),
        "answered by a worker of queue 0: {ran:?}"
    );
    assert_eq!(
        ran[0].cpu, 0,
        "the worker runs on the caller's CPU: {ran:?}"
    );

    mounted.finish(session, Some(queues));
    assert_no_ring_threads();
}

/// More blocking requests than a pool has workers: each is answered, at most
/// [`POOL_SIZE`] at a time, while the queue thread still answers the rest.
#[test]
fn ring_pool_answers_more_blocking_requests_than_workers() {
    if !uring_ready("ring_pool_answers_more_blocking_requests_than_workers") {
        return;
    }
    let handler = Arc::new(TestHandler::with_slow(Duration::from_millis(400)));
    let (mounted, session, queues) = mount_with_rings(&handler, 8);

    let names: Vec<String> = (0..3 * POOL_SIZE)
        .map(|k| format!("{SLOW_PREFIX}-{k}"))
        .collect();
    let start = Instant::now();
    let stats: Vec<_> = names
        .iter()
        .map(|name| stat_on_cpu(0, mounted.target.join(name)))
        .collect();
    for name in &names {
        handler.wait_for_lookup(name);
    }
    assert_root_answered_by_ring(&mounted.target);
    for (name, rx) in names.iter().zip(&stats) {
        let (result, _) = answer_of(name, rx);
        let e = result.expect_err("slow names do not exist");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
    }
    assert_eq!(
        handler.max_in_flight.load(Ordering::SeqCst),
        POOL_SIZE as u64,
        "the pool's workers ran side by side (all answered after {:?})",
        start.elapsed()
    );
    let ran = handler.slow_lookups.lock().unwrap().clone();
    assert_eq!(ran.len(), names.len(), "{ran:?}");
    for name in &names {
        assert!(
            ran.iter().any(|r| r.name == name.as_str()),
            "{name}: {ran:?}"
        );
    }
    assert!(
        ran.iter()
            .all(|r| r.thread.starts_with("lamina-ring-0-w") && r.cpu == 0),
        "{ran:?}"
    );

    mounted.finish(session, Some(queues));
    assert_no_ring_threads();
}

/// A blocking request whose handler panics answers EIO; the pool goes on.
#[test]
fn ring_pool_survives_a_panicking_request() {
    if !uring_ready("ring_pool_survives_a_panicking_request") {
        return;
    }
    let handler = Arc::new(TestHandler::with_slow(Duration::from_millis(20)));
    let (mounted, session, queues) = mount_with_rings(&handler, 4);

    for round in 0..2 * POOL_SIZE {
        let (panicked, _) = answer_of(
            "stat of the panicking name",
            &stat_on_cpu(0, mounted.target.join(SLOW_PANIC_NAME)),
        );
        let panicked = panicked.expect_err("panicking lookup");
        assert_eq!(
            panicked.raw_os_error(),
            Some(libc::EIO),
            "round {round}: {panicked}"
        );
    }
    assert_root_answered_by_ring(&mounted.target);
    let after = format!("{SLOW_PREFIX}-after");
    let (missing, _) = answer_of(
        "stat after the panics",
        &stat_on_cpu(0, mounted.target.join(&after)),
    );
    assert_eq!(
        missing.expect_err("missing name").kind(),
        io::ErrorKind::NotFound
    );
    let ran = handler.slow_lookups.lock().unwrap().clone();
    assert_eq!(ran.len(), 2 * POOL_SIZE + 1, "{ran:?}");
    assert!(
        ran.iter().all(|r| r.thread.starts_with("lamina-ring-0-w")),
        "{ran:?}"
    );

    mounted.finish(session, Some(queues));
    assert_no_ring_threads();
}

/// Unmounting while a worker answers a request ends cleanly: the request is
/// answered, then every thread ends.
#[test]
fn ring_unmount_during_a_blocking_request_ends_cleanly() {
    if !uring_ready("ring_unmount_during_a_blocking_request_ends_cleanly") {
        return;
    }
    let handler = Arc::new(TestHandler::with_slow(Duration::from_secs(1)));
    let (mut mounted, session, queues) = mount_with_rings(&handler, 4);

    let slow_stat = stat_on_cpu(0, mounted.target.join(SLOW_PREFIX));
    handler.wait_for_lookup(SLOW_PREFIX);
    assert_eq!(handler.in_flight.load(Ordering::SeqCst), 1);
    let busy = mounted.unmount_or_detach();
    eprintln!("plain umount during the lookup: {busy:?}");
    mounted.finish_unmounted(session, queues);
    // The detached mount kept the connection up until the lookup was answered.
    let (result, _) = answer_of("stat of the slow name", &slow_stat);
    let e = result.expect_err("the slow name does not exist");
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert_eq!(handler.in_flight.load(Ordering::SeqCst), 0);
    assert_no_ring_threads();
}

/// Aborting the connection while a worker holds an entry: the caller gets its
/// error at once, but the queue thread ends only after the worker is done with
/// the entry's buffers.
#[test]
fn ring_abort_during_a_blocking_request_waits_for_the_worker() {
    if !uring_ready("ring_abort_during_a_blocking_request_waits_for_the_worker") {
        return;
    }
    let handler = Arc::new(TestHandler::with_slow(Duration::from_secs(1)));
    let (mounted, session, queues) = mount_with_rings(&handler, 4);

    let slow_stat = stat_on_cpu(0, mounted.target.join(SLOW_PREFIX));
    handler.wait_for_lookup(SLOW_PREFIX);
    abort_connection(mounted.conn.expect("connection number"));
    let (result, _) = answer_of("stat of the slow name", &slow_stat);
    let e = result.expect_err("the connection is gone");
    assert!(
        matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)),
        "{e}"
    );
    let worker_busy = handler.in_flight.load(Ordering::SeqCst);

    within("joining the ring queues", move || queues.join());
    assert_eq!(
        worker_busy, 1,
        "the abort answered the caller before the worker"
    );
    assert_eq!(
        handler.in_flight.load(Ordering::SeqCst),
        0,
        "the queue ended while its worker held an entry"
    );
    mounted.finish(session, None);
    assert_no_ring_threads();
}
