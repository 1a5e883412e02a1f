//! Appends from any kiban process, committed by the one writer: NATS
//! request/reply to a queue group (`docs/deploy.md` says why this and not a
//! JetStream work queue).
//!
//! - [`run_append_service`] runs in the engine process that holds the
//!   store's writer lock. It answers [`subjects::WRITER_SUBJECT`] in the
//!   queue group [`subjects::WRITER_QUEUE_GROUP`]: each request is appended
//!   to its own store (group commit batches concurrent requests), and the
//!   reply, the writer's [`AppendResult`], is sent only after the commit.
//! - [`NatsForwarder`] is the [`AppendForwarder`] of a store that is not the
//!   writer (`kiban serve --role api`): it sends the append to the service
//!   and, while no writer answers (a fail-over: no responders, a timeout, a
//!   writer that just lost its lock), sends it again with backoff for at most
//!   [`FORWARD_BUDGET_MS`], then gives up with
//!   [`kiban_store::Error::Unavailable`]. Sending again is safe: the events
//!   carry the same ids, and the store answers a re-sent append with its
//!   first result, whichever process committed it.
//! - [`ping_writer`]: whether a writer answers now, and its head (`/readyz`).
//!
//! The wire format is JSON ([`WriterRequest`], [`WriterReply`]), externally
//! tagged (`{"append": {...}}`): payloads travel as their verbatim JSON text
//! (`RawValue`, which an internally tagged enum cannot carry), so the writer
//! hashes the bytes the deciding process produced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, RequestErrorKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use kiban_events::{EventId, ExpectedVersion, NewEvent, Position, StreamName, Version};
use kiban_store::{AppendForwarder, AppendResult, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::subjects;

/// Longest wait for the writer's answer to one attempt, in milliseconds:
/// far above a group commit (milliseconds), so only a writer that died or
/// hangs meets it.
pub const FORWARD_ATTEMPT_TIMEOUT_MS: u64 = 3_000;

/// Longest time an append is sent again while no writer answers, in
/// milliseconds, its last attempt included. Above the measured fail-over
/// (kill -9 of the writer → the standby answers, `docs/deploy.md`), and
/// with the read-your-writes wait (3 s) below the API's request timeout
/// (10 s), so a command during a fail-over is usually committed, and
/// otherwise answered 503 rather than timed out.
pub const FORWARD_BUDGET_MS: u64 = 6_000;

/// First pause before sending an append again; doubled (with jitter) up to
/// [`FORWARD_RETRY_DELAY_MAX_MS`].
pub const FORWARD_RETRY_DELAY_MIN_MS: u64 = 50;

/// Longest pause between two attempts of one append.
pub const FORWARD_RETRY_DELAY_MAX_MS: u64 = 1_000;

/// Appends the service has in flight at once (each waits for a group
/// commit); beyond it, requests wait in the subscription's buffer.
pub const SERVICE_IN_FLIGHT_MAX: usize = kiban_store::APPEND_QUEUE_CAPACITY;

/// What an API process asks the writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterRequest {
    /// Append `events` to `stream` if its version is `expected`.
    Append {
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    },
    /// Are you there? (answered with [`WriterReply::Pong`]).
    Ping,
}

/// What the writer answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterReply {
    /// Committed (or a re-send of an append committed before).
    Appended { result: AppendResult },
    /// Refused, or failed; see [`WireError`].
    Failed { error: WireError },
    /// The writer's head.
    Pong { head: Position },
}

/// A store error on the wire: the variants a caller branches on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireError {
    Conflict {
        stream: StreamName,
        expected: ExpectedVersion,
        actual: Version,
    },
    DuplicateEventId {
        event_id: EventId,
    },
    MixedBatch {
        stored: usize,
        total: usize,
    },
    Invalid {
        message: String,
    },
    /// The process that answered is no longer the writer: try again.
    NotWriter {
        message: String,
    },
    /// The outcome is unknown: try again with the same events.
    Unavailable {
        message: String,
    },
    Corrupted {
        position: Position,
        reason: String,
    },
}

