//! The document store every projection writes to, in the store's database.
//!
//! One SQL dialect for PostgreSQL and SQLite: four small tables, upserts with
//! `INSERT … ON CONFLICT … DO UPDATE`, JSON kept as TEXT.
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

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use kiban_events::Position;

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

/// The schema, one statement each, valid on both backends.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_live (
        projection TEXT PRIMARY KEY,
        generation BIGINT NOT NULL,
        schema_version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_checkpoints (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (projection, generation))",
    "CREATE TABLE IF NOT EXISTS projection_documents (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        doc_key TEXT NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (projection, generation, doc_key))",
    "CREATE TABLE IF NOT EXISTS projection_index (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        index_name TEXT NOT NULL,
        index_key TEXT NOT NULL,
        doc_key TEXT NOT NULL,
        PRIMARY KEY (projection, generation, index_name, index_key, doc_key))",
    "CREATE INDEX IF NOT EXISTS projection_index_by_doc
        ON projection_index (projection, generation, index_name, doc_key)",
];

/// A pool on the store's database. `kiban-store` does not share its pool,
/// so the read models open their own from the same URL.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite (the same file as the store).
    Sqlite(SqlitePool),
}

/// Runs the same body on whichever pool or transaction a value holds; each
/// arm is type-checked against its own backend.
macro_rules! both {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            Db::Postgres($inner) => $body,
            Db::Sqlite($inner) => $body,
        }
    };
}

macro_rules! both_tx {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            TxInner::Postgres($inner) => $body,
            TxInner::Sqlite($inner) => $body,
        }
    };
}

