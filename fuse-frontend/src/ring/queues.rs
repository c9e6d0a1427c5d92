//! The io_uring queues of one FUSE session: one thread per possible CPU, pinned
//! to it, each with its own io_uring holding `depth` ring entries registered
//! with the kernel (`FUSE_IO_URING_CMD_REGISTER`). A registered entry comes back
//! as a completion when the kernel puts a request into it; the thread answers
//! it through the [`RingHandler`] and hands the entry back with the reply
//! (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`).
//!
//! A request the handler says may block ([`RingHandler::may_block`]: a
//! copy-up, an fsync) is not answered by the queue thread: it hands the entry
//! to the queue's pool, [`POOL_SIZE`] worker threads pinned to the same CPU
//! (`lamina-ring-N-w0`, `-w1`), and goes on answering the other requests. A
//! worker answers into the entry's buffers, lists the entry as finished and
//! signals an eventfd the queue's ring polls (user data [`WAKEUP`]); the queue
//! thread then commits it like any other. The entry stays ours (and live) the
//! whole time, so the queue ends only once no worker holds one.
//!
//! Kernel ABI (include/uapi/linux/fuse.h, fs/fuse/dev_uring.c, Linux 6.14+):
//!
//! * An entry is two buffers, passed to REGISTER as `iov[2]`. The header buffer
//!   (`struct fuse_uring_req_header`, 288 bytes) holds `in_out` at 0 (the
//!   `fuse_in_header` on fetch, the `fuse_out_header` we write on commit), the
//!   opcode's in-struct `op_in` at 128 and `ring_ent_in_out` at 256 (`flags`
//!   u64, `commit_id` u64 at 264, `payload_sz` u32 at 272). The payload buffer
//!   holds the other in-arguments on fetch and the out-arguments (no out header)
//!   on commit; the kernel rejects it (`EINVAL`) when it is smaller than
//!   `max(8192, max_write, max_pages * 4096)` of the connection.
//! * Commands are `IORING_OP_URING_CMD` on an `IORING_SETUP_SQE128` ring, on a
//!   duplicate of the session's `/dev/fuse` descriptor, with `struct
//!   fuse_uring_cmd_req` (`flags` u64, `commit_id` u64 at 8, `qid` u16 at 16) in
//!   the SQE's 80-byte command area.
//! * The kernel routes requests to the rings only once every possible CPU's
//!   queue holds a registered entry; until then requests of a connection that
//!   negotiated `FUSE_OVER_IO_URING` wait. A rejected REGISTER turns io_uring off
//!   for the connection (requests then go through `/dev/fuse`), unless the rings
//!   were already complete.
//! * When the connection ends (unmount, abort) every entry held by the kernel
//!   completes with `-ENOTCONN` (`-ECONNABORTED` for a command submitted after an
//!   abort).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, error, info, warn};

use super::{read_u32, read_u64, write_u32, write_u64, RingHandler, RingReply, RingRequest};

/// Where the kernel tells whether FUSE servers may use io_uring.
const ENABLE_URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
/// The CPUs the kernel may ever bring up; it wants one queue for each.
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// `sizeof(struct fuse_uring_req_header)`.
const HEADER_SIZE: usize = 288;
/// Offset of `op_in` in the header buffer.
const OP_IN_OFFSET: usize = 128;
/// Size of `op_in`.
const OP_IN_SIZE: usize = 128;
/// Offset of `ring_ent_in_out.commit_id` in the header buffer.
const COMMIT_ID_OFFSET: usize = 264;
/// Offset of `ring_ent_in_out.payload_sz` in the header buffer.
const PAYLOAD_SZ_OFFSET: usize = 272;
/// `sizeof(struct fuse_out_header)`.
const OUT_HEADER_SIZE: usize = 16;

/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Offset of `sqe->len` in an SQE (REGISTER passes the iovec count there).
const SQE_LEN_OFFSET: usize = 24;

/// The most entries one queue may register.
const MAX_DEPTH: usize = 4096;

/// Worker threads per queue for the requests that may block.
const POOL_SIZE: usize = 2;
/// The user data of the poll on a queue's eventfd (entries use their index).
const WAKEUP: u64 = u64::MAX;
/// `POLLIN` for `IORING_OP_POLL_ADD`.
const POLL_IN: u32 = libc::POLLIN as u32;

/// Whether the kernel lets FUSE servers use io_uring (`enable_uring` is `Y`).
pub(crate) fn kernel_enabled() -> bool {
    std::fs::read_to_string(ENABLE_URING_PARAM).is_ok_and(|v| v.trim() == "Y")
}

/// How many queues the kernel wants: one per possible CPU, `nr_cpu_ids` (the
/// highest possible CPU plus one).
fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string(POSSIBLE_CPUS)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {POSSIBLE_CPUS}: {e}")))?;
    parse_cpu_list(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{POSSIBLE_CPUS}: unexpected contents {:?}", text.trim()),
        )
    })
}

/// The highest CPU of a kernel CPU list (`0-3,5,7-9`) plus one.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut highest = None;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next()?;
        let cpu: usize = last.trim().parse().ok()?;
        highest = Some(highest.map_or(cpu, |h: usize| h.max(cpu)));
    }
    highest.map(|h| h + 1)
}

/// Pins the calling thread to `cpu`; a CPU that is possible but offline (or
/// outside our cpuset) cannot take it, and the queue then runs unpinned.
fn pin_to_cpu(cpu: usize) {
    if cpu >= libc::CPU_SETSIZE as usize {
        warn!(
            cpu,
            "ring queue thread left unpinned: CPU beyond the affinity mask"
        );
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it (checked above).
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        warn!(cpu, error = %io::Error::last_os_error(), "ring queue thread left unpinned");
    }
}

