//! `kiban audit …` (監査): chain verification with progress, signed
//! checkpoints and their export. The work is in `kiban_store`; this is the
//! command line around it (docs/audit.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiban_store::{CheckpointCheck, PlatformKey, Store, VerifyRange, VerifyReport};
use kiban_system::{audit, open_store};

use crate::args::{EXIT_CHAIN_BROKEN, StoreArgs};

/// `kiban audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// Where the platform's checkpoint signing key is.
#[derive(Debug, Args, Clone)]
pub struct KeyArgs {
    /// The Ed25519 signing key file (64 hex digits). Default with SQLite:
    /// `platform-signing.key` beside the database, created if missing
    /// (development); required with PostgreSQL (production).
    #[arg(long, env = "KIBAN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain (改ざん検証): "verified N events, head hash H",
    /// or the first broken position and what is wrong. Progress on stderr.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// First position to verify.
        #[arg(long, default_value_t = 1, conflicts_with = "from_checkpoint")]
        from: u64,
        /// Last position to verify (the head when absent).
        #[arg(long)]
        to: Option<u64>,
        /// Start after the last signed checkpoint (at or before --to),
        /// trusting its signed hash instead of the stored one.
        #[arg(long)]
        from_checkpoint: bool,
        #[command(flatten)]
        key: KeyArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Signed checkpoints (署名付きチェックポイント).
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Verify up to the head and sign it now.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Print the checkpoint as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every checkpoint and the public key as JSON, for an outside party.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// The output file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an export against the store: every signature, and the whole
    /// chain passing through every signed hash (finds a rewrite that
    /// recomputed all hashes).
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// The export file.
        file: PathBuf,
        /// The public key you were given out of band (64 hex digits); the
        /// export's own key must equal it.
        #[arg(long)]
        public_key: Option<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify {
            store,
            from,
            to,
            from_checkpoint,
            key,
            json,
        } => {
            let platform = if from_checkpoint {
                Some(signing_key(&store.database_url, &key)?)
            } else {
                None
            };
            let store = open_store(&store.database_url).await?;
            let result = if let Some(platform) = platform {
                verify_from_checkpoint(&store, &platform, to, json).await
            } else {
                verify(&store, from, to, json).await
            };
            store.close().await;
            result
        }
        AuditCommand::Checkpoint { command } => checkpoint(command).await,
    }
}

/// `kiban verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// First position to verify.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Last position to verify (the head when absent).
    #[arg(long)]
    pub to: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiban verify` (an alias of `kiban audit verify`).
pub async fn verify_command(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store.database_url).await?;
    let result = verify(&store, args.from, args.to, args.json).await;
    store.close().await;
    result
}

async fn verify(store: &Store, from: u64, to: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
    let range = VerifyRange {
        from,
        to,
        ..VerifyRange::default()
    };
    let report = verify_range(store, &range).await?;
    print_report(&report, json)
}

async fn verify_from_checkpoint(
    store: &Store,
    key: &PlatformKey,
    to: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let head = store.head().await?.position;
    let bar = progress_bar(to.unwrap_or(head));
    let mut tick = |done: u64| bar.set_position(done);
    let (checkpoint, report) = store
        .verify_from_checkpoint(&key.public_key(), to, &mut tick)
        .await?;
    bar.finish_and_clear();
    match &checkpoint {
        Some(c) => eprintln!(
            "starting after the signed checkpoint at position {} (hash {})",
            c.position, c.hash
        ),
        None => eprintln!("no signed checkpoint yet: verifying from genesis"),
    }
    print_report(&report, json)
}

/// Verifies with a progress bar (events/s and ETA) on stderr.
async fn verify_range(store: &Store, range: &VerifyRange) -> anyhow::Result<VerifyReport> {
    let to = match range.to {
        Some(to) => to,
        None => store.head().await?.position,
    };
    let bar = progress_bar((to + 1).saturating_sub(range.from.max(1)));
    let mut tick = |done: u64| bar.set_position(done);
    let report = store.verify_with(range, &mut tick).await;
    bar.finish_and_clear();
    Ok(report?)
}

/// A bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}  (verifying 検証中)",
        )
        .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_report(report: &VerifyReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    match report {
        VerifyReport::Verified { events, head_hash } => {
            if !json {
                println!("verified {events} events, head hash {head_hash}");
            }
            Ok(ExitCode::SUCCESS)
        }
        VerifyReport::Broken {
            position,
            reason,
            events_verified,
        } => {
            if !json {
                println!(
                    "BROKEN at position {position} (改ざん検出): {} ({events_verified} events before it verified)",
                    serde_json::to_string(reason)?
                );
            }
            Ok(ExitCode::from(EXIT_CHAIN_BROKEN))
        }
    }
}

/// The platform key: `--signing-key`, or the development file beside an
/// SQLite database (created if missing).
fn signing_key(url: &str, key: &KeyArgs) -> anyhow::Result<PlatformKey> {
    kiban_system::config::signing_key(url, key.signing_key.as_deref())
}

async fn checkpoint(command: CheckpointCommand) -> anyhow::Result<ExitCode> {
    match command {
        CheckpointCommand::Create { store, key, json } => {
            let key = key.signing_key.as_deref();
            match audit::create_checkpoint(&store.database_url, key).await? {
                Some(checkpoint) if json => println!("{}", serde_json::to_string(&checkpoint)?),
                Some(checkpoint) => println!(
                    "checkpoint at position {}, hash {}, signed by {}",
                    checkpoint.position, checkpoint.hash, checkpoint.public_key
                ),
                None => println!("the store is empty: nothing to checkpoint"),
            }
            Ok(ExitCode::SUCCESS)
        }
        CheckpointCommand::Export { store, key, out } => {
            let key = key.signing_key.as_deref();
            let export = audit::export_checkpoints(&store.database_url, key).await?;
            let text = serde_json::to_string_pretty(&export)?;
            match out {
                Some(path) => std::fs::write(&path, format!("{text}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        CheckpointCommand::Check {
            store,
            file,
            public_key,
            json,
        } => {
            let export = audit::read_export(&file, public_key.as_deref())?;
            let store = open_store(&store.database_url).await?;
            let head = store.head().await?.position;
            let bar = progress_bar(head);
            let mut tick = |done: u64| bar.set_position(done);
            let outcome = store.check_export(&export, &mut tick).await;
            bar.finish_and_clear();
            store.close().await;
            let outcome = outcome?;
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            }
            match outcome {
                CheckpointCheck::Consistent {
                    checkpoints,
                    events_verified,
                    head_hash,
                } => {
                    if !json {
                        println!(
                            "consistent: {checkpoints} signed checkpoints, verified {events_verified} events, head hash {head_hash}"
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                CheckpointCheck::BadSignature { position } => {
                    if !json {
                        println!("BAD SIGNATURE on the checkpoint at position {position}");
                    }
                    Ok(ExitCode::from(EXIT_CHAIN_BROKEN))
                }
                CheckpointCheck::Broken(report) => print_report(&report, json),
            }
        }
    }
}
