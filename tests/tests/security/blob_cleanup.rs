//! Low item: blobs had no clean-up. An attachment uploaded and never named
//! by an application stayed for ever (the quota bounds it per day only).
//! Now the writing process removes the bytes no recorded event names a week
//! (`UNREFERENCED_BLOB_RETENTION_HOURS`) after their last upload; what an
//! event names (an application's attachments, the investigation sheet) is
//! never removed, and an application may name only uploads younger than six
//! days (`UPLOAD_ATTACHABLE_HOURS`), the day between closing the race with a
//! sweep that looked before the application was accepted. Time passes by
//! moving the rows' upload times back (`TestDb::tamper`), never by waiting.

use chrono::Utc;
use kiban_tests::{Backend, TestDb};
use reqwest::StatusCode;
use serde_json::Value;

use super::attachments::{
    an_investigation_sheet, application, apply, attachment, download, sha256_hex,
};
use crate::api::{Harness, office_t01, own_insurer};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, OFFICE, WAITING_PERSON};

on_both_backends!(
    an_unattached_upload_is_removed_after_the_retention_and_what_events_name_stays,
    an_upload_named_after_the_sweep_looked_is_not_removed,
);

/// Moves the stored and upload times of the blob `digest` `hours` back.
async fn age(db: &TestDb, digest: &str, hours: i64) {
    let sql = match db.backend() {
        Backend::Postgres => format!(
            "UPDATE blobs SET stored_at = stored_at - interval '{hours} hours' \
             WHERE sha256 = decode('{digest}', 'hex'); \
             UPDATE blob_uploads SET uploaded_at = uploaded_at - interval '{hours} hours' \
             WHERE sha256 = decode('{digest}', 'hex');"
        ),
        Backend::Sqlite => {
            let micros = hours * 3_600_000_000;
            format!(
                "UPDATE blobs SET stored_at = stored_at - {micros} WHERE sha256 = X'{digest}'; \
                 UPDATE blob_uploads SET uploaded_at = uploaded_at - {micros} \
                 WHERE sha256 = X'{digest}';"
            )
        }
    };
    db.tamper(&sql).await;
}

fn digest(reference: &Value) -> &str {
    reference["sha256"].as_str().expect("a reference")
}

async fn stored(h: &Harness, digest: &str) -> bool {
    h.store.get_blob(digest).await.unwrap().is_some()
}

/// The office reads the attachment `reference` of its first application.
async fn read_back(h: &Harness, reference: &Value) -> (StatusCode, Vec<u8>) {
    let path = format!("/v1/subsidies/{OFFICE}-1/attachments/{}", digest(reference));
    let (status, _, bytes) = download(h, &office_t01(), &path).await;
    (status, bytes)
}

async fn an_unattached_upload_is_removed_after_the_retention_and_what_events_name_stays(
    db: &TestDb,
) {
    let h = Harness::start(db).await;
    let sheet = an_investigation_sheet(&h).await;
    let receipt = attachment(&h, "application/pdf", b"receipt of the card reader").await;
    let notice = attachment(&h, "application/pdf", b"designation notice 43").await;
    let passbook = attachment(&h, "image/jpeg", b"passbook copy").await;
    let (status, body) = apply(&h, application(&passbook, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stray_bytes = b"a receipt never applied with";
    let stray = attachment(&h, "application/pdf", stray_bytes).await;
    let recent = attachment(&h, "application/pdf", b"a receipt uploaded yesterday").await;

    // Eight days pass for everything but `recent`, uploaded a day ago.
    for old in [&receipt, &notice, &passbook, &stray] {
        age(db, digest(old), 8 * 24).await;
    }
    age(db, &sha256_hex(&sheet), 8 * 24).await;
    age(db, digest(&recent), 24).await;

    // The operator's on-demand sweep (`kiban admin sweep-blobs`).
    let line = kiban_system::admin::sweep_blobs(db.url()).await.unwrap();
    assert!(
        line.contains(&format!(
            "1 unattached uploads older than 7 days removed ({} bytes)",
            stray_bytes.len()
        )),
        "{line}"
    );
    assert!(!stored(&h, digest(&stray)).await, "its bytes are gone");
    // ... and so is its upload record.
    let office_uploads = format!("office:{OFFICE}");
    let uploads = h.store.uploads_of(digest(&stray), &office_uploads).await;
    assert_eq!(uploads.unwrap(), []);
    assert!(stored(&h, digest(&recent)).await, "a recent upload stays");

    // What the recorded events name stays, and reads back over HTTPS.
    let (status, bytes) = read_back(&h, &passbook).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, &b"passbook copy"[..])
    );
    for named in [&receipt, &notice] {
        assert_eq!(read_back(&h, named).await.0, StatusCode::OK);
    }
    h.caught_up().await;
    let path = format!(
        "/v1/persons/{INSURER}/{WAITING_PERSON}/documents/{}",
        sha256_hex(&sheet)
    );
    let (status, _, bytes) = download(&h, &own_insurer(), &path).await;
    assert_eq!((status, bytes), (StatusCode::OK, sheet));

    // A second sweep finds nothing more to do.
    let again = h.store.sweep_blobs(Utc::now()).await.unwrap();
    assert_eq!((again.references_recorded, again.blobs_removed), (0, 0));
    h.stop().await;
}

async fn an_upload_named_after_the_sweep_looked_is_not_removed(db: &TestDb) {
    let h = Harness::start(db).await;
    let receipt = attachment(&h, "application/pdf", b"receipt of the card reader").await;
    let notice = attachment(&h, "application/pdf", b"designation notice 43").await;
    let passbook = attachment(&h, "image/jpeg", b"passbook copy").await;
    // The passbook was uploaded five days ago (still attachable), the
    // receipt six and a half days ago (no longer: it is a day from removal).
    age(db, digest(&passbook), 5 * 24).await;
    age(db, digest(&receipt), 6 * 24 + 12).await;

    // The sweep looks: no event names any of them yet.
    h.store.record_blob_references().await.unwrap();

    // An application naming the old receipt is refused: upload it again.
    let (status, body) = apply(&h, application(&passbook, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("again"), "{body}");
    let again = attachment(&h, "application/pdf", b"receipt of the card reader").await;
    assert_eq!(again, receipt, "the same bytes, the same reference");
    // Accepted after the sweep looked ...
    let (status, body) = apply(&h, application(&passbook, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // ... and the sweep's removal, with the week's cutoff, keeps its bytes:
    // the newest of them is more than a day younger than the cutoff.
    let cutoff =
        Utc::now() - chrono::Duration::hours(kiban_store::UNREFERENCED_BLOB_RETENTION_HOURS);
    let (removed, _) = h.store.remove_unreferenced_blobs(cutoff).await.unwrap();
    assert_eq!(removed, 0);
    for named in [&passbook, &receipt, &notice] {
        assert!(stored(&h, digest(named)).await);
    }

    // Weeks later the next sweep has read the application: named, kept.
    for named in [&passbook, &receipt, &notice] {
        age(db, digest(named), 30 * 24).await;
    }
    let swept = h.store.sweep_blobs(Utc::now()).await.unwrap();
    assert_eq!(swept.blobs_removed, 0);
    let (status, bytes) = read_back(&h, &passbook).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, &b"passbook copy"[..])
    );
    h.stop().await;
}
