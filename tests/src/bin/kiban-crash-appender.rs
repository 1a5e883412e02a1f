//! `kiban-crash-appender URL RUN TASKS`: the child process of the crash-safety
//! suite. Opens the store at URL and appends from TASKS concurrent tasks,
//! forever, the events `kiban_tests::crash::append_events` describes; after
//! each acknowledged append it prints `ack RUN TASK SEQ FIRST LAST` and
//! flushes, so every line the suite reads is an append the store promised to
//! keep. The suite ends it with SIGKILL.
//!
//! Exit codes: 2 for bad arguments, 3 when the store cannot be opened, 4 when
//! an append fails with an error that retrying cannot fix.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use kiban_events::ExpectedVersion;
use kiban_store::{Error, Store, StoreOptions};
use kiban_tests::crash::{Ack, append_events, stream};

/// Pause before retrying an append another process's lingering writer lock
/// refused: short, because the lock goes as soon as the server notices the
/// killed writer's connection closed.
const RETRY_PAUSE_MS: u64 = 10;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(Ok(run)), Some(Ok(tasks))) = (
        args.get(1),
        args.get(2).map(|a| a.parse::<u32>()),
        args.get(3).map(|a| a.parse::<u32>()),
    ) else {
        eprintln!("usage: kiban-crash-appender URL RUN TASKS");
        return ExitCode::from(2);
    };
    let store = match Store::open(url, StoreOptions::default()).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot open {url}: {error}");
            return ExitCode::from(3);
        }
    };
    let mut workers = tokio::task::JoinSet::new();
    for task in 0..tasks {
        workers.spawn(append_forever(store.clone(), run, task));
    }
    while let Some(outcome) = workers.join_next().await {
        if let Ok(Err(error)) = outcome {
            eprintln!("append failed: {error}");
            return ExitCode::from(4);
        }
    }
    ExitCode::SUCCESS
}

async fn append_forever(store: Store, run: u32, task: u32) -> Result<(), Error> {
    let stream = stream(run, task);
    let mut version = 0;
    for seq in 0.. {
        let events = append_events(run, task, seq);
        let result = loop {
            match store
                .append(&stream, ExpectedVersion::Exact(version), events.clone())
                .await
            {
                Ok(result) => break result,
                Err(Error::NotWriter(_) | Error::Unavailable(_) | Error::Database(_)) => {
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                }
                Err(error) => return Err(error),
            }
        };
        version = result.next_expected_version;
        let ack = Ack {
            run,
            task,
            seq,
            first_position: result.first_position,
            last_position: result.last_position,
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", ack.line());
        let _ = stdout.flush();
    }
    Ok(())
}
