//! Argument groups and helpers several subcommands share. A leaf module: it
//! imports nothing of this crate, so the subcommand modules that use it
//! form no cycle.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use clap::Args;

/// The default store: an SQLite file under `./kiban-data`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = kiban_lab::cli::DEFAULT_DATABASE_URL;

/// Where `kiban emit` and `kiban subscribe` find NATS by default.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The event store.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The event store: `sqlite://path/to/kiban.db` (default, created if
    /// missing) or `postgres://user@host:port/database`.
    #[arg(long, env = "KIBAN_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// A file's text, or standard input's for `-`.
pub fn read_input(path: &Path) -> anyhow::Result<String> {
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

/// Exit code for an append the store refused (nothing was written).
pub const EXIT_REFUSED: u8 = 3;

/// An append refused, by the store or because the input makes no append:
/// the error behind [`EXIT_REFUSED`]. Only `kiban append` raises it, so that
/// another command meeting the same store error (a `read` with a database
/// URL of no known kind) exits 1, as README "Exit codes" says.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; nothing was written", self.0)
    }
}

impl std::error::Error for Refused {}
/// Exit code for a hash chain that does not verify.
pub const EXIT_CHAIN_BROKEN: u8 = 4;
/// Exit code of `kiban emit` when a message was rejected or got no receipt.
pub const EXIT_NOT_RECORDED: u8 = 5;
/// Exit code of `kiban emit --check` when a message does not match its
/// schema.
pub const EXIT_INVALID_MESSAGES: u8 = 7;
