//! [`Error`]: why a projection or a read failed.

use std::sync::Arc;

use kiban_events::Position;

/// Why a projection step or a read-model query failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The read-model database could not be reached or answered with an
    /// error. Transient: the runner retries from its checkpoint; a query may
    /// be retried as is.
    #[error("read-model database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// The event store failed (closed, unavailable).
    #[error(transparent)]
    Store(#[from] kiban_store::Error),
    /// A recorded event could not be read as a domain event, or a stored
    /// document does not parse: a bug or a missing upcaster, never the
    /// caller's fault. The runner stops at this position rather than skip it.
    #[error("read model cannot use the event at position {position}: {reason}")]
    Corrupted { position: Position, reason: String },
    /// The URL is not a PostgreSQL or SQLite URL, or a name is unknown.
    #[error("{0}")]
    Invalid(String),
    /// The projections were stopped.
    #[error("the projections are stopped")]
    Stopped,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Database(Arc::new(error))
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
