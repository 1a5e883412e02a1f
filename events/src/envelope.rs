//! The recorded-event envelope (DESIGN.md decision 1) and its canonical bytes.
//!
//! A producer hands the store [`NewEvent`]s for one [`StreamName`]; the store
//! assigns `version`, `position`, `recorded_at`, `prev_hash` and `hash` and
//! gives back [`RecordedEvent`]s.
//!
//! # Canonical encoding (version 1)
//!
//! The hash chain covers [`RecordedEvent::canonical_bytes`], a fixed binary
//! layout that does not depend on serde, field order in JSON, or the database.
//! All integers are big-endian; `str` fields are UTF-8 preceded by their byte
//! length; times are microseconds since the Unix epoch (the store keeps time to
//! the microsecond, so a value survives a round trip through either backend).
//!
//! | field | encoding |
//! | --- | --- |
//! | magic | the 4 bytes `KBN1` (the `1` is the encoding version) |
//! | position | u64 |
//! | stream | u16 length + bytes of `kind/id` |
//! | version | u64 |
//! | event_id | 16 bytes |
//! | event_type | u8 length + bytes |
//! | schema_version | u16 |
//! | occurred_at | i64 microseconds |
//! | recorded_at | i64 microseconds |
//! | actor | u16 length + bytes of its string form (`office:1312345678/T01`) |
//! | correlation_id | 16 bytes |
//! | causation_id | u8 `0`, or u8 `1` + 16 bytes |
//! | payload | u32 length + the payload's JSON bytes, verbatim |
//!
//! The payload is kept byte for byte as it was appended (never re-serialised),
//! so its bytes are stable. `hash = SHA-256(prev_hash ‖ canonical bytes)`, with
//! 32 zero bytes as the `prev_hash` of position 1; the store computes it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::ids::{IdError, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// Global position of an event in the store: gapless, from 1, in commit order.
pub type Position = u64;

/// Version of an event within its stream: contiguous, from 1.
pub type Version = u64;

/// Largest payload accepted, in bytes. Events record facts, not documents:
/// documents are content-addressed blobs beside the events (decision 12), so a
/// megabyte is far above any real payload and bounds the writer's memory.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Longest stream name (`kind/id`), in bytes. The longest real name,
/// `certification/<insurer>-<insured>-<seq>`, is about 40 bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 128;

/// Longest stream kind, in bytes.
pub const STREAM_KIND_BYTES_MAX: usize = 32;

/// Longest event type (`certification.decided`), in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 64;

/// Most events in one append. An append is one decision of one aggregate;
/// a thousand is far above any decider's output and bounds a transaction.
pub const EVENTS_PER_APPEND_MAX: usize = 1000;

/// Longest free-form token inside an actor (auditor id, system component,
/// terminal id), in bytes.
pub const ACTOR_TOKEN_BYTES_MAX: usize = 64;

/// What is wrong with an envelope field. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The stream name is not `kind/id` with the allowed characters and lengths.
    #[error(
        "stream name must be `kind/id`: kind of 1-{STREAM_KIND_BYTES_MAX} characters a-z, 0-9, _ starting with a letter; id of ASCII letters, digits, '.', '_', '-' starting with a letter or digit; at most {STREAM_NAME_BYTES_MAX} bytes in all (got {0:?})"
    )]
    StreamName(String),
    /// The event type is not dotted lower-case words.
    #[error(
        "event type must be dotted lower-case words like `certification.decided`, at most {EVENT_TYPE_BYTES_MAX} bytes (got {0:?})"
    )]
    EventType(String),
    /// The payload is not a JSON object.
    #[error("payload must be a JSON object: {0}")]
    PayloadNotObject(String),
    /// The payload is larger than [`PAYLOAD_BYTES_MAX`].
    #[error("payload is {size} bytes, more than the limit of {PAYLOAD_BYTES_MAX} bytes")]
    PayloadTooLarge { size: usize },
    /// The actor string is not one of the known forms.
    #[error(
        "actor must be `insurer:<6 digits>`, `office:<10 digits>[/<terminal>]`, `medical:<10 digits>`, `federation`, `auditor:<id>` or `system:<component>` (got {0:?})"
    )]
    Actor(String),
    /// An identifier inside the actor is malformed.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The event id is the nil UUID.
    #[error("event id must not be the nil UUID")]
    NilEventId,
}

