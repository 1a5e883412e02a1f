//! The lab's subcommands as the `kiban` binary offers them — `kiban demo`,
//! `kiban simulate`, `kiban bench append|ingest|api|replay`: their arguments
//! (clap) and how each runs. They live in the lab, beside the programs they
//! configure, so that a flag added to a benchmark is one change in one crate;
//! the binary only dispatches to them. Progress goes to stderr, reports to
//! stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::{bench_backend, print_report};
use clap::{Args, Subcommand, ValueEnum};

/// Exit code for a simulation stopped by Ctrl-C (run it again to resume).
pub const EXIT_INTERRUPTED: u8 = 6;

/// The default store of `kiban simulate`: an SQLite file under
/// `./kiban-data`, created on first use (the binary's default too).
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./kiban-data/kiban.db";

/// Which database a benchmark measures.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Postgres,
    Sqlite,
}

impl From<BackendArg> for crate::report::Backend {
    fn from(backend: BackendArg) -> Self {
        match backend {
            BackendArg::Postgres => Self::Postgres,
            BackendArg::Sqlite => Self::Sqlite,
        }
    }
}

/// `kiban demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Plain output without colours or pacing, and exit after the story
    /// instead of serving on.
    #[arg(long)]
    pub script: bool,
    /// No pauses between the steps of the story.
    #[arg(long)]
    pub fast: bool,
    /// Use NATS JetStream instead of the in-process bus.
    #[arg(long, env = "KIBAN_NATS_URL")]
    pub nats_url: Option<String>,
    /// The event store (default: a fresh SQLite file in the data directory).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Where the API listens.
    #[arg(long, default_value = kiban_system::config::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Certificates and the default database (default: a fresh
    /// temporary directory, removed at exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `kiban simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The event store: `sqlite://path/to/kiban.db` (default, created if
    /// missing) or `postgres://user@host:port/database`.
    #[arg(long, env = "KIBAN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// NATS JetStream for the municipal messages; without it, the
    /// in-process bus.
    #[arg(long, env = "KIBAN_NATS_URL")]
    pub nats_url: Option<String>,
    /// Insurers (保険者).
    #[arg(long, default_value_t = 1_571)]
    pub insurers: u64,
    /// Insured persons with care needs.
    #[arg(long, default_value_t = 7_000_000)]
    pub persons: u64,
    /// Care offices (介護事業所).
    #[arg(long, default_value_t = 250_000)]
    pub offices: u64,
    /// Years simulated.
    #[arg(long, default_value_t = 1)]
    pub years: u32,
    /// The seed: the same seed gives the same history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The first day (YYYY-MM-DD, on or after the platform's start);
    /// by default the platform's start, 2026-04-01.
    #[arg(long)]
    pub start: Option<chrono::NaiveDate>,
    /// Persons planned and sent together.
    #[arg(long, default_value_t = 2_000)]
    pub chunk: u64,
    /// The checkpoint of a resumable run.
    #[arg(long, default_value = "./kiban-data/simulate.checkpoint.json")]
    pub checkpoint: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append throughput and latency, with the naive and raw baselines
    /// measured in the same run on the same database.
    Append {
        /// Which backend to measure.
        #[arg(long, value_enum)]
        backend: BackendArg,
        /// postgres: a server URL on which the benchmark may create (and
        /// drops afterwards) a database; sqlite: ignored.
        #[arg(long, env = "KIBAN_BENCH_DATABASE_URL")]
        database_url: Option<String>,
        /// sqlite: the directory for the benchmark's fresh database file.
        #[arg(long, default_value = "./kiban-data/bench")]
        directory: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Events per append.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Events in all.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Municipal messages through NATS JetStream into the store: sustained
    /// ingest rate, publish→receipt and commit→office-subscriber latency,
    /// with the raw JetStream and store append ceilings measured in the
    /// same run.
    Ingest {
        /// Which backend the store uses.
        #[arg(long, value_enum, default_value = "postgres")]
        backend: BackendArg,
        /// postgres: a server URL on which the benchmark may create (and
        /// drops afterwards) databases; sqlite: ignored.
        #[arg(long, env = "KIBAN_BENCH_DATABASE_URL")]
        database_url: Option<String>,
        /// sqlite: the directory for the benchmark's fresh database files.
        #[arg(long, default_value = "./kiban-data/bench")]
        directory: PathBuf,
        /// A NATS server with JetStream; without it, the benchmark starts
        /// its own nats-server on a free loopback port.
        #[arg(long)]
        nats_url: Option<String>,
        /// Persons in the sustained phase (8 messages, 9 events each).
        #[arg(long, default_value_t = 5_000)]
        persons: u64,
        /// Length of each paced phase, in seconds.
        #[arg(long, default_value_t = 10)]
        paced_seconds: u64,
        /// The publish→receipt phase's rate as a percentage of the
        /// sustained rate.
        #[arg(long, default_value_t = 100)]
        receipt_load_percent: u64,
        /// The commit→subscriber phase's rate, events per second.
        #[arg(long, default_value_t = 1_000)]
        subscriber_events_per_s: u64,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// The query API over HTTPS with client certificates under a built-in
    /// load generator (loopback only): requests/s and p50/p99/p99.9, against
    /// a trivial handler behind the same TLS stack (the ceiling), then an
    /// open-loop run at a share of the measured rate.
    Api {
        /// postgres: a server URL on which the benchmark may create (and
        /// drops afterwards) a database; without it, a fresh SQLite file
        /// in --directory.
        #[arg(long, env = "KIBAN_BENCH_DATABASE_URL")]
        database_url: Option<String>,
        /// sqlite: the directory for the benchmark's fresh database file.
        #[arg(long, default_value = "./kiban-data/bench")]
        directory: PathBuf,
        /// Insured persons loaded (each with a decided certification).
        #[arg(long, default_value_t = 100_000)]
        persons: u64,
        /// Care offices (事業所), each with one terminal and a caseload.
        #[arg(long, default_value_t = 1_000)]
        offices: u64,
        /// Keep-alive HTTPS connections of the load generator.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds measured in each phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// The open-loop phase's rate as a percentage of the closed-loop
        /// API rate.
        #[arg(long, default_value_t = 50)]
        open_loop_percent: u64,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Many kiban processes, one history: one `--role engine`
    /// and 1, 2, 3 `--role api` processes behind HAProxy
    /// (`deploy/haproxy.cfg`), on PostgreSQL and NATS; logged reads and
    /// commands through the balancer, the engine's CPU per operation, and
    /// the writer's fail-over (docs/benchmarks.md).
    Cluster {
        /// The PostgreSQL server (a scratch database is created on it).
        #[arg(long, env = "KIBAN_BENCH_DATABASE_URL")]
        database_url: String,
        /// A nats-server with JetStream; without it a private one
        /// (`nats-server` on the PATH or `KIBAN_NATS_SERVER`).
        #[arg(long)]
        nats_url: Option<String>,
        /// The HAProxy binary.
        #[arg(long, default_value = "haproxy")]
        haproxy: String,
        /// The HAProxy configuration.
        #[arg(long, default_value = "deploy/haproxy.cfg")]
        haproxy_config: PathBuf,
        /// Insured persons loaded (each with a decided certification).
        #[arg(long, default_value_t = 10_000)]
        persons: u64,
        /// Care offices (事業所), each with one terminal and a caseload.
        #[arg(long, default_value_t = 200)]
        offices: u64,
        /// Keep-alive connections (one of four sends commands).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds measured per phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// The open-loop rate as a share of the closed-loop rate.
        #[arg(long, default_value_t = 50)]
        open_loop_percent: u64,
        /// Rounds of N = 1, 2, 3 API processes (the median per N is
        /// reported).
        #[arg(long, default_value_t = 3)]
        rounds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Read, verify and rebuild every projection from a log of synthetic
    /// workflow events (再生): events/s per phase and memory.
    Replay(ReplayArgs),
}

/// `kiban bench replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Which backend(s) to measure, one after the other.
    #[arg(long, value_enum, default_value = "both")]
    pub backend: ReplayBackend,
    /// postgres: a server URL on which the benchmark may create (and drops
    /// afterwards) a database; sqlite: ignored.
    #[arg(long, env = "KIBAN_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// sqlite: the directory for the benchmark's fresh database file.
    #[arg(long, default_value = "./kiban-data/bench")]
    pub directory: PathBuf,
    /// Events to write and replay (rounded up to whole persons of 13).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Print one JSON object per backend as the last lines.
    #[arg(long)]
    pub json: bool,
}

/// `--backend` of `kiban bench replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayBackend {
    Sqlite,
    Postgres,
    Both,
}

/// `kiban demo`.
pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::demo::run(crate::demo::DemoOptions {
        script: args.script,
        fast: args.fast,
        nats_url: args.nats_url,
        database_url: args.database_url,
        listen: args.listen,
        data_dir: args.data_dir,
    })
    .await
}

