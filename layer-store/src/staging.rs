//! Staging directories: private scratch space for one running operation.
//!
//! Each lives at `<root>/tmp/<pid>-<random>/`, inside the store so that
//! renames into place never cross file systems. It is removed when the
//! operation ends; if the process dies, [`remove_stale`] (run by
//! `Store::open`) removes it once the pid is gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use rand::Rng;

use crate::error::{IoContext, Result};

/// A private directory under `<root>/tmp/`, removed on drop.
#[derive(Debug)]
pub(crate) struct StagingDir {
    path: PathBuf,
    next_file: AtomicU64,
}

impl StagingDir {
    /// Creates a fresh staging directory in `tmp_root`.
    pub(crate) fn create(tmp_root: &Path) -> Result<StagingDir> {
        let suffix: u64 = rand::thread_rng().gen();
        let path = tmp_root.join(format!("{}-{suffix:016x}", std::process::id()));
        fs::create_dir(&path)
            .io_context(|| format!("creating staging directory {}", path.display()))?;
        Ok(StagingDir {
            path,
            next_file: AtomicU64::new(0),
        })
    }

    /// The directory.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new empty file with a unique name inside the directory.
    pub(crate) fn new_file(&self) -> Result<(PathBuf, File)> {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("f{n}"));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .io_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove staging directory");
            }
        }
    }
}

/// Removes the staging directories in `tmp_root` whose owning process is gone.
/// Returns how many were removed.
pub(crate) fn remove_stale(tmp_root: &Path) -> Result<usize> {
    let entries = match fs::read_dir(tmp_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).io_context(|| format!("listing {}", tmp_root.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.io_context(|| format!("listing {}", tmp_root.display()))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let path = entry.path();
        tracing::info!(path = %path.display(), pid, "removing staging directory of a dead process");
        match fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).io_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(removed)
}

/// The pid encoded in a staging directory name `<pid>-<random>`.
fn owner_pid(name: &str) -> Option<i32> {
    let (pid, random) = name.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|&pid: &i32| pid > 0)
}

/// Whether a process with this pid exists (zombies count as alive).
fn process_alive(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner_pids() {
        assert_eq!(owner_pid("123-abc"), Some(123));
        assert_eq!(owner_pid("123-"), None);
        assert_eq!(owner_pid("x-abc"), None);
        assert_eq!(owner_pid("0-abc"), None);
        assert_eq!(owner_pid("-5-abc"), None);
    }

    #[test]
    fn removes_dirs_of_dead_processes_only_and_drops_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        // Larger than any possible pid_max (2^22), so never a live process.
        let dead = tmp.path().join("999999999-00");
        fs::create_dir_all(dead.join("sub")).unwrap();
        fs::write(dead.join("sub/file"), b"x").unwrap();
        let unrelated = tmp.path().join("not-a-staging-dir");
        fs::create_dir(&unrelated).unwrap();
        let mine = StagingDir::create(tmp.path()).unwrap();
        mine.new_file().unwrap();

        assert_eq!(remove_stale(tmp.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(unrelated.exists());
        assert!(mine.path().exists());
        let mine_path = mine.path().to_path_buf();
        drop(mine);
        assert!(!mine_path.exists());
    }
}
