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
use crate::api::{Harness, federation, office_t01, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, PERSON, day, history, run};

on_both_backends!(
    a_day_service_office_with_a_one_day_consent_cannot_become_the_care_plan_office,
    the_care_plan_basis_ends_with_the_certification_it_was_filed_for,
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
    let consent =
        json!({"office": DAY_SERVICE, "terminal": DAY_SERVICE_TERMINAL, "expires_at": day(31)});
    let (status, body) = h
        .call(
            Some(&federation()),
            Method::POST,
            &person("consents"),
            Some(consent),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
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
