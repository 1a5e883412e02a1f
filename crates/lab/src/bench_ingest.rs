//! `kiban bench ingest` (a program, not a test): municipal status messages
//! through NATS JetStream into the store, measured end to end.
//!
//! One run, on one machine, in this order:
//!
//! 1. **ceilings** — the raw JetStream publish rate (the same messages,
//!    pipelined, into a file-storage stream with nobody consuming) and the
//!    store's own append rate (`kiban bench append`'s figure, 64 writers ×
//!    1-event appends, on a fresh database of the same backend);
//! 2. **sustained ingest** — `persons` × 8 messages (a whole certification
//!    each, filed → decided: 9 events) published as fast as JetStream takes
//!    them; the ingest consumer hands them to the engine, which records them
//!    in the store; the rate is events committed ÷ (first publish → last
//!    receipt);
//! 3. **receipt latency** — messages paced at the sustained rate just
//!    measured (× `receipt_load_percent`), publish → receipt p50/p99;
//! 4. **subscriber latency** — messages paced at `subscriber_events_per_s`,
//!    commit (the event's `recorded_at`) → arrival of the office update on
//!    `kiban.offices.<office>.updates`, p50/p99. Office routing runs
//!    throughout (with the outbox relay, as `kiban serve --nats-url` runs);
//!    the benchmark's entitlements send every event to one office, the
//!    heaviest single subscription.
//!
//! The read models (the three projections `kiban serve` runs) follow the
//! store throughout. During the sustained phase their lag (store head −
//! the furthest-behind projection's checkpoint) is sampled every
//! [`LAG_SAMPLE_MS`] ms and reported as p50/p99/max, with how long they
//! took to reach the head after the phase's last receipt and the rate they
//! applied the phase's events at (its events ÷ first publish → read models
//! at the head).
//!
//! Without `--nats-url` the benchmark starts its own `nats-server` (JetStream,
//! file storage, in a temporary directory) on a free loopback port.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use kiban_bus::client::{Bus, OfficeFeed, Outgoing, Tapped};
use kiban_bus::ingest::ReceiptStatus;
use kiban_bus::routing::Entitlements;
use kiban_bus::streams::StreamOptions;
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use kiban_events::{EventType, RecordedEvent};
use kiban_store::Store;
use kiban_store::scratch::{Scratch, ScratchBackend};

use crate::bench_append::{AppendBenchOptions, bench_append};
use kiban_system::{BusOptions, SystemBuilder};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::latency::Latencies;
use crate::nats_server::{PRIVATE_EVENTS_MAX_BYTES, PrivateNatsServer};

/// The insurer every benchmark message reports for.
const BENCH_INSURER: &str = "131016";

/// The office the benchmark's subscriber listens as.
const BENCH_OFFICE: &str = "1312345678";

/// Messages per person: one certification from filing to decision.
const MESSAGES_PER_PERSON: u64 = 8;

/// Events those messages record (the decision is also recorded on the
/// person's own stream).
const EVENTS_PER_PERSON: u64 = 9;

/// Persons whose messages are interleaved step by step, so that one
/// person's messages are far apart in the publish order.
const INTERLEAVE_PERSONS: u64 = 256;

/// Publishes awaiting their JetStream ack at once.
const PUBLISH_WINDOW: usize = 2_048;

/// Writers of the store ceiling (as `kiban bench append` defaults).
const CEILING_WRITERS: usize = 64;

/// How often the paced publisher wakes up.
const PACE_TICK_MS: u64 = 5;

/// How often the read models' lag is sampled during the sustained phase.
pub const LAG_SAMPLE_MS: u64 = 50;

/// Longest wait for receipts or updates after the last publish: only there
/// to end a broken run.
const DRAIN_TIMEOUT_S: u64 = 300;

/// What to run.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    pub backend: ScratchBackend,
    /// An existing NATS server with JetStream; a private one when `None`.
    pub nats_url: Option<String>,
    /// Persons of the sustained phase (8 messages, 9 events each).
    pub persons: u64,
    /// Length of each paced phase.
    pub paced_seconds: u64,
    /// The receipt phase's rate, as a share of the sustained rate.
    pub receipt_load_percent: u64,
    /// The subscriber phase's rate.
    pub subscriber_events_per_s: u64,
}

