//! The authorisation matrix (issue 16, "Also"): every route of the API, as
//! the route table declares it (`GET /v1/openapi.json`, generated from
//! `api/src/routes.rs`), called by every kind of principal over real HTTPS
//! with client certificates, each answer compared with the status this
//! table expects. A route without its row here fails the test, and so does
//! a row for a route that is not served: a route cannot ship without its
//! authorisation written down and checked.
//!
//! The kinds of caller ([`Who`]) and who plays them: see [`start`]. A row's
//! request is chosen so that an allowed caller is told something other
//! than 401/403 without changing what later rows see (a refused date, an
//! unknown terminal, a person nobody recorded); the table says which.

use kiban_api::Principal;
use kiban_events::Actor;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::office::{Loss, Office, OfficeCommand, office_stream};
use kiban_events::domain::{Sha256Digest, TerminalId};
use kiban_events::ids::{InsuredNumber, OfficeNumber};
use kiban_tests::{TestDb, bounded};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::own_api::{OwnApi, Prepared};
use crate::api::{auditor, federation, medical, office_t01, other_insurer, own_insurer};
use crate::person_view::card;
use crate::projections::on_both_backends;
use crate::projections::script::{
    INSTITUTION, INSURER, OFFICE, PERSON, day, history, insurer, register_office, run,
};

on_both_backends!(every_route_answers_every_kind_of_caller_as_the_table_says);

/// A kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No client certificate, no session.
    Nobody,
    /// The insured person `PERSON`, signed in with their card (bearer
    /// token), no client certificate.
    Person,
    /// Office `OFFICE`'s terminal T-01: `PERSON`'s registered care-plan
    /// office, no consent.
    CarePlanOffice,
    /// Office `CONSENTED` (T-07), with `PERSON`'s live consent.
    ConsentedOffice,
    /// Office `STRANGER` (T-08): no consent, not the care-plan office;
    /// "another office" on `OFFICE`'s routes.
    OtherOffice,
    /// Office `OFFICE`'s terminal T-02, reported stolen (suspended).
    SuspendedTerminal,
    /// `PERSON`'s insurer.
    Insurer,
    /// Another insurer (onboarded, not sharing yet).
    OtherInsurer,
    /// The medical institution asked for `PERSON`'s opinion.
    Medical,
    /// The federation (国保中央会).
    Federation,
    /// An auditor.
    Auditor,
}

use Who::*;

const EVERYONE: [Who; 11] = [
    Nobody,
    Person,
    CarePlanOffice,
    ConsentedOffice,
    OtherOffice,
    SuspendedTerminal,
    Insurer,
    OtherInsurer,
    Medical,
    Federation,
    Auditor,
];

const CONSENTED: &str = "1317777777";
const STRANGER: &str = "1318888888";
/// A person nobody recorded.
const NOBODY_RECORDED: &str = "9999999997";

fn principal(uri: &str) -> Principal {
    Principal::from_uri(uri).unwrap()
}
fn suspended_terminal() -> Principal {
    principal(&format!("kiban:office:{OFFICE}:terminal:T-02"))
}
fn consented_office() -> Principal {
    principal(&format!("kiban:office:{CONSENTED}:terminal:T-07"))
}
fn stranger_office() -> Principal {
    principal(&format!("kiban:office:{STRANGER}:terminal:T-08"))
}

/// The certificate a kind of caller presents.
fn certificate(who: Who) -> Option<Principal> {
    match who {
        Nobody | Person => None,
        CarePlanOffice => Some(office_t01()),
        ConsentedOffice => Some(consented_office()),
        OtherOffice => Some(stranger_office()),
        SuspendedTerminal => Some(suspended_terminal()),
        Insurer => Some(own_insurer()),
        OtherInsurer => Some(other_insurer()),
        Medical => Some(medical()),
        Federation => Some(federation()),
        Auditor => Some(auditor()),
    }
}

/// What a row sends.
#[derive(Debug, Clone)]
enum Body {
    Empty,
    Json(Value),
    /// A PDF document (the upload routes).
    Document,
}

