//! [`AppState`]: what every handler shares.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use kiban_engine::Engine;
use kiban_projections::{Projections, ReadModels};
use kiban_store::Store;

/// The clock the API decides and reads with: "now" for consents, overdue
/// flags, validity. Injected so that tests can move time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub engine: Arc<Engine<Store>>,
    pub projections: Projections,
    pub read: ReadModels,
    pub clock: Clock,
    pub metrics: Metrics,
    /// Cancelled when the server shuts down: ends long-lived responses
    /// (SSE) so that connections can close gracefully.
    pub streams: CancellationToken,
}

impl AppState {
    /// The state over a store, the engine appending to it, and the running
    /// projections, with the system clock.
    pub fn new(store: Store, engine: Arc<Engine<Store>>, projections: Projections) -> Self {
        Self::with_clock(store, engine, projections, Arc::new(Utc::now))
    }

    /// The same with another clock.
    pub fn with_clock(
        store: Store,
        engine: Arc<Engine<Store>>,
        projections: Projections,
        clock: Clock,
    ) -> Self {
        let read = ReadModels::new(projections.db().clone());
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                projections,
                read,
                clock,
                metrics: Metrics::default(),
                streams: CancellationToken::new(),
            }),
        }
    }

    /// The current time by the state's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }
}

/// Request counts by route and status. A std mutex: taken for one map
/// update, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
}

impl Metrics {
    pub fn count(&self, route: String, method: &'static str, status: u16) {
        let mut requests = self.requests.lock().expect("not poisoned");
        *requests.entry((route, method, status)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<((String, &'static str, u16), u64)> {
        let requests = self.requests.lock().expect("not poisoned");
        requests.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}
