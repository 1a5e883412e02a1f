//! Events as an operator writes them for `kiban append`: everything but
//! the type and the payload has a sensible default.

use anyhow::Context;
use chrono::{DateTime, Utc};
use kiban_events::envelope::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload};
use serde::Deserialize;
use uuid::Uuid;

/// Parses one event object or an array of them into new events, filling
/// in the defaults as of `now`.
pub fn parse_events(text: &str, now: DateTime<Utc>) -> anyhow::Result<Vec<NewEvent>> {
    // One object or an array of them. Decided by the first character, not
    // by an untagged enum: payloads are kept as raw JSON, which serde can
    // only take from the original text.
    let events = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<InputEvent>>(text)
    } else {
        serde_json::from_str::<InputEvent>(text).map(|event| vec![event])
    }
    .context("the input is not an event or an array of events")?;
    events
        .into_iter()
        .map(|event| event.into_new_event(now))
        .collect()
}

/// An event as an operator writes it: everything but the type and the
/// payload has a sensible default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputEvent {
    event_id: Option<Uuid>,
    event_type: EventType,
    #[serde(default = "default_schema_version")]
    schema_version: u16,
    occurred_at: Option<DateTime<Utc>>,
    actor: Option<Actor>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: Payload,
}

fn default_schema_version() -> u16 {
    1
}

impl InputEvent {
    fn into_new_event(self, now: DateTime<Utc>) -> anyhow::Result<NewEvent> {
        let event_id = EventId::from_uuid(self.event_id.unwrap_or_else(Uuid::now_v7))?;
        Ok(NewEvent {
            event_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at.unwrap_or(now),
            actor: match self.actor {
                Some(actor) => actor,
                None => Actor::system("cli")?,
            },
            correlation_id: self.correlation_id.unwrap_or(*event_id.as_uuid()),
            causation_id: self.causation_id,
            payload: self.payload,
        })
    }
}

/// `any`, `no-stream`, or a version number.
pub fn parse_expected_version(text: &str) -> anyhow::Result<ExpectedVersion> {
    Ok(match text {
        "any" => ExpectedVersion::Any,
        "no-stream" | "no_stream" => ExpectedVersion::NoStream,
        number => ExpectedVersion::Exact(number.parse().with_context(|| {
            format!("--expected-version must be any, no-stream or a number (got {number:?})")
        })?),
    })
}