/// The figures; serialises to the keys `kiban bench ingest --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct IngestBenchReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub messages: u64,
    pub events: u64,
    pub raw_jetstream_msgs_per_s: f64,
    pub store_append_events_per_s: f64,
    pub ingest_msgs_per_s: f64,
    pub ingest_events_per_s: f64,
    /// Ingest events/s ÷ the lower of the raw JetStream publish rate and
    /// the store's append rate (target ≥ 0.5).
    pub share_of_ceiling: f64,
    pub receipt_load_events_per_s: f64,
    pub receipt_p50_ms: f64,
    pub receipt_p99_ms: f64,
    pub subscriber_load_events_per_s: f64,
    pub subscriber_p50_ms: f64,
    pub subscriber_p99_ms: f64,
    /// The read models' lag during the sustained phase, in events (head −
    /// the lowest projection checkpoint), sampled every [`LAG_SAMPLE_MS`].
    pub projection_lag_p50_events: u64,
    pub projection_lag_p99_events: u64,
    pub projection_lag_max_events: u64,
    /// From the sustained phase's last receipt until every projection had
    /// applied its last event.
    pub projection_catch_up_ms: f64,
    /// The sustained phase's events ÷ (first publish → every projection at
    /// the head): the rate the read models followed ingest at.
    pub projection_events_per_s: f64,
    /// Pages the in-process subscriptions (read models, relay, routing) took
    /// from the store's committed tail in memory, and from the database,
    /// over the whole run (`KIBAN_TAIL_EVENTS=0` turns the tail off).
    pub subscription_pages_from_memory: u64,
    pub subscription_pages_from_database: u64,
}

impl fmt::Display for IngestBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ingest benchmark on {} ({} messages, {} events in the sustained phase)",
            self.backend, self.messages, self.events
        )?;
        writeln!(
            f,
            "  raw JetStream publish: {:>9.0} msgs/s     store append: {:>9.0} events/s",
            self.raw_jetstream_msgs_per_s, self.store_append_events_per_s
        )?;
        writeln!(
            f,
            "  sustained ingest:      {:>9.0} msgs/s = {:.0} events/s ({:.0}% of the lower ceiling)",
            self.ingest_msgs_per_s,
            self.ingest_events_per_s,
            100.0 * self.share_of_ceiling
        )?;
        writeln!(
            f,
            "  publish → receipt at {:.0} events/s: p50 {:.1} ms, p99 {:.1} ms",
            self.receipt_load_events_per_s, self.receipt_p50_ms, self.receipt_p99_ms
        )?;
        writeln!(
            f,
            "  commit → office subscriber at {:.0} events/s: p50 {:.1} ms, p99 {:.1} ms",
            self.subscriber_load_events_per_s, self.subscriber_p50_ms, self.subscriber_p99_ms
        )?;
        write!(
            f,
            "  read models during sustained ingest: lag p50 {} / p99 {} / max {} events; at the head {:.0} ms after the last receipt ({:.0} events/s)",
            self.projection_lag_p50_events,
            self.projection_lag_p99_events,
            self.projection_lag_max_events,
            self.projection_catch_up_ms,
            self.projection_events_per_s
        )?;
        write!(
            f,
            "\n  subscription pages: {} from the committed tail, {} from the database",
            self.subscription_pages_from_memory, self.subscription_pages_from_database
        )
    }
}