impl Db {
    /// Opens a pool on `url` (`postgres://…` or `sqlite://…`, as given to
    /// the store) and creates the tables if missing.
    pub async fn open(url: &str) -> Result<Db> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::Invalid(format!("bad PostgreSQL url: {e}")))?
                .application_name("kiban-projections")
                // Read models are derived and checkpointed in the same
                // transaction: a commit lost in a crash is applied again from
                // the checkpoint, so they need not wait for the WAL flush.
                .options([("synchronous_commit", "off")]);
            Db::Postgres(
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
            Db::Sqlite(
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
        for statement in SCHEMA {
            both!(&db, pool => sqlx::query(statement).execute(pool).await.map(|_| ()))?;
        }
        Ok(db)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        both!(self, pool => pool.close().await)
    }

    /// Begins a transaction writing to `generation` of `projection`.
    pub(crate) async fn begin(&self, projection: &'static str, generation: i64) -> Result<Tx> {
        let inner = match self {
            Db::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
            Db::Sqlite(pool) => TxInner::Sqlite(pool.begin().await?),
        };
        Ok(Tx {
            inner,
            projection,
            generation,
        })
    }

    /// The served generation and its schema version, if any.
    pub(crate) async fn live(&self, projection: &str) -> Result<Option<(i64, i64)>> {
        let sql = "SELECT generation, schema_version FROM projection_live WHERE projection = $1";
        Ok(both!(self, pool => sqlx::query_as::<_, (i64, i64)>(sql)
            .bind(projection)
            .fetch_optional(pool)
            .await)?)
    }

    /// The checkpoint of one generation (0 when it has none).
    pub(crate) async fn checkpoint(&self, projection: &str, generation: i64) -> Result<Position> {
        let sql =
            "SELECT position FROM projection_checkpoints WHERE projection = $1 AND generation = $2";
        let position = both!(self, pool => sqlx::query_scalar::<_, i64>(sql)
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
        Ok(both!(self, pool => sqlx::query_scalar::<_, i64>(sql)
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
        let json = both!(self, pool => sqlx::query_scalar::<_, String>(sql)
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
        let keys_of = match self {
            Db::Postgres(_) => "(SELECT jsonb_array_elements_text($2::jsonb))",
            Db::Sqlite(_) => "(SELECT value FROM json_each($2))",
        };
        let sql = format!("{select}{keys_of}");
        let rows: Vec<(String, String)> = both!(self, pool => sqlx::query_as(&sql)
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
        Ok(both!(self, pool => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(index_name)
            .bind(index_key)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(pool)
            .await)?)
    }

    /// Every document of the served generation as `(key, json)`, in key
    /// order: what a rebuild is compared by.
    pub async fn dump(&self, projection: &str) -> Result<Vec<(String, String)>> {
        let sql = "SELECT d.doc_key, d.json FROM projection_documents d
            JOIN projection_live l ON l.projection = d.projection AND l.generation = d.generation
            WHERE d.projection = $1 ORDER BY d.doc_key";
        Ok(
            both!(self, pool => sqlx::query_as::<_, (String, String)>(sql)
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

pub(crate) enum TxInner {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// A transaction on one generation of one projection: what
/// [`Projection::apply`](crate::Projection::apply) writes through. The
/// runner commits it together with the checkpoint.
pub struct Tx {
    inner: TxInner,
    projection: &'static str,
    generation: i64,
}

impl Tx {
    /// The document under `doc_key`, if any.
    pub async fn get<T: DeserializeOwned>(&mut self, doc_key: &str) -> Result<Option<T>> {
        let sql = "SELECT json FROM projection_documents
            WHERE projection = $1 AND generation = $2 AND doc_key = $3";
        let (projection, generation) = (self.projection, self.generation);
        let json = both_tx!(&mut self.inner, tx => sqlx::query_scalar::<_, String>(sql)
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
            both_tx!(&mut self.inner, tx => sqlx::query_scalar::<_, String>(sql)
            .bind(projection)
            .bind(generation)
            .bind(index_name)
            .bind(index_key)
            .fetch_all(&mut **tx)
            .await)?,
        )
    }

    /// Writes (inserts or replaces) the document under `doc_key`.
    pub async fn put<T: Serialize>(&mut self, doc_key: &str, document: &T) -> Result<()> {
        let json = serde_json::to_string(document).map_err(|e| Error::Corrupted {
            position: 0,
            reason: format!("document {doc_key} does not serialise: {e}"),
        })?;
        let sql = "INSERT INTO projection_documents (projection, generation, doc_key, json)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (projection, generation, doc_key) DO UPDATE SET json = excluded.json";
        let (projection, generation) = (self.projection, self.generation);
        both_tx!(&mut self.inner, tx => sqlx::query(sql)
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
        let sql =
            "INSERT INTO projection_index (projection, generation, index_name, index_key, doc_key)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        let (projection, generation) = (self.projection, self.generation);
        both_tx!(&mut self.inner, tx => sqlx::query(sql)
            .bind(projection)
            .bind(generation)
            .bind(index_name)
            .bind(index_key)
            .bind(doc_key)
            .execute(&mut **tx)
            .await.map(|_| ()))?;
        Ok(())
    }

    /// Removes `doc_key` from `index_key` of `index_name` (idempotent).
    pub async fn unindex(
        &mut self,
        index_name: &str,
        index_key: &str,
        doc_key: &str,
    ) -> Result<()> {
        let sql = "DELETE FROM projection_index WHERE projection = $1 AND generation = $2
            AND index_name = $3 AND index_key = $4 AND doc_key = $5";
        let (projection, generation) = (self.projection, self.generation);
        both_tx!(&mut self.inner, tx => sqlx::query(sql)
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
            both_tx!(&mut self.inner, tx => sqlx::query_scalar::<_, i64>(sql)
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
        both_tx!(&mut self.inner, tx => sqlx::query(sql)
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
        both_tx!(&mut self.inner, tx => sqlx::query(upsert)
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
            both_tx!(&mut self.inner, tx => sqlx::query(&sql)
                .bind(projection)
                .bind(generation)
                .execute(&mut **tx)
                .await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<()> {
        both_tx!(self.inner, tx => tx.commit().await)?;
        Ok(())
    }
}
