//! NATS subject and stream names: the only place in kiban that knows them.
//!
//! | subject | who publishes | who reads | stream |
//! | --- | --- | --- | --- |
//! | `kiban.ingest.<insurer>.<event type>` | a municipality | the ingest consumer | [`INGEST_STREAM`] |
//! | `kiban.receipts.<insurer>` | the ingest consumer | that municipality | — (core NATS) |
//! | `kiban.events.<insurer>.<event type>.<stream id>` | the outbox relay | kiban services, auditors | [`EVENTS_STREAM`] |
//! | `kiban.offices.<office>.updates` | office routing | that office | — (core NATS) |
//! | `kiban.offices.<office>.consents` | office routing | API processes (that office's screens) | — (core NATS) |
//! | `kiban.writer.append` | API and engine processes (request) | the writer, queue group [`WRITER_QUEUE_GROUP`] | — (core NATS request/reply) |
//! | `kiban.checkpoints.<name>` | the writing engine | the engine that becomes the writer | [`CHECKPOINTS_STREAM`] (last message per subject) |
//! | `_INBOX_KIBAN.>` ([`KIBAN_INBOX_PREFIX`]) | JetStream, the writer (replies) | kiban's own connections | — |
//!
//! An event type is dotted words (`certification.decided`), so it spans
//! several subject tokens; an insurer number, an office number and an encoded
//! stream id are one token each. Every token put into a subject comes from a
//! validated identifier, so no subject built here contains a space, `*` or `>`.

use kiban_events::ids::{InsurerNumber, OfficeNumber};
use kiban_events::{EventType, StreamName};

/// The JetStream stream municipalities publish into.
pub const INGEST_STREAM: &str = "KIBAN_INGEST";

/// The subjects [`INGEST_STREAM`] captures.
pub const INGEST_SUBJECTS: &str = "kiban.ingest.>";

/// The durable pull consumer of [`INGEST_STREAM`] that kiban reads with.
pub const INGEST_CONSUMER: &str = "kiban-ingest";

/// The JetStream stream the outbox relay publishes committed events to.
pub const EVENTS_STREAM: &str = "KIBAN_EVENTS";

/// The JetStream stream of the checkpoints every engine shares (the office
/// routing's: `crate::relay::SharedCheckpoints`), keeping the last message
/// per subject, so that a standby taking over continues where the old
/// writer stopped.
pub const CHECKPOINTS_STREAM: &str = "KIBAN_CHECKPOINTS";

/// The subjects [`CHECKPOINTS_STREAM`] captures.
pub const CHECKPOINTS_SUBJECTS: &str = "kiban.checkpoints.>";

/// `kiban.checkpoints.<name>`: where the checkpoint `name` is kept (a
/// name is one token: letters, digits and dashes).
pub fn checkpoint_subject(name: &str) -> String {
    format!("kiban.checkpoints.{name}")
}

/// The subjects [`EVENTS_STREAM`] captures.
pub const EVENTS_SUBJECTS: &str = "kiban.events.>";

/// The insurer token of an event subject for an event that concerns no
/// insurer (a care office's own stream, say). Not six digits, so it can never
/// collide with an insurer number.
pub const NO_INSURER_TOKEN: &str = "none";

/// What every ingest subject starts with: `kiban.ingest.<insurer>.<kind>`.
pub const INGEST_PREFIX: &str = "kiban.ingest.";

/// The inbox prefix of kiban's own NATS connections (`Bus::connect_nats`):
/// JetStream pull deliveries to the ingest consumer, JetStream API replies
/// and the writer's append replies arrive under `_INBOX_KIBAN.>`. It is not
/// NATS's default `_INBOX`, so a municipality or office, which may subscribe
/// to `_INBOX.>` for its own replies, never matches kiban's deliveries, and
/// the permissions of docs/nats.md give this prefix to kiban's users only.
pub const KIBAN_INBOX_PREFIX: &str = "_INBOX_KIBAN";

/// `_INBOX_KIBAN.>`: every inbox of kiban's own connections (the
/// subscribe permission of kiban's users, denied to everyone else).
pub fn kiban_inbox_filter() -> String {
    format!("{KIBAN_INBOX_PREFIX}.>")
}

/// Where kiban processes that are not the writer send appends (and pings)
/// to the process holding the store's writer lock, as NATS requests
/// (`crate::append`). Only kiban's API and engine principals may publish
/// here (docs/nats.md): a message here is appended to the event store.
pub const WRITER_SUBJECT: &str = "kiban.writer.append";

/// The queue group of [`WRITER_SUBJECT`]: only the writing engine
/// subscribes, so each request reaches exactly one writer.
pub const WRITER_QUEUE_GROUP: &str = "kiban-writer";

/// `kiban.ingest.<insurer>.<event type>`: where a municipality publishes a
/// status message of `kind`.
pub fn ingest_subject(insurer: &InsurerNumber, kind: &EventType) -> String {
    format!("{INGEST_PREFIX}{insurer}.{kind}")
}

/// `kiban.ingest.<insurer>.>`: everything one municipality may publish.
pub fn ingest_filter(insurer: &InsurerNumber) -> String {
    format!("{INGEST_PREFIX}{insurer}.>")
}

/// `kiban.receipts.<insurer>`: where a municipality gets its receipts.
pub fn receipt_subject(insurer: &InsurerNumber) -> String {
    format!("kiban.receipts.{insurer}")
}

/// The throw-away stream of `kiban bench ingest`'s raw JetStream ceiling:
/// the same messages as ingest, into a stream nobody consumes.
pub const BENCH_RAW_STREAM: &str = "KIBAN_BENCH_RAW";

