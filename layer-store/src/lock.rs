//! The store lock: an exclusive `flock` on `<root>/store.lock`.
//!
//! It serialises metadata changes between processes (and between `Store`
//! values in one process, since each holds its own open file description).
//! Within one `Store` value the lock is re-entrant per thread, so a caller
//! holding [`StoreLock`] can still call store methods that take it.

use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Result, StoreError};

/// Lock bookkeeping of one `Store` value.
#[derive(Debug)]
pub(crate) struct LockState {
    path: PathBuf,
    held: Mutex<Held>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    owner: Option<ThreadId>,
    depth: usize,
    lock: Option<Flock<File>>,
}

/// Proof that this thread holds the store lock; released on drop.
#[derive(Debug)]
#[must_use = "the store lock is released when the guard is dropped"]
pub struct StoreLock<'a> {
    state: &'a LockState,
    // Tie the guard to the thread that took it.
    _not_send: PhantomData<*const ()>,
}

impl LockState {
    /// Lock state for the lock file at `path` (created on first use).
    pub(crate) fn new(path: PathBuf) -> LockState {
        LockState {
            path,
            held: Mutex::new(Held::default()),
            released: Condvar::new(),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lock, blocking until other holders release it.
    pub(crate) fn acquire(&self) -> Result<StoreLock<'_>> {
        let me = thread::current().id();
        let mut held = self.held();
        loop {
            match held.owner {
                Some(owner) if owner == me => {
                    held.depth += 1;
                    return Ok(self.guard());
                }
                Some(_) => {
                    held = self
                        .released
                        .wait(held)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                None => break,
            }
        }
        held.owner = Some(me);
        held.depth = 1;
        drop(held);
        match self.lock_file() {
            Ok(lock) => {
                self.held().lock = Some(lock);
                Ok(self.guard())
            }
            Err(e) => {
                let mut held = self.held();
                held.owner = None;
                held.depth = 0;
                drop(held);
                self.released.notify_all();
                Err(e)
            }
        }
    }

    fn guard(&self) -> StoreLock<'_> {
        StoreLock {
            state: self,
            _not_send: PhantomData,
        }
    }

    fn lock_file(&self) -> Result<Flock<File>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|source| StoreError::Io {
                context: format!("opening lock file {}", self.path.display()),
                source,
            })?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((returned, Errno::EINTR)) => file = returned,
                Err((_, errno)) => {
                    return Err(StoreError::Io {
                        context: format!("locking {}", self.path.display()),
                        source: errno.into(),
                    })
                }
            }
        }
    }

    fn release(&self) {
        let mut held = self.held();
        held.depth -= 1;
        if held.depth == 0 {
            // Dropping the Flock unlocks and closes the file.
            held.lock = None;
            held.owner = None;
            drop(held);
            self.released.notify_all();
        }
    }
}

impl Drop for StoreLock<'_> {
    fn drop(&mut self) {
        self.state.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn reentrant_within_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let state = LockState::new(dir.path().join("store.lock"));
        let outer = state.acquire().unwrap();
        let inner = state.acquire().unwrap();
        drop(inner);
        assert!(state.held().lock.is_some());
        drop(outer);
        assert!(state.held().lock.is_none());
    }

    #[test]
    fn excludes_other_threads_and_other_lock_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.lock");
        let shared = Arc::new(LockState::new(path.clone()));
        let other_store = Arc::new(LockState::new(path));
        let guard = shared.acquire().unwrap();
        let entered = Arc::new(AtomicBool::new(false));
        let waiters: Vec<_> = [shared.clone(), other_store]
            .into_iter()
            .map(|state| {
                let entered = entered.clone();
                thread::spawn(move || {
                    let _guard = state.acquire().unwrap();
                    entered.store(true, Ordering::SeqCst);
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(200));
        assert!(!entered.load(Ordering::SeqCst), "lock was not exclusive");
        drop(guard);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert!(entered.load(Ordering::SeqCst));
    }
}
