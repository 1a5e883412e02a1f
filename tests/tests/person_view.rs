//! The person's own view (issue 21 items 1–2): a person signs in with their
//! own My Number card (a virtual JPKI card signing the server's challenge),
//! reads their record and who read it through `/v1/me`, revokes a consent,
//! and sees nothing of anyone else; the person's session opens no other
//! route, and no organisation's certificate opens `/v1/me`. Over real
//! HTTPS on both backends. The browser side is `ui::a_person_signs_in_…`.

use std::sync::OnceLock;

use kiban_card::JpkiCard;
use kiban_card::test_pki::{generate_rsa_key, test_not_before};
use kiban_card::virtual_card::VirtualJpkiCard;
use kiban_events::Actor;
use kiban_events::domain::TerminalId;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::ids::InsuredNumber;
use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{
    Harness, ServedApi, auditor, federation, link_card, office_t01, other_office, own_insurer,
    problem_type, send, test_cards,
};
use crate::projections::on_both_backends;
use crate::projections::script::*;

on_both_backends!(
    and_pair:
    a_browser_collects_only_its_own_sign_in_and_forms_need_the_sessions_token,
    a_person_signs_in_with_their_card_and_reads_only_their_own_record,
    the_person_principal_opens_only_the_persons_view,
    a_person_revokes_a_consent_and_the_office_can_no_longer_read,
);

/// The PIN of every card of the suite.
pub(crate) const PIN: &str = "1234";
/// The serials of the second person's card and of a card linked to nobody.
const SECOND_CARD_SERIAL: u32 = 0x1002;
const UNLINKED_CARD_SERIAL: u32 = 0x1003;

/// Another card's key and certificate from the trusted test CA.
struct CardKeys {
    key: rsa::RsaPrivateKey,
    certificate: Vec<u8>,
}

impl CardKeys {
    fn issue(serial: u32) -> CardKeys {
        let key = generate_rsa_key();
        let certificate = test_cards().trusted_ca.issue_user_certificate(
            &key.to_public_key(),
            serial,
            test_not_before(),
        );
        CardKeys { key, certificate }
    }

    fn card(&self) -> VirtualJpkiCard {
        VirtualJpkiCard::new(
            self.key.clone(),
            self.certificate.clone(),
            test_cards().trusted_ca.certificate_der().to_vec(),
            PIN,
        )
    }
}

/// A card of the suite: `first` (the first person's: the test card),
/// `second` (the second person's) or `unlinked` (nobody's). The keys are
/// made once per test process.
pub(crate) fn card(name: &str) -> VirtualJpkiCard {
    static SECOND: OnceLock<CardKeys> = OnceLock::new();
    static UNLINKED: OnceLock<CardKeys> = OnceLock::new();
    match name {
        "first" => test_cards().card(PIN),
        "second" => SECOND
            .get_or_init(|| CardKeys::issue(SECOND_CARD_SERIAL))
            .card(),
        "unlinked" => UNLINKED
            .get_or_init(|| CardKeys::issue(UNLINKED_CARD_SERIAL))
            .card(),
        other => panic!("no card {other}"),
    }
}

/// The card signs `challenge` after its PIN: (certificate, signature) hex.
pub(crate) fn signed_by(card: VirtualJpkiCard, challenge: &str) -> (String, String) {
    let mut card = JpkiCard::open(card).unwrap();
    let certificate = card.read_auth_certificate().unwrap();
    card.verify_pin(&kiban_card::Pin::new(PIN).unwrap())
        .unwrap();
    let signature = card.sign_challenge(challenge.as_bytes()).unwrap();
    (hex::encode(certificate), hex::encode(signature))
}

/// A request with the person's bearer `token` (when given) and no client
/// certificate.
async fn as_person(
    h: &impl ServedApi,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", h.served().base);
    let mut request = h.client_for(None).request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request, body).await
}