/// The requests answered through the rings of one session; cheap to clone and
/// readable while the queues run.
#[derive(Clone, Debug, Default)]
pub(crate) struct AnsweredCounter(Arc<AtomicU64>);

impl AnsweredCounter {
    /// Requests answered so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one answered request.
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The rings of one FUSE session.
///
/// Dropping it without [`RingQueues::join`] leaves the queue threads running
/// until the connection ends.
pub(crate) struct RingQueues {
    /// One thread per queue, in queue order.
    threads: Vec<JoinHandle<()>>,
    /// Requests answered through the rings (the server's `ServeStats` count
    /// them too; this count serves the tests of the queues alone).
    #[cfg_attr(not(test), allow(dead_code))]
    answered: AnsweredCounter,
}

impl RingQueues {
    /// Starts one thread per possible CPU (pinned to it, named `lamina-ring-N`),
    /// each with its own io_uring, registering `depth` entries whose payload
    /// buffers are `payload_size` bytes, answering through `handler`, and with
    /// its pool of [`POOL_SIZE`] workers pinned to the same CPU for the
    /// requests that may block.
    /// Returns once every queue's registration is known to be accepted, or an
    /// error naming the failure (after stopping whatever it started; the kernel
    /// then keeps serving through /dev/fuse).
    ///
    /// `dev` is the session's `/dev/fuse` descriptor, after the `INIT` reply was
    /// sent (the kernel needs the negotiated sizes to accept a registration).
    ///
    /// # Acceptance rule
    ///
    /// The kernel handles a REGISTER inline while `io_uring_enter` submits it:
    /// once the connection is initialised nothing makes it retry later. A
    /// rejected REGISTER therefore has its completion (a negative errno) in the
    /// completion queue by the time the submit returns, while an accepted one
    /// stays parked in the kernel and completes only when a request arrives
    /// (result 0) or the connection ends. So a queue's registration counts as
    /// accepted when the kernel consumed all its REGISTER commands and the
    /// completion queue then holds no negative result (a request already
    /// waiting proves acceptance and is kept for the serving loop).
    ///
    /// Registration runs in two rounds so a failure leaves the kernel on
    /// `/dev/fuse`: every queue but the last registers first; the rings are
    /// then still incomplete, so after any failure the kernel routes nothing to
    /// them, and start turns io_uring off for the connection (a rejected
    /// REGISTER already did; after a failure of our own it submits one the
    /// kernel must reject), stops the threads (closing a ring cancels its
    /// entries) and returns the error. Only then does the last queue register,
    /// which completes the rings. If the kernel rejects only some of the last
    /// queue's entries the rings are already in use, so that queue keeps the
    /// accepted ones and start succeeds with a warning; if it rejects all of
    /// them the rings never completed and start fails as above.
    pub fn start(
        dev: BorrowedFd<'_>,
        handler: Arc<dyn RingHandler>,
        payload_size: usize,
        depth: usize,
    ) -> io::Result<RingQueues> {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FUSE ring depth {depth} is outside 1..={MAX_DEPTH}"),
            ));
        }
        if payload_size == 0 || u32::try_from(payload_size).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FUSE ring payload size {payload_size} is outside 1..=u32::MAX"),
            ));
        }
        let queues = possible_cpus()?;
        if queues > usize::from(u16::MAX) + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{queues} possible CPUs: more FUSE ring queues than a u16 can name"),
            ));
        }
        let fd = Arc::new(dev.try_clone_to_owned().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("duplicating the /dev/fuse descriptor: {e}"),
            )
        })?);
        let answered = AnsweredCounter::default();
        let config = QueueConfig {
            fd: Arc::clone(&fd),
            handler,
            payload_size,
            depth,
            answered: answered.clone(),
        };

        let mut workers = Vec::with_capacity(queues);
        for qid in 0..queues {
            // Bounded above: queues <= u16::MAX + 1.
            let qid = qid as u16;
            match Worker::spawn(qid, config.clone()) {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    let e = io::Error::new(
                        e.kind(),
                        format!("starting the thread of FUSE ring queue {qid}: {e}"),
                    );
                    return Err(abandon(workers, &fd, false, e));
                }
            }
        }
        drop(config);

        // Every queue sets up its ring and buffers before any registers.
        let mut failure = None;
        for worker in &workers {
            if let Err(e) = worker.setup_done() {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(abandon(workers, &fd, false, e));
        }

        // Round one: every queue but the last.
        let (first, last) = workers.split_at(workers.len() - 1);
        let mut failure = None;
        let mut rejected = false;
        for worker in first {
            worker.send(Command::Register);
        }
        for worker in first {
            let outcome = worker.registered();
            rejected |= outcome.kernel_rejected;
            if let Some(e) = outcome.error {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            return Err(abandon(workers, &fd, rejected, e));
        }

        // Round two: the last queue completes the rings.
        let last = &last[0];
        last.send(Command::Register);
        let outcome = last.registered();
        if let Some(e) = outcome.error {
            if outcome.accepted == 0 {
                return Err(abandon(workers, &fd, outcome.kernel_rejected, e));
            }
            warn!(
                queue = last.qid,
                accepted = outcome.accepted,
                depth,
                error = %e,
                "FUSE ring queue serves with fewer entries: the rings were already complete"
            );
        }

        for worker in &workers {
            worker.send(Command::Serve);
        }
        info!(
            queues,
            depth, payload_size, "FUSE requests go through io_uring"
        );
        Ok(RingQueues {
            threads: workers.into_iter().map(|w| w.thread).collect(),
            answered,
        })
    }

    /// Requests answered through the rings so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn answered(&self) -> u64 {
        self.answered.get()
    }

    /// A handle on the count of requests answered through the rings, usable
    /// after `self` is gone.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn answered_counter(&self) -> AnsweredCounter {
        self.answered.clone()
    }

    /// Waits for every queue thread to end (they end when the connection does,
    /// unmount or abort, once their workers answered what they hold; each
    /// joins its workers before it ends).
    pub fn join(self) {
        for (qid, thread) in self.threads.into_iter().enumerate() {
            if thread.join().is_err() {
                error!(queue = qid, "FUSE ring queue thread panicked");
            }
        }
    }
}

