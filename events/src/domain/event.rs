//! Domain events and their place in the envelope.
//!
//! Each aggregate's events are one enum whose variants wrap one payload
//! struct each, declared with [`domain_events!`]. The macro gives every event
//! a stable `event_type` (`certification.decided`), a `schema_version`, the
//! emitters allowed to cause it, its label in Japanese and English (the one
//! table screens and logs read, [`crate::domain::catalog::label_ja`]), and a
//! catalog entry ([`EventSpec`]) from which `docs/events.md` is generated.
//!
//! Turning an event into what the store records and back:
//!
//! ```
//! use kiban_events::domain::DomainEvent;
//! use kiban_events::domain::insurer::{InsurerEvent, InsurerOnboarded};
//! use kiban_events::ids::InsurerNumber;
//!
//! let event = InsurerEvent::from(InsurerOnboarded {
//!     insurer: InsurerNumber::parse("131016").unwrap(),
//!     onboarded_on: chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
//! });
//! let payload = event.to_payload();
//! let back = InsurerEvent::from_recorded(event.event_type(), event.schema_version(), &payload)
//!     .unwrap();
//! assert_eq!(back, event);
//! ```
//!
//! [`DomainEvent::from_recorded`] runs older payload versions through the
//! upcaster chain of [`crate::domain::upcast`] before decoding them, so a
//! caller only ever sees the current version.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{Actor, EventId, EventType, NewEvent, Payload};

/// Who may cause an event (the envelope's actor kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Emitter {
    /// A municipality (保険者).
    Insurer,
    /// A care office (介護事業所), usually through one of its terminals.
    Office,
    /// A medical institution (医療機関).
    MedicalInstitution,
    /// The national federation (国保中央会).
    Federation,
    /// kiban itself: timers and process managers.
    System,
}

impl Emitter {
    /// The name used in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insurer => "insurer",
            Self::Office => "office",
            Self::MedicalInstitution => "medical institution",
            Self::Federation => "federation",
            Self::System => "system",
        }
    }

    /// Whether `actor` is of this kind.
    pub fn admits(self, actor: &Actor) -> bool {
        matches!(
            (self, actor),
            (Self::Insurer, Actor::Insurer(_))
                | (Self::Office, Actor::Office { .. })
                | (Self::MedicalInstitution, Actor::MedicalInstitution(_))
                | (Self::Federation, Actor::Federation)
                | (Self::System, Actor::System(_))
        )
    }
}

/// One payload field in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The JSON key.
    pub name: &'static str,
    /// The Rust type, as written.
    pub rust_type: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// One event type in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The stable event type, `certification.decided`.
    pub event_type: &'static str,
    /// The current payload schema version.
    pub schema_version: u16,
    /// The payload struct's name.
    pub name: &'static str,
    /// How people read the event type (a screen's timeline, the demo's
    /// log): Japanese, the label every user-facing surface shows first.
    pub label_ja: &'static str,
    /// The same label in English, for the English screens.
    pub label_en: &'static str,
    /// What the event records.
    pub doc: &'static str,
    /// Who may cause it.
    pub emitters: &'static [Emitter],
    /// The payload fields.
    pub fields: &'static [FieldSpec],
}

/// Why a recorded event could not be read back as a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The event type does not belong to this aggregate.
    #[error("unknown event type {0:?} for this aggregate")]
    UnknownEventType(String),
    /// The schema version is one this code cannot read (no upcaster).
    #[error("event type {event_type} has schema version {found}; this code reads {current}")]
    UnsupportedSchemaVersion {
        event_type: String,
        found: u16,
        current: u16,
    },
    /// The payload does not match the schema.
    #[error("payload of {event_type} does not match its schema: {reason}")]
    Payload { event_type: String, reason: String },
}

/// An aggregate's event enum.
pub trait DomainEvent: Sized + Clone + Debug + PartialEq {
    /// Every event type of the enum, for the catalog.
    const CATALOG: &'static [EventSpec];

    /// The stable event type, `certification.decided`.
    fn event_type(&self) -> &'static str;

    /// The payload schema version this code writes.
    fn schema_version(&self) -> u16;

    /// Who may cause this event.
    fn emitters(&self) -> &'static [Emitter];

    /// The payload as the envelope carries it.
    fn to_payload(&self) -> Payload;

    /// Reads a recorded event back; older schema versions are upcast here.
    fn from_recorded(
        event_type: &str,
        schema_version: u16,
        payload: &Payload,
    ) -> Result<Self, DecodeError>;

    /// Whether `actor` may cause this event (its kind is one of the
    /// emitters); the engine checks this before appending.
    fn admits_actor(&self, actor: &Actor) -> bool {
        self.emitters().iter().any(|emitter| emitter.admits(actor))
    }

    /// The event type as an envelope [`EventType`].
    fn envelope_event_type(&self) -> EventType {
        EventType::parse(self.event_type()).expect("catalog event types are valid")
    }

    /// Wraps the event in a [`NewEvent`] for the store.
    fn to_new_event(
        &self,
        event_id: EventId,
        occurred_at: DateTime<Utc>,
        actor: Actor,
        correlation_id: Uuid,
        causation_id: Option<Uuid>,
    ) -> NewEvent {
        NewEvent {
            event_id,
            event_type: self.envelope_event_type(),
            schema_version: self.schema_version(),
            occurred_at,
            actor,
            correlation_id,
            causation_id,
            payload: self.to_payload(),
        }
    }
}

