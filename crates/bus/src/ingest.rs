//! Ingest: municipalities' status messages in, receipts out.
//!
//! A municipality publishes an [`IngestMessage`] (JSON) on
//! `kiban.ingest.<insurer>.<event type>` with the header `Nats-Msg-Id` set to
//! its event id. [`run_ingest`] pulls such messages from the durable consumer
//! of `KIBAN_INGEST` in batches, checks each one ([`check_message`]: size,
//! JSON, schema, identifiers, subject against content), hands the valid ones
//! to an [`IngestHandler`] (the engine), publishes a [`Receipt`] on
//! `kiban.receipts.<insurer>`, and only then acknowledges the message.
//!
//! - Accepted and rejected messages are acknowledged after their receipt has
//!   been flushed to the server; poison messages (too large, not JSON) are
//!   terminated after their rejection receipt, never retried.
//! - A transient failure of the handler ([`Unavailable`]) leaves the message
//!   unacknowledged (negatively acknowledged with a delay): JetStream
//!   delivers it again, at most `INGEST_MAX_DELIVER` times.
//! - Messages about the same insured person (else the same insurer) are
//!   handled one after the other in stream order; different people in one
//!   batch concurrently, and up to
//!   [`INGEST_BATCHES_IN_FLIGHT_MAX`](crate::pipeline::INGEST_BATCHES_IN_FLIGHT_MAX)
//!   batches at once when they share no ordering key ([`crate::pipeline`]).
//! - Redelivered and re-sent messages are harmless: the handler is
//!   idempotent by event id and answers with the same receipt again.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_events::{EventId, EventType, Position};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::pipeline::{KeyedPipeline, group_by_key};
use crate::streams::ingest_consumer;
use crate::subjects::{parse_ingest_subject, receipt_subject};

/// Largest ingest message accepted, in bytes. A status message carries one
/// event whose payload is facts, not documents (documents travel as
/// content-addressed blobs, DESIGN.md decision 12): real ones are a few
/// kilobytes. 256 KiB leaves ample room and stays well under nats-server's
/// default `max_payload` of 1 MiB, so an oversized message still reaches
/// kiban and gets a `too_large` receipt instead of vanishing at the server.
pub const INGEST_MESSAGE_BYTES_MAX: usize = 256 * 1024;

/// Most messages pulled and handled as one batch. Large enough that the
/// store's group commit sees many appends at once, small enough that one
/// batch's receipts go out within milliseconds.
pub const INGEST_BATCH_MESSAGES_MAX: usize = 256;

/// Idle heartbeat of the pull subscription: a lost connection or a
/// restarted server is noticed after two missed heartbeats.
pub const INGEST_HEARTBEAT_MS: u64 = 2_000;

/// How long one pull request stays open at the server before the client
/// issues a new one.
pub const INGEST_PULL_EXPIRES_MS: u64 = 10_000;

/// How long JetStream waits before redelivering a message whose handler
/// reported the store unavailable: long enough for a database failover to
/// make progress, short enough that `INGEST_MAX_DELIVER` attempts span
/// minutes, not hours.
pub const INGEST_RETRY_DELAY_MS: u64 = 2_000;

/// Pause before re-opening the pull subscription after NATS failed (server
/// restarting, consumer briefly gone); bounded, so recovery is prompt.
pub const INGEST_REOPEN_DELAY_MS: u64 = 250;

/// Longest human-readable rejection message put into a receipt, in bytes;
/// a message quoting a whole payload back would be unbounded.
pub const RECEIPT_MESSAGE_BYTES_MAX: usize = 1024;

