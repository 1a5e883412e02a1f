//! Office routing and the NATS permissions that keep each office (and each
//! municipality) on its own subjects, against a real nats-server started
//! with the configuration documented in docs/nats.md.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{bounded, connect_as, message, new_id, sqlite_store, violation};
use futures::{FutureExt, StreamExt};
use kiban_bus::ingest::MSG_ID_HEADER;
use kiban_bus::relay::FileCheckpoints;
use kiban_bus::routing::{Entitlements, NatsOfficeSink, ROUTING_CHECKPOINT, run_routing};
use kiban_bus::streams::ensure_streams;
use kiban_bus::testing::{NatsServer, stream_options};
use kiban_events::ids::OfficeNumber;
use kiban_events::{
    Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload, RecordedEvent, StreamName,
    UpdateNotice,
};
use tokio_util::sync::CancellationToken;

const OFFICE_A: &str = "1312345678";
const OFFICE_B: &str = "1398765432";

/// The permissions of docs/nats.md, for one kiban service user, two offices
/// and two municipalities.
fn permissions_config() -> String {
    let office = |number: &str| {
        format!(
            r#"{{ user: "office-{number}", password: "secret", permissions: {{
                publish: {{ deny: ">" }},
                subscribe: {{ allow: ["kiban.offices.{number}.updates"] }} }} }}"#
        )
    };
    let municipality = |number: &str| {
        format!(
            r#"{{ user: "insurer-{number}", password: "secret", permissions: {{
                publish: {{ allow: ["kiban.ingest.{number}.>"] }},
                subscribe: {{ allow: ["kiban.receipts.{number}", "_INBOX.>"] }} }} }}"#
        )
    };
    format!(
        r#"
accounts {{
  KIBAN {{
    jetstream: enabled
    users: [
      {{ user: "kiban", password: "secret" }}
      {}
      {}
      {}
      {}
    ]
  }}
}}
"#,
        office(OFFICE_A),
        office(OFFICE_B),
        municipality("131016"),
        municipality("131017"),
    )
}

#[tokio::test]
async fn an_office_cannot_subscribe_to_another_office_and_a_municipality_cannot_publish_for_another_insurer()
 {
    let server = NatsServer::start_with_config(&permissions_config())
        .await
        .unwrap();
    let (kiban, _) = connect_as(&server, "kiban").await;
    ensure_streams(&jetstream::new(kiban.clone()), &stream_options(1))
        .await
        .unwrap();

    let (office_a, mut office_a_errors) = connect_as(&server, &format!("office-{OFFICE_A}")).await;
    let mut own = office_a
        .subscribe(format!("kiban.offices.{OFFICE_A}.updates"))
        .await
        .unwrap();
    let mut other = office_a
        .subscribe(format!("kiban.offices.{OFFICE_B}.updates"))
        .await
        .unwrap();
    let error = violation(&mut office_a_errors, OFFICE_B).await;
    assert!(error.to_lowercase().contains("subscription"), "{error}");
    // Nor the consents subject of its own number: the consent events
    // naming it go to kiban's API processes only (its web screen).
    let _consents = office_a
        .subscribe(format!("kiban.offices.{OFFICE_A}.consents"))
        .await
        .unwrap();
    let error = violation(&mut office_a_errors, "consents").await;
    assert!(error.to_lowercase().contains("subscription"), "{error}");
    office_a.flush().await.unwrap();

    // kiban publishes to both offices; office A gets only its own.
    kiban
        .publish(format!("kiban.offices.{OFFICE_B}.updates"), "for B".into())
        .await
        .unwrap();
    kiban
        .publish(format!("kiban.offices.{OFFICE_A}.updates"), "for A".into())
        .await
        .unwrap();
    kiban.flush().await.unwrap();
    let received = bounded("office A's update", own.next()).await.unwrap();
    assert_eq!(&received.payload[..], b"for A");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.next())
            .await
            .ok()
            .flatten()
            .is_none(),
        "office A must not receive office B's update"
    );
    // An office publishes nothing, not even office updates.
    office_a
        .publish(format!("kiban.offices.{OFFICE_A}.updates"), "forged".into())
        .await
        .unwrap();
    violation(&mut office_a_errors, "Publish").await;

    // Municipality 131016 may publish under its own number only.
    let (municipality, mut municipality_errors) = connect_as(&server, "insurer-131016").await;
    // Its own receipts, subscribed first: in our runs a subscription made
    // after a refused one received nothing.
    let mut receipts_own = municipality
        .subscribe("kiban.receipts.131016")
        .await
        .unwrap();
    let context = jetstream::new(municipality.clone());
    let id = new_id();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID_HEADER, id.to_string().as_str());
    let own_ack = context
        .publish_with_headers(
            "kiban.ingest.131016.certification.filed",
            headers.clone(),
            message(id, "131016", "certification.filed", 1).into(),
        )
        .await
        .unwrap();
    bounded("the own publish ack", own_ack.into_future())
        .await
        .unwrap();
    municipality
        .publish(
            "kiban.ingest.131017.certification.filed",
            message(id, "131017", "certification.filed", 1).into(),
        )
        .await
        .unwrap();
    violation(&mut municipality_errors, "kiban.ingest.131017").await;
    let mut receipts_other = municipality
        .subscribe("kiban.receipts.131017")
        .await
        .unwrap();
    violation(&mut municipality_errors, "kiban.receipts.131017").await;
    // kiban answers both municipalities: first 131017, then 131016 on the
    // same connection. NATS delivers one connection's messages in order, so
    // once 131016's own receipt has arrived, 131017's would have arrived
    // before it had the denied subscription been let through.
    municipality.flush().await.unwrap();
    kiban
        .publish("kiban.receipts.131017", "for 131017".into())
        .await
        .unwrap();
    kiban
        .publish("kiban.receipts.131016", "for 131016".into())
        .await
        .unwrap();
    kiban.flush().await.unwrap();
    let own_receipt = bounded("the municipality's own receipt", receipts_own.next())
        .await
        .expect("the own subscription is open");
    assert_eq!(&own_receipt.payload[..], b"for 131016");
    assert!(
        !matches!(receipts_other.next().now_or_never(), Some(Some(_))),
        "municipality 131016 must not receive 131017's receipts"
    );
    let mut ingest = jetstream::new(kiban)
        .get_stream("KIBAN_INGEST")
        .await
        .unwrap();
    assert_eq!(
        ingest.info().await.unwrap().state.messages,
        1,
        "only the permitted publish was stored"
    );
}