/// Gives up on the rings after `error`: makes sure the kernel serves the
/// connection through `/dev/fuse`, stops every queue thread and returns `error`.
///
/// Only called while the rings are incomplete, so the kernel has routed no
/// request to any entry. `rejected` tells whether the kernel already rejected a
/// REGISTER (which turned io_uring off for the connection).
fn abandon(workers: Vec<Worker>, fd: &OwnedFd, rejected: bool, error: io::Error) -> io::Error {
    warn!(error = %error, "FUSE over io_uring unavailable; serving through /dev/fuse");
    if !rejected {
        if let Err(e) = turn_uring_off(fd.as_raw_fd()) {
            error!(
                error = %e,
                "could not turn io_uring off for the FUSE connection; its requests wait until it is aborted"
            );
        }
    }
    for worker in &workers {
        worker.send(Command::Stop);
    }
    for worker in workers {
        if worker.thread.join().is_err() {
            error!(queue = worker.qid, "FUSE ring queue thread panicked");
        }
    }
    error
}

/// Submits a REGISTER the kernel must reject (no iovecs), which turns io_uring
/// off for the connection: requests that wait for the rings to complete go to
/// `/dev/fuse` instead.
fn turn_uring_off(fd: RawFd) -> io::Result<()> {
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder()
        .build(1)
        .map_err(|e| io::Error::new(e.kind(), format!("creating an io_uring: {e}")))?;
    let sqe = uring_cmd(fd, CMD_REGISTER, cmd_area(0, 0), None, 0);
    // SAFETY: the entry carries no pointers.
    unsafe { ring.submission().push(&sqe) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    ring.submit_and_wait(1)
        .map_err(|e| io::Error::new(e.kind(), format!("submitting to an io_uring: {e}")))?;
    let result = ring.completion().next().map(|c| c.result());
    match result {
        Some(res) if res < 0 => {
            debug!(result = res, "io_uring turned off for the FUSE connection");
            Ok(())
        }
        other => Err(io::Error::other(format!(
            "an empty FUSE REGISTER was not rejected (completion {other:?})"
        ))),
    }
}

/// What every queue thread needs.
#[derive(Clone)]
struct QueueConfig {
    /// The duplicated `/dev/fuse` descriptor the commands go to.
    fd: Arc<OwnedFd>,
    /// Answers the requests.
    handler: Arc<dyn RingHandler>,
    /// Bytes of each entry's payload buffer.
    payload_size: usize,
    /// Entries per queue.
    depth: usize,
    /// Counts the answered requests.
    answered: AnsweredCounter,
}

/// What [`RingQueues::start`] tells a queue thread.
enum Command {
    /// Register the entries and report.
    Register,
    /// Serve requests until the connection ends.
    Serve,
    /// Close the ring and end.
    Stop,
}

/// What a queue thread tells [`RingQueues::start`].
enum Report {
    /// The ring and buffers are ready (or could not be made).
    SetUp(io::Result<()>),
    /// The entries were registered.
    Registered(Registration),
}

/// The outcome of registering one queue's entries.
struct Registration {
    /// Entries the kernel accepted (by the acceptance rule).
    accepted: usize,
    /// The first failure, if any.
    error: Option<io::Error>,
    /// Whether the kernel rejected a REGISTER (rather than the failure being ours).
    kernel_rejected: bool,
}

/// A queue thread as seen from [`RingQueues::start`].
struct Worker {
    /// The queue's id (its CPU).
    qid: u16,
    /// The thread.
    thread: JoinHandle<()>,
    /// Commands to the thread.
    commands: Sender<Command>,
    /// Reports from the thread.
    reports: Receiver<Report>,
}

impl Worker {
    /// Starts the thread of queue `qid`.
    fn spawn(qid: u16, config: QueueConfig) -> io::Result<Worker> {
        let (commands, command_rx) = channel();
        let (report_tx, reports) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("lamina-ring-{qid}"))
            .spawn(move || queue_thread(qid, config, command_rx, report_tx))?;
        Ok(Worker {
            qid,
            thread,
            commands,
            reports,
        })
    }

    /// Sends `command`; a thread that already ended needs none.
    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Waits for the thread's setup.
    fn setup_done(&self) -> io::Result<()> {
        match self.reports.recv() {
            Ok(Report::SetUp(result)) => result,
            Ok(Report::Registered(_)) | Err(_) => Err(self.vanished()),
        }
    }

    /// Waits for the outcome of the thread's registration.
    fn registered(&self) -> Registration {
        match self.reports.recv() {
            Ok(Report::Registered(outcome)) => outcome,
            Ok(Report::SetUp(_)) | Err(_) => Registration {
                accepted: 0,
                error: Some(self.vanished()),
                kernel_rejected: false,
            },
        }
    }

    /// The error of a thread that ended (or answered) out of turn.
    fn vanished(&self) -> io::Error {
        io::Error::other(format!(
            "the thread of FUSE ring queue {} ended unexpectedly",
            self.qid
        ))
    }
}

