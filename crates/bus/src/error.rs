//! The bus's error type: one variant per thing a caller branches on.

/// Why a bus operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// NATS could not be reached or did not answer in time (connection
    /// refused or lost, JetStream request timed out). Retrying later may
    /// succeed; nothing kiban holds is lost meanwhile.
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),
    /// The NATS server refused a request (a stream exists with a conflicting
    /// configuration, a permission is missing, JetStream is disabled). An
    /// operator has to fix the configuration; retrying does not help.
    #[error("NATS refused the request: {0}")]
    Refused(String),
    /// The event source (the store) failed while the relay or the routing
    /// followed it. The task stops; restart it from its checkpoint.
    #[error("the event source failed: {0}")]
    Source(String),
    /// `KIBAN_EVENTS` holds a message the relay did not publish, so its
    /// tail is no checkpoint. Only the relay may publish there (`docs/nats.md`).
    #[error("foreign message in the events stream: {0}")]
    Foreign(String),
    /// A checkpoint could not be loaded or saved.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// The bus was shut down.
    #[error("the bus is closed")]
    Closed,
}

/// The result type of the bus.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies an error of the NATS client: a timeout or a lost
    /// connection is [`Error::Unavailable`], anything the server answered
    /// is [`Error::Refused`].
    pub(crate) fn from_nats<E: std::fmt::Display>(context: &str, error: E) -> Self {
        let text = format!("{context}: {error}");
        let lower = text.to_ascii_lowercase();
        let transient = [
            "timed out",
            "timeout",
            "disconnect",
            "connection",
            "no responders",
            "broken pipe",
            "temporarily unavailable",
        ];
        if transient.iter().any(|needle| lower.contains(needle)) {
            Error::Unavailable(text)
        } else {
            Error::Refused(text)
        }
    }
}
