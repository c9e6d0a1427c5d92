//! The reader's caches: least-recently-used maps bounded by the bytes they hold.
//!
//! Each cache sits behind its own mutex, held only to look up or insert an
//! entry, never while a block is read or decompressed: readers of different
//! files (or of the same file) decompress in parallel, and two threads missing
//! the same block at once simply both decompress it.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lru::LruCache;

/// Hit and miss counts of one cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitCounts {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to read (and decompress) from the image.
    pub misses: u64,
}

/// An LRU map holding at most `capacity` bytes of values (by their declared weight).
pub(crate) struct WeightedLru<K: Hash + Eq, V: Clone> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner<K: Hash + Eq, V> {
    map: LruCache<K, (V, usize)>,
    used: usize,
}

impl<K: Hash + Eq, V: Clone> WeightedLru<K, V> {
    /// A cache of at most `capacity` bytes (0: nothing is kept).
    pub fn new(capacity: usize) -> Self {
        WeightedLru {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                used: 0,
            }),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock cannot leave the map inconsistent in a
        // way that matters for a cache: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value under `key`, marked most recently used.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.lock().map.get(key).map(|(v, _)| v.clone());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value` of `weight` bytes, evicting the least recently used entries
    /// to stay within the capacity. Values larger than the whole cache are not kept.
    pub fn insert(&self, key: K, value: V, weight: usize) {
        if weight > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner.map.put(key, (value, weight)) {
            inner.used -= old;
        }
        inner.used += weight;
        while inner.used > self.capacity {
            match inner.map.pop_lru() {
                Some((_, (_, w))) => inner.used -= w,
                None => break,
            }
        }
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> HitCounts {
        HitCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Bytes currently held.
    pub fn used(&self) -> usize {
        self.lock().used
    }
}

/// A pool of per-thread resources (decompressors): taken for one use, then returned.
pub(crate) struct Pool<T> {
    free: Mutex<Vec<T>>,
    created: AtomicU64,
}

impl<T> Pool<T> {
    /// An empty pool.
    pub fn new() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        }
    }

    /// Runs `f` with a pooled item, making one with `make` when none is free.
    pub fn with<R, E>(
        &self,
        make: impl FnOnce() -> Result<T, E>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, E> {
        let taken = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut item = match taken {
            Some(item) => item,
            None => {
                self.created.fetch_add(1, Ordering::Relaxed);
                make()?
            }
        };
        let result = f(&mut item);
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
        Ok(result)
    }

    /// How many items were ever made: the most uses that overlapped in time.
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_by_weight() {
        let c = WeightedLru::new(10);
        c.insert(1, "a", 4);
        c.insert(2, "b", 4);
        assert_eq!(c.get(&1), Some("a"));
        c.insert(3, "c", 4);
        assert_eq!(c.get(&2), None, "2 was the least recently used");
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&3), Some("c"));
        assert_eq!(c.used(), 8);
        c.insert(4, "huge", 11);
        assert_eq!(c.get(&4), None);
        assert_eq!(c.counts(), HitCounts { hits: 3, misses: 2 });
        let none = WeightedLru::new(0);
        none.insert(1, "a", 1);
        assert_eq!(none.used(), 0);
        assert_eq!(none.get(&1), None);
    }

    #[test]
    fn pool_reuses_items() {
        let p: Pool<u32> = Pool::new();
        for _ in 0..3 {
            p.with(|| Ok::<_, ()>(7), |v| *v += 1).unwrap();
        }
        assert_eq!(p.created(), 1);
    }
}
