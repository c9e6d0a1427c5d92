//! Mounting without privileges: `fusermount3`, the setuid helper of the fuse3
//! package, opens `/dev/fuse`, mounts it on the target for the calling user and
//! hands the open device back over a socket (`_FUSE_COMMFD`, `SCM_RIGHTS`).

use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use drivers::kernel::FUSERMOUNT;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// The environment variable naming the socket the helper answers on.
const COMM_ENV: &str = "_FUSE_COMMFD";

/// Mounts a FUSE filesystem on `target` with mount `options` through
/// `fusermount3` and returns the open `/dev/fuse` descriptor serving it.
pub(crate) fn mount(target: &Path, options: &[String]) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let mut command = Command::new(FUSERMOUNT);
    command
        .arg("-o")
        .arg(options.join(","))
        .arg("--")
        .arg(target)
        .env(COMM_ENV, their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(their_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(their_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {FUSERMOUNT} (install the fuse3 package): {e}"),
        )
    })?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait()?;
    match received {
        Ok(fd) if status.success() => Ok(fd),
        Ok(_) | Err(_) => Err(io::Error::other(format!(
            "{FUSERMOUNT} failed ({status}): {}",
            stderr.trim()
        ))),
    }
}

/// Receives the descriptor the helper sends.
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let msg = loop {
        match recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => break msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the helper sent no descriptor",
    ))
}

/// Whether the user may pass `allow_other` (`user_allow_other` in `/etc/fuse.conf`).
pub(crate) fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .map(|text| {
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .any(|l| l == "user_allow_other")
        })
        .unwrap_or(false)
}