impl From<kiban_store::Error> for WireError {
    fn from(error: kiban_store::Error) -> Self {
        use kiban_store::Error as E;
        match error {
            E::Conflict {
                stream,
                expected,
                actual,
            } => WireError::Conflict {
                stream,
                expected,
                actual,
            },
            E::DuplicateEventId { event_id } => WireError::DuplicateEventId { event_id },
            E::MixedBatch { stored, total } => WireError::MixedBatch { stored, total },
            E::Invalid(message) => WireError::Invalid { message },
            E::NotWriter(message) => WireError::NotWriter { message },
            E::Closed => WireError::NotWriter {
                message: "the writer is shutting down".to_owned(),
            },
            E::Unavailable(message) => WireError::Unavailable { message },
            E::Database(error) => WireError::Unavailable {
                message: error.to_string(),
            },
            E::Corrupted { position, reason } => WireError::Corrupted { position, reason },
        }
    }
}

impl From<WireError> for kiban_store::Error {
    fn from(error: WireError) -> Self {
        use kiban_store::Error as E;
        match error {
            WireError::Conflict {
                stream,
                expected,
                actual,
            } => E::Conflict {
                stream,
                expected,
                actual,
            },
            WireError::DuplicateEventId { event_id } => E::DuplicateEventId { event_id },
            WireError::MixedBatch { stored, total } => E::MixedBatch { stored, total },
            WireError::Invalid { message } => E::Invalid(message),
            WireError::NotWriter { message } => E::NotWriter(message),
            WireError::Unavailable { message } => E::Unavailable(message),
            WireError::Corrupted { position, reason } => E::Corrupted { position, reason },
        }
    }
}

/// Answers appends for `store`, which must hold the writer lock, until
/// `stop`. Each request runs in its own task (at most
/// [`SERVICE_IN_FLIGHT_MAX`]), so concurrent requests share group commits.
/// Returns `Err` when the subscription ends (NATS gone for good): the
/// caller restarts it.
pub async fn run_append_service(
    client: Client,
    store: Store,
    stop: CancellationToken,
) -> Result<()> {
    let mut requests = client
        .queue_subscribe(
            subjects::WRITER_SUBJECT,
            subjects::WRITER_QUEUE_GROUP.to_owned(),
        )
        .await
        .map_err(|e| Error::Unavailable(format!("cannot subscribe to the writer subject: {e}")))?;
    tracing::info!("answering appends from other kiban processes");
    let in_flight = Arc::new(Semaphore::new(SERVICE_IN_FLIGHT_MAX));
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = requests.next() => message,
        };
        let Some(message) = message else {
            return Err(Error::Unavailable(
                "the writer subscription ended".to_owned(),
            ));
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, store) = (client.clone(), store.clone());
        tokio::spawn(async move {
            let reply = answer(&store, &message.payload).await;
            let body = serde_json::to_vec(&reply).expect("a reply serialises");
            if let Err(error) = client.publish(reply_to, body.into()).await {
                // The requester times out and sends again; the store answers
                // the re-send with this result.
                tracing::warn!(%error, "cannot send an append's answer");
            }
            drop(permit);
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}

/// The answer to one request.
async fn answer(store: &Store, payload: &[u8]) -> WriterReply {
    let request: WriterRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(error) => {
            return WriterReply::Failed {
                error: WireError::Invalid {
                    message: format!("not a writer request: {error}"),
                },
            };
        }
    };
    match request {
        WriterRequest::Append {
            stream,
            expected,
            events,
        } => match store.append(&stream, expected, events).await {
            Ok(result) => WriterReply::Appended { result },
            Err(error) => WriterReply::Failed {
                error: error.into(),
            },
        },
        WriterRequest::Ping => match store.head().await {
            Ok(head) if *store.writer_status().borrow() => WriterReply::Pong {
                head: head.position,
            },
            Ok(_) => WriterReply::Failed {
                error: WireError::NotWriter {
                    message: "this process no longer holds the writer lock".to_owned(),
                },
            },
            Err(error) => WriterReply::Failed {
                error: error.into(),
            },
        },
    }
}

