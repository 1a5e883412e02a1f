//! A bounded cache of recent aggregate states, keyed by stream.
//!
//! Hot streams (an application moving through its steps, an office with many
//! terminals) are decided on again and again; keeping their folded state
//! saves re-reading and re-folding the stream each time. The cache is only an
//! optimisation: an entry may be stale (another process appended), so an
//! append from it carries its version and fails with a conflict, after which
//! the engine reloads from the store, and a rejection, a no-op or a
//! [`crate::Engine::load`] first reads what the store holds after the entry's
//! version (docs/deploy.md "Each process's state cache").

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use kiban_events::{StreamName, Version};
use lru::LruCache;

/// Default number of aggregate states kept. A state is a few hundred bytes
/// to a few kilobytes; ten thousand of them is tens of megabytes at most,
/// and covers every stream that is active within minutes at national scale
/// (about 70,000 certification events an hour).
pub const STATE_CACHE_CAPACITY_DEFAULT: usize = 10_000;

/// One cached state: the version it was folded up to, and the state itself
/// (type-erased: one cache serves every aggregate type).
#[derive(Clone)]
pub(crate) struct CachedState {
    pub version: Version,
    pub state: Arc<dyn Any + Send + Sync>,
}

/// The cache. A std mutex: it is held only for a map operation, never across
/// an `.await`.
pub(crate) struct StateCache {
    entries: Mutex<LruCache<StreamName, CachedState>>,
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The cached state of `stream` if it is of type `S`.
    pub fn get<S: Clone + 'static>(&self, stream: &StreamName) -> Option<(Version, S)> {
        let entry = self
            .entries
            .lock()
            .expect("not poisoned")
            .get(stream)
            .cloned()?;
        let state = entry.state.downcast_ref::<S>()?.clone();
        Some((entry.version, state))
    }

    pub fn put<S: Send + Sync + 'static>(&self, stream: StreamName, version: Version, state: S) {
        let entry = CachedState {
            version,
            state: Arc::new(state),
        };
        self.entries
            .lock()
            .expect("not poisoned")
            .put(stream, entry);
    }

    pub fn forget(&self, stream: &StreamName) {
        self.entries.lock().expect("not poisoned").pop(stream);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("not poisoned").len()
    }
}
