//! The ingest consumer against a real nats-server and a real (SQLite) store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use common::{INSURER, bounded, message, new_id, publish, receipts, sqlite_store};
use kiban_bus::ingest::{
    INGEST_MESSAGE_BYTES_MAX, IngestHandler, IngestMessage, ReceiptStatus, Unavailable, Verdict,
    codes, run_ingest,
};
use kiban_bus::streams::ensure_streams;
use kiban_bus::testing::{NatsServer, RecordingHandler, stream_options};
use kiban_store::Store;
use tokio_util::sync::CancellationToken;

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<kiban_bus::Result<()>>,
}

impl Running {
    fn start<H: IngestHandler>(client: async_nats::Client, handler: H) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_ingest(client, Arc::new(handler), cancel.clone()));
        Self { cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        bounded("the consumer to stop", self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn setup(
    options: kiban_bus::streams::StreamOptions,
) -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client.clone());
    ensure_streams(&context, &options).await.unwrap();
    (server, client, context)
}

async fn stored_ids(store: &Store) -> Vec<String> {
    store
        .read_all(1, 1000)
        .await
        .unwrap()
        .iter()
        .map(|event| event.event_id.to_string())
        .collect()
}

#[tokio::test]
async fn valid_messages_are_recorded_and_every_message_gets_a_receipt() {
    let (_server, client, context) = setup(stream_options(1)).await;
    let (store, _dir) = sqlite_store().await;
    let mut subscriber = receipt_subscriber(&client).await;
    let running = Running::start(client.clone(), RecordingHandler::new(store.clone()));

    let kinds = [
        "certification.filed",
        "certification.investigation_scheduled",
        "certification.decided",
    ];
    let mut good = Vec::new();
    for seq in 1..=4 {
        for kind in kinds {
            let id = new_id();
            publish(
                &context,
                INSURER,
                kind,
                &id.to_string(),
                message(id, INSURER, kind, seq),
            )
            .await;
            good.push(id.to_string());
        }
    }
    let receipts_good = receipts(&mut subscriber, good.len()).await;
    for receipt in &receipts_good {
        assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
        assert_eq!(receipt.positions.as_ref().map(Vec::len), Some(1));
    }
    let mut stored = stored_ids(&store).await;
    stored.sort();
    let mut expected = good.clone();
    expected.sort();
    assert_eq!(stored, expected);
    // Per stream, the store holds the events in publishing order.
    let first = store
        .read_stream(&"certification/131016-0000012345-1".parse().unwrap(), 1, 10)
        .await
        .unwrap();
    let order: Vec<_> = first.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(order, kinds);

    // Bad input: one rejection receipt each, nothing stored, and the
    // consumer keeps going.
    let kind = "certification.filed";
    let cases: Vec<(&str, String, String, String)> = {
        let malformed = new_id();
        let large = new_id();
        let wrong_insurer = new_id();
        let unknown = new_id();
        let bad_id = new_id();
        vec![
            (
                codes::MALFORMED_JSON,
                kind.to_owned(),
                malformed.to_string(),
                "{\"event_id\":".to_owned(),
            ),
            (
                codes::TOO_LARGE,
                kind.to_owned(),
                large.to_string(),
                format!("{{\"pad\":\"{}\"}}", "x".repeat(INGEST_MESSAGE_BYTES_MAX)),
            ),
            (
                codes::INSURER_MISMATCH,
                kind.to_owned(),
                wrong_insurer.to_string(),
                message(wrong_insurer, "131017", kind, 9),
            ),
            (
                codes::UNKNOWN_KIND,
                "certification.teleported".to_owned(),
                unknown.to_string(),
                message(unknown, INSURER, "certification.teleported", 9),
            ),
            (
                codes::MSG_ID_MISMATCH,
                kind.to_owned(),
                new_id().to_string(),
                message(bad_id, INSURER, kind, 9),
            ),
        ]
    };
    for (_, kind, msg_id, body) in &cases {
        publish(&context, INSURER, kind, msg_id, body.clone()).await;
    }
    let rejections = receipts(&mut subscriber, cases.len()).await;
    let codes_seen: Vec<_> = rejections.iter().map(|r| r.code.clone().unwrap()).collect();
    let codes_expected: Vec<_> = cases.iter().map(|(code, ..)| code.to_string()).collect();
    assert_eq!(codes_seen, codes_expected);
    assert!(
        rejections
            .iter()
            .all(|r| r.status == ReceiptStatus::Rejected && r.message.is_some())
    );
    assert_eq!(
        rejections[1].event_id.unwrap().to_string(),
        cases[1].2,
        "too_large names the header's id"
    );
    assert_eq!(store.head().await.unwrap().position, good.len() as u64);

    let after = new_id();
    publish(
        &context,
        INSURER,
        kind,
        &after.to_string(),
        message(after, INSURER, kind, 5),
    )
    .await;
    let last = receipts(&mut subscriber, 1).await;
    assert_eq!(last[0].status, ReceiptStatus::Accepted);
    assert_eq!(last[0].positions, Some(vec![good.len() as u64 + 1]));

    // Everything was acknowledged or terminated: the work queue is empty.
    let mut stream = context.get_stream("KIBAN_INGEST").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    running.stop().await;
    assert_eq!(state.messages, 0, "{state:?}");
}

