//! [`AppState`]: what every handler shares.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use kiban_engine::Engine;

use crate::card_consent::{CardTrust, Challenges};
use crate::me::sign_in::SignIns;
use kiban_events::domain::subsidy::SubsidyPolicy;
use kiban_projections::{Projections, ReadModels};
use kiban_store::Store;

/// The clock the API decides and reads with: "now" for consents, overdue
/// flags, validity. Injected so that tests can move time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Asks whether this process can reach the process that commits its
/// appends (the writer), answering the writer's head or why not. Given by
/// the system in a process whose store forwards appends (`--role api`);
/// `/readyz` asks it.
pub type WriterProbe = Arc<dyn Fn() -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

/// Live office updates from outside this process, as an office may see
/// them: given the office, a position and whether the stream is the
/// office's web screen (which also gets the consent events naming the
/// office), its events after that position,
/// each once and in order, and then live; the stream ends with an error
/// (after which the client resumes). Given by the system in an API process
/// (`kiban_bus::fanout` over NATS); without it, each update stream follows
/// the store itself (`--role all` on the in-process bus).
pub type UpdateFeed = Arc<
    dyn Fn(
            kiban_events::ids::OfficeNumber,
            u64,
            bool,
        )
            -> futures::stream::BoxStream<'static, Result<kiban_events::UpdateNotice, String>>
        + Send
        + Sync,
>;

/// Longest a command's answer, or a read that names a
/// [`MIN_POSITION_HEADER`], waits for the read models to apply a position,
/// in milliseconds (read your writes). Below the request timeout; a command
/// is answered anyway when it runs out (it is committed), a read is
/// answered 503.
pub const READ_YOUR_WRITES_WAIT_MS: u64 = 3_000;

/// Response header of every command's answer: the store position of its
/// last event. A client that sends it back as [`MIN_POSITION_HEADER`] on
/// a later read never reads state older than its command (the typed
/// client does so by itself).
pub const POSITION_HEADER: &str = "kiban-position";

