//! Fault tests: the NATS server restarted mid-ingest, a cluster node killed
//! mid-ingest. The test plays a municipality that follows the documented
//! contract (docs/integration.md): it publishes, collects receipts, and
//! re-sends whatever has no receipt. In the end every message must be in the
//! store exactly once with an accepted receipt, and the chain verifies.
//!
//! Each fault is shown to land while work is in flight: the in-process
//! consumer's handler stops at a gate after [`FAULT_AFTER`] messages, the
//! fault is applied while it waits (so the store holds fewer events than were
//! sent, and one message is mid-handling), and only then does the gate open.
//! The process-crash test cannot gate another process: it counts what the
//! killed process had stored and asserts it is less than was sent.
//!
//! These tests run the `RecordingHandler` stand-in (one event per message);
//! the fault suite of the end-to-end crate (`tests/tests/faults.rs`) runs the
//! same faults through the real engine and its workflow rules.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use common::{INSURER, WAIT_MAX, bounded, message, new_id, sqlite_store};
use futures::StreamExt;
use kiban_bus::ingest::{
    IngestHandler, IngestMessage, MSG_ID_HEADER, ReceiptStatus, Unavailable, Verdict, run_ingest,
};
use kiban_bus::streams::ensure_streams;
use kiban_bus::testing::{NatsCluster, NatsServer, RecordingHandler, stream_options};
use kiban_store::{Store, VerifyReport};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Messages per fault test: few enough to keep the test short on a busy
/// two-core machine.
const MESSAGES: usize = 2_000;

/// The handler stops at its gate on this call: the fault lands with
/// `FAULT_AFTER - 1` messages recorded and the rest in flight.
const FAULT_AFTER: usize = MESSAGES / 4;

/// Messages of the process crash test (the figure).
const CRASH_MESSAGES: usize = 10_000;

/// The municipality's receipt timeout: after this long without any new
/// receipt, it re-sends what has none.
const RECEIPT_IDLE_MS: u64 = 3_000;

const KINDS: [&str; 3] = [
    "certification.filed",
    "certification.investigation_scheduled",
    "certification.decided",
];

/// Message `index`: 3 events per certification, so ordering within a
/// stream matters.
fn body(id: Uuid, index: usize) -> (String, String) {
    let kind = KINDS[index % 3];
    (
        kind.to_owned(),
        message(id, INSURER, kind, (index / 3) as u32),
    )
}

async fn send(client: &async_nats::Client, id: Uuid, index: usize) {
    let (kind, body) = body(id, index);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID_HEADER, id.to_string().as_str());
    // Core NATS publish: while the server is down it fails or is lost,
    // which the re-send loop is there for.
    let _ = client
        .publish_with_headers(
            format!("kiban.ingest.{INSURER}.{kind}"),
            headers,
            body.into(),
        )
        .await;
}

/// A handler that, on its `at`th call, reports that it got there and waits
/// until the test opens the gate: the test applies its fault in between.
struct Gated<H> {
    inner: H,
    calls: AtomicUsize,
    at: usize,
    reached: watch::Sender<bool>,
    open: watch::Receiver<bool>,
}

/// The test's side of a [`Gated`] handler.
struct Gate {
    reached: watch::Receiver<bool>,
    open: watch::Sender<bool>,
}