/// The body of queue `qid`'s thread.
fn queue_thread(
    qid: u16,
    config: QueueConfig,
    commands: Receiver<Command>,
    reports: Sender<Report>,
) {
    pin_to_cpu(usize::from(qid));
    let mut queue = match Queue::new(qid, &config) {
        Ok(queue) => {
            let _ = reports.send(Report::SetUp(Ok(())));
            queue
        }
        Err(e) => {
            let _ = reports.send(Report::SetUp(Err(e)));
            return;
        }
    };
    // A closed channel means start is gone: stop like on Stop.
    while let Ok(command) = commands.recv() {
        match command {
            Command::Register => {
                let _ = reports.send(Report::Registered(queue.register()));
            }
            Command::Serve => {
                drop(commands);
                drop(reports);
                queue.serve(&*config.handler, &config.answered);
                return;
            }
            Command::Stop => return,
        }
    }
}

/// Where an entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EntryState {
    /// Not registered yet.
    Idle,
    /// Held by the kernel (registered or committed, waiting for a request).
    InKernel,
    /// Ours, its request handed to the queue's pool: a worker reads and writes
    /// the buffers until it lists the entry as finished.
    WithWorker,
    /// Finished: the connection ended or the kernel refused it.
    Done,
}

/// One queue: its ring and entries, owned by the queue's thread.
struct Queue {
    /// The queue id (`fuse_uring_cmd_req.qid`).
    qid: u16,
    /// The `/dev/fuse` descriptor the commands go to.
    fd: Arc<OwnedFd>,
    /// The ring. Declared before `entries` so it is closed (cancelling what
    /// the kernel still holds) before their buffers are unmapped.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// The workers answering the requests that may block. Declared before
    /// `entries` so they are joined (done with every buffer) before the
    /// buffers are unmapped; `None` once stopped.
    pool: Option<Pool>,
    /// Where the workers list the entries they answered.
    finished: Arc<Finished>,
    /// The entries' buffers, at fixed addresses for the ring's life.
    entries: Vec<EntryBuffers>,
    /// Where each entry is.
    states: Vec<EntryState>,
    /// Entries not yet done (those with a worker included).
    live: usize,
    /// Entries with a worker.
    outstanding: usize,
    /// Whether the poll on `finished`'s eventfd is in the ring.
    wakeup_armed: bool,
    /// Completions collected but not handled yet (user data, result).
    pending: Vec<(u64, i32)>,
    /// A copy of the request payload, so the reply can be written into the
    /// payload buffer while the handler reads the request.
    scratch: Vec<u8>,
    /// Entries taken from `finished`, kept to reuse the allocation.
    finished_batch: Vec<usize>,
    /// Set once the rings may be in use: buffers the kernel still holds are
    /// then leaked rather than unmapped.
    serving: bool,
}

