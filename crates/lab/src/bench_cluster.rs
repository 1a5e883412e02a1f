//! `kiban bench cluster` (a program, not a test): many kiban processes,
//! one history (issue 20), measured the way a deployment runs —
//! PostgreSQL, one nats-server, one `kiban serve --role engine`, and 1, 2,
//! then 3 `kiban serve --role api` behind HAProxy running
//! `deploy/haproxy.cfg` (TLS pass-through, PROXY protocol v2, `/readyz`
//! checks). Every process is a real child process of this program; the
//! load goes through HAProxy over HTTPS with client certificates.
//!
//! One run, loopback only, in this order:
//!
//! 1. **load** — a scratch PostgreSQL database gets `bench api`'s data set
//!    (`bench_api::dataset`); a private nats-server starts (or
//!    `--nats-url`); the engine starts and its projections catch up.
//! 2. **for N = 1, 2, 3 API processes**, in `rounds` rounds (1, 2, 3, 1,
//!    2, 3, …: a change in the machine's other load falls on every N; the
//!    report gives the median per N and every run). The three API
//!    processes run throughout; HAProxy is restarted with N servers (the
//!    others point at a closed port and are waited down first), so the
//!    idle ones only follow the read models' checkpoints:
//!    - closed loop, mixed: three of four connections office terminals
//!      sending logged reads (each appends `insured.record_viewed` through
//!      the writer before it answers), one of four the federation sending
//!      commands (consent renewals: one event each). Requests/s, p50/p99
//!      per kind, and the CPU every process used — and the whole machine
//!      (`/proc/stat`), since other programs share it;
//!    - open loop at `open_loop_percent` of that rate: logged-read and
//!      command p50/p99 from each request's scheduled time.
//! 3. **engine CPU per operation** (N = 3): a closed loop of logged reads
//!    only, then of commands only; each phase's CPU time of the engine
//!    process (`/proc/<pid>/stat` utime + stime, from the phase's start
//!    until its read models have applied every event of the phase)
//!    divided by the events it appended. The API processes' and HAProxy's
//!    likewise.
//! 4. **writer fail-over** — a standby engine starts and waits for the
//!    writer lock; the writer is killed with SIGKILL; the time from the
//!    kill to the first command (sent after the kill) answered 2xx.
//!
//! Every answer in phases 2 and 3 must be 2xx, unless HAProxy's health
//! checks took a server in use out meanwhile (its connections are closed;
//! counted and reported), and the store must have grown by exactly one
//! `insured.record_viewed` per logged read and one
//! `insured.consent_given` per command answered (plus at most one per
//! failed request); the run fails otherwise.
//! Other events appended meanwhile (the engine's timers) are counted by
//! type and reported.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiban_api::{DevPki, Principal};
use kiban_store::scratch::{Scratch, ScratchBackend};
use kiban_store::{Store, StoreOptions};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::bench_api::generator::{Generator, Mix, Sample};
use crate::bench_api::{KindFigures, WARMUP_SECONDS, by_kind, dataset, load_data_set, quantile};
use crate::nats_server::{PRIVATE_EVENTS_MAX_BYTES, PrivateNatsServer};

/// Most API processes measured (`deploy/haproxy.cfg` has three `server`
/// lines).
pub const API_PROCESSES_MAX: usize = 3;

/// How long a process may take to print its banner, and the read models to
/// catch up.
const START_TIMEOUT_S: u64 = 300;

/// A closed loopback port for the `server` lines of processes not in the
/// measured set: HAProxy marks them down.
const CLOSED_PORT: u16 = 1;

/// The longest the fail-over measurement waits for a command to succeed.
const FAILOVER_BOUND_S: u64 = 60;

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterBenchOptions {
    /// The PostgreSQL server; a scratch database is created on it.
    pub server_url: String,
    /// A nats-server with JetStream; a private one when `None`.
    pub nats_url: Option<String>,
    /// The HAProxy binary.
    pub haproxy: String,
    /// The HAProxy configuration (`deploy/haproxy.cfg`).
    pub haproxy_config: PathBuf,
    pub persons: u64,
    pub offices: u64,
    /// Keep-alive connections of the load generator.
    pub connections: usize,
    /// Seconds measured in each phase (after [`WARMUP_SECONDS`]).
    pub duration_s: u64,
    /// The open-loop phase's rate as a share of the closed-loop rate.
    pub open_loop_percent: u64,
    /// Rounds of N = 1, 2, 3.
    pub rounds: u64,
}

