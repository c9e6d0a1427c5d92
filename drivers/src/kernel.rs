//! The kernel frontend: performs [`MountSpec::Bind`] and [`MountSpec::Overlay`]
//! with the kernel's own mounts.
//!
//! Overlay mounts use the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`)
//! and pass each lower directory with `lowerdir+`, so the number of layers is not
//! limited by the page-sized option string of `mount(2)`. Where the kernel lacks
//! `lowerdir+` (before 6.8) the classic option string is used.
//!
//! Squashfs layers arrive as images ([`MountSpec::Overlay`]'s `images`): each is
//! mounted read-only at its directory through an auto-clearing loop device
//! unless that directory already holds it (layer mounts are shared by every
//! overlay stacking the layer; `MountTable::put` unmounts them when the last
//! user goes).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{DriverError, Result};
use crate::mount::{Frontend, FrontendKind, MountSpec};
use crate::mount_table::MountInfo;
use crate::ownership::Ownership;

/// The most lower layers the kernel's overlayfs stacks (`OVL_MAX_STACK`).
pub const OVERLAY_MAX_LOWERS: usize = 500;

/// Mounts with the kernel: bind mounts and overlayfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelFrontend;

impl Frontend for KernelFrontend {
    fn kind(&self) -> FrontendKind {
        FrontendKind::Kernel
    }

    fn mount(&self, spec: MountSpec, target: &Path) -> Result<Option<u32>> {
        match spec {
            MountSpec::Bind { source, read_only } => bind_mount(&source, target, read_only)?,
            MountSpec::Overlay {
                images,
                lowers,
                upper,
                options,
                read_only,
            } => {
                let attached = mount_layer_images(&images)?;
                if let Err(e) = overlay_mount_with(
                    &lowers,
                    upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path())),
                    &options,
                    target,
                    read_only || upper.is_none(),
                ) {
                    release_layer_mounts(&attached);
                    return Err(e);
                }
            }
            MountSpec::Aufs { branches } => aufs_mount(&branches, target)?,
            MountSpec::Stack { .. } => Err(DriverError::Unsupported(
                "a layer stack is served by the FUSE frontend, not the kernel (use --frontend fuse)".into(),
            ))?,
        }
        Ok(None)
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        unmount(target)
    }
}

/// Mounts each `(image, directory)` whose directory does not hold a squashfs
/// mount yet; returns the directories it mounted. On error nothing it mounted stays.
pub fn mount_layer_images(images: &[(PathBuf, PathBuf)]) -> Result<Vec<PathBuf>> {
    let mut attached = Vec::new();
    for (image, dir) in images {
        if MountInfo::read()?.fstype(dir) == Some("squashfs") {
            continue;
        }
        let made = std::fs::create_dir_all(dir)
            .map_err(|e| mount_err(dir, "create layer mount directory", e))
            .and_then(|()| crate::squashfs::loopdev::mount_image(image, dir));
        if let Err(e) = made {
            release_layer_mounts(&attached);
            return Err(e);
        }
        attached.push(dir.clone());
    }
    Ok(attached)
}

/// Unmounts layer mounts (last first); a busy one is left and logged.
pub fn release_layer_mounts(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        if let Err(e) = unmount(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount a layer image");
        }
    }
}

/// Mounts a kernel aufs union of `branches` (top first, `true` = writable) on
/// `target`: `mount -t aufs -o br=UPPER=rw:LOWER=ro+wh:... none TARGET`.
pub fn aufs_mount(branches: &[(std::path::PathBuf, bool)], target: &Path) -> Result<()> {
    if !kernel_has_filesystem("aufs") {
        return Err(DriverError::Unsupported(
            "this kernel has no aufs (see /proc/filesystems); --frontend fuse works".into(),
        ));
    }
    let mut data = b"br=".to_vec();
    for (i, (dir, writable)) in branches.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(dir.as_os_str().as_bytes());
        data.extend_from_slice(if *writable { b"=rw" } else { b"=ro+wh" });
    }
    let read_only = !branches.iter().any(|(_, w)| *w);
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let data = cstring(&data)?;
    mount(
        Some("none"),
        target,
        Some("aufs"),
        flags,
        Some(data.as_c_str()),
    )
    .map_err(|e| mount_err(target, "aufs", e))
}

