//! A municipality's messages through the in-process bus (the embedded
//! default's transport) into the engine and the store, with receipts: the
//! same path `kiban serve` wires, on PostgreSQL and SQLite.

use std::sync::Arc;

use kiban_bus::engine::EngineHandler;
use kiban_bus::ingest::{Receipt, ReceiptStatus};
use kiban_bus::local::LocalBus;
use kiban_engine::Engine;
use kiban_engine::ingest::MunicipalMessage;
use kiban_events::EventType;
use kiban_tests::{TestDb, bounded};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::{insured, insurer, message_at, recent_start, whole_certification_from};

kiban_tests::on_both_backends!(
    messages_become_events_and_receipts,
    bad_messages_get_rejection_receipts_and_store_nothing,
);

/// The transport's JSON of an engine-level message.
fn wire(message: &MunicipalMessage) -> (String, Vec<u8>) {
    // The wire format is the engine's message, field for field.
    let body = serde_json::to_value(message_json(message)).unwrap();
    let kind = EventType::parse(&message.kind).unwrap();
    let subject = LocalBus::ingest_subject(&message.insurer, &kind);
    (subject, serde_json::to_vec(&body).unwrap())
}

pub(crate) fn message_json(message: &MunicipalMessage) -> serde_json::Value {
    json!({
        "event_id": message.event_id,
        "kind": message.kind,
        "insurer": message.insurer,
        "insured": message.insured,
        "application": message.application,
        "occurred_at": message.occurred_at,
        "body": message.body,
    })
}

/// Starts the ingest consumer with the engine's handler over `db`.
async fn start(db: &TestDb) -> (kiban_store::Store, LocalBus, CancellationToken) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    // The federation onboards the insurer (position 1).
    crate::projections::script::onboard_insurer(&engine, insurer().as_str(), false).await;
    let bus = LocalBus::new();
    let cancel = CancellationToken::new();
    let consumer = bus.clone();
    let handler = Arc::new(EngineHandler::new(engine));
    let stop = cancel.clone();
    tokio::spawn(async move { consumer.run_ingest(handler, stop).await });
    (store, bus, cancel)
}

async fn send(bus: &LocalBus, message: &MunicipalMessage) {
    let (subject, body) = wire(message);
    let id = message.event_id.to_string();
    bus.publish_ingest(&subject, Some(&id), body).await.unwrap();
}

async fn messages_become_events_and_receipts(db: &TestDb) {
    let (store, bus, cancel) = start(db).await;
    let mut receipts = bus.subscribe_receipts(insurer());
    let mut positions = Vec::new();
    for message in whole_certification_from(recent_start(40), &insured()) {
        send(&bus, &message).await;
        let receipt: Receipt = bounded("a receipt", receipts.next()).await.unwrap();
        assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
        assert_eq!(
            receipt.event_id.map(|id| *id.as_uuid()),
            Some(message.event_id)
        );
        positions.extend(receipt.positions.unwrap());
    }
    assert_eq!(positions, (2..=10).collect::<Vec<u64>>());
    assert_eq!(store.head().await.unwrap().position, 10);
    cancel.cancel();
    store.close().await;
}

async fn bad_messages_get_rejection_receipts_and_store_nothing(db: &TestDb) {
    let (store, bus, cancel) = start(db).await;
    let mut receipts = bus.subscribe_receipts(insurer());
    // A decision for an application never filed: the workflow refuses it.
    let start = recent_start(40);
    let decided = message_at(
        start + chrono::Duration::days(21),
        "certification.decided",
        json!({"level": "care_2", "validity": null}),
    );
    send(&bus, &decided).await;
    let receipt = bounded("a receipt", receipts.next()).await.unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Rejected);
    assert_eq!(receipt.code.as_deref(), Some("application_not_filed"));
    // A certification message that does not say which application.
    let scheduled_on = (start + chrono::Duration::days(7)).date_naive();
    let mut unnamed = message_at(
        start + chrono::Duration::days(2),
        "certification.investigation_scheduled",
        json!({"scheduled_on": scheduled_on}),
    );
    unnamed.application = None;
    send(&bus, &unnamed).await;
    let receipt = bounded("a receipt", receipts.next()).await.unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Rejected);
    assert_eq!(
        receipt.code.as_deref(),
        Some("missing_field"),
        "{receipt:?}"
    );
    let kind = EventType::parse("certification.decided").unwrap();
    let subject = LocalBus::ingest_subject(&insurer(), &kind);
    // Not JSON at all: a poison message, rejected, never retried.
    bus.publish_ingest(&subject, None, b"{not json".to_vec())
        .await
        .unwrap();
    let receipt = bounded("a receipt", receipts.next()).await.unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Rejected);
    assert_eq!(store.head().await.unwrap().position, 1);
    cancel.cancel();
    store.close().await;
}
