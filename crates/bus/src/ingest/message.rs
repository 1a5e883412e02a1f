//! The message schema and its checks: what a municipality sends
//! ([`IngestMessage`]), how a raw NATS message is checked against it and
//! against its subject ([`check_message`]), and what it is answered
//! ([`Receipt`], with the stable [`codes`] of the transport layer).

use chrono::{DateTime, Utc};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_events::{EventId, EventType, Position};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::subjects::{ingest_subject, parse_ingest_subject};

/// Largest ingest message accepted, in bytes. A status message carries one
/// event whose payload is facts, not documents (documents travel as
/// content-addressed blobs, DESIGN.md decision 12): real ones are a few
/// kilobytes. 256 KiB leaves ample room and stays well under nats-server's
/// default `max_payload` of 1 MiB, so an oversized message still reaches
/// kiban and gets a `too_large` receipt instead of vanishing at the server.
pub const INGEST_MESSAGE_BYTES_MAX: usize = 256 * 1024;

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

/// Every transport code with its meaning, for receipts' documentation
/// (docs/asyncapi.json, docs/integration.md).
pub const TRANSPORT_CODES: &[(&str, &str)] = &[
    (
        codes::TOO_LARGE,
        "The message is over 256 KiB; send documents as blobs (their digest in the body), not inline.",
    ),
    (
        codes::MALFORMED_JSON,
        "The message is not JSON; it is dropped, never retried.",
    ),
    (
        codes::INVALID_FIELD,
        "An envelope field is missing, has the wrong type, is unknown, or an identifier is malformed (the message names it).",
    ),
    (
        codes::INSURER_MISMATCH,
        "`insurer` differs from the subject's insurer: publish on your own subject with your own number.",
    ),
    (
        codes::KIND_MISMATCH,
        "`kind` differs from the subject's: publish on kiban.ingest.<insurer>.<kind>.",
    ),
    (
        codes::MSG_ID_MISMATCH,
        "The Nats-Msg-Id header is missing or differs from `event_id`.",
    ),
    (
        codes::UNKNOWN_KIND,
        "`kind` is not one a municipality sends (the kinds are the channels of docs/asyncapi.json).",
    ),
];

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
    let refuse = |event_id: Option<EventId>, rejection: Rejection| {
        Box::new(Refusal {
            insurer: subject_insurer.clone(),
            receipt: Receipt::rejected(event_id, rejection.code, &rejection.message),
            poison: rejection.poison,
        })
    };
    let message = parse_body(body).map_err(|rejection| refuse(header_id, rejection))?;
    let subject_kind = parsed.map(|s| s.kind).unwrap_or_default();
    let envelope = Envelope {
        subject,
        subject_insurer: subject_insurer.as_ref(),
        subject_kind: &subject_kind,
        msg_id,
        header_id,
    };
    check_envelope(&message, &envelope)
        .map_err(|rejection| refuse(Some(message.event_id), rejection))?;
    Ok(message)
}

/// Why [`check_message`] refused a message, before it becomes a receipt.
struct Rejection {
    code: &'static str,
    message: String,
    poison: bool,
}

impl Rejection {
    fn new(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            poison: false,
        }
    }

    fn poison(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            poison: true,
        }
    }
}

/// The body's size, JSON syntax, schema and identifiers.
fn parse_body(body: &[u8]) -> std::result::Result<IngestMessage, Rejection> {
    if body.len() > INGEST_MESSAGE_BYTES_MAX {
        return Err(Rejection::poison(
            codes::TOO_LARGE,
            format!(
                "the message is {} bytes; the limit is {INGEST_MESSAGE_BYTES_MAX} bytes",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        if error.classify() == serde_json::error::Category::Data {
            Rejection::new(codes::INVALID_FIELD, error.to_string())
        } else {
            Rejection::poison(
                codes::MALFORMED_JSON,
                format!("the message is not valid JSON: {error}"),
            )
        }
    })
}

/// What travelled around the body: the subject it was published on (and
/// what it names) and its `Nats-Msg-Id` header.
struct Envelope<'a> {
    subject: &'a str,
    subject_insurer: Option<&'a InsurerNumber>,
    subject_kind: &'a str,
    msg_id: Option<&'a str>,
    header_id: Option<EventId>,
}

/// The parsed body against its envelope: the header's event id, the
/// subject's insurer and event type.
fn check_envelope(
    message: &IngestMessage,
    envelope: &Envelope<'_>,
) -> std::result::Result<(), Rejection> {
    if envelope.header_id != Some(message.event_id) {
        return Err(Rejection::new(
            codes::MSG_ID_MISMATCH,
            format!(
                "the {MSG_ID_HEADER} header must be the event id {} (got {:?})",
                message.event_id,
                envelope.msg_id.unwrap_or("")
            ),
        ));
    }
    if envelope.subject_insurer != Some(&message.insurer) {
        return Err(Rejection::new(
            codes::INSURER_MISMATCH,
            format!(
                "the message is for insurer {} but was published on {}; publish on {}",
                message.insurer,
                envelope.subject,
                ingest_subject(&message.insurer, &message.kind)
            ),
        ));
    }
    if envelope.subject_kind != message.kind.as_str() {
        return Err(Rejection::new(
            codes::KIND_MISMATCH,
            format!(
                "the message's kind is {} but the subject names {:?}",
                message.kind, envelope.subject_kind
            ),
        ));
    }
    Ok(())
}

/// A message after [`check_message`]: the message, or the receipt refusing it.
pub(crate) type Checked = std::result::Result<IngestMessage, Box<Refusal>>;

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
