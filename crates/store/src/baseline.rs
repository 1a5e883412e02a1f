//! The two baselines `kiban bench append` (in `kiban-lab`) measures the
//! store against. They write the rows the benchmark hands them into fresh
//! tables with the schema of `events` (same columns, constraints and
//! indexes), in the database of a [`Scratch`]; they live here because only
//! this crate knows the log's SQL.
//!
//! - [`naive`]: one `INSERT` per event and one transaction per append, from
//!   `writers` concurrent connections (what an event store without a single
//!   writer does, minus its gap handling);
//! - [`raw`]: the database's bulk path with one commit — PostgreSQL `COPY`,
//!   SQLite one transaction of multi-row inserts — the ceiling for durable
//!   writes of these rows on this machine.
//!
//! The rows' hashes are whatever the caller puts there: computing a chain
//! needs exactly the serialisation the baselines do without.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kiban_events::RecordedEvent;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection};

use crate::error::{Error, Result};
use crate::scratch::Scratch;

/// The rows of append `index` (0-based), or `None` past the last append.
pub type Appends = Arc<dyn Fn(u64) -> Option<Vec<RecordedEvent>> + Send + Sync>;

/// The migrations of `events`, renamed to `table`: same columns, same
/// constraints, same indexes. On PostgreSQL the baselines keep the row
/// layout before migration 0010 (text event types and actors, `prev_hash`):
/// they measure what the database does with plain rows, without the
/// writer's name table.
fn schema(scratch: &Scratch, table: &str) -> String {
    let sql = if scratch.is_postgres() {
        include_str!("../migrations/postgres/0001_events.sql").to_owned()
    } else {
        [
            include_str!("../migrations/sqlite/0001_events.sql"),
            include_str!("../migrations/sqlite/0010_lean_events.sql"),
        ]
        .concat()
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
     causation_id, payload, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// One INSERT per event, one transaction per append, `writers` connections
/// each claiming the next append of `appends` until there is none; returns
/// the wall time.
pub async fn naive(scratch: &Scratch, writers: usize, appends: Appends) -> Result<Duration> {
    let connections = u32::try_from(writers.max(1))
        .map_err(|_| Error::Invalid(format!("too many writers: {writers}")))?;
    if scratch.is_postgres() {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(scratch.url())
            .await?;
        naive_on(scratch, pool, writers, appends, bind_naive_postgres).await
    } else {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(sqlite_options(scratch.url())?)
            .await?;
        naive_on(scratch, pool, writers, appends, bind_naive_sqlite).await
    }
}

/// [`naive`] on one backend's pool, binding each row with `bind`.
async fn naive_on<DB>(
    scratch: &Scratch,
    pool: sqlx::Pool<DB>,
    writers: usize,
    appends: Appends,
    bind: fn(RecordedEvent) -> sqlx::query::Query<'static, DB, DB::Arguments<'static>>,
) -> Result<Duration>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments<'static>: sqlx::IntoArguments<'static, DB>,
{
    sqlx::raw_sql(&schema(scratch, "bench_naive"))
        .execute(&pool)
        .await?;
    let elapsed = run_naive(writers, appends, {
        let pool = pool.clone();
        move |rows| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                for e in rows {
                    bind(e).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    })
    .await?;
    pool.close().await;
    Ok(elapsed)
}

/// Runs `writers` tasks that each claim appends and write them with
/// `write_append` until all are written; returns the wall time.
async fn run_naive<F, Fut>(writers: usize, appends: Appends, write_append: F) -> Result<Duration>
where
    F: Fn(Vec<RecordedEvent>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..writers.max(1) {
        let (next, appends, write_append) = (next.clone(), appends.clone(), write_append.clone());
        tasks.spawn(async move {
            while let Some(rows) = appends(next.fetch_add(1, Ordering::Relaxed)) {
                write_append(rows).await?;
            }
            Ok::<_, sqlx::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| Error::Invalid(format!("bench task: {e}")))??;
    }
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

/// The bulk path: PostgreSQL `COPY`, SQLite one transaction of multi-row
/// inserts; one commit in both. `chunks` yields the rows in order, a chunk
/// at a time (producing them is inside the measured time, as producing
/// events is for the store); returns the wall time.
pub async fn raw(
    scratch: &Scratch,
    chunks: impl Iterator<Item = Vec<RecordedEvent>>,
) -> Result<Duration> {
    if scratch.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(scratch.url()).await?;
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
        let mut text = Vec::with_capacity(1 << 20);
        for rows in chunks {
            text.clear();
            for row in &rows {
                copy_text_line(&mut text, row);
            }
            copy.send(text.as_slice()).await?;
        }
        copy.finish().await?;
        let elapsed = started.elapsed();
        let _ = conn.close().await;
        Ok(elapsed)
    } else {
        let mut conn = sqlite_options(scratch.url())?.connect().await?;
        sqlx::raw_sql(&schema(scratch, "bench_raw"))
            .execute(&mut conn)
            .await?;
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        for rows in chunks {
            crate::backend::sqlite::insert_into(&mut tx, "bench_raw", &rows).await?;
        }
        tx.commit().await?;
        let elapsed = started.elapsed();
        let _ = conn.close().await;
        Ok(elapsed)
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
    match e.causation_id {
        Some(causation) => write!(out, "{}\t{causation}\t", e.correlation_id),
        None => write!(out, "{}\t\\N\t", e.correlation_id),
    }
    .expect("in memory");
    text(out, e.payload.as_str());
    writeln!(out, "\\\\x{}\t\\\\x{}", e.prev_hash, e.hash).expect("in memory");
}
