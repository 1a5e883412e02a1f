//! The store's error type: one variant per thing a caller branches on.

use std::sync::Arc;

use kiban_events::envelope::EnvelopeError;
use kiban_events::{EventId, ExpectedVersion, Position, StreamName, Version};

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed.
///
/// For an append, every variant except [`Error::Unavailable`] and
/// [`Error::Database`] means *nothing was written*. After `Unavailable` or
/// `Database` the outcome is unknown (the commit may have happened before the
/// connection broke): re-send the same append with the same event ids, which is
/// harmless because appends are idempotent on event ids.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The stream's version is not what the append expected. Reload the
    /// stream, decide again, and retry with the new version.
    #[error("stream {stream} is at version {actual}, but the append expected {expected}")]
    Conflict {
        stream: StreamName,
        expected: ExpectedVersion,
        actual: Version,
    },
    /// An event with this id is already stored with other content (another
    /// stream, type, payload, ...). The producer reused an id: a bug on its side.
    #[error("event id {event_id} is already stored with different content")]
    DuplicateEventId { event_id: EventId },
    /// Some events of the append are already stored and others are not, so it
    /// is neither a new append nor a re-send of an old one. Nothing was written.
    #[error(
        "the append mixes already stored event ids ({stored} of {total}) with new ones; nothing was written"
    )]
    MixedBatch { stored: usize, total: usize },
    /// The append is malformed or over a limit (empty, too many events, too
    /// large, repeated ids). Nothing was written; fix the request.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// This store does not hold the writer lock of its database: another kiban
    /// process (or another store opened on the same database) is the writer.
    /// Nothing was written. Send the append to the writer; this store keeps
    /// serving reads and subscriptions and takes over writing once the writer
    /// is gone.
    #[error("{0}")]
    NotWriter(String),
    /// The database could not be reached (connection refused or lost, pool
    /// timed out). The outcome of an append is unknown: retry it as is.
    #[error("the event store database is unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error. The outcome of an append is
    /// unknown: retry it as is; if it persists, it is an operational problem.
    #[error("event store database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// Stored data breaks an invariant of the store (a gap in positions, a
    /// jump in a stream's versions, a field that does not parse). Someone
    /// changed the database outside kiban; run `verify` to locate it.
    #[error("the stored events are corrupted at position {position}: {reason}")]
    Corrupted { position: Position, reason: String },
    /// The store was closed (or its writer stopped); open it again.
    #[error("the event store is closed")]
    Closed,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Error::Closed,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::Unavailable(error.to_string())
            }
            other => Error::Database(Arc::new(other)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => Error::Database(Arc::new(sqlx::Error::Migrate(Box::new(other)))),
        }
    }
}

impl From<EnvelopeError> for Error {
    fn from(error: EnvelopeError) -> Self {
        Error::Invalid(error.to_string())
    }
}