/// The NATS header carrying the producer's message id, which must equal the
/// event id: JetStream de-duplicates on it.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Stable rejection codes of the transport layer. Codes of the workflow
/// rules come from the handler (the engine) and are equally stable.
pub mod codes {
    /// The message is larger than [`super::INGEST_MESSAGE_BYTES_MAX`].
    pub const TOO_LARGE: &str = "too_large";
    /// The message is not JSON.
    pub const MALFORMED_JSON: &str = "malformed_json";
    /// A field is missing, has the wrong type, or an identifier is invalid.
    pub const INVALID_FIELD: &str = "invalid_field";
    /// The insurer in the subject differs from the message's `insurer`.
    pub const INSURER_MISMATCH: &str = "insurer_mismatch";
    /// The event type in the subject differs from the message's `kind`.
    pub const KIND_MISMATCH: &str = "kind_mismatch";
    /// `Nats-Msg-Id` is missing or differs from the message's `event_id`.
    pub const MSG_ID_MISMATCH: &str = "msg_id_mismatch";
    /// The event type is not one a municipality may send.
    pub const UNKNOWN_KIND: &str = "unknown_kind";
}

/// A municipality's status message: one fact to record, in the shape the
/// engine reads (`kiban_engine::ingest::MunicipalMessage`, field for field),
/// `docs/integration.md` has the schema and examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestMessage {
    /// The event id chosen by the municipality (UUID v7 recommended): the
    /// idempotency key, also sent as `Nats-Msg-Id`.
    pub event_id: EventId,
    /// What happened: an event type, `certification.decided`.
    pub kind: EventType,
    /// The reporting insurer (保険者番号); must be the subject's, which NATS
    /// permissions tie to the sending user.
    pub insurer: InsurerNumber,
    /// The insured person (被保険者番号), for facts about a person or an
    /// application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insured: Option<InsuredNumber>,
    /// The application's sequence number, for facts about one
    /// certification application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<u32>,
    /// When it happened, by the municipality's clock (RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// The fact's own fields, as `kind` defines them.
    #[serde(default)]
    pub body: serde_json::Map<String, serde_json::Value>,
}

impl IngestMessage {
    /// The key that orders handling: messages with the same key are handled
    /// one after the other, in the order they were published. All messages
    /// about one person share a key (their applications and their own
    /// record depend on each other); messages about no person, the insurer.
    pub fn ordering_key(&self) -> String {
        match &self.insured {
            Some(insured) => format!("{}-{insured}", self.insurer),
            None => self.insurer.to_string(),
        }
    }
}

/// Whether a receipt says recorded or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// The event is durably in the store.
    Accepted,
    /// The message was refused; nothing was stored. Re-sending it unchanged
    /// gets the same answer.
    Rejected,
}

/// The answer to one ingest message, published on `kiban.receipts.<insurer>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The message's event id; `None` only when neither the header nor the
    /// body carried a readable one.
    pub event_id: Option<EventId>,
    /// Accepted or rejected.
    pub status: ReceiptStatus,
    /// Store positions of the recorded events (accepted only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<Position>>,
    /// The stable rejection code (rejected only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What is wrong, for a person (rejected only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Receipt {
    /// An accepted receipt.
    pub fn accepted(event_id: EventId, positions: Vec<Position>) -> Self {
        Self {
            event_id: Some(event_id),
            status: ReceiptStatus::Accepted,
            positions: Some(positions),
            code: None,
            message: None,
        }
    }

    /// A rejected receipt; the message is cut to [`RECEIPT_MESSAGE_BYTES_MAX`].
    pub fn rejected(event_id: Option<EventId>, code: &str, message: &str) -> Self {
        Self {
            event_id,
            status: ReceiptStatus::Rejected,
            positions: None,
            code: Some(code.to_owned()),
            message: Some(truncate(message, RECEIPT_MESSAGE_BYTES_MAX)),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the handler decided about a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The events are committed (or were already, for a re-sent message).
    Accepted {
        /// Their store positions.
        positions: Vec<Position>,
    },
    /// The message breaks a rule; nothing was stored.
    Rejected {
        /// A stable code (`impossible_transition`, `unknown_kind`, ...).
        code: String,
        /// What is wrong, in words a municipality clerk understands.
        message: String,
    },
}

/// The handler could not decide now (the store is unavailable): the message
/// is left for JetStream to deliver again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler is unavailable: {0}")]
pub struct Unavailable(pub String);

/// What records a valid status message: the engine, in production.
///
/// Must be idempotent by `event_id`: a message handled twice (redelivered
/// after a crash, re-sent by its producer) gives the same [`Verdict`] again
/// and records nothing twice.
pub trait IngestHandler: Send + Sync + 'static {
    /// Records `message` or decides its rejection.
    fn handle(
        &self,
        message: IngestMessage,
    ) -> impl Future<Output = std::result::Result<Verdict, Unavailable>> + Send;
}

