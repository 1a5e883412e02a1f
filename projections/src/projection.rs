//! The [`Projection`] trait, [`Event`] (a recorded event decoded once for
//! every projection), and the helpers read models share.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use kiban_events::domain::DomainEvent;
use kiban_events::domain::certification::CertificationEvent;
use kiban_events::domain::insured::InsuredEvent;
use kiban_events::domain::insurer::InsurerEvent;
use kiban_events::domain::office::OfficeEvent;
use kiban_events::domain::subsidy::SubsidyEvent;
use kiban_events::{Position, RecordedEvent};

use crate::db::Tx;
use crate::error::{Error, Result};

/// A read model built from events.
///
/// The runner calls [`Projection::apply`] for every event in position order,
/// in batches; each batch and the checkpoint after it commit in one
/// transaction, so `apply` sees every event exactly once per generation.
/// `apply` must be deterministic (no clock, no randomness): a rebuild has to
/// give the same documents.
///
/// Before a batch is applied, [`Projection::prefetch`] names the documents
/// each event will read, so that the batch reads them in one query instead
/// of one per event; a document not named is still read, on its own.
pub trait Projection: Send + Sync + 'static {
    /// The stable name: the `projection` column of its rows.
    fn name(&self) -> &'static str;

    /// The version of its document schema. Raising it makes the next start
    /// rebuild the projection before serving it.
    fn schema_version(&self) -> u32;

    /// Adds to `keys` the documents [`Projection::apply`] will read for
    /// `event` (none by default).
    fn prefetch(&self, event: &Event, keys: &mut Vec<String>) {
        let _ = (event, keys);
    }

    /// Applies one event (ignoring the ones it does not care about).
    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>>;
}

/// A recorded event with its payload decoded as the domain event of its
/// stream's kind: decoded once per batch, read by every projection.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event as stored.
    pub recorded: RecordedEvent,
    /// The decoded payload, or why it does not decode (reported by the
    /// projection that needs it, as [`Error::Corrupted`]).
    decoded: std::result::Result<Decoded, String>,
}

/// The domain event of an [`Event`], by the kind of its stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// `insured/<insurer>-<insured>`.
    Insured(InsuredEvent),
    /// `certification/<insurer>-<insured>-<seq>`.
    Certification(CertificationEvent),
    /// `office/<office>`.
    Office(OfficeEvent),
    /// `insurer/<insurer>`.
    Insurer(InsurerEvent),
    /// `subsidy/<id>`.
    Subsidy(SubsidyEvent),
    /// A kind no read model follows (its payload is not decoded).
    Other,
}

impl Event {
    /// Decodes `recorded` by its stream's kind.
    pub fn decode(recorded: RecordedEvent) -> Event {
        fn as_<E: DomainEvent>(
            recorded: &RecordedEvent,
            wrap: fn(E) -> Decoded,
        ) -> std::result::Result<Decoded, String> {
            E::from_recorded(
                recorded.event_type.as_str(),
                recorded.schema_version,
                &recorded.payload,
            )
            .map(wrap)
            .map_err(|e| e.to_string())
        }
        let decoded = match recorded.stream.kind() {
            "insured" => as_(&recorded, Decoded::Insured),
            "certification" => as_(&recorded, Decoded::Certification),
            "office" => as_(&recorded, Decoded::Office),
            "insurer" => as_(&recorded, Decoded::Insurer),
            "subsidy" => as_(&recorded, Decoded::Subsidy),
            _ => Ok(Decoded::Other),
        };
        Event { recorded, decoded }
    }

    /// Its global position.
    pub fn position(&self) -> Position {
        self.recorded.position
    }

    /// The decoded domain event; [`Error::Corrupted`] when the payload does
    /// not decode as its kind's event.
    pub fn decoded(&self) -> Result<&Decoded> {
        self.decoded.as_ref().map_err(|reason| Error::Corrupted {
            position: self.recorded.position,
            reason: reason.clone(),
        })
    }

    /// `event` stamped with this event's position and time.
    pub fn stamp<E>(&self, event: E) -> Stamped<E> {
        Stamped {
            position: self.recorded.position,
            occurred_at: self.recorded.occurred_at,
            event,
        }
    }
}

/// A domain event with where and when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped<E> {
    /// Its global position.
    pub position: Position,
    /// When it happened, by the producer's clock.
    pub occurred_at: DateTime<Utc>,
    /// The event.
    pub event: E,
}

/// Reads `event` as a domain event of `E`.
pub fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<Stamped<E>> {
    let decoded = E::from_recorded(
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    )
    .map_err(|e| Error::Corrupted {
        position: event.position,
        reason: e.to_string(),
    })?;
    Ok(Stamped {
        position: event.position,
        occurred_at: event.occurred_at,
        event: decoded,
    })
}

/// Splits a stream id `a-b-c` into its parts; `None` when the count differs.
pub(crate) fn id_parts(id: &str, count: usize) -> Option<Vec<&str>> {
    let parts: Vec<&str> = id.split('-').collect();
    (parts.len() == count).then_some(parts)
}