/// One measurement with N API processes.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessesFigures {
    pub round: u64,
    pub api_processes: usize,
    /// Closed loop, mixed: requests answered per second.
    pub rps: f64,
    pub closed_by_kind: BTreeMap<&'static str, KindFigures>,
    /// CPU seconds per second of the closed loop: the engine, the N API
    /// processes, HAProxy, the load generator (this process), and the
    /// whole machine (every process: also PostgreSQL, NATS and the other
    /// programs on it); 2.0 = both cores of a 2-core machine.
    pub engine_cores: f64,
    pub api_cores: f64,
    pub haproxy_cores: f64,
    pub generator_cores: f64,
    pub machine_cores: f64,
    /// Events appended meanwhile that no request of the benchmark made
    /// (the engine's timers), by type.
    pub other_events: BTreeMap<String, u64>,
    /// Failed requests (allowed only when HAProxy took a server out), the
    /// first one's error, and how often HAProxy's health checks took a
    /// server in use out during the measurement.
    pub errors: u64,
    pub first_error: Option<String>,
    pub servers_taken_out: usize,
    pub open_loop_target_rps: f64,
    pub open_loop_rps: f64,
    pub open_loop_logged_read_p50_ms: f64,
    pub open_loop_logged_read_p99_ms: f64,
    pub open_loop_command_p50_ms: f64,
    pub open_loop_command_p99_ms: f64,
}

/// The rounds of one N, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessesSummary {
    pub api_processes: usize,
    /// The median of the rounds' closed-loop rates, and their range.
    pub rps_median: f64,
    pub rps_min: f64,
    pub rps_max: f64,
    /// `rps_median` ÷ the median with one API process (goal ≥ 0.9).
    pub relative_to_one: f64,
    /// Medians over the rounds of the open loop's logged-read and command
    /// latencies (goal for logged reads: p99 < 20 ms).
    pub open_loop_logged_read_p50_ms: f64,
    pub open_loop_logged_read_p99_ms: f64,
    pub open_loop_command_p50_ms: f64,
    pub open_loop_command_p99_ms: f64,
    /// Medians of the closed loops' CPU use, as in [`ProcessesFigures`].
    pub kiban_cores: f64,
    pub machine_cores: f64,
}

/// CPU time per operation, from a phase of only that operation.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerOperation {
    /// Operations answered (= events appended) in the phase.
    pub operations: u64,
    pub rps: f64,
    pub engine_cpu_ms: f64,
    /// All API processes together.
    pub api_cpu_ms: f64,
    pub haproxy_cpu_ms: f64,
    /// Every process of the machine, per operation (also PostgreSQL, NATS,
    /// the load generator and other programs).
    pub machine_cpu_ms: f64,
    /// Events appended meanwhile that no request made (the engine's
    /// timers), by type: their cost is in the figures above.
    pub other_events: BTreeMap<String, u64>,
    /// Failed requests (allowed only when HAProxy took a server out).
    pub errors: u64,
}

/// The figures; serialises to the keys `kiban bench cluster --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    pub bench: &'static str,
    pub persons: u64,
    pub offices: u64,
    pub insurers: u64,
    pub events_loaded: u64,
    pub connections: usize,
    pub duration_s: u64,
    /// The machine's load average over one minute at the start (other
    /// programs share the CPU).
    pub load_average_at_start: f64,
    pub cpus: usize,
    pub rounds: u64,
    /// Per N, over the rounds.
    pub by_processes: Vec<ProcessesSummary>,
    /// Every measurement, in the order run.
    pub runs: Vec<ProcessesFigures>,
    pub logged_read: CpuPerOperation,
    pub command: CpuPerOperation,
    /// SIGKILL of the writer → the first command sent after it answered 2xx.
    pub writer_failover_ms: f64,
    /// Non-2xx answers and failed requests in the measured phases: the
    /// run fails on any unless HAProxy's health checks took a server out
    /// meanwhile (`servers_taken_out`).
    pub errors: u64,
    pub servers_taken_out: usize,
}

