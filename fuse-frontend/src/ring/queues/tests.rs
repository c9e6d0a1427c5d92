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
use std::time::{Duration, SystemTime};

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
/// [`PANIC_NAME`]), everything else ENOSYS.
#[derive(Default)]
struct TestHandler {
    /// GETATTRs answered.
    getattrs: AtomicU64,
    /// Names looked up.
    lookups: Mutex<Vec<OsString>>,
}

impl RingHandler for TestHandler {
    fn handle(&self, req: &RingRequest<'_>, reply: &mut RingReply<'_>) {
        match req.opcode {
            OP_GETATTR if req.nodeid == 1 => {
                self.getattrs.fetch_add(1, Ordering::Relaxed);
                assert!(reply.push(&root_attr_out()), "fuse_attr_out fits");
            }
            OP_LOOKUP => {
                let end = req
                    .payload
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(req.payload.len());
                let name = OsStr::from_bytes(&req.payload[..end]).to_owned();
                let panics = name == PANIC_NAME;
                self.lookups.lock().unwrap().push(name);
                assert!(!panics, "the handler panics on {PANIC_NAME}");
                reply.error(libc::ENOENT);
            }
            _ => reply.error(libc::ENOSYS),
        }
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
        let mounted = Mounted {
            target,
            conn,
            done: false,
            _dir: dir,
        };
        (mounted, session)
    }

    /// Unmounts through fuser and waits for its thread and the queues to end.
    fn finish(mut self, session: fuser::BackgroundSession, queues: Option<RingQueues>) {
        session
            .umount_and_join()
            .expect("unmount and end the fuser session");
        if let Some(queues) = queues {
            within("joining the ring queues", move || queues.join());
        }
        assert!(connection_of(&self.target).is_none(), "still mounted");
        self.done = true;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Only a connection still mounted here is ours for sure.
        if let (Some(conn), Some(_)) = (self.conn, connection_of(&self.target)) {
            abort_connection(conn);
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