#[tokio::test]
async fn a_re_sent_message_after_the_duplicate_window_gets_the_same_receipt_and_is_stored_once() {
    let options = kiban_bus::streams::StreamOptions {
        ingest_duplicate_window: Duration::from_millis(100),
        ..stream_options(1)
    };
    let (_server, client, context) = setup(options).await;
    let (store, _dir) = sqlite_store().await;
    let mut subscriber = receipt_subscriber(&client).await;
    let running = Running::start(client.clone(), RecordingHandler::new(store.clone()));

    let id = new_id();
    let kind = "certification.filed";
    publish(
        &context,
        INSURER,
        kind,
        &id.to_string(),
        message(id, INSURER, kind, 1),
    )
    .await;
    let first = receipts(&mut subscriber, 1).await.remove(0);
    // Well past the 100 ms window (the least nats-server allows), so JetStream lets the re-send through.
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(
        &context,
        INSURER,
        kind,
        &id.to_string(),
        message(id, INSURER, kind, 1),
    )
    .await;
    let second = receipts(&mut subscriber, 1).await.remove(0);
    running.stop().await;

    assert_eq!(first.status, ReceiptStatus::Accepted);
    assert_eq!(first, second);
    assert_eq!(stored_ids(&store).await, vec![id.to_string()]);
}

/// Unavailable for the first `failures` calls, then records.
struct FlakyHandler {
    inner: RecordingHandler<Store>,
    calls: Arc<AtomicUsize>,
    failures: usize,
}

impl IngestHandler for FlakyHandler {
    async fn handle(&self, message: IngestMessage) -> Result<Verdict, Unavailable> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Unavailable("the store is down (test)".to_owned()));
        }
        self.inner.handle(message).await
    }
}

#[tokio::test]
async fn a_transient_handler_failure_is_redelivered_not_acknowledged() {
    let (_server, client, context) = setup(stream_options(1)).await;
    let (store, _dir) = sqlite_store().await;
    let mut subscriber = receipt_subscriber(&client).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = FlakyHandler {
        inner: RecordingHandler::new(store.clone()),
        calls: calls.clone(),
        failures: 2,
    };
    let running = Running::start(client.clone(), handler);

    let id = new_id();
    let kind = "certification.filed";
    publish(
        &context,
        INSURER,
        kind,
        &id.to_string(),
        message(id, INSURER, kind, 1),
    )
    .await;
    let receipt = receipts(&mut subscriber, 1).await.remove(0);
    running.stop().await;
    // A marker on the receipt subject, published on the consumer's own
    // connection after it stopped: NATS keeps one connection's messages in
    // order, so every receipt the consumer sent arrives before the marker.
    client
        .publish(format!("kiban.receipts.{INSURER}"), "marker".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let after = bounded("the marker", subscriber.next())
        .await
        .expect("subscription open");

    assert_eq!(receipt.status, ReceiptStatus::Accepted);
    assert_eq!(receipt.event_id.map(|id| *id.as_uuid()), Some(id));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two failures, then the success"
    );
    assert_eq!(stored_ids(&store).await, vec![id.to_string()]);
    // No receipt was sent for the failed attempts: the one receipt was the
    // success's, and the next message on the subject is the marker.
    assert_eq!(&after.payload[..], b"marker", "a second receipt was sent");
}

use futures::StreamExt;

/// The engine on `store`, with the test insurer onboarded by the federation:
/// facts of an insurer that is not are refused (`insurer_not_onboarded`).
async fn onboarded_engine(store: &Store) -> Arc<kiban_engine::Engine<Store>> {
    use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
    let engine = Arc::new(kiban_engine::Engine::new(store.clone()));
    let insurer = kiban_events::ids::InsurerNumber::parse(INSURER).unwrap();
    let context = kiban_engine::CommandContext::new(
        kiban_events::EventId::from_uuid(new_id()).unwrap(),
        kiban_events::envelope::Actor::Federation,
        chrono::Utc::now(),
    );
    engine
        .execute::<Insurer>(
            &insurer_stream(&insurer),
            &InsurerCommand::Onboard { insurer },
            &context,
        )
        .await
        .unwrap();
    engine
}

/// Subscribes to the test insurer's receipts.
async fn receipt_subscriber(client: &async_nats::Client) -> async_nats::Subscriber {
    client
        .subscribe(format!("kiban.receipts.{INSURER}"))
        .await
        .unwrap()
}

/// The day `offset` days after the test story's first day, thirty days
/// ago: from the clock, since the platform refuses a message whose
/// `occurred_at` is over two years old.
fn story_day(offset: i64) -> chrono::NaiveDate {
    chrono::Utc::now().date_naive() - chrono::Duration::days(30 - offset)
}

