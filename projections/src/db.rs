//! The document store every projection writes to, in the store's database.
//!
//! One SQL dialect for PostgreSQL and SQLite: four small tables, upserts with
//! `INSERT … ON CONFLICT … DO UPDATE`, JSON kept as TEXT. The tables are
//! made by the store's migrations (`0004_projections.sql`), which
//! [`Db::open`] runs; a generation is rows, not tables, so a rebuild needs
//! no DDL.
//!
//! - `projection_live(projection, generation, schema_version)`: which
//!   generation of a projection is served.
//! - `projection_checkpoints(projection, generation, position)`: the last
//!   applied position of each generation, updated in the same transaction as
//!   the documents, so a crash never applies an event twice or skips one.
//! - `projection_documents(projection, generation, doc_key, json)`.
//! - `projection_index(projection, generation, index_name, index_key,
//!   doc_key)`: secondary lookups (an office's caseload, an insurer's open
//!   applications).

use std::any::Any;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};

use kiban_events::Position;
use kiban_store::{DbPool, PerBackend, both};

use crate::error::{Error, Result};

/// Connections of the read-model pool. Queries are single-row lookups or
/// short pages; eight connections serve an API process, and the runners
/// hold at most one each.
pub const READ_MODEL_CONNECTIONS: u32 = 8;

/// How long a query waits for a pooled connection before failing, in
/// milliseconds: long enough to ride out a burst, short enough that an API
/// request fails rather than hangs.
pub const POOL_ACQUIRE_TIMEOUT_MS: u64 = 10_000;

/// How long SQLite waits for the write lock, in milliseconds. The event
/// store's writer holds it only for one group commit.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Page cache of each read-model connection on SQLite, in KiB
/// (`PRAGMA cache_size = -16384`): room for the pages one batch changes.
pub const SQLITE_CACHE_KIB: u32 = 16_384;

/// A pool on the store's database. `kiban-store` does not share its pool,
/// so the read models open their own from the same URL.
#[derive(Debug, Clone)]
pub struct Db {
    pool: DbPool,
    growth: Arc<Growth>,
}

/// Rows written to the read models by this process before their tables are
/// first analysed (PostgreSQL), and then again each time the count doubles.
///
/// A fresh database's tables have no statistics until autovacuum's first
/// `ANALYZE` (a minute or more after they filled), and without them the
/// planner takes a generation to hold a handful of rows and reads all of it
/// to find a batch's documents (docs/benchmarks.md, "The whole system on
/// PostgreSQL + JetStream"). Analysing as the tables grow, geometrically,
/// costs a few `ANALYZE`s in a process's life.
pub const ANALYZE_AFTER_ROWS: u64 = 10_000;

/// What [`Db`] counts to analyse the read-model tables as they grow.
#[derive(Debug)]
struct Growth {
    /// Document and index rows written by this process.
    written: std::sync::atomic::AtomicU64,
    /// The count at which the tables are analysed next.
    next: std::sync::atomic::AtomicU64,
    /// An `ANALYZE` is running (at most one at a time).
    running: std::sync::atomic::AtomicBool,
}

impl Growth {
    /// `rows`: how many rows the tables held when last analysed (0 for
    /// tables never analysed). A process that opens analysed tables goes on
    /// from there — the next `ANALYZE` when they have doubled since —
    /// instead of analysing them again at `first`, `2 × first`, … rows of
    /// its own (a restart on a national store ran four `ANALYZE`s of 1.2–1.6 s
    /// in its first 12 s: docs/benchmarks.md "The national year, run in
    /// pieces").
    fn new(first: u64, rows: u64) -> Arc<Growth> {
        Arc::new(Growth {
            written: rows.into(),
            next: first.max(rows.saturating_mul(2)).max(1).into(),
            running: false.into(),
        })
    }
}

impl Db {
    /// Opens a pool on `url` (`postgres://…` or `sqlite://…`, as given to
    /// the store) and runs the store's migrations on it, which own the read
    /// models' tables: opening before or after the store gives the same
    /// schema.
    pub async fn open(url: &str) -> Result<Db> {
        Db::open_analysing_after(url, ANALYZE_AFTER_ROWS).await
    }