/// Runs the benchmark; see the module documentation.
pub async fn bench_ingest(options: IngestBenchOptions) -> anyhow::Result<IngestBenchReport> {
    if options.persons == 0 || options.paced_seconds == 0 || options.receipt_load_percent == 0 {
        bail!("--persons, --paced-seconds and --receipt-load-percent must be at least 1");
    }
    let _private_server;
    let (nats_url, streams) = match &options.nats_url {
        Some(url) => (url.clone(), StreamOptions::default()),
        None => {
            let server = PrivateNatsServer::start()
                .await
                .context("cannot start a private nats-server (is it installed?)")?;
            let url = server.url();
            _private_server = server;
            // The private server's JetStream storage is limited: a smaller
            // KIBAN_EVENTS byte limit (the benchmark writes far less).
            let streams = StreamOptions {
                events_max_bytes: PRIVATE_EVENTS_MAX_BYTES,
                ..StreamOptions::default()
            };
            (url, streams)
        }
    };
    let messages = options.persons * MESSAGES_PER_PERSON;
    eprintln!("ceiling 1/2: raw JetStream publish of {messages} messages");
    let insurer = InsurerNumber::parse(BENCH_INSURER).expect("valid");
    let raw = Bus::connect_nats(&nats_url)
        .await?
        .raw_jetstream_rate(
            publish_order(0, options.persons).map(|(p, step)| (insurer.clone(), message(p, step))),
            PUBLISH_WINDOW,
        )
        .await?
        .context("the raw ceiling needs NATS")?;
    eprintln!(
        "ceiling 2/2: store append ({} events)",
        options.persons * EVENTS_PER_PERSON
    );
    let append = bench_append(AppendBenchOptions {
        backend: options.backend.clone(),
        writers: CEILING_WRITERS,
        batch: 1,
        events: options.persons * EVENTS_PER_PERSON,
    })
    .await?;
    let bus = BusOptions::Nats {
        url: nats_url,
        streams,
    };
    let scratch = Scratch::create(&options.backend, "kiban_bench").await?;
    let outcome = run_ingest_phases(bus, &scratch, &options, raw, append.events_per_s).await;
    scratch.remove().await;
    outcome
}

/// The federation onboards the benchmark's insurer (what `POST
/// /v1/insurers` does): kiban refuses facts of an insurer that is not.
async fn onboard(system: &kiban_system::System, insurer: &str) -> anyhow::Result<()> {
    use kiban_engine::CommandContext;
    use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
    use kiban_events::envelope::{Actor, EventId};
    let insurer = InsurerNumber::parse(insurer)?;
    let id = EventId::from_uuid(Uuid::now_v7()).expect("a v7 uuid is not nil");
    let context = CommandContext::new(id, Actor::Federation, Utc::now());
    system
        .engine
        .execute::<Insurer>(
            &insurer_stream(&insurer),
            &InsurerCommand::Onboard { insurer },
            &context,
        )
        .await?;
    Ok(())
}