/// Publishes the filing of application `application` of the test person.
async fn publish_filing(context: &jetstream::Context, application: u32) -> String {
    let day = story_day(0);
    publish_fact(
        context,
        "certification.filed",
        application,
        &format!("{day}T09:00:00+09:00"),
        &format!(r#"{{"kind":"new","applicant":{{"by":"person"}},"applied_on":"{day}"}}"#),
    )
    .await
}

/// Publishes the scheduling of the investigation of application
/// `application` of the test person.
async fn publish_scheduling(context: &jetstream::Context, application: u32) -> String {
    publish_fact(
        context,
        "certification.investigation_scheduled",
        application,
        &format!("{}T09:00:00+09:00", story_day(1)),
        &format!(r#"{{"scheduled_on":"{}"}}"#, story_day(9)),
    )
    .await
}

/// Publishes a message for application `application` of the test person.
async fn publish_fact(
    context: &jetstream::Context,
    kind: &str,
    application: u32,
    occurred: &str,
    body: &str,
) -> String {
    let id = new_id();
    let text = format!(
        r#"{{"event_id":"{id}","kind":"{kind}","insurer":"{INSURER}","insured":"0000012345","application":{application},"occurred_at":"{occurred}","body":{body}}}"#
    );
    publish(context, INSURER, kind, &id.to_string(), text).await;
    id.to_string()
}

#[tokio::test]
async fn through_the_engine_a_workflow_is_recorded_and_an_impossible_transition_is_rejected() {
    let (_server, client, context) = setup(stream_options(1)).await;
    let (store, _dir) = sqlite_store().await;
    let mut subscriber = receipt_subscriber(&client).await;
    let engine = onboarded_engine(&store).await;
    let running = Running::start(
        client.clone(),
        kiban_bus::engine::EngineHandler::new(engine),
    );

    let filed = publish_filing(&context, 1).await;
    let scheduled = publish_scheduling(&context, 1).await;
    // Application 2 was never filed: scheduling its investigation breaks a rule.
    let impossible = publish_scheduling(&context, 2).await;
    let answers = receipts(&mut subscriber, 3).await;
    running.stop().await;

    let by_id = |id: &str| {
        answers
            .iter()
            .find(|r| r.event_id.unwrap().to_string() == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id(&filed).status,
        ReceiptStatus::Accepted,
        "{:?}",
        by_id(&filed)
    );
    assert_eq!(
        by_id(&scheduled).status,
        ReceiptStatus::Accepted,
        "{:?}",
        by_id(&scheduled)
    );
    let rejected = by_id(&impossible);
    assert_eq!(rejected.status, ReceiptStatus::Rejected);
    assert!(rejected.code.is_some() && rejected.message.is_some());
    let stream = "certification/131016-0000012345-2".parse().unwrap();
    assert!(
        store.read_stream(&stream, 1, 10).await.unwrap().is_empty(),
        "nothing stored for the rejection"
    );
}

#[tokio::test]
async fn a_message_a_killed_consumer_held_comes_back_before_newer_messages_of_its_person() {
    let (_server, client, context) = setup(stream_options(1)).await;
    let (store, _dir) = sqlite_store().await;
    let mut subscriber = receipt_subscriber(&client).await;
    let filed = publish_filing(&context, 1).await;
    // A process pulled the filing from the durable consumer and was killed
    // before acknowledging it: JetStream counts it as delivered and pending.
    {
        let consumer = kiban_bus::streams::ingest_consumer(&context).await.unwrap();
        let mut held = consumer.fetch().max_messages(1).messages().await.unwrap();
        let message = bounded("the held message", held.next())
            .await
            .expect("one message")
            .unwrap();
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
        assert_eq!(id.map(|v| v.as_str()), Some(filed.as_str()));
    }
    // The person's next step arrives while the filing is still unacknowledged.
    let scheduled = publish_scheduling(&context, 1).await;

    // The restarted process: the engine behind the real consumer loop.
    let engine = onboarded_engine(&store).await;
    let running = Running::start(
        client.clone(),
        kiban_bus::engine::EngineHandler::new(engine),
    );
    let answers = receipts(&mut subscriber, 2).await;
    running.stop().await;

    let order: Vec<String> = answers
        .iter()
        .map(|receipt| receipt.event_id.unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        vec![filed, scheduled],
        "the held filing is handled first: {answers:?}"
    );
    for receipt in &answers {
        assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
    }
    let stream = "certification/131016-0000012345-1".parse().unwrap();
    let recorded: Vec<String> = store
        .read_stream(&stream, 1, 10)
        .await
        .unwrap()
        .iter()
        .map(|event| event.event_type.to_string())
        .collect();
    assert_eq!(
        recorded,
        [
            "certification.filed",
            "certification.investigation_scheduled"
        ]
    );
}
