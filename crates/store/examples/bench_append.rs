//! Runs [`kiban_store::bench::bench_append`] until `kiban bench append` is
//! wired in the binary:
//!
//! ```text
//! cargo run --release -p kiban-store --example bench_append -- \
//!     postgres://postgres@127.0.0.1:55432/postgres WRITERS BATCH EVENTS [--json]
//! cargo run --release -p kiban-store --example bench_append -- \
//!     sqlite:///tmp WRITERS BATCH EVENTS [--json]
//! ```

use kiban_store::bench::{AppendBenchOptions, BenchBackend, bench_append};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_append (postgres://…|sqlite://DIR) WRITERS BATCH EVENTS [--json]";
    let [target, writers, batch, events, rest @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let backend = match target.strip_prefix("sqlite://") {
        Some(directory) => BenchBackend::Sqlite {
            directory: directory.into(),
        },
        None => BenchBackend::Postgres {
            server_url: target.clone(),
        },
    };
    let report = bench_append(AppendBenchOptions {
        backend,
        writers: writers.parse()?,
        batch: batch.parse()?,
        events: events.parse()?,
    })
    .await?;
    if rest.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
