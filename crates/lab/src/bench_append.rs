//! `kiban bench append` (a program, not a test): the store's append path
//! against the two baselines of [`kiban_store::baseline`].
//!
//! [`bench_append`] appends `events` events of a ~300-byte JSON payload from
//! `writers` concurrent tasks through a [`Store`], `batch` events per append,
//! over many streams, and reports throughput and append latency. In the same
//! run, on the same fresh database, it measures the naive and the raw
//! baselines writing the same rows into fresh tables of the same schema.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use kiban_events::{
    Actor, EventId, EventType, ExpectedVersion, Hash, NewEvent, Payload, RecordedEvent, StreamName,
};
use kiban_store::baseline;
use kiban_store::scratch::{Scratch, ScratchBackend};
use kiban_store::{Store, StoreOptions};
use serde::Serialize;
use uuid::Uuid;

use crate::latency::Latencies;

/// Streams the benchmark spreads its appends over: many, like a real store
/// (one per certification, insured person, office), so that the writer's
/// version cache and the `(stream, version)` index do real work.
pub const BENCH_STREAMS: u64 = 10_000;

/// Most concurrent writers a run accepts: each naive writer holds a database
/// connection, and PostgreSQL's default `max_connections` is 100.
pub const BENCH_WRITERS_MAX: usize = 90;

/// Rows per chunk handed to the database by the raw baseline.
const RAW_CHUNK_EVENTS: u64 = 1000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct AppendBenchOptions {
    pub backend: ScratchBackend,
    /// Concurrent appending tasks (1..=[`BENCH_WRITERS_MAX`]).
    pub writers: usize,
    /// Events per append (1..=`EVENTS_PER_APPEND_MAX`).
    pub batch: usize,
    /// Events in all.
    pub events: u64,
}

/// The figures of one run; serialises to exactly the keys `kiban bench
/// append --json` promises.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppendBenchReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub events: u64,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub naive_events_per_s: f64,
    pub raw_events_per_s: f64,
}

impl fmt::Display for AppendBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "append benchmark on {} ({} events)",
            self.backend, self.events
        )?;
        writeln!(
            f,
            "  kiban store: {:>10.0} events/s   append latency p50 {:.2} ms, p99 {:.2} ms",
            self.events_per_s, self.p50_ms, self.p99_ms
        )?;
        writeln!(
            f,
            "  naive:       {:>10.0} events/s   (store = {:.1}x naive)",
            self.naive_events_per_s,
            self.events_per_s / self.naive_events_per_s
        )?;
        write!(
            f,
            "  raw bulk:    {:>10.0} events/s   (store = {:.0}% of raw)",
            self.raw_events_per_s,
            100.0 * self.events_per_s / self.raw_events_per_s
        )
    }
}

/// Runs the benchmark on a scratch database, removed afterwards.
pub async fn bench_append(options: AppendBenchOptions) -> anyhow::Result<AppendBenchReport> {
    anyhow::ensure!(
        (1..=BENCH_WRITERS_MAX).contains(&options.writers)
            && (1..=kiban_events::envelope::EVENTS_PER_APPEND_MAX).contains(&options.batch)
            && options.events > 0,
        "writers must be 1-{BENCH_WRITERS_MAX}, batch 1-{}, events at least 1",
        kiban_events::envelope::EVENTS_PER_APPEND_MAX
    );
    let scratch = Scratch::create(&options.backend, "kiban_bench").await?;
    let outcome = run_all(&scratch, &options).await;
    scratch.remove().await;
    outcome
}

async fn run_all(
    scratch: &Scratch,
    options: &AppendBenchOptions,
) -> anyhow::Result<AppendBenchReport> {
    let store = Store::open(scratch.url(), StoreOptions::default()).await?;
    let (elapsed, latencies) = run_store(&store, options).await?;
    store.close().await;
    let workload = Arc::new(options.clone());
    let naive = baseline::naive(scratch, options.writers, {
        let workload = workload.clone();
        Arc::new(move |index| baseline_append(&workload, index))
    })
    .await
    .context("the naive baseline")?;
    let now = store_now();
    let chunks = (0..options.events)
        .step_by(RAW_CHUNK_EVENTS as usize)
        .map(|start| {
            (start..(start + RAW_CHUNK_EVENTS).min(options.events))
                .map(|n| baseline_row(options, n, now))
                .collect()
        });
    let raw = baseline::raw(scratch, chunks)
        .await
        .context("the raw baseline")?;
    let rate = |elapsed: Duration| options.events as f64 / elapsed.as_secs_f64();
    Ok(AppendBenchReport {
        bench: "append",
        backend: scratch.backend_name(),
        events: options.events,
        events_per_s: rate(elapsed),
        p50_ms: latencies.percentile_ms(0.50),
        p99_ms: latencies.percentile_ms(0.99),
        naive_events_per_s: rate(naive),
        raw_events_per_s: rate(raw),
    })
}

