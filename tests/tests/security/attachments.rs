//! Item 2: a subsidy application attaches only the applicant's own uploads,
//! with the media type recorded at upload. Item 3: every download is an
//! attachment with `nosniff` and a sandboxing CSP.

use kiban_tests::TestDb;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;

use crate::api::{Harness, federation, office_t01, own_insurer, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, OFFICE, WAITING_PERSON};

on_both_backends!(
    and_pair:
    an_application_cannot_attach_bytes_the_applicant_did_not_upload,
    downloads_are_attachments_that_cannot_run_script,
);

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The insurer records an investigation sheet (a person's document the
/// office must not read without consent) and answers its bytes.
pub(super) async fn an_investigation_sheet(h: &Harness) -> Vec<u8> {
    let sheet = b"%PDF-1.7 investigation sheet of the waiting person".to_vec();
    let path =
        format!("/v1/persons/{INSURER}/{WAITING_PERSON}/certifications/1/investigation-sheet");
    let (status, body) = h
        .upload(
            &own_insurer(),
            &path,
            "application/pdf",
            sheet.clone(),
            Uuid::now_v7(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    sheet
}

/// The office uploads `bytes` as an attachment and answers the reference.
pub(super) async fn attachment(h: &Harness, media_type: &str, bytes: &[u8]) -> Value {
    let (status, body) = h
        .upload(
            &office_t01(),
            "/v1/attachments",
            media_type,
            bytes.to_vec(),
            Uuid::now_v7(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

pub(super) fn application(passbook: &Value, receipt: &Value, notice: &Value) -> Value {
    json!({
        "reader_count": 2,
        "receipt_lines": [
            {"purpose": {"kind": "card_readers", "count": 2}, "amount": 40000, "receipt": receipt},
        ],
        "passbook": passbook,
        "designation_notices": [{"service_type": "43", "document": notice}],
    })
}

pub(super) async fn apply(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.call(
        Some(&office_t01()),
        Method::POST,
        "/v1/subsidies",
        Some(body),
    )
    .await
}

async fn an_application_cannot_attach_bytes_the_applicant_did_not_upload(db: &TestDb) {
    let h = Harness::start(db).await;
    let sheet = an_investigation_sheet(&h).await;
    let receipt = attachment(&h, "application/pdf", b"receipt of the card reader").await;
    let notice = attachment(&h, "application/pdf", b"designation notice 43").await;

    // The attack: name the person's document by digest and size, as the
    // passbook, with a media type of the office's choosing.
    let foreign = json!({
        "sha256": sha256_hex(&sheet), "media_type": "application/pdf", "size_bytes": sheet.len(),
    });
    let (status, body) = apply(&h, application(&foreign, &receipt, &notice)).await;
    assert_eq!(
        (status, problem_type(&body)),
        (StatusCode::BAD_REQUEST, "urn:kiban:problem:validation"),
        "another principal's upload is not the applicant's to attach: {body}"
    );

    // Its own upload, but with another media type than it uploaded it as.
    let passbook = attachment(&h, "image/jpeg", b"passbook copy").await;
    let mut relabelled = passbook.clone();
    relabelled["media_type"] = json!("application/xml");
    let (status, body) = apply(&h, application(&relabelled, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Nothing was recorded by the refusals: the honest application is the
    // office's first, and reads its passbook back.
    let (status, body) = apply(&h, application(&passbook, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["stream"], format!("subsidy/{OFFICE}-1"));
    let path = format!(
        "/v1/subsidies/{OFFICE}-1/attachments/{}",
        passbook["sha256"].as_str().unwrap()
    );
    let (status, _, bytes) = download(&h, &office_t01(), &path).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, &b"passbook copy"[..])
    );
    let path = format!(
        "/v1/subsidies/{OFFICE}-1/attachments/{}",
        sha256_hex(&sheet)
    );
    let (status, _, _) = download(&h, &office_t01(), &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

async fn downloads_are_attachments_that_cannot_run_script(db: &TestDb) {
    let h = Harness::start(db).await;
    let sheet = an_investigation_sheet(&h).await;
    let receipt = attachment(&h, "application/pdf", b"receipt of the card reader").await;
    let notice = attachment(&h, "application/pdf", b"designation notice 43").await;
    let passbook = attachment(&h, "image/png", b"<html><script>alert(1)</script>").await;
    let (status, body) = apply(&h, application(&passbook, &receipt, &notice)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    h.caught_up().await;
    let person_document = format!(
        "/v1/persons/{INSURER}/{WAITING_PERSON}/documents/{}",
        sha256_hex(&sheet)
    );
    let subsidy_attachment = format!(
        "/v1/subsidies/{OFFICE}-1/attachments/{}",
        passbook["sha256"].as_str().unwrap()
    );
    for (who, path) in [
        (own_insurer(), person_document),
        (federation(), subsidy_attachment),
    ] {
        let (status, headers, _) = download(&h, &who, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(
            header("content-disposition").starts_with("attachment"),
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(
            header("content-security-policy").starts_with("sandbox"),
            "{path}"
        );
    }
    h.stop().await;
}

pub(super) async fn download(
    h: &Harness,
    who: &kiban_api::Principal,
    path: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = kiban_tests::bounded(
        "download",
        h.client(Some(who)).get(format!("{}{path}", h.base)).send(),
    )
    .await
    .expect("response");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}
