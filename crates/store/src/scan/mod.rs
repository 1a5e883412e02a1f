//! The sequential scan of the log that chain verification and bulk reads
//! stand on: every row of a position range, in order, in constant memory, as
//! fast as the database hands them out.
//!
//! The row-by-row read path ([`Readers::read_all`]) decodes each row into an
//! owned [`RawEvent`] — a dozen allocations per row, in pages of a thousand
//! with a query each — which is right for subscriptions but caps a scan of the
//! whole log at ~100,000 events/s. The scan instead:
//!
//! - reads on its own thread or task, **in parallel with the consumer** (the
//!   verifier hashes batch n while batch n+1 is read), through a channel of
//!   [`SCAN_QUEUE_BATCHES`] batches, so memory stays flat however long the log;
//! - packs rows into a [`RowBatch`]: one byte arena plus fixed-size row
//!   records, buffers **recycled** between reader and consumer, so a batch
//!   costs no allocation once the scan is warm;
//! - on SQLite, steps one statement per keyset page of [`SCAN_PAGE_EVENTS`]
//!   on a separate read-only connection (`rusqlite`, borrowed column
//!   values; sqlx copies every value of every row into its own allocation
//!   and sends rows one by one over a channel);
//! - on PostgreSQL, runs `COPY (SELECT …) TO STDOUT (FORMAT binary)` per
//!   keyset page and parses the binary tuples itself ([`pg_copy`]): no
//!   per-row protocol round of `DataRow` decoding, no text conversion of
//!   timestamps and ids;
//! - falls back to [`Readers::read_all`] pages for an in-memory SQLite
//!   database, which a second connection cannot open.
//!
//! The bytes are exactly the stored ones: nothing is re-serialised, so the
//! hash recomputed over a scanned row is the hash of what is in the database.

use std::ops::Range;
use std::path::{Path, PathBuf};

use kiban_events::envelope::CanonicalFields;
use kiban_events::{Hash, Position};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::backend::{
    POSTGRES_EVENT_COLUMNS, POSTGRES_EVENTS_FROM, RawEvent, Readers, SQLITE_EVENT_COLUMNS, to_i64,
};
use crate::error::{Error, Result};

mod pg_copy;

use pg_copy::CopyParser;

/// Rows per keyset page: one statement (one SQLite read transaction, one
/// PostgreSQL snapshot) covers at most this many, so a scan of a huge log
/// never pins the WAL or an old snapshot for long.
pub const SCAN_PAGE_EVENTS: i64 = 100_000;

/// A batch is handed over when its arena reaches this many bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ...or this many rows.
const BATCH_ROWS: usize = 4096;
/// Batches in flight between reader and consumer: enough to keep both busy,
/// few enough that memory does not depend on the log's length.
pub const SCAN_QUEUE_BATCHES: usize = 4;

/// One stored row, its variable-length fields as ranges of the batch arena.
#[derive(Debug, Clone)]
pub(crate) struct ScannedRow {
    pub position: i64,
    pub version: i64,
    pub schema_version: i64,
    pub occurred_at_micros: i64,
    pub recorded_at_micros: i64,
    pub event_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    stream: Range<u32>,
    event_type: Range<u32>,
    actor: Range<u32>,
    payload: Range<u32>,
    hash: Range<u32>,
}

impl ScannedRow {
    /// The position as the envelope's unsigned type (0 for a negative one,
    /// which only a change outside kiban can store).
    pub fn position(&self) -> Position {
        u64::try_from(self.position).unwrap_or(0)
    }
}

/// Rows in position order and the bytes they point into.
#[derive(Debug, Default)]
pub(crate) struct RowBatch {
    bytes: Vec<u8>,
    rows: Vec<ScannedRow>,
}

impl RowBatch {
    pub fn rows(&self) -> &[ScannedRow] {
        &self.rows
    }

    /// Bytes of the stored fields in this batch.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }

    fn full(&self) -> bool {
        self.bytes.len() >= BATCH_BYTES || self.rows.len() >= BATCH_ROWS
    }