/// Request header of a read: answer only from read models that have applied
/// at least this store position (waiting for them, bounded by
/// [`READ_YOUR_WRITES_WAIT_MS`]); 503 `unavailable` when they have not.
pub const MIN_POSITION_HEADER: &str = "kiban-min-position";

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
    /// The card CRL as last parsed, while its file is unchanged.
    pub card_crl: crate::card_consent::CardCrlCache,
    /// Most bytes one principal may upload as subsidy attachments in a day
    /// ([`crate::documents::ATTACHMENT_BYTES_PER_DAY_MAX`] unless configured).
    pub attachment_bytes_per_day: u64,
    /// Outstanding sign-in challenges of the person's view.
    pub sign_ins: SignIns,
    /// Cancelled when the server shuts down: ends long-lived responses
    /// (SSE) so that connections can close gracefully.
    pub streams: CancellationToken,
    /// Whether the writer answers, in a process that forwards its appends.
    pub writer_probe: Option<WriterProbe>,
    /// How far behind the head an update stream may resume
    /// ([`crate::updates::RESUME_EVENTS_MAX`]).
    pub resume_events_max: u64,
    /// Where update streams come from, when not from the store.
    pub update_feed: Option<UpdateFeed>,
    /// How often a fed update stream of an office terminal re-checks the
    /// terminal ([`crate::updates::TERMINAL_RECHECK_SECS`] unless configured).
    pub terminal_recheck: Duration,
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
                card_crl: Default::default(),
                attachment_bytes_per_day: crate::documents::ATTACHMENT_BYTES_PER_DAY_MAX,
                sign_ins: SignIns::default(),
                streams: CancellationToken::new(),
                writer_probe: None,
                resume_events_max: crate::updates::RESUME_EVENTS_MAX,
                update_feed: None,
                terminal_recheck: Duration::from_secs(crate::updates::TERMINAL_RECHECK_SECS),
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

    /// The same with another bound on how far behind the head an update
    /// stream may resume (tests shorten it). Call before the state is
    /// cloned.
    pub fn with_resume_events_max(mut self, events: u64) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_resume_events_max is called before the state is shared")
            .resume_events_max = events;
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

    /// The same with another daily attachment quota per uploader. Call
    /// before the state is shared.
    pub fn with_attachment_quota(mut self, bytes_per_day: u64) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_attachment_quota is called before the state is shared")
            .attachment_bytes_per_day = bytes_per_day;
        self
    }

    /// The same with a probe of the writer, asked by `/readyz` (a process
    /// whose appends go to another process). Call before the state is
    /// cloned.
    pub fn with_writer_probe(mut self, probe: WriterProbe) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_writer_probe is called before the state is shared")
            .writer_probe = Some(probe);
        self
    }

    /// The same with live office updates from `feed` instead of a store
    /// subscription per stream. Call before the state is cloned.
    pub fn with_update_feed(mut self, feed: UpdateFeed) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_update_feed is called before the state is shared")
            .update_feed = Some(feed);
        self
    }

    /// The same with another interval at which an API process's update
    /// stream of an office terminal re-checks the terminal while no update
    /// comes (tests shorten it). Call before the state is cloned.
    pub fn with_terminal_recheck(mut self, interval: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_terminal_recheck is called before the state is shared")
            .terminal_recheck = interval;
        self
    }

    /// Waits until every read model has applied `position`, at most
    /// [`READ_YOUR_WRITES_WAIT_MS`]; tells whether they have.
    pub(crate) async fn await_read_models(&self, position: u64) -> bool {
        if position == 0 {
            return true;
        }
        let wait = self.inner.projections.wait_for(position);
        matches!(
            tokio::time::timeout(Duration::from_millis(READ_YOUR_WRITES_WAIT_MS), wait).await,
            Ok(Ok(()))
        )
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

/// The labels of a request count: route template (never the concrete
/// path, which holds personal numbers), method and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// The labels of a route's latency and creations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    route: String,
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// Request counts by route and status, latency histograms and 201 counts
/// by route ([prometheus_client] metrics: atomics behind a lock-free read
/// path, rendered by `GET /metrics`).
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    created: Family<RouteLabels, Counter>,
    latencies: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            created: Family::default(),
            latencies: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn count(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        let labels = RouteLabels { route, method };
        self.latencies.get_or_create(&labels).observe(seconds);
        if status == 201 {
            self.created.get_or_create(&labels).inc();
        }
        let labels = RequestLabels {
            route: labels.route,
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Adds the request metrics to `registry` (the families are shared, not
    /// copied: a registry per scrape sees the live counts).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kiban_api_requests",
            "Requests answered, by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "kiban_api_request_duration_seconds",
            "Time to answer a request (to the response head), by route template and method",
            self.latencies.clone(),
        );
        registry.register(
            "kiban_api_created",
            "Requests answered 201 Created (commands that appended events, attachments stored), by route template",
            self.created.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prometheus_client::encoding::text::encode;

    use super::*;

    /// The exposition's samples, `name{labels}` → value, read line by line
    /// as a scraper does (comments and `# EOF` aside).
    fn samples(text: &str) -> BTreeMap<String, f64> {
        assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("name and value");
                let value = value.parse().unwrap_or_else(|_| panic!("{line}"));
                (series.to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn requests_are_exposed_under_the_metric_names_of_before() {
        let metrics = Metrics::default();
        metrics.count("/v1/terminals".into(), "GET", 200, 0.003);
        metrics.count("/v1/terminals".into(), "GET", 200, 20.0);
        metrics.count("/v1/subsidies".into(), "POST", 201, 0.02);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for kind in [
            "# TYPE kiban_api_requests counter",
            "# TYPE kiban_api_created counter",
            "# TYPE kiban_api_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == kind), "{kind} in {text}");
        }
        let samples = samples(&text);
        let get = r#"route="/v1/terminals",method="GET""#;
        let post = r#"route="/v1/subsidies",method="POST""#;
        for (series, value) in [
            (
                format!(r#"kiban_api_requests_total{{{get},status="200"}}"#),
                2.0,
            ),
            (
                format!(r#"kiban_api_requests_total{{{post},status="201"}}"#),
                1.0,
            ),
            (format!("kiban_api_created_total{{{post}}}"), 1.0),
            (
                format!("kiban_api_request_duration_seconds_count{{{get}}}"),
                2.0,
            ),
            (
                format!(r#"kiban_api_request_duration_seconds_bucket{{le="0.005",{get}}}"#),
                1.0,
            ),
            (
                format!(r#"kiban_api_request_duration_seconds_bucket{{le="10.0",{get}}}"#),
                1.0,
            ),
            (
                format!(r#"kiban_api_request_duration_seconds_bucket{{le="+Inf",{get}}}"#),
                2.0,
            ),
        ] {
            assert_eq!(samples.get(&series), Some(&value), "{series} in {text}");
        }
        assert!(
            !samples
                .keys()
                .any(|s| s.starts_with("kiban_api_created_total{route=\"/v1/terminals\""))
        );
    }
}
