//! Low item: the investigation sheet (and the doctor's opinion) was stored
//! before its command was decided (`documents.rs`), so every refused upload
//! — to a decided application, to one that does not exist — left its bytes
//! in the blob store, unreferenced and never cleaned up. Now the command is
//! decided first and the bytes stored only when it is accepted; a retry of
//! an accepted upload still gets the first answer.

use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::{Harness, own_insurer, send};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, PERSON, WAITING_PERSON};

on_both_backends!(a_refused_investigation_sheet_is_not_stored);

/// Uploads `bytes` as the investigation sheet of `insured`'s application
/// `seq` under `key`.
async fn upload(
    h: &Harness,
    insured: &str,
    seq: u32,
    key: &str,
    bytes: &[u8],
) -> (StatusCode, serde_json::Value) {
    let path = format!("/v1/persons/{INSURER}/{insured}/certifications/{seq}/investigation-sheet");
    let request = h
        .client(Some(&own_insurer()))
        .request(Method::POST, format!("{}{path}", h.base))
        .header("Idempotency-Key", key)
        .header("content-type", "application/pdf")
        .body(bytes.to_vec());
    send(request, None).await
}

async fn stored(h: &Harness, bytes: &[u8]) -> bool {
    let sha256 = hex::encode(Sha256::digest(bytes));
    bounded("blob lookup", h.store.get_blob(&sha256))
        .await
        .unwrap()
        .is_some()
}

async fn a_refused_investigation_sheet_is_not_stored(db: &TestDb) {
    let h = Harness::start(db).await;
    // The person's application 1 is decided; application 9 does not exist.
    for (seq, sheet) in [
        (1, b"%PDF-1.4 sheet for a decided application".as_slice()),
        (9, b"%PDF-1.4 sheet for no application".as_slice()),
    ] {
        let key = Uuid::now_v7().to_string();
        let (status, body) = upload(&h, PERSON, seq, &key, sheet).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{seq}: {body}");
        assert!(
            !stored(&h, sheet).await,
            "{seq}: the refused sheet was stored"
        );
    }
    // The waiting person's open application takes it: stored, recorded,
    // and an exact retry gets the first answer.
    let sheet = b"%PDF-1.4 the waiting person's sheet";
    let key = Uuid::now_v7().to_string();
    let (status, first) = upload(&h, WAITING_PERSON, 1, &key, sheet).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(stored(&h, sheet).await);
    let (status, again) = upload(&h, WAITING_PERSON, 1, &key, sheet).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["positions"], &again["replayed"]),
        (&first["positions"], &serde_json::Value::Bool(true)),
        "the first answer, replayed"
    );
    h.stop().await;
}