/// One route of the table: the request, and the status each kind of caller
/// gets; callers not named get the row's refusal.
struct Row {
    method: Method,
    route: &'static str,
    path: String,
    body: Body,
    allowed: Vec<(Who, u16)>,
    /// The refusal of callers not named in `allowed`.
    refusal: fn(Who) -> u16,
}

/// An organisation's route: 401 without a certificate (the person's
/// session is no certificate), 403 for a principal it does not admit.
fn organisation(who: Who) -> u16 {
    match who {
        Nobody | Person => 401,
        _ => 403,
    }
}

/// The person's view: 401 for anything but the person's session.
fn person_only(_: Who) -> u16 {
    401
}

/// The route template made concrete: `PERSON` of `INSURER`, `OFFICE`,
/// terminal T-99 (registered nowhere), the institution, certification 1,
/// an application nobody filed, a digest of `a`s.
fn concrete(route: &str) -> String {
    route
        .replace("{insurer}", INSURER)
        .replace("{insured}", PERSON)
        .replace("{office}", OFFICE)
        .replace("{terminal}", "T-99")
        .replace("{institution}", INSTITUTION)
        .replace("{seq}", "1")
        .replace("{application}", "1312345678-1")
        .replace("{sha256}", &"a".repeat(64))
}

fn row(method: Method, route: &'static str, body: Body, allowed: &[(Who, u16)]) -> Row {
    Row {
        method,
        route,
        path: concrete(route),
        body,
        allowed: allowed.to_vec(),
        refusal: organisation,
    }
}

fn get(route: &'static str, allowed: &[(Who, u16)]) -> Row {
    row(Method::GET, route, Body::Empty, allowed)
}

fn post(route: &'static str, body: Value, allowed: &[(Who, u16)]) -> Row {
    row(Method::POST, route, Body::Json(body), allowed)
}

/// Every kind of caller gets `status`.
fn everyone(method: Method, route: &'static str, body: Body, status: u16) -> Row {
    let allowed: Vec<(Who, u16)> = EVERYONE.iter().map(|who| (*who, status)).collect();
    row(method, route, body, &allowed)
}

/// Every principal with a certificate gets `status`; nobody else.
fn any_principal(route: &'static str, status: u16) -> Row {
    let allowed: Vec<(Who, u16)> = EVERYONE
        .iter()
        .filter(|who| certificate(**who).is_some())
        .map(|who| (*who, status))
        .collect();
    get(route, &allowed)
}

/// A route of the person's view: the person gets `status`, everyone else 401.
fn me(method: Method, route: &'static str, status: u16) -> Row {
    Row {
        refusal: person_only,
        ..row(method, route, Body::Empty, &[(Person, status)])
    }
}

/// Who reads a person's record (`auth::authorise_person_read`).
const READERS: [(Who, u16); 4] = [
    (CarePlanOffice, 200),
    (ConsentedOffice, 200),
    (Insurer, 200),
    (Auditor, 200),
];

