//! Low item: the consent-challenge map had a global bound only, so one
//! terminal could hold all of it. Each terminal now holds at most
//! `CONSENT_CHALLENGES_PER_TERMINAL_MAX`; a new one replaces its oldest.
//! The person's sign-in challenges (anonymous) likewise per client address:
//! `SIGN_IN_CHALLENGES_PER_ADDRESS_MAX`.

use kiban_api::CONSENT_CHALLENGES_PER_TERMINAL_MAX;
use kiban_api::me::SIGN_IN_CHALLENGES_PER_ADDRESS_MAX;
use kiban_tests::{Backend, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Harness, call_with, office_t01};
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

/// A client sending from `address` (a loopback address: 127.0.0.0/8 is all
/// this machine's), trusting the harness's CA, without a certificate.
fn client_from(h: &Harness, address: [u8; 4]) -> reqwest::Client {
    let ca = std::fs::read(&h.pki.tls.client_ca).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

/// A sign-in challenge asked for with `client`: its nonce.
async fn sign_in_challenge(h: &Harness, client: &reqwest::Client) -> String {
    let (status, body) = call_with(
        client.clone(),
        &h.base,
        Method::POST,
        "/v1/me/challenge",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["nonce"].as_str().unwrap().to_owned()
}

/// Signs in with `nonce` and a signature that is not one: whether the
/// challenge was still there.
async fn still_there(h: &Harness, client: &reqwest::Client, nonce: &str) -> bool {
    let signed = json!({"nonce": nonce, "certificate_hex": "00", "signature_hex": "00"});
    let (_, body) = call_with(
        client.clone(),
        &h.base,
        Method::POST,
        "/v1/me/sessions",
        Some(signed),
    )
    .await;
    body["code"].as_str() != Some("challenge_unknown_or_used")
}

/// docs/security.md, the person's view: the sign-in challenges were one
/// anonymous pool, so one client asking again and again filled it and
/// nobody could sign in (503) until they expired. One address now holds at
/// most `SIGN_IN_CHALLENGES_PER_ADDRESS_MAX` unsigned challenges; a new
/// one replaces its oldest, and another address is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_fill_the_sign_in_challenges_of_everyone() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    let (greedy, other) = (
        client_from(&h, [127, 0, 0, 1]),
        client_from(&h, [127, 0, 0, 2]),
    );
    let others = sign_in_challenge(&h, &other).await;
    let mut mine = Vec::new();
    for _ in 0..=SIGN_IN_CHALLENGES_PER_ADDRESS_MAX {
        mine.push(sign_in_challenge(&h, &greedy).await);
    }
    // The greedy address's oldest was replaced by its last...
    assert!(
        !still_there(&h, &greedy, &mine[0]).await,
        "the oldest was kept"
    );
    assert!(still_there(&h, &greedy, &mine[1]).await);
    assert!(still_there(&h, &greedy, &mine[SIGN_IN_CHALLENGES_PER_ADDRESS_MAX]).await);
    // ...and the other address's challenge is still there.
    assert!(
        still_there(&h, &other, &others).await,
        "another address's challenge was evicted"
    );
    h.stop().await;
}