fn is_token(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Implements `Display`, `FromStr`, and string-form serde for a type that has
/// `parse(&str) -> Result<Self, EnvelopeError>` and `as_str()`/`Display`.
macro_rules! string_form {
    ($name:ident) => {
        impl FromStr for $name {
            type Err = EnvelopeError;
            fn from_str(value: &str) -> Result<Self, EnvelopeError> {
                Self::parse(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A stream: `kind/id`, e.g. `certification/131016-0000012345-1`.
///
/// The kind names the aggregate type; the id is unique within the kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName {
    full: String,
    kind_len: usize,
}

impl StreamName {
    /// Parses `kind/id`.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::StreamName(value.chars().take(160).collect());
        let (kind, id) = value.split_once('/').ok_or_else(invalid)?;
        Self::new(kind, id).map_err(|_| invalid())
    }

    /// Builds a stream name from its kind and id.
    pub fn new(kind: &str, id: &str) -> Result<Self, EnvelopeError> {
        let kind_ok = !kind.is_empty()
            && kind.len() <= STREAM_KIND_BYTES_MAX
            && kind.as_bytes()[0].is_ascii_lowercase()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let id_ok = is_token(id, STREAM_NAME_BYTES_MAX) && id.as_bytes()[0].is_ascii_alphanumeric();
        let full = format!("{kind}/{id}");
        if !kind_ok || !id_ok || full.len() > STREAM_NAME_BYTES_MAX {
            return Err(EnvelopeError::StreamName(full.chars().take(160).collect()));
        }
        Ok(Self {
            full,
            kind_len: kind.len(),
        })
    }

    /// The aggregate kind, e.g. `certification`.
    pub fn kind(&self) -> &str {
        &self.full[..self.kind_len]
    }

    /// The id within the kind.
    pub fn id(&self) -> &str {
        &self.full[self.kind_len + 1..]
    }

    /// The whole name, `kind/id`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

string_form!(StreamName);

/// The type of an event: dotted lower-case words, `certification.decided`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(String);

impl EventType {
    /// Parses an event type.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let words_ok = value.split('.').all(|word| {
            !word.is_empty()
                && word.as_bytes()[0].is_ascii_lowercase()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        if !words_ok || !value.contains('.') || value.len() > EVENT_TYPE_BYTES_MAX {
            return Err(EnvelopeError::EventType(value.chars().take(80).collect()));
        }
        Ok(Self(value.to_owned()))
    }

    /// The event type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_form!(EventType);

/// The event id: chosen by the producer (UUID v7 recommended; timers use
/// deterministic v5 ids), and the idempotency key of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Uuid", into = "Uuid")]
pub struct EventId(Uuid);

impl EventId {
    /// Wraps a UUID; the nil UUID is refused because it is what a producer
    /// that forgot to set an id sends.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, EnvelopeError> {
        if uuid.is_nil() {
            return Err(EnvelopeError::NilEventId);
        }
        Ok(Self(uuid))
    }

    /// A caller's UUID as an event id, when it is of a version callers
    /// make: 7 (time-ordered, recommended) or 4 (random). kiban derives the
    /// ids of its own events (later events of a command, timers, forgetting
    /// a person) as version 5 ([`EventId::deterministic`]) from public
    /// names; a caller who could send a v5 id could claim one of them first
    /// and so stop kiban from recording its event. Every other version is
    /// refused for the same reason. The API's `Idempotency-Key` and the
    /// ingest's `event_id` both go through here.
    pub fn from_caller(uuid: Uuid) -> Option<Self> {
        matches!(uuid.get_version_num(), 4 | 7).then_some(Self(uuid))
    }

    /// A deterministic id (UUID v5) derived from `name` under `namespace`:
    /// the same inputs always give the same id, so an event appended twice
    /// by a restarted timer is recognised as the same event.
    pub fn deterministic(namespace: &Uuid, name: &[u8]) -> Self {
        Self(Uuid::new_v5(namespace, name))
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl TryFrom<Uuid> for EventId {
    type Error = EnvelopeError;
    fn try_from(uuid: Uuid) -> Result<Self, EnvelopeError> {
        Self::from_uuid(uuid)
    }
}

impl From<EventId> for Uuid {
    fn from(id: EventId) -> Uuid {
        id.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who caused an event. Serialised in its string form:
/// `insurer:131016`, `office:1312345678`, `office:1312345678/T01`,
/// `medical:1312345678`, `federation`, `auditor:<id>`, `system:<component>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A municipality (保険者) or its system.
    Insurer(InsurerNumber),
    /// A care office (介護事業所), through one of its terminals when known.
    Office {
        office: OfficeNumber,
        terminal: Option<String>,
    },
    /// A medical institution (医療機関).
    MedicalInstitution(MedicalInstitutionCode),
    /// The national federation (国保中央会) that runs the platform.
    Federation,
    /// An auditor (監査), by an id of the auditing body's choosing.
    Auditor(String),
    /// kiban itself: timers, process managers, administration commands.
    System(String),
}

impl Actor {
    /// Parses the string form.
    pub fn parse(value: &str) -> Result<Self, EnvelopeError> {
        let invalid = || EnvelopeError::Actor(value.chars().take(80).collect());
        if value == "federation" {
            return Ok(Self::Federation);
        }
        let (kind, rest) = value.split_once(':').ok_or_else(invalid)?;
        let token = |s: &str| {
            if is_token(s, ACTOR_TOKEN_BYTES_MAX) {
                Ok(s.to_owned())
            } else {
                Err(invalid())
            }
        };
        Ok(match kind {
            "insurer" => Self::Insurer(InsurerNumber::parse(rest)?),
            "office" => match rest.split_once('/') {
                Some((office, terminal)) => Self::Office {
                    office: OfficeNumber::parse(office)?,
                    terminal: Some(token(terminal)?),
                },
                None => Self::Office {
                    office: OfficeNumber::parse(rest)?,
                    terminal: None,
                },
            },
            "medical" => Self::MedicalInstitution(MedicalInstitutionCode::parse(rest)?),
            "auditor" => Self::Auditor(token(rest)?),
            "system" => Self::System(token(rest)?),
            _ => return Err(invalid()),
        })
    }

    /// A system actor for a kiban component (`system:timers`).
    pub fn system(component: &str) -> Result<Self, EnvelopeError> {
        Self::parse(&format!("system:{component}"))
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Insurer(number) => write!(f, "insurer:{number}"),
            Self::Office {
                office,
                terminal: None,
            } => write!(f, "office:{office}"),
            Self::Office {
                office,
                terminal: Some(terminal),
            } => write!(f, "office:{office}/{terminal}"),
            Self::MedicalInstitution(code) => write!(f, "medical:{code}"),
            Self::Federation => f.write_str("federation"),
            Self::Auditor(id) => write!(f, "auditor:{id}"),
            Self::System(component) => write!(f, "system:{component}"),
        }
    }
}

string_form!(Actor);

/// The payload of an event: a JSON object, kept byte for byte.
///
/// Keeping the bytes (rather than a parsed value) is what makes the hash
/// stable: nothing re-serialises them, so key order and number formatting
/// never change after the append.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payload(Box<str>);

impl Payload {
    /// Validates that `json` is a JSON object within [`PAYLOAD_BYTES_MAX`].
    pub fn from_json(json: &str) -> Result<Self, EnvelopeError> {
        if json.len() > PAYLOAD_BYTES_MAX {
            return Err(EnvelopeError::PayloadTooLarge { size: json.len() });
        }
        let trimmed = json.trim_start();
        if !trimmed.starts_with('{') {
            return Err(EnvelopeError::PayloadNotObject(
                "the first character is not '{'".to_owned(),
            ));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|e| EnvelopeError::PayloadNotObject(e.to_string()))?;
        Ok(Self(json.into()))
    }

    /// Serialises `value` (which must serialise to a JSON object).
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, EnvelopeError> {
        let json = serde_json::to_string(value)
            .map_err(|e| EnvelopeError::PayloadNotObject(e.to_string()))?;
        if !json.starts_with('{') {
            return Err(EnvelopeError::PayloadNotObject(
                "the value does not serialise to a JSON object".to_owned(),
            ));
        }
        if json.len() > PAYLOAD_BYTES_MAX {
            return Err(EnvelopeError::PayloadTooLarge { size: json.len() });
        }
        Ok(Self(json.into()))
    }

    /// Wraps bytes read back from the store without re-validating them: they
    /// were validated when appended, and the hash chain detects any change.
    pub fn from_stored(json: String) -> Self {
        Self(json.into_boxed_str())
    }

    /// Deserialises the payload into a typed value.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The JSON text, verbatim.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for a valid payload (an object is at least `{}`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Self::from_json(raw.get()).map_err(serde::de::Error::custom)
    }
}

/// What an append expects the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's current version must be exactly this (0 = no stream).
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` (0 when absent) satisfies this.
    pub fn admits(self, current: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(expected) => current == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// A SHA-256 hash of the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event: 32 zero bytes.
    pub const GENESIS: Hash = Hash([0; 32]);

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// Wraps a 32-byte slice, as read from a database column.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::from_hex(&value).ok_or_else(|| serde::de::Error::custom("hash must be 64 hex digits"))
    }
}

/// Truncates a time to the microsecond, the precision the store keeps.
pub fn to_store_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_micros(time.timestamp_micros())
        .single()
        .expect("a time truncated to the microsecond is representable")
}

/// An event as a producer hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The idempotency key.
    pub event_id: EventId,
    /// What happened, `certification.decided`.
    pub event_type: EventType,
    /// The payload schema version of this event type, from 1.
    pub schema_version: u16,
    /// When it happened, by the producer's clock (kept to the microsecond).
    pub occurred_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// The conversation this event belongs to (the first command's id).
    pub correlation_id: Uuid,
    /// The message that caused this event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The facts, as a JSON object.
    pub payload: Payload,
}

/// An event as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position: gapless, from 1, in commit order.
    pub position: Position,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Version within the stream: contiguous, from 1.
    pub version: Version,
    /// The producer's idempotency key.
    pub event_id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// The payload schema version.
    pub schema_version: u16,
    /// The producer's clock.
    pub occurred_at: DateTime<Utc>,
    /// The store's clock when the event was committed.
    pub recorded_at: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// The conversation it belongs to.
    pub correlation_id: Uuid,
    /// The message that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The facts.
    pub payload: Payload,
    /// The hash of the event at `position - 1` (genesis: zeros).
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash ‖ canonical bytes)`.
    pub hash: Hash,
}

/// What an office is told of an event it may see: that it happened, where
/// and when, never what (no payload, no actor, no correlation, no hashes).
/// The one form of both office feeds, NATS (`kiban.offices.<office>.updates`)
/// and the API's update stream (`GET /v1/offices/{office}/updates`): the
/// office reads the event's data through the API, where the read is logged
/// (`insured.record_viewed`), so the access log shows everything an office
/// learnt about a person (docs/nats.md "Office updates").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateNotice {
    /// The event's position (the SSE `id`, the `Kiban-Position` header).
    pub position: Position,
    /// What happened.
    pub event_type: EventType,
    /// The stream it is on: the person's application
    /// (`certification/<insurer>-<insured>-<n>`) or own record
    /// (`insured/<insurer>-<insured>`), which names what to read.
    pub stream: StreamName,
    /// The producer's clock.
    pub occurred_at: DateTime<Utc>,
    /// The store's clock at commit (a subscriber's measure of its lag).
    pub recorded_at: DateTime<Utc>,
}

impl From<&RecordedEvent> for UpdateNotice {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            event_type: event.event_type.clone(),
            stream: event.stream.clone(),
            occurred_at: event.occurred_at,
            recorded_at: event.recorded_at,
        }
    }
}

/// The magic and encoding version that open the canonical bytes.
pub const CANONICAL_MAGIC: &[u8; 4] = b"KBN1";

impl RecordedEvent {
    /// The canonical bytes the hash covers (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.payload.len());
        self.write_canonical(&mut out);
        out
    }

    /// Appends the canonical bytes to `out`, so that a verifier can reuse one
    /// buffer for millions of events.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        CanonicalFields {
            position: self.position,
            stream: self.stream.as_str(),
            version: self.version,
            event_id: self.event_id.as_uuid(),
            event_type: self.event_type.as_str(),
            schema_version: self.schema_version,
            occurred_at_micros: self.occurred_at.timestamp_micros(),
            recorded_at_micros: self.recorded_at.timestamp_micros(),
            actor: &self.actor.to_string(),
            correlation_id: &self.correlation_id,
            causation_id: self.causation_id.as_ref(),
            payload: self.payload.as_str(),
        }
        .write(out);
    }

    /// Whether `new`, appended to `stream`, has the same content as this
    /// recorded event: the rule that makes re-sending an event id harmless.
    pub fn has_same_content(&self, stream: &StreamName, new: &NewEvent) -> bool {
        self.event_id == new.event_id
            && &self.stream == stream
            && self.event_type == new.event_type
            && self.schema_version == new.schema_version
            && self.occurred_at.timestamp_micros() == new.occurred_at.timestamp_micros()
            && self.actor == new.actor
            && self.correlation_id == new.correlation_id
            && self.causation_id == new.causation_id
            && self.payload == new.payload
    }
}

