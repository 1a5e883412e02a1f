//! Helpers shared by the bus's integration tests: messages, publishing,
//! bounded waits, and a SQLite store in a temporary directory.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use kiban_bus::ingest::{MSG_ID_HEADER, Receipt};
use kiban_store::{Store, StoreOptions};
use uuid::Uuid;

/// Bound on any single wait in a test: only there to turn a hang into a
/// failure, never reached when the code works.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// The insurer most tests publish as.
pub const INSURER: &str = "131016";

/// Awaits `future`, failing the test after [`WAIT_MAX`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT_MAX, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Logs to the test's output (shown for failing tests), filtered by
/// `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    (store, directory)
}

/// A new event id (UUID v7).
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// A status message body for `kind` about certification `seq` of one person.
pub fn message(event_id: Uuid, insurer: &str, kind: &str, seq: u32) -> String {
    format!(
        r#"{{"event_id":"{event_id}","kind":"{kind}","insurer":"{insurer}","insured":"0000012345","application":{seq},"occurred_at":"2026-04-01T09:00:00+09:00","body":{{"note":"test"}}}}"#
    )
}

/// Publishes `body` on `kiban.ingest.<insurer>.<kind>` through JetStream
/// with `Nats-Msg-Id: msg_id` and waits for the publish ack.
pub async fn publish(
    context: &jetstream::Context,
    insurer: &str,
    kind: &str,
    msg_id: &str,
    body: impl Into<Vec<u8>>,
) {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, msg_id);
    let subject = format!("kiban.ingest.{insurer}.{kind}");
    let body: Vec<u8> = body.into();
    bounded("a publish ack", async {
        context
            .publish_with_headers(subject, headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap()
    })
    .await;
}

/// Reads `count` receipts from `subscriber`.
pub async fn receipts(subscriber: &mut async_nats::Subscriber, count: usize) -> Vec<Receipt> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let message = bounded("a receipt", subscriber.next())
            .await
            .expect("subscription open");
        out.push(serde_json::from_slice(&message.payload).unwrap());
    }
    out
}
