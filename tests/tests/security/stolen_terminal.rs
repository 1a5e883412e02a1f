//! Low item: one stolen terminal could report every other terminal of its
//! office lost while staying active, locking the office out of the
//! platform. The seed's procedure (介護情報基盤 導入の手引き, 3-1: 端末の紛失・
//! 盗難等 … 停止処理が必要になるため、必ず介護情報基盤ポータルの問い合わせ
//! （電話・フォーム）にご連絡ください) is that the office reports a lost or
//! stolen terminal to the portal, which stops it. kiban follows it end to
//! end through the API: an office terminal may report another terminal at
//! once while the office keeps another active terminal besides the two; the
//! office's last other one only the portal (the federation) suspends; the federation reinstates
//! a terminal with a new certificate, and the stolen certificate stays
//! refused.

use kiban_api::Principal;
use kiban_events::domain::Sha256Digest;
use kiban_events::domain::TerminalId;
use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
use kiban_events::envelope::Actor;
use kiban_events::ids::OfficeNumber;
use kiban_tests::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::own_api::{As, OwnApi, Prepared};
use crate::api::{federation, office_t01, problem_type};
use crate::projections::on_both_backends;
use crate::projections::script::{OFFICE, day, history, run};

on_both_backends!(a_stolen_terminal_cannot_lock_its_office_out_and_the_portal_restores_it);

fn terminal(id: &str) -> Principal {
    Principal::from_uri(&format!("kiban:office:{OFFICE}:terminal:{id}")).unwrap()
}

/// The scripted office with three terminals, T-01 to T-03.
async fn start(db: &TestDb) -> OwnApi {
    let principals = [
        office_t01(),
        terminal("T-02"),
        terminal("T-03"),
        federation(),
    ];
    let prepared = Prepared::new(db, &principals).await;
    let mut last = history(&prepared.engine, &prepared.fingerprint(&office_t01())).await;
    let office = OfficeNumber::parse(OFFICE).unwrap();
    for id in ["T-02", "T-03"] {
        last = run::<Office>(
            &prepared.engine,
            &office_stream(&office),
            OfficeCommand::RegisterTerminal {
                terminal: TerminalId::parse(id).unwrap(),
                credential: Sha256Digest::parse(&prepared.fingerprint(&terminal(id))).unwrap(),
            },
            Actor::Federation,
            day(-19),
        )
        .await;
    }
    prepared.serve(db, last).await
}

/// `who` reports terminal `id` of the office lost (or stolen): the status
/// and the problem's `code`, if any.
async fn report(h: &OwnApi, who: As<'_>, id: &str, loss: &str) -> (StatusCode, Option<String>) {
    let path = format!("/v1/offices/{OFFICE}/terminals/{id}/lost");
    let (status, body) = h
        .call_as(who, Method::POST, &path, Some(json!({ "loss": loss })))
        .await;
    (status, body["code"].as_str().map(str::to_owned))
}

/// The refusal of reporting the office's last other active terminal.
fn refused() -> (StatusCode, Option<String>) {
    (
        StatusCode::FORBIDDEN,
        Some("last_other_terminal".to_owned()),
    )
}

async fn a_stolen_terminal_cannot_lock_its_office_out_and_the_portal_restores_it(db: &TestDb) {
    let h = start(db).await;
    let caseload = format!("/v1/offices/{OFFICE}/caseload");
    let stolen = office_t01();
    // The thief, at T-01, reports T-02: suspended at once (the office still
    // has T-03 besides the reporter) ...
    let outcome = report(&h, As::Principal(&stolen), "T-02", "stolen").await;
    assert_eq!(outcome, (StatusCode::CREATED, None));
    // ... but not T-03, the office's last other active terminal.
    let outcome = report(&h, As::Principal(&stolen), "T-03", "stolen").await;
    assert_eq!(outcome, refused());
    let (status, body) = h
        .call(Some(&terminal("T-03")), Method::GET, &caseload, None)
        .await;
    assert_eq!(status, StatusCode::OK, "T-03 still works: {body}");
    // Nor may the office, at T-03, report the stolen T-01 now: for T-03,
    // too, it is the last other active terminal (the rule cannot tell the
    // thief from the office). The office calls the portal, which reports
    // it as the federation: suspended at once.
    let outcome = report(&h, As::Principal(&terminal("T-03")), "T-01", "stolen").await;
    assert_eq!(outcome, refused());
    let outcome = report(&h, As::Principal(&federation()), "T-01", "stolen").await;
    assert_eq!(outcome, (StatusCode::CREATED, None));
    let (status, body) = h.call(Some(&stolen), Method::GET, &caseload, None).await;
    assert_eq!(
        (status, problem_type(&body)),
        (
            StatusCode::FORBIDDEN,
            "urn:kiban:problem:terminal-suspended"
        ),
        "{body}"
    );
    // The portal (the federation) reinstates T-02 with a newly issued
    // certificate; the old one stays refused, the new one works.
    let (new_pem, new_fingerprint) = h.issue_another(&terminal("T-02"));
    let reinstate = format!("/v1/offices/{OFFICE}/terminals/T-02/reinstatement");
    let (status, body) = h
        .call(
            Some(&terminal("T-02")),
            Method::POST,
            &reinstate,
            Some(json!({"credential": new_fingerprint})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only the federation: {body}");
    let (status, body) = h
        .call(
            Some(&federation()),
            Method::POST,
            &reinstate,
            Some(json!({"credential": new_fingerprint})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = h
        .call(Some(&terminal("T-02")), Method::GET, &caseload, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the old certificate");
    let (status, body) = h
        .call_as(As::Certificate(&new_pem), Method::GET, &caseload, None)
        .await;
    assert_eq!(status, StatusCode::OK, "the new certificate: {body}");
    // A terminal may always report itself, even as the office's last.
    let outcome = report(&h, As::Principal(&terminal("T-03")), "T-03", "lost").await;
    assert_eq!(outcome, (StatusCode::CREATED, None));
    let outcome = report(&h, As::Certificate(&new_pem), "T-02", "lost").await;
    assert_eq!(outcome, (StatusCode::CREATED, None));
    h.served.stop().await;
}