/// Declares an aggregate's event enum, one payload struct per variant, and
/// its [`DomainEvent`] implementation. See the aggregate modules for use.
macro_rules! domain_events {
    (
        $(#[doc = $enum_doc:literal])*
        pub enum $enum:ident {
            $(
                $(#[doc = $doc:literal])*
                $variant:ident = $event_type:literal, v $version:literal, by [$($emitter:ident),+],
                    label $label_ja:literal / $label_en:literal {
                    $( $(#[doc = $field_doc:literal])* $field:ident : $field_type:ty ),* $(,)?
                }
            )*
        }
    ) => {
        $(
            $(#[doc = $doc])*
            ///
            /// Unknown fields are refused: a payload of another schema
            /// version read as this one fails instead of losing a field.
            #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $variant {
                $( $(#[doc = $field_doc])* pub $field: $field_type, )*
            }

            impl From<$variant> for $enum {
                fn from(event: $variant) -> Self {
                    $enum::$variant(event)
                }
            }
        )*

        $(#[doc = $enum_doc])*
        ///
        /// Serde form (for transport, not the store): `{"event_type": "...",
        /// "payload": {...}}`; the store keeps the payload alone and reads it
        /// back with [`DomainEvent::from_recorded`](crate::domain::DomainEvent::from_recorded).
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "event_type", content = "payload")]
        pub enum $enum {
            $( $(#[doc = $doc])* #[serde(rename = $event_type)] $variant($variant), )*
        }

        impl $crate::domain::DomainEvent for $enum {
            const CATALOG: &'static [$crate::domain::EventSpec] = &[
                $(
                    $crate::domain::EventSpec {
                        event_type: $event_type,
                        schema_version: $version,
                        name: stringify!($variant),
                        label_ja: $label_ja,
                        label_en: $label_en,
                        doc: concat!($($doc),*),
                        emitters: &[$($crate::domain::Emitter::$emitter),+],
                        fields: &[
                            $(
                                $crate::domain::FieldSpec {
                                    name: stringify!($field),
                                    rust_type: stringify!($field_type),
                                    doc: concat!($($field_doc),*),
                                },
                            )*
                        ],
                    },
                )*
            ];

            fn event_type(&self) -> &'static str {
                match self {
                    $( $enum::$variant(_) => $event_type, )*
                }
            }

            fn schema_version(&self) -> u16 {
                match self {
                    $( $enum::$variant(_) => $version, )*
                }
            }

            fn emitters(&self) -> &'static [$crate::domain::Emitter] {
                match self {
                    $( $enum::$variant(_) => &[$($crate::domain::Emitter::$emitter),+], )*
                }
            }

            fn to_payload(&self) -> $crate::envelope::Payload {
                let payload = match self {
                    $( $enum::$variant(event) => $crate::envelope::Payload::from_value(event), )*
                };
                payload.expect("domain event payloads are JSON objects well under the size limit")
            }

            fn from_recorded(
                event_type: &str,
                schema_version: u16,
                payload: &$crate::envelope::Payload,
            ) -> Result<Self, $crate::domain::DecodeError> {
                match event_type {
                    $(
                        $event_type => {
                            // Older schema versions go through the upcaster chain.
                            let upcast;
                            let payload = if schema_version == $version {
                                payload
                            } else {
                                upcast = $crate::domain::upcast::to_current(
                                    event_type,
                                    schema_version,
                                    $version,
                                    payload,
                                )?;
                                &upcast
                            };
                            payload
                                .parse::<$variant>()
                                .map($enum::$variant)
                                .map_err(|e| $crate::domain::DecodeError::Payload {
                                    event_type: event_type.to_owned(),
                                    reason: e.to_string(),
                                })
                        }
                    )*
                    other => Err($crate::domain::DecodeError::UnknownEventType(other.to_owned())),
                }
            }
        }
    };
}
pub(crate) use domain_events;

/// Renders the catalog of `specs` as Markdown (one section per event).
pub fn render_catalog(title: &str, specs: &[EventSpec]) -> String {
    let mut out = format!(
        "## {title}\n\n| event type | label (日本語) | label (English) |\n| --- | --- | --- |\n"
    );
    for spec in specs {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            spec.event_type, spec.label_ja, spec.label_en
        ));
    }
    out.push('\n');
    for spec in specs {
        let emitters: Vec<&str> = spec.emitters.iter().map(|e| e.as_str()).collect();
        out.push_str(&format!(
            "### `{}` (v{}) — {}\n\n{}\n\nRecorded under the actor: {}.\n\n",
            spec.event_type,
            spec.schema_version,
            spec.name,
            collapse(spec.doc),
            emitters.join(", ")
        ));
        for step in super::upcast::steps_of(spec.event_type) {
            out.push_str(&format!(
                "Reads v{} through an upcaster (v{} → v{}): {}\n\n",
                step.from,
                step.from,
                step.from + 1,
                collapse(step.doc)
            ));
        }
        if spec.fields.is_empty() {
            out.push_str("No payload fields.\n\n");
            continue;
        }
        out.push_str("| field | type | meaning |\n| --- | --- | --- |\n");
        for field in spec.fields {
            out.push_str(&format!(
                "| `{}` | `{}` | {} |\n",
                field.name,
                field.rust_type.replace(' ', ""),
                collapse(field.doc).replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    out
}

/// Joins doc-comment lines into one paragraph.
fn collapse(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}
