//! What each subcommand does: parse its input, call the libraries, print.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kiban_bus::engine::EngineHandler;
use kiban_bus::local::LocalBus;
use kiban_bus::streams::{StreamOptions, ensure_streams};
use kiban_engine::{Engine, TICK_INTERVAL_MS, Timers};
use kiban_events::StreamName;
use kiban_events::envelope::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload};
use kiban_store::{Store, StoreOptions};
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cli::{Backend, BenchCommand, Command};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { store, nats_url } => serve(&store.database_url, nats_url.as_deref()).await,
        Command::Append {
            store,
            stream,
            expected_version,
            input,
        } => append(&store.database_url, &stream, &expected_version, &input).await,
        Command::Read {
            store,
            stream,
            from,
            max,
            follow,
        } => read(&store.database_url, stream.as_deref(), from, max, follow).await,
        Command::Verify {
            store,
            from,
            to,
            json,
        } => crate::audit::verify_command(&store.database_url, from, to, json).await,
        Command::Audit(args) => crate::audit::run(args).await,
        Command::Replay(args) => crate::replay::run(args).await,
        Command::Bench { bench } => run_bench(bench).await,
    }
}

/// Opens the store, creating the directory of an SQLite file when needed.
pub async fn open_store(url: &str) -> anyhow::Result<Store> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the data directory {}", parent.display())
            })?;
        }
    }
    Store::open(url, StoreOptions::default())
        .await
        .with_context(|| format!("cannot open the store at {}", redact_url(url)))
}

/// A URL without its password, fit for a log line or an error message.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn serve(url: &str, nats_url: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open_store(url).await?;
    crate::audit::start_checkpointer(&store, url)?;
    let head = store.head().await?;
    let engine = Arc::new(Engine::new(store.clone()));
    let handler = Arc::new(EngineHandler::new(Arc::clone(&engine)));
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let transport = match nats_url {
        Some(nats_url) => {
            let client = async_nats::connect(nats_url)
                .await
                .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
            let jetstream = async_nats::jetstream::new(client.clone());
            ensure_streams(&jetstream, &StreamOptions::default()).await?;
            tasks.spawn(kiban_bus::ingest::run_ingest(
                client.clone(),
                handler,
                cancel.clone(),
            ));
            tasks.spawn(kiban_bus::relay::run_relay(
                client,
                store.clone(),
                cancel.clone(),
            ));
            format!("NATS JetStream at {nats_url} (ingest and outbox relay)")
        }
        None => {
            let bus = LocalBus::new();
            let stop = cancel.clone();
            tasks.spawn(async move { bus.run_ingest(handler, stop).await });
            "the in-process bus".to_owned()
        }
    };
    let timers = Timers::new(Arc::clone(&engine));
    let stop = cancel.clone();
    tasks.spawn(async move {
        let interval = std::time::Duration::from_millis(TICK_INTERVAL_MS);
        timers
            .run(Utc::now, interval, stop)
            .await
            .map_err(|error| kiban_bus::Error::Unavailable(format!("timers: {error}")))
    });
    println!(
        "kiban serving — store {} (head position {})",
        redact_url(url),
        head.position
    );
    println!(
        "transport: {transport}; timers tick every {} s",
        TICK_INTERVAL_MS / 1000
    );
    println!("Ctrl-C to stop.");
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C")?,
        Some(ended) = tasks.join_next() => {
            tracing::error!(?ended, "a serving task stopped on its own; shutting down");
        }
    }
    println!("stopping: finishing the work in flight");
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    store.close().await;
    Ok(ExitCode::SUCCESS)
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

fn parse_expected_version(text: &str) -> anyhow::Result<ExpectedVersion> {
    Ok(match text {
        "any" => ExpectedVersion::Any,
        "no-stream" | "no_stream" => ExpectedVersion::NoStream,
        number => ExpectedVersion::Exact(number.parse().with_context(|| {
            format!("--expected-version must be any, no-stream or a number (got {number:?})")
        })?),
    })
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(text)
}

async fn append(
    url: &str,
    stream: &str,
    expected: &str,
    input: &PathBuf,
) -> anyhow::Result<ExitCode> {
    let stream = StreamName::parse(stream)?;
    let expected = parse_expected_version(expected)?;
    let text = read_input(input)?;
    // One object or an array of them. Decided by the first character, not
    // by an untagged enum: payloads are kept as raw JSON, which serde can
    // only take from the original text.
    let events = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<InputEvent>>(&text)
    } else {
        serde_json::from_str::<InputEvent>(&text).map(|event| vec![event])
    }
    .context("the input is not an event or an array of events")?;
    let now = Utc::now();
    let events = events
        .into_iter()
        .map(|event| event.into_new_event(now))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = open_store(url).await?;
    let result = store.append(&stream, expected, events).await;
    store.close().await;
    let result = result?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

async fn read(
    url: &str,
    stream: Option<&str>,
    from: u64,
    max: u64,
    follow: bool,
) -> anyhow::Result<ExitCode> {
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
            for event in &page {
                serde_json::to_writer(&mut out, event)?;
                writeln!(out)?;
                printed += 1;
            }
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
            for event in &page {
                serde_json::to_writer(&mut out, event)?;
                writeln!(out)?;
                printed += 1;
            }
        }
    }
    out.flush()?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn run_bench(bench: BenchCommand) -> anyhow::Result<ExitCode> {
    use kiban_store::bench::{AppendBenchOptions, BenchBackend, bench_append};
    match bench {
        BenchCommand::Append {
            backend,
            database_url,
            directory,
            writers,
            batch,
            events,
            json,
        } => {
            let backend = match backend {
                Backend::Postgres => BenchBackend::Postgres {
                    server_url: database_url.context(
                        "--backend postgres needs --database-url (or KIBAN_BENCH_DATABASE_URL)",
                    )?,
                },
                Backend::Sqlite => {
                    std::fs::create_dir_all(&directory)
                        .with_context(|| format!("cannot create {}", directory.display()))?;
                    BenchBackend::Sqlite { directory }
                }
            };
            let report = bench_append(AppendBenchOptions {
                backend,
                writers,
                batch,
                events,
            })
            .await?;
            println!("{report}");
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
