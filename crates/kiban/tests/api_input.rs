//! Bad request bodies through a real `kiban serve` (the built binary, HTTPS
//! with the development client certificates): malformed JSON syntax and
//! unknown body fields are answered `400` problem+json of type
//! `urn:kiban:problem:validation`, and nothing is recorded; the same
//! command with a good body is recorded. (The store and timeout answers,
//! 503 `unavailable` and 504 `timeout`, are produced by the fault suite,
//! `tests/tests/faults.rs`, which can stop the database under a server.)

mod common;

use common::{INSURER, KIBAN, OFFICE, PERSON, Serve, bounded, client, onboard, sqlite_url};
use serde_json::{Value, json};
use uuid::Uuid;

/// Sends `body` (raw text, labelled JSON) with a fresh Idempotency-Key.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<String>,
) -> (reqwest::StatusCode, Option<String>, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

fn assert_validation_problem(
    (status, content_type, body): &(reqwest::StatusCode, Option<String>, Value),
    what: &str,
) {
    assert_eq!(status.as_u16(), 400, "{what}: {body}");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(
        body["type"], "urn:kiban:problem:validation",
        "{what}: {body}"
    );
    assert_eq!(body["status"], 400, "{what}: {body}");
    assert!(body["detail"].is_string(), "{what}: {body}");
}

/// The event types in the store at `url`, read with `kiban read`.
async fn stored_types(url: &str) -> Vec<String> {
    let output = bounded(
        "kiban read",
        tokio::process::Command::new(KIBAN)
            .args(["read", "--database-url", url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["event_type"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_unknown_fields_are_400_validation_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    onboard(dir.path()).await;
    let serve = Serve::start(dir.path(), None).await;
    let certs = dir.path().join("certs");
    let federation = client(&certs, Some("federation.pem"));
    let consents = format!("{}/v1/persons/{INSURER}/{PERSON}/consents", serve.base);
    let good = json!({
        "office": OFFICE,
        "terminal": "T-01",
        // From the clock: a consent must expire within 366 days of now.
        "expires_at": chrono::Utc::now() + chrono::Duration::days(120),
    });

    let malformed = [
        "{\"office\": ",
        "{\"office\": \"1312345678\",}",
        "[1, 2",
        "not json",
        "",
    ];
    for body in malformed {
        let answer = post(&federation, &consents, body).await;
        assert_validation_problem(&answer, &format!("malformed {body:?}"));
    }
    let mut unknown = good.clone();
    unknown["surprise"] = json!(true);
    let answer = post(&federation, &consents, unknown.to_string()).await;
    assert_validation_problem(&answer, "an unknown field");
    assert!(
        answer.2["detail"].as_str().unwrap().contains("surprise"),
        "the detail names the field: {}",
        answer.2
    );
    // The same on an office's command: a proxy application.
    let office = client(&certs, Some(&format!("office-{OFFICE}-T-01.pem")));
    let applications = format!(
        "{}/v1/persons/{INSURER}/{PERSON}/certifications",
        serve.base
    );
    let answer = post(
        &office,
        &applications,
        json!({"kind": "new", "applied_on": "2026-05-01", "urgent": true}).to_string(),
    )
    .await;
    assert_validation_problem(&answer, "an unknown field of a proxy application");
    let answer = post(&office, &applications, "{\"kind\": \"new\"").await;
    assert_validation_problem(&answer, "a truncated proxy application");

    // The good body is recorded: the refusals above were for their input.
    let (status, _, body) = post(&federation, &consents, good.to_string()).await;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(serve.interrupt().await.code(), Some(0));
    let types = stored_types(&sqlite_url(dir.path())).await;
    let consents: Vec<_> = types.iter().filter(|t| t.contains("consent")).collect();
    assert_eq!(
        consents.len(),
        1,
        "only the good consent was recorded: {types:?}"
    );
    assert!(
        !types.iter().any(|t| t == "certification.filed"),
        "no proxy application was recorded: {types:?}"
    );
}