impl fmt::Display for ClusterBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster benchmark on PostgreSQL + NATS + HAProxy ({} persons, {} offices; {} connections, {} s per phase; load average {:.2} on {} CPUs at start)",
            self.persons,
            self.offices,
            self.connections,
            self.duration_s,
            self.load_average_at_start,
            self.cpus
        )?;
        for n in &self.by_processes {
            writeln!(
                f,
                "  {} API process(es): {:>7.0} req/s median of {} rounds ({:.0}–{:.0}; {:.0}% of one); open loop: logged read p50 {:.2} ms p99 {:.2} ms, command p50 {:.2} ms p99 {:.2} ms; cores: kiban {:.2} of the machine's {:.2}",
                n.api_processes,
                n.rps_median,
                self.rounds,
                n.rps_min,
                n.rps_max,
                100.0 * n.relative_to_one,
                n.open_loop_logged_read_p50_ms,
                n.open_loop_logged_read_p99_ms,
                n.open_loop_command_p50_ms,
                n.open_loop_command_p99_ms,
                n.kiban_cores,
                n.machine_cores
            )?;
        }
        for n in &self.runs {
            writeln!(
                f,
                "    round {} × {}: {:>7.0} req/s  cores: engine {:.2}, API {:.2}, HAProxy {:.2}, generator {:.2}, machine {:.2}",
                n.round,
                n.api_processes,
                n.rps,
                n.engine_cores,
                n.api_cores,
                n.haproxy_cores,
                n.generator_cores,
                n.machine_cores
            )?;
            for (kind, figures) in &n.closed_by_kind {
                writeln!(
                    f,
                    "      {kind:<26} {:>7} requests  p50 {:.2} ms  p99 {:.2} ms",
                    figures.requests, figures.p50_ms, figures.p99_ms
                )?;
            }
            writeln!(
                f,
                "      open loop at {:.0} req/s ({:.0} answered/s): logged read p50 {:.2} ms p99 {:.2} ms; command p50 {:.2} ms p99 {:.2} ms",
                n.open_loop_target_rps,
                n.open_loop_rps,
                n.open_loop_logged_read_p50_ms,
                n.open_loop_logged_read_p99_ms,
                n.open_loop_command_p50_ms,
                n.open_loop_command_p99_ms
            )?;
        }
        for (name, cpu) in [
            ("logged read", &self.logged_read),
            ("command", &self.command),
        ] {
            writeln!(
                f,
                "  CPU per {name:<11} ({} at {:.0}/s): engine {:.3} ms, API processes {:.3} ms, HAProxy {:.3} ms; whole machine {:.3} ms",
                cpu.operations,
                cpu.rps,
                cpu.engine_cpu_ms,
                cpu.api_cpu_ms,
                cpu.haproxy_cpu_ms,
                cpu.machine_cpu_ms
            )?;
        }
        let mut other: BTreeMap<&str, u64> = BTreeMap::new();
        let phases = self.runs.iter().map(|r| &r.other_events);
        for events in phases.chain([&self.logged_read.other_events, &self.command.other_events]) {
            for (kind, count) in events {
                *other.entry(kind.as_str()).or_insert(0) += count;
            }
        }
        writeln!(f, "  other events appended meanwhile (timers): {other:?}")?;
        write!(
            f,
            "  writer fail-over (kill -9 → first command answered): {:.0} ms\n  errors: {} (HAProxy took a server in use out {} times)",
            self.writer_failover_ms, self.errors, self.servers_taken_out
        )
    }
}

/// Runs the benchmark; see the module documentation.
pub async fn bench_cluster(options: ClusterBenchOptions) -> anyhow::Result<ClusterBenchReport> {
    if options.persons == 0 || options.offices == 0 || options.duration_s == 0 {
        bail!("--persons, --offices and --duration must be at least 1");
    }
    if options.connections < 4 || options.connections > kiban_api::REQUESTS_IN_FLIGHT_MAX {
        bail!(
            "--connections must be 4 to {} (one of four sends commands)",
            kiban_api::REQUESTS_IN_FLIGHT_MAX
        );
    }
    if !(1..=100).contains(&options.open_loop_percent) {
        bail!("--open-loop-percent must be 1 to 100");
    }
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !options.haproxy_config.is_file() {
        bail!(
            "no HAProxy configuration at {} (run from the repository, or give --haproxy-config)",
            options.haproxy_config.display()
        );
    }
    let backend = ScratchBackend::Postgres {
        server_url: options.server_url.clone(),
    };
    let scratch = Scratch::create(&backend, "kiban_bench_cluster").await?;
    let outcome = run(&scratch, &options).await;
    scratch.remove().await;
    outcome
}