/// A message that did not pass [`check_message`]: the receipt to send, and
/// where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where the receipt goes: the insurer named by the subject. `None` when
    /// the subject names no valid insurer; then nobody can be told.
    pub insurer: Option<InsurerNumber>,
    /// The rejection receipt.
    pub receipt: Receipt,
    /// Whether the message is poison (too large, not JSON): terminated, not
    /// merely acknowledged.
    pub poison: bool,
}

/// Checks one raw message: size, JSON, schema and identifiers, the
/// `Nats-Msg-Id` against the event id, the subject's insurer and event type
/// against the content. The subject's insurer is what NATS permissions
/// authenticate (a municipality may publish only under its own number,
/// `docs/nats.md`), so requiring the content to match it ties the content to
/// the sending account.
pub fn check_message(
    subject: &str,
    msg_id: Option<&str>,
    body: &[u8],
) -> std::result::Result<IngestMessage, Box<Refusal>> {
    let parsed = parse_ingest_subject(subject);
    let subject_insurer = parsed.as_ref().and_then(|s| s.insurer.clone());
    let header_id = msg_id
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
        .and_then(|uuid| EventId::from_uuid(uuid).ok());
    let refuse = |event_id: Option<EventId>, code: &str, message: String, poison: bool| {
        Box::new(Refusal {
            insurer: subject_insurer.clone(),
            receipt: Receipt::rejected(event_id, code, &message),
            poison,
        })
    };
    if body.len() > INGEST_MESSAGE_BYTES_MAX {
        return Err(refuse(
            header_id,
            codes::TOO_LARGE,
            format!(
                "the message is {} bytes; the limit is {INGEST_MESSAGE_BYTES_MAX} bytes",
                body.len()
            ),
            true,
        ));
    }
    let message: IngestMessage = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(error) if error.classify() == serde_json::error::Category::Data => {
            return Err(refuse(
                header_id,
                codes::INVALID_FIELD,
                error.to_string(),
                false,
            ));
        }
        Err(error) => {
            return Err(refuse(
                header_id,
                codes::MALFORMED_JSON,
                format!("the message is not valid JSON: {error}"),
                true,
            ));
        }
    };
    let event_id = Some(message.event_id);
    if header_id != event_id {
        return Err(refuse(
            event_id,
            codes::MSG_ID_MISMATCH,
            format!(
                "the {MSG_ID_HEADER} header must be the event id {} (got {:?})",
                message.event_id,
                msg_id.unwrap_or("")
            ),
            false,
        ));
    }
    if subject_insurer.as_ref() != Some(&message.insurer) {
        return Err(refuse(
            event_id,
            codes::INSURER_MISMATCH,
            format!(
                "the message is for insurer {} but was published on {subject}; publish on kiban.ingest.{}.{}",
                message.insurer, message.insurer, message.kind
            ),
            false,
        ));
    }
    let subject_kind = parsed.map(|s| s.kind).unwrap_or_default();
    if subject_kind != message.kind.as_str() {
        return Err(refuse(
            event_id,
            codes::KIND_MISMATCH,
            format!(
                "the message's kind is {} but the subject names {subject_kind:?}",
                message.kind
            ),
            false,
        ));
    }
    Ok(message)
}

/// A pulled message and what [`check_message`] made of it.
/// A message after [`check_message`].
pub(crate) type Checked = std::result::Result<IngestMessage, Box<Refusal>>;

type Pulled = (jetstream::Message, Checked);

/// How one message ends, after its receipt went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Accepted or rejected: acknowledge.
    Ack,
    /// Poison: terminate, never deliver again.
    Terminate,
    /// Not decided (handler unavailable, or an earlier message of its
    /// ordering key was not): deliver again later.
    Retry,
}