impl Queue {
    /// Creates the ring, allocates the entries' buffers and starts the pool.
    fn new(qid: u16, config: &QueueConfig) -> io::Result<Queue> {
        let depth = config.depth;
        // Bounded by MAX_DEPTH.
        let sq_size = depth.next_power_of_two() as u32;
        let ring = IoUring::builder().build(sq_size).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating the io_uring of FUSE ring queue {qid}: {e}"),
            )
        })?;
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            entries.push(EntryBuffers::new(config.payload_size).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("allocating the buffers of FUSE ring queue {qid}: {e}"),
                )
            })?);
        }
        let finished = Arc::new(Finished::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating the eventfd of FUSE ring queue {qid}: {e}"),
            )
        })?);
        let pool = Pool::start(qid, &config.handler, &finished)?;
        Ok(Queue {
            qid,
            fd: Arc::clone(&config.fd),
            ring,
            pool: Some(pool),
            finished,
            entries,
            states: vec![EntryState::Idle; depth],
            live: 0,
            outstanding: 0,
            wakeup_armed: false,
            pending: Vec::with_capacity(depth),
            scratch: Vec::new(),
            finished_batch: Vec::with_capacity(depth),
            serving: false,
        })
    }

    /// Registers every entry and applies the acceptance rule (see
    /// [`RingQueues::start`]).
    fn register(&mut self) -> Registration {
        let fd = self.fd.as_raw_fd();
        for (i, entry) in self.entries.iter().enumerate() {
            let sqe = uring_cmd(
                fd,
                CMD_REGISTER,
                cmd_area(0, self.qid),
                Some(entry.iov.as_ptr()),
                i as u64,
            );
            // SAFETY: the iovecs and the buffers they point to live in
            // `self.entries`, which is never resized and outlives the ring.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                // Cannot happen: the submission queue holds `depth` entries.
                return self.registration_failed(io::Error::other(format!(
                    "FUSE ring queue {}: io_uring submission queue full",
                    self.qid
                )));
            }
            self.states[i] = EntryState::InKernel;
            self.live += 1;
        }
        let mut submitted = 0;
        while submitted < self.entries.len() {
            match self.ring.submit() {
                Ok(0) => {
                    return self.registration_failed(io::Error::other(format!(
                        "FUSE ring queue {}: io_uring consumed none of the remaining {} REGISTER commands",
                        self.qid,
                        self.entries.len() - submitted
                    )))
                }
                Ok(n) => submitted += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return self.registration_failed(io::Error::new(
                        e.kind(),
                        format!(
                            "FUSE ring queue {}: submitting REGISTER commands: {e}",
                            self.qid
                        ),
                    ))
                }
            }
        }

        // Rejections complete inline: they are in the completion queue now.
        let mut first_rejection = None;
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in completions {
            if result >= 0 {
                // A request already: the rings are complete and in use.
                self.pending.push((user_data, result));
                continue;
            }
            let Some(i) = self.entry_index(user_data) else {
                continue;
            };
            if self.states[i] == EntryState::InKernel {
                self.states[i] = EntryState::Done;
                self.live -= 1;
            }
            first_rejection.get_or_insert((i, result));
        }
        let accepted = self.live;
        match first_rejection {
            None => {
                debug!(
                    queue = self.qid,
                    entries = accepted,
                    "FUSE ring queue registered"
                );
                Registration {
                    accepted,
                    error: None,
                    kernel_rejected: false,
                }
            }
            Some((i, result)) => {
                let os = io::Error::from_raw_os_error(-result);
                let hint = match -result {
                    libc::EINVAL => {
                        " (is the payload buffer smaller than the connection's max_write and max_pages allow?)"
                    }
                    libc::EOPNOTSUPP => " (is fuse's enable_uring off?)",
                    _ => "",
                };
                Registration {
                    accepted,
                    error: Some(io::Error::new(
                        os.kind(),
                        format!(
                            "FUSE ring queue {}: the kernel rejected REGISTER of entry {i} \
                             ({} byte payload buffer): {os}{hint}",
                            self.qid, self.entries[i].payload_len
                        ),
                    )),
                    kernel_rejected: true,
                }
            }
        }
    }

    /// The outcome of a registration that failed on our side.
    fn registration_failed(&self, error: io::Error) -> Registration {
        Registration {
            accepted: self.live,
            error: Some(error),
            kernel_rejected: false,
        }
    }

    /// The entry a completion's user data names.
    fn entry_index(&self, user_data: u64) -> Option<usize> {
        let i = usize::try_from(user_data)
            .ok()
            .filter(|&i| i < self.entries.len());
        if i.is_none() {
            warn!(
                queue = self.qid,
                user_data, "completion for an unknown FUSE ring entry"
            );
        }
        i
    }

    /// Answers requests until every entry is done: handles all available
    /// completions, then submits all commits with one `submit_and_wait(1)`.
    /// Requests that may block go to the pool; the wakeup completion (user
    /// data [`WAKEUP`]) brings back the entries its workers answered, which
    /// are committed like the others. Returns only once no worker holds an
    /// entry, and stops the pool.
    fn serve(&mut self, handler: &dyn RingHandler, answered: &AnsweredCounter) {
        self.serving = true;
        let mut batch = std::mem::take(&mut self.pending);
        loop {
            for (user_data, result) in batch.drain(..) {
                if user_data == WAKEUP {
                    self.wakeup_armed = false;
                    if result < 0 {
                        self.wakeup_failed(result);
                    }
                    self.collect_finished(answered);
                    continue;
                }
                let Some(i) = self.entry_index(user_data) else {
                    continue;
                };
                if self.states[i] != EntryState::InKernel {
                    warn!(
                        queue = self.qid,
                        entry = i,
                        result,
                        "completion for a FUSE ring entry the kernel does not hold"
                    );
                    continue;
                }
                if result >= 0 {
                    self.take_request(i, handler, answered);
                    continue;
                }
                self.states[i] = EntryState::Done;
                self.live -= 1;
                match -result {
                    libc::ENOTCONN | libc::ENODEV | libc::ECONNABORTED => {
                        debug!(
                            queue = self.qid,
                            entry = i,
                            result,
                            "FUSE ring entry ended with the connection"
                        )
                    }
                    _ => warn!(
                        queue = self.qid,
                        entry = i,
                        error = %io::Error::from_raw_os_error(-result),
                        "FUSE ring entry failed; the queue goes on without it"
                    ),
                }
            }
            if self.live == 0 {
                debug!(queue = self.qid, "FUSE ring queue ended");
                break;
            }
            if self.pool.is_some() && !self.wakeup_armed {
                self.arm_wakeup();
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error!(
                        queue = self.qid,
                        error = %e,
                        "FUSE ring queue stops: io_uring_enter failed; requests it holds wait until the connection is aborted"
                    );
                    break;
                }
            }
            batch.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        }
        self.pending = batch;
        // Joining the workers waits for the requests they still answer (only
        // after an io_uring failure: otherwise they count in `live`). Those
        // entries stay uncommitted; the kernel does not hold them.
        self.stop_pool();
    }

    /// Takes the request the kernel put into entry `i`: hands it to the pool
    /// when the handler says it may block, else answers it here and queues
    /// its COMMIT_AND_FETCH.
    fn take_request(&mut self, i: usize, handler: &dyn RingHandler, answered: &AnsweredCounter) {
        let qid = self.qid;
        let entry = &mut self.entries[i];
        let raw = entry.raw();
        // SAFETY: the kernel handed the entry over with this completion and
        // touches neither buffer until its commit is submitted; no worker
        // holds it (its state is InKernel, not WithWorker).
        let (header, payload) = unsafe { raw.slices() };
        let head = Head::read(qid, header, payload.len());
        if let Some(pool) = &self.pool {
            let request = head.request(header, &payload[..head.payload_sz]);
            let blocking = catch_unwind(AssertUnwindSafe(|| handler.may_block(&request)))
                .unwrap_or_else(|_| {
                    error!(
                        queue = qid,
                        opcode = head.opcode,
                        "FUSE ring handler panicked in may_block; answering inline"
                    );
                    false
                });
            if blocking {
                match pool.send(Job {
                    index: i,
                    head,
                    buffers: raw,
                }) {
                    Ok(()) => {
                        self.states[i] = EntryState::WithWorker;
                        self.outstanding += 1;
                        return;
                    }
                    Err(_) => warn!(
                        queue = qid,
                        opcode = head.opcode,
                        "FUSE ring queue pool gone; answering inline"
                    ),
                }
            }
        }
        answer_entry(qid, &head, header, payload, &mut self.scratch, handler);
        answered.bump();
        self.commit(i, head.commit_id);
    }

    /// Queues entry `i`'s COMMIT_AND_FETCH (its reply is written); an entry
    /// that cannot be committed is lost to the queue.
    fn commit(&mut self, i: usize, commit_id: u64) {
        let sqe = uring_cmd(
            self.fd.as_raw_fd(),
            CMD_COMMIT_AND_FETCH,
            cmd_area(commit_id, self.qid),
            None,
            i as u64,
        );
        if self.push(&sqe) {
            self.states[i] = EntryState::InKernel;
        } else {
            error!(
                queue = self.qid,
                entry = i,
                "FUSE ring queue cannot submit a commit; entry lost"
            );
            self.states[i] = EntryState::Done;
            self.live -= 1;
        }
    }

    /// Pushes `sqe`, submitting what is queued first if the submission queue
    /// is full; false when it still does not fit.
    fn push(&mut self, sqe: &squeue::Entry128) -> bool {
        // SAFETY: the SQEs we push carry no pointers into memory that could go
        // away while the kernel holds them (commits and polls carry none).
        unsafe { self.ring.submission().push(sqe) }.is_ok()
            || (self.ring.submit().is_ok()
                // SAFETY: as above.
                && unsafe { self.ring.submission().push(sqe) }.is_ok())
    }

    /// Queues the one-shot poll on the eventfd the workers signal.
    fn arm_wakeup(&mut self) {
        let sqe: squeue::Entry128 =
            opcode::PollAdd::new(types::Fd(self.finished.eventfd.as_raw_fd()), POLL_IN)
                .build()
                .user_data(WAKEUP)
                .into();
        if self.push(&sqe) {
            self.wakeup_armed = true;
        } else {
            // Not fatal while jobs are outstanding: the next round tries again.
            warn!(
                queue = self.qid,
                "FUSE ring queue cannot queue its wakeup poll; retrying"
            );
        }
    }

    /// The wakeup poll failed (`result`): the queue can no longer learn of
    /// finished jobs while it waits, so it stops its pool (waiting for the
    /// requests it answers) and answers everything inline from now on.
    fn wakeup_failed(&mut self, result: i32) {
        error!(
            queue = self.qid,
            error = %io::Error::from_raw_os_error(-result),
            "FUSE ring queue's wakeup poll failed; answering every request inline from now on"
        );
        self.stop_pool();
    }

    /// Stops the pool: closes its channel and joins the workers, which first
    /// answer what they were given.
    fn stop_pool(&mut self) {
        if let Some(mut pool) = self.pool.take() {
            pool.stop();
        }
    }

    /// Commits every entry the workers finished since the last call.
    fn collect_finished(&mut self, answered: &AnsweredCounter) {
        self.finished.reset_eventfd();
        self.finished.take(&mut self.finished_batch);
        let mut batch = std::mem::take(&mut self.finished_batch);
        for i in batch.drain(..) {
            if self.states.get(i) != Some(&EntryState::WithWorker) {
                warn!(
                    queue = self.qid,
                    entry = i,
                    "a FUSE ring worker finished an entry it was not given"
                );
                continue;
            }
            self.outstanding -= 1;
            answered.bump();
            // SAFETY: the worker is done with the entry (it listed it under
            // `finished`'s lock, which we took since) and the kernel does not
            // hold it until the commit below.
            let (header, _) = unsafe { self.entries[i].raw().slices() };
            let commit_id = read_u64(header, COMMIT_ID_OFFSET);
            self.commit(i, commit_id);
        }
        self.finished_batch = batch;
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Workers first: none may touch an entry once this returns.
        self.stop_pool();
        if !self.serving {
            // The rings never completed: the kernel routed nothing to these
            // entries and cancels them when the ring closes without touching
            // their buffers again.
            return;
        }
        let held = self
            .states
            .iter()
            .filter(|&&s| s == EntryState::InKernel)
            .count();
        if held > 0 {
            // The kernel may still write into them: never unmap them.
            warn!(
                queue = self.qid,
                entries = held,
                "leaking the buffers of FUSE ring entries the kernel still holds"
            );
            for (entry, state) in self.entries.iter_mut().zip(&self.states) {
                if *state == EntryState::InKernel {
                    entry.leak = true;
                }
            }
        }
    }
}

