//! The two database backends behind one small internal surface.
//!
//! Only this module and its children know SQL. [`Readers`] is the pool that
//! serves reads (any number of concurrent callers); [`WriterConnection`] is
//! the single connection the writer task owns. Both return [`RawEvent`]s:
//! rows as stored, not yet parsed, so that `verify` can hash exactly what is
//! in the database even when a field no longer parses.

pub(crate) mod audit;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use chrono::{TimeZone, Utc};
use kiban_events::{
    Actor, EventId, EventType, Hash, Payload, Position, RecordedEvent, StreamName, Version,
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The columns of a row in the order every query selects them, from
/// `events e` (and on PostgreSQL its names, [`POSTGRES_EVENTS_FROM`]): the
/// stored payload (text or zstd frame, [`crate::compact`]) is `e.payload` on
/// both backends since migration 0010, and the event type and actor are
/// `$event_type` and `$actor`. The scan under verification reads these; the
/// row-by-row reads add `prev_hash_column!`.
macro_rules! event_columns {
    ($event_type:literal, $actor:literal) => {
        concat!(
            "e.position, e.stream, e.version, e.event_id, ",
            $event_type,
            ", e.schema_version, e.occurred_at, e.recorded_at, ",
            $actor,
            ", e.correlation_id, e.causation_id, e.payload, e.hash"
        )
    };
}

/// The hash of the row before, which rows do not store (migration 0010):
/// one primary-key probe per row, NULL before position 1 (genesis) and
/// when that row is missing.
macro_rules! prev_hash_column {
    () => {
        "(SELECT p.hash FROM events p WHERE p.position = e.position - 1)"
    };
}

/// [`event_columns!`] on SQLite: the event type and actor are text columns.
pub(crate) const SQLITE_EVENT_COLUMNS: &str = event_columns!("e.event_type", "e.actor");

/// The row-by-row read's columns on SQLite: [`SQLITE_EVENT_COLUMNS`] and
/// the previous row's hash.
pub(crate) const SQLITE_READ_COLUMNS: &str = concat!(
    event_columns!("e.event_type", "e.actor"),
    ", ",
    prev_hash_column!()
);

/// The read of a page of the log on SQLite: [`SQLITE_READ_COLUMNS`], but
/// the previous row's hash only for the first row (`?1` is its position);
/// every other row's is the hash of the row read before it
/// ([`Readers::read_all`]).
pub(crate) const SQLITE_READ_ALL_COLUMNS: &str = concat!(
    event_columns!("e.event_type", "e.actor"),
    ", CASE WHEN e.position = ?1 THEN ",
    prev_hash_column!(),
    " END"
);

/// [`event_columns!`] on PostgreSQL: the event type and actor are names of
/// `event_names`, joined by [`POSTGRES_EVENTS_FROM`].
pub(crate) const POSTGRES_EVENT_COLUMNS: &str = event_columns!("t.name", "a.name");

/// The row-by-row read's columns on PostgreSQL: [`POSTGRES_EVENT_COLUMNS`]
/// and the previous row's hash.
pub(crate) const POSTGRES_READ_COLUMNS: &str = concat!(
    event_columns!("t.name", "a.name"),
    ", ",
    prev_hash_column!()
);

/// [`SQLITE_READ_ALL_COLUMNS`] on PostgreSQL (`$1` is the first position).
pub(crate) const POSTGRES_READ_ALL_COLUMNS: &str = concat!(
    event_columns!("t.name", "a.name"),
    ", CASE WHEN e.position = $1 THEN ",
    prev_hash_column!(),
    " END"
);

/// What PostgreSQL reads rows from: `events e` with the names of its event
/// type (`t`) and actor (`a`).
pub(crate) const POSTGRES_EVENTS_FROM: &str = "events e \
     JOIN event_names t ON t.id = e.event_type_id \
     JOIN event_names a ON a.id = e.actor_id";

/// One row of `events`, as stored.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub position: i64,
    pub stream: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i64,
    pub occurred_at_micros: i64,
    pub recorded_at_micros: i64,
    pub actor: String,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// As stored: the JSON text, or a zstd frame of it ([`crate::compact`]).
    pub payload: Vec<u8>,
    pub hash: Vec<u8>,
    /// The stored hash of the row at `position - 1`, which the row itself
    /// does not store (selected beside it, or carried along a scan): `None`
    /// when no such row exists, which is genesis at position 1 and a
    /// missing row anywhere else.
    pub prev_hash: Option<Vec<u8>>,
}

impl RawEvent {
    /// The position as the unsigned type of the envelope. The schema's CHECK
    /// keeps positions at 1 or more, so a negative value can only come from a
    /// change outside kiban; it maps to 0, which no real event has.
    pub fn position(&self) -> Position {
        u64::try_from(self.position).unwrap_or(0)
    }

