//! Low item: office numbers and medical-institution codes shared one
//! subsidy index (`subsidies_by_applicant`). Both are ten digits, and one
//! number can be both an office's and an institution's: the office then
//! listed the institution's applications (with their bank details and
//! receipts) and the institution the office's. The index is now keyed by
//! the applicant's kind and number.

use chrono::{NaiveDate, TimeZone, Utc};
use kiban_api::Principal;
use kiban_events::domain::subsidy::SubsidyPolicy;
use kiban_tests::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::own_api::{OwnApi, Prepared};
use crate::api::{federation, medical, send};
use crate::projections::on_both_backends;
use crate::projections::script::{INSTITUTION, history, register_office};

on_both_backends!(
    an_office_does_not_see_the_subsidy_applications_of_an_institution_with_its_number
);

/// An office whose number is the medical institution's code.
fn twin_office() -> Principal {
    Principal::from_uri(&format!("kiban:office:{INSTITUTION}:terminal:T-01")).unwrap()
}

/// A window open on the harness's days (2026-05).
const POLICY: SubsidyPolicy = SubsidyPolicy {
    window_from: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
    window_until: NaiveDate::from_ymd_opt(2027, 3, 12).unwrap(),
    closing_month_from: NaiveDate::from_ymd_opt(2027, 3, 1).unwrap(),
    medical_institution_limit: None,
};

async fn start(db: &TestDb) -> OwnApi {
    let prepared = Prepared::new(db, &[twin_office(), medical(), federation()]).await;
    let credential = prepared.fingerprint(&twin_office());
    history(&prepared.engine, &credential).await;
    let last = register_office(&prepared.engine, INSTITUTION, &[("T-01", &credential)]).await;
    prepared
        .serve_configured(db, last, |state| state.with_subsidy_policy(POLICY))
        .await
}

/// `who` uploads `name` as a PDF attachment: its reference.
async fn attachment(h: &OwnApi, who: &Principal, name: &str) -> Value {
    let request = h
        .client(Some(who))
        .post(format!("{}/v1/attachments", h.served.base))
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .header("content-type", "application/pdf")
        .body(format!("%PDF-1.4 {name}").into_bytes());
    let (status, body) = send(request, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn an_office_does_not_see_the_subsidy_applications_of_an_institution_with_its_number(
    db: &TestDb,
) {
    let h = start(db).await;
    h.served
        .set_clock(Utc.with_ymd_and_hms(2026, 5, 31, 1, 0, 0).unwrap());
    let receipt = attachment(&h, &medical(), "receipt").await;
    let passbook = attachment(&h, &medical(), "passbook").await;
    let beds = attachment(&h, &medical(), "beds").await;
    let application = json!({
        "reader_count": 1,
        "receipt_lines": [
            {"purpose": {"kind": "card_readers", "count": 1}, "amount": 20000, "receipt": receipt},
        ],
        "passbook": passbook,
        "bed_count_document": beds,
    });
    let (status, body) = h
        .call(
            Some(&medical()),
            Method::POST,
            "/v1/subsidies",
            Some(application),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, institutions) = h
        .call(Some(&medical()), Method::GET, "/v1/subsidies", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{institutions}");
    assert_eq!(institutions.as_array().unwrap().len(), 1, "{institutions}");
    let (status, offices) = h
        .call(Some(&twin_office()), Method::GET, "/v1/subsidies", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{offices}");
    assert_eq!(
        offices,
        json!([]),
        "the office sees none of the institution's applications"
    );
    h.served.stop().await;
}
