//! Read your writes (issue 20 item 3): the demo's bug. Right after a
//! municipality recorded home-modification work for a person (its receipt
//! in hand), the person's remaining home-modification amount read through
//! the API must already reflect the work; the demo showed "home
//! modification remaining ¥200000" because the read models had not caught
//! up. The whole system runs as `kiban serve` does (`--role all`, SQLite,
//! the in-process bus, HTTPS with development certificates).
//!
//! The read models are made to lag on purpose (thousands of events stored
//! before the system starts, which the projections replay first), so that
//! a read that does not wait for the receipt's position reads stale state.
//! The typed client waits by sending the position it was told
//! (`Client::observe` → `Kiban-Min-Position`), and a command's answer waits
//! for the read models itself.

use std::time::Duration;

use chrono::Utc;
use kiban_api::client::Client;
use kiban_api::{ConsentRecord, Principal, ProxyApplication};
use kiban_bus::client::{Municipality, Outgoing};
use kiban_bus::ingest::ReceiptStatus;
use kiban_engine::{CommandContext, Engine};
use kiban_events::ExpectedVersion;
use kiban_events::domain::certification::{ApplicationKind, ValidityPeriod};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::{CareLevel, CopaymentRatio};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_tests::{Backend, TestDb, bounded};
use serde_json::json;
use uuid::Uuid;

const INSURER: &str = "131016";
const PERSON: &str = "0000012345";
const OFFICE: &str = "1312345678";
/// Events the projections replay before they reach the person's.
const FILLER_EVENTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_home_modification_amount_reflects_work_just_recorded() {
    let db = TestDb::new(Backend::Sqlite).await;
    remaining_amount_scenario(&db).await;
}

/// The same against an API process + engine process pair (PostgreSQL,
/// NATS): the receipt comes from the engine's ingest, the reads and the
/// commands go to the API process, whose read models follow the engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_home_modification_amount_reflects_work_just_recorded_on_a_pair() {
    let db = TestDb::pair().await;
    remaining_amount_scenario(&db).await;
}

async fn remaining_amount_scenario(db: &TestDb) {
    seed(db).await;
    let dir = tempfile::tempdir().unwrap();
    let system = crate::served::DevServed::start(db, dir.path()).await;
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let person = InsuredNumber::parse(PERSON).unwrap();
    let client = |uri: &str| {
        let principal = Principal::from_uri(uri).unwrap();
        let files = kiban_system::dev_client(&system, &principal).expect("a dev principal");
        let ca = std::fs::read(&system.api().unwrap().tls.client_ca).unwrap();
        let pem = std::fs::read(&files.pem).unwrap();
        Client::new(&system.base_url().unwrap(), &ca, Some(&pem)).unwrap()
    };
    let insurer_client = client(&format!("kiban:insurer:{INSURER}"));

    let mut municipality = Municipality::connect(&system.bus, insurer.clone())
        .await
        .unwrap();
    let today = Utc::now().date_naive();
    let mut positions = Vec::new();
    for (kind, body) in [
        (
            "insured.home_modification_applied",
            json!({"prior_application": 1, "applied_on": today, "planned_cost": 150000}),
        ),
        (
            "insured.home_modification_work_recorded",
            json!({"prior_application": 1, "work_started_on": today,
                   "receipt_on": today, "cost": 150000}),
        ),
    ] {
        let message = Outgoing::from_json(json!({
            "event_id": Uuid::now_v7(),
            "kind": kind,
            "insurer": INSURER,
            "insured": PERSON,
            "application": null,
            "occurred_at": Utc::now(),
            "body": body,
        }))
        .unwrap();
        let receipt = bounded(
            "the receipt",
            municipality.send(&message, Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
        positions.extend(receipt.positions.unwrap_or_default());
    }
    // The insurer is told what was recorded (as the demo's office is) and
    // reads at once.
    insurer_client.observe(positions.iter().copied().max().unwrap());
    let ledgers = insurer_client.ledgers(&insurer, &person).await.unwrap();
    assert_eq!(
        ledgers["home_modification_remaining"], 50000,
        "the work of ¥150000 counts against the ¥200000 cap: {ledgers}"
    );

    // A command's answer waits for the read models too: the office's proxy
    // application is in the person's certifications as soon as it is
    // answered, without any header.
    let federation = client("kiban:federation");
    let office = client(&format!("kiban:office:{OFFICE}:terminal:T-01"));
    federation
        .give_consent(
            &insurer,
            &person,
            &ConsentRecord {
                office: OFFICE.to_owned(),
                terminal: "T-01".to_owned(),
                expires_at: Utc::now() + chrono::Duration::days(30),
            },
        )
        .await
        .unwrap();
    let filed = office
        .file_application(
            &insurer,
            &person,
            &ProxyApplication {
                kind: ApplicationKind::Change,
                applied_on: today,
            },
        )
        .await
        .unwrap();
    let fresh = client(&format!("kiban:insurer:{INSURER}"));
    assert_eq!(fresh.seen_position(), 0, "a client that was told nothing");
    let certifications = fresh.certifications(&insurer, &person).await.unwrap();
    assert!(
        certifications
            .iter()
            .any(|c| filed.stream.ends_with(&format!("-{}", c["seq"]))),
        "the application just answered is listed: {certifications:?}"
    );
    system.shutdown().await;
}

/// The insurer shares data, the person holds a certification and a
/// copayment-ratio certificate, and thousands of unrelated events come
/// before the home modification, so that the projections lag behind it.
async fn seed(db: &TestDb) {
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let context = || {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            Actor::Federation,
            Utc::now(),
        )
    };
    let insurer_context = || {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            Actor::Insurer(insurer.clone()),
            Utc::now(),
        )
    };
    let today = Utc::now().date_naive();
    // From the clock: the rules refuse dates over two years old.
    let first = today - chrono::Duration::days(90);
    for command in [
        InsurerCommand::Onboard {
            insurer: insurer.clone(),
        },
        InsurerCommand::CompleteStandardisation {
            completed_on: first,
        },
        InsurerCommand::CompleteDataTransmission {
            completed_on: first,
        },
    ] {
        engine
            .execute::<Insurer>(&insurer_stream(&insurer), &command, &context())
            .await
            .unwrap();
    }
    let person = insured_stream(&insurer, &InsuredNumber::parse(PERSON).unwrap());
    // The certificate must cover today: it ends on the July 31st after its
    // start (the copayment year, 8/1–7/31), so it starts this copayment year.
    // (Started 60 days back alone, it ended before today from August 1st to
    // September 29th: the receipt was refused `no_copayment_ratio`.)
    let this_year_from = kiban_events::domain::dates::next_july_31(today) - chrono::Months::new(12)
        + chrono::Duration::days(1);
    let from = (today - chrono::Duration::days(60)).max(this_year_from);
    for command in [
        InsuredCommand::RecordCertification {
            application_seq: 1,
            level: CareLevel::Care2,
            validity: ValidityPeriod {
                from,
                until: today + chrono::Duration::days(300),
            },
        },
        InsuredCommand::IssueCopaymentCertificate {
            ratio: CopaymentRatio::new(1).unwrap(),
            valid_from: from,
        },
    ] {
        engine
            .execute::<InsuredPerson>(&person, &command, &insurer_context())
            .await
            .unwrap();
    }
    let filler = kiban_tests::stream("filler", "read-your-writes");
    for _ in 0..FILLER_EVENTS / 1000 {
        let events = kiban_tests::events(1000);
        store
            .append(&filler, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    store.close().await;
}