async fn run(
    scratch: &Scratch,
    options: &ClusterBenchOptions,
) -> anyhow::Result<ClusterBenchReport> {
    let load_average_at_start = load_average();
    let population = dataset::Population::new(options.persons, options.offices);
    let dir = tempfile::Builder::new()
        .prefix("kiban-bench-cluster-")
        .tempdir()?;
    let mut principals = population.principals();
    principals.push(Principal::Federation);
    // The loader's store held the writer lock: the engine takes it next.
    let (pki, loaded) = load_data_set(
        scratch.url(),
        population,
        &dir.path().join("certs"),
        &principals,
    )
    .await?;
    eprintln!(
        "load: {} events appended in {:.1} s",
        loaded.events, loaded.append_seconds
    );

    let private_nats = match &options.nats_url {
        Some(_) => None,
        None => Some(PrivateNatsServer::start().await?),
    };
    let nats_url = match (&options.nats_url, &private_nats) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => unreachable!("a private server was started"),
    };
    let cluster = Cluster {
        dir: dir.path().to_owned(),
        database_url: scratch.url().to_owned(),
        nats_url,
        pki,
        options: options.clone(),
    };
    let mut engine = cluster.engine("engine-1").await?;
    engine.wait_for_line("Ctrl-C to stop").await?;
    eprintln!("engine: writing; its projections catch up");
    // Opened after the engine holds the writer lock, this handle never
    // takes it (it only reads the head: it never appends).
    let store = Store::open(scratch.url(), StoreOptions::default()).await?;

    let mut apis: Vec<ServeProcess> = Vec::new();
    for n in 1..=API_PROCESSES_MAX {
        let mut api = cluster.api(&format!("api-{n}")).await?;
        api.address = Some(api.wait_for_api().await?);
        apis.push(api);
    }
    // Rounds of N = 1, 2, 3 one after the other, so that a change in the
    // machine's other load falls on every N alike; the median per N.
    let mut runs = Vec::new();
    let mut errors = 0;
    let mut balancer: Option<Haproxy> = None;
    for round in 1..=options.rounds {
        for n in 1..=API_PROCESSES_MAX {
            if let Some(old) = balancer.take() {
                old.stop().await;
            }
            let haproxy = cluster.haproxy(&apis, n).await?;
            wait_until_caught_up(&cluster.pki, haproxy.address, &store).await?;
            eprintln!("round {round}, {n} API process(es): closed loop, mixed");
            let generator = Generator::with_mix(
                &cluster.pki,
                population,
                options.connections,
                Mix::LoggedReadsAndCommands,
            )?;
            let mut figures =
                measure_processes(&generator, &haproxy, &engine, &apis[..n], &store, options)
                    .await?;
            figures.round = round;
            errors += generator.errors();
            runs.push(figures);
            balancer = Some(haproxy);
        }
    }
    let by_processes = summarise(&runs);
    let haproxy = balancer.expect("at least one round");

    eprintln!("engine CPU: logged reads only");
    let logged_read =
        cpu_phase(Mix::LoggedReads, &cluster, &haproxy, &engine, &apis, &store).await?;
    eprintln!("engine CPU: commands only");
    let command = cpu_phase(Mix::Commands, &cluster, &haproxy, &engine, &apis, &store).await?;
    let errors = errors + logged_read.errors + command.errors;
    // The last HAProxy's count so far includes the last run's.
    let servers_taken_out = runs.iter().map(|r| r.servers_taken_out).sum::<usize>()
        + haproxy
            .taken_out()
            .saturating_sub(runs.last().map_or(0, |r| r.servers_taken_out));

    eprintln!("writer fail-over: a standby engine, then kill -9 of the writer");
    let mut standby = cluster.engine("engine-2").await?;
    standby.wait_for_line("waiting for the writer lock").await?;
    let failover = Generator::with_mix(&cluster.pki, population, 8, Mix::Commands)?;
    let killed_at = Instant::now();
    engine.kill_9().await;
    let answered = failover
        .first_success_after(
            haproxy.address,
            killed_at,
            Duration::from_secs(FAILOVER_BOUND_S),
        )
        .await
        .with_context(|| {
            format!(
                "no command succeeded within {FAILOVER_BOUND_S} s of the writer's kill (first error: {})",
                failover.first_error().unwrap_or_default()
            )
        })?;
    let writer_failover_ms = (answered - killed_at).as_secs_f64() * 1000.0;
    haproxy.stop().await;
    drop((standby, apis));
    store.close().await;
    Ok(ClusterBenchReport {
        bench: "cluster",
        persons: population.persons,
        offices: population.offices,
        insurers: population.insurers,
        events_loaded: loaded.events,
        connections: options.connections,
        duration_s: options.duration_s,
        load_average_at_start,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        rounds: options.rounds,
        by_processes,
        runs,
        logged_read,
        command,
        errors,
        writer_failover_ms,
        servers_taken_out,
    })
}