/// The table, in the order it is run (the person signs out last).
fn table() -> Vec<Row> {
    let document = |fill: char| json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 10});
    let mut rows = vec![
        everyone(Method::GET, "/healthz", Body::Empty, 200),
        everyone(Method::GET, "/readyz", Body::Empty, 200),
        any_principal("/metrics", 200),
        any_principal("/v1/openapi.json", 200),
        any_principal("/v1/asyncapi.json", 200),
        // The person's view.
        everyone(Method::POST, "/v1/me/challenge", Body::Json(json!({})), 201),
        // A challenge nobody issued: refused alike for everyone.
        everyone(
            Method::POST,
            "/v1/me/sessions",
            Body::Json(
                json!({"nonce": "0".repeat(32), "certificate_hex": "00", "signature_hex": "00"}),
            ),
            409,
        ),
        me(Method::GET, "/v1/me", 200),
        me(Method::GET, "/v1/me/access-log", 200),
        // A digest of none of the person's documents.
        me(Method::GET, "/v1/me/documents/{sha256}", 404),
        // The care-plan office holds no consent to revoke (422).
        me(Method::DELETE, "/v1/me/consents/{office}", 422),
        // A person's record.
        get("/v1/persons/{insurer}/{insured}/eligibility", &READERS),
        get("/v1/persons/{insurer}/{insured}/certifications", &READERS),
        get("/v1/persons/{insurer}/{insured}/documents", &READERS),
        get("/v1/persons/{insurer}/{insured}/ledgers", &READERS),
        get("/v1/persons/{insurer}/{insured}/personal", &READERS),
        // The blob of the scripted sheet was never uploaded.
        get(
            "/v1/persons/{insurer}/{insured}/documents/{sha256}",
            &[
                (CarePlanOffice, 404),
                (ConsentedOffice, 404),
                (Insurer, 404),
                (Auditor, 404),
            ],
        ),
        get(
            "/v1/persons/{insurer}/{insured}/access-log",
            &[(Insurer, 200), (Auditor, 200)],
        ),
        // A renewal outside the renewal window: refused by the rules (422)
        // once the caller is admitted.
        post(
            "/v1/persons/{insurer}/{insured}/certifications",
            json!({"kind": "renewal", "applied_on": "2026-05-30"}),
            &[(CarePlanOffice, 422), (ConsentedOffice, 422)],
        ),
        // A consent longer than the longest allowed.
        post(
            "/v1/persons/{insurer}/{insured}/consents",
            json!({"office": STRANGER, "terminal": "T-08", "expires_at": day(800)}),
            &[(Federation, 422)],
        ),
        // A card signature over a challenge nobody issued (issue 16 item 7:
        // a care-plan office of any basis is admitted, and then needs the
        // person's signature naming the notification).
        post(
            "/v1/persons/{insurer}/{insured}/care-plan-office",
            json!({"filed_on": "2026-05-31", "card": {"nonce": "0".repeat(32), "certificate_hex": "00", "signature_hex": "00"}}),
            &[
                (ConsentedOffice, 409),
                (CarePlanOffice, 409),
                (OtherOffice, 409),
            ],
        ),
        // An unrecorded number: not found, nothing created (item 14).
        Row {
            path: format!("/v1/persons/{INSURER}/{NOBODY_RECORDED}/forget"),
            ..post(
                "/v1/persons/{insurer}/{insured}/forget",
                json!({}),
                &[(Insurer, 404)],
            )
        },
        // A certificate that is not DER (400 validation).
        post(
            "/v1/persons/{insurer}/{insured}/card-links",
            json!({"certificate_hex": "00"}),
            &[(Insurer, 400), (Federation, 400)],
        ),
        row(
            Method::POST,
            "/v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet",
            Body::Document,
            &[(Insurer, 422)],
        ),
        row(
            Method::POST,
            "/v1/persons/{insurer}/{insured}/certifications/{seq}/opinion",
            Body::Document,
            &[(Medical, 422)],
        ),
        // Offices.
        get(
            "/v1/offices/{office}/caseload",
            &[(CarePlanOffice, 200), (Auditor, 200)],
        ),
        get(
            "/v1/offices/{office}/updates",
            &[(CarePlanOffice, 200), (Auditor, 200)],
        ),
        get(
            "/v1/offices/{office}/terminals",
            &[(CarePlanOffice, 200), (Federation, 200), (Auditor, 200)],
        ),
        // A terminal registered nowhere.
        post(
            "/v1/offices/{office}/terminals/{terminal}/lost",
            json!({"loss": "stolen"}),
            &[(CarePlanOffice, 422), (Federation, 422)],
        ),
        // A terminal registered nowhere.
        post(
            "/v1/offices/{office}/terminals/{terminal}/reinstatement",
            json!({"credential": "c".repeat(64)}),
            &[(Federation, 422)],
        ),
        get("/v1/terminals", &[(Federation, 200), (Auditor, 200)]),
        // Insurers and institutions. Onboarding one already onboarded.
        post(
            "/v1/insurers",
            json!({"insurer": INSURER}),
            &[(Federation, 422)],
        ),
        get(
            "/v1/insurers/{insurer}",
            &[(Insurer, 200), (Federation, 200), (Auditor, 200)],
        ),
        get(
            "/v1/insurers/{insurer}/overdue-applications",
            &[(Insurer, 200), (Auditor, 200)],
        ),
        get(
            "/v1/medical/{institution}/opinion-requests",
            &[(Medical, 200), (Auditor, 200)],
        ),
        get("/v1/access-log", &[(Auditor, 200)]),
        // Subsidies.
        row(
            Method::POST,
            "/v1/attachments",
            Body::Document,
            &[
                (CarePlanOffice, 201),
                (ConsentedOffice, 201),
                (OtherOffice, 201),
                (Medical, 201),
            ],
        ),
        get(
            "/v1/subsidies",
            &[
                (CarePlanOffice, 200),
                (ConsentedOffice, 200),
                (OtherOffice, 200),
                (Medical, 200),
                (Federation, 200),
                (Auditor, 200),
            ],
        ),
        // A passbook nobody uploaded (400: an attachment must be the
        // applicant's own upload), checked once the caller is admitted.
        post(
            "/v1/subsidies",
            json!({"reader_count": 1, "receipt_lines": [], "passbook": document('b')}),
            &[
                (CarePlanOffice, 400),
                (ConsentedOffice, 400),
                (OtherOffice, 400),
                (Medical, 400),
            ],
        ),
        // An application nobody filed (422 subsidy_not_applied).
        post(
            "/v1/subsidies/{application}/decisions",
            json!({"decision": "start_review"}),
            &[(Federation, 422)],
        ),
        get(
            "/v1/subsidies/{application}/attachments/{sha256}",
            &[(Federation, 404), (Auditor, 404), (CarePlanOffice, 404)],
        ),
        // Consent with the card.
        post(
            "/v1/consents/challenge",
            json!({"insurer": INSURER, "insured": PERSON, "consent_expires_at": day(40)}),
            &[
                (CarePlanOffice, 201),
                (ConsentedOffice, 201),
                (OtherOffice, 201),
            ],
        ),
        // A challenge nobody issued.
        post(
            "/v1/consents/card",
            json!({"nonce": "0".repeat(32), "certificate_hex": "00", "signature_hex": "00"}),
            &[
                (CarePlanOffice, 409),
                (ConsentedOffice, 409),
                (OtherOffice, 409),
            ],
        ),
        // The person's consent for an office that holds none.
        Row {
            path: format!("/v1/persons/{INSURER}/{PERSON}/consents/{STRANGER}"),
            ..row(
                Method::DELETE,
                "/v1/persons/{insurer}/{insured}/consents/{office}",
                Body::Empty,
                &[(OtherOffice, 422), (Federation, 422)],
            )
        },
        // Audit.
        get("/v1/audit/verify", &[(Auditor, 200)]),
        // As of a position after the person's first events.
        Row {
            path: format!("/v1/audit/persons/{INSURER}/{PERSON}?at_position=20"),
            ..get("/v1/audit/persons/{insurer}/{insured}", &[(Auditor, 200)])
        },
        get("/v1/audit/offices/{office}/access-log", &[(Auditor, 200)]),
    ];
    // Last: the person signs out (their token then opens nothing).
    rows.push(me(Method::DELETE, "/v1/me/session", 200));
    rows
}

