//! The in-process bus: the embedded mode end to end (publish → checks →
//! handler → store → receipt; store → routing → office), no NATS.

mod common;

use std::sync::Arc;

use common::{INSURER, bounded, message, new_id, sqlite_store};
use kiban_bus::ingest::{ReceiptStatus, codes};
use kiban_bus::local::LocalBus;
use kiban_bus::relay::FileCheckpoints;
use kiban_bus::routing::{Entitlements, run_routing};
use kiban_bus::testing::RecordingHandler;
use kiban_events::RecordedEvent;
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use tokio_util::sync::CancellationToken;

const OFFICE: &str = "1312345678";

/// The one office sees every certification event.
struct OneOffice;

impl Entitlements for OneOffice {
    async fn offices_for(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        Ok(if event.stream.kind() == "certification" {
            vec![OfficeNumber::parse(OFFICE).unwrap()]
        } else {
            Vec::new()
        })
    }
}

#[tokio::test]
async fn the_in_process_bus_records_answers_and_routes_like_nats() {
    let bus = LocalBus::new();
    let (store, directory) = sqlite_store().await;
    let cancel = CancellationToken::new();
    let mut receipts = bus.subscribe_receipts(InsurerNumber::parse(INSURER).unwrap());
    let mut office = bus.subscribe_office(OfficeNumber::parse(OFFICE).unwrap());
    let ingest = {
        let (bus, cancel) = (bus.clone(), cancel.clone());
        let handler = Arc::new(RecordingHandler::new(store.clone()));
        tokio::spawn(async move { bus.run_ingest(handler, cancel).await })
    };
    let routing = {
        let (store, sink, cancel) = (store.clone(), bus.sink(), cancel.clone());
        let checkpoints = FileCheckpoints::new(directory.path().join("checkpoints"));
        tokio::spawn(
            async move { run_routing(&store, &OneOffice, &checkpoints, &sink, cancel).await },
        )
    };

    let kinds = [
        "certification.filed",
        "certification.investigation_scheduled",
        "certification.decided",
    ];
    let mut ids = Vec::new();
    for kind in kinds {
        let id = new_id();
        let subject = format!("kiban.ingest.{INSURER}.{kind}");
        bus.publish_ingest(
            &subject,
            Some(&id.to_string()),
            message(id, INSURER, kind, 1).into_bytes(),
        )
        .await
        .unwrap();
        ids.push(id);
    }
    let bad = new_id();
    bus.publish_ingest(
        &format!("kiban.ingest.{INSURER}.certification.filed"),
        Some(&bad.to_string()),
        b"{oops".to_vec(),
    )
    .await
    .unwrap();
    // Messages about different persons (the malformed one has none) may be
    // answered in any order, as over JetStream; one person's in order.
    let mut answered = std::collections::HashMap::new();
    for _ in 0..=ids.len() {
        let receipt = bounded("a receipt", receipts.next()).await.unwrap();
        answered.insert(*receipt.event_id.unwrap().as_uuid(), receipt);
    }
    for (position, id) in ids.iter().enumerate() {
        let receipt = &answered[id];
        assert_eq!(receipt.status, ReceiptStatus::Accepted);
        assert_eq!(receipt.positions, Some(vec![position as u64 + 1]));
    }
    assert_eq!(answered[&bad].code.as_deref(), Some(codes::MALFORMED_JSON));
    // The receipts prove the spawned consumer holds the queue, so a second
    // consumer on the same bus is refused at once.
    let handler = Arc::new(RecordingHandler::new(store.clone()));
    let second = bounded(
        "the second consumer's refusal",
        bus.run_ingest(handler, cancel.clone()),
    )
    .await;
    assert!(second.is_err());
    for (index, kind) in kinds.iter().enumerate() {
        let update = bounded("an office update", office.next()).await.unwrap();
        assert_eq!(update.position, index as u64 + 1);
        assert_eq!(update.event_type.as_str(), *kind);
    }
    assert_eq!(store.head().await.unwrap().position, 3);
    cancel.cancel();
    bounded("ingest to stop", ingest).await.unwrap().unwrap();
    bounded("routing to stop", routing).await.unwrap().unwrap();
}
