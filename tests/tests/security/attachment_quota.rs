//! Low item: blobs had no quota. One certificate could fill the store with
//! attachments it never applies with. Now each principal may upload at most
//! a daily quota of attachment bytes (`ATTACHMENT_BYTES_PER_DAY_MAX`,
//! 256 MiB; here configured down to 1,000 bytes); over it, 503
//! `rate-limited`, nothing stored. Other principals are not affected.

use kiban_tests::TestDb;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::own_api::{OwnApi, Prepared};
use crate::api::{medical, office_t01, problem_type, send};
use crate::projections::on_both_backends;
use crate::projections::script::history;

on_both_backends!(a_principal_cannot_upload_more_attachments_than_its_daily_quota);

async fn upload(h: &OwnApi, who: &kiban_api::Principal, bytes: &[u8]) -> (StatusCode, Value) {
    let request = h
        .client(Some(who))
        .post(format!("{}/v1/attachments", h.served.base))
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .header("content-type", "application/pdf")
        .body(bytes.to_vec());
    send(request, None).await
}

async fn a_principal_cannot_upload_more_attachments_than_its_daily_quota(db: &TestDb) {
    let prepared = Prepared::new(db, &[office_t01(), medical()]).await;
    let last = history(&prepared.engine, &prepared.fingerprint(&office_t01())).await;
    let h = prepared
        .serve_configured(db, last, |state| state.with_attachment_quota(1_000))
        .await;
    let first = [b'a'; 600];
    let (status, body) = upload(&h, &office_t01(), &first).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = [b'b'; 600];
    let (status, body) = upload(&h, &office_t01(), &second).await;
    assert_eq!(
        (status, problem_type(&body)),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:kiban:problem:rate-limited"
        ),
        "{body}"
    );
    let digest = hex::encode(Sha256::digest(second));
    assert!(
        h.served.store.get_blob(&digest).await.unwrap().is_none(),
        "nothing stored over the quota"
    );
    // Within what is left, and another principal's own quota.
    let (status, body) = upload(&h, &office_t01(), &[b'c'; 400]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = upload(&h, &medical(), &second).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    h.served.stop().await;
}
