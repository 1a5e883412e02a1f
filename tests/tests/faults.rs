//! The fault suite: faults on a seeded schedule, several rounds per run,
//! against the real engine with its real deciders, each fault asserted to
//! have landed while work was in flight, and after every round the same
//! checks:
//!
//! - every acknowledged message is stored exactly once, at the positions its
//!   acknowledgement named, and nothing unacknowledged is stored;
//! - order within each person is preserved: each application's stream holds
//!   the workflow's facts in the order they were sent (the real deciders
//!   reject a fact out of order, so a reordering would also show as a
//!   rejection, which fails the round);
//! - positions are gapless and the hash chain verifies;
//! - the read models, kept live by the projections through the fault, are
//!   equal to a rebuild from scratch (no event applied twice or skipped).
//!
//! The seed is printed; `KIBAN_FAULT_SEED=<seed>` replays a run's schedule
//! (what is killed, and after how many acknowledgements).
//!
//! Faults (rounds per run):
//! - PostgreSQL killed under the engine and the projections (3 rounds, both
//!   ways each run): `kill -9` of the postmaster and every server process,
//!   or `pg_ctl stop -m immediate`, then a restart with crash recovery
//!   (asserted from the server log). The server is a private one this suite
//!   starts (in a temporary directory, on a free port), so that killing it
//!   disturbs no other test; its binaries come from `KIBAN_TEST_PG_BIN` (set
//!   by `scripts/test`) or the newest `/usr/lib/postgresql/*/bin`.
//! - A real `kiban serve` process (the built binary, ingesting from NATS with
//!   the real engine, relaying, projecting, running its timers) killed with
//!   SIGKILL and started again, or the nats-server killed and restarted, on
//!   PostgreSQL and on SQLite (3 rounds each, both faults each run); after
//!   each round also: `KIBAN_EVENTS` holds every event once in position order
//!   (the relay continued exactly after the kill).
//! - On a three-node NATS cluster (SQLite, 2 rounds): the node leading the
//!   ingest stream killed with SIGKILL (then restarted, and it must rejoin
//!   as a current replica), or `kiban serve` killed.
//! - The API over a stalled database (every PostgreSQL process stopped):
//!   503 `rate-limited` for the surplus, 504 `timeout` / 503 `unavailable`
//!   for the admitted; 503 when the database is gone; served again after.
//!
//! The fault lands while work is in flight: fewer acknowledgements (or
//! receipts) than messages had arrived when it struck, and the rest came
//! after it.
//!
//! Every wait is bounded; nothing asserts on timing. `kiban serve` is the
//! binary beside this test binary's directory (`target/debug/kiban`, which
//! `cargo nextest run --workspace` and scripts/test build) or
//! `KIBAN_TEST_KIBAN_BIN`.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiban_engine::Engine;
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_events::RecordedEvent;
use kiban_events::domain::certification::certification_stream;
use kiban_events::domain::insured::insured_stream;
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_projections::{Db, Projections};
use kiban_store::{Store, StoreOptions, VerifyReport};
use kiban_tests::bounded;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::process::Command;
use uuid::Uuid;

/// The insurer every message of the suite comes from.
const INSURER: &str = "131016";

/// Rounds of PostgreSQL faults per run.
const POSTGRES_ROUNDS: u64 = 3;

/// People whose whole certification each round records, and the tasks that
/// record them concurrently (each person's facts in order, by one task).
const PERSONS_PER_ROUND: usize = 24;
const WORKERS: usize = 6;

/// A failed ingest (the store unavailable) is retried after this pause, as
/// a municipality re-sends a message that got no receipt.
const RETRY_PAUSE_MS: u64 = 50;

/// The seed of this run: `KIBAN_FAULT_SEED`, or a fresh one. Printed, so
/// that a failing schedule can be replayed.
fn seed(suite: &str) -> u64 {
    let seed = match std::env::var("KIBAN_FAULT_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("KIBAN_FAULT_SEED={text:?} is not a number")),
        Err(_) => rand::random(),
    };
    eprintln!("{suite}: fault seed {seed} (replay with KIBAN_FAULT_SEED={seed})");
    seed
}

fn insurer() -> InsurerNumber {
    InsurerNumber::parse(INSURER).unwrap()
}

/// The first day of the suite's stories, 70 days before it started: from
/// the clock, since the platform refuses messages over two years old; fixed
/// for the process, so a message sent again is the same message.
static STORY_START: std::sync::LazyLock<DateTime<Utc>> =
    std::sync::LazyLock::new(|| crate::engine::recent_start(70));

/// The story's first day plus `days`.
fn day(days: i64) -> DateTime<Utc> {
    *STORY_START + chrono::Duration::days(days)
}

/// The event types of one application's whole workflow, in order.
const WORKFLOW: [&str; 8] = [
    "certification.filed",
    "certification.investigation_scheduled",
    "certification.investigation_completed",
    "certification.opinion_requested",
    "certification.opinion_received",
    "certification.primary_judgment_recorded",
    "certification.secondary_judgment_recorded",
    "certification.decided",
];

/// What a decision records on the person's own stream.
const CERTIFICATION_RECORDED: &str = "insured.certification_recorded";

