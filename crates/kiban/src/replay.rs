//! `kiban replay` (再生): one aggregate's events up to a moment, as a readable
//! timeline (Japanese terms beside English) or JSON, and the state its
//! decider derives from them (docs/audit.md).

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use kiban_events::domain::certification::CertificationApplication;
use kiban_events::domain::insured::InsuredPerson;
use kiban_events::domain::insurer::Insurer;
use kiban_events::domain::office::Office;
use kiban_events::domain::subsidy::SubsidyApplication;
use kiban_events::domain::{Decider, DomainEvent, jst};
use kiban_events::{Position, RecordedEvent, StreamName};
use kiban_store::{READ_EVENTS_MAX, Store};
use serde_json::json;

use crate::args::StoreArgs;
use kiban_system::open_store;

/// `kiban replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A stream, `kind/id` (e.g. `certification/131016-0000012345-1`).
    #[arg(long, group = "target")]
    pub stream: Option<String>,
    /// An insured person (被保険者), `INSURER-INSURED`.
    #[arg(long, group = "target")]
    pub insured: Option<String>,
    /// An office (事業所), its 10-digit number.
    #[arg(long, group = "target")]
    pub office: Option<String>,
    /// The state after every event recorded at or before this RFC 3339 time.
    #[arg(long, conflicts_with = "at_position")]
    pub as_of: Option<DateTime<Utc>>,
    /// The state after the event at this position.
    #[arg(long)]
    pub at_position: Option<Position>,
    /// Print JSON (one object) instead of the timeline.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let stream = match (&args.stream, &args.insured, &args.office) {
        (Some(stream), None, None) => stream.clone(),
        (None, Some(person), None) => format!("insured/{person}"),
        (None, None, Some(office)) => format!("office/{office}"),
        _ => anyhow::bail!("give exactly one of --stream, --insured, --office"),
    };
    let stream = StreamName::parse(&stream).context("not a valid stream")?;
    let store = open_store(&args.store.database_url).await?;
    let result = replay(&store, &stream, &args).await;
    store.close().await;
    result
}

async fn replay(store: &Store, stream: &StreamName, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let until = match (args.as_of, args.at_position) {
        (Some(time), _) => store.position_at(time).await?,
        (None, Some(position)) => position,
        (None, None) => store.head().await?.position,
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
    if args.json {
        let timeline: Vec<_> = events
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
        let out = json!({
            "stream": stream.as_str(),
            "until_position": until,
            "events": timeline,
            "state": state,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} — {} events up to position {until} (経過 / timeline)",
        stream,
        events.len()
    );
    for e in &events {
        println!(
            "  #{:<8} v{:<4} {}  {:<40} {}  by {}",
            e.position,
            e.version,
            e.recorded_at
                .with_timezone(&jst())
                .format("%Y-%m-%d %H:%M:%S JST"),
            e.event_type.as_str(),
            term(e.event_type.as_str()),
            e.actor
        );
        println!("             {}", e.payload.as_str());
    }
    println!("state derived by the decider (状態):");
    println!("{}", state.as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// The decider's state after `events`, as pretty Debug text (the states are
/// not serialisable; Debug is their faithful, readable form).
fn derive_state(kind: &str, events: &[RecordedEvent]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::Value::String(match kind {
        "insured" => fold::<InsuredPerson>(events)?,
        "office" => fold::<Office>(events)?,
        "insurer" => fold::<Insurer>(events)?,
        "certification" => fold::<CertificationApplication>(events)?,
        "subsidy" => fold::<SubsidyApplication>(events)?,
        other => format!("(no decider for streams of kind {other:?})"),
    }))
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