async fn run_ingest_phases(
    bus: BusOptions,
    scratch: &Scratch,
    options: &IngestBenchOptions,
    raw_msgs_per_s: f64,
    append_events_per_s: f64,
) -> anyhow::Result<IngestBenchReport> {
    let checkpoints = tempfile::tempdir()?;
    let office = OfficeNumber::parse(BENCH_OFFICE).expect("valid");
    let routed_to = office.clone();
    // Ingest, relay and routing (every event to the benchmark's office);
    // no timers, no sealing keys: what is measured is the bus path.
    let system = SystemBuilder::new(scratch.url(), checkpoints.path())
        .bus(bus)
        .timers(None)
        .person_keys(false)
        .entitlements(move |_| EveryEventToOneOffice(routed_to))
        .start()
        .await?;
    let store = system.store.clone();
    let collector = Collector::start(&system.bus, office).await;
    let outcome = async {
        let collector = collector?;
        // After the collector subscribed: the onboarding is an update too,
        // and the phases wait for every update up to the head.
        onboard(&system, BENCH_INSURER).await?;
        let mut next_person = 0;
        eprintln!("phase 1/3: sustained ingest of {} persons", options.persons);
        let sampler = LagSampler::start(system.projections.clone());
        let sustained = collector
            .phase(&system.bus, &store, &mut next_person, options.persons, None)
            .await;
        let mut lags = sampler.stop().await;
        let sustained = sustained?;
        let head = store.head().await?.position;
        system
            .projections
            .wait_for(head)
            .await
            .context("the read models did not reach the head")?;
        let projection_catch_up = sustained.started.elapsed() - sustained.elapsed;
        let projection_events_per_s =
            sustained.events as f64 / sustained.started.elapsed().as_secs_f64();
        lags.sort_unstable();
        let lag_at = |q: f64| -> u64 {
            if lags.is_empty() {
                return 0;
            }
            lags[((lags.len() - 1) as f64 * q).round() as usize]
        };
        let msgs_per_s = sustained.messages as f64 / sustained.elapsed.as_secs_f64();
        let events_per_s = sustained.events as f64 / sustained.elapsed.as_secs_f64();

        let receipt_rate = msgs_per_s * options.receipt_load_percent as f64 / 100.0;
        let persons = persons_for(receipt_rate, options.paced_seconds);
        eprintln!(
            "phase 2/3: paced at {receipt_rate:.0} msgs/s for {} s",
            options.paced_seconds
        );
        let receipts = collector
            .phase(
                &system.bus,
                &store,
                &mut next_person,
                persons,
                Some(receipt_rate),
            )
            .await?;

        let subscriber_rate = options.subscriber_events_per_s as f64 * MESSAGES_PER_PERSON as f64
            / EVENTS_PER_PERSON as f64;
        let persons = persons_for(subscriber_rate, options.paced_seconds);
        eprintln!(
            "phase 3/3: paced at {} events/s for {} s",
            options.subscriber_events_per_s, options.paced_seconds
        );
        let updates = collector
            .phase(
                &system.bus,
                &store,
                &mut next_person,
                persons,
                Some(subscriber_rate),
            )
            .await?;
        Ok(IngestBenchReport {
            bench: "ingest",
            backend: scratch.backend_name(),
            messages: sustained.messages,
            events: sustained.events,
            raw_jetstream_msgs_per_s: raw_msgs_per_s,
            store_append_events_per_s: append_events_per_s,
            ingest_msgs_per_s: msgs_per_s,
            ingest_events_per_s: events_per_s,
            share_of_ceiling: events_per_s / raw_msgs_per_s.min(append_events_per_s),
            receipt_load_events_per_s: receipts.events as f64 / receipts.elapsed.as_secs_f64(),
            receipt_p50_ms: receipts.receipt_latencies.percentile_ms(0.50),
            receipt_p99_ms: receipts.receipt_latencies.percentile_ms(0.99),
            subscriber_load_events_per_s: updates.events as f64 / updates.elapsed.as_secs_f64(),
            subscriber_p50_ms: updates.update_latencies.percentile_ms(0.50),
            subscriber_p99_ms: updates.update_latencies.percentile_ms(0.99),
            projection_lag_p50_events: lag_at(0.50),
            projection_lag_p99_events: lag_at(0.99),
            projection_lag_max_events: lags.last().copied().unwrap_or(0),
            projection_catch_up_ms: projection_catch_up.as_secs_f64() * 1000.0,
            projection_events_per_s,
            subscription_pages_from_memory: store.subscription_pages().from_memory,
            subscription_pages_from_database: store.subscription_pages().from_database,
        })
    }
    .await;
    system.shutdown().await;
    outcome
}

/// Persons whose messages fill `seconds` at `msgs_per_s`.
fn persons_for(msgs_per_s: f64, seconds: u64) -> u64 {
    ((msgs_per_s * seconds as f64) / MESSAGES_PER_PERSON as f64)
        .ceil()
        .max(1.0) as u64
}

/// The day the bench's certifications are filed (UTC midnight, 30 days
/// before the process started): relative to the clock, so that the
/// platform's two-year bound on `occurred_at` (docs/domain.md) never turns
/// the bench's messages away, whatever year it runs in. Fixed for the
/// process, so every message of a person tells one story.
static STORY_START: std::sync::LazyLock<DateTime<Utc>> = std::sync::LazyLock::new(|| {
    let day = (Utc::now() - chrono::Duration::days(30)).date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
});

