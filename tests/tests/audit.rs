//! Audit (docs/audit.md), on PostgreSQL and SQLite: tampering by direct SQL
//! is found and named (changed payload, deleted row, swapped rows, and a
//! rewrite of the whole history with recomputed hashes, found only through
//! a signed checkpoint); verification from a checkpoint; read models as of
//! an earlier position equal exactly what the live projections held then.

use std::sync::Arc;

use kiban_engine::Engine;
use kiban_events::{ExpectedVersion, Hash, RecordedEvent};
use kiban_projections::{Db, Projections, ReadModelsAsOf, models};
use kiban_store::{
    BreakReason, CheckpointCheck, PlatformKey, Store, VerifyRange, VerifyReport, chain_hash,
};
use kiban_tests::{Backend, TestDb, bounded, events, on_both_backends, stream};

use crate::projections::script::{ANY_CREDENTIAL, INSURER, PERSON, history, ingest, link_a_card};

on_both_backends!(
    a_changed_payload_is_named,
    a_deleted_row_is_named,
    swapped_rows_are_named,
    a_rewrite_with_recomputed_hashes_is_found_by_the_signed_checkpoint,
    verify_starts_from_a_signed_checkpoint_and_trusts_its_hash,
    read_models_as_of_a_position_equal_the_live_ones_then,
    the_checkpointer_signs_every_k_events,
    ;
    and_pair:
    auditors_verify_and_see_a_person_as_of_a_moment_over_https,
);

async fn twelve_events(db: &TestDb) -> (Store, Vec<RecordedEvent>) {
    let store = db.open().await;
    let (a, b) = (stream("audit", "a"), stream("audit", "b"));
    for (s, n) in [(&a, 4), (&b, 3), (&a, 5)] {
        store
            .append(s, ExpectedVersion::Any, events(n))
            .await
            .unwrap();
    }
    let all = store.read_all(1, 100).await.unwrap();
    assert_eq!(all.len(), 12);
    (store, all)
}

fn broken_at(report: VerifyReport, expected: u64) -> BreakReason {
    match report {
        VerifyReport::Broken {
            position, reason, ..
        } => {
            assert_eq!(position, expected, "first broken position ({reason:?})");
            reason
        }
        VerifyReport::Verified { .. } => panic!("the tampering at {expected} was not found"),
    }
}

