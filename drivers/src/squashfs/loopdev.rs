//! Loop devices for image mounts: set up by Lamina through `/dev/loop-control`
//! (`LOOP_CTL_GET_FREE`) and `LOOP_CONFIGURE`, read-only and with
//! `LO_FLAGS_AUTOCLEAR`, so a device disappears by itself once the filesystem
//! mounted from it is unmounted (or, when the mount fails, once Lamina closes it).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, MsFlags};

use crate::error::{DriverError, Result};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached, read-only, auto-clearing loop device, held open.
#[derive(Debug)]
pub struct LoopDevice {
    /// Held open so the device cannot auto-clear before a mount uses it.
    _device: File,
    path: PathBuf,
}

impl LoopDevice {
    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether loop devices can be set up here (`/dev/loop-control` exists).
pub fn available() -> std::result::Result<(), String> {
    if Path::new(LOOP_CONTROL).exists() {
        Ok(())
    } else {
        Err(format!(
            "{LOOP_CONTROL} is missing (no loop device support)"
        ))
    }
}

/// Attaches `image` to a free loop device, read-only with autoclear.
pub fn attach_read_only(image: &Path) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(LOOP_CONTROL)?;
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    };
    let name = image.as_os_str().as_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // Another process may take the free device between the two calls: retry.
    for _ in 0..64 {
        // SAFETY: an ioctl without argument on the control device we opened.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = match open_device(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` we own for the call.
        let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r == 0 {
            return Ok(LoopDevice {
                _device: device,
                path,
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ResourceBusy,
        "no free loop device after 64 attempts",
    ))
}

/// Opens a loop device node, waiting briefly for it to appear (devtmpfs creates
/// it when `LOOP_CTL_GET_FREE` adds a device).
fn open_device(path: &Path) -> io::Result<File> {
    let mut waited = Duration::ZERO;
    loop {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && waited < Duration::from_millis(500) =>
            {
                std::thread::sleep(Duration::from_millis(10));
                waited += Duration::from_millis(10);
            }
            other => return other,
        }
    }
}

/// Mounts squashfs image `image` read-only at `target` through a fresh loop
/// device; the device goes away by itself when `target` is unmounted.
pub fn mount_image(image: &Path, target: &Path) -> Result<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| DriverError::Mount {
        target: target.to_path_buf(),
        reason: format!("{what} of {}: {e}", image.display()),
    };
    let device = attach_read_only(image).map_err(|e| fail("loop device", &e))?;
    mount(
        Some(device.path()),
        target,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| fail("squashfs mount", &e))?;
    tracing::debug!(image = %image.display(), device = %device.path().display(), target = %target.display(), "mounted image");
    // Closing the device now leaves the mount as its only user: autoclear
    // detaches it when the mount goes.
    drop(device);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