/// The insurer links `card` to `insured`, and the link reaches the read
/// model the sign-in looks it up in.
pub(crate) async fn link(h: &impl ServedApi, insured: &str, card: VirtualJpkiCard) {
    let (certificate, _) = signed_by(card, &"x".repeat(32));
    let position = link_card(h, insured, &certificate).await;
    let projected = h.served().projections.wait_for(position);
    bounded("the card link projected", projected).await.unwrap();
}

/// Signs in with `card` through `/v1/me`: the answer's status and body.
pub(crate) async fn sign_in(h: &impl ServedApi, card: VirtualJpkiCard) -> (StatusCode, Value) {
    let (status, issued) =
        as_person(h, None, Method::POST, "/v1/me/challenge", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let challenge = issued["challenge"].as_str().unwrap();
    assert_eq!(
        challenge,
        kiban_api::me::sign_in_challenge_text(issued["nonce"].as_str().unwrap())
    );
    let (certificate, signature) = signed_by(card, challenge);
    let body = json!({"nonce": issued["nonce"], "certificate_hex": certificate, "signature_hex": signature});
    as_person(h, None, Method::POST, "/v1/me/sessions", Some(body)).await
}

/// Signs in with `card` and answers the session's token.
async fn token_of(h: &Harness, card: VirtualJpkiCard) -> String {
    let (status, body) = sign_in(h, card).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("a bearer token").to_owned()
}

/// `PERSON` consents (day 29, until day 60) to the harness's other office
/// (`1319999999`, terminal `T-09`), which may then read the record; that
/// office.
async fn consent_to_the_other_office(h: &Harness) -> kiban_events::ids::OfficeNumber {
    let other = kiban_events::ids::OfficeNumber::parse("1319999999").unwrap();
    let last = run::<InsuredPerson>(
        &h.engine,
        &insured_stream(&insurer(), &InsuredNumber::parse(PERSON).unwrap()),
        InsuredCommand::GiveConsent {
            office: other.clone(),
            terminal: TerminalId::parse("T-09").unwrap(),
            expires_at: day(60),
        },
        Actor::system("consent").unwrap(),
        day(29),
    )
    .await;
    bounded("consent projected", h.projections.wait_for(last))
        .await
        .unwrap();
    other
}

/// How many `insured.own_record_viewed` events `insured`'s stream holds.
async fn own_reads(h: &Harness, insured: &str) -> usize {
    let stream = insured_stream(&insurer(), &InsuredNumber::parse(insured).unwrap());
    h.store
        .read_stream(&stream, 1, kiban_store::READ_EVENTS_MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type.as_str() == "insured.own_record_viewed")
        .count()
}

async fn a_person_signs_in_with_their_card_and_reads_only_their_own_record(db: &TestDb) {
    let h = Harness::start(db).await;
    link(&h, PERSON, card("first")).await;
    link(&h, WAITING_PERSON, card("second")).await;

    // A card linked to nobody, and a card from an untrusted CA: refused.
    let (status, body) = sign_in(&h, card("unlinked")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("card_not_linked")),
        "{body}"
    );
    let (status, body) = sign_in(&h, test_cards().untrusted_card(PIN)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("card_not_trusted")),
        "{body}"
    );

    // The first person's card: a session for that person, never the
    // Individual Number (the answer names the insured number only).
    let (status, issued) =
        as_person(&h, None, Method::POST, "/v1/me/challenge", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (certificate, signature) = signed_by(card("first"), issued["challenge"].as_str().unwrap());
    let body = json!({"nonce": issued["nonce"], "certificate_hex": certificate, "signature_hex": signature});
    let (status, signed_in) = as_person(
        &h,
        None,
        Method::POST,
        "/v1/me/sessions",
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{signed_in}");
    assert_eq!(
        (
            signed_in["insurer"].as_str(),
            signed_in["insured"].as_str(),
            signed_in["browser"].as_bool()
        ),
        (Some(INSURER), Some(PERSON), Some(false))
    );
    let first = signed_in["token"].as_str().unwrap().to_owned();
    // A signed challenge is used once.
    let (status, replay) = as_person(&h, None, Method::POST, "/v1/me/sessions", Some(body)).await;
    assert_eq!(
        (status, replay["code"].as_str()),
        (StatusCode::CONFLICT, Some("challenge_unknown_or_used")),
        "{replay}"
    );

    // The record: the person's own, with the certification, the care-plan
    // office and the documents; the read is logged.
    let before = own_reads(&h, PERSON).await;
    let (status, record) = as_person(&h, Some(&first), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["eligibility"]["insured"], PERSON, "{record}");
    assert_eq!(
        record["eligibility"]["certification"]["level"], "care_2",
        "{record}"
    );
    assert_eq!(
        record["eligibility"]["care_plan_office"]["office"], OFFICE,
        "{record}"
    );
    assert_eq!(record["certifications"][0]["status"], "decided", "{record}");
    assert!(
        !record["documents"].as_array().unwrap().is_empty(),
        "{record}"
    );
    assert_eq!(own_reads(&h, PERSON).await, before + 1);

    // Who read it: the office's read of the scripted history (terminal,
    // basis), and the person's own reads; newest first; only this person.
    let (status, log) = as_person(&h, Some(&first), Method::GET, "/v1/me/access-log", None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let log = log.as_array().unwrap().clone();
    assert!(log.iter().all(|e| e["insured"] == PERSON), "{log:?}");
    let office_read = log
        .iter()
        .find(|e| e["reader"] == "office")
        .expect("the office's read");
    assert_eq!(
        (
            &office_read["office"],
            &office_read["terminal"],
            &office_read["basis"]
        ),
        (&json!(OFFICE), &json!(TERMINAL), &json!("care_plan_office"))
    );
    assert_eq!(
        log[0]["reader"], "person",
        "the newest is this read: {log:?}"
    );
    assert_eq!(log[0]["office"], Value::Null);
    let positions: Vec<u64> = log
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    assert_eq!(own_reads(&h, PERSON).await, before + 2);

    // The second person sees their own record and none of the first's.
    let second = token_of(&h, card("second")).await;
    let (status, record) = as_person(&h, Some(&second), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["eligibility"]["insured"], WAITING_PERSON);
    assert!(!record.to_string().contains(PERSON), "{record}");
    let (_, log) = as_person(&h, Some(&second), Method::GET, "/v1/me/access-log", None).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|e| e["insured"] == WAITING_PERSON),
        "{log}"
    );
    // A document of the second person (a real investigation sheet): theirs
    // to download, not the first person's.
    let sheet = b"%PDF-1.4 investigation sheet of the second person";
    let stored = h.store.put_blob(sheet).await.unwrap();
    ingest(
        &h.engine,
        INSURER,
        WAITING_PERSON,
        Some(1),
        "certification.investigation_scheduled",
        2,
        json!({"scheduled_on": "2026-05-08"}),
    )
    .await;
    let last = ingest(&h.engine, INSURER, WAITING_PERSON, Some(1), "certification.investigation_completed", 8, json!({"investigation_sheet": {"sha256": stored.sha256, "media_type": "application/pdf", "size_bytes": sheet.len()}})).await;
    bounded("the sheet projected", h.projections.wait_for(last))
        .await
        .unwrap();
    let (_, record) = as_person(&h, Some(&second), Method::GET, "/v1/me", None).await;
    assert_eq!(
        record["documents"][0]["sha256"],
        json!(stored.sha256),
        "{record}"
    );
    let path = format!("/v1/me/documents/{}", stored.sha256);
    let download = h
        .client(None)
        .get(format!("{}{path}", h.base))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap().as_ref(), sheet);
    let (status, body) = as_person(&h, Some(&first), Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Signing out ends the session; a session ends after 30 minutes.
    let (status, _) = as_person(&h, Some(&second), Method::DELETE, "/v1/me/session", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = as_person(&h, Some(&second), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    h.set_clock(day(30) + chrono::Duration::seconds(kiban_api::me::PERSON_SESSION_SECONDS));
    let (status, body) = as_person(&h, Some(&first), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(problem_type(&body), "urn:kiban:problem:unauthenticated");
    h.stop().await;
}

/// Every route of the OpenAPI document with its path parameters filled in
/// with real values of the scripted history.
fn every_route() -> Vec<(Method, String)> {
    let document = kiban_api::openapi_document();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{insurer}", INSURER)
                .replace("{insured}", PERSON)
                .replace("{office}", OFFICE)
                .replace("{terminal}", TERMINAL)
                .replace("{institution}", INSTITUTION)
                .replace("{seq}", "1")
                .replace("{application}", "1312345678-1")
                .replace("{sha256}", &"a".repeat(64));
            routes.push((method.to_uppercase().parse().unwrap(), concrete));
        }
    }
    routes
}

/// Whether `path` is a route of the person's view (`/v1/me`, `/v1/me/…`;
/// not `/v1/medical/…`).
fn is_person_view(path: &str) -> bool {
    path == "/v1/me" || path.starts_with("/v1/me/")
}

async fn the_person_principal_opens_only_the_persons_view(db: &TestDb) {
    let h = Harness::start(db).await;
    link(&h, PERSON, card("first")).await;
    let token = token_of(&h, card("first")).await;
    let routes = every_route();
    let me_routes: Vec<_> = routes
        .iter()
        .filter(|(_, path)| {
            is_person_view(path) && !path.ends_with("/challenge") && !path.ends_with("/sessions")
        })
        .collect();
    assert_eq!(me_routes.len(), 5, "{me_routes:?}");
    // The person's session opens no organisation's route: without a
    // client certificate every one of them is 401, whatever the token.
    for (method, path) in &routes {
        if is_person_view(path) || matches!(path.as_str(), "/healthz" | "/readyz") {
            continue;
        }
        let body = (*method != Method::GET).then(|| json!({}));
        let (status, answer) = as_person(&h, Some(&token), method.clone(), path, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {answer}"
        );
    }
    // No organisation's certificate opens the person's view: without a
    // session every /v1/me route is 401, with or without a certificate.
    for who in [
        None,
        Some(office_t01()),
        Some(own_insurer()),
        Some(auditor()),
        Some(federation()),
    ] {
        for (method, path) in &me_routes {
            let (status, answer) = h.call(who.as_ref(), method.clone(), path, None).await;
            assert_eq!(
                (status, problem_type(&answer)),
                (
                    StatusCode::UNAUTHORIZED,
                    "urn:kiban:problem:unauthenticated"
                ),
                "{who:?} {method} {path}: {answer}"
            );
        }
    }
    // A token that is not a session's: 401.
    let (status, _) = as_person(&h, Some(&"0".repeat(64)), Method::GET, "/v1/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The web page: a session only from its own cookie; an office
    // terminal's certificate is no sign-in.
    let page = h
        .client(Some(&office_t01()))
        .get(format!("{}/me", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.url().path(), "/me/login", "redirected to the sign-in");
    // The person's token as a cookie opens no office screen.
    let screen = h
        .client(None)
        .get(format!("{}/ui/caseload", h.base))
        .header(
            "cookie",
            format!("kiban_me_session={token}; kiban_ui_session={token}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(screen.status(), StatusCode::UNAUTHORIZED);
    // The person's pages answer refusals as pages, not problem+json.
    let missing = h
        .client(None)
        .get(format!("{}/me/documents/{}", h.base, "d".repeat(64)))
        .header("cookie", format!("kiban_me_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let media_type = missing.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(media_type.starts_with("text/html"), "{media_type}");
    h.stop().await;
}

async fn a_person_revokes_a_consent_and_the_office_can_no_longer_read(db: &TestDb) {
    let h = Harness::start(db).await;
    link(&h, PERSON, card("first")).await;
    link(&h, WAITING_PERSON, card("second")).await;
    let other = consent_to_the_other_office(&h).await;
    let eligibility = format!("/v1/persons/{INSURER}/{PERSON}/eligibility");
    assert_eq!(h.get(&other_office(), &eligibility).await.0, StatusCode::OK);
    let first = token_of(&h, card("first")).await;
    let second = token_of(&h, card("second")).await;
    let (_, record) = as_person(&h, Some(&first), Method::GET, "/v1/me", None).await;
    assert_eq!(
        record["consents"][0]["office"],
        other.to_string(),
        "{record}"
    );

    // The second person revokes on their own record only: nothing to
    // revoke there, and the first person's consent stands.
    let revoke = format!("/v1/me/consents/{other}");
    let (status, body) = as_person(&h, Some(&second), Method::DELETE, &revoke, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(h.get(&other_office(), &eligibility).await.0, StatusCode::OK);

    let (status, body) = as_person(&h, Some(&first), Method::DELETE, &revoke, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = h.get(&other_office(), &eligibility).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, record) = as_person(&h, Some(&first), Method::GET, "/v1/me", None).await;
    assert_eq!(record["consents"], json!([]), "{record}");
    h.stop().await;
}

/// A client without a certificate that does not follow redirects, so that
/// the test sees each `Set-Cookie` and `Location`.
fn browser(h: &Harness) -> reqwest::Client {
    let ca = std::fs::read(&h.pki.tls.client_ca).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` a response sets, if it does.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))?
                .split(';')
                .next()
                .map(str::to_owned)
        })
}

async fn a_browser_collects_only_its_own_sign_in_and_forms_need_the_sessions_token(db: &TestDb) {
    let h = Harness::start(db).await;
    link(&h, PERSON, card("first")).await;
    let other = consent_to_the_other_office(&h).await;
    let web = browser(&h);
    // The sign-in page: a code, bound to this browser by its cookie.
    let page = web
        .get(format!("{}/me/login", h.base))
        .send()
        .await
        .unwrap();
    let secret = set_cookie(&page, "kiban_me_signin").expect("the sign-in cookie");
    let html = page.text().await.unwrap();
    let code = html
        .split("id=\"sign-in-code\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the code on the page")
        .to_owned();
    let (certificate, signature) =
        signed_by(card("first"), &kiban_api::me::sign_in_challenge_text(&code));
    let body = json!({"nonce": code, "certificate_hex": certificate, "signature_hex": signature});
    let (status, signed) = as_person(&h, None, Method::POST, "/v1/me/sessions", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{signed}");
    assert_eq!(
        (signed["browser"].as_bool(), &signed["token"]),
        (Some(true), &Value::Null)
    );
    // Another browser (another secret) cannot collect it: a new code.
    let complete = |secret: String| {
        web.post(format!("{}/me/login", h.base))
            .header("cookie", format!("kiban_me_signin={secret}"))
            .form(&[("nonce", code.as_str())])
            .send()
    };
    let stolen = complete("0".repeat(64)).await.unwrap();
    assert_eq!(stolen.status(), StatusCode::OK);
    assert_eq!(set_cookie(&stolen, "kiban_me_session"), None);
    // The browser that showed the code gets the session, once.
    let mine = complete(secret.clone()).await.unwrap();
    assert_eq!(mine.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&mine, "kiban_me_session").expect("the session cookie");
    let again = complete(secret).await.unwrap();
    assert_eq!(set_cookie(&again, "kiban_me_session"), None);
    // A form without the session's CSRF token changes nothing.
    let revoke = format!("{}/me/consents/{other}/revoke", h.base);
    let forged = web
        .post(&revoke)
        .header("cookie", format!("kiban_me_session={session}"))
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let eligibility = format!("/v1/persons/{INSURER}/{PERSON}/eligibility");
    assert_eq!(h.get(&other_office(), &eligibility).await.0, StatusCode::OK);
    // With the page's token the person revokes the consent.
    let page = web
        .get(format!("{}/me", h.base))
        .header("cookie", format!("kiban_me_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the CSRF token")
        .to_owned();
    let revoked = web
        .post(&revoke)
        .header("cookie", format!("kiban_me_session={session}"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        h.get(&other_office(), &eligibility).await.0,
        StatusCode::FORBIDDEN
    );
    h.stop().await;
}