/// Environment knob: when set to `1`, Lamina acts as if the kernel had no
/// overlayfs (tests use it to prove the fallback to other frontends).
pub const HIDE_KERNEL_OVERLAY_ENV: &str = "LAMINA_HIDE_KERNEL_OVERLAY";

/// Whether kernel overlay mounts may be used here, or why not.
pub fn overlay_usable() -> std::result::Result<(), String> {
    if std::env::var(HIDE_KERNEL_OVERLAY_ENV).as_deref() == Ok("1") {
        return Err(format!(
            "kernel overlayfs hidden by {HIDE_KERNEL_OVERLAY_ENV}=1"
        ));
    }
    if !kernel_has_filesystem("overlay") {
        return Err("this kernel has no overlayfs (see /proc/filesystems)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("kernel overlay mounts need root here; use --frontend fuse".into());
    }
    Ok(())
}

/// Whether kernel mounts can serve a store that keeps owners as `ownership`
/// says, for this process: they need root, and they cannot present owners an
/// unprivileged store keeps in xattrs.
pub fn kernel_mounts_usable(ownership: Ownership) -> std::result::Result<(), String> {
    if !ownership.is_native() {
        return Err(
            "this store belongs to an unprivileged user (owners are kept in \
             user.containers.override_stat xattrs, which only the FUSE frontend presents); \
             use --frontend fuse"
                .into(),
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("kernel mounts need root here; use --frontend fuse".into());
    }
    Ok(())
}

/// Whether the running kernel lists `fstype` in `/proc/filesystems`.
pub fn kernel_has_filesystem(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        })
        .unwrap_or(false)
}

fn mount_err(target: &Path, what: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::Mount {
        target: target.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Bind-mounts `source` on `target`, read-only if asked.
pub fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err(target, &format!("bind mount of {}", source.display()), e))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(mount_err(target, "read-only remount", e));
        }
    }
    Ok(())
}

/// How long an unmount retries while the target is busy. A mount is briefly
/// busy after its last user let go: a file's final release can still be in
/// flight, or a process forked at that moment holds a descriptor until it execs
/// (this can take seconds on a loaded machine).
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// `umount2(target, 0)`, retried while it fails with `EBUSY` for up to five seconds.
pub fn umount_retrying_busy(target: &Path) -> nix::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_RETRY;
    loop {
        match umount2(target, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Unmounts `target`; a dead FUSE mount (ENOTCONN) is detached lazily.
pub fn unmount(target: &Path) -> Result<()> {
    match umount_retrying_busy(target) {
        Ok(()) => Ok(()),
        // SAFETY: geteuid has no preconditions.
        Err(nix::errno::Errno::EPERM) if unsafe { libc::geteuid() } != 0 => {
            // An unprivileged user's own FUSE mounts come off through the setuid helper.
            fusermount_unmount(target)
        }
        Err(nix::errno::Errno::ENOTCONN) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(|e| mount_err(target, "lazy unmount", e))
        }
        Err(nix::errno::Errno::EBUSY) => Err(mount_err(
            target,
            "unmount",
            "target is busy (a process has files open or its working directory there)",
        )),
        Err(nix::errno::Errno::EINVAL) => Err(mount_err(target, "unmount", "not a mount point")),
        Err(e) => Err(mount_err(target, "unmount", e)),
    }
}

/// Detaches `target` lazily, best effort: it disappears now and goes away for
/// good once nobody uses it any more (`umount2(MNT_DETACH)` as root,
/// `fusermount3 -u -z` otherwise).
pub fn detach(target: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    } else {
        let _ = std::process::Command::new(FUSERMOUNT)
            .args(["-u", "-z", "--"])
            .arg(target)
            .output();
    }
}

/// The setuid helper that mounts and unmounts FUSE filesystems for unprivileged users.
pub const FUSERMOUNT: &str = "fusermount3";

