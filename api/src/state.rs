//! [`AppState`]: what every handler shares.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use kiban_engine::Engine;

use crate::card_consent::{CardTrust, Challenges};
use kiban_events::domain::subsidy::SubsidyPolicy;
use kiban_projections::{Projections, ReadModels};
use kiban_store::Store;

/// The clock the API decides and reads with: "now" for consents, overdue
/// flags, validity. Injected so that tests can move time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The subsidy rules used unless [`AppState::with_subsidy_policy`] says
/// otherwise: FY2025's (DOMAIN.md).
pub const SUBSIDY_POLICY_DEFAULT: SubsidyPolicy = SubsidyPolicy::FY2025;

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
    /// The fiscal year's subsidy rules applications are decided under.
    pub subsidy_policy: SubsidyPolicy,
    /// What card signatures are checked against; `None`: card consent off.
    pub card_trust: Option<CardTrust>,
    /// Outstanding card-consent challenges.
    pub challenges: Challenges,
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
                subsidy_policy: SUBSIDY_POLICY_DEFAULT,
                card_trust: None,
                challenges: Challenges::default(),
                streams: CancellationToken::new(),
            }),
        }
    }

    /// The same with another fiscal year's subsidy rules (configuration,
    /// not code). Call before the state is cloned.
    pub fn with_subsidy_policy(mut self, policy: SubsidyPolicy) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_subsidy_policy is called before the state is shared")
            .subsidy_policy = policy;
        self
    }

    /// The same with the JPKI CA certificates and CRL file that card
    /// consents are verified against (without it, `POST /v1/consents/card`
    /// answers 503). Call before the state is cloned.
    pub fn with_card_trust(mut self, trust: CardTrust) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_card_trust is called before the state is shared")
            .card_trust = Some(trust);
        self
    }

    /// The current time by the state's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }
}

/// Upper bounds of the request-latency histogram buckets, in seconds
/// (Prometheus `le`): sub-millisecond to the request timeout.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// One route's latency histogram.
#[derive(Debug, Default, Clone)]
pub(crate) struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS_SECONDS`]
    /// (not cumulative; made cumulative when rendered).
    pub buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS_SECONDS.iter().position(|le| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// Request counts by route and status, and latency histograms by route.
/// Std mutexes: each taken for one map update, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    latencies: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

impl Metrics {
    pub fn count(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        let mut latencies = self.latencies.lock().expect("not poisoned");
        latencies
            .entry((route.clone(), method))
            .or_default()
            .observe(seconds);
        drop(latencies);
        let mut requests = self.requests.lock().expect("not poisoned");
        *requests.entry((route, method, status)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<((String, &'static str, u16), u64)> {
        let requests = self.requests.lock().expect("not poisoned");
        requests.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn latencies(&self) -> Vec<((String, &'static str), Histogram)> {
        let latencies = self.latencies.lock().expect("not poisoned");
        latencies
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
