//! What each subcommand does: parse its input, call the libraries, print.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kiban_events::StreamName;
use kiban_events::envelope::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload};
use serde::Deserialize;
use uuid::Uuid;

use crate::cli::{Backend, BenchCommand, Command};

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            store,
            nats_url,
            api,
            events_max_bytes,
            stream_replicas,
        } => {
            let streams = kiban_bus::streams::StreamOptions {
                replicas: stream_replicas,
                events_max_bytes,
                ..Default::default()
            };
            crate::serving::serve(&store.database_url, nats_url, streams, api).await
        }
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
        Command::Simulate {
            store,
            nats_url,
            insurers,
            persons,
            offices,
            years,
            seed,
            start,
            chunk,
            checkpoint,
            json,
        } => {
            let stop = tokio_util::sync::CancellationToken::new();
            let interrupt = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("Ctrl-C: stopping after the current chunk");
                    interrupt.cancel();
                }
            });
            let options = crate::simulate::SimulateOptions {
                database_url: store.database_url,
                nats_url,
                insurers,
                persons,
                offices,
                years,
                seed,
                start,
                chunk: chunk.max(1),
                checkpoint,
            };
            match crate::simulate::simulate(options, stop).await? {
                Some(report) => {
                    println!("{report}");
                    if json {
                        println!("{}", serde_json::to_string(&report)?);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => Ok(ExitCode::from(crate::EXIT_INTERRUPTED)),
            }
        }
        command @ (Command::Emit { .. } | Command::Subscribe { .. } | Command::Demo { .. }) => {
            crate::serving::run(command).await
        }
        Command::Admin { admin } => crate::staff::run(admin).await,
        #[cfg(feature = "pcsc")]
        Command::Card { card } => crate::card::run(card).await,
    }
}

pub use kiban::system::open_store;

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

pub fn read_input(path: &PathBuf) -> anyhow::Result<String> {
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
    use kiban_store::bench::{AppendBenchOptions, bench_append};
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
            let backend = bench_backend(backend, database_url, directory)?;
            let report = bench_append(AppendBenchOptions {
                backend,
                writers,
                batch,
                events,
            })
            .await?;
            print_report(&report, json)
        }
        BenchCommand::Ingest {
            backend,
            database_url,
            directory,
            nats_url,
            persons,
            paced_seconds,
            receipt_load_percent,
            subscriber_events_per_s,
            json,
        } => {
            let report =
                crate::bench_ingest::bench_ingest(crate::bench_ingest::IngestBenchOptions {
                    backend: bench_backend(backend, database_url, directory)?,
                    nats_url,
                    persons,
                    paced_seconds,
                    receipt_load_percent,
                    subscriber_events_per_s,
                })
                .await?;
            print_report(&report, json)
        }
        BenchCommand::Api {
            database_url,
            directory,
            persons,
            offices,
            connections,
            duration,
            open_loop_percent,
            json,
        } => {
            crate::bench_api::run(
                crate::bench_api::ApiBenchOptions {
                    backend: match database_url {
                        Some(url) => bench_backend(Backend::Postgres, Some(url), directory)?,
                        None => bench_backend(Backend::Sqlite, None, directory)?,
                    },
                    persons,
                    offices,
                    connections,
                    duration_s: duration,
                    open_loop_percent,
                },
                json,
            )
            .await
        }
        BenchCommand::Replay(args) => crate::bench_replay::run(args).await,
    }
}

/// Prints a benchmark's report, then (with `--json`) the same as one JSON
/// line, the last line of the output.
pub(crate) fn print_report(
    report: &(impl std::fmt::Display + serde::Serialize),
    json: bool,
) -> anyhow::Result<ExitCode> {
    println!("{report}");
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a benchmark runs, from its `--backend`, `--database-url` and
/// `--directory`.
pub(crate) fn bench_backend(
    backend: Backend,
    database_url: Option<String>,
    directory: PathBuf,
) -> anyhow::Result<kiban_store::bench::BenchBackend> {
    use kiban_store::bench::BenchBackend;
    Ok(match backend {
        Backend::Postgres => BenchBackend::Postgres {
            server_url: database_url
                .context("--backend postgres needs --database-url (or KIBAN_BENCH_DATABASE_URL)")?,
        },
        Backend::Sqlite => {
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            BenchBackend::Sqlite { directory }
        }
    })
}
