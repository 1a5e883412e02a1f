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

/// A pool on the store's database. `kiban-store` does not share its pool,
/// so the read models open their own from the same URL.
#[derive(Debug, Clone)]
pub struct Db {
    pool: DbPool,
}

impl Db {
    /// Opens a pool on `url` (`postgres://…` or `sqlite://…`, as given to
    /// the store) and runs the store's migrations on it, which own the read
    /// models' tables: opening before or after the store gives the same
    /// schema.
    pub async fn open(url: &str) -> Result<Db> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::Invalid(format!("bad PostgreSQL url: {e}")))?
                .application_name("kiban-projections")
                // Read models are derived and checkpointed in the same
                // transaction: a commit lost in a crash is applied again from
                // the checkpoint, so they need not wait for the WAL flush.
                .options([("synchronous_commit", "off")]);
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
                // As `synchronous_commit = off` above: NORMAL does not fsync
                // the WAL at each commit (the store's own commits, FULL, do,
                // and with them every frame before theirs).
                .synchronous(SqliteSynchronous::Normal)
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
        Ok(Db { pool })
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

    /// Begins a transaction writing to `generation` of `projection`.
    pub(crate) async fn begin(&self, projection: &'static str, generation: i64) -> Result<Tx> {
        let inner = match &self.pool {
            PerBackend::Postgres(pool) => PerBackend::Postgres(pool.begin().await?),
            PerBackend::Sqlite(pool) => PerBackend::Sqlite(pool.begin().await?),
        };
        Ok(Tx {
            inner,
            projection,
            generation,
            buffer: None,
        })
    }

    /// [`Db::begin`] for a rebuild into a fresh generation: documents and
    /// index entries are kept in memory until [`Tx::commit`] writes them in
    /// a few multi-row statements (a document put many times in the batch is
    /// written once), and `written` spares the lookup of a key never written
    /// to this generation.
    pub(crate) async fn begin_rebuild(
        &self,
        projection: &'static str,
        generation: i64,
        written: Arc<Mutex<KeyFilter>>,
    ) -> Result<Tx> {
        let mut tx = self.begin(projection, generation).await?;
        tx.buffer = Some(WriteBehind {
            docs: HashMap::new(),
            index: HashMap::new(),
            written,
        });
        Ok(tx)
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
        let keys = serde_json::to_string(doc_keys).expect("strings serialise");
        let select = "SELECT d.doc_key, d.json FROM projection_documents d
            JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
            WHERE d.projection = $1 AND d.doc_key IN ";
        let keys_of = match self.pool {
            PerBackend::Postgres(_) => "(SELECT jsonb_array_elements_text($2::jsonb))",
            PerBackend::Sqlite(_) => "(SELECT value FROM json_each($2))",
        };
        let sql = format!("{select}{keys_of}");
        let rows: Vec<(String, String)> = both!(&self.pool, pool => sqlx::query_as(&sql)
            .bind(projection)
            .bind(&keys)
            .fetch_all(pool)
            .await)?;
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

/// A transaction on one generation of one projection: what
/// [`Projection::apply`](crate::Projection::apply) writes through. The
/// runner commits it together with the checkpoint.
pub struct Tx {
    inner: TxInner,
    projection: &'static str,
    generation: i64,
    /// Set during a rebuild: writes are kept here and written at commit.
    buffer: Option<WriteBehind>,
}

impl Tx {
    /// The document under `doc_key`, if any.
    pub async fn get<T>(&mut self, doc_key: &str) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if let Some(buffer) = &self.buffer {
            if let Some(cached) = buffer.docs.get(doc_key) {
                return cached.value::<T>(doc_key).map(Some);
            }
            if !buffer
                .written
                .lock()
                .expect("not poisoned")
                .may_contain(doc_key)
            {
                return Ok(None);
            }
        }
        let document = self.select::<T>(doc_key).await?;
        if let (Some(buffer), Some(document)) = (&mut self.buffer, &document) {
            buffer
                .docs
                .insert(doc_key.to_owned(), Cached::new(document.clone(), false));
        }
        Ok(document)
    }

    async fn select<T: DeserializeOwned>(&mut self, doc_key: &str) -> Result<Option<T>> {
        let sql = "SELECT json FROM projection_documents
            WHERE projection = $1 AND generation = $2 AND doc_key = $3";
        let (projection, generation) = (self.projection, self.generation);
        let json = both!(&mut self.inner, tx => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(generation)
            .bind(doc_key)
            .fetch_optional(&mut **tx)
            .await)?;
        json.map(|json| parse(doc_key, &json)).transpose()
    }

    /// The document keys filed under `index_key` of `index_name`, in order.
    pub async fn index_keys(&mut self, index_name: &str, index_key: &str) -> Result<Vec<String>> {
        let sql = "SELECT doc_key FROM projection_index
            WHERE projection = $1 AND generation = $2 AND index_name = $3 AND index_key = $4
            ORDER BY doc_key";
        let (projection, generation) = (self.projection, self.generation);
        Ok(
            both!(&mut self.inner, tx => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(generation)
            .bind(index_name)
            .bind(index_key)
            .fetch_all(&mut **tx)
            .await)?,
        )
    }

    /// Writes (inserts or replaces) the document under `doc_key`.
    pub async fn put<T>(&mut self, doc_key: &str, document: &T) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if let Some(buffer) = &mut self.buffer {
            buffer.written.lock().expect("not poisoned").insert(doc_key);
            buffer
                .docs
                .insert(doc_key.to_owned(), Cached::new(document.clone(), true));
            return Ok(());
        }
        let json = to_json(doc_key, document)?;
        let sql = "INSERT INTO projection_documents (projection, generation, doc_key, json)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (projection, generation, doc_key) DO UPDATE SET json = excluded.json";
        let (projection, generation) = (self.projection, self.generation);
        both!(&mut self.inner, tx => sqlx::query(sql)
            .bind(projection)
            .bind(generation)
            .bind(doc_key)
            .bind(&json)
            .execute(&mut **tx)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// Files `doc_key` under `index_key` of `index_name` (idempotent).
    pub async fn index(&mut self, index_name: &str, index_key: &str, doc_key: &str) -> Result<()> {
        if let Some(buffer) = &mut self.buffer {
            buffer.index_entry(index_name, index_key, doc_key, true);
            return Ok(());
        }
        self.index_row(INDEX_INSERT, index_name, index_key, doc_key)
            .await
    }

    /// Removes `doc_key` from `index_key` of `index_name` (idempotent).
    pub async fn unindex(
        &mut self,
        index_name: &str,
        index_key: &str,
        doc_key: &str,
    ) -> Result<()> {
        if let Some(buffer) = &mut self.buffer {
            buffer.index_entry(index_name, index_key, doc_key, false);
            return Ok(());
        }
        self.index_row(INDEX_DELETE, index_name, index_key, doc_key)
            .await
    }

    /// Runs `sql` ([`INDEX_INSERT`] or [`INDEX_DELETE`]) on one index entry
    /// of this generation.
    async fn index_row(
        &mut self,
        sql: &str,
        index_name: &str,
        index_key: &str,
        doc_key: &str,
    ) -> Result<()> {
        let (projection, generation) = (self.projection, self.generation);
        both!(&mut self.inner, tx => sqlx::query(sql)
            .bind(projection)
            .bind(generation)
            .bind(index_name)
            .bind(index_key)
            .bind(doc_key)
            .execute(&mut **tx)
            .await.map(|_| ()))?;
        Ok(())
    }

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

    /// Commits (writing what a rebuild's transaction kept in memory first).
    pub(crate) async fn commit(mut self) -> Result<()> {
        if let Some(buffer) = self.buffer.take() {
            self.flush(buffer).await?;
        }
        both!(self.inner, tx => tx.commit().await)?;
        Ok(())
    }

    /// Writes the buffered documents and index changes: multi-row upserts
    /// of at most [`FLUSH_ROWS`] rows per statement.
    async fn flush(&mut self, buffer: WriteBehind) -> Result<()> {
        let (projection, generation) = (self.projection, self.generation);
        let numbered = matches!(self.inner, PerBackend::Postgres(_));
        let mut documents = Vec::new();
        for (key, cached) in buffer.docs {
            if cached.dirty {
                let json = (cached.to_json)(cached.value.as_ref(), &key)?;
                documents.push((key, json));
            }
        }
        for chunk in documents.chunks(FLUSH_ROWS) {
            let sql = format!(
                "INSERT INTO projection_documents (projection, generation, doc_key, json) VALUES {}
                ON CONFLICT (projection, generation, doc_key) DO UPDATE SET json = excluded.json",
                placeholders(chunk.len(), 4, numbered)
            );
            both!(&mut self.inner, tx => {
                // Only full chunks keep a prepared statement: the last one's
                // size differs every batch, and hundreds of cached
                // thousand-parameter statements would hold ~100 MiB.
                let mut query = sqlx::query(&sql).persistent(chunk.len() == FLUSH_ROWS);
                for (key, json) in chunk {
                    query = query.bind(projection).bind(generation).bind(key).bind(json);
                }
                query.execute(&mut **tx).await.map(|_| ())
            })?;
        }
        let (added, removed): (Vec<_>, Vec<_>) =
            buffer.index.into_iter().partition(|(_, present)| *present);
        for chunk in added.chunks(FLUSH_ROWS) {
            let sql = format!(
                "INSERT INTO projection_index (projection, generation, index_name, index_key, doc_key)
                VALUES {} ON CONFLICT DO NOTHING",
                placeholders(chunk.len(), 5, numbered)
            );
            both!(&mut self.inner, tx => {
                // Only full chunks keep a prepared statement: the last one's
                // size differs every batch, and hundreds of cached
                // thousand-parameter statements would hold ~100 MiB.
                let mut query = sqlx::query(&sql).persistent(chunk.len() == FLUSH_ROWS);
                for ((name, key, doc), _) in chunk {
                    query = query.bind(projection).bind(generation).bind(name).bind(key).bind(doc);
                }
                query.execute(&mut **tx).await.map(|_| ())
            })?;
        }
        for ((name, key, doc), _) in removed {
            self.index_row(INDEX_DELETE, &name, &key, &doc).await?;
        }
        Ok(())
    }
}

/// Files one document under one index key (idempotent).
const INDEX_INSERT: &str =
    "INSERT INTO projection_index (projection, generation, index_name, index_key, doc_key)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// Removes one document from one index key (idempotent).
const INDEX_DELETE: &str = "DELETE FROM projection_index WHERE projection = $1
    AND generation = $2 AND index_name = $3 AND index_key = $4 AND doc_key = $5";

/// Rows per statement when a rebuild's batch is written: 5 parameters a
/// row stays far below both databases' limits (SQLite 32,766, PostgreSQL
/// 65,535).
const FLUSH_ROWS: usize = 1_000;

/// `($1, $2, …), (…), …` (PostgreSQL) or `(?, ?, …), (…), …` (SQLite,
/// where thousands of named `$n` parameters make a statement slow to
/// prepare): `rows` tuples of `columns` parameters.
fn placeholders(rows: usize, columns: usize, numbered: bool) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            if numbered {
                sql.push_str(&format!("${}", row * columns + column + 1));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

fn to_json<T: Serialize>(doc_key: &str, document: &T) -> Result<String> {
    serde_json::to_string(document).map_err(|e| Error::Corrupted {
        position: 0,
        reason: format!("document {doc_key} does not serialise: {e}"),
    })
}

/// What a rebuild's transaction keeps until it commits.
struct WriteBehind {
    /// Documents read or written in this transaction, as values.
    docs: HashMap<String, Cached>,
    /// Index entries changed in this transaction: present or removed (the
    /// last change wins).
    index: HashMap<(String, String, String), bool>,
    written: Arc<Mutex<KeyFilter>>,
}

impl WriteBehind {
    fn index_entry(&mut self, index_name: &str, index_key: &str, doc_key: &str, present: bool) {
        self.index.insert(
            (
                index_name.to_owned(),
                index_key.to_owned(),
                doc_key.to_owned(),
            ),
            present,
        );
    }
}

/// A document held as its value (cloned out on `get`, serialised once at
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

    /// The value as `T`: a clone, or (read as another type than it was
    /// written as) a round trip through JSON.
    fn value<T: DeserializeOwned + Clone + 'static>(&self, doc_key: &str) -> Result<T> {
        match self.value.downcast_ref::<T>() {
            Some(value) => Ok(value.clone()),
            None => parse(doc_key, &(self.to_json)(self.value.as_ref(), doc_key)?),
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
