//! Crash safety: a child process appends from several tasks and is killed
//! with SIGKILL at random moments; after each kill the store is reopened and
//! everything the child was told is committed must be there, whole.

use std::collections::{BTreeMap, HashMap};

use kiban_events::{EventId, RecordedEvent};
use kiban_store::{Store, VerifyReport};
use kiban_tests::crash::{Ack, append_events};
use kiban_tests::{Backend, TestDb, bounded};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Kill rounds per backend.
const ROUNDS: u32 = 4;
/// Concurrent appending tasks in the child.
const TASKS: u32 = 8;
/// The seed of the kill moments, fixed so a failure can be replayed.
const SEED: u64 = 0x6b69_6261_6e00_0003;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_of_the_writer_process() {
    survives_sigkill(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_of_the_writer_process() {
    survives_sigkill(Backend::Sqlite).await;
}

async fn survives_sigkill(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut acknowledged = Vec::new();
    for run in 0..ROUNDS {
        let wanted = rng.gen_range(1..80);
        acknowledged.extend(run_and_kill(&db, run, wanted).await);
        let store = db.open().await;
        check(&store, &acknowledged).await;
        store.close().await;
    }
}

/// Starts the child, waits for `wanted` acknowledged appends, kills it, and
/// returns every append it acknowledged (including those printed after the
/// `wanted`th and before the kill landed).
async fn run_and_kill(db: &TestDb, run: u32, wanted: usize) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiban-crash-appender"))
        .args([db.url(), &run.to_string(), &TASKS.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut acks = Vec::new();
    while acks.len() < wanted {
        let line = bounded("an acknowledged append", lines.next_line())
            .await
            .expect("read the child's output")
            .unwrap_or_else(|| panic!("the child exited early: {:?}", child.try_wait()));
        acks.push(Ack::parse(&line).unwrap_or_else(|| panic!("bad line {line:?}")));
    }
    child.start_kill().expect("SIGKILL the child");
    bounded("the child's end", child.wait())
        .await
        .expect("wait");
    while let Some(line) = lines.next_line().await.expect("read the rest") {
        acks.push(Ack::parse(&line).unwrap_or_else(|| panic!("bad line {line:?}")));
    }
    acks
}

async fn check(store: &Store, acknowledged: &[Ack]) {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = store
            .read_all(all.len() as u64 + 1, 1000)
            .await
            .expect("read");
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.position, i as u64 + 1, "gapless positions");
    }
    let by_id: HashMap<EventId, &RecordedEvent> = all.iter().map(|e| (e.event_id, e)).collect();
    for ack in acknowledged {
        let stream = kiban_tests::crash::stream(ack.run, ack.task);
        let events = append_events(ack.run, ack.task, ack.seq);
        assert_eq!(
            ack.last_position - ack.first_position + 1,
            events.len() as u64
        );
        for (offset, event) in events.iter().enumerate() {
            let stored = by_id
                .get(&event.event_id)
                .unwrap_or_else(|| panic!("acknowledged {ack:?} lost event {offset}"));
            assert!(stored.has_same_content(&stream, event), "{ack:?} changed");
            assert_eq!(stored.position, ack.first_position + offset as u64);
        }
    }
    // Every append is whole: its events carry `count`, and all are present.
    let mut appends: BTreeMap<(u64, u64, u64), (usize, u64)> = BTreeMap::new();
    for event in &all {
        let payload: serde_json::Value = event.payload.parse().expect("JSON");
        let field = |name: &str| payload[name].as_u64().expect("a number");
        let entry = appends
            .entry((field("run"), field("task"), field("seq")))
            .or_insert((0, field("count")));
        entry.0 += 1;
    }
    eprintln!(
        "after the kill: {} appends acknowledged, {} events in {} appends stored",
        acknowledged.len(),
        all.len(),
        appends.len()
    );
    for (append, (present, count)) in appends {
        assert_eq!(present as u64, count, "append {append:?} is partial");
    }
    match store.verify(1, None).await.expect("verify") {
        VerifyReport::Verified { events, .. } => assert_eq!(events, all.len() as u64),
        broken => panic!("the chain is broken after a crash: {broken:?}"),
    }
}
