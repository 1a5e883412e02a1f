//! Replay (再生): one aggregate's events up to a moment, and the state its
//! decider derives from them, as a readable timeline (Japanese terms beside
//! English) or JSON (docs/audit.md). `kiban replay` prints it.

use anyhow::Context;
use chrono::{DateTime, Utc};
use kiban_events::domain::certification::CertificationApplication;
use kiban_events::domain::insured::InsuredPerson;
use kiban_events::domain::insurer::Insurer;
use kiban_events::domain::office::Office;
use kiban_events::domain::subsidy::SubsidyApplication;
use kiban_events::domain::{Decider, DomainEvent, jst};
use kiban_events::{Position, RecordedEvent, StreamName};
use kiban_store::{READ_EVENTS_MAX, Store};
use serde_json::json;

/// Up to when to replay.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Every event recorded at or before this time.
    Time(DateTime<Utc>),
    /// Every event up to this position.
    Position(Position),
    /// Everything.
    Head,
}

/// One aggregate replayed.
#[derive(Debug)]
pub struct Replayed {
    /// The stream.
    pub stream: StreamName,
    /// The last position taken into account.
    pub until: Position,
    /// Its events up to then.
    pub events: Vec<RecordedEvent>,
    /// The decider's state after them (pretty Debug text).
    pub state: String,
}

/// Replays `stream` up to `until`.
pub async fn replay(store: &Store, stream: &StreamName, until: Until) -> anyhow::Result<Replayed> {
    let until = match until {
        Until::Time(time) => store.position_at(time).await?,
        Until::Position(position) => position,
        Until::Head => store.head().await?.position,
    };
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_stream(stream, from, READ_EVENTS_MAX).await?;
        let full = page.len() == READ_EVENTS_MAX;
        for event in page {
            from = event.version + 1;
            if event.position <= until {
                events.push(event);
            }
        }
        if !full {
            break;
        }
    }
    let state = derive_state(stream.kind(), &events)?;
    Ok(Replayed {
        stream: stream.clone(),
        until,
        events,
        state,
    })
}

impl Replayed {
    /// The replay as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let timeline: Vec<_> = self
            .events
            .iter()
            .map(|e| {
                json!({
                    "position": e.position,
                    "version": e.version,
                    "recorded_at": e.recorded_at,
                    "occurred_at": e.occurred_at,
                    "event_type": e.event_type.as_str(),
                    "term": term(e.event_type.as_str()),
                    "actor": e.actor.to_string(),
                    "payload": serde_json::from_str::<serde_json::Value>(e.payload.as_str()).unwrap_or_default(),
                })
            })
            .collect();
        json!({
            "stream": self.stream.as_str(),
            "until_position": self.until,
            "events": timeline,
            "state": self.state,
        })
    }

    /// The replay as readable lines: the timeline, then the state.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{} — {} events up to position {} (経過 / timeline)\n",
            self.stream,
            self.events.len(),
            self.until
        );
        for e in &self.events {
            text.push_str(&format!(
                "  #{:<8} v{:<4} {}  {:<40} {}  by {}\n",
                e.position,
                e.version,
                e.recorded_at
                    .with_timezone(&jst())
                    .format("%Y-%m-%d %H:%M:%S JST"),
                e.event_type.as_str(),
                term(e.event_type.as_str()),
                e.actor
            ));
            text.push_str(&format!("             {}\n", e.payload.as_str()));
        }
        text.push_str("state derived by the decider (状態):\n");
        text.push_str(&self.state);
        text
    }
}

/// The decider's state after `events`, as pretty Debug text (the states are
/// not serialisable; Debug is their faithful, readable form).
fn derive_state(kind: &str, events: &[RecordedEvent]) -> anyhow::Result<String> {
    Ok(match kind {
        "insured" => fold::<InsuredPerson>(events)?,
        "office" => fold::<Office>(events)?,
        "insurer" => fold::<Insurer>(events)?,
        "certification" => fold::<CertificationApplication>(events)?,
        "subsidy" => fold::<SubsidyApplication>(events)?,
        other => format!("(no decider for streams of kind {other:?})"),
    })
}

fn fold<D: Decider>(events: &[RecordedEvent]) -> anyhow::Result<String> {
    let mut state = D::State::default();
    for e in events {
        let event = D::Event::from_recorded(e.event_type.as_str(), e.schema_version, &e.payload)
            .with_context(|| format!("event at position {} does not decode", e.position))?;
        state = D::evolve(state, &event);
    }
    Ok(format!("{state:#?}"))
}

/// The Japanese term beside an event type's aggregate.
fn term(event_type: &str) -> &'static str {
    match event_type.split('.').next().unwrap_or("") {
        "insured" => "被保険者",
        "certification" => "要介護認定",
        "office" => "事業所",
        "insurer" => "保険者",
        "subsidy" => "補助金",
        _ => "",
    }
}
