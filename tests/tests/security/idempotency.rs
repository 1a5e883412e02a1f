//! Item 12: an `Idempotency-Key` names one command (route, principal,
//! body). An exact retry gets the first answer; the key with another body
//! is 409 and records nothing.

use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Harness, federation, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, PERSON, WAITING_PERSON, day};

on_both_backends!(
    and_pair:
    an_exact_retry_of_a_consent_gets_the_first_answer,
    a_used_key_with_another_body_is_a_conflict_and_records_nothing,
);

/// `method path` with `body` as `who`, under `key`.
async fn send(
    h: &Harness,
    who: &kiban_api::Principal,
    method: Method,
    path: &str,
    key: Uuid,
    body: &Value,
) -> (StatusCode, Value) {
    let request = h
        .client(Some(who))
        .request(method, format!("{}{path}", h.base))
        .header("Idempotency-Key", key.to_string())
        .json(body);
    let response = bounded("request", request.send()).await.expect("response");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn consents(person: &str) -> String {
    format!("/v1/persons/{INSURER}/{person}/consents")
}

async fn an_exact_retry_of_a_consent_gets_the_first_answer(db: &TestDb) {
    let h = Harness::start(db).await;
    let key = Uuid::now_v7();
    let consent = json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(40)});
    let path = consents(WAITING_PERSON);
    let (status, first) = send(&h, &federation(), Method::POST, &path, key, &consent).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The client lost the answer and retries, a little later.
    for minutes in [1, 2, 3] {
        h.set_clock(day(30) + chrono::Duration::minutes(minutes));
        let (status, again) = send(&h, &federation(), Method::POST, &path, key, &consent).await;
        assert_eq!(status, StatusCode::OK, "retry {minutes}: {again}");
        assert_eq!(again["replayed"], json!(true));
        assert_eq!(again["positions"], first["positions"]);
        assert_eq!(again["event_ids"], first["event_ids"]);
    }
    // The same JSON with its keys in another order is the same command.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"expires_at": {}, "terminal": "T-09", "office": "1319999999"}}"#,
        serde_json::to_string(&day(40)).unwrap()
    ))
    .unwrap();
    let (status, again) = send(&h, &federation(), Method::POST, &path, key, &reordered).await;
    assert_eq!(
        (status, &again["positions"]),
        (StatusCode::OK, &first["positions"])
    );
    h.stop().await;
}

async fn a_used_key_with_another_body_is_a_conflict_and_records_nothing(db: &TestDb) {
    let h = Harness::start(db).await;
    let key = Uuid::now_v7();
    let path = consents(PERSON);
    let consent = json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(40)});
    let (status, first) = send(&h, &federation(), Method::POST, &path, key, &consent).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let head = h.store.head().await.unwrap().position;
    for other in [
        // One the rules refuse (an expiry already past): before the fix the
        // refusal made the engine look the key up and answer "replayed".
        json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(10)}),
        json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(45)}),
        json!({"office": "1312345678", "terminal": "T-01", "expires_at": day(40)}),
    ] {
        let (status, body) = send(&h, &federation(), Method::POST, &path, key, &other).await;
        assert_eq!(
            (status, problem_type(&body)),
            (StatusCode::CONFLICT, "urn:kiban:problem:conflict"),
            "{other} under a used key: {body}"
        );
    }
    // The key on another person's route is another command too.
    let (status, _) = send(
        &h,
        &federation(),
        Method::POST,
        &consents(WAITING_PERSON),
        key,
        &consent,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "nothing recorded"
    );
    h.stop().await;
}
