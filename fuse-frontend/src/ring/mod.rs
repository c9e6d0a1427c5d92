//! FUSE over io_uring (Linux 6.14+, `fuse.enable_uring=Y`): one queue per
//! possible CPU, each served by a thread pinned to that CPU, so a request is
//! answered on the CPU that asked it instead of waking a server thread on
//! another one. Requests that may block (copy-ups, syncs) go to a small pool
//! of workers pinned to the same CPU, so they do not hold up the queue's
//! other requests. Most requests arrive here once every queue is registered;
//! `FORGET` and `INTERRUPT` still come through `/dev/fuse` (fuser's threads).
//!
//! [`queues`] drives the rings (registration, fetch/commit, teardown);
//! [`dispatch`] decodes a request, answers it from the merged view and
//! encodes the reply.

pub(crate) mod dispatch;
pub(crate) mod queues;

/// One request fetched from a ring entry.
pub(crate) struct RingRequest<'a> {
    /// `fuse_in_header.opcode`.
    pub opcode: u32,
    /// `fuse_in_header.unique`.
    pub unique: u64,
    /// `fuse_in_header.nodeid`.
    pub nodeid: u64,
    /// `fuse_in_header.uid`.
    pub uid: u32,
    /// `fuse_in_header.gid`.
    pub gid: u32,
    /// `fuse_in_header.pid`.
    pub pid: u32,
    /// The opcode's fixed in-struct (the request's first argument), zero-padded
    /// to the header area's 128 bytes; empty-argument opcodes leave it zeroed.
    pub op_in: &'a [u8],
    /// The other arguments (names, write data), exactly `payload_sz` bytes.
    pub payload: &'a [u8],
}

/// The reply to one request, written into the entry's payload buffer.
pub(crate) struct RingReply<'a> {
    buf: &'a mut [u8],
    len: usize,
    error: i32,
}

impl<'a> RingReply<'a> {
    /// A reply writing into `buf` (the entry's payload buffer).
    pub fn new(buf: &'a mut [u8]) -> RingReply<'a> {
        RingReply {
            buf,
            len: 0,
            error: 0,
        }
    }

    /// Answers with `errno` (positive) and no data.
    pub fn error(&mut self, errno: i32) {
        self.error = -errno.abs();
        self.len = 0;
    }

    /// Appends `bytes` to the reply; false (nothing appended) when they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > self.buf.len() {
            return false;
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        true
    }

    /// Bytes the reply may still take.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// The negative errno (0 on success) for `fuse_out_header.error`.
    pub fn error_code(&self) -> i32 {
        self.error
    }

    /// The reply's length (`payload_sz`); 0 for an error.
    pub fn len(&self) -> usize {
        if self.error != 0 {
            0
        } else {
            self.len
        }
    }
}

/// Answers requests fetched from the rings. Called concurrently from every
/// queue's thread and its workers.
pub(crate) trait RingHandler: Send + Sync + 'static {
    /// Answers `req` into `reply`. Requests that need no answer (`FORGET`)
    /// never reach the rings.
    fn handle(&self, req: &RingRequest<'_>, reply: &mut RingReply<'_>);

    /// Whether answering `req` may take long (a copy-up, an fsync): such a
    /// request is answered by one of its queue's worker threads (pinned to
    /// the same CPU) while the queue thread goes on answering the others, at
    /// the cost of a local wakeup each way. Asked on the queue thread for
    /// every request before it is answered, so it must be cheap and never
    /// block; `req.payload` is then the ring buffer itself, not a copy.
    /// The default answers everything on the queue thread.
    fn may_block(&self, req: &RingRequest<'_>) -> bool {
        let _ = req;
        false
    }
}

/// The native-endian u32 at `at` in `buf`; 0 past its end.
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// The native-endian u64 at `at` in `buf`; 0 past its end.
pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}

/// Writes `value` native-endian at `at` in `buf`.
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// Writes `value` native-endian at `at` in `buf`.
pub(crate) fn write_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}