/// The fields of a fetched request's `fuse_in_header` and `ring_ent_in_out`.
#[derive(Clone, Copy, Debug)]
struct Head {
    /// `fuse_in_header.opcode`.
    opcode: u32,
    /// `fuse_in_header.unique`.
    unique: u64,
    /// `fuse_in_header.nodeid`.
    nodeid: u64,
    /// `fuse_in_header.uid`.
    uid: u32,
    /// `fuse_in_header.gid`.
    gid: u32,
    /// `fuse_in_header.pid`.
    pid: u32,
    /// `ring_ent_in_out.commit_id`.
    commit_id: u64,
    /// `ring_ent_in_out.payload_sz`, at most the payload buffer's length.
    payload_sz: usize,
}

impl Head {
    /// Reads the header buffer of queue `qid`'s entry whose payload buffer is
    /// `payload_len` bytes.
    fn read(qid: u16, header: &[u8], payload_len: usize) -> Head {
        let opcode = read_u32(header, 4);
        let mut payload_sz = read_u32(header, PAYLOAD_SZ_OFFSET) as usize;
        if payload_sz > payload_len {
            warn!(
                queue = qid,
                opcode, payload_sz, "FUSE ring request claims more payload than its buffer"
            );
            payload_sz = payload_len;
        }
        Head {
            opcode,
            unique: read_u64(header, 8),
            nodeid: read_u64(header, 16),
            uid: read_u32(header, 24),
            gid: read_u32(header, 28),
            pid: read_u32(header, 32),
            commit_id: read_u64(header, COMMIT_ID_OFFSET),
            payload_sz,
        }
    }