    /// [`Db::open`], with the tables first analysed after `rows` rows
    /// instead of [`ANALYZE_AFTER_ROWS`] (for tests).
    #[doc(hidden)]
    pub async fn open_analysing_after(url: &str, rows: u64) -> Result<Db> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::Invalid(format!("bad PostgreSQL url: {e}")))?
                .application_name("kiban-projections")
                // Read-model commits wait for the WAL flush like the store's
                // (whatever the server's default). With it off, a
                // commit acknowledged just before PostgreSQL crashes can be
                // lost while this process lives on: the runner, which moves
                // its checkpoint on the acknowledgement, would continue
                // after events whose documents are gone and `wait_for`
                // would report them applied (`tests/tests/faults.rs`,
                // `postgres_killed_during_appends_…`, caught it).
                .options([("synchronous_commit", "on")]);
            PerBackend::Postgres(
                PgPoolOptions::new()
                    .max_connections(READ_MODEL_CONNECTIONS)
                    .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::Invalid(format!("bad SQLite url: {e}")))?
                .create_if_missing(true)
                // NORMAL does not fsync the WAL at each commit (the store's
                // own commits, FULL, do, and with them every frame before
                // theirs). A commit NORMAL loses is lost only with the
                // machine, and so with this process: the runner starts again
                // from the checkpoint in the file, never from one it holds.
                .synchronous(SqliteSynchronous::Normal)
                // A batch's changed pages stay in the connection's cache
                // until it commits (the default 2 MiB made SQLite spill them
                // to the WAL mid-transaction and read them back: ~15 % of a
                // rebuild's samples, docs/benchmarks.md "Rebuild at the
                // store's speed"). Filled only as far as a connection uses it.
                .pragma("cache_size", format!("-{}", SQLITE_CACHE_KIB))
                .busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS));
            PerBackend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(READ_MODEL_CONNECTIONS)
                    .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
                    .connect_with(options)
                    .await?,
            )
        } else {
            return Err(Error::Invalid(
                "read-model url must start with sqlite:// or postgres://".to_owned(),
            ));
        };
        kiban_store::migrate(&pool)
            .await
            .map_err(|error| match error {
                kiban_store::Error::Database(error) => Error::Database(error),
                other => Error::Store(other),
            })?;
        let analysed = match &pool {
            // `reltuples`: the row count as of the last ANALYZE (or VACUUM);
            // -1 for a table never analysed.
            PerBackend::Postgres(pool) => {
                sqlx::query_scalar::<_, f64>(
                    "SELECT COALESCE(SUM(GREATEST(reltuples, 0)), 0)::float8 FROM pg_class \
                 WHERE oid IN ('projection_documents'::regclass, 'projection_index'::regclass)",
                )
                .fetch_one(pool)
                .await? as u64
            }
            PerBackend::Sqlite(_) => 0,
        };
        Ok(Db {
            pool,
            growth: Growth::new(rows, analysed),
        })
    }

    /// The count of rows at which the read-model tables are analysed next
    /// (PostgreSQL), for tests.
    #[doc(hidden)]
    pub fn next_analysis_at(&self) -> u64 {
        self.growth.next.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The pool, for the other tables of the store's database that are
    /// queried beside the read models (the web screen's staff accounts).
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// A batch on `generation` of `projection`: what
    /// [`Projection::apply`](crate::Projection::apply) reads and writes
    /// through. Documents and index entries are kept in memory and written
    /// by [`Db::commit`] in a few multi-row statements (a document put many
    /// times in the batch is written once). With `written` (a rebuild into
    /// a fresh generation), a key never written to the generation needs no
    /// lookup.
    ///
    /// `carried` is what the previous batch of the same generation wrote
    /// ([`Tx::into_writes`]): its documents (as values, nothing to read or
    /// parse) and its index changes. The previous batch's commit may still
    /// be running while this batch folds (runner.rs, `Writer`), so what it
    /// wrote is taken from `carried`, not from the database; everything
    /// older has committed.
    pub(crate) fn batch(
        &self,
        projection: &'static str,
        generation: i64,
        written: Option<Arc<Mutex<KeyFilter>>>,
        carried: Carry,
    ) -> Tx {
        Tx {
            pool: self.pool.clone(),
            projection,
            generation,
            docs: carried.docs,
            index: HashMap::new(),
            carried_index: carried.index,
            written,
        }
    }

    /// Begins a transaction on `generation` of `projection` for the
    /// bookkeeping of generations (checkpoints, the live pointer).
    pub(crate) async fn begin(&self, projection: &'static str, generation: i64) -> Result<WriteTx> {
        let inner = match &self.pool {
            PerBackend::Postgres(pool) => PerBackend::Postgres(pool.begin().await?),
            PerBackend::Sqlite(pool) => PerBackend::Sqlite(pool.begin().await?),
        };
        Ok(WriteTx {
            inner,
            projection,
            generation,
        })
    }

    /// Writes the batches of `writes` and moves each one's checkpoint, all
    /// in one transaction. With `require_live`, first takes each
    /// projection's live row and writes nothing (returning `false`) when a
    /// generation written to is no longer the served one.
    pub(crate) async fn commit(&self, writes: Vec<Writes>, require_live: bool) -> Result<bool> {
        let Some(first) = writes.first() else {
            return Ok(true);
        };
        let mut tx = self.begin(first.projection, first.generation).await?;
        // The first statements write, so that SQLite takes its write lock
        // (with its busy wait) at once, and only for the writes: everything
        // the batch read was read before.
        if require_live {
            for batch in &writes {
                tx.projection = batch.projection;
                if tx.lock_live().await? != Some(batch.generation) {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
        }
        let mut rows = 0;
        for batch in writes {
            tx.projection = batch.projection;
            tx.generation = batch.generation;
            let checkpoint = batch.checkpoint;
            rows += batch.rows();
            tx.flush(batch).await?;
            tx.set_checkpoint(checkpoint).await?;
        }
        tx.commit().await?;
        self.grown(rows as u64);
        Ok(true)
    }

    /// Counts `rows` written and, on PostgreSQL, analyses the read-model
    /// tables in the background when the count reaches the next threshold
    /// ([`ANALYZE_AFTER_ROWS`]).
    fn grown(&self, rows: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let PerBackend::Postgres(pool) = &self.pool else {
            return;
        };
        let written = self.growth.written.fetch_add(rows, SeqCst) + rows;
        if written < self.growth.next.load(SeqCst) || self.growth.running.swap(true, SeqCst) {
            return;
        }
        self.growth.next.store(written.saturating_mul(2), SeqCst);
        let (pool, growth) = (pool.clone(), Arc::clone(&self.growth));
        tokio::spawn(async move {
            let analysed = sqlx::query("ANALYZE projection_documents, projection_index")
                .execute(&pool)
                .await;
            if let Err(error) = analysed {
                tracing::warn!(%error, "analysing the read-model tables failed");
            }
            growth.running.store(false, SeqCst);
        });
    }

    /// The served generation and its schema version, if any.
    pub(crate) async fn live(&self, projection: &str) -> Result<Option<(i64, i64)>> {
        let sql = "SELECT generation, schema_version FROM projection_live WHERE projection = $1";
        Ok(
            both!(&self.pool, pool => sqlx::query_as::<_, (i64, i64)>(sql)
            .bind(projection)
            .fetch_optional(pool)
            .await)?,
        )
    }

    /// The checkpoint of one generation (0 when it has none).
    pub(crate) async fn checkpoint(&self, projection: &str, generation: i64) -> Result<Position> {
        let sql =
            "SELECT position FROM projection_checkpoints WHERE projection = $1 AND generation = $2";
        let position = both!(&self.pool, pool => sqlx::query_scalar::<_, i64>(sql)
            .bind(projection)
            .bind(generation)
            .fetch_optional(pool)
            .await)?;
        Ok(position.map_or(0, |p| p.max(0) as Position))
    }

    /// The highest generation with any checkpoint (0 when none).
    pub(crate) async fn last_generation(&self, projection: &str) -> Result<i64> {
        let sql =
            "SELECT COALESCE(MAX(generation), 0) FROM projection_checkpoints WHERE projection = $1";
        Ok(both!(&self.pool, pool => sqlx::query_scalar::<_, i64>(sql)
            .bind(projection)
            .fetch_one(pool)
            .await)?)
    }

    /// One document of the served generation.
    pub async fn document<T: DeserializeOwned>(
        &self,
        projection: &str,
        doc_key: &str,
    ) -> Result<Option<T>> {
        let sql = "SELECT d.json FROM projection_documents d
            JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
            WHERE d.projection = $1 AND d.doc_key = $2";
        let json = both!(&self.pool, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(doc_key)
            .fetch_optional(pool)
            .await)?;
        json.map(|json| parse(doc_key, &json)).transpose()
    }

    /// The documents of the served generation under `doc_keys`, in the
    /// order of `doc_keys` (missing ones left out), in one query: a caseload
    /// page is one round trip, not one per person.
    pub async fn documents<T: DeserializeOwned>(
        &self,
        projection: &str,
        doc_keys: &[String],
    ) -> Result<Vec<T>> {
        if doc_keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = match &self.pool {
            PerBackend::Postgres(pool) => {
                sqlx::query_as(DOCUMENTS_POSTGRES)
                    .bind(projection)
                    .bind(doc_keys)
                    .fetch_all(pool)
                    .await?
            }
            PerBackend::Sqlite(pool) => {
                sqlx::query_as(DOCUMENTS_SQLITE)
                    .bind(projection)
                    .bind(serde_json::to_string(doc_keys).expect("strings serialise"))
                    .fetch_all(pool)
                    .await?
            }
        };
        let mut found: std::collections::HashMap<String, String> = rows.into_iter().collect();
        doc_keys
            .iter()
            .filter_map(|key| found.remove(key).map(|json| parse(key, &json)))
            .collect()
    }

    /// Document keys under `index_key` of `index_name` in the served
    /// generation, in key order, after `after` (exclusive), at most `limit`.
    pub async fn index_page(
        &self,
        projection: &str,
        index_name: &str,
        index_key: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let sql = "SELECT i.doc_key FROM projection_index i
            JOIN projection_live l ON l.projection = i.projection AND l.generation = i.generation
            WHERE i.projection = $1 AND i.index_name = $2 AND i.index_key = $3 AND i.doc_key > $4
            ORDER BY i.doc_key LIMIT $5";
        Ok(
            both!(&self.pool, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(index_name)
            .bind(index_key)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(pool)
            .await)?,
        )
    }

    /// The document keys from `from` (inclusive) up to `to` (exclusive)
    /// filed under any key of `index_name` in the served generation, each
    /// once, in key order, after `after` (exclusive), at most `limit`.
    pub async fn indexed_between(
        &self,
        projection: &str,
        index_name: &str,
        (from, to): (&str, &str),
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let sql = "SELECT DISTINCT i.doc_key FROM projection_index i
            JOIN projection_live l ON l.projection = i.projection AND l.generation = i.generation
            WHERE i.projection = $1 AND i.index_name = $2 AND i.doc_key >= $3 AND i.doc_key < $4
            AND i.doc_key > $5
            ORDER BY i.doc_key LIMIT $6";
        Ok(
            both!(&self.pool, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(index_name)
            .bind(from)
            .bind(to)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(pool)
            .await)?,
        )
    }

    /// Every document of the served generation as `(key, json)`, in key
    /// order: what a rebuild is compared by.
    pub async fn dump(&self, projection: &str) -> Result<Vec<(String, String)>> {
        let sql = "SELECT d.doc_key, d.json FROM projection_documents d
            JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
            WHERE d.projection = $1 ORDER BY d.doc_key";
        Ok(
            both!(&self.pool, pool => sqlx::query_as::<_, (String, String)>(sql)
            .bind(projection)
            .fetch_all(pool)
            .await)?,
        )
    }
}

impl Db {
    /// Every secondary index entry of the served generation as
    /// `(index_name, index_key, doc_key)`, in that order: with
    /// [`Db::dump`], what a rebuild is compared by.
    pub async fn dump_index(&self, projection: &str) -> Result<Vec<(String, String, String)>> {
        let sql = "SELECT i.index_name, i.index_key, i.doc_key FROM projection_index i
            JOIN projection_live l ON l.projection = i.projection AND l.generation = i.generation
            WHERE i.projection = $1 ORDER BY i.index_name, i.index_key, i.doc_key";
        Ok(
            both!(&self.pool, pool => sqlx::query_as::<_, (String, String, String)>(sql)
            .bind(projection)
            .fetch_all(pool)
            .await)?,
        )
    }
}

/// A batch's documents by key (PostgreSQL): `doc_key = ANY($3)` with a
/// `text[]` makes the plan probe the primary key once per key, whatever
/// the table's statistics say. The earlier `doc_key IN (SELECT
/// jsonb_array_elements_text($3))` was planned on a fresh, never analysed
/// table as a hash join over every document of the generation (and its
/// dead versions): 1–7 s per batch in `kiban simulate` (docs/benchmarks.md).
#[doc(hidden)]
pub const PREFETCH_POSTGRES: &str = "SELECT doc_key, json FROM projection_documents
    WHERE projection = $1 AND generation = $2 AND doc_key = ANY($3)";

/// A batch's documents by key (SQLite, which has no arrays: a JSON array,
/// whose values SQLite looks up in the primary key one by one).
const PREFETCH_SQLITE: &str = "SELECT doc_key, json FROM projection_documents
    WHERE projection = $1 AND generation = $2 AND doc_key IN (SELECT value FROM json_each($3))";

/// Served documents by key (PostgreSQL), as [`PREFETCH_POSTGRES`].
const DOCUMENTS_POSTGRES: &str = "SELECT d.doc_key, d.json FROM projection_documents d
    JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
    WHERE d.projection = $1 AND d.doc_key = ANY($2)";

/// Served documents by key (SQLite), as [`PREFETCH_SQLITE`].
const DOCUMENTS_SQLITE: &str = "SELECT d.doc_key, d.json FROM projection_documents d
    JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
    WHERE d.projection = $1 AND d.doc_key IN (SELECT value FROM json_each($2))";

fn parse<T: DeserializeOwned>(doc_key: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Corrupted {
        position: 0,
        reason: format!("document {doc_key} does not parse: {e}"),
    })
}

type TxInner = PerBackend<
    sqlx::Transaction<'static, sqlx::Postgres>,
    sqlx::Transaction<'static, sqlx::Sqlite>,
>;

/// One batch of one projection's generation: what
/// [`Projection::apply`](crate::Projection::apply) reads and writes
/// through. Reads see the batch's own writes; writes stay in memory until
/// the runner commits them (with the checkpoint) through [`Db::commit`].
/// Only the runner writes a generation, so reading outside the write
/// transaction sees everything committed to it.
pub struct Tx {
    pool: DbPool,
    projection: &'static str,
    generation: i64,
    /// Documents read or written in this batch, and those the previous
    /// batch wrote ([`Carry`]).
    docs: HashMap<String, Slot>,
    /// Index entries changed in this batch: present or removed (the last
    /// change wins).
    index: HashMap<IndexEntry, bool>,
    /// The index changes of the previous batch, whose commit may still be
    /// running: read under this batch's own changes, never written again.
    carried_index: HashMap<IndexEntry, bool>,
    /// Set during a rebuild: the keys ever written to the generation.
    written: Option<Arc<Mutex<KeyFilter>>>,
}

/// An index entry: index name (a projection's constant), index key,
/// document key.
type IndexEntry = (&'static str, String, String);

/// An index entry's key in a rebuild's [`KeyFilter`], beside the document
/// keys (were two to collide, the filter would only answer "maybe" more
/// often: one needless `DELETE`, never a missed one).
fn index_filter_key((name, key, doc): &IndexEntry) -> String {
    format!("{name}\0{key}\0{doc}")
}

/// What a batch hands to the next batch of the same generation: the
/// documents it wrote, as values (clean: written by its own commit), and its
/// index changes. Bounded by what one batch touches.
#[derive(Default)]
pub(crate) struct Carry {
    docs: HashMap<String, Slot>,
    index: HashMap<IndexEntry, bool>,
}

/// What a batch knows of one document.
enum Slot {
    /// Not in the generation (looked up, or never written).
    Absent,
    /// As read from the database, not parsed yet.
    Json(String),
    /// As a value.
    Value(Cached),
}

impl Tx {
    /// Reads the documents under `keys` not yet known to the batch, in one
    /// query: after this, [`Tx::get`] of any of them needs no round trip.
    pub async fn prefetch(&mut self, keys: impl IntoIterator<Item = String>) -> Result<()> {
        let mut wanted: Vec<String> = Vec::new();
        {
            let filter = self
                .written
                .as_ref()
                .map(|written| written.lock().expect("not poisoned"));
            for key in keys {
                if self.docs.contains_key(&key) {
                    continue;
                }
                if filter
                    .as_ref()
                    .is_some_and(|filter| !filter.may_contain(&key))
                {
                    self.docs.insert(key, Slot::Absent);
                    continue;
                }
                wanted.push(key);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        for chunk in wanted.chunks(FLUSH_ROWS) {
            let (projection, generation) = (self.projection, self.generation);
            let rows: Vec<(String, String)> = match &self.pool {
                PerBackend::Postgres(pool) => {
                    sqlx::query_as(PREFETCH_POSTGRES)
                        .bind(projection)
                        .bind(generation)
                        .bind(chunk)
                        .fetch_all(pool)
                        .await?
                }
                PerBackend::Sqlite(pool) => {
                    sqlx::query_as(PREFETCH_SQLITE)
                        .bind(projection)
                        .bind(generation)
                        .bind(serde_json::to_string(chunk).expect("strings serialise"))
                        .fetch_all(pool)
                        .await?
                }
            };
            for key in chunk {
                self.docs.insert(key.clone(), Slot::Absent);
            }
            for (key, json) in rows {
                self.docs.insert(key, Slot::Json(json));
            }
        }
        Ok(())
    }

    /// Makes sure the batch knows `doc_key` (reading it when it does not).
    async fn load(&mut self, doc_key: &str) -> Result<()> {
        if self.docs.contains_key(doc_key) {
            return Ok(());
        }
        self.prefetch([doc_key.to_owned()]).await
    }

    /// The document under `doc_key`, if any (a copy; see [`Tx::get_mut`]).
    pub async fn get<T>(&mut self, doc_key: &str) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.load(doc_key).await?;
        Ok(self.value_mut::<T>(doc_key)?.map(|value| value.clone()))
    }

    /// The document under `doc_key` to change in place, `default()` when
    /// there is none; it is written when the batch commits.
    pub async fn get_mut<T>(&mut self, doc_key: &str, default: impl FnOnce() -> T) -> Result<&mut T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.load(doc_key).await?;
        if matches!(self.docs.get(doc_key), Some(Slot::Absent)) {
            self.put_value(doc_key, default());
        } else {
            self.value_mut::<T>(doc_key)?;
            if let Some(Slot::Value(cached)) = self.docs.get_mut(doc_key) {
                cached.dirty = true;
            }
        }
        self.mark_written(doc_key);
        match self.docs.get_mut(doc_key) {
            Some(Slot::Value(cached)) => Ok(cached
                .value
                .downcast_mut::<T>()
                .expect("converted to T above")),
            _ => unreachable!("the slot holds a value"),
        }
    }

    /// The known document under `doc_key` as a `T` in its slot (parsed, or
    /// converted when it was stored as another type).
    fn value_mut<T>(&mut self, doc_key: &str) -> Result<Option<&mut T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let converted = match self.docs.get(doc_key) {
            None | Some(Slot::Absent) => return Ok(None),
            Some(Slot::Value(cached)) if cached.value.is::<T>() => None,
            Some(Slot::Json(json)) => Some(Cached::new(parse::<T>(doc_key, json)?, false)),
            Some(Slot::Value(cached)) => {
                let json = (cached.to_json)(cached.value.as_ref(), doc_key)?;
                Some(Cached::new(parse::<T>(doc_key, &json)?, cached.dirty))
            }
        };
        let slot = self.docs.get_mut(doc_key).expect("known above");
        if let Some(converted) = converted {
            *slot = Slot::Value(converted);
        }
        match slot {
            Slot::Value(cached) => Ok(cached.value.downcast_mut::<T>()),
            _ => unreachable!("a value above"),
        }
    }

    /// The document keys filed under `index_key` of `index_name`, in order,
    /// with this batch's own changes.
    pub async fn index_keys(
        &mut self,
        index_name: &'static str,
        index_key: &str,
    ) -> Result<Vec<String>> {
        let sql = "SELECT doc_key FROM projection_index
            WHERE projection = $1 AND generation = $2 AND index_name = $3 AND index_key = $4
            ORDER BY doc_key";
        let (projection, generation) = (self.projection, self.generation);
        let stored: Vec<String> = both!(&self.pool, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(generation)
            .bind(index_name)
            .bind(index_key)
            .fetch_all(pool)
            .await)?;
        let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
        // The previous batch's changes (perhaps not committed yet), then
        // this batch's own.
        for changes in [&self.carried_index, &self.index] {
            for ((name, key, doc), present) in changes {
                if *name == index_name && key == index_key {
                    if *present {
                        keys.insert(doc.clone());
                    } else {
                        keys.remove(doc);
                    }
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Writes (inserts or replaces) the document under `doc_key`.
    pub async fn put<T>(&mut self, doc_key: &str, document: &T) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.put_value(doc_key, document.clone());
        self.mark_written(doc_key);
        Ok(())
    }

    fn put_value<T: Serialize + Clone + Send + Sync + 'static>(&mut self, doc_key: &str, value: T) {
        self.docs
            .insert(doc_key.to_owned(), Slot::Value(Cached::new(value, true)));
    }

    fn mark_written(&self, doc_key: &str) {
        if let Some(written) = &self.written {
            written.lock().expect("not poisoned").insert(doc_key);
        }
    }

    /// Files `doc_key` under `index_key` of `index_name` (idempotent).
    pub async fn index(
        &mut self,
        index_name: &'static str,
        index_key: &str,
        doc_key: &str,
    ) -> Result<()> {
        self.index_entry(index_name, index_key, doc_key, true);
        Ok(())
    }

    /// Removes `doc_key` from `index_key` of `index_name` (idempotent).
    pub async fn unindex(
        &mut self,
        index_name: &'static str,
        index_key: &str,
        doc_key: &str,
    ) -> Result<()> {
        self.index_entry(index_name, index_key, doc_key, false);
        Ok(())
    }

    fn index_entry(
        &mut self,
        index_name: &'static str,
        index_key: &str,
        doc_key: &str,
        present: bool,
    ) {
        let entry = (index_name, index_key.to_owned(), doc_key.to_owned());
        if !present
            && let Some(written) = &self.written
            && !written
                .lock()
                .expect("not poisoned")
                .may_contain(&index_filter_key(&entry))
        {
            // A rebuild: no earlier batch wrote this entry to the fresh
            // generation, so there is nothing to delete; only an addition
            // by this batch (if any) is undone.
            self.index.remove(&entry);
            return;
        }
        self.index.insert(entry, present);
    }

    /// What the batch writes, with the checkpoint it reaches (documents
    /// serialised once each), and what the next batch of the generation
    /// starts from ([`Carry`]).
    pub(crate) fn into_writes(self, checkpoint: Position) -> Result<(Writes, Carry)> {
        let mut documents = Vec::new();
        let mut carried = HashMap::new();
        for (key, slot) in self.docs {
            if let Slot::Value(mut cached) = slot
                && cached.dirty
            {
                let json = (cached.to_json)(cached.value.as_ref(), &key)?;
                cached.dirty = false;
                carried.insert(key.clone(), Slot::Value(cached));
                documents.push((key, json));
            }
        }
        // A stable order: concurrent writers of the same rows (none today)
        // could not deadlock, and statements are reproducible.
        documents.sort_unstable();
        let (mut added, mut removed): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for (entry, &present) in &self.index {
            if present {
                added.push(entry.clone());
            } else {
                removed.push(entry.clone());
            }
        }
        added.sort_unstable();
        removed.sort_unstable();
        if let Some(written) = &self.written {
            let mut written = written.lock().expect("not poisoned");
            for entry in &added {
                written.insert(&index_filter_key(entry));
            }
        }
        let writes = Writes {
            projection: self.projection,
            generation: self.generation,
            checkpoint,
            documents,
            added,
            removed,
        };
        let carry = Carry {
            docs: carried,
            index: self.index,
        };
        Ok((writes, carry))
    }
}

/// One projection's batch, ready to be written by [`Db::commit`].
pub(crate) struct Writes {
    pub(crate) projection: &'static str,
    pub(crate) generation: i64,
    /// The position the generation's checkpoint moves to.
    pub(crate) checkpoint: Position,
    documents: Vec<(String, String)>,
    added: Vec<IndexEntry>,
    removed: Vec<IndexEntry>,
}

impl Writes {
    /// Rows this batch writes or removes.
    fn rows(&self) -> usize {
        self.documents.len() + self.added.len() + self.removed.len()
    }
}

/// A transaction on one generation of one projection: the bookkeeping of
/// generations, and the writes of batches ([`Db::commit`]).
pub(crate) struct WriteTx {
    inner: TxInner,
    projection: &'static str,
    generation: i64,
}

impl WriteTx {
    /// Takes the projection's live row for the rest of the transaction (a
    /// row lock on PostgreSQL, the write lock on SQLite) and returns the
    /// served generation, so that a swap and a batch never interleave.
    pub(crate) async fn lock_live(&mut self) -> Result<Option<i64>> {
        let sql = "UPDATE projection_live SET generation = generation WHERE projection = $1
            RETURNING generation";
        let projection = self.projection;
        Ok(
            both!(&mut self.inner, tx => sqlx::query_scalar::<_, i64>(sql)
            .bind(projection)
            .fetch_optional(&mut **tx)
            .await)?,
        )
    }

    /// Sets this generation's checkpoint.
    pub(crate) async fn set_checkpoint(&mut self, position: Position) -> Result<()> {
        let sql = "INSERT INTO projection_checkpoints (projection, generation, position)
            VALUES ($1, $2, $3)
            ON CONFLICT (projection, generation) DO UPDATE SET position = excluded.position";
        let (projection, generation) = (self.projection, self.generation);
        both!(&mut self.inner, tx => sqlx::query(sql)
            .bind(projection)
            .bind(generation)
            .bind(position as i64)
            .execute(&mut **tx)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// Serves this transaction's generation from now on (when it commits)
    /// and deletes every other generation's rows.
    pub(crate) async fn make_live(&mut self, schema_version: u32) -> Result<()> {
        let (projection, generation) = (self.projection, self.generation);
        let upsert = "INSERT INTO projection_live (projection, generation, schema_version)
            VALUES ($1, $2, $3)
            ON CONFLICT (projection) DO UPDATE
            SET generation = excluded.generation, schema_version = excluded.schema_version";
        both!(&mut self.inner, tx => sqlx::query(upsert)
            .bind(projection)
            .bind(generation)
            .bind(i64::from(schema_version))
            .execute(&mut **tx)
            .await.map(|_| ()))?;
        for table in [
            "projection_documents",
            "projection_index",
            "projection_checkpoints",
        ] {
            let sql = format!("DELETE FROM {table} WHERE projection = $1 AND generation <> $2");
            both!(&mut self.inner, tx => sqlx::query(&sql)
                .bind(projection)
                .bind(generation)
                .execute(&mut **tx)
                .await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<()> {
        both!(self.inner, tx => tx.commit().await)?;
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        both!(self.inner, tx => tx.rollback().await)?;
        Ok(())
    }

    /// Writes one batch's documents and index changes. PostgreSQL: one
    /// statement per kind of change (up to [`FLUSH_ROWS_POSTGRES`] rows),
    /// the rows passed as one array per column and expanded by `unnest`,
    /// so the statement has five parameters whatever the batch's size and
    /// is prepared once per connection. SQLite (no arrays): multi-row
    /// statements of at most [`FLUSH_ROWS`] rows with `?` parameters.
    async fn flush(&mut self, writes: Writes) -> Result<()> {
        let (projection, generation) = (self.projection, self.generation);
        match &mut self.inner {
            PerBackend::Postgres(tx) => {
                for chunk in writes.documents.chunks(FLUSH_ROWS_POSTGRES) {
                    let (keys, jsons): (Vec<&str>, Vec<&str>) = chunk
                        .iter()
                        .map(|(key, json)| (key.as_str(), json.as_str()))
                        .unzip();
                    sqlx::query(UPSERT_DOCUMENTS_POSTGRES)
                        .bind(projection)
                        .bind(generation)
                        .bind(keys)
                        .bind(jsons)
                        .execute(&mut **tx)
                        .await?;
                }
                for (rows, sql) in [
                    (&writes.added, ADD_INDEX_POSTGRES),
                    (&writes.removed, REMOVE_INDEX_POSTGRES),
                ] {
                    for chunk in rows.chunks(FLUSH_ROWS_POSTGRES) {
                        let mut columns: [Vec<&str>; 3] =
                            std::array::from_fn(|_| Vec::with_capacity(chunk.len()));
                        for (name, key, doc) in chunk {
                            columns[0].push(name);
                            columns[1].push(key);
                            columns[2].push(doc);
                        }
                        let [names, keys, docs] = columns;
                        sqlx::query(sql)
                            .bind(projection)
                            .bind(generation)
                            .bind(names)
                            .bind(keys)
                            .bind(docs)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
            }
            PerBackend::Sqlite(tx) => {
                for chunk in writes.documents.chunks(FLUSH_ROWS) {
                    let sql = format!(
                        "INSERT INTO projection_documents (projection, generation, doc_key, json)
                        VALUES {} ON CONFLICT (projection, generation, doc_key)
                        DO UPDATE SET json = excluded.json",
                        placeholders(chunk.len(), 4)
                    );
                    // Only full chunks keep a prepared statement: the last
                    // one's size differs every batch, and hundreds of cached
                    // thousand-parameter statements would hold ~100 MiB.
                    let mut query = sqlx::query(&sql).persistent(chunk.len() == FLUSH_ROWS);
                    for (key, json) in chunk {
                        query = query.bind(projection).bind(generation).bind(key).bind(json);
                    }
                    query.execute(&mut **tx).await?;
                }
                for (rows, sql) in [
                    (
                        &writes.added,
                        "INSERT INTO projection_index (projection, generation, index_name, index_key, doc_key)
                        VALUES {values} ON CONFLICT DO NOTHING",
                    ),
                    (
                        &writes.removed,
                        "DELETE FROM projection_index
                        WHERE (projection, generation, index_name, index_key, doc_key) IN (VALUES {values})",
                    ),
                ] {
                    for chunk in rows.chunks(FLUSH_ROWS) {
                        let sql = sql.replace("{values}", &placeholders(chunk.len(), 5));
                        let mut query = sqlx::query(&sql).persistent(chunk.len() == FLUSH_ROWS);
                        for (name, key, doc) in chunk {
                            query = query
                                .bind(projection)
                                .bind(generation)
                                .bind(*name)
                                .bind(key)
                                .bind(doc);
                        }
                        query.execute(&mut **tx).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A batch's documents (PostgreSQL): one array per column, one row per
/// element. A batch holds each document once, so no row is affected twice.
const UPSERT_DOCUMENTS_POSTGRES: &str =
    "INSERT INTO projection_documents (projection, generation, doc_key, json)
    SELECT $1, $2, doc_key, json FROM unnest($3::text[], $4::text[]) AS rows (doc_key, json)
    ON CONFLICT (projection, generation, doc_key) DO UPDATE SET json = excluded.json";

/// A batch's new index entries (PostgreSQL), as [`UPSERT_DOCUMENTS_POSTGRES`].
const ADD_INDEX_POSTGRES: &str =
    "INSERT INTO projection_index (projection, generation, index_name, index_key, doc_key)
    SELECT $1, $2, index_name, index_key, doc_key
    FROM unnest($3::text[], $4::text[], $5::text[]) AS rows (index_name, index_key, doc_key)
    ON CONFLICT DO NOTHING";

/// A batch's removed index entries (PostgreSQL).
const REMOVE_INDEX_POSTGRES: &str = "DELETE FROM projection_index
    WHERE projection = $1 AND generation = $2
    AND (index_name, index_key, doc_key) IN
        (SELECT * FROM unnest($3::text[], $4::text[], $5::text[]))";

/// Rows per statement when a batch is written on SQLite (and keys per
/// prefetch query): 5 parameters a row stays far below SQLite's limit
/// (32,766).
const FLUSH_ROWS: usize = 1_000;

/// Rows per statement when a batch is written on PostgreSQL (arrays: one
/// parameter per column, whatever the count; this bounds one message).
const FLUSH_ROWS_POSTGRES: usize = 10_000;

/// `(?, ?, …), (…), …`: `rows` tuples of `columns` parameters (SQLite,
/// where thousands of named `$n` parameters make a statement slow to
/// prepare).
fn placeholders(rows: usize, columns: usize) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    vec![tuple; rows].join(", ")
}

fn to_json<T: Serialize>(doc_key: &str, document: &T) -> Result<String> {
    serde_json::to_string(document).map_err(|e| Error::Corrupted {
        position: 0,
        reason: format!("document {doc_key} does not serialise: {e}"),
    })
}

/// A document held as its value (changed in place, serialised once at
/// commit), with the serialiser of its type.
struct Cached {
    value: Box<dyn Any + Send + Sync>,
    to_json: fn(&(dyn Any + Send + Sync), &str) -> Result<String>,
    dirty: bool,
}

impl Cached {
    fn new<T: Serialize + Clone + Send + Sync + 'static>(value: T, dirty: bool) -> Cached {
        fn to_json_of<T: Serialize + 'static>(
            value: &(dyn Any + Send + Sync),
            doc_key: &str,
        ) -> Result<String> {
            let value = value.downcast_ref::<T>().expect("stored with its own type");
            to_json(doc_key, value)
        }
        Cached {
            value: Box::new(value),
            to_json: to_json_of::<T>,
            dirty,
        }
    }
}

/// The keys written to a generation being rebuilt, as a Bloom filter of
/// fixed size: "no" is certain (the document does not exist, no query
/// needed), "maybe" costs one lookup. Its memory does not grow with the
/// log; past a few million keys "maybe" just becomes more frequent.
pub(crate) struct KeyFilter {
    bits: Vec<u64>,
    hasher: std::hash::RandomState,
}

/// Bits of a [`KeyFilter`]: 2²⁴ (2 MiB), under 1 % false positives with
/// four probes up to ~1.7 million keys.
const KEY_FILTER_BITS: usize = 1 << 24;

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter {
            bits: vec![0; KEY_FILTER_BITS / 64],
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl KeyFilter {
    fn probes(&self, key: &str) -> [usize; 4] {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let (low, high) = (hash as u32 as usize, (hash >> 32) as usize | 1);
        std::array::from_fn(|i| low.wrapping_add(i * high) % KEY_FILTER_BITS)
    }

    fn insert(&mut self, key: &str) {
        for bit in self.probes(key) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, key: &str) -> bool {
        self.probes(key)
            .iter()
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}