/// Every (method, route) the OpenAPI document declares.
fn declared_routes() -> Vec<(Method, String)> {
    let document = kiban_api::openapi_document();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((
                method.to_uppercase().parse::<Method>().unwrap(),
                path.clone(),
            ));
        }
    }
    routes.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    routes
}

/// The callers: the scripted history (`OFFICE` is `PERSON`'s care-plan
/// office), its T-02 reported stolen, `CONSENTED` with `PERSON`'s consent
/// until day 60, `STRANGER` with nothing, a card linked to `PERSON`.
async fn start(db: &TestDb) -> OwnApi {
    let principals: Vec<Principal> = EVERYONE
        .iter()
        .filter_map(|who| certificate(*who))
        .collect();
    let prepared = Prepared::new(db, &principals).await;
    let engine = &prepared.engine;
    history(engine, &prepared.fingerprint(&office_t01())).await;
    let office = OfficeNumber::parse(OFFICE).unwrap();
    let t02 = TerminalId::parse("T-02").unwrap();
    let credential = prepared.fingerprint(&suspended_terminal());
    run::<Office>(
        engine,
        &office_stream(&office),
        OfficeCommand::RegisterTerminal {
            terminal: t02.clone(),
            credential: Sha256Digest::parse(&credential).unwrap(),
        },
        Actor::Federation,
        day(-19),
    )
    .await;
    run::<Office>(
        engine,
        &office_stream(&office),
        OfficeCommand::ReportTerminalLost {
            terminal: t02,
            loss: Loss::Stolen,
            reported_by: None,
        },
        Actor::Federation,
        day(-18),
    )
    .await;
    let consented = prepared.fingerprint(&consented_office());
    register_office(engine, CONSENTED, &[("T-07", &consented)]).await;
    let stranger = prepared.fingerprint(&stranger_office());
    register_office(engine, STRANGER, &[("T-08", &stranger)]).await;
    let last = run::<InsuredPerson>(
        engine,
        &insured_stream(&insurer(), &InsuredNumber::parse(PERSON).unwrap()),
        InsuredCommand::GiveConsent {
            office: OfficeNumber::parse(CONSENTED).unwrap(),
            terminal: TerminalId::parse("T-07").unwrap(),
            expires_at: day(60),
        },
        Actor::system("consent").unwrap(),
        day(29),
    )
    .await;
    let h = prepared.serve(db, last).await;
    h.link_card(PERSON, card("first")).await;
    h
}

