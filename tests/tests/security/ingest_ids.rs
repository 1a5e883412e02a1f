//! Item 8 (NATS side): a municipality's `event_id` over NATS ingest must be
//! a UUID of version 7 (or 4). kiban derives the ids of its own events as
//! version 5 from public names (forgetting a person, timers, the later
//! events of a command); before the fix an insurer could ingest a message
//! under such an id and so stop kiban from ever recording that event.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::Utc;
use futures::StreamExt;
use kiban_bus::engine::EngineHandler;
use kiban_bus::ingest::{MSG_ID_HEADER, Receipt, ReceiptStatus, run_ingest};
use kiban_bus::testing::{NatsServer, stream_options};
use kiban_engine::Engine;
use kiban_engine::ingest::MunicipalMessage;
use kiban_engine::personal::FORGET_NAMESPACE;
use kiban_events::{Actor, EventType};
use kiban_tests::{Backend, TestDb, bounded};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::{insurer, recent_start, whole_certification_from};

/// Publishes `message` through JetStream the way a municipality does
/// (`Nats-Msg-Id` = its event id) and reads the receipt.
async fn ingest(
    context: &jetstream::Context,
    receipts: &mut async_nats::Subscriber,
    message: &MunicipalMessage,
) -> Receipt {
    let kind = EventType::parse(&message.kind).unwrap();
    let subject = kiban_bus::subjects::ingest_subject(&message.insurer, &kind);
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, message.event_id.to_string().as_str());
    let body = serde_json::to_vec(&crate::ingest::message_json(message)).unwrap();
    bounded("a publish ack", async {
        context
            .publish_with_headers(subject, headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap()
    })
    .await;
    let delivery = bounded("a receipt", receipts.next()).await.unwrap();
    serde_json::from_slice(&delivery.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_ids_kiban_derives_are_refused_so_forgetting_and_timers_still_record() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let engine = Arc::new(
        Engine::new(store.clone()).with_person_keys(kiban_store::PersonKeys::new(store.clone())),
    );
    // Ingest records facts of onboarded insurers only.
    let onboarded =
        crate::projections::script::onboard_insurer(&engine, insurer().as_str(), false).await;
    let server = NatsServer::start().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client.clone());
    kiban_bus::streams::ensure_streams(&context, &stream_options(1))
        .await
        .unwrap();
    let mut receipts = client
        .subscribe(format!("kiban.receipts.{}", insurer()))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_ingest(
        client.clone(),
        Arc::new(EngineHandler::new(engine.clone())),
        cancel.clone(),
    ));

    // Dated from the clock: the ingest refuses messages over two years old.
    let filed = whole_certification_from(recent_start(40), &crate::engine::insured()).remove(0);
    let insured = filed.insured.clone().unwrap();
    let person = kiban_store::keys::person_of(&insurer(), &insured);
    let forget_id = Uuid::new_v5(&FORGET_NAMESPACE, person.as_bytes());
    // The golden name format of `timer_command_id` (engine/src/timers.rs).
    let timer_id = Uuid::new_v5(
        &kiban_engine::TIMER_NAMESPACE,
        format!(
            "certification_deadline:certification/{person}-1:{}",
            filed.body["applied_on"]
                .as_str()
                .unwrap()
                .parse::<chrono::NaiveDate>()
                .unwrap()
                + chrono::Duration::days(30)
        )
        .as_bytes(),
    );
    for (what, id) in [("forget", forget_id), ("timer", timer_id)] {
        let claim = MunicipalMessage {
            event_id: id,
            ..filed.clone()
        };
        let receipt = ingest(&context, &mut receipts, &claim).await;
        assert_eq!(
            (receipt.status, receipt.code.as_deref()),
            (ReceiptStatus::Rejected, Some("invalid_field")),
            "a {what} id (v5) was accepted: {receipt:?}"
        );
    }
    for other_version in [Uuid::from_u128(0x0123_4567_89ab_1def_8123_4567_89ab_cdef)] {
        let claim = MunicipalMessage {
            event_id: other_version,
            ..filed.clone()
        };
        let receipt = ingest(&context, &mut receipts, &claim).await;
        assert_eq!(receipt.status, ReceiptStatus::Rejected, "{receipt:?}");
    }
    assert_eq!(
        store.head().await.unwrap().position,
        onboarded,
        "nothing recorded"
    );
    // The same message under the municipality's own v7 id is recorded.
    let receipt = ingest(&context, &mut receipts, &filed).await;
    assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");

    // Forgetting the person records `insured.person_forgotten`: its id was
    // not taken.
    let forgetting = engine
        .forget_person(&insurer(), &insured, Actor::Insurer(insurer()), Utc::now())
        .await
        .unwrap();
    let events = &forgetting.executed.events;
    assert_eq!(events.len(), 1, "the forgetting was not recorded");
    assert_eq!(*events[0].event_id.as_uuid(), forget_id);
    assert_eq!(events[0].event_type.as_str(), "insured.person_forgotten");

    cancel.cancel();
    bounded("the consumer to stop", consumer)
        .await
        .unwrap()
        .unwrap();
    store.close().await;
}