/// The whole-certification messages of one person, step `step` (0..8).
fn message(person: u64, step: u64) -> Outgoing {
    let day = |days: i64| -> DateTime<Utc> { *STORY_START + chrono::Duration::days(days) };
    let date = |days: i64| day(days).date_naive().to_string();
    let document = |fill: char| json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 48213});
    let (kind, days, body) = match step {
        0 => (
            "certification.filed",
            0,
            json!({"kind": "new", "applicant": {"by": "office", "office": BENCH_OFFICE}, "applied_on": date(0)}),
        ),
        1 => (
            "certification.investigation_scheduled",
            2,
            json!({"scheduled_on": date(7)}),
        ),
        2 => (
            "certification.opinion_requested",
            3,
            json!({"institution": "1310000001"}),
        ),
        3 => (
            "certification.investigation_completed",
            8,
            json!({"investigation_sheet": document('a')}),
        ),
        4 => (
            "certification.opinion_received",
            12,
            json!({"institution": "1310000001", "opinion": document('b')}),
        ),
        5 => (
            "certification.primary_judgment_recorded",
            15,
            json!({"level": "care_2"}),
        ),
        6 => (
            "certification.secondary_judgment_recorded",
            20,
            json!({"level": "care_2"}),
        ),
        _ => (
            "certification.decided",
            21,
            json!({"level": "care_2", "validity": null}),
        ),
    };
    let id = Uuid::now_v7();
    let body = json!({
        "event_id": id,
        "kind": kind,
        "insurer": BENCH_INSURER,
        "insured": format!("{:010}", 1_000_000 + person),
        "application": 1,
        "occurred_at": day(days),
        "body": body,
    });
    Outgoing {
        event_id: id,
        kind: EventType::parse(kind).expect("a valid event type"),
        body: serde_json::to_vec(&body).expect("JSON serialises"),
    }
}

/// The messages of persons `first..first + count` in publish order: groups
/// of [`INTERLEAVE_PERSONS`], step by step within a group.
fn publish_order(first: u64, count: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = first + count;
    (first..end)
        .step_by(INTERLEAVE_PERSONS as usize)
        .flat_map(move |group| {
            let group_end = (group + INTERLEAVE_PERSONS).min(end);
            (0..MESSAGES_PER_PERSON)
                .flat_map(move |step| (group..group_end).map(move |p| (p, step)))
        })
}

/// Every event goes to the benchmark's office.
struct EveryEventToOneOffice(OfficeNumber);

impl Entitlements for EveryEventToOneOffice {
    async fn offices_for(&self, _event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        Ok(vec![self.0.clone()])
    }
}

/// Receipts and office updates, counted and timed.
struct Collector {
    sent: Arc<Mutex<HashMap<Uuid, Instant>>>,
    receipt_latencies: Arc<Mutex<Latencies>>,
    update_latencies: Arc<Mutex<Latencies>>,
    receipts: Arc<AtomicU64>,
    rejections: Arc<AtomicU64>,
    updates: Arc<AtomicU64>,
}

/// Samples the read models' lag until stopped.
struct LagSampler {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl LagSampler {
    fn start(projections: kiban_projections::Projections) -> LagSampler {
        let stop = tokio_util::sync::CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(LAG_SAMPLE_MS));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = cancelled.cancelled() => return samples,
                }
                if let Ok(lags) = projections.lag().await {
                    samples.push(lags.iter().map(|lag| lag.events()).max().unwrap_or(0));
                }
            }
        });
        LagSampler { stop, task }
    }

    /// Stops and returns the samples (events behind, one per tick).
    async fn stop(self) -> Vec<u64> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// What one phase measured.
struct Phase {
    messages: u64,
    events: u64,
    /// When its first message was published.
    started: Instant,
    /// First publish → last receipt.
    elapsed: Duration,
    receipt_latencies: Latencies,
    update_latencies: Latencies,
}

impl Collector {
    async fn start(bus: &Bus, office: OfficeNumber) -> anyhow::Result<Collector> {
        let collector = Collector {
            sent: Arc::default(),
            receipt_latencies: Arc::default(),
            update_latencies: Arc::default(),
            receipts: Arc::default(),
            rejections: Arc::default(),
            updates: Arc::default(),
        };
        collector.collect(bus, office).await?;
        Ok(collector)
    }