    fn push_bytes(&mut self, value: &[u8]) -> Range<u32> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(value);
        // A batch is flushed at 1 MiB; one row's fields are bounded by the
        // payload limit, far below 4 GiB.
        start as u32..self.bytes.len() as u32
    }

    /// Appends a stored payload (text or zstd frame) as its text; a frame
    /// that does not decompress is a row changed outside kiban.
    fn push_payload(&mut self, position: i64, stored: &[u8]) -> Result<Range<u32>> {
        let start = self.bytes.len();
        crate::compact::load_into(stored, &mut self.bytes).map_err(|reason| Error::Corrupted {
            position: u64::try_from(position).unwrap_or(0),
            reason,
        })?;
        Ok(start as u32..self.bytes.len() as u32)
    }

    fn field(&self, range: &Range<u32>) -> &[u8] {
        &self.bytes[range.start as usize..range.end as usize]
    }

    /// The stored `hash` when it is 32 bytes.
    pub fn hash(&self, row: &ScannedRow) -> Option<Hash> {
        Hash::from_slice(self.field(&row.hash))
    }

    /// The payload text (decompressed when stored as a frame).
    pub fn payload(&self, row: &ScannedRow) -> &[u8] {
        self.field(&row.payload)
    }

    /// The fields the hash covers, borrowed from the batch. A text field that
    /// is not UTF-8 was changed outside kiban: `Corrupted`.
    pub fn canonical<'a>(&'a self, row: &'a ScannedRow) -> Result<CanonicalFields<'a>> {
        let text = |range: &Range<u32>, what: &str| {
            std::str::from_utf8(self.field(range)).map_err(|_| Error::Corrupted {
                position: row.position(),
                reason: format!("the stored {what} is not UTF-8"),
            })
        };
        Ok(CanonicalFields {
            position: row.position(),
            stream: text(&row.stream, "stream")?,
            version: u64::try_from(row.version).unwrap_or(0),
            event_id: &row.event_id,
            event_type: text(&row.event_type, "event type")?,
            schema_version: u16::try_from(row.schema_version).unwrap_or(0),
            occurred_at_micros: row.occurred_at_micros,
            recorded_at_micros: row.recorded_at_micros,
            actor: text(&row.actor, "actor")?,
            correlation_id: &row.correlation_id,
            causation_id: row.causation_id.as_ref(),
            payload: text(&row.payload, "payload")?,
        })
    }

    /// The row as the owned form the rest of the store parses, with the
    /// hash of the row before it (`None`: none, see [`RawEvent::prev_hash`]).
    pub fn to_raw(&self, row: &ScannedRow, prev_hash: Option<Hash>) -> Result<RawEvent> {
        let canonical = self.canonical(row)?;
        Ok(RawEvent {
            position: row.position,
            stream: canonical.stream.to_owned(),
            version: row.version,
            event_id: row.event_id,
            event_type: canonical.event_type.to_owned(),
            schema_version: row.schema_version,
            occurred_at_micros: row.occurred_at_micros,
            recorded_at_micros: row.recorded_at_micros,
            actor: canonical.actor.to_owned(),
            correlation_id: row.correlation_id,
            causation_id: row.causation_id,
            payload: canonical.payload.as_bytes().to_vec(),
            hash: self.field(&row.hash).to_vec(),
            prev_hash: prev_hash.map(|hash| hash.0.to_vec()),
        })
    }

    fn push_raw(&mut self, raw: &RawEvent) -> Result<()> {
        let row = ScannedRow {
            position: raw.position,
            version: raw.version,
            schema_version: raw.schema_version,
            occurred_at_micros: raw.occurred_at_micros,
            recorded_at_micros: raw.recorded_at_micros,
            event_id: raw.event_id,
            correlation_id: raw.correlation_id,
            causation_id: raw.causation_id,
            stream: self.push_bytes(raw.stream.as_bytes()),
            event_type: self.push_bytes(raw.event_type.as_bytes()),
            actor: self.push_bytes(raw.actor.as_bytes()),
            payload: self.push_payload(raw.position, &raw.payload)?,
            hash: self.push_bytes(&raw.hash),
        };
        self.rows.push(row);
        Ok(())
    }
}

/// A running scan of positions `from..=to`: batches in position order. Rows
/// may be missing (a gap is the consumer's to notice); the scan ends after
/// the last stored row at or below `to`, or at a page with no row at all.
/// Dropping it stops the reader.
pub(crate) struct Scan {
    batches: mpsc::Receiver<Result<RowBatch>>,
    recycle: mpsc::UnboundedSender<RowBatch>,
}

/// The reader's end of a [`Scan`].
struct Feed {
    batches: mpsc::Sender<Result<RowBatch>>,
    recycle: mpsc::UnboundedReceiver<RowBatch>,
}

impl Feed {
    /// An empty batch, recycled when one came back.
    fn empty(&mut self) -> RowBatch {
        match self.recycle.try_recv() {
            Ok(mut batch) => {
                batch.clear();
                batch
            }
            Err(_) => RowBatch {
                bytes: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
                rows: Vec::with_capacity(BATCH_ROWS),
            },
        }
    }
}

