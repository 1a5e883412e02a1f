//! Item 7: a short consent became permanent access. An office with a live
//! consent could file itself as the person's care-plan office under a kind
//! of its own choosing, and the care-plan basis never ended, so a
//! day-service office with a one-day consent read the record forever and
//! displaced the real care-plan office. Now the kind comes from the office's
//! registered service types (43, 46) and the basis holds only while the
//! certification it was filed for does (`InsuredState::care_plan_office_on`).

use chrono::TimeZone;
use kiban_api::Principal;
use kiban_engine::Engine;
use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
use kiban_events::domain::{ServiceTypeCode, Sha256Digest, TerminalId};
use kiban_events::envelope::Actor;
use kiban_events::ids::OfficeNumber;
use kiban_store::Store;
use kiban_tests::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::own_api::{OwnApi, Prepared};
use crate::api::{
    Harness, OTHER_OFFICE, OTHER_TERMINAL, ask_challenge, card_signs, federation, link_card,
    office_t01, other_office, own_insurer, problem_type, record_consent,
};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, OFFICE, PERSON, TERMINAL, day, history, run};

on_both_backends!(
    a_day_service_office_with_a_one_day_consent_cannot_become_the_care_plan_office,
    the_care_plan_basis_ends_with_the_certification_it_was_filed_for,
    a_read_consent_does_not_file_the_care_plan_notification_only_a_signature_naming_it_does,
);

/// A day-service office (通所介護, service type 15), not a care-plan office.
const DAY_SERVICE: &str = "1315555555";
const DAY_SERVICE_TERMINAL: &str = "T-05";

fn day_service() -> Principal {
    Principal::from_uri(&format!(
        "kiban:office:{DAY_SERVICE}:terminal:{DAY_SERVICE_TERMINAL}"
    ))
    .unwrap()
}

/// The scripted history plus the day-service office, served.
async fn start_with_day_service(db: &TestDb) -> OwnApi {
    let prepared = Prepared::new(db, &[office_t01(), day_service(), federation()]).await;
    history(&prepared.engine, &prepared.fingerprint(&office_t01())).await;
    let credential = prepared.fingerprint(&day_service());
    let last = register_day_service(&prepared.engine, &credential).await;
    prepared.serve(db, last).await
}

async fn register_day_service(engine: &Engine<Store>, credential: &str) -> u64 {
    let office = OfficeNumber::parse(DAY_SERVICE).unwrap();
    let stream = office_stream(&office);
    run::<Office>(
        engine,
        &stream,
        OfficeCommand::Register {
            office,
            service_types: vec![ServiceTypeCode::parse("15").unwrap()],
        },
        Actor::Federation,
        day(-20),
    )
    .await;
    run::<Office>(
        engine,
        &stream,
        OfficeCommand::RegisterTerminal {
            terminal: TerminalId::parse(DAY_SERVICE_TERMINAL).unwrap(),
            credential: Sha256Digest::parse(credential).unwrap(),
        },
        Actor::Federation,
        day(-20),
    )
    .await
}

/// `who` reads the person's eligibility: the status and the answer.
async fn eligibility(h: &OwnApi, who: &Principal) -> (StatusCode, serde_json::Value) {
    h.call(Some(who), Method::GET, &person("eligibility"), None)
        .await
}

fn person(what: &str) -> String {
    format!("/v1/persons/{INSURER}/{PERSON}/{what}")
}