/// The receipt for a checked message and how to settle it, or
/// [`Unavailable`]. Shared by the NATS consumer and the in-process bus.
pub(crate) async fn decide<H: IngestHandler>(
    handler: &H,
    checked: Checked,
) -> std::result::Result<(Option<InsurerNumber>, Receipt, bool), Unavailable> {
    match checked {
        Err(refusal) => Ok((refusal.insurer, refusal.receipt, refusal.poison)),
        Ok(message) => {
            let insurer = message.insurer.clone();
            let event_id = message.event_id;
            let receipt = match handler.handle(message).await? {
                Verdict::Accepted { positions } => Receipt::accepted(event_id, positions),
                Verdict::Rejected { code, message } => {
                    Receipt::rejected(Some(event_id), &code, &message)
                }
            };
            Ok((Some(insurer), receipt, false))
        }
    }
}

/// Runs the ingest consumer until `cancel` fires: creates the streams'
/// consumer if needed, pulls batches, and survives NATS restarts (it
/// re-opens the subscription after [`INGEST_REOPEN_DELAY_MS`]).
///
/// The caller owns the task it runs in. Returns `Err` only for a problem an
/// operator must fix ([`Error::Refused`]: the stream is missing, a
/// permission is denied).
pub async fn run_ingest<H: IngestHandler>(
    client: async_nats::Client,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> Result<()> {
    let context = jetstream::new(client.clone());
    while !cancel.is_cancelled() {
        match pull_until_failure(&client, &context, &handler, &cancel).await {
            Ok(()) => break,
            Err(Error::Refused(reason)) => return Err(Error::Refused(reason)),
            Err(error) => {
                tracing::warn!(%error, "ingest subscription failed; re-opening");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(INGEST_REOPEN_DELAY_MS)) => {}
                }
            }
        }
    }
    Ok(())
}

