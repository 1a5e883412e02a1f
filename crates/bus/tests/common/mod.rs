//! Helpers shared by the bus's integration tests: messages, publishing,
//! bounded waits, a SQLite store in a temporary directory, connections as a
//! configured user and the permission violations they are refused with.
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

/// A store event of type `test.happened` with the id `id` and `payload`.
pub fn store_event(id: u128, payload: &str) -> kiban_events::NewEvent {
    kiban_events::NewEvent {
        event_id: kiban_events::EventId::from_uuid(Uuid::from_u128(id)).unwrap(),
        event_type: kiban_events::EventType::parse("test.happened").unwrap(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: kiban_events::Actor::system("tests").unwrap(),
        correlation_id: Uuid::from_u128(7),
        causation_id: None,
        payload: kiban_events::Payload::from_json(payload).unwrap(),
    }
}

/// Connects as `user` (password `secret`) with NATS's default options.
pub async fn connect_as(
    server: &kiban_bus::testing::NatsServer,
    user: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    connect_as_with(server, user, async_nats::ConnectOptions::new()).await
}

/// Connects as `user` (password `secret`) with `options`, collecting the
/// server's error events (permission violations arrive that way,
/// asynchronously).
pub async fn connect_as_with(
    server: &kiban_bus::testing::NatsServer,
    user: &str,
    options: async_nats::ConnectOptions,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (errors, received) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .user_and_password(user.to_owned(), "secret".to_owned())
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, received)
}

/// The next permissions violation about `about` the server reported.
pub async fn violation(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    about: &str,
) -> String {
    bounded("a permissions violation", async {
        loop {
            let error = errors.recv().await.expect("the client is alive");
            if error.to_lowercase().contains("permissions violation") && error.contains(about) {
                return error;
            }
        }
    })
    .await
}