    /// Parses the row into the envelope. A field that does not parse was
    /// changed outside kiban (everything was validated when appended).
    pub fn into_recorded(self) -> Result<RecordedEvent> {
        let position = self.position();
        let corrupted = |what: &str| Error::Corrupted {
            position,
            reason: format!("the stored {what} does not parse"),
        };
        let time = |micros: i64, what: &str| {
            Utc.timestamp_micros(micros)
                .single()
                .ok_or_else(|| corrupted(what))
        };
        Ok(RecordedEvent {
            position,
            stream: StreamName::parse(&self.stream).map_err(|_| corrupted("stream name"))?,
            version: u64::try_from(self.version).map_err(|_| corrupted("version"))?,
            event_id: EventId::from_uuid(self.event_id).map_err(|_| corrupted("event id"))?,
            event_type: EventType::parse(&self.event_type).map_err(|_| corrupted("event type"))?,
            schema_version: u16::try_from(self.schema_version)
                .map_err(|_| corrupted("schema version"))?,
            occurred_at: time(self.occurred_at_micros, "occurred_at")?,
            recorded_at: time(self.recorded_at_micros, "recorded_at")?,
            actor: Actor::parse(&self.actor).map_err(|_| corrupted("actor"))?,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            payload: Payload::from_stored(
                crate::compact::load(self.payload)
                    .map_err(|reason| Error::Corrupted { position, reason })?,
            ),
            prev_hash: match self.prev_hash {
                None if position == 1 => Hash::GENESIS,
                None => {
                    return Err(Error::Corrupted {
                        position: position - 1,
                        reason: format!("position {} is missing", position - 1),
                    });
                }
                Some(prev) => Hash::from_slice(&prev).ok_or_else(|| Error::Corrupted {
                    position: position - 1,
                    reason: "the stored hash is not 32 bytes".to_owned(),
                })?,
            },
            hash: Hash::from_slice(&self.hash).ok_or_else(|| corrupted("hash"))?,
        })
    }
}

/// The read side: a connection pool of either backend.
pub(crate) type Readers = crate::DbPool;

impl Readers {
    /// Events with `position >= from`, in position order, at most `limit`.
    ///
    /// The database selects the previous row's hash for the first row only;
    /// each other row gets the hash of the row before it in the page. Rows
    /// with a gap between them get a wrong one, and are never handed out:
    /// [`crate::Store::read_all`] refuses a page with a gap.
    pub(crate) async fn read_all(&self, from: Position, limit: usize) -> Result<Vec<RawEvent>> {
        let (from, limit) = (to_i64(from), to_i64(limit as u64));
        let mut rows = match self {
            Readers::Postgres(pool) => postgres::read_all(pool, from, limit).await?,
            Readers::Sqlite(pool) => sqlite::read_all(pool, from, limit).await?,
        };
        for i in 1..rows.len() {
            rows[i].prev_hash = Some(rows[i - 1].hash.clone());
        }
        Ok(rows)
    }

    /// Events of `stream` with `version >= from`, in version order, at most `limit`.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RawEvent>> {
        let (from, limit) = (to_i64(from), to_i64(limit as u64));
        Ok(match self {
            Readers::Postgres(pool) => {
                postgres::read_stream(pool, stream.as_str(), from, limit).await?
            }
            Readers::Sqlite(pool) => {
                sqlite::read_stream(pool, stream.as_str(), from, limit).await?
            }
        })
    }

    /// The last event's position and stored hash bytes, if any.
    pub(crate) async fn head(&self) -> Result<Option<(i64, Vec<u8>)>> {
        Ok(match self {
            Readers::Postgres(pool) => postgres::head(pool).await?,
            Readers::Sqlite(pool) => sqlite::head(pool).await?,
        })
    }

    /// The stored hash of the event at `position`, if present.
    pub(crate) async fn hash_at(&self, position: Position) -> Result<Option<Vec<u8>>> {
        let sql = "SELECT hash FROM events WHERE position = $1";
        let hash = crate::both!(self, pool => sqlx::query_scalar(sql)
            .bind(to_i64(position))
            .fetch_optional(pool)
            .await)?;
        Ok(hash)
    }

    /// The hash the chain has before `position`: genesis before position 1,
    /// else the stored hash of `position - 1` (`None` when that row is
    /// missing or its hash is not 32 bytes).
    pub(crate) async fn hash_before(&self, position: Position) -> Result<Option<Hash>> {
        if position <= 1 {
            return Ok(Some(Hash::GENESIS));
        }
        Ok(self
            .hash_at(position - 1)
            .await?
            .and_then(|hash| Hash::from_slice(&hash)))
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        crate::both!(self, pool => pool.close().await)
    }
}

