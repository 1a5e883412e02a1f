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
    /// Audit (監査): verify the chain, signed checkpoints (docs/audit.md).
    Audit(crate::audit::AuditArgs),
    /// Replay one aggregate up to a moment (再生): timeline and derived state.
    Replay(crate::replay::ReplayArgs),
    /// Benchmarks (not tests): measured figures go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
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
}
