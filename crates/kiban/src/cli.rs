//! The command-line surface (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default store: an SQLite file under `./kiban-data`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./kiban-data/kiban.db";

/// kiban — the event-sourced workflow engine of the long-term-care
/// information platform (介護情報基盤).
#[derive(Debug, Parser)]
#[command(name = "kiban", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). `KIBAN_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The event store: `sqlite://path/to/kiban.db` (default, created if
    /// missing) or `postgres://user@host:port/database`.
    #[arg(long, env = "KIBAN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the store and serve until Ctrl-C (サーバー起動).
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// NATS server(s) with JetStream for ingest and the outbox relay,
        /// e.g. `nats://127.0.0.1:4222`. Without it, the in-process bus.
        #[arg(long, env = "KIBAN_NATS_URL")]
        nats_url: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        /// Size limit of the KIBAN_EVENTS stream in bytes (must fit the NATS
        /// server's max_file_store).
        #[arg(long, env = "KIBAN_EVENTS_MAX_BYTES", default_value_t = kiban_bus::streams::EVENTS_MAX_BYTES)]
        events_max_bytes: i64,
        /// Replicas of the JetStream streams (3 on a three-node cluster).
        #[arg(long, env = "KIBAN_STREAM_REPLICAS", default_value_t = 1)]
        stream_replicas: usize,
    },
    /// Append events given as JSON to one stream (イベント追記).
    ///
    /// The input is one event object or an array of them, with the fields
    /// `event_type`, `payload` and optionally `event_id` (UUID; a v7 is made
    /// when absent), `schema_version` (default 1), `occurred_at` (default
    /// now), `actor` (default `system:cli`), `correlation_id`, `causation_id`.
    Append {
        #[command(flatten)]
        store: StoreArgs,
        /// The stream, `kind/id`.
        #[arg(long)]
        stream: String,
        /// `any`, `no-stream`, or the stream's current version.
        #[arg(long, default_value = "any")]
        expected_version: String,
        /// A JSON file, or `-` for standard input.
        input: PathBuf,
    },
    /// Print recorded events as JSON lines (イベント読出し).
    Read {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this stream (`kind/id`); all streams when absent.
        #[arg(long)]
        stream: Option<String>,
        /// First position (or version, with --stream) to print, from 1.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most events to print.
        #[arg(long, default_value_t = 1000)]
        max: u64,
        /// Keep printing new events as they are committed (all streams only).
        #[arg(long, conflicts_with = "stream")]
        follow: bool,
    },
    /// Verify the hash chain (改ざん検証) and name the first broken position
    /// (an alias of `kiban audit verify`).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// First position to verify.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position to verify (the head when absent).
        #[arg(long)]
        to: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A country-scale workload through the real ingest path (全国規模の
    /// シミュレーション): deterministic for a seed, bounded memory, resumable.
    Simulate {
        #[command(flatten)]
        store: StoreArgs,
        /// NATS JetStream for the municipal messages; without it, the
        /// in-process bus.
        #[arg(long, env = "KIBAN_NATS_URL")]
        nats_url: Option<String>,
        /// Insurers (保険者).
        #[arg(long, default_value_t = 1_571)]
        insurers: u64,
        /// Insured persons with care needs.
        #[arg(long, default_value_t = 7_000_000)]
        persons: u64,
        /// Care offices (介護事業所).
        #[arg(long, default_value_t = 250_000)]
        offices: u64,
        /// Years simulated.
        #[arg(long, default_value_t = 1)]
        years: u32,
        /// The seed: the same seed gives the same history.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The first day (YYYY-MM-DD, on or after the platform's start);
        /// by default the platform's start, 2026-04-01.
        #[arg(long)]
        start: Option<chrono::NaiveDate>,
        /// Persons planned and sent together.
        #[arg(long, default_value_t = 2_000)]
        chunk: u64,
        /// The checkpoint of a resumable run.
        #[arg(long, default_value = "./kiban-data/simulate.checkpoint.json")]
        checkpoint: PathBuf,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Publish status messages as a municipality and wait for their
    /// receipts (保険者として送信).
    ///
    /// The input is one message, a JSON array of them, or JSON lines, in the
    /// schema of docs/integration.md (`event_id` is filled in when absent).
    /// Prints each receipt as a JSON line; exits 5 when any message was
    /// rejected or got no receipt in time.
    Emit {
        /// The municipality's insurer number (保険者番号, 6 digits).
        #[arg(long)]
        insurer: String,
        /// The NATS server kiban ingests from.
        #[arg(long, env = "KIBAN_NATS_URL", default_value = crate::serving::DEFAULT_NATS_URL)]
        nats_url: String,
        /// Seconds to wait for the receipts after the last publish.
        #[arg(long, default_value_t = kiban::clients::RECEIPT_TIMEOUT_SECS)]
        timeout: u64,
        /// A JSON file, or `-` for standard input.
        input: PathBuf,
    },
    /// Print an office's live updates (事業所の更新通知) as JSON lines.
    Subscribe {
        /// The office number (介護保険事業所番号, 10 digits).
        #[arg(long)]
        office: String,
        /// The NATS server kiban routes office updates to.
        #[arg(long, env = "KIBAN_NATS_URL", default_value = crate::serving::DEFAULT_NATS_URL)]
        nats_url: String,
        /// One readable line per update instead of JSON.
        #[arg(long)]
        pretty: bool,
        /// Stop after this many updates (default: until Ctrl-C).
        #[arg(long)]
        max: Option<u64>,
    },
    /// Play a small town through a compressed month on the embedded system
    /// (デモ), then keep serving the API until Ctrl-C.
    Demo {
        /// Plain output without colours or pacing, and exit after the story
        /// instead of serving on.
        #[arg(long)]
        script: bool,
        /// No pauses between the steps of the story.
        #[arg(long)]
        fast: bool,
        /// Use NATS JetStream instead of the in-process bus.
        #[arg(long, env = "KIBAN_NATS_URL")]
        nats_url: Option<String>,
        /// The event store (default: a fresh SQLite file in the data directory).
        #[arg(long)]
        database_url: Option<String>,
        /// Where the API listens.
        #[arg(long, default_value = kiban::system::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Certificates and the default database (default: a fresh
        /// temporary directory, removed at exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Audit (監査): verify the chain, signed checkpoints (docs/audit.md).
    Audit(crate::audit::AuditArgs),
    /// Replay one aggregate up to a moment (再生): timeline and derived state.
    Replay(crate::replay::ReplayArgs),
    /// Benchmarks (not tests): measured figures go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// Administration (管理): staff accounts of the office web screen.
    Admin {
        #[command(subcommand)]
        admin: crate::staff::AdminCommand,
    },
    /// The My Number card at the office terminal (マイナンバーカード).
    #[cfg(feature = "pcsc")]
    Card {
        #[command(subcommand)]
        card: crate::card::CardCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append throughput and latency, with the naive and raw baselines
    /// measured in the same run on the same database.
    Append {
        /// Which backend to measure.
        #[arg(long, value_enum)]
        backend: Backend,
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
        backend: Backend,
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
    /// Read, verify and rebuild every projection from a log of synthetic
    /// workflow events (再生): events/s per phase and memory.
    Replay(crate::bench_replay::ReplayArgs),
}

/// The HTTPS API of `kiban serve`.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Where the HTTPS API listens.
    #[arg(long, env = "KIBAN_LISTEN", default_value = kiban::system::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// The server certificate chain (PEM). With --tls-key and --client-ca;
    /// without all three, development certificates under <data dir>/certs.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The platform CA that issues client certificates (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
    /// Development certificates and checkpoints live here.
    #[arg(long, env = "KIBAN_DATA_DIR", default_value = kiban::system::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// A JPKI user-authentication CA certificate (利用者証明用CA, PEM or
    /// DER) trusted for My Number card consent; repeat for several. With
    /// --card-crl; without both, `POST /v1/consents/card` answers 503.
    #[arg(long, requires = "card_crl", value_name = "FILE")]
    pub card_ca: Vec<PathBuf>,
    /// The CA's certificate revocation list (DER), read at every check so
    /// that a refreshed file takes effect at once.
    #[arg(long, requires = "card_ca", value_name = "FILE")]
    pub card_crl: Option<PathBuf>,
}
