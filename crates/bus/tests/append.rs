//! Appends from a process that is not the writer (`kiban_bus::append`),
//! against a real nats-server: a forwarding store gets the writer's own
//! result, a re-sent append is answered with its first result after the
//! writer changed, no writer means `Unavailable` (not a hang), and only
//! kiban's API and engine users may publish to the writer subject
//! (docs/nats.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bounded, connect_as_with, init_logging, store_event, violation};
use futures::StreamExt;
use kiban_bus::append::{NatsForwarder, ping_writer, run_append_service};
use kiban_bus::subjects::WRITER_SUBJECT;
use kiban_bus::testing::NatsServer;
use kiban_events::{EventId, ExpectedVersion, StreamName};
use kiban_store::{Store, StoreOptions, WriterMode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A writer store on `url` answering appends on NATS until the token is
/// cancelled.
async fn writer(
    url: &str,
    client: &async_nats::Client,
) -> (Store, CancellationToken, JoinHandle<()>) {
    let store = Store::open(url, StoreOptions::default()).await.unwrap();
    assert!(*store.writer_status().borrow(), "the store took the lock");
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_append_service(
        client.clone(),
        store.clone(),
        stop.clone(),
    ));
    let task = tokio::spawn(async move {
        task.await.unwrap().unwrap();
    });
    // The subscription is registered once a ping is answered.
    bounded("the writer answering pings", async {
        while ping_writer(client, Duration::from_millis(500))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    (store, stop, task)
}

/// A store on `url` that never writes and forwards over `client`.
async fn forwarding(url: &str, client: &async_nats::Client) -> Store {
    let options = StoreOptions {
        writer: WriterMode::Forward(Arc::new(NatsForwarder::new(client.clone()))),
        ..StoreOptions::default()
    };
    let store = Store::open(url, options).await.unwrap();
    assert!(store.forwards_appends());
    assert!(!*store.writer_status().borrow());
    store
}

#[tokio::test]
async fn a_forwarded_append_is_committed_by_the_writer_once_even_when_the_writer_changes() {
    init_logging();
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
    let (first_writer, stop, task) = writer(&url, &client).await;
    let api = forwarding(&url, &client).await;
    let stream = StreamName::parse("test/one").unwrap();
    let events = vec![store_event(1, r#"{"n":1}"#), store_event(2, r#"{"n":2}"#)];

    let first = api
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!((first.first_position, first.last_position), (1, 2));
    let stored = first_writer.read_stream(&stream, 1, 10).await.unwrap();
    assert_eq!(stored, first.events, "the answer is what the writer stored");
    // A conflict travels back as a conflict, not as "unavailable".
    let conflict = api
        .append(
            &stream,
            ExpectedVersion::Exact(0),
            vec![store_event(3, "{}")],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kiban_store::Error::Conflict { actual: 2, .. }),
        "{conflict:?}"
    );

    // The writer goes away; another store takes the lock and answers.
    stop.cancel();
    task.await.unwrap();
    first_writer.close().await;
    let (second_writer, stop, task) = writer(&url, &client).await;
    let again = api
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    assert_eq!(again, first, "a re-send is answered with the first result");
    assert_eq!(
        second_writer.head().await.unwrap().position,
        2,
        "stored once"
    );
    assert!(matches!(
        second_writer.verify(1, None).await.unwrap(),
        kiban_store::VerifyReport::Verified { events: 2, .. }
    ));
    stop.cancel();
    task.await.unwrap();
    second_writer.close().await;
}

#[tokio::test]
async fn without_a_writer_a_forwarded_append_is_unavailable_and_pings_fail() {
    init_logging();
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
    let api = forwarding(&url, &client).await;
    let stream = StreamName::parse("test/one").unwrap();
    let error = bounded(
        "the forwarder giving up",
        api.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![store_event(1, "{}")],
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, kiban_store::Error::Unavailable(_)),
        "{error:?}"
    );
    assert!(
        ping_writer(&client, Duration::from_millis(500))
            .await
            .is_err()
    );
    assert_eq!(api.head().await.unwrap().position, 0, "nothing was written");
}

/// docs/nats.md's users for the writer subject: kiban's engine (everything),
/// kiban's API processes (request on the writer subject, kiban's inboxes),
/// an office and a municipality.
fn permissions_config() -> String {
    r#"
accounts {
  KIBAN {
    jetstream: enabled
    users: [
      { user: "kiban-engine", password: "secret" }
      { user: "kiban-api", password: "secret", permissions: {
          publish:   { allow: ["kiban.writer.append"] },
          subscribe: { allow: ["_INBOX_KIBAN.>", "kiban.offices.*.*"] } } }
      { user: "office-1312345678", password: "secret", permissions: {
          publish:   { deny: ">" },
          subscribe: { allow: ["kiban.offices.1312345678.updates"] } } }
      { user: "insurer-131016", password: "secret", permissions: {
          publish:   { allow: ["kiban.ingest.131016.>"] },
          subscribe: { allow: ["kiban.receipts.131016", "_INBOX.>"] } } }
    ]
  }
}
"#
    .to_owned()
}

/// Connects as `user`: kiban's own users as kiban does (inboxes under
/// `_INBOX_KIBAN`), the others with NATS's defaults.
async fn connect_as(
    server: &NatsServer,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let options = if user.starts_with("kiban") {
        kiban_bus::client::kiban_connect_options()
    } else {
        async_nats::ConnectOptions::new()
    };
    connect_as_with(server, user, options).await
}

#[tokio::test]
async fn only_kiban_api_and_engine_users_may_send_appends_to_the_writer() {
    init_logging();
    let server = NatsServer::start_with_config(&permissions_config())
        .await
        .unwrap();
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
    let (engine, _) = connect_as(&server, "kiban-engine").await;
    let (writer_store, stop, task) = writer(&url, &engine).await;

    // kiban's API user forwards an append: committed.
    let (api_client, mut api_errors) = connect_as(&server, "kiban-api").await;
    let api = forwarding(&url, &api_client).await;
    let stream = StreamName::parse("test/one").unwrap();
    let result = api
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![store_event(1, "{}")],
        )
        .await
        .unwrap();
    assert_eq!(result.last_position, 1);
    // ... but may not listen on the writer subject (it would receive
    // other processes' appends and could answer them).
    let _spy = api_client.subscribe(WRITER_SUBJECT).await.unwrap();
    violation(&mut api_errors, WRITER_SUBJECT).await;

    // An office and a municipality may not publish appends.
    let body = serde_json::to_vec(&kiban_bus::append::WriterRequest::Append {
        stream: stream.clone(),
        expected: ExpectedVersion::Any,
        events: vec![store_event(2, r#"{"forged":true}"#)],
    })
    .unwrap();
    for user in ["office-1312345678", "insurer-131016"] {
        let (client, mut errors) = connect_as(&server, user).await;
        client
            .publish(WRITER_SUBJECT, body.clone().into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let error = violation(&mut errors, "Publish").await;
        assert!(error.contains(WRITER_SUBJECT), "{user}: {error}");
    }
    // The engine still answers (a ping is a request like an append), and
    // nothing but the API's append reached the store.
    ping_writer(&engine, Duration::from_secs(5)).await.unwrap();
    let mut subscription = writer_store.subscribe(1);
    let first = bounded("the first event", subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.event_id,
        EventId::from_uuid(Uuid::from_u128(1)).unwrap()
    );
    assert_eq!(writer_store.head().await.unwrap().position, 1);
    stop.cancel();
    task.await.unwrap();
    writer_store.close().await;
}
