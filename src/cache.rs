//! A small bounded map for the read paths' caches (verified tokens in `http/auth.rs`, final jobs
//! in `http/jobs.rs`). Two generations of at most `capacity / 2` entries: new entries go into the
//! young one; when it is full it becomes the old one (the previous old one is dropped) and a hit
//! in the old one moves the entry back to the young one. So memory is bounded by `capacity`
//! entries, every operation is O(1), and what is read often stays (an approximate LRU).
//!
//! Entries of very different sizes (whole encoded job answers) are weighed too
//! ([`Bounded::with_bytes`]): a generation is also full at half the byte bound, and an entry
//! heavier than an eighth of the bound is not kept at all, so the weight held never exceeds it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct Bounded<K, V> {
    half: usize,
    /// At most this many bytes (as weighed by [`Bounded::insert_weighing`]) per generation.
    half_bytes: usize,
    gens: Mutex<Generations<K, V>>,
}

struct Generations<K, V> {
    /// Each value with its weight in bytes.
    young: HashMap<K, (V, usize)>,
    old: HashMap<K, (V, usize)>,
    young_bytes: usize,
    old_bytes: usize,
}

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    /// At most `capacity` entries; 0 keeps nothing (the cache is off).
    pub fn new(capacity: usize) -> Self {
        Self::with_bytes(capacity, usize::MAX)
    }

    /// At most `capacity` entries and `max_bytes` bytes of entries (each weighed when it is
    /// inserted, [`Bounded::insert_weighing`]); an entry over [`Bounded::largest`] is not kept.
    /// Either 0 keeps nothing.
    pub fn with_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self {
            half: capacity / 2,
            half_bytes: max_bytes / 2,
            gens: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
                young_bytes: 0,
                old_bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<K, V>> {
        self.gens.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.half > 0 && self.largest() > 0
    }

    /// The heaviest entry kept: an eighth of the byte bound (one generation holds at least
    /// four), so one large entry never pushes out most of the others.
    pub fn largest(&self) -> usize {
        self.half_bytes / 4
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let mut g = self.lock();
        if let Some((v, _)) = g.young.get(key) {
            return Some(v.clone());
        }
        let (k, (v, bytes)) = g.old.remove_entry(key)?;
        g.old_bytes -= bytes;
        g.put((self.half, self.half_bytes), k, v.clone(), bytes);
        Some(v)
    }

    /// Inserts an entry that weighs nothing (a cache bounded by count only).
    pub fn insert(&self, key: K, value: V) {
        self.insert_weighing(key, value, 0);
    }

    /// Inserts an entry of `bytes` bytes; one over [`Bounded::largest`] is not kept (and
    /// replaces nothing: an older entry under the key is dropped). Returns whether it was kept.
    pub fn insert_weighing(&self, key: K, value: V, bytes: usize) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut g = self.lock();
        g.take(&key);
        if bytes > self.largest() {
            return false;
        }
        g.put((self.half, self.half_bytes), key, value, bytes);
        true
    }

    pub fn remove(&self, key: &K) {
        self.lock().take(key);
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight of the entries held now (both generations): at most the byte bound.
    pub fn bytes(&self) -> usize {
        let g = self.lock();
        g.young_bytes + g.old_bytes
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn take(&mut self, key: &K) {
        if let Some((_, bytes)) = self.young.remove(key) {
            self.young_bytes -= bytes;
        }
        if let Some((_, bytes)) = self.old.remove(key) {
            self.old_bytes -= bytes;
        }
    }

    /// Into the young generation; a full one (by count or by bytes) becomes the old one first.
    fn put(&mut self, (half, half_bytes): (usize, usize), key: K, value: V, bytes: usize) {
        if let Some((_, was)) = self.young.remove(&key) {
            self.young_bytes -= was;
        }
        let full = self.young.len() >= half || self.young_bytes + bytes > half_bytes;
        if full && !self.young.is_empty() {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::replace(&mut self.young_bytes, 0);
        }
        self.young.insert(key, (value, bytes));
        self.young_bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn holds_at_most_its_capacity_and_keeps_what_is_read() {
        let c = Bounded::new(4);
        for i in 0..100 {
            c.insert(i, i * 10);
            assert!(c.len() <= 4, "{} entries", c.len());
            // 0 is read after every insert: it is never the one dropped.
            assert_eq!(c.get(&0), Some(0));
        }
        assert_eq!(c.get(&99), Some(990));
        assert_eq!(c.get(&1), None);
        c.remove(&0);
        assert_eq!(c.get(&0), None);
    }

    /// Bounded by bytes: the weight held never exceeds the bound, an entry over an eighth of
    /// it is not kept (and drops what the key held), and what is read often stays.
    #[test]
    fn holds_at_most_its_bytes_and_keeps_no_entry_over_an_eighth() {
        let c = Bounded::with_bytes(1000, 8000);
        assert_eq!(c.largest(), 1000);
        for i in 0..500usize {
            let bytes = (i * 37) % 1000 + 1;
            assert!(c.insert_weighing(i, i, bytes));
            assert!(c.bytes() <= 8000, "{} bytes held", c.bytes());
            assert_eq!(c.get(&0), Some(0), "read after every insert");
        }
        assert!(c.insert_weighing(7, 7, 10));
        assert!(!c.insert_weighing(7, 8, 1001), "over an eighth");
        assert_eq!(c.get(&7), None, "the older entry under the key is gone too");
        let held = c.bytes();
        c.remove(&0);
        assert!(c.bytes() < held);
        assert!(!Bounded::<u8, u8>::with_bytes(10, 0).enabled());
    }

    #[test]
    fn capacity_zero_is_off() {
        let c = Bounded::new(0);
        c.insert(1, 1);
        assert!(!c.enabled());
        assert_eq!(c.get(&1), None);
        assert!(c.is_empty());
    }
}
