//! Counters of what a mount's server has done, to see whether file data goes
//! through passthrough or through the daemon.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the server of a mount has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Read requests the server answered (passthrough reads never reach it).
    pub reads: u64,
    /// Write requests the server answered (passthrough writes never reach it).
    pub writes: u64,
    /// Objects copied up into the upper directory.
    pub copy_ups: u64,
    /// Bytes of file data copy-ups asked the upper's filesystem to copy (a
    /// reflink counts its length too: the filesystem shares the blocks).
    pub copy_up_bytes: u64,
    /// Flushes of the upper to stable storage (copy-ups, `fsync`, `fsyncdir`);
    /// none on a volatile mount.
    pub syncs: u64,
    /// Opens answered with passthrough to a backing file.
    pub passthrough_opens: u64,
    /// Opens served through the kernel's page cache and the server.
    pub cached_opens: u64,
    /// Opens served with direct I/O through the server.
    pub direct_opens: u64,
    /// Requests answered through FUSE over io_uring (the rest came through
    /// `/dev/fuse`).
    pub ring_requests: u64,
}

/// The live counters behind [`ServeStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub copy_ups: AtomicU64,
    pub copy_up_bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub passthrough_opens: AtomicU64,
    pub cached_opens: AtomicU64,
    pub direct_opens: AtomicU64,
    pub ring_requests: AtomicU64,
}

impl Counters {
    /// Counts one event.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> ServeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServeStats {
            reads: get(&self.reads),
            writes: get(&self.writes),
            copy_ups: get(&self.copy_ups),
            copy_up_bytes: get(&self.copy_up_bytes),
            syncs: get(&self.syncs),
            passthrough_opens: get(&self.passthrough_opens),
            cached_opens: get(&self.cached_opens),
            direct_opens: get(&self.direct_opens),
            ring_requests: get(&self.ring_requests),
        }
    }
}