async fn a_day_service_office_with_a_one_day_consent_cannot_become_the_care_plan_office(
    db: &TestDb,
) {
    let h = start_with_day_service(db).await;
    // A consent for one day (day 30 to day 31).
    record_consent(&h, DAY_SERVICE, DAY_SERVICE_TERMINAL, day(31)).await;
    let head = h.served.store.head().await.unwrap().position;
    for notification in [
        json!({"office_kind": "home_care_support_office", "filed_on": "2026-05-31"}),
        json!({"office_kind": "community_general_support_center", "filed_on": "2026-05-31"}),
        json!({"filed_on": "2026-05-31"}),
    ] {
        let (status, body) = h
            .call(
                Some(&day_service()),
                Method::POST,
                &person("care-plan-office"),
                Some(notification.clone()),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("not_a_care_plan_office")),
            "{notification} → {body}"
        );
    }
    assert_eq!(
        h.served.store.head().await.unwrap().position,
        head,
        "nothing was recorded"
    );
    // While the consent lives the office reads; once it has expired, never.
    let (status, body) = eligibility(&h, &day_service()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.served.set_clock(day(32));
    let (status, body) = eligibility(&h, &day_service()).await;
    assert_eq!(
        (status, problem_type(&body)),
        (StatusCode::FORBIDDEN, "urn:kiban:problem:consent-required"),
        "{body}"
    );
    // The real care-plan office was not displaced.
    let (status, body) = eligibility(&h, &office_t01()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["care_plan_office"]["office"],
        crate::projections::script::OFFICE,
        "{body}"
    );
    h.served.stop().await;
}