/// The writer's own connection, and the lock that makes its holder the
/// writer. On PostgreSQL it is a session advisory lock held by this very
/// connection: if the connection dies, the lock goes with it, and so does any
/// write in flight. On SQLite it is an exclusive `flock` on `<file>.writer-lock`,
/// released by the operating system when the holder closes it or dies.
#[derive(Debug)]
pub(crate) enum WriterConnection {
    Postgres(sqlx::PgConnection),
    Sqlite {
        conn: sqlx::SqliteConnection,
        /// `None` for an in-memory database, which only one store can see.
        lock_path: Option<std::path::PathBuf>,
        lock: Option<std::fs::File>,
    },
}

impl WriterConnection {
    /// Tries to become the writer of the database (never waits).
    pub async fn try_lock_writer(&mut self) -> Result<bool> {
        match self {
            WriterConnection::Postgres(conn) => postgres::try_lock_writer(conn).await,
            WriterConnection::Sqlite {
                lock_path, lock, ..
            } => sqlite::try_lock_writer(lock_path.as_deref(), lock),
        }
    }

    /// The last event's position and hash (0 and genesis when empty).
    pub async fn head(&mut self) -> Result<(Position, Hash)> {
        let head = match self {
            WriterConnection::Postgres(conn) => postgres::head(&mut *conn).await?,
            WriterConnection::Sqlite { conn, .. } => sqlite::head(&mut *conn).await?,
        };
        head_from_row(head)
    }

    /// The position of the latest signed checkpoint (0 when none).
    pub async fn latest_checkpoint_position(&mut self) -> Result<Position> {
        let sql = "SELECT MAX(position) FROM audit_checkpoints";
        let latest: Option<i64> = match self {
            WriterConnection::Postgres(conn) => {
                sqlx::query_scalar(sql).fetch_one(&mut *conn).await?
            }
            WriterConnection::Sqlite { conn, .. } => {
                sqlx::query_scalar(sql).fetch_one(&mut *conn).await?
            }
        };
        Ok(latest.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    /// The current version of each of `streams` that has events.
    pub async fn stream_versions(&mut self, streams: &[&str]) -> Result<Vec<(String, i64)>> {
        Ok(match self {
            WriterConnection::Postgres(conn) => postgres::stream_versions(conn, streams).await?,
            WriterConnection::Sqlite { conn, .. } => sqlite::stream_versions(conn, streams).await?,
        })
    }

    /// The stored events whose id is one of `ids`.
    pub async fn events_by_id(&mut self, ids: &[Uuid]) -> Result<Vec<RawEvent>> {
        Ok(match self {
            WriterConnection::Postgres(conn) => postgres::events_by_id(conn, ids).await?,
            WriterConnection::Sqlite { conn, .. } => sqlite::events_by_id(conn, ids).await?,
        })
    }

    /// Inserts `events` (consecutive positions) in one atomic statement.
    pub async fn insert(&mut self, events: &[RecordedEvent]) -> Result<()> {
        assert!(!events.is_empty());
        let inserted = match self {
            WriterConnection::Postgres(conn) => postgres::insert(conn, events).await?,
            WriterConnection::Sqlite { conn, .. } => sqlite::insert(conn, events).await?,
        };
        assert_eq!(inserted, events.len() as u64, "one row per event");
        Ok(())
    }

    /// Closes the connection (releasing the writer lock on PostgreSQL).
    pub async fn close(self) {
        use sqlx::Connection;
        let _ = match self {
            WriterConnection::Postgres(conn) => conn.close().await,
            WriterConnection::Sqlite { conn, .. } => conn.close().await,
        };
    }
}

/// Positions, versions and limits are u64 in the envelope and BIGINT in the
/// databases; values beyond i64 never occur (a store would need 9.2e18
/// events), so saturating is only a guard against nonsense arguments.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The head from the last row's `(position, hash)` as stored: position 0 and
/// the genesis hash for an empty store; a hash that is not 32 bytes is a
/// corrupted store.
pub(crate) fn head_from_row(row: Option<(i64, Vec<u8>)>) -> Result<(Position, Hash)> {
    match row {
        None => Ok((0, Hash::GENESIS)),
        Some((position, hash)) => {
            let position = u64::try_from(position).unwrap_or(0);
            let hash = Hash::from_slice(&hash).ok_or_else(|| Error::Corrupted {
                position,
                reason: "the stored hash is not 32 bytes".to_owned(),
            })?;
            Ok((position, hash))
        }
    }
}
