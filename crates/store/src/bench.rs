//! The append benchmark behind `kiban bench append` (a program, not a test).
//!
//! [`bench_append`] appends `events` events of a ~300-byte JSON payload from
//! `writers` concurrent tasks through a [`Store`], `batch` events per append,
//! over many streams, and reports throughput and append latency. In the same
//! run, on the same fresh database, it measures two baselines that write the
//! same rows into fresh tables of the same schema:
//!
//! - **naive**: one `INSERT` per event and one transaction per append, from
//!   `writers` concurrent connections (what an event store without a single
//!   writer does, minus its gap handling);
//! - **raw**: the database's bulk path with one commit — PostgreSQL `COPY`,
//!   SQLite one transaction of single-row inserts — the ceiling for durable
//!   writes of these rows on this machine.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiban_events::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload, StreamName};
use serde::Serialize;
use sqlx::{Connection, Executor};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::{Store, StoreOptions};

/// Streams the benchmark spreads its appends over: many, like a real store
/// (one per certification, insured person, office), so that the writer's
/// version cache and the `(stream, version)` index do real work.
pub const BENCH_STREAMS: u64 = 10_000;

/// Most concurrent writers a run accepts: each naive writer holds a database
/// connection, and PostgreSQL's default `max_connections` is 100.
pub const BENCH_WRITERS_MAX: usize = 90;

/// Where the benchmark runs.
#[derive(Debug, Clone)]
pub enum BenchBackend {
    /// A PostgreSQL server, as the URL of a database on it from which the
    /// benchmark may create (and afterwards drops) `kiban_bench_<random>`.
    Postgres { server_url: String },
    /// A directory in which the benchmark creates (and afterwards deletes) a
    /// fresh SQLite file.
    Sqlite { directory: std::path::PathBuf },
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct AppendBenchOptions {
    pub backend: BenchBackend,
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

/// Runs the benchmark; see the module documentation.
pub async fn bench_append(options: AppendBenchOptions) -> Result<AppendBenchReport> {
    if !(1..=BENCH_WRITERS_MAX).contains(&options.writers)
        || !(1..=kiban_events::envelope::EVENTS_PER_APPEND_MAX).contains(&options.batch)
        || options.events == 0
    {
        return Err(Error::Invalid(format!(
            "writers must be 1-{BENCH_WRITERS_MAX}, batch 1-{}, events at least 1",
            kiban_events::envelope::EVENTS_PER_APPEND_MAX
        )));
    }
    let scratch = Scratch::create(&options.backend).await?;
    let outcome = run_all(&scratch, &options).await;
    scratch.remove().await;
    outcome
}

async fn run_all(scratch: &Scratch, options: &AppendBenchOptions) -> Result<AppendBenchReport> {
    let store = Store::open(&scratch.url, StoreOptions::default()).await?;
    let (elapsed, mut latencies) = run_store(&store, options).await?;
    store.close().await;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index].as_secs_f64() * 1000.0
    };
    let naive = baseline::naive(scratch, options).await?;
    let raw = baseline::raw(scratch, options).await?;
    let rate = |elapsed: Duration| options.events as f64 / elapsed.as_secs_f64();
    Ok(AppendBenchReport {
        bench: "append",
        backend: scratch.backend_name(),
        events: options.events,
        events_per_s: rate(elapsed),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        naive_events_per_s: rate(naive),
        raw_events_per_s: rate(raw),
    })
}

/// How many appends carry the `events` (the last one may be shorter).
fn append_count(options: &AppendBenchOptions) -> u64 {
    options.events.div_ceil(options.batch as u64)
}

