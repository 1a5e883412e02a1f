//! SQLite: the queries of the store.
//!
//! SQLite has no array parameters, so a batch travels as one JSON text
//! parameter unpacked with `json_each`: the insert of a whole batch is one
//! statement (one implicit transaction, one fsync of the WAL), and its SQL
//! never changes, so it is prepared once. Ids and hashes travel as hex and
//! are stored as raw bytes (`unhex`); the payload travels as a JSON string,
//! which `->>` turns back into exactly the original text.

use std::io::Write as _;

use kiban_events::RecordedEvent;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqliteExecutor};
use uuid::Uuid;

use super::{RawEvent, SQLITE_READ_ALL_COLUMNS, SQLITE_READ_COLUMNS as EVENT_COLUMNS};
use crate::compact::{self, Stored};

/// Takes the writer lock of a SQLite database unless already held: an
/// exclusive, non-blocking `flock` on `<database file>.writer-lock`. Another
/// store holding it (in this process or another) makes this one a reader.
pub(crate) fn try_lock_writer(
    lock_path: Option<&std::path::Path>,
    lock: &mut Option<std::fs::File>,
) -> crate::error::Result<bool> {
    let Some(path) = lock_path else {
        return Ok(true);
    };
    if lock.is_some() {
        return Ok(true);
    }
    let unavailable = |e: std::io::Error| {
        crate::error::Error::Unavailable(format!("writer lock file {}: {e}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(unavailable)?;
    match file.try_lock() {
        Ok(()) => {
            *lock = Some(file);
            Ok(true)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(unavailable(e)),
    }
}

/// The writer lock file of the database at `options`, `None` in memory.
pub(crate) fn writer_lock_path(
    options: &sqlx::sqlite::SqliteConnectOptions,
) -> Option<std::path::PathBuf> {
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
        return None;
    }
    let mut path = file.as_os_str().to_owned();
    path.push(".writer-lock");
    Some(path.into())
}

fn decode(row: &SqliteRow) -> Result<RawEvent, sqlx::Error> {
    Ok(RawEvent {
        position: row.try_get(0)?,
        stream: row.try_get(1)?,
        version: row.try_get(2)?,
        event_id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        schema_version: row.try_get(5)?,
        occurred_at_micros: row.try_get(6)?,
        recorded_at_micros: row.try_get(7)?,
        actor: row.try_get(8)?,
        correlation_id: row.try_get(9)?,
        causation_id: row.try_get(10)?,
        // TEXT (the JSON as appended) or BLOB (a zstd frame): the bytes
        // either way, whichever storage class the row has.
        payload: row.try_get_unchecked(11)?,
        hash: row.try_get(12)?,
        prev_hash: row.try_get(13)?,
    })
}

async fn fetch_events<'c, 'q>(
    executor: impl SqliteExecutor<'c>,
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    query
        .fetch_all(executor)
        .await?
        .iter()
        .map(decode)
        .collect()
}

pub(crate) async fn read_all<'c>(
    executor: impl SqliteExecutor<'c>,
    from: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {SQLITE_READ_ALL_COLUMNS} FROM events e WHERE e.position >= ?1 \
         ORDER BY e.position LIMIT ?2"
    );
    fetch_events(executor, sqlx::query(&sql).bind(from).bind(limit)).await
}

pub(crate) async fn read_stream<'c>(
    executor: impl SqliteExecutor<'c>,
    stream: &str,
    from: i64,
    limit: i64,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream = ?1 AND e.version >= ?2 \
         ORDER BY e.version LIMIT ?3"
    );
    fetch_events(
        executor,
        sqlx::query(&sql).bind(stream).bind(from).bind(limit),
    )
    .await
}

pub(crate) async fn head<'c>(
    executor: impl SqliteExecutor<'c>,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(executor)
        .await
}

fn json_array<T: serde::Serialize>(values: &[T]) -> String {
    serde_json::to_string(values).expect("strings serialise to JSON")
}

pub(crate) async fn stream_versions(
    conn: &mut SqliteConnection,
    streams: &[&str],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stream, max(version) FROM events \
         WHERE stream IN (SELECT value FROM json_each(?1)) GROUP BY stream",
    )
    .bind(json_array(streams))
    .fetch_all(conn)
    .await
}

pub(crate) async fn events_by_id(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
) -> Result<Vec<RawEvent>, sqlx::Error> {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e \
         WHERE e.event_id IN (SELECT unhex(value) FROM json_each(?1))"
    );
    fetch_events(conn, sqlx::query(&sql).bind(json_array(&hex))).await
}

/// The batch insert: one JSON array of rows, each row an array of columns.
/// `{table}` is `events` except in the benchmark's baseline. The payload is
/// either column 11, the text, or column 13, a zstd frame in hex stored as a
/// BLOB ([`compact::store`]); the other one is null. Rows store no
/// `prev_hash` (migration 0010): it is the hash of the row before.
const INSERT_SQL: &str = "WITH batch AS MATERIALIZED (SELECT jsonb(value) AS v FROM json_each(?1)) \
     INSERT INTO {table} (position, stream, version, event_id, event_type, \
     schema_version, occurred_at, recorded_at, actor, correlation_id, causation_id, payload, \
     hash) \
     SELECT v->>0, v->>1, v->>2, unhex(v->>3), v->>4, v->>5, v->>6, v->>7, v->>8, \
         unhex(v->>9), unhex(v->>10), COALESCE(v->>11, unhex(v->>13)), unhex(v->>12) \
     FROM batch";

/// Encodes the batch as the JSON parameter of [`INSERT_SQL`].
fn encode_rows(events: &[RecordedEvent]) -> String {
    let mut out = Vec::with_capacity(events.len() * 512);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s).expect("in memory");
        write!(out, "[{},", e.position).expect("in memory");
        string(&mut out, e.stream.as_str());
        write!(out, ",{},\"{}\",", e.version, e.event_id.as_uuid().simple()).expect("in memory");
        string(&mut out, e.event_type.as_str());
        write!(
            out,
            ",{},{},{},",
            e.schema_version,
            e.occurred_at.timestamp_micros(),
            e.recorded_at.timestamp_micros()
        )
        .expect("in memory");
        string(&mut out, &e.actor.to_string());
        write!(out, ",\"{}\",", e.correlation_id.simple()).expect("in memory");
        match e.causation_id {
            Some(id) => write!(out, "\"{}\",", id.simple()).expect("in memory"),
            None => out.extend_from_slice(b"null,"),
        }
        let frame = match compact::store(e.payload.as_str()) {
            Stored::Text(text) => {
                string(&mut out, text);
                None
            }
            Stored::Compressed(frame) => {
                out.extend_from_slice(b"null");
                Some(frame)
            }
        };
        write!(out, ",\"{}\",", e.hash).expect("in memory");
        match frame {
            Some(frame) => write!(out, "\"{}\"]", hex::encode(frame)).expect("in memory"),
            None => out.extend_from_slice(b"null]"),
        }
    }
    out.push(b']');
    String::from_utf8(out).expect("JSON built from UTF-8 strings is UTF-8")
}

pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    events: &[RecordedEvent],
) -> Result<u64, sqlx::Error> {
    insert_into(conn, "events", events).await
}

/// Inserts `events` into `table` (of the `events` schema) in one statement.
pub(crate) async fn insert_into(
    conn: &mut SqliteConnection,
    table: &str,
    events: &[RecordedEvent],
) -> Result<u64, sqlx::Error> {
    let sql = INSERT_SQL.replace("{table}", table);
    let result = sqlx::query(&sql)
        .bind(encode_rows(events))
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}