/// The fields of the canonical encoding, borrowed, so that a verifier reading
/// raw database rows can encode them without building a [`RecordedEvent`].
#[derive(Debug, Clone, Copy)]
pub struct CanonicalFields<'a> {
    pub position: Position,
    pub stream: &'a str,
    pub version: Version,
    pub event_id: &'a Uuid,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub occurred_at_micros: i64,
    pub recorded_at_micros: i64,
    pub actor: &'a str,
    pub correlation_id: &'a Uuid,
    pub causation_id: Option<&'a Uuid>,
    pub payload: &'a str,
}

impl CanonicalFields<'_> {
    /// Appends the canonical bytes to `out`.
    ///
    /// Lengths were bounded when the event was appended (stream name, event
    /// type, actor and payload limits), so the narrowing casts cannot
    /// truncate; the assertions document and enforce that.
    pub fn write(&self, out: &mut Vec<u8>) {
        assert!(self.stream.len() <= usize::from(u16::MAX));
        assert!(self.event_type.len() <= usize::from(u8::MAX));
        assert!(self.actor.len() <= usize::from(u16::MAX));
        assert!(u32::try_from(self.payload.len()).is_ok());
        out.extend_from_slice(CANONICAL_MAGIC);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&(self.stream.len() as u16).to_be_bytes());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        out.push(self.event_type.len() as u8);
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.occurred_at_micros.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_be_bytes());
        out.extend_from_slice(&(self.actor.len() as u16).to_be_bytes());
        out.extend_from_slice(self.actor.as_bytes());
        out.extend_from_slice(self.correlation_id.as_bytes());
        match self.causation_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(id.as_bytes());
            }
        }
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(self.payload.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordedEvent {
        RecordedEvent {
            position: 7,
            stream: StreamName::parse("certification/131016-0000012345-1").unwrap(),
            version: 2,
            event_id: EventId::from_uuid(Uuid::from_u128(
                0x0192_0000_0000_7000_8000_0000_0000_0001,
            ))
            .unwrap(),
            event_type: EventType::parse("certification.decided").unwrap(),
            schema_version: 1,
            occurred_at: Utc.timestamp_micros(1_775_000_000_123_456).unwrap(),
            recorded_at: Utc.timestamp_micros(1_775_000_001_000_000).unwrap(),
            actor: Actor::parse("insurer:131016").unwrap(),
            correlation_id: Uuid::from_u128(42),
            causation_id: None,
            payload: Payload::from_json(r#"{"level":"care_2","b":1}"#).unwrap(),
            prev_hash: Hash::GENESIS,
            hash: Hash::GENESIS,
        }
    }

    #[test]
    fn stream_name_splits_kind_and_id_and_refuses_bad_names() {
        let name = StreamName::parse("certification/131016-0000012345-1").unwrap();
        assert_eq!(name.kind(), "certification");
        assert_eq!(name.id(), "131016-0000012345-1");
        for bad in [
            "",
            "certification",
            "/id",
            "Kind/id",
            "kind/",
            "kind/-id",
            "kind/id with space",
            "kind/ｉｄ",
            "kind/a/b",
        ] {
            assert!(StreamName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("k/{}", "a".repeat(STREAM_NAME_BYTES_MAX));
        assert!(StreamName::parse(&long).is_err());
        let max = format!("k/{}", "a".repeat(STREAM_NAME_BYTES_MAX - 2));
        assert!(StreamName::parse(&max).is_ok());
    }

    #[test]
    fn event_type_is_dotted_lower_case() {
        assert!(EventType::parse("certification.decided").is_ok());
        assert!(EventType::parse("insured.home_modification_used").is_ok());
        for bad in [
            "decided",
            "Certification.decided",
            "a..b",
            ".a",
            "a.",
            "a.b-c",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn actor_round_trips_through_its_string_form() {
        for text in [
            "insurer:131016",
            "office:1312345678",
            "office:1312345678/T-01",
            "medical:0112345678",
            "federation",
            "auditor:kansa-1",
            "system:timers",
        ] {
            let actor = Actor::parse(text).unwrap();
            assert_eq!(actor.to_string(), text);
        }
        assert!(Actor::parse("office:9912345678").is_err());
        assert!(Actor::parse("citizen:1").is_err());
        assert!(Actor::parse("system:").is_err());
    }

    #[test]
    fn payload_must_be_a_json_object_within_the_limit() {
        assert!(Payload::from_json("{}").is_ok());
        assert!(matches!(
            Payload::from_json("[1]"),
            Err(EnvelopeError::PayloadNotObject(_))
        ));
        assert!(matches!(
            Payload::from_json("{"),
            Err(EnvelopeError::PayloadNotObject(_))
        ));
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(PAYLOAD_BYTES_MAX));
        assert!(matches!(
            Payload::from_json(&big),
            Err(EnvelopeError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn payload_serialises_inline_and_keeps_its_bytes() {
        let payload = Payload::from_json(r#"{"z":1,  "a":2}"#).unwrap();
        let json = serde_json::to_string(&payload).unwrap();
        assert_eq!(json, r#"{"z":1,  "a":2}"#);
        let back: Payload = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_str(), payload.as_str());
    }

    #[test]
    fn canonical_bytes_are_stable() {
        // A fixed vector: if this changes, every stored hash changes. Any
        // change to the encoding needs a new magic and a migration, not an
        // edit of this expectation.
        let bytes = sample().canonical_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(hex.starts_with("4b424e31000000000000000700216365727469666963"));
        assert_eq!(
            bytes.len(),
            4 + 8 + 2 + 33 + 8 + 16 + 1 + 21 + 2 + 8 + 8 + 2 + 14 + 16 + 1 + 4 + 24
        );
        assert!(bytes.ends_with(br#"{"level":"care_2","b":1}"#));
    }

    #[test]
    fn canonical_bytes_change_with_every_field() {
        let base = sample();
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.position = 8;
        variants.push(e);
        let mut e = base.clone();
        e.version = 3;
        variants.push(e);
        let mut e = base.clone();
        e.payload = Payload::from_json(r#"{"level":"care_3","b":1}"#).unwrap();
        variants.push(e);
        let mut e = base.clone();
        e.causation_id = Some(Uuid::from_u128(1));
        variants.push(e);
        let mut e = base.clone();
        e.actor = Actor::parse("insurer:131017").unwrap();
        variants.push(e);
        let mut e = base.clone();
        e.recorded_at = Utc.timestamp_micros(1_775_000_001_000_001).unwrap();
        variants.push(e);
        let original = base.canonical_bytes();
        for variant in variants {
            assert_ne!(variant.canonical_bytes(), original);
        }
    }

    #[test]
    fn expected_version_admits() {
        assert!(ExpectedVersion::Any.admits(5));
        assert!(ExpectedVersion::NoStream.admits(0));
        assert!(!ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(3).admits(3));
        assert!(!ExpectedVersion::Exact(3).admits(4));
    }

    #[test]
    fn hash_hex_round_trip() {
        let hash = Hash([0xab; 32]);
        assert_eq!(Hash::from_hex(&hash.to_string()), Some(hash));
        assert_eq!(Hash::from_hex("zz"), None);
    }
}
