//! How the FUSE frontend mounts and serves a stack.

use std::path::PathBuf;
use std::time::Duration;

use crate::ids::IdMap;

/// Options of a FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseOptions {
    /// Serve in the calling process until the filesystem is unmounted (or the
    /// process gets `SIGTERM`/`SIGINT`) instead of forking a daemon.
    pub foreground: bool,
    /// Where the daemon writes its log (stdout and stderr are redirected there);
    /// `None` discards it.
    pub log: Option<PathBuf>,
    /// Let every user reach the mount (`allow_other`), e.g. a container runtime
    /// running as another uid. Permissions are checked by the kernel
    /// (`default_permissions`) either way.
    pub allow_other: bool,
    /// Number of threads answering requests (at least 1).
    pub threads: usize,
    /// Use FUSE passthrough for files that live in a real file when the kernel
    /// offers it (data then never passes through the daemon).
    pub passthrough: bool,
    /// How long the kernel may cache names and attributes. `None` picks one
    /// second for writable mounts and a minute for read-only ones.
    pub cache_timeout: Option<Duration>,
    /// The source name shown in `/proc/self/mountinfo`.
    pub fsname: String,
    /// How long [`crate::FuseFrontend`] waits for a daemon to answer on its mount.
    pub start_timeout: Duration,
    /// Let the kernel check permissions against the presented owners and modes
    /// (`default_permissions`). Only private views read by their owner (a diff's
    /// views in an unprivileged store, which must read every file whatever its
    /// mode) turn it off.
    pub check_permissions: bool,
    /// Like overlayfs's `volatile`: skip every flush of the upper to stable
    /// storage (copy-ups are not synced, `fsync` does nothing). Faster; after a
    /// crash of the host the container's upper must be thrown away.
    pub volatile: bool,
    /// Uid mapping between stored and presented owners (fuse-overlayfs's
    /// `uidmapping`); empty shows ids as stored.
    pub uid_map: IdMap,
    /// Gid mapping (fuse-overlayfs's `gidmapping`).
    pub gid_map: IdMap,
    /// Answer requests through FUSE over io_uring — one queue per CPU, served
    /// on the CPU that asked — when the kernel offers it (Linux 6.14+ with the
    /// `fuse` module's `enable_uring` set); `/dev/fuse` otherwise.
    pub io_uring: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            foreground: false,
            log: None,
            allow_other: true,
            threads: 4,
            passthrough: true,
            cache_timeout: None,
            fsname: "lamina".to_string(),
            start_timeout: Duration::from_secs(30),
            check_permissions: true,
            volatile: false,
            uid_map: IdMap::default(),
            gid_map: IdMap::default(),
            io_uring: true,
        }
    }
}

impl FuseOptions {
    /// The entry and attribute timeout for a mount that is writable or not.
    pub(crate) fn ttl(&self, writable: bool) -> Duration {
        self.cache_timeout.unwrap_or(if writable {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        })
    }
}
