//! Low item: an office may not file for a person whose insurer does not
//! share data yet — neither a proxy application (`file_application`) nor,
//! on the web screen, a care-plan notification. Before the fix both skipped
//! the insurer-sharing check that every read makes, so an office with a
//! consent recorded by the federation could act on (and so learn of) a
//! person of an insurer still onboarding.

use kiban_api::ui::SESSION_COOKIE;
use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::api::{Harness, federation, office_t01, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{OFFICE, PERSON, QUIET_INSURER, TERMINAL, day};

on_both_backends!(and_pair: an_office_cannot_file_for_a_person_of_an_insurer_not_sharing);

async fn an_office_cannot_file_for_a_person_of_an_insurer_not_sharing(db: &TestDb) {
    let h = Harness::start(db).await;
    let person = format!("/v1/persons/{QUIET_INSURER}/{PERSON}");
    let consent = json!({"office": OFFICE, "terminal": TERMINAL, "expires_at": day(40)});
    let (status, body) = h
        .call(
            Some(&federation()),
            Method::POST,
            &format!("{person}/consents"),
            Some(consent),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let head = h.store.head().await.unwrap().position;

    let application = json!({"kind": "new", "applied_on": "2026-05-30"});
    let (status, body) = h
        .call(
            Some(&office_t01()),
            Method::POST,
            &format!("{person}/certifications"),
            Some(application),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (StatusCode::NOT_FOUND, "urn:kiban:problem:not-found"),
        "{body}"
    );

    let session = super::staff_session(&h).await;
    let key = Uuid::now_v7().to_string();
    let form = [
        ("csrf", session.csrf.as_str()),
        ("key", key.as_str()),
        ("office_kind", "home_care_support_office"),
        ("filed_on", "2026-05-30"),
    ];
    let response = bounded(
        "care-plan submit",
        h.client(Some(&office_t01()))
            .post(format!("{}/ui/care-plan/{QUIET_INSURER}/{PERSON}", h.base))
            .header("cookie", format!("{SESSION_COOKIE}={}", session.token))
            .form(&form)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "nothing was recorded"
    );
    h.stop().await;
}
