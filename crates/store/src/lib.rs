//! `kiban-store`: the event store of kiban (DESIGN.md decisions 1–4 and 11).
//!
//! An append-only log of [`RecordedEvent`]s with a gapless global position,
//! a contiguous per-stream version and a SHA-256 hash chain, on PostgreSQL
//! (production) or SQLite (embedded default). `docs/store.md` has the whole
//! story; this is the map.
//!
//! # Surface
//!
//! - [`Store::open`]`(url, `[`StoreOptions`]`)` with `sqlite://path` or
//!   `postgres://…`; [`Store`] is cheap to clone and is what the rest of kiban
//!   holds. [`EventStore`] is the same surface as a trait, for code that wants
//!   to be tested against any store.
//! - [`Store::append`]`(stream, expected, events) -> `[`AppendResult`]:
//!   atomic, optimistic on the stream version, idempotent on event ids.
//! - [`Store::read_stream`], [`Store::read_all`] (inclusive `from`, bounded
//!   pages), [`Store::head`], [`Store::subscribe`] (catch-up, then live),
//!   [`Store::verify`] ([`VerifyReport`], [`BreakReason`]), [`chain_hash`].
//! - [`Error`]: one variant per thing a caller branches on.
//! - [`Store::read_raw`]: the bare scan, the ceiling of reads.
//! - [`scratch`]: fresh databases for benchmark runs and tests;
//!   [`baseline`]: the naive and raw writes `kiban bench append` compares
//!   the store with.
//!
//! # Layout
//!
//! - `store.rs`: opening, the append path, reads and subscriptions.
//! - `writer.rs`: the single writer task with group commit.
//! - `cache.rs`: the writer's bounded stream-version cache.
//! - `chain.rs`: the hash chain and its verification.
//! - `scan.rs`: the sequential scan under verification and bulk reads
//!   (keyset pages, a reader thread, recycled batches, binary COPY).
//! - `checkpoint.rs`: signed checkpoints (Ed25519) and their export.
//! - `keys.rs`: per-person data keys and sealed values (crypto-shredding).
//! - `backend/`: the SQL of each backend, behind a small internal surface.
//! - `blobs.rs`: content-addressed document bodies ([`Store::put_blob`],
//!   [`Store::get_blob`], [`Store::blob_size`]) in the `blobs` table.
//! - `blob_sweep.rs`: the removal of uploads no recorded event names, a
//!   week after their last upload ([`Store::sweep_blobs`]).
//! - `scratch.rs`: scratch databases (create, remove) for benchmarks and
//!   the suites' harness: the one place that creates and drops databases.
//! - `baseline.rs`: the naive and raw baselines of the append benchmark
//!   (the benchmark itself is `kiban-lab`'s).
//! - `command_keys.rs`: the API's idempotency keys and their command
//!   digests ([`Store::claim_command_key`]).
//! - `schema.rs`: the migrations of every table of the database (the log's
//!   and those of the read models and the staff screen), [`migrate`] for
//!   parts that open the database with their own pool, and [`PerBackend`] /
//!   [`both!`]: the one dual-backend dispatch.
//! - `migrations/postgres`, `migrations/sqlite`: the schema, embedded;
//!   `migrations/common` holds the files both backends share (linked).
//!
//! # Architecture invariants
//!
//! - Only this crate knows the event log's SQL; everything else sees
//!   [`Store`] / [`EventStore`] and the envelope of `kiban-events`.
//! - Every table of the database has one owner: this crate's migrations.
//!   Nothing creates a table at run time; the read models and the staff
//!   screen query their own tables but run [`migrate`] to get them.
//! - Exactly one task per database writes: the writer of the store holding
//!   the writer lock (on PostgreSQL a session advisory lock on the writer's
//!   own connection; on SQLite an exclusive `flock` on `<file>.writer-lock`). It assigns positions itself, so
//!   positions are gapless and in commit order by construction — no sequence,
//!   no high-water marks, no gap timeouts.
//! - Nothing is acknowledged before it is durable: an append is answered after
//!   its batch commits (PostgreSQL with `synchronous_commit`, SQLite WAL with
//!   `synchronous=FULL`).
//! - Payload bytes are stored verbatim (TEXT, never JSONB) and times to the
//!   microsecond, so a recorded event reads back byte for byte and its hash
//!   can be recomputed.
//! - Every spawned task is owned by the [`Store`] and stops on
//!   [`Store::close`] or when the last clone is dropped.

