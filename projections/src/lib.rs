//! `kiban-projections`: the read models of kiban (DESIGN.md decision 8).
//!
//! A [`Projection`] has a name, a schema version, and `apply(&mut Tx,
//! &Event)`. [`Projections::start`] runs one task that catches every
//! projection up from its checkpoint with `store.subscribe(lowest
//! checkpoint + 1)` and then follows the store live, in batches: each batch
//! is decoded once ([`Event`]), each projection reads the documents the
//! batch needs in one query, folds the batch in memory, and the batch's
//! writes (multi-row statements) commit in one transaction together with
//! every projection's new checkpoint.
//! [`Projections::lag`] reports head − checkpoint; [`Projections::rebuild`]
//! replays everything into a fresh generation and swaps it in atomically.
//! [`ReadModels`] answers the API's queries.
//!
//! # Layout
//!
//! - `db.rs`: [`Db`] (a pool on the store's database, PostgreSQL or SQLite)
//!   and [`Tx`]: a small document store (documents, secondary indexes,
//!   checkpoints, the live-generation pointer) in one SQL dialect; a `Tx`
//!   is one batch of one projection, kept in memory until it commits.
//! - `projection.rs`: the [`Projection`] trait, [`Event`] (decoded once per
//!   batch), [`Stamped`] events.
//! - `runner.rs`: [`Projections`]: the runner, batches, lag, rebuild.
//! - `follower.rs`: [`Projections::follow`]: the checkpoints of projections
//!   another process runs (an API process of a scaled-out deployment).
//! - `models/`: the read models — `care` (persons, certification
//!   applications, caseloads), `organisations` (offices and terminals,
//!   insurers, subsidies), `access_log`, `card_links` (card certificate →
//!   person, for the person's sign-in).
//! - `read.rs`: [`ReadModels`] and the views it returns.
//! - `as_of.rs`: [`ReadModelsAsOf`]: the read models at an earlier position,
//!   replayed into a temporary database (audit time travel).
//!
//! # Invariants
//!
//! - A checkpoint lives in the same database as its documents and moves in
//!   the same transaction: after a crash a projection resumes exactly after
//!   the last event it applied.
//! - `apply` reads no clock; anything depending on "today" (overdue,
//!   validity, remaining ledgers) is computed at read time.
//! - Only the generation named in `projection_live` is served; a batch
//!   first locks that row, so a rebuild's swap and a batch never interleave.
//! - `kiban-store` does not share its pool, so [`Db::open`] opens its own
//!   from the same URL. The tables belong to the store's migrations
//!   (`0004_projections.sql`); [`Db::open`] runs them through
//!   [`kiban_store::migrate`], so it works before or after the store opens
//!   the database, and nothing here creates a table.

mod as_of;
mod db;
pub mod entitlements;
mod error;
mod follower;
pub mod models;
mod projection;
mod read;
mod runner;

pub use as_of::ReadModelsAsOf;
pub use db::{
    ANALYZE_AFTER_ROWS, Db, POOL_ACQUIRE_TIMEOUT_MS, PREFETCH_POSTGRES, READ_MODEL_CONNECTIONS,
    SQLITE_BUSY_TIMEOUT_MS, SQLITE_CACHE_KIB, Tx,
};
pub use error::{Error, Result};
pub use follower::FOLLOW_POLL_MS;
pub use models::access_log::{AccessEntry, Reader};
pub use models::care::{ApplicationDoc, PersonDoc, PersonalFields};
pub use projection::{Decoded, Event, Projection, Stamped, decode};
pub use read::*;
pub use runner::{
    BATCH_EVENTS_MAX, GATHER_WAIT_MS, Lag, Projections, REBUILD_BATCH_EVENTS, RETRY_DELAY_MS,
    rebuild_apart,
};