/// The closed and open loops with the API processes behind `haproxy`.
async fn measure_processes(
    generator: &Generator,
    haproxy: &Haproxy,
    engine: &ServeProcess,
    apis: &[ServeProcess],
    store: &Store,
    options: &ClusterBenchOptions,
) -> anyhow::Result<ProcessesFigures> {
    let duration = Duration::from_secs(options.duration_s);
    let warmup = Duration::from_secs(WARMUP_SECONDS);
    let before = Cpu::read(engine, apis, haproxy)?;
    let machine_before = machine_busy_seconds()?;
    let head_before = store.head().await?.position;
    let (reads_before, commands_before) = (
        generator.office_person_reads(),
        generator.commands_answered(),
    );
    let started = Instant::now();
    let closed = generator
        .closed_loop(haproxy.address, warmup, duration)
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cores = Cpu::read(engine, apis, haproxy)?.minus(&before) / elapsed;
    let machine_cores = (machine_busy_seconds()? - machine_before) / elapsed;
    let rps = closed.len() as f64 / duration.as_secs_f64();
    let target = rps * options.open_loop_percent as f64 / 100.0;
    eprintln!("  {rps:.0} req/s; open loop at {target:.0} req/s");
    let open = generator
        .open_loop(haproxy.address, target, duration)
        .await?;
    haproxy.check_errors(generator, &format!("with {} API process(es)", apis.len()))?;
    let other_events =
        check_appended(generator, store, head_before, reads_before, commands_before).await?;
    let (reads, commands): (Vec<Sample>, Vec<Sample>) =
        open.samples.iter().partition(|s| s.kind.logged());
    Ok(ProcessesFigures {
        round: 0,
        api_processes: apis.len(),
        rps,
        closed_by_kind: by_kind(&closed),
        engine_cores: cores.engine,
        api_cores: cores.api,
        haproxy_cores: cores.haproxy,
        generator_cores: cores.generator,
        machine_cores,
        other_events,
        errors: generator.errors(),
        first_error: generator.first_error(),
        servers_taken_out: haproxy.taken_out(),
        open_loop_target_rps: target,
        open_loop_rps: open.samples.len() as f64 / open.elapsed.as_secs_f64(),
        open_loop_logged_read_p50_ms: quantile(&reads, 0.50),
        open_loop_logged_read_p99_ms: quantile(&reads, 0.99),
        open_loop_command_p50_ms: quantile(&commands, 0.50),
        open_loop_command_p99_ms: quantile(&commands, 0.99),
    })
}