/// One subscription's life: returns `Ok` when cancelled, `Err` when the
/// subscription broke.
async fn pull_until_failure<H: IngestHandler>(
    client: &async_nats::Client,
    context: &jetstream::Context,
    handler: &Arc<H>,
    cancel: &CancellationToken,
) -> Result<()> {
    let consumer = ingest_consumer(context).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(INGEST_BATCH_MESSAGES_MAX)
        .heartbeat(Duration::from_millis(INGEST_HEARTBEAT_MS))
        .expires(Duration::from_millis(INGEST_PULL_EXPIRES_MS))
        .messages()
        .await
        .map_err(|error| Error::from_nats("opening the ingest subscription", error))?;
    let mut batches = messages.ready_chunks(INGEST_BATCH_MESSAGES_MAX);
    // A reconnect (to the same server restarted, or to another node of a
    // cluster) can strand the subscription's pull requests on the old
    // connection while heartbeats still arrive; a fresh subscription after
    // every reconnect removes that case.
    let statistics = client.statistics();
    let connects = statistics.connects.load(Ordering::Relaxed);
    let mut reconnect_check = tokio::time::interval(Duration::from_millis(INGEST_HEARTBEAT_MS));
    let mut pipeline = KeyedPipeline::new();
    let mut failed = None;
    while failed.is_none() {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = reconnect_check.tick() => {
                if statistics.connects.load(Ordering::Relaxed) != connects {
                    failed = Some(Error::Unavailable("reconnected to NATS".to_owned()));
                }
            }
            done = pipeline.next_done(), if !pipeline.is_idle() => {
                if let Some(Err(error)) = done {
                    failed = Some(error);
                }
            }
            batch = batches.next(), if pipeline.can_accept() => {
                let Some(batch) = batch else {
                    failed = Some(Error::Unavailable(
                        "the ingest subscription ended".to_owned(),
                    ));
                    continue;
                };
                tracing::debug!(messages = batch.len(), "ingest batch pulled");
                let mut messages = Vec::with_capacity(batch.len());
                for item in batch {
                    match item {
                        Ok(message) => messages.push(message),
                        Err(error) => {
                            failed = Some(Error::from_nats("pulling ingest messages", error));
                        }
                    }
                }
                let (keys, groups) = group_batch(messages);
                pipeline.submit(keys, settle_batch(client, handler.as_ref(), groups));
            }
        }
    }
    // Stopping (cancelled or failed): no new batch; a parked one never
    // started and is delivered again; the running ones finish, so that
    // nothing decided goes without its receipt.
    pipeline.drop_waiting();
    while let Some(done) = pipeline.next_done().await {
        if let Err(error) = done {
            failed.get_or_insert(error);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Checks each message of a batch and groups them by ordering key
/// ([`group_by_key`]).
fn group_batch(messages: Vec<jetstream::Message>) -> (Vec<String>, Vec<Vec<Pulled>>) {
    let checked = messages.into_iter().map(|message| {
        let checked = check_message(
            message.subject.as_str(),
            msg_id(message.headers.as_ref()),
            &message.payload,
        );
        (message, checked)
    });
    group_by_key(checked, |(_, checked)| {
        checked.as_ref().ok().map(IngestMessage::ordering_key)
    })
}

/// Handles one batch's groups concurrently, publishes receipts, flushes
/// them, then settles every message.
async fn settle_batch<H: IngestHandler>(
    client: &async_nats::Client,
    handler: &H,
    groups: Vec<Vec<Pulled>>,
) -> Result<()> {
    let settled = futures::future::join_all(
        groups
            .into_iter()
            .map(|group| handle_group(client, handler, group)),
    )
    .await;
    // The receipts must be at the server before any acknowledgement: a
    // message acknowledged with its receipt still in this process's buffer
    // would be lost with the process.
    client
        .flush()
        .await
        .map_err(|error| Error::from_nats("flushing receipts", error))?;
    let mut retrying = false;
    for (message, settle) in settled.into_iter().flatten() {
        let kind = match settle {
            Settle::Ack => AckKind::Ack,
            Settle::Terminate => AckKind::Term,
            Settle::Retry => {
                retrying = true;
                AckKind::Nak(Some(Duration::from_millis(INGEST_RETRY_DELAY_MS)))
            }
        };
        // A lost acknowledgement only means a redelivery, which is harmless.
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, "acknowledging an ingest message failed");
        }
    }
    if retrying {
        // Messages already pulled behind the failed ones could be about the
        // same person; handling them before the failed ones come back would
        // reorder that person's facts. Dropping the subscription returns
        // them to JetStream (redelivered after the ack wait, so after the
        // failed ones), and the store gets a pause to recover. (A batch
        // sharing a key with this one was parked, never started.)
        return Err(Error::Unavailable(
            "the ingest handler is unavailable".to_owned(),
        ));
    }
    Ok(())
}

/// Handles one ordering key's messages in order. After a transient failure
/// the rest of the group is not handled (it would be out of order) and is
/// delivered again with the failed one.
async fn handle_group<H: IngestHandler>(
    client: &async_nats::Client,
    handler: &H,
    group: Vec<Pulled>,
) -> Vec<(jetstream::Message, Settle)> {
    let mut settled = Vec::with_capacity(group.len());
    let mut blocked = false;
    for (message, checked) in group {
        if blocked {
            settled.push((message, Settle::Retry));
            continue;
        }
        let settle = match decide(handler, checked).await {
            Err(Unavailable(reason)) => {
                tracing::warn!(%reason, "ingest handler unavailable; the message will be redelivered");
                blocked = true;
                Settle::Retry
            }
            Ok((insurer, receipt, poison)) => {
                match publish_receipt(client, insurer.as_ref(), &receipt).await {
                    Ok(()) if poison => Settle::Terminate,
                    Ok(()) => Settle::Ack,
                    Err(error) => {
                        tracing::warn!(%error, "publishing a receipt failed; the message will be redelivered");
                        blocked = true;
                        Settle::Retry
                    }
                }
            }
        };
        settled.push((message, settle));
    }
    settled
}

/// Publishes `receipt` on `kiban.receipts.<insurer>`; with no insurer there
/// is nobody to tell, and the refusal is only logged.
async fn publish_receipt(
    client: &async_nats::Client,
    insurer: Option<&InsurerNumber>,
    receipt: &Receipt,
) -> Result<()> {
    let Some(insurer) = insurer else {
        tracing::warn!(
            ?receipt,
            "ingest message on a subject with no valid insurer; no receipt can be sent"
        );
        return Ok(());
    };
    let body = serde_json::to_vec(receipt).expect("a receipt serialises");
    client
        .publish(receipt_subject(insurer), body.into())
        .await
        .map_err(|error| Error::from_nats("publishing a receipt", error))
}

