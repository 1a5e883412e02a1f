//! `kiban append` and `kiban read`: events in and out of the store as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use kiban_events::StreamName;
use kiban_system::open_store;
use kiban_system::operator::{parse_events, parse_expected_version};

use crate::args::{Refused, StoreArgs, read_input};

/// `kiban append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The stream, `kind/id`.
    #[arg(long)]
    pub stream: String,
    /// `any`, `no-stream`, or the stream's current version.
    #[arg(long, default_value = "any")]
    pub expected_version: String,
    /// A JSON file, or `-` for standard input.
    pub input: PathBuf,
}

/// `kiban read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this stream (`kind/id`); all streams when absent.
    #[arg(long)]
    pub stream: Option<String>,
    /// First position (or version, with --stream) to print, from 1.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Most events to print.
    #[arg(long, default_value_t = 1000)]
    pub max: u64,
    /// Keep printing new events as they are committed (all streams only).
    #[arg(long, conflicts_with = "stream")]
    pub follow: bool,
}

/// `kiban append`: appends the input's events to one stream.
pub async fn append(args: AppendArgs) -> anyhow::Result<ExitCode> {
    let (url, stream, expected, input) = (
        &args.store.database_url,
        &args.stream,
        &args.expected_version,
        &args.input,
    );
    let text = read_input(input)?;
    // Input that makes no append is refused like an append the store
    // refuses: exit code 3, nothing written (README "Exit codes").
    let invalid = |error: anyhow::Error| Refused(format!("{error:#}"));
    let stream = StreamName::parse(stream).map_err(|error| invalid(error.into()))?;
    let expected = parse_expected_version(expected).map_err(invalid)?;
    let events = parse_events(&text, chrono::Utc::now()).map_err(invalid)?;
    let store = open_store(url).await?;
    let result = store.append(&stream, expected, events).await;
    store.close().await;
    let result = result.map_err(|error| match error {
        kiban_store::Error::Conflict { .. }
        | kiban_store::Error::DuplicateEventId { .. }
        | kiban_store::Error::MixedBatch { .. }
        | kiban_store::Error::Invalid(_)
        | kiban_store::Error::NotWriter(_) => anyhow::Error::new(Refused(error.to_string())),
        other => anyhow::Error::new(other),
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

/// `kiban read`: prints recorded events as JSON lines.
pub async fn read(args: ReadArgs) -> anyhow::Result<ExitCode> {
    let (url, stream, from, max, follow) = (
        &args.store.database_url,
        args.stream.as_deref(),
        args.from,
        args.max,
        args.follow,
    );
    let store = open_store(url).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut next = from.max(1);
    if let Some(stream) = stream {
        let stream = StreamName::parse(stream)?;
        while printed < max {
            let page = store
                .read_stream(&stream, next, (max - printed) as usize)
                .await?;
            let Some(last) = page.last() else { break };
            next = last.version + 1;
            printed += write_lines(&mut out, &page)?;
        }
    } else if follow {
        drop(out);
        let mut events = store.subscribe(next);
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    println!("{}", serde_json::to_string(&event?)?);
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    } else {
        while printed < max {
            let page = store.read_all(next, (max - printed) as usize).await?;
            let Some(last) = page.last() else { break };
            next = last.position + 1;
            printed += write_lines(&mut out, &page)?;
        }
    }
    out.flush()?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes each event as a JSON line; returns how many.
fn write_lines(
    out: &mut impl Write,
    events: &[kiban_events::RecordedEvent],
) -> anyhow::Result<u64> {
    for event in events {
        serde_json::to_writer(&mut *out, event)?;
        writeln!(out)?;
    }
    Ok(events.len() as u64)
}
