//! Backing files registered with the kernel for FUSE passthrough.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use fuser::BackingId;
use tracing::debug;

/// A file the kernel reads and writes directly for passthrough opens of an
/// inode; the kernel forgets it when this is dropped.
#[derive(Debug)]
pub(crate) enum Backing {
    /// Registered through a reply on `/dev/fuse` (fuser's transport).
    Session(BackingId),
    /// Registered with an ioctl on the connection's device (the io_uring
    /// transport, whose replies carry the raw id).
    Device {
        /// The connection's `/dev/fuse` descriptor.
        dev: Arc<OwnedFd>,
        /// The kernel's id of the backing file.
        id: u32,
    },
}

nix::ioctl_write_ptr!(fuse_dev_ioc_backing_close, 229, 2, u32);

impl Backing {
    /// Registers `file` with the connection behind `dev`.
    pub fn register(dev: &Arc<OwnedFd>, file: &std::fs::File) -> std::io::Result<Backing> {
        let id = BackingId::create_raw(dev.as_ref(), file)?;
        Ok(Backing::Device {
            dev: dev.clone(),
            id,
        })
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Backing::Device { dev, id } = self {
            // SAFETY: FUSE_DEV_IOC_BACKING_CLOSE reads one u32 from a valid pointer.
            if let Err(e) = unsafe { fuse_dev_ioc_backing_close(dev.as_raw_fd(), &*id) } {
                debug!(error = %e, id = *id, "closing a passthrough backing file");
            }
        }
    }
}