/// Whether `path` is a FUSE mount whose server is gone: `ENOTCONN`, or for a
/// request caught in the server's end `ECONNABORTED` (queued on `/dev/fuse`)
/// or `ECANCELED` (queued on an io_uring queue).
pub fn server_gone(path: &Path) -> bool {
    matches!(
        std::fs::metadata(path).map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED))
    )
}

/// Unmounts the calling user's FUSE mount `target` with `fusermount3 -u`
/// (lazily when its server is gone).
pub fn fusermount_unmount(target: &Path) -> Result<()> {
    let dead = server_gone(target);
    let mut command = std::process::Command::new(FUSERMOUNT);
    command.arg("-u");
    if dead {
        command.arg("-z");
    }
    let output = command.arg("--").arg(target).output().map_err(|e| {
        mount_err(
            target,
            "unmount",
            format!("cannot run {FUSERMOUNT} (install the fuse3 package): {e}"),
        )
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = if stderr.contains("busy") {
        "target is busy (a process has files open or its working directory there)".to_string()
    } else {
        format!("{FUSERMOUNT} -u failed: {}", stderr.trim())
    };
    Err(mount_err(target, "unmount", reason))
}

fn cstring(s: impl AsRef<[u8]>) -> Result<CString> {
    CString::new(s.as_ref()).map_err(|_| DriverError::Other("path contains a NUL byte".into()))
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// A filesystem context opened with `fsopen`.
struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    fn open(fstype: &CStr) -> std::io::Result<Self> {
        // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us.
        Ok(FsContext {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    fn set(&self, key: &str, value: Option<&[u8]>) -> std::io::Result<()> {
        let key = CString::new(key).expect("option keys have no NUL");
        let value = value
            .map(|v| CString::new(v).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL)));
        let value = value.transpose()?;
        let (cmd, ptr) = match &value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: key and value are valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key.as_ptr(),
                ptr,
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn create_and_mount(self, read_only: bool, target: &Path) -> std::io::Result<()> {
        // SAFETY: plain syscalls on descriptors we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let attrs = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
        // SAFETY: as above.
        let mfd = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        if mfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
        let target = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let empty = c"";
        // SAFETY: valid descriptors and NUL-terminated strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the kernel's messages about the last failure from the context fd.
    fn messages(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.push(
                String::from_utf8_lossy(&buf[..n as usize])
                    .trim()
                    .to_string(),
            );
        }
        out.join("; ")
    }
}

/// Mounts an overlay of `lowers` (top first) with an optional upper/work pair on
/// `target`; read-write when there is an upper.
pub fn overlay_mount(
    lowers: &[std::path::PathBuf],
    upper: Option<(&Path, &Path)>,
    options: &[String],
    target: &Path,
) -> Result<()> {
    overlay_mount_with(lowers, upper, options, target, upper.is_none())
}

/// Mounts an overlay like [`overlay_mount`], read-only if asked even with an
/// upper (the kernel then follows the upper's index without writing).
pub fn overlay_mount_with(
    lowers: &[std::path::PathBuf],
    upper: Option<(&Path, &Path)>,
    options: &[String],
    target: &Path,
    read_only: bool,
) -> Result<()> {
    if lowers.is_empty() {
        return Err(mount_err(target, "overlay", "no lower layers"));
    }
    if lowers.len() > OVERLAY_MAX_LOWERS {
        return Err(DriverError::Unsupported(format!(
            "the image has {} layers; the kernel's overlayfs stacks at most {OVERLAY_MAX_LOWERS} (use --frontend fuse)",
            lowers.len()
        )));
    }
    let ctx = FsContext::open(c"overlay").map_err(|e| mount_err(target, "fsopen overlay", e))?;
    let fail = |ctx: &FsContext, what: &str, e: std::io::Error| {
        let detail = ctx.messages();
        if detail.is_empty() {
            mount_err(target, what, e)
        } else {
            mount_err(target, what, format!("{e} ({detail})"))
        }
    };
    ctx.set("source", Some(b"lamina"))
        .map_err(|e| fail(&ctx, "overlay source", e))?;
    if let Err(e) = ctx.set("lowerdir+", Some(lowers[0].as_os_str().as_bytes())) {
        if e.raw_os_error() == Some(libc::EINVAL) {
            // Kernels before 6.8 have no `lowerdir+`: fall back to the option string.
            return overlay_mount_legacy(lowers, upper, options, target, read_only);
        }
        return Err(fail(
            &ctx,
            &format!("overlay lower {}", lowers[0].display()),
            e,
        ));
    }
    for lower in &lowers[1..] {
        ctx.set("lowerdir+", Some(lower.as_os_str().as_bytes()))
            .map_err(|e| fail(&ctx, &format!("overlay lower {}", lower.display()), e))?;
    }
    if let Some((upper, work)) = upper {
        ctx.set("upperdir", Some(upper.as_os_str().as_bytes()))
            .map_err(|e| fail(&ctx, "overlay upperdir", e))?;
        ctx.set("workdir", Some(work.as_os_str().as_bytes()))
            .map_err(|e| fail(&ctx, "overlay workdir", e))?;
    }
    for opt in options {
        let r = match opt.split_once('=') {
            Some((k, v)) => ctx.set(k, Some(v.as_bytes())),
            None => ctx.set(opt, None),
        };
        r.map_err(|e| fail(&ctx, &format!("overlay option {opt}"), e))?;
    }
    let messages = ctx.fd.try_clone().ok().map(|fd| FsContext { fd });
    ctx.create_and_mount(read_only, target)
        .map_err(|e| match &messages {
            Some(m) => fail(m, "overlay", e),
            None => mount_err(target, "overlay", e),
        })
}

fn overlay_mount_legacy(
    lowers: &[std::path::PathBuf],
    upper: Option<(&Path, &Path)>,
    options: &[String],
    target: &Path,
    read_only: bool,
) -> Result<()> {
    let mut data = Vec::new();
    data.extend_from_slice(b"lowerdir=");
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        for &b in lower.as_os_str().as_bytes() {
            if b == b':' || b == b',' || b == b'\\' {
                data.push(b'\\');
            }
            data.push(b);
        }
    }
    if let Some((u, w)) = upper {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(u.as_os_str().as_bytes());
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(w.as_os_str().as_bytes());
    }
    for opt in options {
        data.push(b',');
        data.extend_from_slice(opt.as_bytes());
    }
    let page = 4096;
    if data.len() >= page {
        return Err(DriverError::Unsupported(format!(
            "overlay mount options are {} bytes, over this kernel's {page}-byte limit (use --frontend fuse)",
            data.len()
        )));
    }
    let data = cstring(&data)?;
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        Some("lamina"),
        target,
        Some("overlay"),
        flags,
        Some(data.as_c_str()),
    )
    .map_err(|e| mount_err(target, "overlay", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privileged() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn overlay_of_two_lowers_shows_the_top_one_first() {
        if !privileged() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, b, m) = (t.path().join("a"), t.path().join("b"), t.path().join("m"));
        for d in [&a, &b, &m] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(a.join("f"), "top").unwrap();
        std::fs::write(b.join("f"), "bottom").unwrap();
        std::fs::write(b.join("g"), "only-bottom").unwrap();
        overlay_mount(&[a.clone(), b.clone()], None, &[], &m).unwrap();
        let top = std::fs::read_to_string(m.join("f"));
        let g = std::fs::read_to_string(m.join("g"));
        let write = std::fs::write(m.join("new"), "x");
        unmount(&m).unwrap();
        assert_eq!(top.unwrap(), "top");
        assert_eq!(g.unwrap(), "only-bottom");
        assert!(write.is_err(), "a lower-only overlay is read-only");
    }

    #[test]
    fn read_only_bind_refuses_writes() {
        if !privileged() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (s, m) = (t.path().join("s"), t.path().join("m"));
        std::fs::create_dir(&s).unwrap();
        std::fs::create_dir(&m).unwrap();
        std::fs::write(s.join("f"), "x").unwrap();
        bind_mount(&s, &m, true).unwrap();
        let read = std::fs::read_to_string(m.join("f"));
        let write = std::fs::write(m.join("g"), "y");
        unmount(&m).unwrap();
        assert_eq!(read.unwrap(), "x");
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
    }
}