mod backend;
pub mod baseline;
mod blob_sweep;
mod blobs;
mod cache;
mod chain;
mod checkpoint;
mod command_keys;
mod compact;
mod error;
pub mod keys;
mod scan;
mod schema;
pub mod scratch;
mod store;
mod tail;
mod writer;

use std::future::Future;

pub use blob_sweep::{
    BLOB_SWEEP_BATCH_MAX, BlobSweep, UNREFERENCED_BLOB_RETENTION_HOURS, UPLOAD_ATTACHABLE_HOURS,
};
pub use blobs::{BLOB_BYTES_MAX, BlobRef, BlobUpload, UPLOADER_BYTES_MAX};
pub use cache::STREAM_VERSION_CACHE_CAPACITY;
pub use chain::{BreakReason, VERIFY_PAGE_EVENTS, VerifyRange, VerifyReport, chain_hash};
pub use checkpoint::{
    CHECKPOINT_EVERY_DEFAULT, CHECKPOINT_EXPORT_FORMAT, CHECKPOINT_SIGNING_TAG, Checkpoint,
    CheckpointCheck, CheckpointExport, PlatformKey, parse_public_key, signed_message,
};
pub use command_keys::KeyClaim;
pub use ed25519_dalek::VerifyingKey;
pub use error::{Error, Result};
pub use keys::{FORGOTTEN_MARKER, Opened, PersonKeys, SealError};
pub use kiban_events::{
    EventId, ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamName, Version,
};
pub use scan::RawRead;
pub use schema::{DbPool, PerBackend, migrate};
pub use store::{
    APPEND_PAYLOAD_BYTES_MAX, APPEND_QUEUE_CAPACITY, AppendForwarder, AppendResult,
    HEAD_POLL_INTERVAL_MS, Head, POOL_ACQUIRE_TIMEOUT_MS, READ_CONNECTIONS_DEFAULT,
    READ_EVENTS_MAX, SQLITE_BUSY_TIMEOUT_MS, SQLITE_HEAD_POLL_INTERVAL_MS,
    SUBSCRIPTION_PAGE_EVENTS, Store, StoreOptions, Subscription, WRITER_APPLICATION_NAME,
    WRITER_POLL_INTERVAL_MS, WriterMode,
};
pub use tail::{SubscriptionPages, TAIL_EVENTS_DEFAULT, TAIL_PAYLOAD_BYTES_MAX};
pub use writer::{BATCH_EVENTS_MAX, BATCH_GATHER_YIELDS_MAX, BATCH_PAYLOAD_BYTES_MAX};

/// The event store as a trait, so that projections and the engine can be
/// written and tested against any implementation. [`Store`] implements it;
/// each method is documented there.
pub trait EventStore: Send + Sync {
    /// See [`Store::append`].
    fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send;

    /// See [`Store::read_stream`].
    fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// See [`Store::read_all`].
    fn read_all(
        &self,
        from: Position,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// See [`Store::head`].
    fn head(&self) -> impl Future<Output = Result<Head>> + Send;

    /// See [`Store::writer_version`].
    fn writer_version(&self, stream: &StreamName) -> Option<Version>;

    /// See [`Store::subscribe`].
    fn subscribe(&self, from: Position) -> Subscription;

    /// See [`Store::verify`].
    fn verify(
        &self,
        from: Position,
        to: Option<Position>,
    ) -> impl Future<Output = Result<VerifyReport>> + Send;
}

impl EventStore for Store {
    fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        Store::append(self, stream, expected, events)
    }

    fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send {
        Store::read_stream(self, stream, from, max)
    }

    fn read_all(
        &self,
        from: Position,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send {
        Store::read_all(self, from, max)
    }

    fn head(&self) -> impl Future<Output = Result<Head>> + Send {
        Store::head(self)
    }

    fn writer_version(&self, stream: &StreamName) -> Option<Version> {
        Store::writer_version(self, stream)
    }

    fn subscribe(&self, from: Position) -> Subscription {
        Store::subscribe(self, from)
    }

    fn verify(
        &self,
        from: Position,
        to: Option<Position>,
    ) -> impl Future<Output = Result<VerifyReport>> + Send {
        Store::verify(self, from, to)
    }
}
