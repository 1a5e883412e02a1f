//! `kiban simulate`: a country-scale workload through the real paths.
//!
//! Persons are planned one at a time from `(seed, person)` ([`plan`]) and
//! run in chunks of `chunk` persons: each chunk's municipal messages go
//! through the ingest path (NATS JetStream with `--nats-url`, the in-process
//! bus otherwise) in time order, at most [`IN_FLIGHT_MAX`] without a receipt;
//! then the chunk's office actions (consents at the card reader, record
//! reads) go through the engine as the API's handlers send them. Projections
//! and office routing run throughout; a subscriber to every office's updates
//! measures commit → subscriber latency.
//!
//! Memory is bounded by one chunk's plans plus what the engine's cache and
//! the projections hold, whatever `--persons` is. Ids are derived from the
//! seed, so a run interrupted (Ctrl-C) and started again with the same
//! arguments resumes after the last finished chunk (kept in the checkpoint
//! file) and re-sends nothing twice that matters: a repeated message is
//! answered with its first receipt.
//!
//! At the end the timers run once at the horizon's end (deadlines passed,
//! renewal windows opened, consents expired), the projections catch up, the
//! chain is verified, and the report is printed.

pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate, Utc};
use futures::StreamExt;
use kiban_bus::client::{Bus, Outgoing, Tapped};
use kiban_bus::ingest::{Receipt, ReceiptStatus};
use kiban_bus::routing::Entitlements;
use kiban_engine::{CommandContext, Engine, EngineError, Timers};
use kiban_events::RecordedEvent;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, PLATFORM_START};
use kiban_events::envelope::{Actor, EventId, StreamName};
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use kiban_store::Store;
use kiban_system::{BusOptions, ReadModelEntitlements, SystemBuilder};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::latency::Latencies;
use plan::{Action, Outcomes, Planned, Population, plan_person};

/// Municipal messages published and not yet answered by a receipt, at most
/// (below the in-process bus's broadcast capacity, so no receipt is lost).
pub const IN_FLIGHT_MAX: u64 = 2_048;

/// Office commands executing at once (different persons).
const OFFICE_COMMANDS_IN_FLIGHT: usize = 64;

/// The terminal at each office's card reader.
const TERMINAL: &str = "T-01";

/// How long a consent given at the card reader lasts.
const CONSENT_DAYS: i64 = 365;

/// Longest wait for the receipts of a chunk: only there to end a broken run.
const RECEIPTS_TIMEOUT_S: u64 = 600;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub database_url: String,
    pub nats_url: Option<String>,
    pub insurers: u64,
    pub persons: u64,
    pub offices: u64,
    pub years: u32,
    pub seed: u64,
    /// The first day; the platform's start (2026-04-01) by default.
    pub start: Option<NaiveDate>,
    pub chunk: u64,
    /// The checkpoint file of a resumable run.
    pub checkpoint: PathBuf,
}

/// The parameters a checkpoint belongs to, and the progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    parameters: String,
    next_chunk: u64,
    messages: u64,
    office_commands: u64,
    outcomes: Outcomes,
    rejections: BTreeMap<String, u64>,
    elapsed_s: f64,
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub persons: u64,
    pub insurers: u64,
    pub offices: u64,
    pub years: u32,
    pub seed: u64,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub transport: &'static str,
    pub resumed_from_chunk: u64,
    pub events: u64,
    pub messages: u64,
    pub office_commands: u64,
    pub rejections: BTreeMap<String, u64>,
    pub applications: Outcomes,
    pub deadlines_recorded: u64,
    pub timers_fired: u64,
    pub overdue_in_projection: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub subscriber_p50_ms: f64,
    pub subscriber_p99_ms: f64,
    pub projection_lag_max: u64,
    pub store_bytes: Option<u64>,
    pub bytes_per_million_events: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub verify_s: f64,
    pub verified_events: u64,
    pub head_hash: String,
}

