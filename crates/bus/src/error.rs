//! The bus's error type: one variant per thing a caller branches on, and
//! the classification of the NATS client's typed errors into them.

use std::fmt::{Debug, Display};

use async_nats::client::FlushErrorKind;
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
    PublishErrorKind as JetStreamPublishErrorKind, RequestErrorKind as JetStreamRequestErrorKind,
};
use async_nats::jetstream::stream::{ConsumerErrorKind, RawMessageErrorKind};
use async_nats::jetstream::{Error as ApiError, ErrorCode};
use async_nats::jetstream::{consumer, consumer::pull::MessagesErrorKind};
use async_nats::{ConnectErrorKind, PublishErrorKind, RequestErrorKind, SubscribeErrorKind};

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
    /// Classifies an error of the NATS client by its kind: one that a later
    /// attempt may not meet (a timeout, a lost connection, a JetStream
    /// leader being elected) is [`Error::Unavailable`], one that the server
    /// or the client's checks answered for good (a conflicting stream, a
    /// denied permission, an invalid subject) is [`Error::Refused`].
    pub(crate) fn from_nats<K: NatsErrorKind>(
        context: &str,
        error: async_nats::error::Error<K>,
    ) -> Self {
        let text = format!("{context}: {error}");
        if error.kind().transient() {
            Error::Unavailable(text)
        } else {
            Error::Refused(text)
        }
    }
}

/// An error kind of the NATS client that says whether trying again later
/// may succeed. Kinds that only say "the request failed" (`Other`,
/// `Request`) count as transient: they wrap an IO or request failure, and a
/// loop that restarts with backoff recovers from those, while a kind that
/// needs an operator is named by the client.
pub(crate) trait NatsErrorKind: Clone + Debug + Display + PartialEq {
    /// Whether a later attempt may succeed without anyone changing anything.
    fn transient(&self) -> bool;
}

/// Whether a JetStream API error is the cluster's passing state (no
/// leader yet, a peer or the stream offline, a membership change): the
/// server answers 503 for those, or one of these codes.
fn api_error_transient(error: &ApiError) -> bool {
    const SERVICE_UNAVAILABLE: usize = 503;
    const TRANSIENT: [ErrorCode; 9] = [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::CLUSTER_NOT_ACTIVE,
        ErrorCode::CLUSTER_NOT_LEADER,
        ErrorCode::CLUSTER_INCOMPLETE,
        ErrorCode::CLUSTER_SERVER_MEMBER_CHANGE_INFLIGHT,
        ErrorCode::STREAM_OFFLINE,
        ErrorCode::STREAM_OFFLINE_REASON,
        ErrorCode::CONSUMER_OFFLINE,
        ErrorCode::CONSUMER_OFFLINE_REASON,
    ];
    error.code() == SERVICE_UNAVAILABLE || TRANSIENT.contains(&error.error_code())
}

impl NatsErrorKind for ConnectErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::TimedOut | Self::Io | Self::Dns | Self::MaxReconnects => true,
            Self::ServerParse | Self::Authentication | Self::AuthorizationViolation | Self::Tls => {
                false
            }
        }
    }
}

impl NatsErrorKind for PublishErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::Send => true,
            Self::MaxPayloadExceeded | Self::InvalidSubject => false,
        }
    }
}

impl NatsErrorKind for FlushErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::SendError | Self::FlushError => true,
        }
    }
}

impl NatsErrorKind for SubscribeErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::Other => true,
            Self::InvalidSubject | Self::InvalidQueueName => false,
        }
    }
}

impl NatsErrorKind for RequestErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::TimedOut | Self::NoResponders | Self::Other => true,
            Self::InvalidSubject | Self::MaxPayloadExceeded => false,
        }
    }
}

impl NatsErrorKind for JetStreamRequestErrorKind {
    fn transient(&self) -> bool {
        match self {
            // No responder to a JetStream API request: the server is
            // restarting or its JetStream not yet ready.
            Self::TimedOut | Self::NoResponders | Self::Other => true,
            Self::InvalidSubject => false,
        }
    }
}

impl NatsErrorKind for JetStreamPublishErrorKind {
    fn transient(&self) -> bool {
        match self {
            // A wrong last sequence means the stream moved under the relay;
            // it restarts from the new tail.
            Self::TimedOut
            | Self::BrokenPipe
            | Self::MaxAckPending
            | Self::WrongLastSequence
            | Self::Other => true,
            Self::StreamNotFound | Self::WrongLastMessageId | Self::MaxPayloadExceeded => false,
        }
    }
}