impl Gate {
    async fn wait_until_reached(&mut self) {
        bounded(
            "the handler to reach the gate",
            self.reached.wait_for(|reached| *reached),
        )
        .await
        .unwrap();
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

fn gated<H>(inner: H, at: usize) -> (Gated<H>, Gate) {
    let (reached_tx, reached_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(false);
    (
        Gated {
            inner,
            calls: AtomicUsize::new(0),
            at,
            reached: reached_tx,
            open: open_rx,
        },
        Gate {
            reached: reached_rx,
            open: open_tx,
        },
    )
}

impl<H: IngestHandler> IngestHandler for Gated<H> {
    async fn handle(&self, message: IngestMessage) -> Result<Verdict, Unavailable> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            self.reached.send_replace(true);
            let mut open = self.open.clone();
            // The test opens the gate after its fault (bounded there).
            let _ = open.wait_for(|open| *open).await;
        }
        self.inner.handle(message).await
    }
}

/// Publishes all messages, then re-sends until every message has a receipt.
/// `fault` runs once: when `gate` is given, as soon as the handler waits at
/// it (the gate opens after the fault); otherwise once `fault_after`
/// receipts have arrived (then at least one receipt came before the fault
/// and one after it). Returns the ids.
async fn ingest_through<F: std::future::Future<Output = ()>>(
    publisher: async_nats::Client,
    count: usize,
    fault_after: usize,
    mut gate: Option<Gate>,
    fault: F,
) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..count).map(|_| new_id()).collect();
    let mut receipts = publisher
        .subscribe(format!("kiban.receipts.{INSURER}"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let mut fault = Some(Box::pin(fault));
    let mut accepted: HashSet<Uuid> = HashSet::new();
    let mut accepted_before_fault = None;
    let started = tokio::time::Instant::now();
    for (index, id) in ids.iter().enumerate() {
        send(&publisher, *id, index).await;
    }
    let _ = publisher.flush().await;
    if let Some(gate) = &mut gate {
        gate.wait_until_reached().await;
        fault.take().expect("the fault runs once").await;
        gate.open();
    }
    while accepted.len() < count {
        assert!(
            started.elapsed() < WAIT_MAX * 2,
            "receipts missing after re-sending: {}",
            count - accepted.len()
        );
        match tokio::time::timeout(Duration::from_millis(RECEIPT_IDLE_MS), receipts.next()).await {
            Ok(Some(message)) => {
                let receipt: kiban_bus::ingest::Receipt =
                    serde_json::from_slice(&message.payload).unwrap();
                assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
                accepted.insert(*receipt.event_id.unwrap().as_uuid());
                if accepted.len() >= fault_after
                    && let Some(fault) = fault.take()
                {
                    accepted_before_fault = Some(accepted.len());
                    fault.await;
                }
            }
            Ok(None) => panic!("the receipt subscription ended"),
            Err(_) => {
                for (index, id) in ids.iter().enumerate() {
                    if !accepted.contains(id) {
                        send(&publisher, *id, index).await;
                    }
                }
                let _ = publisher.flush().await;
            }
        }
    }
    assert!(fault.is_none(), "the fault ran");
    if let Some(before) = accepted_before_fault {
        assert!(
            before < count,
            "{before} of {count} receipts before the fault"
        );
    }
    ids
}

/// The number of events in `store` (its head position).
async fn stored_count(store: &Store) -> usize {
    store.head().await.unwrap().position as usize
}

async fn assert_stored_exactly_once(store: &Store, ids: &[Uuid]) {
    let mut stored = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_all(from, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        stored.extend(page.iter().map(|event| *event.event_id.as_uuid()));
    }
    assert_eq!(stored.len(), ids.len(), "every message stored exactly once");
    let stored: HashSet<Uuid> = stored.into_iter().collect();
    let sent: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(stored, sent);
    match store.verify(1, None).await.unwrap() {
        VerifyReport::Verified { events, .. } => assert_eq!(events, ids.len() as u64),
        broken => panic!("the chain does not verify after the fault: {broken:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarted_mid_ingest_loses_nothing() {
    common::init_logging();
    let mut server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    ensure_streams(&jetstream::new(client.clone()), &stream_options(1))
        .await
        .unwrap();
    let (store, _dir) = sqlite_store().await;
    let cancel = CancellationToken::new();
    let (handler, gate) = gated(RecordingHandler::new(store.clone()), FAULT_AFTER);
    let consumer = tokio::spawn(run_ingest(
        client.clone(),
        Arc::new(handler),
        cancel.clone(),
    ));
    let publisher = async_nats::connect(server.url()).await.unwrap();

    let server_ref = &mut server;
    let store_ref = &store;
    let ids = ingest_through(publisher, MESSAGES, 0, Some(gate), async move {
        // The handler waits inside message FAULT_AFTER: the messages before
        // it are recorded, the rest are in flight.
        let at_fault = stored_count(store_ref).await;
        assert!(
            at_fault > 0 && at_fault < MESSAGES,
            "{at_fault} of {MESSAGES} recorded when the server went down"
        );
        server_ref.restart().await.unwrap();
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(WAIT_MAX, consumer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_stored_exactly_once(&store, &ids).await;
    assert!(
        server.log().matches("Starting nats-server").count() >= 2,
        "the server was restarted"
    );
}

/// The name of the server leading `stream`'s replicas.
async fn stream_leader(context: &jetstream::Context, stream: &str) -> String {
    let mut stream = context.get_stream(stream).await.unwrap();
    let info = stream.info().await.unwrap();
    info.cluster
        .as_ref()
        .and_then(|cluster| cluster.leader.clone())
        .expect("a replicated stream has a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_mid_ingest_loses_nothing_and_rejoins() {
    common::init_logging();
    let mut cluster = NatsCluster::start().await.unwrap();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    cluster.wait_for_jetstream(&client).await.unwrap();
    let context = jetstream::new(client.clone());
    ensure_streams(&context, &stream_options(3)).await.unwrap();
    let (store, _dir) = sqlite_store().await;
    let cancel = CancellationToken::new();
    let (handler, gate) = gated(RecordingHandler::new(store.clone()), FAULT_AFTER);
    let consumer = tokio::spawn(run_ingest(
        client.clone(),
        Arc::new(handler),
        cancel.clone(),
    ));
    let publisher = async_nats::connect(cluster.urls()).await.unwrap();

    // Kill the node that leads the ingest stream: the hardest case (the
    // stream elects a new leader while messages wait in it).
    let leader = stream_leader(&context, kiban_bus::subjects::INGEST_STREAM).await;
    let victim = (0..NatsCluster::SIZE)
        .find(|&i| cluster.server(i).name() == leader)
        .unwrap_or_else(|| panic!("the leader {leader} is one of the cluster's servers"));
    let cluster_ref = &mut cluster;
    let store_ref = &store;
    let ids = ingest_through(publisher, MESSAGES, 0, Some(gate), async move {
        let at_fault = stored_count(store_ref).await;
        assert!(
            at_fault > 0 && at_fault < MESSAGES,
            "{at_fault} of {MESSAGES} recorded when the node was killed"
        );
        cluster_ref.server(victim).kill();
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(WAIT_MAX, consumer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_stored_exactly_once(&store, &ids).await;
    assert!(!cluster.server(victim).is_running());

    // The killed node comes back and catches up: it is again a current
    // replica (or the leader) of both streams.
    cluster.server(victim).start_again().await.unwrap();
    let name = cluster.server(victim).name().to_owned();
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
                let Some(cluster) = info.cluster.as_ref() else {
                    continue;
                };
                if cluster.leader.as_deref() == Some(name.as_str())
                    || cluster
                        .replicas
                        .iter()
                        .any(|peer| peer.name == name && peer.current && !peer.offline)
                {
                    current += 1;
                }
            }
            if current == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// The probe process, killed on drop so that a failing test leaves none.
struct Probe(std::process::Child);

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the ingest probe process and waits for its `ready` line.
fn spawn_probe(url: &str, database: &std::path::Path) -> Probe {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiban-ingest-probe"))
        .arg(url)
        .arg(database)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Probe(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_process_killed_mid_ingest_and_restarted_loses_and_duplicates_nothing() {
    common::init_logging();
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    ensure_streams(&jetstream::new(client.clone()), &stream_options(1))
        .await
        .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("kiban.db");
    let mut probe = spawn_probe(&server.url(), &database);

    let (url, path) = (server.url(), database.clone());
    let probe_ref = &mut probe;
    let stored_at_kill = Arc::new(AtomicUsize::new(0));
    let stored_ref = stored_at_kill.clone();
    let ids = ingest_through(
        client,
        CRASH_MESSAGES,
        CRASH_MESSAGES / 3,
        None,
        async move {
            probe_ref.0.kill().unwrap(); // SIGKILL: no shutdown path runs
            probe_ref.0.wait().unwrap();
            // What the killed process had stored: the kill landed mid-run only
            // if some messages were still unrecorded.
            let store = Store::open(
                &format!("sqlite://{}", path.display()),
                kiban_store::StoreOptions::default(),
            )
            .await
            .unwrap();
            stored_ref.store(stored_count(&store).await, Ordering::SeqCst);
            store.close().await;
            *probe_ref = spawn_probe(&url, &path);
        },
    )
    .await;
    drop(probe);
    let at_kill = stored_at_kill.load(Ordering::SeqCst);
    assert!(
        at_kill > 0 && at_kill < CRASH_MESSAGES,
        "{at_kill} of {CRASH_MESSAGES} messages recorded when the process was killed"
    );
    let store = Store::open(
        &format!("sqlite://{}", database.display()),
        kiban_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_stored_exactly_once(&store, &ids).await;
}