impl std::fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulated {} persons, {} insurers, {} offices, {} → {} (seed {}, {})",
            self.persons,
            self.insurers,
            self.offices,
            self.start,
            self.end,
            self.seed,
            self.transport
        )?;
        writeln!(
            f,
            "  {} events from {} municipal messages and {} office commands in {:.1} s: {:.0} events/s",
            self.events, self.messages, self.office_commands, self.elapsed_s, self.events_per_s
        )?;
        let a = &self.applications;
        writeln!(
            f,
            "  applications (認定申請): {} filed, {} decided ({} after an extension), {} withdrawn, {} left open → {} deadlines recorded by the timers",
            a.filed, a.decided, a.extended, a.withdrawn, a.left_open, self.deadlines_recorded
        )?;
        writeln!(
            f,
            "  rejected: {}",
            if self.rejections.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", self.rejections)
            }
        )?;
        writeln!(
            f,
            "  commit → office subscriber: p50 {:.1} ms, p99 {:.1} ms; projection lag at most {} events",
            self.subscriber_p50_ms, self.subscriber_p99_ms, self.projection_lag_max
        )?;
        if let (Some(bytes), Some(per_million)) = (self.store_bytes, self.bytes_per_million_events)
        {
            writeln!(
                f,
                "  store on disk: {:.1} MiB ({:.0} MiB per million events)",
                bytes as f64 / 1048576.0,
                per_million / 1048576.0
            )?;
        }
        if let Some(rss) = self.peak_rss_bytes {
            writeln!(f, "  peak RSS: {:.0} MiB", rss as f64 / 1048576.0)?;
        }
        write!(
            f,
            "  audit verify: {} events in {:.1} s, head hash {}",
            self.verified_events, self.verify_s, self.head_hash
        )
    }
}