impl NatsErrorKind for CreateStreamErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::TimedOut | Self::Response => true,
            Self::JetStream(error) => api_error_transient(error),
            // No responder at all: JetStream is disabled on the server (the
            // documented `Refused` case), not merely slow.
            Self::JetStreamUnavailable
            | Self::EmptyStreamName
            | Self::InvalidStreamName
            | Self::DomainAndExternalSet
            | Self::NotFound
            | Self::ResponseParse => false,
        }
    }
}

impl NatsErrorKind for GetStreamErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::Request => true,
            Self::JetStream(error) => api_error_transient(error),
            Self::EmptyName | Self::InvalidStreamName => false,
        }
    }
}

impl NatsErrorKind for ConsumerErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::TimedOut | Self::Request | Self::Other => true,
            Self::JetStream(error) => api_error_transient(error),
            Self::InvalidConsumerType | Self::InvalidName => false,
        }
    }
}

impl NatsErrorKind for ConsumerInfoErrorKind {
    fn transient(&self) -> bool {
        match self {
            // A consumer or stream that is offline or not found may be one
            // a cluster is electing a leader for, or one being re-created.
            Self::Offline
            | Self::NotFound
            | Self::StreamNotFound
            | Self::Request
            | Self::TimedOut
            | Self::NoResponders => true,
            Self::JetStream(error) => api_error_transient(error),
            Self::InvalidName => false,
        }
    }
}

impl NatsErrorKind for RawMessageErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::Other => true,
            Self::JetStream(error) => api_error_transient(error),
            Self::NoMessageFound | Self::InvalidSubject => false,
        }
    }
}

impl NatsErrorKind for consumer::StreamErrorKind {
    fn transient(&self) -> bool {
        match self {
            Self::TimedOut | Self::Other => true,
        }
    }
}

impl NatsErrorKind for MessagesErrorKind {
    fn transient(&self) -> bool {
        match self {
            // A missed heartbeat or a deleted consumer: a new subscription
            // (which creates the consumer again) recovers.
            Self::MissingHeartbeat
            | Self::ConsumerDeleted
            | Self::Pull
            | Self::NoResponders
            | Self::Other => true,
            Self::PushBasedConsumer | Self::RequestLimitExceeded => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::error::Error as NatsError;

    use super::*;

    fn classify<K: NatsErrorKind>(kind: K) -> Error {
        Error::from_nats("testing", NatsError::new(kind))
    }

    fn api_error(code: u64, err_code: u64) -> ApiError {
        serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": "from the server",
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn a_lost_connection_or_a_timeout_is_unavailable() {
        assert!(matches!(
            classify(PublishErrorKind::Send),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(FlushErrorKind::FlushError),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(ConnectErrorKind::Io),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(RequestErrorKind::NoResponders),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(JetStreamPublishErrorKind::TimedOut),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(MessagesErrorKind::MissingHeartbeat),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            classify(consumer::StreamErrorKind::TimedOut),
            Error::Unavailable(_)
        ));
    }

    #[test]
    fn what_an_operator_must_fix_is_refused() {
        assert!(matches!(
            classify(ConnectErrorKind::AuthorizationViolation),
            Error::Refused(_)
        ));
        assert!(matches!(
            classify(PublishErrorKind::InvalidSubject),
            Error::Refused(_)
        ));
        assert!(matches!(
            classify(JetStreamPublishErrorKind::StreamNotFound),
            Error::Refused(_)
        ));
        assert!(matches!(
            classify(CreateStreamErrorKind::JetStreamUnavailable),
            Error::Refused(_)
        ));
        assert!(matches!(
            classify(MessagesErrorKind::RequestLimitExceeded),
            Error::Refused(_)
        ));
    }

    #[test]
    fn a_jetstream_api_error_is_refused_unless_the_cluster_is_in_passing() {
        // 10058: a stream with that name exists with another configuration.
        let conflict = CreateStreamErrorKind::JetStream(api_error(400, 10058));
        assert!(matches!(classify(conflict), Error::Refused(_)));
        let no_leader = ConsumerErrorKind::JetStream(api_error(503, 10008));
        assert!(matches!(classify(no_leader), Error::Unavailable(_)));
        let offline = GetStreamErrorKind::JetStream(api_error(500, 10118));
        assert!(matches!(classify(offline), Error::Unavailable(_)));
    }

    #[test]
    fn the_message_keeps_the_context_and_the_client_s_words() {
        let error = classify(JetStreamPublishErrorKind::WrongLastMessageId);
        assert_eq!(
            error.to_string(),
            "NATS refused the request: testing: wrong last message id"
        );
    }
}
