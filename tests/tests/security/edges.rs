//! Items 8, 13, 14, 16 and the response headers: what a fuzzer driving the
//! API from the outside found. Each answer is a problem+json with a stable
//! type, and nothing is recorded by a refusal.

use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Harness, auditor, federation, office_t01, own_insurer, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, OFFICE, PERSON, WAITING_PERSON, day};

on_both_backends!(
    and_pair:
    a_last_event_id_ahead_of_the_head_is_refused,
    forgetting_a_person_nobody_recorded_is_not_found_and_creates_nothing,
    query_and_method_errors_are_problem_json_and_limits_are_never_clamped,
    idempotency_keys_of_versions_kiban_derives_are_refused,
    api_answers_carry_hsts_and_are_not_cached,
);

/// `GET path` as `who` with `headers`: status, headers, body (read only
/// when the answer is not a stream).
async fn get_with(
    h: &Harness,
    who: &kiban_api::Principal,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = h.client(Some(who)).get(format!("{}{path}", h.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = bounded("request", request.send()).await.expect("response");
    let (status, map) = (response.status(), response.headers().clone());
    if map
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        return (status, map, Value::Null);
    }
    let text = bounded("body", response.text()).await.unwrap();
    (
        status,
        map,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn is_problem(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}

async fn a_last_event_id_ahead_of_the_head_is_refused(db: &TestDb) {
    let h = Harness::start(db).await;
    let path = format!("/v1/offices/{OFFICE}/updates");
    let (status, headers, body) =
        get_with(&h, &office_t01(), &path, &[("Last-Event-ID", "999999")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(is_problem(&headers));
    assert_eq!(problem_type(&body), "urn:kiban:problem:validation");
    // At the head it opens, as before.
    let head = h.store.head().await.unwrap().position.to_string();
    let (status, _, _) = get_with(&h, &office_t01(), &path, &[("Last-Event-ID", &head)]).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

async fn forgetting_a_person_nobody_recorded_is_not_found_and_creates_nothing(db: &TestDb) {
    let h = Harness::start(db).await;
    let unknown = format!("/v1/persons/{INSURER}/9999999997");
    let head = h.store.head().await.unwrap().position;
    let (status, body) = h
        .call(
            Some(&own_insurer()),
            Method::POST,
            &format!("{unknown}/forget"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (StatusCode::NOT_FOUND, "urn:kiban:problem:not-found"),
        "{body}"
    );
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "nothing recorded"
    );
    let (status, _) = h.get(&own_insurer(), &format!("{unknown}/personal")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

async fn query_and_method_errors_are_problem_json_and_limits_are_never_clamped(db: &TestDb) {
    let h = Harness::start(db).await;
    let person_as_of = format!("/v1/audit/persons/{INSURER}/{PERSON}");
    for path in [
        "/v1/audit/verify?to=x".to_owned(),
        "/v1/audit/verify?from=99999999999999999999".to_owned(),
        format!("{person_as_of}?at_position=-1"),
    ] {
        let (status, headers, body) = get_with(&h, &auditor(), &path, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(is_problem(&headers), "{path}: {headers:?}");
        assert_eq!(
            problem_type(&body),
            "urn:kiban:problem:validation",
            "{path}"
        );
    }
    // A known path with a method it does not take.
    let response = bounded(
        "request",
        h.client(Some(&auditor()))
            .delete(format!("{}/v1/audit/verify", h.base))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(is_problem(response.headers()), "{:?}", response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(problem_type(&body), "urn:kiban:problem:method-not-allowed");

    // `limit` out of range is refused like a malformed one.
    let caseload = format!("/v1/offices/{OFFICE}/caseload");
    for limit in ["0", "501", "100000", "abc"] {
        let path = format!("{caseload}?limit={limit}");
        let (status, headers, body) = get_with(&h, &office_t01(), &path, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(is_problem(&headers), "{path}");
    }
    let (status, _, _) = get_with(&h, &office_t01(), &format!("{caseload}?limit=500"), &[]).await;
    assert_eq!(status, StatusCode::OK);

    // The message names the rule that failed.
    let (status, _, body) = get_with(&h, &auditor(), "/v1/insurers/480000", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap_or("").contains("prefecture"),
        "{body}"
    );
    h.stop().await;
}

async fn idempotency_keys_of_versions_kiban_derives_are_refused(db: &TestDb) {
    let h = Harness::start(db).await;
    let path = format!("/v1/persons/{INSURER}/{WAITING_PERSON}/consents");
    let consent = json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(40)});
    let head = h.store.head().await.unwrap().position;
    let derived = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"a name kiban derives an id from");
    for key in [
        derived,
        Uuid::from_u128(0x0123_4567_89ab_1def_8123_4567_89ab_cdef),
    ] {
        let response = bounded(
            "request",
            h.client(Some(&federation()))
                .post(format!("{}{path}", h.base))
                .header("Idempotency-Key", key.to_string())
                .json(&consent)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "key {key}");
    }
    assert_eq!(h.store.head().await.unwrap().position, head);
    for key in [Uuid::new_v4(), Uuid::now_v7()] {
        let response = bounded(
            "request",
            h.client(Some(&federation()))
                .post(format!("{}{path}", h.base))
                .header("Idempotency-Key", key.to_string())
                .json(&consent)
                .send(),
        )
        .await
        .unwrap();
        assert!(
            response.status().is_success(),
            "key {key}: {}",
            response.status()
        );
    }
    h.stop().await;
}

async fn api_answers_carry_hsts_and_are_not_cached(db: &TestDb) {
    let h = Harness::start(db).await;
    let path = format!("/v1/persons/{INSURER}/{PERSON}/eligibility");
    let (status, headers, _) = get_with(&h, &office_t01(), &path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header("strict-transport-security").starts_with("max-age="));
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let response = bounded(
        "healthz",
        h.client(None).get(format!("{}/healthz", h.base)).send(),
    )
    .await
    .unwrap();
    assert!(response.headers().contains_key("strict-transport-security"));
    h.stop().await;
}
