//! Every table of the store's database and the one way it is made: the
//! versioned migrations in `migrations/postgres` and `migrations/sqlite`,
//! embedded, run by [`Store::open`](crate::Store::open) and by [`migrate`].
//!
//! The database holds more than the event log: the read models'
//! documents (`kiban-projections`) and the web screen's staff accounts
//! (`kiban-api`) live beside it and use their own pools, but their tables are
//! made here too, so a database has one schema version whichever part opens
//! it first. `docs/store.md` lists the tables and their migrations.
//!
//! [`PerBackend`] and [`both!`](crate::both) are the one dual-backend
//! dispatch of kiban: a value of either backend and a body written once that
//! is type-checked against each.

use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};

use crate::error::Result;

/// The PostgreSQL migrations.
pub(crate) static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The SQLite migrations.
pub(crate) static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");

/// A value of one of the two backends: a pool, a connection, a transaction.
/// Match it with [`both!`](crate::both) when the body is the same SQL for
/// both.
#[derive(Debug, Clone)]
pub enum PerBackend<P, S> {
    /// PostgreSQL.
    Postgres(P),
    /// SQLite.
    Sqlite(S),
}

/// A connection pool on the store's database, of either backend.
pub type DbPool = PerBackend<PgPool, SqlitePool>;

/// Runs the same body on whichever backend a [`PerBackend`] value holds,
/// binding the inner value to `$inner`; each arm is type-checked against its
/// own backend, so one SQL string and one chain of `bind`s serve both.
///
/// ```ignore
/// let count: i64 = kiban_store::both!(&pool, pool => sqlx::query_scalar(sql)
///     .fetch_one(pool)
///     .await)?;
/// ```
#[macro_export]
macro_rules! both {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            $crate::PerBackend::Postgres($inner) => $body,
            $crate::PerBackend::Sqlite($inner) => $body,
        }
    };
}

/// Brings the database behind `pool` to the current schema: runs the
/// migrations not yet applied (none when the store has opened it before).
/// What a part that opens the store's database with its own pool runs first,
/// so that it works whether or not [`Store::open`](crate::Store::open) ran
/// on that database before.
pub async fn migrate(pool: &DbPool) -> Result<()> {
    match pool {
        PerBackend::Postgres(pool) => POSTGRES.run(pool).await?,
        PerBackend::Sqlite(pool) => SQLITE.run(pool).await?,
    }
    Ok(())
}