/// `kiban simulate`: runs until done or Ctrl-C (then exit code 6; the same
/// command resumes).
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let stop = tokio_util::sync::CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C: stopping after the current chunk");
            interrupt.cancel();
        }
    });
    let options = crate::simulate::SimulateOptions {
        database_url: args.database_url,
        nats_url: args.nats_url,
        insurers: args.insurers,
        persons: args.persons,
        offices: args.offices,
        years: args.years,
        seed: args.seed,
        start: args.start,
        chunk: args.chunk.max(1),
        checkpoint: args.checkpoint,
    };
    match crate::simulate::simulate(options, stop).await? {
        Some(report) => print_report(&report, args.json),
        None => Ok(ExitCode::from(EXIT_INTERRUPTED)),
    }
}

/// `kiban bench ...`.
pub async fn bench(bench: BenchCommand) -> anyhow::Result<ExitCode> {
    use crate::bench_append::{AppendBenchOptions, bench_append};
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
            let backend = bench_backend(backend.into(), database_url, directory)?;
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
            let options = crate::bench_ingest::IngestBenchOptions {
                backend: bench_backend(backend.into(), database_url, directory)?,
                nats_url,
                persons,
                paced_seconds,
                receipt_load_percent,
                subscriber_events_per_s,
            };
            print_report(&crate::bench_ingest::bench_ingest(options).await?, json)
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
            let backend = match database_url {
                Some(url) => bench_backend(BackendArg::Postgres.into(), Some(url), directory)?,
                None => bench_backend(BackendArg::Sqlite.into(), None, directory)?,
            };
            let options = crate::bench_api::ApiBenchOptions {
                backend,
                persons,
                offices,
                connections,
                duration_s: duration,
                open_loop_percent,
            };
            crate::bench_api::run(options, json).await
        }
        BenchCommand::Cluster {
            database_url,
            nats_url,
            haproxy,
            haproxy_config,
            persons,
            offices,
            connections,
            duration,
            open_loop_percent,
            rounds,
            json,
        } => {
            let options = crate::bench_cluster::ClusterBenchOptions {
                server_url: database_url,
                nats_url,
                haproxy,
                haproxy_config,
                persons,
                offices,
                connections,
                duration_s: duration,
                open_loop_percent,
                rounds,
            };
            crate::bench_cluster::run_cli(options, json).await
        }
        BenchCommand::Replay(args) => {
            use crate::report::Backend as Measured;
            let backends = match args.backend {
                ReplayBackend::Sqlite => vec![Measured::Sqlite],
                ReplayBackend::Postgres => vec![Measured::Postgres],
                ReplayBackend::Both => vec![Measured::Sqlite, Measured::Postgres],
            };
            crate::bench_replay::run(crate::bench_replay::ReplayRun {
                backends,
                database_url: args.database_url,
                directory: args.directory,
                events: args.events,
                json: args.json,
            })
            .await
        }
    }
}