/// Runs the simulation; see the module documentation.
pub async fn simulate(
    options: SimulateOptions,
    stop: CancellationToken,
) -> anyhow::Result<Option<SimulationReport>> {
    if options.insurers == 0 || options.persons == 0 || options.offices == 0 || options.years == 0 {
        bail!("--insurers, --persons, --offices and --years must be at least 1");
    }
    let start = options.start.unwrap_or(PLATFORM_START);
    if start < PLATFORM_START {
        bail!("--start must be on or after the platform's start, {PLATFORM_START}");
    }
    let end = NaiveDate::from_ymd_opt(
        start.year() + options.years as i32,
        start.month(),
        start.day(),
    )
    .and_then(|d| d.pred_opt())
    .context("the horizon ends on a valid day")?;
    let population = Population {
        seed: options.seed,
        insurers: options.insurers,
        offices: options.offices,
        start,
        end,
    };
    let parameters = format!(
        "seed={} insurers={} persons={} offices={} start={start} end={end} chunk={}",
        options.seed, options.insurers, options.persons, options.offices, options.chunk
    );
    let mut checkpoint = match std::fs::read_to_string(&options.checkpoint) {
        Ok(text) => {
            let saved: Checkpoint = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checkpoint", options.checkpoint.display()))?;
            if saved.parameters != parameters {
                bail!(
                    "{} belongs to another run ({}); remove it or use the same arguments",
                    options.checkpoint.display(),
                    saved.parameters
                );
            }
            saved
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Checkpoint {
            parameters,
            ..Checkpoint::default()
        },
        Err(error) => return Err(error).context("reading the checkpoint"),
    };
    let resumed_from_chunk = checkpoint.next_chunk;

    // Simulated time: the municipalities' facts are checked as of the
    // horizon's end, so a horizon after today is allowed.
    let horizon_end = plan::at_noon(end);
    let routed = Arc::new(Routed::default());
    let counted = Arc::clone(&routed);
    let bus = match &options.nats_url {
        Some(url) => BusOptions::Nats {
            url: url.clone(),
            streams: Default::default(),
        },
        None => BusOptions::InProcess,
    };
    let data_dir = options
        .checkpoint
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let system = SystemBuilder::new(options.database_url.clone(), data_dir)
        .bus(bus)
        // The timers run once, at the end of the horizon (below).
        .timers(None)
        .person_keys(false)
        .ingest_clock(Arc::new(move || horizon_end))
        // Beside the run's checkpoint: a resumed run routes on from where
        // it stopped instead of sending every update again.
        .routing_checkpoints(options.checkpoint.with_extension("routing"))
        .entitlements(move |projections| CountingEntitlements {
            inner: ReadModelEntitlements::new(projections.clone()),
            progress: counted,
        })
        .start()
        .await?;
    let (store, engine, projections) = (
        system.store.clone(),
        Arc::clone(&system.engine),
        system.projections.clone(),
    );
    let db = projections.db().clone();
    let transport = Transport {
        bus: system.bus.clone(),
        routed,
    };
    let collector = Collector::start(&transport).await?;

    let outcome = async {
        setup_insurers(&engine, &transport, &collector, &population, &mut checkpoint).await?;
        let chunks = options.persons.div_ceil(options.chunk);
        let mut lag_max = 0;
        while checkpoint.next_chunk < chunks {
            if stop.is_cancelled() {
                save(&options.checkpoint, &checkpoint)?;
                eprintln!(
                    "interrupted after chunk {} of {chunks}; run the same command again to resume",
                    checkpoint.next_chunk
                );
                return Ok(None);
            }
            let begun = Instant::now();
            let first = checkpoint.next_chunk * options.chunk;
            let last = (first + options.chunk).min(options.persons);
            run_chunk(
                &engine,
                &transport,
                &collector,
                &population,
                first..last,
                &mut checkpoint,
            )
            .await?;
            checkpoint.next_chunk += 1;
            checkpoint.elapsed_s += begun.elapsed().as_secs_f64();
            save(&options.checkpoint, &checkpoint)?;
            let lag = projections
                .lag()
                .await?
                .iter()
                .map(|lag| lag.head - lag.checkpoint)
                .max()
                .unwrap_or(0);
            lag_max = lag_max.max(lag);
            let head = store.head().await?.position;
            let rate = head as f64 / checkpoint.elapsed_s.max(1e-9);
            let left = (chunks - checkpoint.next_chunk) as f64 * checkpoint.elapsed_s
                / checkpoint.next_chunk.max(1) as f64;
            eprintln!(
                "[{:>3.0}%] persons {last}/{} · {head} events · {rate:.0} events/s · projection lag {lag} · ETA {left:.0} s",
                100.0 * checkpoint.next_chunk as f64 / chunks as f64,
                options.persons
            );
        }
        // The timers, once, at the end of the horizon.
        let mut timers = Timers::new(Arc::clone(&engine));
        timers.catch_up().await?;
        let tick = timers.tick(plan::at_noon(end)).await?;
        let timers_fired = tick.fired.len() as u64;
        let head = store.head().await?;
        projections.wait_for(head.position).await?;
        collector.wait_for_updates(&store, transport.routed()).await;
        let began = Instant::now();
        let verified = store.verify(1, None).await?;
        let verify_s = began.elapsed().as_secs_f64();
        let (verified_events, head_hash) = match verified {
            kiban_store::VerifyReport::Verified { events, head_hash } => (events, head_hash.to_string()),
            broken => bail!("the chain does not verify: {broken:?}"),
        };
        let read = kiban_projections::ReadModels::new(db.clone());
        let mut overdue = 0;
        for index in 0..options.insurers {
            overdue += read
                .overdue_applications(&population.insurer(index), plan::at_noon(end))
                .await?
                .len() as u64;
        }
        let deadlines = count_events(&store, "certification.deadline_reached").await?;
        let latencies = collector.update_latencies();
        let store_bytes = store_bytes(&options.database_url);
        let events = head.position;
        Ok(Some(SimulationReport {
            persons: options.persons,
            insurers: options.insurers,
            offices: options.offices,
            years: options.years,
            seed: options.seed,
            start,
            end,
            transport: transport.name(),
            resumed_from_chunk,
            events,
            messages: checkpoint.messages,
            office_commands: checkpoint.office_commands,
            rejections: checkpoint.rejections.clone(),
            applications: checkpoint.outcomes,
            deadlines_recorded: deadlines,
            timers_fired,
            overdue_in_projection: overdue,
            elapsed_s: checkpoint.elapsed_s,
            events_per_s: events as f64 / checkpoint.elapsed_s.max(1e-9),
            subscriber_p50_ms: latencies.percentile_ms(0.50),
            subscriber_p99_ms: latencies.percentile_ms(0.99),
            projection_lag_max: lag_max,
            store_bytes,
            bytes_per_million_events: store_bytes
                .map(|bytes| bytes as f64 * 1_000_000.0 / events.max(1) as f64),
            peak_rss_bytes: peak_rss_bytes(),
            verify_s,
            verified_events,
            head_hash,
        }))
    }
    .await;
    system.shutdown().await;
    outcome
}

fn save(path: &std::path::Path, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(checkpoint)?)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// The id of a planned action: the same for the same seed, person, action.
/// Shaped as a version 4 UUID (the bits of a v5 hash under the seed's
/// namespace): the simulator is a municipality, and municipalities send
/// only v7 or v4 ids (`EventId::from_caller`).
fn action_id(seed: u64, person: u64, index: u32) -> EventId {
    let hash = Uuid::new_v5(
        &Uuid::from_u64_pair(0x6b69_6261_6e2d_7369, seed),
        format!("{person}/{index}").as_bytes(),
    );
    EventId::from_caller(uuid::Builder::from_random_bytes(hash.into_bytes()).into_uuid())
        .expect("a version 4 UUID")
}

/// Onboards every insurer (as the federation) and records its
/// standardisation and data transmission (as the insurer, over ingest), so
/// that its people's data is shared.
async fn setup_insurers(
    engine: &Engine<Store>,
    transport: &Transport,
    collector: &Collector,
    population: &Population,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<()> {
    let onboard_at = plan::at_noon(population.start) - chrono::Duration::hours(4);
    for index in 0..population.insurers {
        let insurer = InsurerNumber::parse(&population.insurer(index))?;
        let stream = StreamName::new("insurer", insurer.as_str())?;
        let context = CommandContext::new(
            action_id(population.seed, u64::MAX - index, 0),
            Actor::parse("federation")?,
            onboard_at,
        );
        // Idempotent: a resumed run gets the events recorded the first time.
        engine
            .execute::<Insurer>(
                &stream,
                &InsurerCommand::Onboard {
                    insurer: insurer.clone(),
                },
                &context,
            )
            .await?;
        for (offset, kind) in [
            (1, "insurer.standardisation_completed"),
            (2, "insurer.data_transmission_completed"),
        ] {
            let day = population.start;
            let planned = Planned {
                at: onboard_at + chrono::Duration::minutes(offset),
                person: u64::MAX - index,
                index: offset as u32,
                action: Action::Ingest {
                    kind,
                    application: None,
                    body: serde_json::json!({"completed_on": day}),
                },
            };
            send(
                transport,
                collector,
                population,
                &planned,
                insurer.as_str(),
                None,
            )
            .await?;
        }
    }
    let rejected = collector.drain().await?;
    for code in rejected {
        *checkpoint.rejections.entry(code).or_default() += 1;
    }
    Ok(())
}

/// Publishes one municipal message (waiting while too many are in flight).
async fn send(
    transport: &Transport,
    collector: &Collector,
    population: &Population,
    planned: &Planned,
    insurer: &str,
    insured: Option<&str>,
) -> anyhow::Result<()> {
    let Action::Ingest {
        kind,
        application,
        body,
    } = &planned.action
    else {
        unreachable!("only municipal messages are sent")
    };
    let id = action_id(population.seed, planned.person, planned.index);
    let mut message = serde_json::json!({
        "event_id": id,
        "kind": kind,
        "insurer": insurer,
        "insured": insured,
        "application": application,
        "occurred_at": planned.at,
        "body": body,
    });
    let object = message.as_object_mut().expect("an object");
    object.retain(|_, value| !value.is_null());
    collector
        .wait_until_in_flight_at_most(IN_FLIGHT_MAX - 1)
        .await?;
    collector.sent(*id.as_uuid());
    transport.publish(insurer, message).await
}

async fn run_chunk(
    engine: &Engine<Store>,
    transport: &Transport,
    collector: &Collector,
    population: &Population,
    persons: std::ops::Range<u64>,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<()> {
    let mut planned = Vec::new();
    for person in persons {
        let (plan, outcomes) = plan_person(population, person);
        checkpoint.outcomes.add(&outcomes);
        planned.extend(plan);
    }
    planned.sort_by_key(|p| (p.at, p.person, p.index));
    let mut office_actions = Vec::new();
    let mut messages = 0;
    for action in planned {
        let insurer = population.insurer_of(action.person);
        let insured = population.insured_of(action.person);
        match action.action {
            Action::Ingest { .. } => {
                send(
                    transport,
                    collector,
                    population,
                    &action,
                    &insurer,
                    Some(&insured),
                )
                .await?;
                messages += 1;
            }
            Action::Consent { .. } | Action::View { .. } => office_actions.push(action),
        }
    }
    for code in collector.drain().await? {
        *checkpoint.rejections.entry(code).or_default() += 1;
    }
    checkpoint.messages += messages;
    // The office's actions, once the municipality's facts are in: one
    // person's in order, different persons' concurrently.
    let mut by_person: BTreeMap<u64, Vec<Planned>> = BTreeMap::new();
    for action in office_actions {
        by_person.entry(action.person).or_default().push(action);
    }
    let results: Vec<anyhow::Result<Vec<Option<String>>>> = futures::stream::iter(by_person)
        .map(|(_, actions)| async move {
            let mut codes = Vec::new();
            for action in actions {
                codes.push(office_action(engine, population, &action).await?);
            }
            Ok(codes)
        })
        .buffer_unordered(OFFICE_COMMANDS_IN_FLIGHT)
        .collect()
        .await;
    for result in results {
        for code in result? {
            checkpoint.office_commands += 1;
            if let Some(code) = code {
                *checkpoint.rejections.entry(code).or_default() += 1;
            }
        }
    }
    Ok(())
}

/// Executes one office action; returns the rejection code if refused.
async fn office_action(
    engine: &Engine<Store>,
    population: &Population,
    action: &Planned,
) -> anyhow::Result<Option<String>> {
    let insurer = population.insurer_of(action.person);
    let insured = population.insured_of(action.person);
    let stream = StreamName::new("insured", &format!("{insurer}-{insured}"))?;
    let id = action_id(population.seed, action.person, action.index);
    let terminal = kiban_events::domain::values::TerminalId::parse(TERMINAL)?;
    let (command, actor) = match &action.action {
        Action::Consent { office } => (
            InsuredCommand::GiveConsent {
                office: OfficeNumber::parse(office)?,
                terminal,
                expires_at: action.at + chrono::Duration::days(CONSENT_DAYS),
            },
            Actor::parse(&format!("office:{office}/{TERMINAL}"))?,
        ),
        Action::View { office } => (
            InsuredCommand::RecordView {
                office: OfficeNumber::parse(office)?,
                terminal,
                insurer_sharing_enabled: true,
            },
            Actor::parse("system:api")?,
        ),
        Action::Ingest { .. } => unreachable!("municipal messages are sent, not executed"),
    };
    let context = CommandContext::new(id, actor, action.at);
    match engine
        .execute::<InsuredPerson>(&stream, &command, &context)
        .await
    {
        Ok(_) => Ok(None),
        Err(EngineError::Rejected(rejection)) => Ok(Some(rejection.code().as_str().to_owned())),
        Err(error) => Err(error.into()),
    }
}

/// Counts the events of `event_type` in the whole store.
async fn count_events(store: &Store, event_type: &str) -> anyhow::Result<u64> {
    let mut count = 0;
    let mut from = 1;
    loop {
        let page = store.read_all(from, 1_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        count += page
            .iter()
            .filter(|event| event.event_type.as_str() == event_type)
            .count() as u64;
    }
    Ok(count)
}

/// The size of an SQLite store's files; `None` for PostgreSQL (see
/// docs/benchmarks.md for how it was measured there).
fn store_bytes(url: &str) -> Option<u64> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    let size = |suffix: &str| {
        std::fs::metadata(format!("{path}{suffix}"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    Some(size("") + size("-wal"))
}

/// The process's peak resident set size (Linux: `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The read models' entitlements, counting what routing has done so far.
struct CountingEntitlements {
    inner: ReadModelEntitlements,
    progress: Arc<Routed>,
}

/// What routing has done so far.
#[derive(Debug, Default)]
struct Routed {
    events: AtomicU64,
    through: AtomicU64,
}

impl Entitlements for CountingEntitlements {
    async fn offices_for(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        let offices = self.inner.offices_for(event).await?;
        self.progress
            .events
            .fetch_add(offices.len() as u64, Ordering::Relaxed);
        self.progress
            .through
            .store(event.position, Ordering::Relaxed);
        Ok(offices)
    }

    async fn offices_for_each(
        &self,
        events: &[Arc<RecordedEvent>],
    ) -> kiban_bus::Result<Vec<Vec<OfficeNumber>>> {
        let offices = self.inner.offices_for_each(events).await?;
        let routed = offices.iter().map(Vec::len).sum::<usize>();
        self.progress
            .events
            .fetch_add(routed as u64, Ordering::Relaxed);
        if let Some(last) = events.last() {
            self.progress
                .through
                .store(last.position, Ordering::Relaxed);
        }
        Ok(offices)
    }
}

/// The bus the municipal messages travel on, and what routing has done.
struct Transport {
    bus: Bus,
    routed: Arc<Routed>,
}

impl Transport {
    fn routed(&self) -> &Routed {
        &self.routed
    }

    fn name(&self) -> &'static str {
        match self.bus {
            Bus::Local(..) => "in-process bus",
            Bus::Nats { .. } => "NATS JetStream",
        }
    }

    async fn publish(&self, insurer: &str, message: serde_json::Value) -> anyhow::Result<()> {
        let insurer = InsurerNumber::parse(insurer)?;
        let message = Outgoing::from_json(message)?;
        Ok(self.bus.publish_ingest(&insurer, &message).await?)
    }
}

/// Receipts and office updates, counted and timed.
struct Collector {
    in_flight: Arc<Mutex<HashSet<Uuid>>>,
    answered: Arc<tokio::sync::Notify>,
    rejected: Arc<Mutex<Vec<String>>>,
    updates: Arc<AtomicU64>,
    latencies: Arc<Mutex<Latencies>>,
    lagged: Arc<AtomicBool>,
}

impl Collector {
    async fn start(transport: &Transport) -> anyhow::Result<Collector> {
        let collector = Collector {
            in_flight: Arc::default(),
            answered: Arc::default(),
            rejected: Arc::default(),
            updates: Arc::default(),
            latencies: Arc::default(),
            lagged: Arc::default(),
        };
        let (in_flight, answered, rejected) = (
            collector.in_flight.clone(),
            collector.answered.clone(),
            collector.rejected.clone(),
        );
        let on_receipt = move |receipt: Receipt| {
            let Some(id) = receipt.event_id else { return };
            if in_flight.lock().expect("not poisoned").remove(id.as_uuid()) {
                if receipt.status == ReceiptStatus::Rejected {
                    rejected
                        .lock()
                        .expect("not poisoned")
                        .push(receipt.code.unwrap_or_default());
                }
                answered.notify_waiters();
            }
        };
        let (updates, latencies) = (collector.updates.clone(), collector.latencies.clone());
        let on_update = move |event: &kiban_events::UpdateNotice| {
            let latency = (Utc::now() - event.recorded_at)
                .to_std()
                .unwrap_or_default();
            latencies.lock().expect("not poisoned").record(latency);
            updates.fetch_add(1, Ordering::Relaxed);
        };
        let mut receipts = transport.bus.tap_receipts().await?;
        tokio::spawn(async move {
            loop {
                match receipts.next().await {
                    Tapped::Item(receipt) => on_receipt(receipt),
                    Tapped::Missed => {}
                    Tapped::Ended => break,
                }
            }
        });
        let mut updates = transport.bus.tap_office_updates().await?;
        let lagged = collector.lagged.clone();
        tokio::spawn(async move {
            loop {
                match updates.next().await {
                    Tapped::Item(event) => on_update(&event),
                    Tapped::Missed => lagged.store(true, Ordering::Relaxed),
                    Tapped::Ended => break,
                }
            }
        });
        Ok(collector)
    }

    fn sent(&self, id: Uuid) {
        self.in_flight.lock().expect("not poisoned").insert(id);
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.lock().expect("not poisoned").len() as u64
    }

    /// Waits until at most `most` messages await their receipt (bounded:
    /// [`RECEIPTS_TIMEOUT_S`] only ends a broken run).
    async fn wait_until_in_flight_at_most(&self, most: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(RECEIPTS_TIMEOUT_S);
        while self.in_flight() > most {
            if Instant::now() > deadline {
                bail!(
                    "{} receipts missing after {RECEIPTS_TIMEOUT_S} s",
                    self.in_flight()
                );
            }
            let answered = self.answered.notified();
            if self.in_flight() <= most {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), answered).await;
        }
        Ok(())
    }

    /// Waits until every message has its receipt; returns the rejection
    /// codes seen since the last drain.
    async fn drain(&self) -> anyhow::Result<Vec<String>> {
        self.wait_until_in_flight_at_most(0).await?;
        Ok(std::mem::take(
            &mut *self.rejected.lock().expect("not poisoned"),
        ))
    }

    /// Waits (bounded) until routing has looked at the store's head and
    /// every update it sent has arrived.
    async fn wait_for_updates(&self, store: &Store, routed: &Routed) {
        let deadline = Instant::now() + Duration::from_secs(RECEIPTS_TIMEOUT_S);
        while Instant::now() < deadline && !self.lagged.load(Ordering::Relaxed) {
            let head = store.head().await.map(|head| head.position).unwrap_or(0);
            if routed.through.load(Ordering::Relaxed) >= head
                && self.updates.load(Ordering::Relaxed) >= routed.events.load(Ordering::Relaxed)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn update_latencies(&self) -> Latencies {
        std::mem::take(&mut *self.latencies.lock().expect("not poisoned"))
    }
}
