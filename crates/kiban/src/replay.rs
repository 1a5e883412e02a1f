//! `kiban replay` (再生): one aggregate's events up to a moment, as a readable
//! timeline (Japanese terms beside English) or JSON, and the state its
//! decider derives from them (docs/audit.md).

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use kiban_events::{Position, StreamName};
use kiban_system::replay::{Until, replay};

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
    let until = match (args.as_of, args.at_position) {
        (Some(time), _) => Until::Time(time),
        (None, Some(position)) => Until::Position(position),
        (None, None) => Until::Head,
    };
    let store = open_store(&args.store.database_url).await?;
    let replayed = replay(&store, &stream, until).await;
    store.close().await;
    let replayed = replayed?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&replayed.to_json())?);
    } else {
        println!("{}", replayed.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
