//! `kiban`: the command line. It parses arguments and dispatches: the
//! system starts through `kiban-system`, the demo, the simulation and the
//! benchmarks run in `kiban-lab`; everything worth testing lives in those
//! crates.
//!
//! Layout: `cli.rs` is the surface (the subcommands and where each goes);
//! each subcommand module owns its clap arguments and its `run`; `args.rs`
//! holds what several share (a leaf: it imports nothing of this crate, so
//! the modules form no cycle). The lab's subcommands (`demo`, `simulate`,
//! `bench`) bring their arguments from `kiban_lab::cli`.
//!
//! Exit codes (also in README.md):
//! - `0` success;
//! - `1` an error (the message says what);
//! - `2` a usage error (clap);
//! - `3` `kiban append` refused: conflict, duplicate id, invalid input — nothing written;
//! - `4` the hash chain does not verify;
//! - `5` `kiban emit`: a message was rejected or got no receipt in time;
//! - `6` a simulation interrupted (Ctrl-C); the same command resumes it.

mod args;
mod audit;
mod bus;
#[cfg(feature = "pcsc")]
mod card;
mod cli;
mod forget;
mod log;
mod replay;
mod serve;
mod staff;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kiban: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kiban: {error:#}");
            exit_code_for(&error)
        }
    }
}

/// Maps an error to its documented exit code.
fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<args::Refused>().is_some() {
        ExitCode::from(args::EXIT_REFUSED)
    } else {
        ExitCode::FAILURE
    }
}

/// Logs go to stderr, so that JSON on stdout stays machine-readable. They
/// carry no personal data: events are logged by position and type only.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,kiban=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KIBAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal, not for a log file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