impl Scan {
    /// Starts reading `from..=to` from `readers`.
    pub fn start(readers: &Readers, from: Position, to: Position) -> Scan {
        let (batch_sender, batches) = mpsc::channel(SCAN_QUEUE_BATCHES);
        let (recycle, recycled) = mpsc::unbounded_channel();
        let mut feed = Feed {
            batches: batch_sender,
            recycle: recycled,
        };
        let (from, to) = (to_i64(from.max(1)), to_i64(to));
        match readers {
            Readers::Sqlite(pool) => match sqlite_file(pool) {
                Some(path) => {
                    tokio::task::spawn_blocking(move || {
                        if let Err(error) = scan_sqlite(&path, from, to, &mut feed) {
                            let _ = feed.batches.blocking_send(Err(error));
                        }
                    });
                }
                None => spawn_paged(readers.clone(), from, to, feed),
            },
            Readers::Postgres(pool) => {
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Err(error) = scan_postgres(&pool, from, to, &mut feed).await {
                        let _ = feed.batches.send(Err(error)).await;
                    }
                });
            }
        }
        Scan { batches, recycle }
    }

    /// The next batch (waiting for it), `None` at the end.
    pub async fn next(&mut self) -> Option<Result<RowBatch>> {
        self.batches.recv().await
    }

    /// [`Scan::next`] from a thread outside the runtime.
    pub fn blocking_next(&mut self) -> Option<Result<RowBatch>> {
        self.batches.blocking_recv()
    }

    /// Hands a consumed batch back to the reader for reuse.
    pub fn recycle(&self, batch: RowBatch) {
        let _ = self.recycle.send(batch);
    }
}

/// The file of a file-backed SQLite pool; `None` in memory.
fn sqlite_file(pool: &sqlx::SqlitePool) -> Option<PathBuf> {
    let options = pool.connect_options();
    let file = options.get_filename();
    let name = file.to_string_lossy();
    if name.is_empty() || name.contains(":memory:") || name.starts_with("file:") {
        return None;
    }
    Some(file.to_path_buf())
}

/// Sends `batch` unless the consumer is gone (then `false`).
fn send_blocking(feed: &Feed, batch: RowBatch) -> bool {
    feed.batches.blocking_send(Ok(batch)).is_ok()
}

fn scan_sqlite(path: &Path, from: i64, to: i64, feed: &mut Feed) -> Result<()> {
    use rusqlite::OpenFlags;
    let unavailable = |e: rusqlite::Error| Error::Unavailable(format!("SQLite scan: {e}"));
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(std::time::Duration::from_millis(
        crate::store::SQLITE_BUSY_TIMEOUT_MS,
    ))
    .map_err(unavailable)?;
    let sql = format!(
        "SELECT {SQLITE_EVENT_COLUMNS} FROM events e WHERE e.position >= ?1 AND e.position <= ?2 \
         ORDER BY e.position LIMIT ?3"
    );
    let mut statement = conn.prepare(&sql).map_err(unavailable)?;
    let mut batch = feed.empty();
    let mut next = from;
    while next <= to {
        let mut rows = statement
            .query((next, to, SCAN_PAGE_EVENTS))
            .map_err(unavailable)?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(unavailable)? {
            count += 1;
            let scanned = sqlite_row(row, &mut batch)?;
            next = scanned.position.saturating_add(1);
            batch.rows.push(scanned);
            if batch.full() {
                let full = std::mem::replace(&mut batch, feed.empty());
                if !send_blocking(feed, full) {
                    return Ok(());
                }
            }
        }
        if count < SCAN_PAGE_EVENTS {
            break;
        }
    }
    if !batch.rows.is_empty() {
        send_blocking(feed, batch);
    }
    Ok(())
}

/// One SQLite row of [`SQLITE_EVENT_COLUMNS`], its variable-length fields copied
/// into `batch` from the borrowed column values.
fn sqlite_row(row: &rusqlite::Row<'_>, batch: &mut RowBatch) -> Result<ScannedRow> {
    use rusqlite::types::ValueRef;
    let corrupted = |position: i64, reason: String| Error::Corrupted {
        position: u64::try_from(position).unwrap_or(0),
        reason,
    };
    let int = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Integer(value)) => Ok(value),
        _ => Err(i),
    };
    let bytes = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Text(value) | ValueRef::Blob(value)) => Ok(value),
        _ => Err(i),
    };
    let uuid = |i: usize| bytes(i).and_then(|b| Uuid::from_slice(b).map_err(|_| i));
    let position = int(0).map_err(|_| corrupted(0, "a position is not an integer".into()))?;
    let column = |i: usize| {
        corrupted(
            position,
            format!("the stored column {i} has the wrong type"),
        )
    };
    let causation_id = match row.get_ref(10) {
        Ok(ValueRef::Null) => None,
        _ => Some(uuid(10).map_err(column)?),
    };
    Ok(ScannedRow {
        position,
        version: int(2).map_err(column)?,
        schema_version: int(5).map_err(column)?,
        occurred_at_micros: int(6).map_err(column)?,
        recorded_at_micros: int(7).map_err(column)?,
        event_id: uuid(3).map_err(column)?,
        correlation_id: uuid(9).map_err(column)?,
        causation_id,
        stream: batch.push_bytes(bytes(1).map_err(column)?),
        event_type: batch.push_bytes(bytes(4).map_err(column)?),
        actor: batch.push_bytes(bytes(8).map_err(column)?),
        payload: batch.push_payload(position, bytes(11).map_err(column)?)?,
        hash: batch.push_bytes(bytes(12).map_err(column)?),
    })
}

