//! A small bounded map for the read paths' caches (verified tokens in `http/auth.rs`, final jobs
//! in `http/jobs.rs`). Two generations of at most `capacity / 2` entries: new entries go into the
//! young one; when it is full it becomes the old one (the previous old one is dropped) and a hit
//! in the old one moves the entry back to the young one. So memory is bounded by `capacity`
//! entries, every operation is O(1), and what is read often stays (an approximate LRU).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct Bounded<K, V> {
    half: usize,
    gens: Mutex<Generations<K, V>>,
}

struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    /// At most `capacity` entries; 0 keeps nothing (the cache is off).
    pub fn new(capacity: usize) -> Self {
        Self {
            half: capacity / 2,
            gens: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.half > 0
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if !self.enabled() {
            return None;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let (k, v) = g.old.remove_entry(key)?;
        g.put(self.half, k, v.clone());
        Some(v)
    }

    pub fn insert(&self, key: K, value: V) {
        if !self.enabled() {
            return;
        }
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.old.remove(&key);
        g.put(self.half, key, value);
    }

    pub fn remove(&self, key: &K) {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.young.remove(key);
        g.old.remove(key);
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn put(&mut self, half: usize, key: K, value: V) {
        if self.young.len() >= half && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
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

    #[test]
    fn capacity_zero_is_off() {
        let c = Bounded::new(0);
        c.insert(1, 1);
        assert!(!c.enabled());
        assert_eq!(c.get(&1), None);
        assert!(c.is_empty());
    }
}
