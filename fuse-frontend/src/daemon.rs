//! The mount daemon: a double fork detaches a process that mounts and serves
//! the stack; it reports its pid and whether the mount succeeded through a
//! pipe, and the caller returns once the mount answers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drivers::{DriverError, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::merged::Merged;
use crate::mount::{serve, unmount, POLL_INTERVAL};
use crate::options::FuseOptions;

fn mount_error(target: &Path, reason: impl std::fmt::Display) -> DriverError {
    DriverError::Mount {
        target: target.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Forks a daemon serving `merged` on `target` and returns its pid once the
/// mount answers. The calling process must be single-threaded.
pub(crate) fn start(merged: Merged, target: &Path, options: &FuseOptions) -> Result<u32> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| mount_error(target, format!("pipe: {e}")))?;
    // SAFETY: the caller is single-threaded (documented on `FuseFrontend::mount`);
    // the child only continues this program's own code.
    match unsafe { fork() }.map_err(|e| mount_error(target, format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            // SAFETY: as above; the intermediate process exits right away.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => daemon_main(merged, target, options, write_end),
                Ok(ForkResult::Parent { .. }) => {
                    // SAFETY: leaving without running destructors shared with the daemon.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    let mut report = File::from(write_end);
                    let _ = writeln!(report, "error fork: {e}");
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            drop(merged);
            let _ = waitpid(child, None);
            let (pid, outcome) = read_report(read_end, options.start_timeout);
            match (pid, outcome) {
                (Some(pid), Ok(())) => {
                    let dead = || kill(Pid::from_raw(pid as i32), None).is_err() || is_zombie(pid);
                    if let Err(e) = wait_answering(target, options.start_timeout, dead) {
                        stop(pid, target);
                        return Err(e);
                    }
                    Ok(pid)
                }
                (pid, Err(reason)) => {
                    if let Some(pid) = pid {
                        stop(pid, target);
                    }
                    let log = options
                        .log
                        .as_ref()
                        .map(|l| format!(" (daemon log: {})", l.display()))
                        .unwrap_or_default();
                    Err(mount_error(target, format!("{reason}{log}")))
                }
                (None, Ok(())) => Err(mount_error(target, "the daemon did not report its pid")),
            }
        }
    }
}

/// Kills a daemon that failed to start and removes whatever it mounted.
fn stop(pid: u32, target: &Path) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = unmount(target);
}

/// Reads the daemon's report: `pid N`, then `ok` or `error MESSAGE`.
fn read_report(
    read_end: OwnedFd,
    timeout: Duration,
) -> (Option<u32>, std::result::Result<(), String>) {
    let deadline = Instant::now() + timeout;
    let mut file = File::from(read_end);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&text);
    let mut pid = None;
    let mut outcome = Err("the daemon exited without reporting (timed out or crashed)".to_string());
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("pid ") {
            pid = n.trim().parse().ok();
        } else if line == "ok" {
            outcome = Ok(());
        } else if let Some(message) = line.strip_prefix("error ") {
            outcome = Err(message.to_string());
        }
    }
    (pid, outcome)
}

/// The daemon: detaches from the terminal and working directory, sends its log
/// where asked, then mounts and serves until unmounted or stopped by a signal.
fn daemon_main(merged: Merged, target: &Path, options: &FuseOptions, report: OwnedFd) -> ! {
    let mut report = Some(File::from(report));
    let pid = std::process::id();
    if let Some(r) = report.as_mut() {
        let _ = writeln!(r, "pid {pid}");
    }
    let target = absolute(target);
    let fail = |report: &mut Option<File>, message: String| -> ! {
        if let Some(r) = report.as_mut() {
            let _ = writeln!(r, "error {message}");
        }
        // SAFETY: leaving without unwinding into the caller's stack frames.
        unsafe { libc::_exit(1) }
    };
    if let Err(e) = redirect_output(options.log.as_deref()) {
        fail(&mut report, format!("opening the daemon log: {e}"));
    }
    let _ = std::env::set_current_dir("/");
    log_line(format_args!(
        "lamina FUSE daemon {pid} mounting {}",
        target.display()
    ));
    let result = serve(merged, &target, options, |outcome| {
        if let Some(mut r) = report.take() {
            let _ = match outcome {
                Ok(()) => writeln!(r, "ok"),
                Err(message) => writeln!(r, "error {}", message.replace('\n', " ")),
            };
        }
    });
    let code = match result {
        Ok(()) => {
            log_line(format_args!(
                "lamina FUSE daemon {pid}: {} unmounted, exiting",
                target.display()
            ));
            0
        }
        Err(e) => {
            log_line(format_args!("lamina FUSE daemon {pid}: {e}"));
            1
        }
    };
    // SAFETY: the daemon is done; nothing of the forking program's state must run.
    unsafe { libc::_exit(code) }
}

/// Writes one line to the daemon's log (its stderr, written directly so that no
/// output capture of the forking process intercepts it).
fn log_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `path` made absolute against the current directory (the daemon changes it).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Points stdin at `/dev/null` and stdout/stderr at `log` (or `/dev/null`).
fn redirect_output(log: Option<&Path>) -> std::io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = match log {
        Some(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?,
        None => null.try_clone()?,
    };
    // SAFETY: dup2 onto the standard descriptors, which we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    Ok(())
}

/// Whether process `pid` is a zombie (exited, not yet reaped).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Whether `target` is a FUSE mount point in this mount namespace.
pub(crate) fn is_fuse_mount(target: &Path) -> bool {
    let target = target.canonicalize().unwrap_or_else(|_| absolute(target));
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|b| *b == b'\n').any(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            return false;
        };
        fields.len() > 4
            && unescape(fields[4]) == target.as_os_str().as_bytes()
            && fields.get(sep + 1).is_some_and(|t| t.starts_with(b"fuse"))
    })
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// Waits until `target` is a FUSE mount that answers a `stat`; fails when
/// `died()` says the server is gone or after `timeout`.
pub(crate) fn wait_answering(
    target: &Path,
    timeout: Duration,
    died: impl Fn() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_fuse_mount(target) && std::fs::metadata(target).is_ok() {
            return Ok(());
        }
        if died() {
            return Err(mount_error(
                target,
                "the FUSE server exited before the mount answered",
            ));
        }
        if Instant::now() >= deadline {
            return Err(mount_error(
                target,
                format!("the mount did not answer within {timeout:?}"),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(br"/tmp/a\040b\134c"), b"/tmp/a b\\c".to_vec());
        assert_eq!(unescape(b"/plain"), b"/plain".to_vec());
        assert_eq!(unescape(br"/end\04"), br"/end\04".to_vec());
    }
}
