//! The command-line surface: the subcommands and where each goes. Each
//! subcommand's arguments and its `run` live in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kiban_lab::cli as lab;

use crate::{audit, bus, log, replay, serve, staff};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the store and serve until Ctrl-C (サーバー起動).
    Serve(serve::ServeArgs),
    /// Append events given as JSON to one stream (イベント追記).
    ///
    /// The input is one event object or an array of them, with the fields
    /// `event_type`, `payload` and optionally `event_id` (UUID; a v7 is made
    /// when absent), `schema_version` (default 1), `occurred_at` (default
    /// now), `actor` (default `system:cli`), `correlation_id`, `causation_id`.
    Append(log::AppendArgs),
    /// Print recorded events as JSON lines (イベント読出し).
    Read(log::ReadArgs),
    /// Verify the hash chain (改ざん検証) and name the first broken position
    /// (an alias of `kiban audit verify`).
    Verify(audit::VerifyArgs),
    /// A country-scale workload through the real ingest path (全国規模の
    /// シミュレーション): deterministic for a seed, bounded memory, resumable.
    Simulate(lab::SimulateArgs),
    /// Publish status messages as a municipality and wait for their
    /// receipts (保険者として送信).
    ///
    /// The input is one message, a JSON array of them, or JSON lines, in the
    /// schema of docs/integration.md (`event_id` is filled in when absent).
    /// Prints each receipt as a JSON line; exits 5 when any message was
    /// rejected or got no receipt in time.
    Emit(bus::EmitArgs),
    /// Print an office's live updates (事業所の更新通知) as JSON lines.
    Subscribe(bus::SubscribeArgs),
    /// Play a small town through a compressed month on the embedded system
    /// (デモ), then keep serving the API until Ctrl-C.
    Demo(lab::DemoArgs),
    /// Audit (監査): verify the chain, signed checkpoints (docs/audit.md).
    Audit(audit::AuditArgs),
    /// Replay one aggregate up to a moment (再生): timeline and derived state.
    Replay(replay::ReplayArgs),
    /// Benchmarks (not tests): measured figures go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        bench: lab::BenchCommand,
    },
    /// Administration (管理): staff accounts of the office web screen.
    Admin {
        #[command(subcommand)]
        admin: staff::AdminCommand,
    },
    /// The My Number card at the office terminal (マイナンバーカード).
    #[cfg(feature = "pcsc")]
    Card {
        #[command(subcommand)]
        card: crate::card::CardCommand,
    },
}

/// Runs a subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Append(args) => log::append(args).await,
        Command::Read(args) => log::read(args).await,
        Command::Verify(args) => audit::verify_command(args).await,
        Command::Simulate(args) => lab::simulate(args).await,
        Command::Emit(args) => bus::emit(args).await,
        Command::Subscribe(args) => bus::subscribe(args).await,
        Command::Demo(args) => lab::demo(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Bench { bench } => lab::bench(bench).await,
        Command::Admin { admin } => staff::run(admin).await,
        #[cfg(feature = "pcsc")]
        Command::Card { card } => crate::card::run(card).await,
    }
}