/// A closed loop of one kind of operation; CPU per operation from the
/// phase's start until the read models have applied its last event.
async fn cpu_phase(
    mix: Mix,
    cluster: &Cluster,
    haproxy: &Haproxy,
    engine: &ServeProcess,
    apis: &[ServeProcess],
    store: &Store,
) -> anyhow::Result<CpuPerOperation> {
    let options = &cluster.options;
    let generator = Generator::with_mix(
        &cluster.pki,
        dataset::Population::new(options.persons, options.offices),
        options.connections,
        mix,
    )?;
    wait_until_caught_up(&cluster.pki, haproxy.address, store).await?;
    let head_before = store.head().await?.position;
    let before = Cpu::read(engine, apis, haproxy)?;
    let machine_before = machine_busy_seconds()?;
    let duration = Duration::from_secs(options.duration_s);
    let samples = generator
        .closed_loop(haproxy.address, Duration::ZERO, duration)
        .await?;
    wait_until_caught_up(&cluster.pki, haproxy.address, store).await?;
    let used = Cpu::read(engine, apis, haproxy)?.minus(&before);
    let machine = machine_busy_seconds()? - machine_before;
    haproxy.check_errors(&generator, "in a CPU phase")?;
    let other_events = check_appended(&generator, store, head_before, 0, 0).await?;
    let operations = generator.office_person_reads() + generator.commands_answered();
    let per = |seconds: f64| 1000.0 * seconds / operations.max(1) as f64;
    Ok(CpuPerOperation {
        operations,
        rps: samples.len() as f64 / duration.as_secs_f64(),
        engine_cpu_ms: per(used.engine),
        api_cpu_ms: per(used.api),
        haproxy_cpu_ms: per(used.haproxy),
        machine_cpu_ms: per(machine),
        other_events,
        errors: generator.errors(),
    })
}

/// The events appended since `head_before`, by type.
async fn appended_since(store: &Store, head_before: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut by_type = BTreeMap::new();
    let mut from = head_before + 1;
    loop {
        let page = store.read_all(from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in &page {
            *by_type
                .entry(event.event_type.as_str().to_owned())
                .or_insert(0) += 1;
        }
    }
    Ok(by_type)
}

/// One `insured.record_viewed` per logged read and one
/// `insured.consent_given` per command answered since the counts given
/// were appended — and at most one more per failed request (committed,
/// but its answer lost with its connection); returns the other events
/// appended meanwhile (the engine's timers, by type), which the report
/// lists.
async fn check_appended(
    generator: &Generator,
    store: &Store,
    head_before: u64,
    reads_before: u64,
    commands_before: u64,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut appended = appended_since(store, head_before).await?;
    let reads = generator.office_person_reads() - reads_before;
    let commands = generator.commands_answered() - commands_before;
    let viewed = appended.remove("insured.record_viewed").unwrap_or(0);
    let consents = appended.remove("insured.consent_given").unwrap_or(0);
    let failed = generator.errors();
    if viewed < reads || consents < commands || viewed + consents > reads + commands + failed {
        bail!(
            "{reads} logged reads and {commands} commands were answered ({} failed) but {viewed} record_viewed and {consents} consent_given events were appended (and {appended:?})",
            generator.errors()
        );
    }
    Ok(appended)
}

/// Waits until `/readyz` (through the balancer) says the read models lag
/// by no event and the head is the store's.
async fn wait_until_caught_up(
    pki: &DevPki,
    balancer: SocketAddr,
    store: &Store,
) -> anyhow::Result<()> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.tls.client_ca)?)?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(START_TIMEOUT_S);
    let mut last = String::new();
    while Instant::now() < deadline {
        let head = store.head().await?.position;
        if let Ok(response) = client
            .get(format!("https://{balancer}/readyz"))
            .send()
            .await
            && let Ok(text) = response.text().await
        {
            let head_line = format!("head {head}");
            if text.lines().any(|line| line == "lag_events 0")
                && text.lines().any(|line| line == head_line)
            {
                return Ok(());
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the read models did not catch up within {START_TIMEOUT_S} s; /readyz said: {last}")
}

/// CPU seconds used so far (user + system) by the engine, all API
/// processes and HAProxy.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    engine: f64,
    api: f64,
    haproxy: f64,
    /// This process: the load generator.
    generator: f64,
}

impl Cpu {
    fn read(
        engine: &ServeProcess,
        apis: &[ServeProcess],
        haproxy: &Haproxy,
    ) -> anyhow::Result<Cpu> {
        let mut api = 0.0;
        for process in apis {
            api += cpu_seconds(process.pid)?;
        }
        Ok(Cpu {
            engine: cpu_seconds(engine.pid)?,
            api,
            haproxy: cpu_seconds(haproxy.pid)?,
            generator: cpu_seconds(std::process::id())?,
        })
    }

    fn minus(&self, before: &Cpu) -> Cpu {
        Cpu {
            engine: self.engine - before.engine,
            api: self.api - before.api,
            haproxy: self.haproxy - before.haproxy,
            generator: self.generator - before.generator,
        }
    }
}

impl std::ops::Div<f64> for Cpu {
    type Output = Cpu;
    fn div(self, by: f64) -> Cpu {
        Cpu {
            engine: self.engine / by,
            api: self.api / by,
            haproxy: self.haproxy / by,
            generator: self.generator / by,
        }
    }
}

/// utime + stime of a process (Linux `/proc/<pid>/stat`, fields 14 and
/// 15, in clock ticks), in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (Linux only)"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count the fields after its closing parenthesis (field 3 onwards).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("an unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index - 3)
            .context("an unexpected /proc/<pid>/stat")?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks_per_second())
}