fn msg_id(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(MSG_ID_HEADER).map(|value| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01920000-0000-7000-8000-000000000001";
    const SUBJECT: &str = "kiban.ingest.131016.certification.filed";

    fn body(insurer: &str, kind: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"{ID}","kind":"{kind}","insurer":"{insurer}","insured":"0000012345",
                "application":1,"occurred_at":"2026-04-01T09:00:00+09:00",
                "body":{{"kind":"new"}}}}"#
        )
        .into_bytes()
    }

    fn refusal_code(result: std::result::Result<IngestMessage, Box<Refusal>>) -> String {
        result.unwrap_err().receipt.code.unwrap()
    }

    #[test]
    fn a_valid_message_passes_with_its_body() {
        let message =
            check_message(SUBJECT, Some(ID), &body("131016", "certification.filed")).unwrap();
        assert_eq!(message.insurer.as_str(), "131016");
        assert_eq!(message.application, Some(1));
        assert_eq!(message.body["kind"], "new");
        assert_eq!(message.ordering_key(), "131016-0000012345");
    }

    #[test]
    fn each_transport_problem_has_its_code() {
        let good = body("131016", "certification.filed");
        assert_eq!(
            refusal_code(check_message(SUBJECT, Some(ID), b"{not json")),
            codes::MALFORMED_JSON
        );
        let big = vec![b' '; INGEST_MESSAGE_BYTES_MAX + 1];
        let refusal = check_message(SUBJECT, Some(ID), &big).unwrap_err();
        assert!(refusal.poison);
        assert_eq!(refusal.receipt.code.as_deref(), Some(codes::TOO_LARGE));
        assert_eq!(refusal.receipt.event_id.unwrap().to_string(), ID);
        assert_eq!(
            refusal_code(check_message(
                SUBJECT,
                Some(ID),
                &body("131017", "certification.filed")
            )),
            codes::INSURER_MISMATCH
        );
        assert_eq!(
            refusal_code(check_message(
                SUBJECT,
                Some(ID),
                &body("131016", "certification.decided")
            )),
            codes::KIND_MISMATCH
        );
        assert_eq!(
            refusal_code(check_message(SUBJECT, None, &good)),
            codes::MSG_ID_MISMATCH
        );
        assert_eq!(
            refusal_code(check_message(
                SUBJECT,
                Some(ID),
                &body("13101x", "certification.filed")
            )),
            codes::INVALID_FIELD
        );
        let missing = br#"{"event_id":"01920000-0000-7000-8000-000000000001"}"#;
        let refusal = check_message(SUBJECT, Some(ID), missing).unwrap_err();
        assert_eq!(refusal.receipt.code.as_deref(), Some(codes::INVALID_FIELD));
        assert!(!refusal.poison);
        assert!(refusal.receipt.message.unwrap().contains("missing field"));
    }

    #[test]
    fn a_subject_without_a_valid_insurer_has_nobody_to_tell() {
        let refusal =
            check_message("kiban.ingest.x.certification.filed", Some(ID), b"[").unwrap_err();
        assert_eq!(refusal.insurer, None);
    }

    #[test]
    fn receipts_serialise_without_empty_fields_and_cut_long_messages() {
        let id = EventId::from_uuid(Uuid::parse_str(ID).unwrap()).unwrap();
        let json = serde_json::to_string(&Receipt::accepted(id, vec![7])).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"event_id":"{ID}","status":"accepted","positions":[7]}}"#)
        );
        let long = "é".repeat(RECEIPT_MESSAGE_BYTES_MAX);
        let receipt = Receipt::rejected(None, codes::INVALID_FIELD, &long);
        assert!(receipt.message.unwrap().len() <= RECEIPT_MESSAGE_BYTES_MAX);
    }
}