/// The scripted person is certified 要介護2 from 2026-05-01 to 2026-10-31;
/// office T-01 is their care-plan office (filed 2026-05-24) and has no
/// consent.
async fn the_care_plan_basis_ends_with_the_certification_it_was_filed_for(db: &TestDb) {
    let h = Harness::start(db).await;
    let (status, body) = h.get(&office_t01(), &person("eligibility")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The last day of the certification: still the care-plan office.
    h.set_clock(chrono::Utc.with_ymd_and_hms(2026, 10, 31, 3, 0, 0).unwrap());
    let (status, body) = h.get(&office_t01(), &person("documents")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The certification has ended and no renewal is in force: the basis
    // ended with it; nothing is read, nothing is logged.
    h.set_clock(chrono::Utc.with_ymd_and_hms(2026, 11, 2, 3, 0, 0).unwrap());
    let head = h.store.head().await.unwrap().position;
    for what in ["eligibility", "documents", "certifications", "ledgers"] {
        let (status, body) = h.get(&office_t01(), &person(what)).await;
        assert_eq!(
            (status, problem_type(&body)),
            (StatusCode::FORBIDDEN, "urn:kiban:problem:consent-required"),
            "{what}: {body}"
        );
    }
    assert_eq!(h.store.head().await.unwrap().position, head);
    // A 43-only office cannot file as a 地域包括支援センター.
    let (status, body) = h
        .call(
            Some(&office_t01()),
            Method::POST,
            &person("care-plan-office"),
            Some(json!({"office_kind": "community_general_support_center", "filed_on": "2026-11-02"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_a_care_plan_office")),
        "{body}"
    );
    h.stop().await;
}

/// Item 7, the last part: the card-signed challenge names what it
/// authorises. Office `OTHER_OFFICE` (registered 43, a care-plan office)
/// holds the person's consent to read; that consent, and a card signature
/// over a consent challenge, no longer file it as the person's care-plan
/// office: only the person's signature over a challenge naming the
/// notification (person, filing date) does, once.
async fn a_read_consent_does_not_file_the_care_plan_notification_only_a_signature_naming_it_does(
    db: &TestDb,
) {
    let h = Harness::start(db).await;
    let path = person("care-plan-office");
    record_consent(&h, OTHER_OFFICE, OTHER_TERMINAL, day(40)).await;
    let head = h.store.head().await.unwrap().position;
    // With the read consent alone: refused, nothing recorded (201 before).
    let notification = json!({"filed_on": "2026-05-31"});
    let (status, body) = h
        .call(
            Some(&other_office()),
            Method::POST,
            &path,
            Some(notification.clone()),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body), body["code"].as_str()),
        (
            StatusCode::FORBIDDEN,
            "urn:kiban:problem:consent-required",
            Some("care_plan_signature_required")
        ),
        "{body}"
    );
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "nothing recorded"
    );
    // The person's card, linked by the insurer.
    let (certificate, _) = card_signs(true, &"x".repeat(32));
    link_card(&h, PERSON, &certificate).await;
    let challenge = |ask: serde_json::Value| {
        let h = &h;
        async move {
            let (status, issued) = ask_challenge(h, ask).await;
            assert_eq!(status, StatusCode::CREATED, "{issued}");
            let (certificate_hex, signature_hex) =
                card_signs(true, issued["challenge"].as_str().unwrap());
            json!({"nonce": issued["nonce"], "certificate_hex": certificate_hex, "signature_hex": signature_hex})
        }
    };
    let file = |card: serde_json::Value, filed_on: &str| {
        let h = &h;
        let path = &path;
        let body = json!({"filed_on": filed_on, "card": card});
        async move {
            h.call(Some(&other_office()), Method::POST, path, Some(body))
                .await
        }
    };
    // The card signed a consent to read: not this notification.
    let read =
        challenge(json!({"insurer": INSURER, "insured": PERSON, "consent_expires_at": day(40)}))
            .await;
    let (status, body) = file(read, "2026-05-31").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("challenge_wrong_purpose")),
        "{body}"
    );
    // Neither purpose in the request, or both: 400.
    let (status, body) = ask_challenge(&h, json!({"insurer": INSURER, "insured": PERSON})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A challenge naming the notification filed on 2026-05-31: not a
    // consent to read, not a filing on another date.
    let signed = challenge(json!({"insurer": INSURER, "insured": PERSON, "care_plan_notification": {"filed_on": "2026-05-31"}})).await;
    assert!(signed["nonce"].is_string(), "{signed}");
    let (status, body) = h
        .call(
            Some(&other_office()),
            Method::POST,
            "/v1/consents/card",
            Some(signed.clone()),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("challenge_wrong_purpose")),
        "{body}"
    );
    let (status, body) = file(signed.clone(), "2026-05-30").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("challenge_wrong_purpose")),
        "{body}"
    );
    assert_eq!(
        h.store.head().await.unwrap().position,
        head + 1,
        "only the card link"
    );
    // Signed for this notification: filed, by the office's terminal.
    let (status, body) = file(signed.clone(), "2026-05-31").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stream = kiban_events::domain::insured::insured_stream(
        &kiban_events::ids::InsurerNumber::parse(INSURER).unwrap(),
        &kiban_events::ids::InsuredNumber::parse(PERSON).unwrap(),
    );
    let events = h.store.read_stream(&stream, 1, 1000).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type.as_str(), "insured.care_plan_office_changed");
    assert_eq!(
        last.actor.to_string(),
        format!("office:{OTHER_OFFICE}/{OTHER_TERMINAL}")
    );
    // The signature files once.
    let (status, body) = file(signed, "2026-05-31").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("challenge_unknown_or_used")),
        "{body}"
    );
    // The insurer files through its own system, never here.
    let (status, _) = h
        .call(
            Some(&own_insurer()),
            Method::POST,
            &path,
            Some(notification),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The web screen: office T-01 with a consent to read submits a valid
    // form; nothing is filed (it was before), the page shows the terminal
    // command that has the card sign this notification and files it.
    record_consent(&h, OFFICE, TERMINAL, day(40)).await;
    let head = h.store.head().await.unwrap().position;
    let session = super::staff_session(&h).await;
    let key = uuid::Uuid::now_v7().to_string();
    let form = [
        ("csrf", session.csrf.as_str()),
        ("key", key.as_str()),
        ("office_kind", ""),
        ("filed_on", "2026-05-31"),
    ];
    let response = kiban_tests::bounded(
        "care-plan submit",
        h.client(Some(&office_t01()))
            .post(format!("{}/ui/care-plan/{INSURER}/{PERSON}", h.base))
            .header(
                "cookie",
                format!("{}={}", kiban_api::ui::SESSION_COOKIE, session.token),
            )
            .form(&form)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let command = format!(
        "kiban card consent --office {OFFICE} --insurer {INSURER} --insured {PERSON} --care-plan-filed-on 2026-05-31 --office-kind home_care_support_office"
    );
    assert!(page.contains(&command), "{page}");
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "nothing was filed"
    );
    h.stop().await;
}