/// The subjects [`BENCH_RAW_STREAM`] captures (outside `kiban.`, so that no
/// kiban stream or consumer sees them).
pub const BENCH_RAW_SUBJECTS: &str = "kiban-bench-raw.>";

/// `kiban-bench-raw.<insurer>.<event type>`: an ingest subject's twin in
/// [`BENCH_RAW_STREAM`].
pub fn bench_raw_subject(insurer: &InsurerNumber, kind: &EventType) -> String {
    format!("kiban-bench-raw.{insurer}.{kind}")
}

/// `kiban.receipts.>`: every municipality's receipts (load generators and
/// monitoring; a municipality subscribes to its own [`receipt_subject`]).
pub fn all_receipts_filter() -> String {
    "kiban.receipts.>".to_owned()
}

/// `kiban.offices.*.updates`: every office's updates (load generators and
/// monitoring; an office subscribes to its own
/// [`office_updates_subject`]).
pub fn all_office_updates_filter() -> String {
    "kiban.offices.*.updates".to_owned()
}

/// `kiban.offices.<office>.updates`: the updates one office may see.
pub fn office_updates_subject(office: &OfficeNumber) -> String {
    format!("kiban.offices.{office}.updates")
}

/// `kiban.offices.<office>.consents`: the consent events naming the office
/// (given, revoked, expired), for its web screen's care-plan page only. Not
/// for the office's own subscribers: its NATS user may read only
/// [`office_updates_subject`].
pub fn office_consents_subject(office: &OfficeNumber) -> String {
    format!("kiban.offices.{office}.consents")
}

/// `kiban.offices.<office>.*`: an API process's one subscription per office
/// ([`office_updates_subject`] and [`office_consents_subject`], in the
/// order the routing published them).
pub fn office_feed_filter(office: &OfficeNumber) -> String {
    format!("kiban.offices.{office}.*")
}

/// `kiban.events.<insurer>.<event type>.<stream id>`: where the relay
/// publishes a committed event. The stream id is encoded as one token
/// ([`encode_stream_id`]).
pub fn event_subject(
    insurer: Option<&InsurerNumber>,
    event_type: &EventType,
    stream: &StreamName,
) -> String {
    let insurer = insurer.map_or(NO_INSURER_TOKEN, InsurerNumber::as_str);
    format!(
        "kiban.events.{insurer}.{event_type}.{}",
        encode_stream_id(stream.id())
    )
}

/// A stream id as one subject token: stream ids may contain `.`, which
/// separates tokens, so it becomes `~`, a character stream ids never contain
/// (the mapping is therefore reversible).
pub fn encode_stream_id(id: &str) -> String {
    id.replace('.', "~")
}

/// What an ingest subject says about its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSubject {
    /// The insurer token, when it is a valid insurer number. `None` means the
    /// message came in on a subject no municipality could have been
    /// permitted to publish on; no receipt can be addressed.
    pub insurer: Option<InsurerNumber>,
    /// The event type the subject names (everything after the insurer), as
    /// text; it is compared with the message's `kind`.
    pub kind: String,
}

/// Splits `kiban.ingest.<insurer>.<event type>`. Returns `None` when the
/// subject is not under `kiban.ingest.`.
pub fn parse_ingest_subject(subject: &str) -> Option<IngestSubject> {
    let rest = subject.strip_prefix(INGEST_PREFIX)?;
    let (insurer, kind) = rest.split_once('.').unwrap_or((rest, ""));
    Some(IngestSubject {
        insurer: InsurerNumber::parse(insurer).ok(),
        kind: kind.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insurer() -> InsurerNumber {
        InsurerNumber::parse("131016").unwrap()
    }

    #[test]
    fn ingest_subject_round_trips() {
        let kind = EventType::parse("certification.decided").unwrap();
        let subject = ingest_subject(&insurer(), &kind);
        assert_eq!(subject, "kiban.ingest.131016.certification.decided");
        let parsed = parse_ingest_subject(&subject).unwrap();
        assert_eq!(parsed.insurer, Some(insurer()));
        assert_eq!(parsed.kind, "certification.decided");
        assert_eq!(ingest_filter(&insurer()), "kiban.ingest.131016.>");
    }

    #[test]
    fn ingest_subject_with_a_bad_insurer_has_no_insurer() {
        let parsed = parse_ingest_subject("kiban.ingest.99x.certification.filed").unwrap();
        assert_eq!(parsed.insurer, None);
        assert_eq!(parse_ingest_subject("kiban.events.131016.a.b"), None);
        let bare = parse_ingest_subject("kiban.ingest.131016").unwrap();
        assert_eq!(bare.kind, "");
    }

    #[test]
    fn event_subject_encodes_dots_in_stream_ids() {
        let stream = StreamName::parse("certification/131016-0000012345-1").unwrap();
        let kind = EventType::parse("certification.decided").unwrap();
        assert_eq!(
            event_subject(Some(&insurer()), &kind, &stream),
            "kiban.events.131016.certification.decided.131016-0000012345-1"
        );
        let dotted = StreamName::parse("office/a.b").unwrap();
        let subject = event_subject(None, &kind, &dotted);
        assert_eq!(subject, "kiban.events.none.certification.decided.a~b");
    }

    #[test]
    fn receipt_and_office_subjects() {
        assert_eq!(receipt_subject(&insurer()), "kiban.receipts.131016");
        let office = OfficeNumber::parse("1312345678").unwrap();
        assert_eq!(
            office_updates_subject(&office),
            "kiban.offices.1312345678.updates"
        );
    }
}
