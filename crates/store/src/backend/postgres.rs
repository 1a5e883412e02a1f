//! PostgreSQL: the queries of the store.
//!
//! The writer inserts a whole batch with one `INSERT ... SELECT FROM UNNEST`
//! of column arrays: one statement, so one implicit transaction and one
//! round trip, whatever the batch size. The same statement notifies
//! [`HEAD_CHANNEL`], delivered to listeners only when it commits.

use chrono::{DateTime, Utc};
use kiban_events::RecordedEvent;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::{
    POSTGRES_EVENTS_FROM as EVENTS, POSTGRES_READ_ALL_COLUMNS,
    POSTGRES_READ_COLUMNS as EVENT_COLUMNS, RawEvent, to_i64,
};
use crate::compact::{self, Stored};
use crate::error::Result;

/// The advisory lock key whose holder is the writer of a database: the
/// bytes `kibanwri` read as a big-endian i64. Advisory locks are scoped to a
/// database, so each database has its own writer.
pub(crate) const WRITER_LOCK_KEY: i64 = i64::from_be_bytes(*b"kibanwri");

/// The notification channel on which the writer announces each commit's last
/// position, so that subscriptions in other processes wake up.
pub(crate) const HEAD_CHANNEL: &str = "kiban_events_head";

pub(crate) async fn try_lock_writer(conn: &mut PgConnection) -> Result<bool> {
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(WRITER_LOCK_KEY)
        .fetch_one(conn)
        .await?;
    Ok(locked)
}

fn decode(row: &PgRow) -> Result<RawEvent, sqlx::Error> {
    Ok(RawEvent {
        position: row.try_get(0)?,
        stream: row.try_get(1)?,
        version: row.try_get(2)?,
        event_id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        schema_version: i64::from(row.try_get::<i32, _>(5)?),
        occurred_at_micros: row.try_get::<DateTime<Utc>, _>(6)?.timestamp_micros(),
        recorded_at_micros: row.try_get::<DateTime<Utc>, _>(7)?.timestamp_micros(),
        actor: row.try_get(8)?,
        correlation_id: row.try_get(9)?,
        causation_id: row.try_get(10)?,
        payload: row.try_get(11)?,
        hash: row.try_get(12)?,
        prev_hash: row.try_get(13)?,
    })
}

async fn fetch_events<'c>(
    executor: impl PgExecutor<'c>,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    query
        .fetch_all(executor)
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub(crate) async fn read_all<'c>(
    executor: impl PgExecutor<'c>,
    from: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {POSTGRES_READ_ALL_COLUMNS} FROM {EVENTS} WHERE e.position >= $1 \
         ORDER BY e.position LIMIT $2"
    );
    fetch_events(executor, sqlx::query(&sql).bind(from).bind(limit)).await
}

pub(crate) async fn read_stream<'c>(
    executor: impl PgExecutor<'c>,
    stream: &str,
    from: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM {EVENTS} WHERE e.stream = $1 AND e.version >= $2 \
         ORDER BY e.version LIMIT $3"
    );
    fetch_events(
        executor,
        sqlx::query(&sql).bind(stream).bind(from).bind(limit),
    )
    .await
}

pub(crate) async fn head<'c>(
    executor: impl PgExecutor<'c>,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(executor)
        .await
}

/// One backward index probe per stream (`max` over the `(stream, version)`
/// index), whatever the table statistics say: a fresh, unanalysed table must
/// not tempt the planner into a sequential scan of the whole log.
pub(crate) async fn stream_versions(
    conn: &mut PgConnection,
    streams: &[&str],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT s.stream, (SELECT e.version FROM events e WHERE e.stream = s.stream \
             ORDER BY e.version DESC LIMIT 1) \
         FROM unnest($1::text[]) AS s(stream)",
    )
    .bind(streams)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(stream, version)| Some((stream, version?)))
        .collect())
}

pub(crate) async fn events_by_id(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM {EVENTS} WHERE e.event_id = ANY($1::uuid[])");
    fetch_events(conn, sqlx::query(&sql).bind(ids)).await
}

/// The batch insert: every column as one array, unnested into rows, in
/// position order. The event types and actors of the batch that
/// `event_names` does not have yet are added to it by the same statement
/// (the single writer is the only one adding names, and a failed statement
/// adds none), and rows carry their ids. A payload is stored as its text or
/// as a zstd frame ([`compact::store`]), as bytes either way.
const INSERT_SQL: &str = "WITH batch AS MATERIALIZED ( \
     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::uuid[], $5::text[], \
         $6::int4[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::uuid[], \
         $11::uuid[], $12::bytea[], $13::bytea[]) \
     AS b(position, stream, version, event_id, event_type, schema_version, occurred_at, \
         recorded_at, actor, correlation_id, causation_id, payload, hash)), \
     wanted AS (SELECT event_type AS name FROM batch UNION SELECT actor FROM batch), \
     added AS ( \
     INSERT INTO event_names (name) \
     SELECT w.name FROM wanted w \
     WHERE NOT EXISTS (SELECT 1 FROM event_names n WHERE n.name = w.name) \
     ORDER BY w.name \
     RETURNING id, name), \
     names AS ( \
     SELECT id, name FROM added \
     UNION ALL SELECT n.id, n.name FROM event_names n JOIN wanted w ON w.name = n.name), \
     inserted AS ( \
     INSERT INTO events (position, version, occurred_at, recorded_at, event_type_id, actor_id, \
         schema_version, event_id, correlation_id, stream, hash, payload, causation_id) \
     SELECT b.position, b.version, b.occurred_at, b.recorded_at, t.id, a.id, b.schema_version, \
         b.event_id, b.correlation_id, b.stream, b.hash, b.payload, b.causation_id \
     FROM batch b JOIN names t ON t.name = b.event_type JOIN names a ON a.name = b.actor \
     ORDER BY b.position \
     RETURNING 1) \
     SELECT (SELECT count(*) FROM inserted) FROM (SELECT pg_notify($14, $15)) AS notified";

pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<u64, sqlx::Error> {
    let column = |f: fn(&RecordedEvent) -> i64| events.iter().map(f).collect::<Vec<i64>>();
    let actors: Vec<String> = events.iter().map(|e| e.actor.to_string()).collect();
    let last = events.last().expect("a batch is never empty").position;
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|e| match compact::store(e.payload.as_str()) {
            Stored::Text(text) => text.as_bytes().to_vec(),
            Stored::Compressed(frame) => frame,
        })
        .collect();
    let (inserted,): (i64,) = sqlx::query_as(INSERT_SQL)
        .bind(column(|e| to_i64(e.position)))
        .bind(events.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>())
        .bind(column(|e| to_i64(e.version)))
        .bind(
            events
                .iter()
                .map(|e| *e.event_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| i32::from(e.schema_version))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(actors)
        .bind(events.iter().map(|e| e.correlation_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.causation_id).collect::<Vec<_>>())
        .bind(payloads)
        .bind(events.iter().map(|e| &e.hash.0[..]).collect::<Vec<_>>())
        .bind(HEAD_CHANNEL)
        .bind(last.to_string())
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}
