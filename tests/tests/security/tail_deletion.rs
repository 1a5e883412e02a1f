//! Item 11: deleting the tail of the log (or checkpoint rows) is found.
//! The tampering is plain SQL, as an auditor trying it by hand would do.

use kiban_events::ExpectedVersion;
use kiban_store::{BreakReason, Error, PlatformKey, Store, VerifyReport};
use kiban_tests::{TestDb, events, stream};
use reqwest::StatusCode;

use crate::api::{Harness, auditor};
use crate::projections::on_both_backends;

on_both_backends!(
    a_store_cut_below_its_signed_checkpoint_fails_verification_and_refuses_writes,
    verifying_from_a_checkpoint_first_checks_the_event_it_signed,
    ;
    and_pair:
    deleted_checkpoint_rows_and_a_cut_tail_are_reported_over_https,
);

/// A store of twelve events with a signed checkpoint at 12.
async fn signed_twelve(db: &TestDb) -> (Store, PlatformKey) {
    let store = db.open().await;
    store
        .append(&stream("audit", "tail"), ExpectedVersion::Any, events(12))
        .await
        .unwrap();
    let key = PlatformKey::generate();
    let checkpoint = store.create_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(checkpoint.position, 12);
    (store, key)
}

fn truncated_at(report: &VerifyReport) -> Option<(u64, u64, u64)> {
    match report {
        VerifyReport::Broken {
            position,
            reason:
                BreakReason::Truncated {
                    head,
                    signed_position,
                },
            ..
        } => Some((*position, *head, *signed_position)),
        _ => None,
    }
}

async fn a_store_cut_below_its_signed_checkpoint_fails_verification_and_refuses_writes(
    db: &TestDb,
) {
    let (store, key) = signed_twelve(db).await;
    store.close().await;
    db.tamper("DELETE FROM events WHERE position >= 10").await;

    let store = db.open().await;
    let report = store.verify(1, None).await.unwrap();
    assert_eq!(
        truncated_at(&report),
        Some((10, 9, 12)),
        "plain verify names the missing range 10..=12: {report:?}"
    );
    let (used, report) = store
        .verify_from_checkpoint(&key.public_key(), None, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(used.unwrap().position, 12);
    assert_eq!(truncated_at(&report), Some((10, 9, 12)), "{report:?}");

    // Appending would reuse positions 10.. and bury the evidence.
    let refused = store
        .append(&stream("audit", "tail"), ExpectedVersion::Any, events(1))
        .await;
    match refused {
        Err(Error::NotWriter(message)) => {
            assert!(message.contains("10..=12"), "{message}");
        }
        other => panic!("a cut store must refuse to write: {other:?}"),
    }
    assert_eq!(store.head().await.unwrap().position, 9);
    store.close().await;
}

async fn verifying_from_a_checkpoint_first_checks_the_event_it_signed(db: &TestDb) {
    let (store, key) = signed_twelve(db).await;
    // The signed event's content changes (and nothing after it exists to
    // link to it): walking on from the checkpoint alone would see nothing.
    db.tamper("UPDATE events SET payload = '{\"n\":\"changed\"}' WHERE position = 12")
        .await;
    let (_, report) = store
        .verify_from_checkpoint(&key.public_key(), None, &mut |_| {})
        .await
        .unwrap();
    match report {
        VerifyReport::Broken { position: 12, .. } => {}
        other => panic!("the change at the checkpoint was not found: {other:?}"),
    }
    store.close().await;
}

async fn deleted_checkpoint_rows_and_a_cut_tail_are_reported_over_https(db: &TestDb) {
    let h = Harness::start(db).await;
    let key = PlatformKey::generate();
    let first = h.store.create_checkpoint(&key).await.unwrap().unwrap();
    // One more event (a consent), then a second checkpoint linked to the first.
    let path = format!(
        "/v1/persons/{}/{}/consents",
        crate::projections::script::INSURER,
        crate::projections::script::WAITING_PERSON
    );
    let consent = serde_json::json!({
        "office": "1319999999", "terminal": "T-09",
        "expires_at": crate::projections::script::day(40),
    });
    let (status, body) = h
        .call(
            Some(&crate::api::federation()),
            reqwest::Method::POST,
            &path,
            Some(consent),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = h.store.create_checkpoint(&key).await.unwrap().unwrap();
    assert!(second.position > first.position);

    let (status, body) = h.get(&auditor(), "/v1/audit/verify").await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &serde_json::json!("verified")),
        "{body}"
    );

    db.tamper(&format!(
        "DELETE FROM events WHERE position > {}",
        first.position
    ))
    .await;
    let (status, body) = h.get(&auditor(), "/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "broken", "{body}");
    assert_eq!(body["reason"]["kind"], "truncated", "{body}");
    assert_eq!(body["reason"]["signed_position"], second.position, "{body}");
    db.tamper(&format!(
        "DELETE FROM audit_checkpoints WHERE position = {}",
        first.position
    ))
    .await;
    let (status, body) = h.get(&auditor(), "/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "broken", "{body}");
    assert_eq!(body["position"], first.position, "{body}");
    assert_eq!(body["reason"]["kind"], "checkpoint_deleted", "{body}");
    assert_eq!(body["reason"]["named_by"], second.position, "{body}");

    h.stop().await;
}