async fn a_changed_payload_is_named(db: &TestDb) {
    let (store, _) = twelve_events(db).await;
    db.tamper(r#"UPDATE events SET payload = '{"n":42}' WHERE position = 6"#)
        .await;
    let reason = broken_at(store.verify(1, None).await.unwrap(), 6);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
    store.close().await;
}

async fn a_deleted_row_is_named(db: &TestDb) {
    let (store, _) = twelve_events(db).await;
    db.tamper("DELETE FROM events WHERE position = 9").await;
    assert_eq!(
        broken_at(store.verify(1, None).await.unwrap(), 9),
        BreakReason::Missing
    );
    store.close().await;
}

async fn swapped_rows_are_named(db: &TestDb) {
    let (store, _) = twelve_events(db).await;
    db.tamper(
        "UPDATE events SET position = 1000000 WHERE position = 7; \
         UPDATE events SET position = 7 WHERE position = 8; \
         UPDATE events SET position = 8 WHERE position = 1000000;",
    )
    .await;
    // The row now at 7 is event 8's: its canonical bytes name position 8,
    // so it does not hash to its stored hash here (rows store no link of
    // their own since migration 0010; docs/store.md "Lean rows").
    let reason = broken_at(store.verify(1, None).await.unwrap(), 7);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
    store.close().await;
}

/// Rewrites every row from `from` on with `payload` at `changed` and the
/// whole chain recomputed: what an attacker with database access and the
/// (public) hashing rule can do. The chain stays internally consistent.
async fn rewrite_history(db: &TestDb, all: &[RecordedEvent], changed: u64, payload: &str) {
    let mut prev = Hash::GENESIS;
    let mut sql = String::new();
    for event in all {
        let mut event = event.clone();
        if event.position == changed {
            event.payload = kiban_events::Payload::from_json(payload).unwrap();
        }
        let hash = chain_hash(&prev, &event.canonical_bytes());
        let bytes = |h: &Hash| match db.backend() {
            Backend::Postgres => format!("decode('{h}', 'hex')"),
            Backend::Sqlite => format!("X'{h}'"),
        };
        sql.push_str(&format!(
            "UPDATE events SET payload = '{}', hash = {} WHERE position = {};\n",
            event.payload.as_str(),
            bytes(&hash),
            event.position
        ));
        prev = hash;
    }
    db.tamper(&sql).await;
}

async fn a_rewrite_with_recomputed_hashes_is_found_by_the_signed_checkpoint(db: &TestDb) {
    let (store, all) = twelve_events(db).await;
    let key = PlatformKey::generate();
    let checkpoint = store.create_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!((checkpoint.position, checkpoint.hash), (12, all[11].hash));
    let export = store.export_checkpoints(&key.public_key()).await.unwrap();
    assert!(matches!(
        store.check_export(&export, &mut |_| {}).await.unwrap(),
        CheckpointCheck::Consistent {
            checkpoints: 1,
            events_verified: 12,
            ..
        }
    ));

    rewrite_history(db, &all, 3, r#"{"n":"rewritten"}"#).await;
    // The rewritten chain is internally consistent: plain verify passes…
    let VerifyReport::Verified { head_hash, .. } = store.verify(1, None).await.unwrap() else {
        panic!("a recomputed chain verifies on its own");
    };
    assert_ne!(head_hash, all[11].hash);
    // …but it no longer passes through the signed hash.
    match store.check_export(&export, &mut |_| {}).await.unwrap() {
        CheckpointCheck::Broken(report) => {
            let reason = broken_at(report, 12);
            assert_eq!(
                reason,
                BreakReason::CheckpointMismatch {
                    signed: all[11].hash,
                    stored: head_hash
                }
            );
        }
        other => panic!("the rewrite was not found: {other:?}"),
    }
    // An edited export (another hash, same signature) fails its signature.
    let mut forged = export.clone();
    forged.checkpoints[0].hash = head_hash;
    assert_eq!(
        store.check_export(&forged, &mut |_| {}).await.unwrap(),
        CheckpointCheck::BadSignature { position: 12 }
    );
    store.close().await;
}

async fn verify_starts_from_a_signed_checkpoint_and_trusts_its_hash(db: &TestDb) {
    let (store, _) = twelve_events(db).await;
    let key = PlatformKey::generate();
    // Only 7 events exist at the first checkpoint.
    db.tamper("DELETE FROM events WHERE position > 7").await;
    drop(store);
    let store = db.open().await;
    let first = store.create_checkpoint(&key).await.unwrap().unwrap();
    assert_eq!(first.position, 7);
    store
        .append(&stream("audit", "c"), ExpectedVersion::Any, events(5))
        .await
        .unwrap();
    let mut seen = 0;
    let (used, report) = store
        .verify_from_checkpoint(&key.public_key(), None, &mut |n| seen = n)
        .await
        .unwrap();
    assert_eq!(used.unwrap().position, 7);
    assert!(
        matches!(report, VerifyReport::Verified { events: 5, .. }),
        "{report:?}"
    );
    assert_eq!(seen, 5, "progress reports the events checked");

    // The stored hash at the checkpoint is altered: the events after it no
    // longer link to the signed hash, whatever the stored row says.
    db.tamper(
        "UPDATE events SET hash = (SELECT hash FROM events WHERE position = 2) WHERE position = 7",
    )
    .await;
    let range = VerifyRange {
        from: 8,
        to: None,
        anchor: Some(first.hash),
        checkpoints: Vec::new(),
    };
    assert!(
        matches!(
            store.verify_with(&range, &mut |_| {}).await.unwrap(),
            VerifyReport::Verified { .. }
        ),
        "event 8 still links to the signed hash"
    );
    db.tamper(r#"UPDATE events SET payload = '{"n":"changed"}' WHERE position = 8"#)
        .await;
    let reason = broken_at(store.verify_with(&range, &mut |_| {}).await.unwrap(), 8);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
    store.close().await;
}

async fn read_models_as_of_a_position_equal_the_live_ones_then(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let read_db = Db::open(db.url()).await.unwrap();
    let projections = Projections::start(read_db, store.clone(), models::all())
        .await
        .unwrap();
    history(&engine, ANY_CREDENTIAL).await;
    // So that every read model has documents.
    let then = link_a_card(&engine).await;
    bounded("caught up", projections.wait_for(then))
        .await
        .unwrap();
    let names = projections.names();
    let mut before = Vec::new();
    for name in &names {
        before.push(projections.db().dump(name).await.unwrap());
    }
    // History moves on.
    let later = ingest(
        &engine,
        INSURER,
        PERSON,
        None,
        "insured.equipment_purchase_recorded",
        28,
        serde_json::json!({"category": "walker", "purchased_on": "2026-05-29", "cost": 10000, "seller_designated": true, "replacement_reason": null}),
    )
    .await;
    assert!(later > then);
    bounded("caught up", projections.wait_for(later))
        .await
        .unwrap();

    let as_of = ReadModelsAsOf::build(&store, &models::all(), then)
        .await
        .unwrap();
    assert_eq!(as_of.position, then);
    for (name, before) in names.iter().zip(&before) {
        let replayed = as_of.db().dump(name).await.unwrap();
        assert!(!replayed.is_empty(), "{name} has documents");
        assert_eq!(
            &replayed, before,
            "{name} as of {then} equals the live state then"
        );
    }
    let care = names
        .iter()
        .position(|n| *n == "care")
        .expect("a care projection");
    assert_ne!(
        projections.db().dump("care").await.unwrap(),
        before[care],
        "the live care projection moved on"
    );
    as_of.close().await;

    // As of a time: the event at `then` was recorded at or before its own time.
    let recorded = store.read_all(then, 1).await.unwrap()[0].recorded_at;
    assert!(store.position_at(recorded).await.unwrap() >= then);
    let first = store.read_all(1, 1).await.unwrap()[0].recorded_at;
    assert_eq!(
        store
            .position_at(first - chrono::Duration::microseconds(1))
            .await
            .unwrap(),
        0
    );
    projections.stop().await;
    store.close().await;
}

async fn auditors_verify_and_see_a_person_as_of_a_moment_over_https(db: &TestDb) {
    use crate::api::{Harness, auditor, office_t01, problem_type};
    use reqwest::StatusCode;

    let h = Harness::start(db).await;
    let (status, body) = h.get(&office_t01(), "/v1/audit/verify").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(problem_type(&body), "urn:kiban:problem:forbidden");
    let head = h.store.head().await.unwrap();
    let (status, body) = h.get(&auditor(), "/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "verified");
    assert_eq!(body["events"], head.position);
    assert_eq!(body["head_hash"], head.hash.to_string());
    assert!(body.get("next_from").is_none(), "{body}");
    let (status, body) = h.get(&auditor(), "/v1/audit/verify?from=3&to=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = h.get(&auditor(), "/v1/audit/verify?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Page by page: two events per request, each page names the next,
    // the last page none; together they cover the chain.
    let (mut next, mut pages, mut checked) = (Some(1_u64), 0, 0_u64);
    while let Some(from) = next {
        let (status, body) = h
            .get(&auditor(), &format!("/v1/audit/verify?from={from}&limit=2"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["outcome"], "verified", "{body}");
        assert_eq!(body["from"], from, "{body}");
        checked += body["events"].as_u64().unwrap();
        next = body["next_from"].as_u64();
        if next.is_none() {
            assert_eq!(body["to"], head.position, "{body}");
            assert_eq!(body["head_hash"], head.hash.to_string());
        }
        pages += 1;
    }
    assert_eq!(checked, head.position);
    assert_eq!(pages, head.position.div_ceil(2));

    // Before the person's first event the person does not exist; at the
    // head the certification is there.
    let path = format!("/v1/audit/persons/{INSURER}/{PERSON}");
    let (status, body) = h.get(&auditor(), &format!("{path}?at_position=1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = h
        .get(&auditor(), &format!("{path}?at_position={}", head.position))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["position"], head.position);
    assert!(
        !body["certifications"].as_array().unwrap().is_empty(),
        "{body}"
    );
    let (status, body) = h.get(&auditor(), &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = h
        .get(
            &auditor(),
            &format!(
                "/v1/audit/offices/{}/access-log",
                crate::projections::script::OFFICE
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.is_array());
    h.stop().await;
}

/// Waits (bounded only to turn a hang into a failure) for a checkpoint
/// beyond `after`.
async fn checkpoint_after(store: &Store, after: u64) -> kiban_store::Checkpoint {
    bounded("a checkpoint", async {
        loop {
            if let Some(c) = store.latest_checkpoint(None).await.unwrap()
                && c.position > after
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn the_checkpointer_signs_every_k_events(db: &TestDb) {
    let store = db.open().await;
    let key = PlatformKey::generate();
    store.spawn_checkpointer(key.clone(), 5, std::time::Duration::from_millis(10));
    // One append of 12 events: the head jumps from 0 to 12.
    store
        .append(&stream("audit", "k"), ExpectedVersion::Any, events(12))
        .await
        .unwrap();
    let checkpoint = checkpoint_after(&store, 0).await;
    assert_eq!(checkpoint.position, 12);
    assert!(checkpoint.signature_valid(&key.public_key()));
    assert_eq!(checkpoint.hash, store.head().await.unwrap().hash);
    store
        .append(&stream("audit", "k"), ExpectedVersion::Any, events(5))
        .await
        .unwrap();
    assert_eq!(checkpoint_after(&store, 12).await.position, 17);
    store.close().await;
}