/// How many appends carry the `events` (the last one may be shorter).
fn append_count(options: &AppendBenchOptions) -> u64 {
    options.events.div_ceil(options.batch as u64)
}

/// The event numbers of append `index`, or `None` past the last append.
fn append_range(options: &AppendBenchOptions, index: u64) -> Option<std::ops::Range<u64>> {
    if index >= append_count(options) {
        return None;
    }
    let first = index * options.batch as u64;
    Some(first..(first + options.batch as u64).min(options.events))
}

/// A ~300-byte payload shaped like a certification decision.
fn bench_event(n: u64, now: DateTime<Utc>) -> NewEvent {
    let payload = format!(
        r#"{{"insurer":"131016","insured":"{:010}","application":"131016-2026-{:06}","level":"care_2","valid_from":"2026-04-01","valid_to":"2027-03-31","decided_by":"committee","reason":"The certification committee decided the level after the second assessment.","n":{n}}}"#,
        n % 9_999_999_999,
        n % 1_000_000
    );
    NewEvent {
        event_id: EventId::from_uuid(Uuid::now_v7()).expect("v7 ids are not nil"),
        event_type: EventType::parse("certification.decided").expect("valid"),
        schema_version: 1,
        occurred_at: now,
        actor: Actor::parse("insurer:131016").expect("valid"),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: Payload::from_json(&payload).expect("an object"),
    }
}

fn bench_stream(index: u64) -> StreamName {
    StreamName::new("certification", &format!("bench-{}", index % BENCH_STREAMS)).expect("valid")
}

/// `now` at the store's precision (microseconds), as recorded rows hold it.
fn store_now() -> DateTime<Utc> {
    kiban_events::envelope::to_store_precision(Utc::now())
}

/// The baseline row for event `n` (0-based) of the run: the row the store
/// would have written for it, with placeholder hashes.
fn baseline_row(options: &AppendBenchOptions, n: u64, now: DateTime<Utc>) -> RecordedEvent {
    let batch = options.batch as u64;
    let append = n / batch;
    let event = bench_event(n, now);
    RecordedEvent {
        position: n + 1,
        stream: bench_stream(append),
        version: (append / BENCH_STREAMS) * batch + n % batch + 1,
        event_id: event.event_id,
        event_type: event.event_type,
        schema_version: event.schema_version,
        occurred_at: now,
        recorded_at: now,
        actor: event.actor,
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        payload: event.payload,
        prev_hash: Hash([1; 32]),
        hash: Hash([2; 32]),
    }
}

/// The baseline rows of append `index`.
fn baseline_append(options: &AppendBenchOptions, index: u64) -> Option<Vec<RecordedEvent>> {
    let now = store_now();
    append_range(options, index).map(|range| range.map(|n| baseline_row(options, n, now)).collect())
}

/// Appends everything through the store; returns the wall time and the
/// appends' latencies.
async fn run_store(
    store: &Store,
    options: &AppendBenchOptions,
) -> anyhow::Result<(Duration, Latencies)> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.writers {
        let (store, next, options) = (store.clone(), next.clone(), options.clone());
        tasks.spawn(async move {
            let mut latencies = Latencies::new();
            let index = || next.fetch_add(1, Ordering::Relaxed);
            while let Some(range) = append_range(&options, index()) {
                let stream = bench_stream(range.start / options.batch as u64);
                let now = Utc::now();
                let events = range.map(|n| bench_event(n, now)).collect();
                let begun = Instant::now();
                store.append(&stream, ExpectedVersion::Any, events).await?;
                latencies.record(begun.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Latencies::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.merge(&joined??);
    }
    Ok((started.elapsed(), latencies))
}