/// The messages of one person's new application from filing to decision.
fn whole_certification(insured: &InsuredNumber) -> Vec<MunicipalMessage> {
    crate::engine::whole_certification_from(*STORY_START, insured)
}

/// The insured number of person `index` of round `round`.
fn person(round: u64, index: usize) -> InsuredNumber {
    InsuredNumber::parse(&format!("{:010}", round * 1_000 + index as u64 + 1)).unwrap()
}

/// An acknowledged message: its id and the positions its receipt named.
#[derive(Debug, Clone)]
struct Ack {
    message: Uuid,
    positions: Vec<u64>,
}

// --- A private PostgreSQL server -------------------------------------------------

/// A PostgreSQL server of this suite alone, in a temporary directory.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as the `postgres` user (initdb refuses root).
    as_postgres: bool,
}

/// The directory of PostgreSQL's server binaries.
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("KIBAN_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    candidates.sort_by_key(|bin| {
        bin.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop().expect(
        "no PostgreSQL server binaries: set KIBAN_TEST_PG_BIN or run scripts/test (the fault \
         suite starts its own server)",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `command` to its end (bounded) and panics with its output on failure.
async fn run(what: &str, command: &mut Command) {
    let output = bounded(what, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {:?}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

impl PrivatePostgres {
    async fn start() -> PrivatePostgres {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("kiban-faults-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        if as_postgres {
            run(
                "chown the server's directory to postgres",
                Command::new("chown").arg("postgres").arg(dir.path()),
            )
            .await;
        }
        let server = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        run(
            "initdb",
            server.command("initdb").arg("-D").arg(server.data()).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]),
        )
        .await;
        server.start_server().await;
        server
    }

    /// `program` of the server binaries, as the right user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the server (after a crash: with recovery) and waits until it
    /// accepts connections.
    async fn start_server(&self) {
        // fsync and synchronous_commit stay on: durability is what is tested.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let status = bounded(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.log())
                .args(["-w", "-t", "60", "start", "-o", &options])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap();
        assert!(
            status.status.success(),
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn postmaster(&self) -> u32 {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("the server is running");
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// `kill -9` of the postmaster and of every server process: what a
    /// machine losing power does to the server (the disk keeps what was
    /// fsynced).
    async fn kill_9(&self) {
        let postmaster = self.postmaster();
        let mut victims = vec![postmaster];
        victims.extend(children_of(postmaster));
        for pid in &victims {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        bounded("the server processes to die", async {
            while victims.iter().any(|pid| alive(*pid)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // The killed postmaster may stay a zombie where nothing reaps
        // orphans (a container's first process), and PostgreSQL takes a
        // zombie's pid in its lock files for a live server. After a real
        // crash no such process exists: remove the stale lock files, which
        // a reboot would leave meaningless.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        for name in [
            format!(".s.PGSQL.{}.lock", self.port),
            format!(".s.PGSQL.{}", self.port),
        ] {
            let _ = std::fs::remove_file(self.dir.path().join(name));
        }
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once,
    /// without a checkpoint; the next start recovers from the WAL.
    async fn stop_immediate(&self) {
        run(
            "pg_ctl stop -m immediate",
            self.command("pg_ctl").arg("-D").arg(self.data()).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ]),
        )
        .await;
    }

    /// How many crash recoveries the server log records.
    fn recoveries(&self) -> usize {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .matches("was not properly shut down; automatic recovery in progress")
            .count()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            // A test that failed while the server was stopped (SIGSTOP)
            // must not leave it frozen: it could not even quit.
            signal_all(self, "-CONT");
            let path = self.bin.join("pg_ctl");
            let mut command = if self.as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            } else {
                std::process::Command::new(path)
            };
            let _ = command
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .output();
        }
    }
}

// --- The checks after a round ----------------------------------------------------

/// Every event in the store, in position order.
async fn all_events(store: &Store) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = store.read_all(all.len() as u64 + 1, 1000).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The checks of the module comment, for the messages `acks` acknowledged
/// about `persons` (every person of every round so far).
async fn check_round(store: &Store, acks: &[Ack], persons: &[InsuredNumber], round: u64) {
    let all = all_events(store).await;
    for (index, event) in all.iter().enumerate() {
        assert_eq!(event.position, index as u64 + 1, "gapless positions");
    }
    // Every acknowledged message exactly once, where its receipt said.
    let mut by_id: HashMap<Uuid, Vec<&RecordedEvent>> = HashMap::new();
    for event in &all {
        by_id
            .entry(*event.event_id.as_uuid())
            .or_default()
            .push(event);
    }
    for ack in acks {
        let stored = by_id
            .get(&ack.message)
            .unwrap_or_else(|| panic!("round {round}: acknowledged message {} lost", ack.message));
        assert_eq!(
            stored.len(),
            1,
            "round {round}: {} stored twice",
            ack.message
        );
        assert_eq!(
            stored[0].position, ack.positions[0],
            "round {round}: {} not where its receipt said",
            ack.message
        );
        for position in &ack.positions {
            assert!(
                *position as usize <= all.len(),
                "{ack:?} names a missing position"
            );
        }
    }
    // Nothing else: each person's application holds its 8 facts in order,
    // the person's stream the decision recorded on them, and the store
    // nothing more.
    for insured in persons {
        let application = certification_stream(&insurer(), insured, 1);
        // (`kiban serve`'s timers add facts of their own, such as
        // `certification.deadline_reached`: only the municipality's count.)
        let facts: Vec<String> = store
            .read_stream(&application, 1, 100)
            .await
            .unwrap()
            .iter()
            .map(|event| event.event_type.to_string())
            .filter(|kind| WORKFLOW.contains(&kind.as_str()))
            .collect();
        assert_eq!(facts, WORKFLOW, "round {round}: {application} in order");
        let on_person = store
            .read_stream(&insured_stream(&insurer(), insured), 1, 100)
            .await
            .unwrap()
            .iter()
            .filter(|event| event.event_type.as_str() == CERTIFICATION_RECORDED)
            .count();
        assert_eq!(
            on_person, 1,
            "round {round}: the decision on the person once"
        );
    }
    // (`kiban serve` records events of its own at start, and its timers.)
    let ours = all
        .iter()
        .filter(|event| {
            WORKFLOW.contains(&event.event_type.as_str())
                || event.event_type.as_str() == CERTIFICATION_RECORDED
        })
        .count();
    assert_eq!(
        ours,
        persons.len() * (WORKFLOW.len() + 1),
        "nothing more stored"
    );
    assert_eq!(acks.len(), persons.len() * WORKFLOW.len());
    match store.verify(1, None).await.unwrap() {
        VerifyReport::Verified { events, .. } => assert_eq!(events, all.len() as u64),
        broken => panic!("round {round}: the chain is broken after the fault: {broken:?}"),
    }
}

/// The read models as `(projection, documents, index entries)`.
type Dump = Vec<(
    &'static str,
    Vec<(String, String)>,
    Vec<(String, String, String)>,
)>;

async fn dump(projections: &Projections) -> Dump {
    let mut out = Vec::new();
    for name in projections.names() {
        out.push((
            name,
            projections.db().dump(name).await.unwrap(),
            projections.db().dump_index(name).await.unwrap(),
        ));
    }
    out
}

/// The live read models (caught up with the store's head) equal a rebuild
/// of every projection from scratch.
async fn check_projections(projections: &Projections, store: &Store, round: u64) {
    let head = store.head().await.unwrap().position;
    bounded("the projections to catch up", projections.wait_for(head))
        .await
        .unwrap();
    let live = dump(projections).await;
    assert!(
        live.iter().any(|(_, documents, _)| !documents.is_empty()),
        "the read models hold documents"
    );
    let rebuilt_at = bounded("a rebuild", projections.rebuild_all())
        .await
        .unwrap();
    assert_eq!(rebuilt_at, head);
    let rebuilt = dump(projections).await;
    for ((name, documents, index), (_, rebuilt_documents, rebuilt_index)) in
        live.iter().zip(&rebuilt)
    {
        assert_eq!(
            documents, rebuilt_documents,
            "round {round}: {name} differs from a rebuild"
        );
        assert_eq!(
            index, rebuilt_index,
            "round {round}: {name}'s indexes differ from a rebuild"
        );
    }
}

// --- PostgreSQL killed under the engine ------------------------------------------

/// Records the whole certification of `persons` through `engine` from
/// [`WORKERS`] tasks, retrying a message until it is accepted; returns the
/// acknowledgements and counts them in `acked` as they come.
async fn record_all(
    engine: Arc<Engine<Store>>,
    persons: Vec<InsuredNumber>,
    acked: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
) -> Vec<Ack> {
    let queue = Arc::new(Mutex::new(persons));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (engine, queue, acks, acked, failures) = (
            engine.clone(),
            queue.clone(),
            acks.clone(),
            acked.clone(),
            failures.clone(),
        );
        workers.spawn(async move {
            loop {
                let Some(insured) = queue.lock().unwrap().pop() else {
                    return;
                };
                for message in whole_certification(&insured) {
                    let id = message.event_id;
                    let kind = message.kind.clone();
                    let positions = loop {
                        match engine.ingest(message.clone(), &insurer(), day(60)).await {
                            Ok(IngestOutcome::Accepted { positions, .. }) => break positions,
                            Ok(IngestOutcome::Rejected(rejection)) => {
                                panic!("{insured} {kind} rejected: {rejection:?}")
                            }
                            Err(_) => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                            }
                        }
                    };
                    acks.lock().unwrap().push(Ack {
                        message: id,
                        positions: positions.into_iter().collect(),
                    });
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    while let Some(outcome) = workers.join_next().await {
        outcome.expect("a worker failed");
    }
    Arc::try_unwrap(acks).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_during_appends_loses_nothing_and_applies_nothing_twice() {
    let seed = seed("postgres_killed_during_appends");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = PrivatePostgres::start().await;
    let store = Store::open(&server.url(), StoreOptions::default())
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(store.clone()));
    crate::projections::script::onboard_insurer(&engine, INSURER, false).await;
    let db = Db::open(&server.url()).await.unwrap();
    let projections = Projections::start(db, store.clone(), kiban_projections::models::all())
        .await
        .unwrap();
    let mut acks = Vec::new();
    let mut persons = Vec::new();
    let total = PERSONS_PER_ROUND * WORKFLOW.len();
    for round in 0..POSTGRES_ROUNDS {
        let fault_after = rng.gen_range(total / 10..total / 2);
        // Both ways every run (which comes first is the seed's).
        let kill_9 = seed.wrapping_add(round).is_multiple_of(2);
        let round_persons: Vec<_> = (0..PERSONS_PER_ROUND).map(|i| person(round, i)).collect();
        persons.extend(round_persons.iter().cloned());
        let acked = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let recording = tokio::spawn(record_all(
            engine.clone(),
            round_persons,
            acked.clone(),
            failures.clone(),
        ));
        bounded("acknowledgements before the fault", async {
            while acked.load(Ordering::SeqCst) < fault_after {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        if kill_9 {
            server.kill_9().await;
        } else {
            server.stop_immediate().await;
        }
        // The fault landed with work in flight: acknowledgements were still
        // to come (the workers run until every message is acknowledged).
        let at_fault = acked.load(Ordering::SeqCst);
        assert!(
            at_fault < total && !recording.is_finished(),
            "round {round}: the fault came after the work ({at_fault} of {total})"
        );
        server.start_server().await;
        let round_acks = bounded("the round's work", recording).await.unwrap();
        let failed = failures.load(Ordering::SeqCst);
        eprintln!(
            "round {round}: {} after {at_fault} of {total} acknowledgements; {failed} ingests failed (the server gone) and were retried",
            if kill_9 {
                "kill -9"
            } else {
                "pg_ctl stop -m immediate"
            }
        );
        assert!(
            round_acks.len() == total,
            "round {round}: every message acknowledged in the end"
        );
        acks.extend(round_acks);
        assert_eq!(
            server.recoveries(),
            round as usize + 1,
            "round {round}: the server ran crash recovery after each fault"
        );
        check_round(&store, &acks, &persons, round).await;
        check_projections(&projections, &store, round).await;
    }
    projections.stop().await;
    store.close().await;
}

// --- `kiban serve` killed during NATS ingest ---------------------------------------

/// Rounds of `kiban serve` kills and nats-server restarts per backend.
const SERVE_ROUNDS: u64 = 3;

/// Rounds on a three-node NATS cluster (SQLite).
const CLUSTER_ROUNDS: u64 = 2;

/// People per serve round (each with its 8 messages).
const SERVE_PERSONS_PER_ROUND: usize = 16;

/// After this long without a new receipt the municipality re-sends what
/// has none (docs/integration.md), longer than the ingest stream's
/// duplicate window so that a re-send is a new message.
const RECEIPT_IDLE_MS: u64 = 6_000;

/// The `kiban` binary: `KIBAN_TEST_KIBAN_BIN`, else beside this test binary's
/// directory (`target/<profile>/kiban`, built by `cargo nextest run
/// --workspace` and by scripts/test).
fn kiban_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KIBAN_TEST_KIBAN_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("kiban"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p kiban`; scripts/test builds the workspace) or set KIBAN_TEST_KIBAN_BIN",
        path.display()
    );
    path
}

/// A running `kiban serve` process.
struct ServeProcess {
    child: tokio::process::Child,
    /// The API's base URL, `https://127.0.0.1:<port>`.
    base: String,
}

impl ServeProcess {
    /// Starts `kiban serve` on `database_url` with NATS at `nats` (its URL
    /// and the stream replicas, [`Nats::serve_args`]; the in-process bus
    /// without) and waits for its banner.
    async fn start(
        database_url: &str,
        dir: &Path,
        nats: Option<(String, usize)>,
        run: u64,
    ) -> ServeProcess {
        use tokio::io::AsyncBufReadExt;
        let log = std::fs::File::create(dir.join(format!("serve-{run}.log"))).unwrap();
        let mut command = Command::new(kiban_binary());
        command
            .args(["serve", "--database-url", database_url, "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"]);
        if let Some((url, replicas)) = nats {
            // The harness's nats-server has 1 GB of file storage.
            command
                .args(["--nats-url", &url, "--events-max-bytes", "268435456"])
                .args(["--stream-replicas", &replicas.to_string()]);
        }
        // The platform's checkpoint signing key (required with PostgreSQL).
        let key = dir.join("platform-signing.key");
        if !key.exists() {
            std::fs::write(&key, hex::encode(rand::random::<[u8; 32]>())).unwrap();
        }
        let mut child = command
            .env("KIBAN_SIGNING_KEY", &key)
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("kiban serve starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        loop {
            let line = bounded("serve's banner", lines.next_line())
                .await
                .unwrap()
                .unwrap_or_else(|| {
                    panic!(
                        "kiban serve exited before its banner: {}",
                        std::fs::read_to_string(dir.join(format!("serve-{run}.log")))
                            .unwrap_or_default()
                    )
                });
            if let Some(rest) = line.strip_prefix("API: ") {
                base = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.starts_with("Ctrl-C to stop") {
                break;
            }
        }
        // Keep reading so that the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServeProcess {
            child,
            base: base.expect("the banner names the API address"),
        }
    }

    /// SIGKILL: no shutdown path runs.
    async fn kill_9(mut self) {
        self.child.start_kill().unwrap();
        let status = bounded("serve to die", self.child.wait()).await.unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    /// SIGINT, and the clean exit it must cause.
    async fn interrupt(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = bounded("serve to stop", self.child.wait()).await.unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

/// The wire form of a message.
fn wire(message: &MunicipalMessage) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": message.event_id,
        "kind": message.kind,
        "insurer": message.insurer,
        "insured": message.insured,
        "application": message.application,
        "occurred_at": message.occurred_at,
        "body": message.body,
    }))
    .unwrap()
}

/// Publishes `message` through JetStream until the stream acknowledges it
/// (so that each person's messages enter the stream in order).
async fn publish_in_order(context: &async_nats::jetstream::Context, message: &MunicipalMessage) {
    let subject = format!("kiban.ingest.{INSURER}.{}", message.kind);
    bounded("a publish acknowledgement", async {
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                kiban_bus::ingest::MSG_ID_HEADER,
                message.event_id.to_string().as_str(),
            );
            let sent = context
                .publish_with_headers(subject.clone(), headers, wire(message).into())
                .await;
            if let Ok(ack) = sent
                && ack.await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
        }
    })
    .await;
}

/// Runs `attempt` until it succeeds (bounded): a JetStream request may
/// time out while a cluster elects a new leader.
async fn retried<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    bounded(what, async {
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(error) => {
                    note_retry(what, &error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await
}

/// Says on stderr (shown for a failing test) why an attempt is repeated.
fn note_retry(what: &str, error: &impl std::fmt::Debug) {
    eprintln!("{what}: {error:?}; trying again");
}

/// Waits until `KIBAN_EVENTS` holds position `newest`, then checks that
/// message `n` of the stream is the event at position `n`: no gap, no
/// repeat, in order, across every kill of the relay's process.
async fn check_relayed(context: &async_nats::jetstream::Context, newest: u64) {
    use kiban_bus::relay::POSITION_HEADER;
    use kiban_bus::subjects::EVENTS_STREAM;
    let position_of = |message: &async_nats::jetstream::message::StreamMessage| -> u64 {
        message
            .headers
            .get(POSITION_HEADER)
            .expect("the relay sets the position header")
            .as_str()
            .parse()
            .unwrap()
    };
    let raw = |sequence: u64| {
        let context = context.clone();
        async move {
            let stream = context
                .get_stream(EVENTS_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .get_raw_message(sequence)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let length = bounded("the relay to publish the newest event", async {
        loop {
            let length = retried("the events stream's length", || {
                let context = context.clone();
                async move {
                    let mut stream = context
                        .get_stream(EVENTS_STREAM)
                        .await
                        .map_err(|e| e.to_string())?;
                    let info = stream.info().await.map_err(|e| e.to_string())?;
                    Ok::<u64, String>(info.state.messages)
                }
            })
            .await;
            if length > 0 {
                let last = retried("the last event message", || raw(length)).await;
                if position_of(&last) >= newest {
                    return length;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for sequence in 1..=length {
        let message = retried("an event message", || raw(sequence)).await;
        assert_eq!(
            position_of(&message),
            sequence,
            "KIBAN_EVENTS message {sequence} is the event at that position"
        );
    }
}

/// The NATS of a serve round: one server, or a three-node cluster.
enum Nats {
    Single(kiban_bus::testing::NatsServer),
    Cluster(kiban_bus::testing::NatsCluster),
}

impl Nats {
    /// The URL `kiban serve` is given (with a cluster, the client learns
    /// the other nodes from the first and fails over to them).
    fn url(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls()[0].clone(),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Nats::Single(_) => 1,
            Nats::Cluster(_) => kiban_bus::testing::NatsCluster::SIZE,
        }
    }

    /// What `kiban serve` is given: the URL and the stream replicas.
    fn serve_args(&self) -> (String, usize) {
        (self.url(), self.replicas())
    }
}

/// The faults of the serve rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestFault {
    /// `kiban serve` killed with SIGKILL and started again.
    KillServe,
    /// The nats-server killed with SIGKILL and started again on the same
    /// port and storage.
    RestartNats,
    /// The cluster node leading the ingest stream killed with SIGKILL;
    /// started again after the round, it must rejoin.
    KillStreamLeader,
}

/// One backend's serve rounds: a municipality publishes every person's
/// whole certification to a running `kiban serve` through NATS; after a
/// seeded number of receipts a fault of `faults` (in turn, starting at a
/// seeded one) lands; the municipality re-sends what has no receipt. Every
/// receipt must say accepted, and the round's checks hold.
async fn ingest_rounds(
    backend: kiban_tests::Backend,
    mut nats: Nats,
    faults: &[IngestFault],
    rounds: u64,
) {
    use futures::StreamExt;
    let seed = seed(&format!("ingest faults {faults:?} ({backend:?})"));
    let mut rng = StdRng::seed_from_u64(seed);
    let db = kiban_tests::TestDb::new(backend).await;
    {
        // The federation onboards the insurer before kiban serve starts.
        let store = db.open().await;
        let engine = Engine::new(store.clone());
        crate::projections::script::onboard_insurer(&engine, INSURER, false).await;
        store.close().await;
    }
    let dir = tempfile::tempdir().unwrap();
    let client = match &nats {
        Nats::Single(server) => async_nats::connect(server.url()).await.unwrap(),
        Nats::Cluster(cluster) => {
            let client = async_nats::connect(cluster.urls()).await.unwrap();
            cluster.wait_for_jetstream(&client).await.unwrap();
            client
        }
    };
    let context = async_nats::jetstream::new(client.clone());
    let mut persons = Vec::new();
    let mut acks: Vec<Ack> = Vec::new();
    let mut runs = 0;
    for round in 0..rounds {
        let mut serve =
            Some(ServeProcess::start(db.url(), dir.path(), Some(nats.serve_args()), runs).await);
        runs += 1;
        let round_persons: Vec<_> = (0..SERVE_PERSONS_PER_ROUND)
            .map(|i| person(100 + round, i))
            .collect();
        persons.extend(round_persons.iter().cloned());
        let messages: Vec<Vec<MunicipalMessage>> =
            round_persons.iter().map(whole_certification).collect();
        let total = messages.iter().map(Vec::len).sum::<usize>();
        let round_ids: std::collections::HashSet<Uuid> =
            messages.iter().flatten().map(|m| m.event_id).collect();
        let fault_after = rng.gen_range(total / 10..total / 2);
        // Every fault each run (which comes first is the seed's).
        let fault = faults[(seed.wrapping_add(round) % faults.len() as u64) as usize];
        let mut victim = None;
        let mut receipts = client
            .subscribe(format!("kiban.receipts.{INSURER}"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        // Each person's messages in order, the people concurrently.
        let mut publishing = tokio::task::JoinSet::new();
        for person_messages in messages.clone() {
            let context = context.clone();
            publishing.spawn(async move {
                for message in &person_messages {
                    publish_in_order(&context, message).await;
                }
            });
        }
        let mut accepted: HashMap<Uuid, Vec<u64>> = HashMap::new();
        let mut killed_at = None;
        let started = tokio::time::Instant::now();
        while accepted.len() < total {
            assert!(
                started.elapsed() < kiban_tests::WAIT_MAX * 3,
                "round {round}: receipts missing: {}",
                total - accepted.len()
            );
            match tokio::time::timeout(Duration::from_millis(RECEIPT_IDLE_MS), receipts.next())
                .await
            {
                Ok(Some(message)) => {
                    let receipt: kiban_bus::ingest::Receipt =
                        serde_json::from_slice(&message.payload).unwrap();
                    assert_eq!(
                        receipt.status,
                        kiban_bus::ingest::ReceiptStatus::Accepted,
                        "round {round}: a message sent in order was refused: {receipt:?}"
                    );
                    let id = *receipt.event_id.unwrap().as_uuid();
                    if !round_ids.contains(&id) {
                        // A late receipt of an earlier round's re-send.
                        continue;
                    }
                    let positions = receipt.positions.unwrap_or_default();
                    if let Some(earlier) = accepted.insert(id, positions.clone()) {
                        assert_eq!(earlier, positions, "a receipt sent again says the same");
                    }
                    if killed_at.is_none() && accepted.len() >= fault_after {
                        killed_at = Some(accepted.len());
                        match fault {
                            IngestFault::KillServe => {
                                serve.take().unwrap().kill_9().await;
                                serve = Some(
                                    ServeProcess::start(
                                        db.url(),
                                        dir.path(),
                                        Some(nats.serve_args()),
                                        runs,
                                    )
                                    .await,
                                );
                                runs += 1;
                            }
                            IngestFault::RestartNats => {
                                let Nats::Single(server) = &mut nats else {
                                    panic!("a single server restarts");
                                };
                                server.restart().await.unwrap();
                            }
                            IngestFault::KillStreamLeader => {
                                let Nats::Cluster(cluster) = &mut nats else {
                                    panic!("a cluster has a stream leader");
                                };
                                let leader =
                                    stream_leader(&context, kiban_bus::subjects::INGEST_STREAM)
                                        .await;
                                let index = (0..kiban_bus::testing::NatsCluster::SIZE)
                                    .find(|&i| cluster.server(i).name() == leader)
                                    .expect("the leader is a node of the cluster");
                                cluster.server(index).kill();
                                victim = Some(index);
                            }
                        }
                    }
                }
                Ok(None) => panic!("the receipt subscription ended"),
                Err(_) => {
                    // The documented contract: re-send, in order, whatever
                    // has no receipt.
                    for person_messages in &messages {
                        for message in person_messages {
                            if !accepted.contains_key(&message.event_id) {
                                publish_in_order(&context, message).await;
                            }
                        }
                    }
                }
            }
        }
        while let Some(outcome) = publishing.join_next().await {
            outcome.unwrap();
        }
        let killed_at = killed_at.expect("the kill happened");
        assert!(
            killed_at < total,
            "round {round}: the fault came with work in flight ({killed_at} of {total} receipts)"
        );
        eprintln!("{backend:?} round {round}: {fault:?} after {killed_at} of {total} receipts");
        for person_messages in &messages {
            for message in person_messages {
                acks.push(Ack {
                    message: message.event_id,
                    positions: accepted[&message.event_id].clone(),
                });
            }
        }
        // The outbox relay ran in the killed process too: it must have
        // continued exactly after the last event it had published.
        let newest = accepted.values().flatten().copied().max().unwrap();
        check_relayed(&context, newest).await;
        serve.take().unwrap().interrupt().await;
        if let (Some(index), Nats::Cluster(cluster)) = (victim, &mut nats) {
            cluster.server(index).start_again().await.unwrap();
            let name = cluster.server(index).name().to_owned();
            rejoined(&context, &name).await;
        }
        let store = db.open().await;
        check_round(&store, &acks, &persons, round).await;
        // The read models the killed and restarted processes kept, caught
        // up from their checkpoints, equal a rebuild.
        let projections = Projections::start(
            Db::open(db.url()).await.unwrap(),
            store.clone(),
            kiban_projections::models::all(),
        )
        .await
        .unwrap();
        check_projections(&projections, &store, round).await;
        projections.stop().await;
        store.close().await;
    }
}

/// The name of the server leading `stream`'s replicas.
async fn stream_leader(context: &async_nats::jetstream::Context, stream: &str) -> String {
    retried("the stream's leader", || {
        let context = context.clone();
        async move {
            let mut stream = context
                .get_stream(stream)
                .await
                .map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            info.cluster
                .as_ref()
                .and_then(|cluster| cluster.leader.clone())
                .ok_or_else(|| "no leader yet".to_owned())
        }
    })
    .await
}

/// Waits until the restarted node `name` is again the leader or a current
/// replica of both streams.
async fn rejoined(context: &async_nats::jetstream::Context, name: &str) {
    bounded("the restarted node to rejoin", async {
        loop {
            let mut current = 0;
            for stream in [
                kiban_bus::subjects::INGEST_STREAM,
                kiban_bus::subjects::EVENTS_STREAM,
            ] {
                let Ok(mut stream) = context.get_stream(stream).await else {
                    continue;
                };
                let Ok(info) = stream.info().await else {
                    continue;
                };
                if let Some(cluster) = info.cluster.as_ref()
                    && (cluster.leader.as_deref() == Some(name)
                        || cluster
                            .replicas
                            .iter()
                            .any(|peer| peer.name == name && peer.current && !peer.offline))
                {
                    current += 1;
                }
            }
            if current == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_or_nats_restarted_during_ingest_on_postgres_loses_and_reorders_nothing() {
    let nats = Nats::Single(kiban_bus::testing::NatsServer::start().await.unwrap());
    let faults = [IngestFault::KillServe, IngestFault::RestartNats];
    ingest_rounds(kiban_tests::Backend::Postgres, nats, &faults, SERVE_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_or_nats_restarted_during_ingest_on_sqlite_loses_and_reorders_nothing() {
    let nats = Nats::Single(kiban_bus::testing::NatsServer::start().await.unwrap());
    let faults = [IngestFault::KillServe, IngestFault::RestartNats];
    ingest_rounds(kiban_tests::Backend::Sqlite, nats, &faults, SERVE_ROUNDS).await;
}

/// A `kiban serve` started while the JetStream cluster has no quorum (two
/// of three nodes down) waits for it, saying so in its log, and serves once
/// the nodes are back; before, it exited at once ("cannot create the
/// JetStream streams … jetstream request timed out"), as it did now and
/// then when `cluster_stream_leader_killed_…` restarted it while the
/// cluster was still electing a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_while_the_cluster_has_no_quorum_waits_for_it_and_then_serves() {
    let mut cluster = kiban_bus::testing::NatsCluster::start().await.unwrap();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    cluster.wait_for_jetstream(&client).await.unwrap();
    drop(client);
    cluster.server(1).kill();
    cluster.server(2).kill();
    let nats = Nats::Cluster(cluster);
    let args = nats.serve_args();
    let Nats::Cluster(mut cluster) = nats else {
        unreachable!("a cluster")
    };
    let db = kiban_tests::TestDb::new(kiban_tests::Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, path) = (db.url().to_owned(), dir.path().to_owned());
    let serving =
        tokio::spawn(async move { ServeProcess::start(&url, &path, Some(args), 0).await });
    let log = dir.path().join("serve-0.log");
    bounded("serve to say that JetStream is not ready", async {
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("JetStream is not ready")
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    cluster.server(1).start_again().await.unwrap();
    cluster.server(2).start_again().await.unwrap();
    let serve = bounded("serve's banner once the quorum is back", serving)
        .await
        .expect("kiban serve started once the cluster had its quorum again");
    serve.interrupt().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stream_leader_killed_during_ingest_loses_and_reorders_nothing_and_rejoins() {
    let nats = Nats::Cluster(kiban_bus::testing::NatsCluster::start().await.unwrap());
    let faults = [IngestFault::KillStreamLeader, IngestFault::KillServe];
    ingest_rounds(kiban_tests::Backend::Sqlite, nats, &faults, CLUSTER_ROUNDS).await;
}

// --- The API's answers while PostgreSQL is stopped or gone ---------------------------

/// The sample office of development mode (its terminal's certificate is in
/// `<data dir>/certs`).
const OFFICE: &str = "1312345678";

/// An HTTPS client presenting the development certificate `identity`;
/// HTTP/1.1 only, so that each request in flight holds its own connection
/// (HTTP/2 would queue them behind the server's stream limit instead).
fn https_client(certs: &Path, identity: &str) -> reqwest::Client {
    https_client_from(certs, identity, std::net::Ipv4Addr::LOCALHOST)
}

/// [`https_client`] with its connections from `source`, another loopback
/// address (all of 127.0.0.0/8 is the loopback interface on Linux): kiban
/// closes connections beyond `CONNECTIONS_PER_ADDRESS_MAX` from one address
/// at once, so a test that needs more in flight spreads them.
fn https_client_from(certs: &Path, identity: &str, source: std::net::Ipv4Addr) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let pem = std::fs::read(certs.join(identity)).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .http1_only()
        .local_address(std::net::IpAddr::V4(source))
        .build()
        .unwrap()
}

/// The status and problem `type` of a GET (the type empty for a non-problem).
async fn get_problem(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value == "application/problem+json");
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let kind = if problem {
        body["type"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    (status, kind)
}

/// Sends `signal` to every process of the server.
fn signal_all(server: &PrivatePostgres, signal: &str) {
    let Some(postmaster) = std::fs::read_to_string(server.data().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    let mut pids = vec![postmaster];
    pids.extend(children_of(postmaster));
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_database_gives_504_timeout_and_overload_503_rate_limited_then_recovers() {
    let server = PrivatePostgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&server.url(), dir.path(), None, 0).await;
    let office = https_client(
        &dir.path().join("certs"),
        &format!("office-{OFFICE}-T-01.pem"),
    );
    let caseload = format!("{}/v1/offices/{OFFICE}/caseload", serve.base);
    assert_eq!(get_problem(&office, &caseload).await, (200, String::new()));

    // Every server process stopped (SIGSTOP): queries hang, nothing fails.
    signal_all(&server, "-STOP");
    // More requests than kiban-api admits at once: the surplus is shed at
    // once (503 rate-limited), the admitted ones wait for the database until
    // the request timeout (504 timeout).
    // From two loopback addresses, so that no address exceeds kiban's
    // per-address connection limit (which would close the surplus before
    // any answer: a different defence from the one tested here).
    let requests = kiban_api::REQUESTS_IN_FLIGHT_MAX + 40;
    assert!(requests / 2 + 1 < kiban_api::CONNECTIONS_PER_ADDRESS_MAX);
    let office_too = https_client_from(
        &dir.path().join("certs"),
        &format!("office-{OFFICE}-T-01.pem"),
        std::net::Ipv4Addr::new(127, 0, 0, 2),
    );
    let mut answers = tokio::task::JoinSet::new();
    for index in 0..requests {
        let office = if index % 2 == 0 { &office } else { &office_too };
        let (office, caseload) = (office.clone(), caseload.clone());
        answers.spawn(async move { get_problem(&office, &caseload).await });
    }
    let mut counts: BTreeMap<(u16, String), usize> = BTreeMap::new();
    while let Some(answer) = bounded("the answers", answers.join_next()).await {
        *counts.entry(answer.unwrap()).or_default() += 1;
    }
    signal_all(&server, "-CONT");
    eprintln!("answers while the database was stopped: {counts:?}");
    let timeouts = counts
        .get(&(504, "urn:kiban:problem:timeout".to_owned()))
        .copied()
        .unwrap_or(0);
    let shed = counts
        .get(&(503, "urn:kiban:problem:rate-limited".to_owned()))
        .copied()
        .unwrap_or(0);
    let unavailable = counts
        .get(&(503, "urn:kiban:problem:unavailable".to_owned()))
        .copied()
        .unwrap_or(0);
    // The admitted requests wait for the stopped database until the request
    // timeout (504) or, when their wait was for a pooled connection, until
    // the pool's equal limit (503 unavailable): whichever ends first.
    assert!(
        timeouts + unavailable > 0,
        "some requests timed out: {counts:?}"
    );
    assert!(shed > 0, "some requests were shed: {counts:?}");
    assert_eq!(
        timeouts + shed + unavailable,
        requests,
        "nothing but those problems: {counts:?}"
    );

    // Resumed: served again.
    bounded("the API to serve again", async {
        while get_problem(&office, &caseload).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // The database gone (kill -9): a problem, never a hang or a 500.
    server.kill_9().await;
    let down = get_problem(&office, &caseload).await;
    eprintln!("answer while the database was down: {down:?}");
    assert!(
        down == (503, "urn:kiban:problem:unavailable".to_owned())
            || down == (504, "urn:kiban:problem:timeout".to_owned()),
        "{down:?}"
    );
    server.start_server().await;
    bounded("the API to serve again after the restart", async {
        while get_problem(&office, &caseload).await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    serve.interrupt().await;
}
