//! The outbox relay against a real nats-server and a real (SQLite) store.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{bounded, sqlite_store};
use kiban_bus::relay::{POSITION_HEADER, StreamCheckpoint, run_relay};
use kiban_bus::streams::ensure_streams;
use kiban_bus::subjects::EVENTS_STREAM;
use kiban_bus::testing::{NatsServer, stream_options};
use kiban_events::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload, StreamName};
use kiban_store::Store;
use tokio_util::sync::CancellationToken;

async fn append(store: &Store, count: usize, offset: usize) {
    for index in offset..offset + count {
        let stream =
            StreamName::new("certification", &format!("131016-0000012345-{}", index % 7)).unwrap();
        let event = NewEvent {
            event_id: EventId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            event_type: EventType::parse("certification.filed").unwrap(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            actor: Actor::parse("insurer:131016").unwrap(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            payload: Payload::from_json(&format!(r#"{{"insurer":"131016","n":{index}}}"#)).unwrap(),
        };
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
}

async fn stream_len(context: &jetstream::Context) -> u64 {
    let mut stream = context.get_stream(EVENTS_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn wait_for_len(context: &jetstream::Context, at_least: u64) {
    bounded("the relay to publish", async {
        while stream_len(context).await < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Sets `KIBAN_EVENTS`'s message limit: `Some(n)` refuses the (n+1)th
/// publish (discard new), `None` lifts the limit.
async fn limit_events(context: &jetstream::Context, max_messages: Option<i64>) {
    let mut stream = context.get_stream(EVENTS_STREAM).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_messages = max_messages.unwrap_or(-1);
    config.discard = if max_messages.is_some() {
        jetstream::stream::DiscardPolicy::New
    } else {
        jetstream::stream::DiscardPolicy::Old
    };
    context.update_stream(config).await.unwrap();
}

/// Publishes the relay can never finish before it is killed: the stream
/// refuses every message after the 300th, so the relay is stuck mid-run
/// (with publishes in flight and failing, restarting from the tail again and
/// again) when the task is aborted, deterministically and not by timing.
const STUCK_AT: u64 = 300;

#[tokio::test]
async fn the_relay_killed_mid_run_and_restarted_publishes_every_event_once_in_order() {
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client.clone());
    ensure_streams(&context, &stream_options(1)).await.unwrap();
    limit_events(&context, Some(STUCK_AT as i64)).await;
    let (store, _dir) = sqlite_store().await;
    append(&store, 600, 0).await;

    // The relay gets its own connection, as a separate process would.
    let relay_client = async_nats::connect(server.url()).await.unwrap();
    let task = tokio::spawn(run_relay(
        relay_client.clone(),
        store.clone(),
        CancellationToken::new(),
    ));
    wait_for_len(&context, STUCK_AT).await;
    // The stream is full at STUCK_AT: the relay cannot get further, and it
    // keeps trying (a refused publish is a failure it restarts after).
    assert!(!task.is_finished(), "the relay runs, stuck at the limit");
    task.abort();
    let _ = task.await;
    drop(relay_client);
    let published_before_restart = stream_len(&context).await;
    limit_events(&context, None).await;
    append(&store, 400, 600).await;

    let cancel = CancellationToken::new();
    let relay_client = async_nats::connect(server.url()).await.unwrap();
    let task = tokio::spawn(run_relay(relay_client, store.clone(), cancel.clone()));
    wait_for_len(&context, 1000).await;
    cancel.cancel();
    bounded("the relay to stop", task).await.unwrap().unwrap();

    // The kill landed mid-run: 600 events were waiting and 300 were out.
    assert_eq!(
        published_before_restart, STUCK_AT,
        "the relay was killed with 300 of 600 events published"
    );
    let stream = context.get_stream(EVENTS_STREAM).await.unwrap();
    let recorded = store.read_all(1, 1000).await.unwrap();
    assert_eq!(stream_len(&context).await, 1000);
    for (index, event) in recorded.iter().enumerate() {
        let message = stream.get_raw_message(index as u64 + 1).await.unwrap();
        let position: u64 = message
            .headers
            .get(POSITION_HEADER)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert_eq!(position, event.position);
        assert_eq!(
            message.subject.as_str(),
            format!(
                "kiban.events.131016.certification.filed.{}",
                event.stream.id()
            )
        );
        let body: kiban_events::RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(&body, event);
    }
    let tail = StreamCheckpoint::new(context).tail().await.unwrap();
    assert_eq!(tail.position, Some(1000));
}