/// Office A sees events whose payload names it; office B sees everything.
struct ByPayload;

impl Entitlements for ByPayload {
    async fn offices_for(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        let mut offices = vec![OfficeNumber::parse(OFFICE_B).unwrap()];
        if event.payload.as_str().contains(OFFICE_A) {
            offices.push(OfficeNumber::parse(OFFICE_A).unwrap());
        }
        Ok(offices)
    }
}

fn event(payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
        event_type: EventType::parse("certification.decided").unwrap(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: Actor::parse("insurer:131016").unwrap(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        payload: Payload::from_json(payload).unwrap(),
    }
}

#[tokio::test]
async fn routing_sends_each_office_what_it_is_entitled_to_in_order_and_resumes_from_its_checkpoint()
{
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let (store, directory) = sqlite_store().await;
    let checkpoints = FileCheckpoints::new(directory.path().join("checkpoints"));
    let mut office_a = client
        .subscribe(format!("kiban.offices.{OFFICE_A}.updates"))
        .await
        .unwrap();
    let mut office_b = client
        .subscribe(format!("kiban.offices.{OFFICE_B}.updates"))
        .await
        .unwrap();
    client.flush().await.unwrap();

    let stream = StreamName::parse("certification/131016-0000012345-1").unwrap();
    for index in 0..10 {
        let office = if index % 2 == 0 { OFFICE_A } else { "none" };
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event(&format!(r#"{{"office":"{office}","n":{index}}}"#))],
            )
            .await
            .unwrap();
    }
    let cancel = CancellationToken::new();
    let sink = NatsOfficeSink::new(client.clone());
    let routing = {
        let (store, checkpoints, sink, cancel) = (
            store.clone(),
            checkpoints.clone(),
            sink.clone(),
            cancel.clone(),
        );
        tokio::spawn(
            async move { run_routing(&store, &ByPayload, &checkpoints, &sink, cancel).await },
        )
    };
    let positions = |messages: Vec<async_nats::Message>| -> Vec<u64> {
        messages
            .iter()
            .map(|m| {
                serde_json::from_slice::<UpdateNotice>(&m.payload)
                    .unwrap()
                    .position
            })
            .collect()
    };
    let for_a = bounded(
        "office A's updates",
        (&mut office_a).take(5).collect::<Vec<_>>(),
    )
    .await;
    let for_b = bounded(
        "office B's updates",
        (&mut office_b).take(10).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(positions(for_a), vec![1, 3, 5, 7, 9]);
    assert_eq!(positions(for_b), (1..=10).collect::<Vec<_>>());
    cancel.cancel();
    bounded("routing to stop", routing).await.unwrap().unwrap();
    use kiban_bus::relay::Checkpoints;
    assert_eq!(
        checkpoints.load(ROUTING_CHECKPOINT).await.unwrap(),
        Some(10)
    );

    // Restarted, it resumes after the checkpoint: B gets only the new event.
    store
        .append(&stream, ExpectedVersion::Any, vec![event(r#"{"n":10}"#)])
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let routing = {
        let (store, checkpoints, sink, cancel) = (
            store.clone(),
            checkpoints.clone(),
            sink.clone(),
            cancel.clone(),
        );
        tokio::spawn(
            async move { run_routing(&store, &ByPayload, &checkpoints, &sink, cancel).await },
        )
    };
    let next = bounded("the new update", office_b.next()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<UpdateNotice>(&next.payload)
            .unwrap()
            .position,
        11
    );
    cancel.cancel();
    bounded("routing to stop", routing).await.unwrap().unwrap();
}

/// The SSE fan-out of an API process (`kiban_bus::fanout`): updates the
/// routing published while the process's NATS node was down are lost to
/// core NATS; after the reconnect the office's stream repairs them from the
/// store, so it still sends every update once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_stream_repairs_from_the_store_what_it_missed_while_its_nats_node_was_down() {
    use kiban_bus::fanout::{OfficeFeeds, follow_office};
    let mut cluster = kiban_bus::testing::NatsCluster::start().await.unwrap();
    let urls = cluster.urls();
    // The routing publishes through node 1; the API process's connection
    // knows only node 0 (not the others the cluster announces).
    let publisher = async_nats::connect(urls[1].as_str()).await.unwrap();
    let follower = async_nats::ConnectOptions::new()
        .ignore_discovered_servers()
        .connect(urls[0].as_str())
        .await
        .unwrap();
    let (store, directory) = sqlite_store().await;
    let checkpoints = FileCheckpoints::new(directory.path().join("checkpoints"));
    let cancel = CancellationToken::new();
    let routing = {
        let (store, cancel) = (store.clone(), cancel.clone());
        let sink = NatsOfficeSink::new(publisher.clone());
        tokio::spawn(async move {
            // Restarted like a part of the system after a failure.
            while run_routing(&store, &ByPayload, &checkpoints, &sink, cancel.clone())
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let feeds = OfficeFeeds::new(follower.clone());
    let office = OfficeNumber::parse(OFFICE_A).unwrap();
    let mut updates = Box::pin(follow_office(
        &feeds,
        store.clone(),
        ByPayload,
        office,
        0,
        false,
    ));
    let stream = StreamName::parse("certification/131016-0000012345-1").unwrap();
    let append = |office: &'static str| {
        let store = store.clone();
        let stream = stream.clone();
        async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![event(&format!(r#"{{"office":"{office}"}}"#))],
                )
                .await
                .unwrap()
                .last_position
        }
    };
    let mut next = async || {
        bounded("an office update", updates.next())
            .await
            .unwrap()
            .unwrap()
            .position
    };
    // The stream is live once it sends an update appended after it opened.
    let first = append(OFFICE_A).await;
    assert_eq!(next().await, first);

    cluster.server(0).kill();
    bounded("the follower to notice", async {
        while follower.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut missed = Vec::new();
    for office in [OFFICE_A, "none", OFFICE_A, "none"] {
        let position = append(office).await;
        if office == OFFICE_A {
            missed.push(position);
        }
    }
    // Routed (through node 1) while node 0 is down.
    let mut tap = publisher
        .subscribe(format!("kiban.offices.{OFFICE_A}.updates"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    cluster.server(0).start_again().await.unwrap();
    let later = append(OFFICE_A).await;
    bounded("the routing to publish the later update", async {
        while let Some(message) = tap.next().await {
            if serde_json::from_slice::<UpdateNotice>(&message.payload)
                .unwrap()
                .position
                == later
            {
                return;
            }
        }
    })
    .await;
    let mut got = Vec::new();
    while got.last() != Some(&later) {
        got.push(next().await);
    }
    missed.push(later);
    assert_eq!(got, missed, "every update once, in order, after the outage");
    cancel.cancel();
    bounded("routing to stop", routing).await.unwrap();
}