/// CPU seconds the whole machine has been busy (`/proc/stat`: every CPU's
/// time less idle and I/O wait).
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let times: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("an unexpected /proc/stat")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user and nice).
    let busy: u64 = times.iter().take(8).sum::<u64>()
        - times.get(3).copied().unwrap_or(0)
        - times.get(4).copied().unwrap_or(0);
    Ok(busy as f64 / clock_ticks_per_second())
}

/// The summary per N of the rounds' measurements.
fn summarise(runs: &[ProcessesFigures]) -> Vec<ProcessesSummary> {
    let median = |mut values: Vec<f64>| -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    };
    let mut summaries: Vec<ProcessesSummary> = (1..=API_PROCESSES_MAX)
        .map(|n| {
            let of_n: Vec<&ProcessesFigures> =
                runs.iter().filter(|r| r.api_processes == n).collect();
            let values = |f: fn(&ProcessesFigures) -> f64| of_n.iter().map(|r| f(r)).collect();
            let rps: Vec<f64> = values(|r| r.rps);
            ProcessesSummary {
                api_processes: n,
                rps_median: median(rps.clone()),
                rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
                rps_max: rps.iter().copied().fold(0.0, f64::max),
                relative_to_one: 1.0,
                open_loop_logged_read_p50_ms: median(values(|r| r.open_loop_logged_read_p50_ms)),
                open_loop_logged_read_p99_ms: median(values(|r| r.open_loop_logged_read_p99_ms)),
                open_loop_command_p50_ms: median(values(|r| r.open_loop_command_p50_ms)),
                open_loop_command_p99_ms: median(values(|r| r.open_loop_command_p99_ms)),
                kiban_cores: median(values(|r| r.engine_cores + r.api_cores + r.haproxy_cores)),
                machine_cores: median(values(|r| r.machine_cores)),
            }
        })
        .collect();
    let one = summaries[0].rps_median;
    for summary in &mut summaries {
        summary.relative_to_one = summary.rps_median / one;
    }
    summaries
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The one-minute load average (`/proc/loadavg`), 0 where unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// What every process of the run shares.
struct Cluster {
    dir: PathBuf,
    database_url: String,
    nats_url: String,
    pki: DevPki,
    options: ClusterBenchOptions,
}

impl Cluster {
    /// `kiban serve --role engine` with its own data directory.
    async fn engine(&self, name: &str) -> anyhow::Result<ServeProcess> {
        let events_max = PRIVATE_EVENTS_MAX_BYTES.to_string();
        let args = [
            "--role",
            "engine",
            "--events-max-bytes",
            events_max.as_str(),
        ];
        ServeProcess::start(self, name, &args).await
    }

    /// `kiban serve --role api` with the benchmark's certificates,
    /// trusting the PROXY protocol header from loopback (HAProxy).
    async fn api(&self, name: &str) -> anyhow::Result<ServeProcess> {
        let tls = &self.pki.tls;
        let path = |p: &Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
        let (cert, key, ca) = (
            path(&tls.server_cert)?,
            path(&tls.server_key)?,
            path(&tls.client_ca)?,
        );
        let args = [
            "--role",
            "api",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.as_str(),
            "--tls-key",
            key.as_str(),
            "--client-ca",
            ca.as_str(),
            "--proxy-protocol-from",
            "127.0.0.1/32",
        ];
        ServeProcess::start(self, name, &args).await
    }