    /// The request, its in-struct from `header` and its payload `payload`.
    fn request<'a>(&self, header: &'a [u8], payload: &'a [u8]) -> RingRequest<'a> {
        RingRequest {
            opcode: self.opcode,
            unique: self.unique,
            nodeid: self.nodeid,
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
            op_in: &header[OP_IN_OFFSET..OP_IN_OFFSET + OP_IN_SIZE],
            payload,
        }
    }
}

/// Answers the request `head` of an entry of queue `qid` through `handler`
/// (EIO if it panics) and writes the reply for its commit: the payload into
/// `payload`, then `fuse_out_header` and `payload_sz` into `header`. The
/// payload is copied to `scratch` first, since the reply overwrites it. Used
/// by the queue thread and the pool's workers alike.
fn answer_entry(
    qid: u16,
    head: &Head,
    header: &mut [u8],
    payload: &mut [u8],
    scratch: &mut Vec<u8>,
    handler: &dyn RingHandler,
) {
    let payload_sz = head.payload_sz;
    if scratch.len() < payload_sz {
        scratch.resize(payload_sz, 0);
    }
    scratch[..payload_sz].copy_from_slice(&payload[..payload_sz]);

    let (len, error) = {
        let request = head.request(header, &scratch[..payload_sz]);
        let mut reply = RingReply::new(payload);
        let handled = catch_unwind(AssertUnwindSafe(|| handler.handle(&request, &mut reply)));
        if handled.is_err() {
            error!(
                queue = qid,
                opcode = head.opcode,
                unique = head.unique,
                "FUSE ring handler panicked; answering EIO"
            );
            reply.error(libc::EIO);
        }
        (reply.len(), reply.error_code())
    };

    // fuse_out_header, then the reply's length for the kernel.
    // `len` fits: it is at most the payload buffer, checked against u32 in start.
    write_u32(header, 0, (OUT_HEADER_SIZE + len) as u32);
    write_u32(header, 4, error as u32);
    write_u64(header, 8, head.unique);
    write_u32(header, PAYLOAD_SZ_OFFSET, len as u32);
}

/// Where a queue's workers list the entries they answered, and the eventfd
/// they signal so the queue thread, waiting in its ring, learns of them.
struct Finished {
    /// Indexes of answered entries, not yet committed.
    list: Mutex<Vec<usize>>,
    /// Written (1) after each push; polled by the queue's ring.
    eventfd: OwnedFd,
}

