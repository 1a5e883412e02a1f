//! Fault tests: the NATS server restarted mid-ingest, a cluster node killed
//! mid-ingest. The test plays a municipality that follows the documented
//! contract (docs/integration.md): it publishes, collects receipts, and
//! re-sends whatever has no receipt. In the end every message must be in the
//! store exactly once with an accepted receipt.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::{INSURER, WAIT_MAX, message, new_id, sqlite_store};
use futures::StreamExt;
use kiban_bus::ingest::{MSG_ID_HEADER, ReceiptStatus, run_ingest};
use kiban_bus::streams::ensure_streams;
use kiban_bus::testing::{NatsCluster, NatsServer, RecordingHandler, stream_options};
use kiban_store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Messages per fault test: enough that the fault lands mid-run, few
/// enough to keep the test short on a busy two-core machine.
const MESSAGES: usize = 2_000;

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

/// Publishes all messages, runs `fault` once `fault_after` receipts have
/// arrived, and re-sends until every message has a receipt.
async fn ingest_through<F: std::future::Future<Output = ()>>(
    publisher: async_nats::Client,
    count: usize,
    fault_after: usize,
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
    let started = tokio::time::Instant::now();
    for (index, id) in ids.iter().enumerate() {
        send(&publisher, *id, index).await;
    }
    let _ = publisher.flush().await;
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
                    fault.await;
                }
            }
            Ok(None) => panic!("the receipt subscription ended"),
            Err(_) => {
                if let Some(fault) = fault.take() {
                    fault.await;
                }
                for (index, id) in ids.iter().enumerate() {
                    if !accepted.contains(id) {
                        send(&publisher, *id, index).await;
                    }
                }
                let _ = publisher.flush().await;
            }
        }
    }
    ids
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
    let consumer = tokio::spawn(run_ingest(
        client.clone(),
        Arc::new(RecordingHandler::new(store.clone())),
        cancel.clone(),
    ));
    let publisher = async_nats::connect(server.url()).await.unwrap();

    let server_ref = &mut server;
    let ids = ingest_through(publisher, MESSAGES, MESSAGES / 4, async move {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_mid_ingest_loses_nothing() {
    common::init_logging();
    let mut cluster = NatsCluster::start().await.unwrap();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    cluster.wait_for_jetstream(&client).await.unwrap();
    ensure_streams(&jetstream::new(client.clone()), &stream_options(3))
        .await
        .unwrap();
    let (store, _dir) = sqlite_store().await;
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_ingest(
        client.clone(),
        Arc::new(RecordingHandler::new(store.clone())),
        cancel.clone(),
    ));
    let publisher = async_nats::connect(cluster.urls()).await.unwrap();

    // Kill the node the consumer's client is connected to: the harder case
    // (its connection and possibly the stream or consumer leader go).
    let port = client.server_info().port;
    let victim = (0..NatsCluster::SIZE)
        .find(|&i| cluster.server(i).port() == port)
        .unwrap_or(0);
    let cluster_ref = &mut cluster;
    let ids = ingest_through(publisher, MESSAGES, MESSAGES / 4, async move {
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
    let ids = ingest_through(client, CRASH_MESSAGES, CRASH_MESSAGES / 3, async move {
        probe_ref.0.kill().unwrap(); // SIGKILL: no shutdown path runs
        probe_ref.0.wait().unwrap();
        *probe_ref = spawn_probe(&url, &path);
    })
    .await;
    drop(probe);
    let store = Store::open(
        &format!("sqlite://{}", database.display()),
        kiban_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_stored_exactly_once(&store, &ids).await;
}