    /// HAProxy with `deploy/haproxy.cfg` in front of the first `n` API
    /// processes; the other `server` lines point at a closed port, and the
    /// balancer is returned once it has marked them down.
    async fn haproxy(&self, apis: &[ServeProcess], n: usize) -> anyhow::Result<Haproxy> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = self.dir.join(format!("haproxy-{n}.log"));
        let mut command = Command::new(&self.options.haproxy);
        command
            .arg("-db")
            .arg("-f")
            .arg(&self.options.haproxy_config)
            .env("KIBAN_LB_BIND", format!("127.0.0.1:{port}"))
            .env("KIBAN_LB_CA", &self.pki.tls.client_ca)
            .env("KIBAN_LB_SNI", "localhost")
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            .kill_on_drop(true);
        for slot in 0..API_PROCESSES_MAX {
            let address = match apis.get(slot).and_then(|api| api.address) {
                Some(address) if slot < n => address.to_string(),
                _ => format!("127.0.0.1:{CLOSED_PORT}"),
            };
            command.env(format!("KIBAN_API_{}", slot + 1), address);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} (is haproxy installed?)",
                self.options.haproxy
            )
        })?;
        let pid = child.id().context("haproxy exited at once")?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let haproxy = Haproxy {
            child,
            pid,
            address,
            log: log.clone(),
            servers: n,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let down = (n + 1..=API_PROCESSES_MAX)
                .all(|slot| text.contains(&format!("kiban_api/api{slot} is DOWN")));
            let listening = tokio::net::TcpStream::connect(address).await.is_ok();
            if down && listening {
                return Ok(haproxy);
            }
            if Instant::now() > deadline {
                bail!("HAProxy did not start or mark the unused servers down:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running HAProxy.
struct Haproxy {
    child: Child,
    pid: u32,
    address: SocketAddr,
    log: PathBuf,
    /// Its servers in use (`api1` … `apiN`).
    servers: usize,
}

impl Haproxy {
    /// How often its health checks took a server in use out so far
    /// (`/readyz` failed twice: on a loaded machine the writer's ping can
    /// take longer than its 1 s).
    fn taken_out(&self) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        (1..=self.servers)
            .map(|slot| {
                text.matches(&format!("kiban_api/api{slot} is DOWN"))
                    .count()
            })
            .sum()
    }

    /// Fails unless every failed request of `generator` can be put down to
    /// a server taken out by the health checks (its connections are closed:
    /// `on-marked-down shutdown-sessions`).
    fn check_errors(&self, generator: &Generator, what: &str) -> anyhow::Result<()> {
        if generator.errors() > 0 && self.taken_out() == 0 {
            bail!(
                "{} requests failed {what}, and HAProxy took no server out (first: {})",
                generator.errors(),
                generator.first_error().unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A running `kiban serve` (this very binary), killed when dropped.
struct ServeProcess {
    name: String,
    child: Child,
    pid: u32,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
    /// An API process's address, once its banner said it.
    address: Option<SocketAddr>,
}

impl ServeProcess {
    async fn start(cluster: &Cluster, name: &str, args: &[&str]) -> anyhow::Result<ServeProcess> {
        let log = cluster.dir.join(format!("{name}.log"));
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(cluster.dir.join(name))
            .env("KIBAN_DATABASE_URL", &cluster.database_url)
            .env("KIBAN_NATS_URL", &cluster.nats_url)
            // The engine signs no checkpoints (no platform key here).
            .env("KIBAN_CHECKPOINT_EVERY", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start kiban serve")?;
        let pid = child.id().context("kiban serve exited at once")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(ServeProcess {
            name: name.to_owned(),
            child,
            pid,
            stdout,
            log,
            address: None,
        })
    }

    async fn wait_for_line(&mut self, wanted: &str) -> anyhow::Result<String> {
        let found = tokio::time::timeout(Duration::from_secs(START_TIMEOUT_S), async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                if line.contains(wanted) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => Ok(line),
            _ => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} did not print {wanted:?}; its log ends:\n{}",
                    self.name,
                    tail.join("\n")
                )
            }
        }
    }

    /// The API's address from the banner, once it serves.
    async fn wait_for_api(&mut self) -> anyhow::Result<SocketAddr> {
        let line = self.wait_for_line("API: https://").await?;
        self.wait_for_line("Ctrl-C to stop").await?;
        line.strip_prefix("API: https://")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .context("the banner names the API address")
    }

    async fn kill_9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `kiban bench cluster`: runs and prints the report (and the JSON line).
pub async fn run_cli(
    options: ClusterBenchOptions,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    crate::report::print_report(&bench_cluster(options).await?, json)
}
