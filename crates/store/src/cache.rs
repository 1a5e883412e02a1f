//! The writer's bounded cache of stream versions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiban_events::{StreamName, Version};

/// Most streams whose version the writer remembers. A cached version saves
/// one index lookup per append; 100,000 entries of ~100 bytes is ~10 MB, and
/// covers every stream that is active within minutes on a municipality-wide
/// store. A miss costs one batched `SELECT max(version)`, never a wrong answer.
pub const STREAM_VERSION_CACHE_CAPACITY: usize = 100_000;

/// An approximately-LRU map in two generations: new and recently used
/// entries live in `current`; when it is full it becomes `previous` (and the
/// old `previous` is dropped). A hit in `previous` moves the entry back to
/// `current`. This bounds memory at the capacity with O(1) operations and no
/// per-entry bookkeeping.
///
/// Only the writer task uses it, and only while it holds the writer role:
/// then no one else changes versions, so a cached version is the truth.
#[derive(Debug)]
pub(crate) struct VersionCache {
    current: HashMap<StreamName, Version>,
    previous: HashMap<StreamName, Version>,
    generation_capacity: usize,
}

impl VersionCache {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity >= 2, "the cache needs room for two generations");
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_capacity: capacity / 2,
        }
    }

    /// The cached version of `stream`, if any.
    pub fn get(&mut self, stream: &StreamName) -> Option<Version> {
        if let Some(&version) = self.current.get(stream) {
            return Some(version);
        }
        let version = self.previous.remove(stream)?;
        self.insert(stream.clone(), version);
        Some(version)
    }

    /// Remembers the version of `stream`.
    pub fn insert(&mut self, stream: StreamName, version: Version) {
        if self.current.len() >= self.generation_capacity && !self.current.contains_key(&stream) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(stream, version);
        debug_assert!(self.current.len() + self.previous.len() <= 2 * self.generation_capacity);
    }

    /// Forgets everything: after a failed commit or when (re)gaining the
    /// writer role, the database is the only truth.
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// The writer's [`VersionCache`], shared with its [`crate::Store`] so that
/// the engine of the writing process can tell a cached state is current
/// without reading the stream ([`crate::Store::writer_version`]). A std
/// mutex: it is held for one map operation, never across an `.await`.
#[derive(Debug, Clone)]
pub(crate) struct SharedVersions(Arc<Mutex<VersionCache>>);

impl SharedVersions {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(VersionCache::new(capacity))))
    }

    pub fn get(&self, stream: &StreamName) -> Option<Version> {
        self.0.lock().expect("not poisoned").get(stream)
    }

    pub fn insert(&self, stream: StreamName, version: Version) {
        self.0.lock().expect("not poisoned").insert(stream, version);
    }

    pub fn clear(&self) {
        self.0.lock().expect("not poisoned").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: usize) -> StreamName {
        StreamName::new("test", &format!("s{i}")).unwrap()
    }

    #[test]
    fn keeps_at_most_the_capacity_and_the_recently_used() {
        let mut cache = VersionCache::new(4);
        for i in 0..10 {
            cache.insert(stream(i), i as Version);
        }
        assert!(cache.current.len() + cache.previous.len() <= 4);
        assert_eq!(cache.get(&stream(9)), Some(9));
        assert_eq!(cache.get(&stream(0)), None);
    }

    #[test]
    fn a_hit_in_the_previous_generation_survives_the_next_rotation() {
        let mut cache = VersionCache::new(4);
        cache.insert(stream(1), 1);
        cache.insert(stream(2), 2);
        cache.insert(stream(3), 3);
        assert_eq!(cache.get(&stream(1)), Some(1));
        cache.insert(stream(4), 4);
        assert_eq!(cache.get(&stream(1)), Some(1));
    }
}