/// One request to the writer, one attempt.
async fn request_once(
    client: &Client,
    body: Bytes,
    timeout: Duration,
) -> std::result::Result<WriterReply, kiban_store::Error> {
    let request = async_nats::Request::new()
        .payload(body)
        .timeout(Some(timeout));
    let message = client
        .send_request(subjects::WRITER_SUBJECT, request)
        .await
        .map_err(|error| match error.kind() {
            RequestErrorKind::NoResponders => {
                kiban_store::Error::NotWriter("no kiban writer answers on NATS".to_owned())
            }
            RequestErrorKind::TimedOut => kiban_store::Error::Unavailable(
                "the kiban writer did not answer in time".to_owned(),
            ),
            _ => kiban_store::Error::Unavailable(format!("NATS request failed: {error}")),
        })?;
    serde_json::from_slice(&message.payload).map_err(|error| {
        kiban_store::Error::Unavailable(format!("the writer's answer does not parse: {error}"))
    })
}

/// Whether a writer answers now, and its head.
pub async fn ping_writer(
    client: &Client,
    timeout: Duration,
) -> std::result::Result<Position, kiban_store::Error> {
    let body = serde_json::to_vec(&WriterRequest::Ping).expect("a request serialises");
    match request_once(client, body.into(), timeout).await? {
        WriterReply::Pong { head } => Ok(head),
        WriterReply::Failed { error } => Err(error.into()),
        WriterReply::Appended { .. } => Err(kiban_store::Error::Unavailable(
            "the writer answered a ping with an append".to_owned(),
        )),
    }
}

/// The [`AppendForwarder`] over NATS: see the module documentation.
#[derive(Debug, Clone)]
pub struct NatsForwarder {
    client: Client,
    attempt_timeout: Duration,
    budget: Duration,
}

impl NatsForwarder {
    /// A forwarder on `client` with the default timeouts.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            attempt_timeout: Duration::from_millis(FORWARD_ATTEMPT_TIMEOUT_MS),
            budget: Duration::from_millis(FORWARD_BUDGET_MS),
        }
    }

    async fn append(
        &self,
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> kiban_store::Result<AppendResult> {
        let request = WriterRequest::Append {
            stream,
            expected,
            events,
        };
        let body: Bytes = serde_json::to_vec(&request)
            .map_err(|e| kiban_store::Error::Invalid(format!("cannot encode the append: {e}")))?
            .into();
        let max_payload = self.client.server_info().max_payload;
        if max_payload > 0 && body.len() > max_payload {
            return Err(kiban_store::Error::Invalid(format!(
                "the append is {} bytes, more than the NATS server's max_payload of {max_payload}",
                body.len()
            )));
        }
        let started = Instant::now();
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(FORWARD_RETRY_DELAY_MIN_MS))
            .with_max_delay(Duration::from_millis(FORWARD_RETRY_DELAY_MAX_MS))
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempt = 1u32;
        loop {
            let left = self.budget.saturating_sub(started.elapsed());
            let timeout = self.attempt_timeout.min(left).max(Duration::from_millis(1));
            let error = match request_once(&self.client, body.clone(), timeout).await {
                Ok(WriterReply::Appended { result }) => return Ok(result),
                Ok(WriterReply::Failed { error }) => kiban_store::Error::from(error),
                Ok(WriterReply::Pong { .. }) => kiban_store::Error::Unavailable(
                    "the writer answered an append with a pong".to_owned(),
                ),
                Err(error) => error,
            };
            let retry = matches!(
                error,
                kiban_store::Error::NotWriter(_) | kiban_store::Error::Unavailable(_)
            );
            let delay = delays
                .next()
                .unwrap_or(Duration::from_millis(FORWARD_RETRY_DELAY_MAX_MS));
            if !retry || started.elapsed() + delay >= self.budget {
                if retry {
                    tracing::warn!(%error, attempt, "no kiban writer committed the append in time");
                    return Err(kiban_store::Error::Unavailable(format!(
                        "no kiban writer answered within {} ms ({attempt} attempts): {error}",
                        self.budget.as_millis()
                    )));
                }
                return Err(error);
            }
            tracing::debug!(%error, attempt, "sending the append to the writer again");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl AppendForwarder for NatsForwarder {
    fn forward(
        &self,
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, kiban_store::Result<AppendResult>> {
        Box::pin(self.append(stream, expected, events))
    }
}