/// The fallback: [`Readers::read_all`] pages, repacked.
fn spawn_paged(readers: Readers, from: i64, to: i64, mut feed: Feed) {
    tokio::spawn(async move {
        let mut next = from;
        while next <= to {
            let want = usize::try_from(to - next + 1).map_or(1000, |n| n.min(1000));
            let page = match readers.read_all(next as u64, want).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = feed.batches.send(Err(error)).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            next = last.position.saturating_add(1);
            let mut batch = feed.empty();
            let packed = page.iter().try_for_each(|raw| batch.push_raw(raw));
            if let Err(error) = packed {
                let _ = feed.batches.send(Err(error)).await;
                return;
            }
            if feed.batches.send(Ok(batch)).await.is_err() {
                return;
            }
        }
    });
}

async fn scan_postgres(pool: &sqlx::PgPool, from: i64, to: i64, feed: &mut Feed) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let mut parser = CopyParser::default();
    let mut batch = feed.empty();
    let mut low = from;
    while low <= to {
        let high = low.saturating_add(SCAN_PAGE_EVENTS - 1).min(to);
        // COPY takes no parameters; both bounds are integers formatted here.
        let sql = format!(
            "COPY (SELECT {POSTGRES_EVENT_COLUMNS} FROM {POSTGRES_EVENTS_FROM} \
             WHERE e.position BETWEEN {low} AND {high} \
             ORDER BY e.position) TO STDOUT (FORMAT binary)"
        );
        parser.reset();
        let mut rows = 0;
        let read = copy_page(&mut conn, &sql, &mut parser, &mut batch, feed, &mut rows).await;
        if !matches!(read, Ok(true)) {
            // Stopped by the consumer, or failed (a row that does not parse,
            // a broken connection): the COPY was not read to its end, so the
            // connection must not go back to the pool with the rest of it
            // still queued, where the next query would read it.
            conn.close_on_drop();
            return read.map(|_| ());
        }
        if rows == 0 {
            break;
        }
        low = high + 1;
    }
    if !batch.rows.is_empty() {
        let _ = feed.batches.send(Ok(batch)).await;
    }
    Ok(())
}

/// Reads one COPY page into `batch`, sending full batches to `feed`;
/// `Ok(true)` when the COPY was read to its end, `Ok(false)` when the
/// consumer went away first.
async fn copy_page(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    parser: &mut CopyParser,
    batch: &mut RowBatch,
    feed: &mut Feed,
    rows: &mut usize,
) -> Result<bool> {
    use futures::StreamExt;
    let mut chunks = conn.copy_out_raw(sql).await?;
    while let Some(chunk) = chunks.next().await {
        parser.feed(&chunk?);
        while let Some(row) = parser.next_row(batch)? {
            *rows += 1;
            batch.rows.push(row);
            if batch.full() {
                let full = std::mem::replace(batch, feed.empty());
                if feed.batches.send(Ok(full)).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }
    drop(chunks);
    parser.finish()?;
    Ok(true)
}

/// What [`Store::read_raw`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RawRead {
    /// Rows read.
    pub events: u64,
    /// Bytes of their stored fields (ids, times and numbers not counted).
    pub bytes: u64,
    /// Bytes of their payloads.
    pub payload_bytes: u64,
}

impl crate::Store {
    /// Streams every row of `from..=to` out of the database as stored,
    /// without parsing or hashing: the scan under [`crate::Store::verify`]
    /// and [`crate::Store::read_range`] on its own (the ceiling `kiban bench
    /// replay` compares them with). Fails if a position is missing.
    pub async fn read_raw(&self, from: Position, to: Position) -> Result<RawRead> {
        let mut scan = Scan::start(self.readers(), from, to);
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
}