impl Finished {
    /// An empty list with a fresh non-blocking eventfd.
    fn new() -> io::Result<Finished> {
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Finished {
            list: Mutex::new(Vec::new()),
            // SAFETY: a descriptor we just opened and own alone.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Lists entry `index` as answered and wakes the queue thread.
    fn push(&self, qid: u16, index: usize) {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(index);
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`.
        let n = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // EAGAIN: the counter is at its maximum, so the eventfd is readable anyway.
            if e.kind() != io::ErrorKind::WouldBlock {
                error!(queue = qid, error = %e, "FUSE ring worker cannot wake its queue");
            }
        }
    }

    /// Moves the listed entries into `into` (which the caller left empty).
    fn take(&self, into: &mut Vec<usize>) {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *list, into);
    }

    /// Resets the eventfd's counter (before taking the list, so a push after
    /// the reset makes the next poll fire).
    fn reset_eventfd(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`; non-blocking.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                std::ptr::from_mut(&mut count).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// A request handed to a worker: the entry and where its buffers are.
struct Job {
    /// The entry's index in its queue.
    index: usize,
    /// The request's header fields, read by the queue thread.
    head: Head,
    /// The entry's buffers.
    buffers: RawBuffers,
}

/// The worker threads of one queue, pinned to its CPU, answering the requests
/// that may block.
struct Pool {
    /// Jobs to the workers; `None` once stopped (closing it ends them).
    jobs: Option<Sender<Job>>,
    /// The workers.
    threads: Vec<JoinHandle<()>>,
    /// The queue's id, for the logs.
    qid: u16,
}

impl Pool {
    /// Starts queue `qid`'s [`POOL_SIZE`] workers (`lamina-ring-N-wK`),
    /// answering through `handler` and listing what they answered in `finished`.
    fn start(
        qid: u16,
        handler: &Arc<dyn RingHandler>,
        finished: &Arc<Finished>,
    ) -> io::Result<Pool> {
        let (jobs, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut pool = Pool {
            jobs: Some(jobs),
            threads: Vec::with_capacity(POOL_SIZE),
            qid,
        };
        for k in 0..POOL_SIZE {
            let (rx, handler, finished) = (
                Arc::clone(&job_rx),
                Arc::clone(handler),
                Arc::clone(finished),
            );
            let thread = std::thread::Builder::new()
                .name(format!("lamina-ring-{qid}-w{k}"))
                .spawn(move || worker_thread(qid, &rx, &*handler, &finished))
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("starting worker {k} of FUSE ring queue {qid}: {e}"),
                    )
                })?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Hands `job` to a worker; gives it back if every worker is gone.
    fn send(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Closes the channel and joins the workers (they answer the jobs already
    /// sent first).
    fn stop(&mut self) {
        self.jobs = None;
        for (k, thread) in self.threads.drain(..).enumerate() {
            if thread.join().is_err() {
                error!(queue = self.qid, worker = k, "FUSE ring worker panicked");
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body of a worker of queue `qid`: answers the jobs of `jobs` until the
/// channel closes, listing each answered entry in `finished`.
fn worker_thread(
    qid: u16,
    jobs: &Mutex<Receiver<Job>>,
    handler: &dyn RingHandler,
    finished: &Finished,
) {
    pin_to_cpu(usize::from(qid));
    let mut scratch = Vec::new();
    loop {
        // The lock is held while waiting: the other worker waits for the lock
        // instead, and gets the next job.
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // SAFETY: see `RawBuffers`: the queue thread gave us the entry and
        // touches its buffers again only after we list it in `finished`.
        let (header, payload) = unsafe { job.buffers.slices() };
        answer_entry(qid, &job.head, header, payload, &mut scratch, handler);
        finished.push(qid, job.index);
    }
}

/// The two buffers of one ring entry: a header page (`struct
/// fuse_uring_req_header`) followed by the payload, one anonymous mapping.
struct EntryBuffers {
    /// The mapping's start (the header).
    base: NonNull<u8>,
    /// The mapping's length.
    map_len: usize,
    /// The payload's offset in the mapping (one page).
    payload_offset: usize,
    /// The payload's length.
    payload_len: usize,
    /// `iov[2]` for REGISTER: header, payload.
    iov: [libc::iovec; 2],
    /// Whether the mapping must outlive us (the kernel may still use it).
    leak: bool,
}

impl EntryBuffers {
    /// Maps the header page and a page-aligned payload of `payload_len` bytes.
    fn new(payload_len: usize) -> io::Result<EntryBuffers> {
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let payload_pages = payload_len.div_ceil(page).max(1);
        let map_len = page
            .checked_mul(payload_pages + 1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload size overflows"))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mmap of {map_len} bytes: {e}"),
            ));
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        // SAFETY: page < map_len, within the mapping.
        let payload = unsafe { base.as_ptr().add(page) };
        Ok(EntryBuffers {
            base,
            map_len,
            payload_offset: page,
            payload_len,
            iov: [
                libc::iovec {
                    iov_base: base.as_ptr().cast(),
                    iov_len: HEADER_SIZE,
                },
                libc::iovec {
                    iov_base: payload.cast(),
                    iov_len: payload_len,
                },
            ],
            leak: false,
        })
    }

    /// Where the header and payload buffers are.
    fn raw(&self) -> RawBuffers {
        RawBuffers {
            header: self.base,
            // SAFETY: payload_offset < map_len: within the mapping, not null.
            payload: unsafe { NonNull::new_unchecked(self.base.as_ptr().add(self.payload_offset)) },
            payload_len: self.payload_len,
        }
    }
}

/// The header and payload buffers of one entry, as raw pointers: what a worker
/// needs to answer the entry's request.
#[derive(Clone, Copy)]
struct RawBuffers {
    /// The header buffer, [`HEADER_SIZE`] bytes.
    header: NonNull<u8>,
    /// The payload buffer, `payload_len` bytes.
    payload: NonNull<u8>,
    /// The payload buffer's length.
    payload_len: usize,
}

// SAFETY: the pointers are to an entry's mapping, which stays mapped for as
// long as its queue's workers run (the queue joins them before it unmaps the
// buffers: see `Queue::pool`). Only one thread uses them at a time: the entry
// belongs to us from its completion to its commit, and while a worker holds
// it the queue thread leaves it alone (state `WithWorker`) until the worker
// lists it under `Finished`'s lock, which also orders the worker's writes
// before the queue thread's reads and the commit.
unsafe impl Send for RawBuffers {}

impl RawBuffers {
    /// The header and payload buffers.
    ///
    /// # Safety
    ///
    /// The kernel must not hold the entry (between a completion and the next
    /// command on it), the mapping must be alive, and no other thread may use
    /// the buffers while the slices live.
    unsafe fn slices<'a>(&self) -> (&'a mut [u8], &'a mut [u8]) {
        // SAFETY: both ranges lie within the mapping and do not overlap; the
        // caller guarantees nobody else uses them meanwhile.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.header.as_ptr(), HEADER_SIZE),
                std::slice::from_raw_parts_mut(self.payload.as_ptr(), self.payload_len),
            )
        }
    }
}

impl Drop for EntryBuffers {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: our own mapping, no longer used by anyone.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) } != 0 {
            warn!(error = %io::Error::last_os_error(), "munmap of FUSE ring buffers failed");
        }
    }
}

/// `struct fuse_uring_cmd_req` in the SQE's 80-byte command area.
fn cmd_area(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// An `IORING_OP_URING_CMD` SQE for `/dev/fuse` descriptor `fd`. With `iov`
/// (REGISTER) it points `addr` at the two iovecs and sets `len` to 2, which the
/// io-uring crate's builder cannot, so it is patched into the raw SQE.
fn uring_cmd(
    fd: RawFd,
    cmd_op: u32,
    cmd: [u8; 80],
    iov: Option<*const libc::iovec>,
    user_data: u64,
) -> squeue::Entry128 {
    let mut entry = opcode::UringCmd80::new(types::Fd(fd), cmd_op)
        .cmd(cmd)
        .addr(iov.map(|p| p as u64))
        .build()
        .user_data(user_data);
    if iov.is_some() {
        let len: u32 = 2;
        // SAFETY: Entry128 is repr(C) and starts with the 64-byte io_uring_sqe,
        // whose u32 `len` sits at byte 24.
        unsafe {
            std::ptr::from_mut(&mut entry)
                .cast::<u8>()
                .add(SQE_LEN_OFFSET)
                .cast::<u32>()
                .write_unaligned(len);
        }
    }
    entry
}

#[cfg(test)]
mod tests;
