//! What every benchmark shares: where it runs and how it prints its report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use kiban_store::scratch::ScratchBackend;

/// Which database a benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Where a benchmark runs, from its `--backend`, `--database-url` and
/// `--directory`.
pub fn bench_backend(
    backend: Backend,
    database_url: Option<String>,
    directory: PathBuf,
) -> anyhow::Result<ScratchBackend> {
    Ok(match backend {
        Backend::Postgres => ScratchBackend::Postgres {
            server_url: database_url
                .context("--backend postgres needs --database-url (or KIBAN_BENCH_DATABASE_URL)")?,
        },
        Backend::Sqlite => {
            std::fs::create_dir_all(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            ScratchBackend::Sqlite { directory }
        }
    })
}

/// Prints a benchmark's report, then (with `--json`) the same as one JSON
/// line, the last line of the output.
pub fn print_report(
    report: &(impl std::fmt::Display + serde::Serialize),
    json: bool,
) -> anyhow::Result<ExitCode> {
    println!("{report}");
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(ExitCode::SUCCESS)
}