/// `row`'s request as `who`: the status (a stream's body is not read).
async fn status_of(h: &OwnApi, token: &str, who: Who, row: &Row) -> (u16, String) {
    let mut request = h
        .client(certificate(who).as_ref())
        .request(row.method.clone(), format!("{}{}", h.served.base, row.path));
    if who == Person {
        request = request.bearer_auth(token);
    }
    if row.method != Method::GET {
        request = request.header("Idempotency-Key", Uuid::now_v7().to_string());
    }
    request = match &row.body {
        Body::Empty => request,
        Body::Json(value) => request.json(value),
        Body::Document => request
            .header("content-type", "application/pdf")
            .body(b"%PDF-1.4 matrix test".to_vec()),
    };
    let response = bounded("request", request.send()).await.expect("answered");
    let status = response.status().as_u16();
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = if streaming {
        String::new()
    } else {
        bounded("body", response.text()).await.unwrap_or_default()
    };
    (status, text.chars().take(160).collect())
}

async fn every_route_answers_every_kind_of_caller_as_the_table_says(db: &TestDb) {
    let table = table();
    let mut declared = declared_routes();
    let mut tabled: Vec<(Method, String)> = table
        .iter()
        .map(|row| (row.method.clone(), row.route.to_owned()))
        .collect();
    tabled.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    declared.dedup();
    let missing: Vec<_> = declared.iter().filter(|r| !tabled.contains(r)).collect();
    let unserved: Vec<_> = tabled.iter().filter(|r| !declared.contains(r)).collect();
    assert!(
        missing.is_empty() && unserved.is_empty(),
        "routes without a row: {missing:?}; rows of no route: {unserved:?}"
    );
    assert_eq!(tabled.len(), declared.len(), "one row per route");

    let h = start(db).await;
    let token = h.sign_in(card("first")).await;
    let mut wrong = Vec::new();
    let mut calls = 0;
    for row in &table {
        for who in EVERYONE {
            let expected = row
                .allowed
                .iter()
                .find(|(allowed, _)| *allowed == who)
                .map_or_else(|| (row.refusal)(who), |(_, status)| *status);
            let (status, answer) = status_of(&h, &token, who, row).await;
            calls += 1;
            if status != expected {
                wrong.push(format!(
                    "{} {} as {who:?}: {status}, expected {expected}: {answer}",
                    row.method, row.path
                ));
            }
        }
    }
    assert_eq!(calls, declared.len() * EVERYONE.len());
    assert!(
        wrong.is_empty(),
        "{} of {calls} answers differ from the table:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    h.served.stop().await;
}
