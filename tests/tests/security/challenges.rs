//! Low item: the consent-challenge map had a global bound only, so one
//! terminal could hold all of it. Each terminal now holds at most
//! `CONSENT_CHALLENGES_PER_TERMINAL_MAX`; a new one replaces its oldest.

use kiban_api::CONSENT_CHALLENGES_PER_TERMINAL_MAX;
use kiban_tests::{Backend, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Harness, office_t01};
use crate::projections::script::{INSURER, PERSON, day};

async fn challenge(h: &Harness) -> String {
    let ask = json!({"insurer": INSURER, "insured": PERSON, "consent_expires_at": day(40)});
    let (status, body) = h
        .call(
            Some(&office_t01()),
            Method::POST,
            "/v1/consents/challenge",
            Some(ask),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["nonce"].as_str().unwrap().to_owned()
}

/// Posts a signature that is not one, for `nonce`: the answer says whether
/// the challenge was still there.
async fn post(h: &Harness, nonce: &str) -> (StatusCode, Value) {
    let signed = json!({"nonce": nonce, "certificate_hex": "00", "signature_hex": "00"});
    h.call(
        Some(&office_t01()),
        Method::POST,
        "/v1/consents/card",
        Some(signed),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminal_holds_a_bounded_number_of_consent_challenges() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    let mut nonces = Vec::new();
    for _ in 0..=CONSENT_CHALLENGES_PER_TERMINAL_MAX {
        nonces.push(challenge(&h).await);
    }
    // The oldest was replaced by the last.
    let (status, body) = post(&h, &nonces[0]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("challenge_unknown_or_used")),
        "{body}"
    );
    // The others are still there: refused for the signature, not unknown.
    for nonce in &nonces[1..] {
        let (status, body) = post(&h, nonce).await;
        assert_ne!(
            body["code"].as_str(),
            Some("challenge_unknown_or_used"),
            "{status} {body}"
        );
    }
    h.stop().await;
}