/// The events of append `index`.
fn append_events(options: &AppendBenchOptions, index: u64, now: DateTime<Utc>) -> Vec<NewEvent> {
    let first = index * options.batch as u64;
    let last = (first + options.batch as u64).min(options.events);
    (first..last).map(|n| bench_event(n, now)).collect()
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

/// Appends everything through the store; returns the wall time and each
/// append's latency.
async fn run_store(
    store: &Store,
    options: &AppendBenchOptions,
) -> Result<(Duration, Vec<Duration>)> {
    let next = Arc::new(AtomicU64::new(0));
    let appends = append_count(options);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.writers {
        let (store, next, options) = (store.clone(), next.clone(), options.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= appends {
                    return Ok::<_, Error>(latencies);
                }
                let events = append_events(&options, index, Utc::now());
                let begun = Instant::now();
                store
                    .append(&bench_stream(index), ExpectedVersion::Any, events)
                    .await?;
                latencies.push(begun.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined.map_err(|e| Error::Invalid(format!("bench task: {e}")))??);
    }
    Ok((started.elapsed(), latencies))
}

/// What [`read_raw`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RawRead {
    /// Rows read.
    pub events: u64,
    /// Bytes of their stored fields (ids, times and numbers not counted).
    pub bytes: u64,
    /// Bytes of their payloads.
    pub payload_bytes: u64,
}

/// Streams every row of `from..=to` out of the database as stored, without
/// parsing or hashing: the scan under [`Store::verify`] and
/// [`Store::read_range`] on its own, for `kiban bench replay`.
pub async fn read_raw(store: &Store, from: u64, to: u64) -> Result<RawRead> {
    let mut scan = crate::scan::Scan::start(store.readers(), from, to);
    let mut read = RawRead {
        events: 0,
        bytes: 0,
        payload_bytes: 0,
    };
    let mut next = from.max(1);
    while let Some(batch) = scan.next().await {
        let batch = batch?;
        for row in batch.rows() {
            if row.position() != next {
                return Err(Error::Corrupted {
                    position: next,
                    reason: format!("position {next} is missing (found {})", row.position()),
                });
            }
            read.payload_bytes += batch.payload(row).len() as u64;
            next += 1;
        }
        read.events += batch.rows().len() as u64;
        read.bytes += batch.byte_len() as u64;
        scan.recycle(batch);
    }
    Ok(read)
}

/// The fresh database of one benchmark run, removed afterwards (also used
/// by the other benchmarks of the `kiban` binary).
pub struct Scratch {
    url: String,
    kind: ScratchKind,
}

enum ScratchKind {
    Postgres { server_url: String, name: String },
    Sqlite { path: std::path::PathBuf },
}

impl Scratch {
    /// Creates `kiban_bench_<random>` on the server, or names a fresh file
    /// in the directory.
    pub async fn create(backend: &BenchBackend) -> Result<Scratch> {
        let name = format!("kiban_bench_{}", Uuid::new_v4().simple());
        match backend {
            BenchBackend::Postgres { server_url } => {
                let mut admin = sqlx::PgConnection::connect(server_url).await?;
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await?;
                let _ = admin.close().await;
                let (base, _) = server_url.rsplit_once('/').ok_or_else(|| {
                    Error::Invalid("the PostgreSQL URL must end with /database".to_owned())
                })?;
                Ok(Scratch {
                    url: format!("{base}/{name}"),
                    kind: ScratchKind::Postgres {
                        server_url: server_url.clone(),
                        name,
                    },
                })
            }
            BenchBackend::Sqlite { directory } => {
                let path = directory.join(format!("{name}.db"));
                Ok(Scratch {
                    url: format!("sqlite://{}", path.display()),
                    kind: ScratchKind::Sqlite { path },
                })
            }
        }
    }

    /// The store URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `postgres` or `sqlite`.
    pub fn backend_name(&self) -> &'static str {
        match self.kind {
            ScratchKind::Postgres { .. } => "postgres",
            ScratchKind::Sqlite { .. } => "sqlite",
        }
    }

    /// Best effort: a leftover scratch database is harmless.
    pub async fn remove(&self) {
        match &self.kind {
            ScratchKind::Postgres { server_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(server_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = admin.execute(sql.as_str()).await;
                    let _ = admin.close().await;
                }
            }
            ScratchKind::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm", ".writer-lock"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }
}

/// The two baselines. They write the same rows as the store (positions,
/// versions, payloads; the hashes are placeholders, since computing a chain
/// needs exactly the serialisation the baselines do without).
mod baseline {
    use std::str::FromStr;

    use kiban_events::{Hash, RecordedEvent};
    use sqlx::ConnectOptions as _;
    use sqlx::postgres::PgPoolOptions;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    use super::*;

    /// The baseline row for event `n` (0-based) of the run.
    fn row(options: &AppendBenchOptions, n: u64, now: DateTime<Utc>) -> RecordedEvent {
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

    fn now() -> DateTime<Utc> {
        kiban_events::envelope::to_store_precision(Utc::now())
    }

    /// The migration of `events`, renamed to `table`: same columns, same
    /// constraints, same indexes.
    fn schema(scratch: &Scratch, table: &str) -> String {
        let sql = match scratch.kind {
            ScratchKind::Postgres { .. } => include_str!("../migrations/postgres/0001_events.sql"),
            ScratchKind::Sqlite { .. } => include_str!("../migrations/sqlite/0001_events.sql"),
        };
        sql.replace("events", table)
    }

    fn sqlite_options(url: &str) -> Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(60)))
    }

    const NAIVE_INSERT_POSTGRES: &str = "INSERT INTO bench_naive (position, stream, version, \
         event_id, event_type, schema_version, occurred_at, recorded_at, actor, correlation_id, \
         causation_id, payload, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

    const NAIVE_INSERT_SQLITE: &str = "INSERT INTO bench_naive (position, stream, version, \
         event_id, event_type, schema_version, occurred_at, recorded_at, actor, correlation_id, \
         causation_id, payload, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

    /// One INSERT per event, one transaction per append, `writers` connections.
    pub(super) async fn naive(scratch: &Scratch, options: &AppendBenchOptions) -> Result<Duration> {
        let writers = options.writers as u32;
        match scratch.kind {
            ScratchKind::Postgres { .. } => {
                let pool = PgPoolOptions::new()
                    .max_connections(writers)
                    .connect(&scratch.url)
                    .await?;
                sqlx::raw_sql(&schema(scratch, "bench_naive"))
                    .execute(&pool)
                    .await?;
                let elapsed = run_naive(options, {
                    let pool = pool.clone();
                    move |rows| {
                        let pool = pool.clone();
                        async move {
                            let mut tx = pool.begin().await?;
                            for e in rows {
                                bind_naive_postgres(e).execute(&mut *tx).await?;
                            }
                            tx.commit().await
                        }
                    }
                })
                .await?;
                pool.close().await;
                Ok(elapsed)
            }
            ScratchKind::Sqlite { .. } => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(writers)
                    .connect_with(sqlite_options(&scratch.url)?)
                    .await?;
                sqlx::raw_sql(&schema(scratch, "bench_naive"))
                    .execute(&pool)
                    .await?;
                let elapsed = run_naive(options, {
                    let pool = pool.clone();
                    move |rows| {
                        let pool = pool.clone();
                        async move {
                            let mut tx = pool.begin().await?;
                            for e in rows {
                                bind_naive_sqlite(e).execute(&mut *tx).await?;
                            }
                            tx.commit().await
                        }
                    }
                })
                .await?;
                pool.close().await;
                Ok(elapsed)
            }
        }
    }

    /// Runs `writers` tasks that each claim appends and write them with
    /// `write_append` until all are written; returns the wall time.
    async fn run_naive<F, Fut>(options: &AppendBenchOptions, write_append: F) -> Result<Duration>
    where
        F: Fn(Vec<RecordedEvent>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Result<(), sqlx::Error>> + Send,
    {
        let next = Arc::new(AtomicU64::new(0));
        let appends = append_count(options);
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for _ in 0..options.writers {
            let (next, options, write_append) =
                (next.clone(), options.clone(), write_append.clone());
            tasks.spawn(async move {
                while let Some(rows) = claim(&next, appends, &options) {
                    write_append(rows).await?;
                }
                Ok::<_, sqlx::Error>(())
            });
        }
        join(tasks).await?;
        Ok(started.elapsed())
    }

    fn bind_naive_sqlite(
        e: RecordedEvent,
    ) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'static>> {
        sqlx::query(NAIVE_INSERT_SQLITE)
            .bind(e.position as i64)
            .bind(e.stream.as_str().to_owned())
            .bind(e.version as i64)
            .bind(*e.event_id.as_uuid())
            .bind(e.event_type.as_str().to_owned())
            .bind(i64::from(e.schema_version))
            .bind(e.occurred_at.timestamp_micros())
            .bind(e.recorded_at.timestamp_micros())
            .bind(e.actor.to_string())
            .bind(e.correlation_id)
            .bind(e.causation_id)
            .bind(e.payload.as_str().to_owned())
            .bind(e.prev_hash.0.to_vec())
            .bind(e.hash.0.to_vec())
    }

    fn bind_naive_postgres(
        e: RecordedEvent,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(NAIVE_INSERT_POSTGRES)
            .bind(e.position as i64)
            .bind(e.stream.as_str().to_owned())
            .bind(e.version as i64)
            .bind(*e.event_id.as_uuid())
            .bind(e.event_type.as_str().to_owned())
            .bind(i32::from(e.schema_version))
            .bind(e.occurred_at)
            .bind(e.recorded_at)
            .bind(e.actor.to_string())
            .bind(e.correlation_id)
            .bind(e.causation_id)
            .bind(e.payload.as_str().to_owned())
            .bind(e.prev_hash.0.to_vec())
            .bind(e.hash.0.to_vec())
    }

    /// The rows of the next unclaimed append, if any.
    fn claim(
        next: &AtomicU64,
        appends: u64,
        options: &AppendBenchOptions,
    ) -> Option<Vec<RecordedEvent>> {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= appends {
            return None;
        }
        let first = index * options.batch as u64;
        let last = (first + options.batch as u64).min(options.events);
        let now = now();
        Some((first..last).map(|n| row(options, n, now)).collect())
    }

    async fn join(mut tasks: tokio::task::JoinSet<Result<(), sqlx::Error>>) -> Result<()> {
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| Error::Invalid(format!("bench task: {e}")))??;
        }
        Ok(())
    }

    /// Rows per chunk handed to the database by the raw baseline.
    const RAW_CHUNK_EVENTS: u64 = 1000;

    /// The bulk path: PostgreSQL `COPY`, SQLite one transaction of
    /// multi-row inserts; one commit in both.
    pub(super) async fn raw(scratch: &Scratch, options: &AppendBenchOptions) -> Result<Duration> {
        match scratch.kind {
            ScratchKind::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&scratch.url).await?;
                sqlx::raw_sql(&schema(scratch, "bench_raw"))
                    .execute(&mut conn)
                    .await?;
                let started = Instant::now();
                let mut copy = conn
                    .copy_in_raw(
                        "COPY bench_raw (position, stream, version, event_id, event_type, \
                         schema_version, occurred_at, recorded_at, actor, correlation_id, \
                         causation_id, payload, prev_hash, hash) FROM STDIN",
                    )
                    .await?;
                let now = now();
                let mut chunk = Vec::with_capacity(1 << 20);
                for start in (0..options.events).step_by(RAW_CHUNK_EVENTS as usize) {
                    chunk.clear();
                    for n in start..(start + RAW_CHUNK_EVENTS).min(options.events) {
                        copy_text_line(&mut chunk, &row(options, n, now));
                    }
                    copy.send(chunk.as_slice()).await?;
                }
                copy.finish().await?;
                let elapsed = started.elapsed();
                let _ = conn.close().await;
                Ok(elapsed)
            }
            ScratchKind::Sqlite { .. } => {
                let mut conn = sqlite_options(&scratch.url)?.connect().await?;
                sqlx::raw_sql(&schema(scratch, "bench_raw"))
                    .execute(&mut conn)
                    .await?;
                let started = Instant::now();
                let mut tx = conn.begin().await?;
                let now = now();
                for start in (0..options.events).step_by(RAW_CHUNK_EVENTS as usize) {
                    let rows: Vec<RecordedEvent> = (start
                        ..(start + RAW_CHUNK_EVENTS).min(options.events))
                        .map(|n| row(options, n, now))
                        .collect();
                    crate::backend::sqlite::insert_into(&mut tx, "bench_raw", &rows).await?;
                }
                tx.commit().await?;
                let elapsed = started.elapsed();
                let _ = conn.close().await;
                Ok(elapsed)
            }
        }
    }

    /// One row in `COPY ... FROM STDIN` text format.
    fn copy_text_line(out: &mut Vec<u8>, e: &RecordedEvent) {
        use std::io::Write as _;
        let text = |out: &mut Vec<u8>, value: &str| {
            for byte in value.bytes() {
                match byte {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    other => out.push(other),
                }
            }
            out.push(b'\t');
        };
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        write!(out, "{}\t", e.position).expect("in memory");
        text(out, e.stream.as_str());
        write!(out, "{}\t{}\t", e.version, e.event_id).expect("in memory");
        text(out, e.event_type.as_str());
        write!(
            out,
            "{}\t{}\t{}\t",
            e.schema_version,
            time(e.occurred_at),
            time(e.recorded_at)
        )
        .expect("in memory");
        text(out, &e.actor.to_string());
        write!(out, "{}\t\\N\t", e.correlation_id).expect("in memory");
        text(out, e.payload.as_str());
        writeln!(out, "\\\\x{}\t\\\\x{}", e.prev_hash, e.hash).expect("in memory");
    }
}