    /// Subscribes to the receipts and the office's updates (before anything
    /// is published) and counts and times what arrives.
    async fn collect(&self, bus: &Bus, office: OfficeNumber) -> anyhow::Result<()> {
        let mut receipts = bus.tap_receipts().await?;
        let mut updates = OfficeFeed::connect(bus, office).await?;
        let (sent, latencies, count, rejections) = (
            self.sent.clone(),
            self.receipt_latencies.clone(),
            self.receipts.clone(),
            self.rejections.clone(),
        );
        tokio::spawn(async move {
            loop {
                let receipt = match receipts.next().await {
                    Tapped::Item(receipt) => receipt,
                    Tapped::Missed => continue,
                    Tapped::Ended => break,
                };
                let arrived = Instant::now();
                if receipt.status == ReceiptStatus::Rejected {
                    eprintln!("rejected: {:?} {:?}", receipt.code, receipt.message);
                    rejections.fetch_add(1, Ordering::Relaxed);
                }
                let published = receipt
                    .event_id
                    .and_then(|id| sent.lock().expect("not poisoned").remove(id.as_uuid()));
                if let Some(published) = published {
                    latencies
                        .lock()
                        .expect("not poisoned")
                        .record(arrived - published);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let (latencies, count) = (self.update_latencies.clone(), self.updates.clone());
        tokio::spawn(async move {
            while let Ok(event) = updates.next().await {
                let latency = (Utc::now() - event.recorded_at)
                    .to_std()
                    .unwrap_or_default();
                latencies.lock().expect("not poisoned").record(latency);
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(())
    }

    /// Publishes the messages of `persons` new persons (paced at `rate`
    /// msgs/s, or as fast as JetStream takes them), waits for every receipt
    /// and every office update, and returns what was measured.
    async fn phase(
        &self,
        bus: &Bus,
        store: &Store,
        next_person: &mut u64,
        persons: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<Phase> {
        let mut publisher = bus
            .windowed_publisher(PUBLISH_WINDOW)
            .context("the ingest benchmark runs on NATS")?;
        let insurer = InsurerNumber::parse(BENCH_INSURER).expect("valid");
        let head_before = store.head().await?.position;
        let receipts_before = self.receipts.load(Ordering::Relaxed);
        self.receipt_latencies.lock().expect("not poisoned").clear();
        self.update_latencies.lock().expect("not poisoned").clear();
        let started = Instant::now();
        let mut published = 0u64;
        for (person, step) in publish_order(*next_person, persons) {
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(published as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let message = message(person, step);
            self.sent
                .lock()
                .expect("not poisoned")
                .insert(message.event_id, Instant::now());
            publisher.publish(&insurer, &message).await?;
            published += 1;
        }
        publisher.finish().await?;
        *next_person += persons;
        let expected_events = persons * EVENTS_PER_PERSON;
        let deadline = Instant::now() + Duration::from_secs(DRAIN_TIMEOUT_S);
        while self.receipts.load(Ordering::Relaxed) - receipts_before < published {
            if Instant::now() > deadline {
                bail!("receipts missing after {DRAIN_TIMEOUT_S} s");
            }
            tokio::time::sleep(Duration::from_millis(PACE_TICK_MS)).await;
        }
        let elapsed = started.elapsed();
        let rejections = self.rejections.load(Ordering::Relaxed);
        if rejections > 0 {
            bail!("{rejections} benchmark messages were rejected");
        }
        let head = store.head().await?.position;
        if head - head_before != expected_events {
            bail!(
                "expected {expected_events} events recorded, found {}",
                head - head_before
            );
        }
        while self.updates.load(Ordering::Relaxed) < head {
            if Instant::now() > deadline {
                bail!("office updates missing after {DRAIN_TIMEOUT_S} s");
            }
            tokio::time::sleep(Duration::from_millis(PACE_TICK_MS)).await;
        }
        Ok(Phase {
            messages: published,
            events: expected_events,
            started,
            elapsed,
            receipt_latencies: std::mem::take(
                &mut self.receipt_latencies.lock().expect("not poisoned"),
            ),
            update_latencies: std::mem::take(
                &mut self.update_latencies.lock().expect("not poisoned"),
            ),
        })
    }
}
