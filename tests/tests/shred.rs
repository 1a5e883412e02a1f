//! Crypto-shredding and upcasting (docs/audit.md), on PostgreSQL and SQLite.
//!
//! - Personal fields sent as plaintext are sealed before anything is
//!   recorded: no row of the database ever holds the plaintext. Forgetting
//!   the person destroys the key: the chain still verifies, the read models
//!   drop the person's sealed fields, the values open as "forgotten", nothing
//!   new is sealed for the person, and a scan of the raw database finds
//!   neither the plaintext nor the destroyed key.
//! - `insured.moved_house` v1 rows (bytes of the fixture written by the build
//!   before the v2 change) read back through the store as v2 events.

use std::sync::Arc;

use kiban_engine::Engine;
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_events::domain::DomainEvent;
use kiban_events::domain::certification::{Applicant, CertificationEvent};
use kiban_events::domain::insured::{InsuredEvent, MovedHouse, insured_stream};
use kiban_events::domain::{SealedValue, insured::InsuredPerson};
use kiban_events::envelope::{Actor, EventType, NewEvent, Payload};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_events::{EventId, ExpectedVersion};
use kiban_projections::{ApplicationDoc, Db, Projections, models};
use kiban_store::{Opened, PersonKeys, Store, VerifyReport};
use kiban_tests::{Backend, TestDb, bounded, on_both_backends};
use sqlx::Connection;
use uuid::Uuid;

use crate::projections::script::{ANY_CREDENTIAL, INSURER, day, history};

on_both_backends!(
    forgetting_a_person_leaves_a_verifying_chain_and_no_plaintext,
    v1_rows_of_the_fixture_read_back_as_v2_through_the_store,
    ;
    and_pair:
    readers_see_personal_fields_opened_and_forgotten_over_https,
);

/// The person whose personal fields are sealed, then forgotten.
const FORGOTTEN_PERSON: &str = "0000055555";
/// Distinctive plaintexts: an ASCII marker inside each, and Japanese text.
const ADDRESS: &str = "東京都千代田区霞が関九丁目 SHRED-MARKER-ADDRESS-7f3a";
const FAMILY_NAME: &str = "山田花子 SHRED-MARKER-NAME-7f3a";
/// The insured person's own name and kana (issue 21: names for care staff).
const INSURED_NAME: &str = "鈴木一郎 SHRED-MARKER-INSURED-7f3a";
const INSURED_KANA: &str = "スズキイチロウ SHRED-MARKER-KANA-7f3a";
const MARKERS: [&str; 7] = [
    "SHRED-MARKER",
    "霞が関九丁目",
    "山田花子",
    "SHRED-MARKER-NAME",
    "鈴木一郎",
    "スズキイチロウ",
    "SHRED-MARKER-KANA",
];

fn message(kind: &str, seq: Option<u32>, days: i64, body: serde_json::Value) -> MunicipalMessage {
    MunicipalMessage {
        event_id: Uuid::now_v7(),
        kind: kind.to_owned(),
        insurer: InsurerNumber::parse(INSURER).unwrap(),
        insured: Some(InsuredNumber::parse(FORGOTTEN_PERSON).unwrap()),
        application: seq,
        occurred_at: day(days),
        body: body.as_object().cloned().unwrap(),
    }
}

async fn ingest(engine: &Engine<Store>, message: MunicipalMessage) -> IngestOutcome {
    let sender = message.insurer.clone();
    let at = message.occurred_at;
    engine.ingest(message, &sender, at).await.unwrap()
}

fn accepted(outcome: IngestOutcome) -> (Vec<u64>, bool) {
    match outcome {
        IngestOutcome::Accepted {
            positions,
            replayed,
        } => (positions, replayed),
        IngestOutcome::Rejected(rejection) => panic!("rejected: {rejection:?}"),
    }
}

fn rejected(outcome: IngestOutcome) -> String {
    match outcome {
        IngestOutcome::Rejected(rejection) => rejection.code,
        other => panic!("accepted: {other:?}"),
    }
}

/// The person's data key, read with raw SQL (`None` once destroyed).
async fn data_key(db: &TestDb) -> Option<Vec<u8>> {
    let sql = "SELECT data_key FROM person_keys WHERE person = $1";
    let person = format!("{INSURER}-{FORGOTTEN_PERSON}");
    let key: Option<Option<Vec<u8>>> = match db.backend() {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            let query = sqlx::query_scalar(sql).bind(&person);
            query.fetch_optional(&mut conn).await.unwrap()
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            let query = sqlx::query_scalar(sql).bind(&person);
            query.fetch_optional(&mut conn).await.unwrap()
        }
    };
    key.flatten()
}

/// Everything the database holds, as bytes to search.
///
/// SQLite: the WAL is checkpointed into the main file (TRUNCATE), then the
/// bytes of the database file and of whatever WAL remains are read — every
/// page, including free pages and the unused parts of pages, so deleted or
/// overwritten content that was not zeroed would be found too.
///
/// PostgreSQL: `VACUUM FULL` rewrites every table (dead row versions, which
/// SQL cannot see, are gone), then every table of the schema is dumped as
/// text (`SELECT t::text FROM t`: every column, bytea as `\x` hex). Files
/// outside SQL's reach (the server's WAL segments, free space inside pages)
/// are not scanned; docs/audit.md says what that leaves.
async fn raw_database(db: &TestDb) -> Vec<u8> {
    match db.backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            let path = db.url().strip_prefix("sqlite://").unwrap().to_owned();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                bytes.extend(wal);
            }
            assert!(bytes.len() > 4096, "the database file was read");
            bytes
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::raw_sql("VACUUM FULL")
                .execute(&mut conn)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "events"), "{tables:?}");
            assert!(tables.iter().any(|t| t == "person_keys"), "{tables:?}");
            let mut bytes = Vec::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                bytes.extend_from_slice(rows.join("\n").as_bytes());
                // The text form shows a BYTEA column as hex; its bytes as
                // stored (e.g. an event's payload, text or zstd frame, since
                // migration 0010) are appended as they are.
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = $1 AND data_type = 'bytea'",
                )
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
                for column in columns {
                    let values: Vec<Option<Vec<u8>>> =
                        sqlx::query_scalar(&format!("SELECT \"{column}\" FROM \"{table}\""))
                            .fetch_all(&mut conn)
                            .await
                            .unwrap();
                    for value in values.into_iter().flatten() {
                        bytes.push(b'\n');
                        bytes.extend(value);
                    }
                }
            }
            let _ = conn.close().await;
            bytes
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn assert_no_plaintext(bytes: &[u8], when: &str) {
    for marker in MARKERS {
        assert!(
            !contains(bytes, marker.as_bytes()),
            "{when}: the raw database holds the plaintext {marker:?}"
        );
    }
}

async fn forgetting_a_person_leaves_a_verifying_chain_and_no_plaintext(db: &TestDb) {
    let store = db.open().await;
    let keys = PersonKeys::new(store.clone());
    let engine = Arc::new(Engine::new(store.clone()).with_person_keys(keys.clone()));
    let projections = Projections::start(
        Db::open(db.url()).await.unwrap(),
        store.clone(),
        models::all(),
    )
    .await
    .unwrap();
    history(&engine, ANY_CREDENTIAL).await;
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let insured = InsuredNumber::parse(FORGOTTEN_PERSON).unwrap();

    // A family member files with their name; the person moves.
    accepted(
        ingest(
            &engine,
            message(
                "certification.filed",
                Some(1),
                2,
                serde_json::json!({"kind": "new", "applicant": {"by": "family", "name": {"plain": FAMILY_NAME}}, "applied_on": "2026-05-03",
                    "insured_name": {"name": {"plain": INSURED_NAME}, "kana": {"plain": INSURED_KANA}}}),
            ),
        )
        .await,
    );
    let move_message = message(
        "insured.moved_house",
        None,
        3,
        serde_json::json!({"moved_on": "2026-05-04", "address": {"plain": ADDRESS}}),
    );
    let (positions, replayed) = accepted(ingest(&engine, move_message.clone()).await);
    assert!(!replayed);
    // A retry of the same message seals to the same bytes: replayed, not a
    // duplicate-id conflict.
    let (again, replayed) = accepted(ingest(&engine, move_message).await);
    assert!(replayed, "a retried message is recognised");
    assert_eq!(again, positions);
    // A bare string under a personal key is refused.
    let bare = message(
        "insured.moved_house",
        None,
        3,
        serde_json::json!({"moved_on": "2026-05-04", "address": "1-2-3 Kasumigaseki"}),
    );
    assert_eq!(
        rejected(ingest(&engine, bare).await),
        "personal_field_not_plain"
    );

    // The recorded events carry ciphertext; the key opens it.
    let stream = insured_stream(&insurer, &insured);
    let recorded = store.read_stream(&stream, 1, 100).await.unwrap();
    let sealed = recorded
        .iter()
        .find_map(|event| {
            match InsuredEvent::from_recorded(
                event.event_type.as_str(),
                event.schema_version,
                &event.payload,
            ) {
                Ok(InsuredEvent::MovedHouse(moved)) => moved.address,
                _ => None,
            }
        })
        .expect("the move carries a sealed address");
    assert!(sealed.as_str().starts_with("v1."), "{sealed:?}");
    assert_eq!(
        keys.open(&insurer, &insured, &sealed).await.unwrap(),
        Opened::Plain {
            value: ADDRESS.to_owned()
        }
    );
    // Sealed for this person only: another person's key does not open it.
    let other = InsuredNumber::parse("0000012345").unwrap();
    keys.seal(&insurer, &other, "someone else", "test")
        .await
        .unwrap();
    assert_eq!(
        keys.open(&insurer, &other, &sealed).await.unwrap(),
        Opened::Unreadable
    );
    let head = store.head().await.unwrap().position;
    bounded("caught up", projections.wait_for(head))
        .await
        .unwrap();
    let person = format!("{INSURER}-{FORGOTTEN_PERSON}");
    let doc = projections_person(&projections, &person).await;
    assert_eq!(doc.personal().address.as_ref(), Some(&sealed));
    // The insured person's name and kana are sealed in the read model too.
    let name = doc
        .personal()
        .name
        .expect("the filing's name is the person's");
    assert_eq!(
        keys.open(&insurer, &insured, &name.name).await.unwrap(),
        Opened::Plain {
            value: INSURED_NAME.to_owned()
        }
    );
    let kana = name.kana.expect("the kana");
    assert_eq!(
        keys.open(&insurer, &insured, &kana).await.unwrap(),
        Opened::Plain {
            value: INSURED_KANA.to_owned()
        }
    );
    let before = raw_database(db).await;
    assert_no_plaintext(&before, "before forgetting");
    let key = data_key(db).await.expect("the person has a key");
    // SQLite's file and PostgreSQL's dump both hold the key's bytes.
    let key_needle = key.clone();
    // The scan sees what is there: the ciphertext and the live key.
    assert!(contains(&before, sealed.as_str().as_bytes()));
    assert!(
        contains(&before, &key_needle),
        "the scan finds the live key"
    );

    // Forget.
    let done = engine
        .forget_person(&insurer, &insured, Actor::system("forget").unwrap(), day(5))
        .await
        .unwrap();
    assert!(done.key.key_id.is_some());
    assert!(done.key.destroyed_now);
    assert_eq!(done.executed.events.len(), 1);
    assert_eq!(
        done.executed.events[0].event_type.as_str(),
        "insured.person_forgotten"
    );
    // Forgetting again changes nothing.
    let again = engine
        .forget_person(&insurer, &insured, Actor::system("forget").unwrap(), day(6))
        .await
        .unwrap();
    assert_eq!(again.key.key_id, done.key.key_id);
    assert!(!again.key.destroyed_now);
    let forgotten_events = store
        .read_stream(&stream, 1, 100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type.as_str() == "insured.person_forgotten")
        .count();
    assert_eq!(forgotten_events, 1, "forgetting twice records once");

    // The chain still verifies: its hashes cover the ciphertext.
    let head = store.head().await.unwrap();
    match store.verify(1, None).await.unwrap() {
        VerifyReport::Verified { events, .. } => assert_eq!(events, head.position),
        broken => panic!("{broken:?}"),
    }
    // The value opens as forgotten; nothing new is sealed for the person.
    assert_eq!(
        keys.open(&insurer, &insured, &sealed).await.unwrap(),
        Opened::Forgotten
    );
    assert_eq!(
        PersonKeys::new(store.clone())
            .open(&insurer, &insured, &sealed)
            .await
            .unwrap(),
        Opened::Forgotten,
        "a fresh cache reads the destroyed key too"
    );
    let later = message(
        "insured.moved_house",
        None,
        7,
        serde_json::json!({"moved_on": "2026-05-08", "address": {"plain": ADDRESS}}),
    );
    assert_eq!(rejected(ingest(&engine, later).await), "person_forgotten");

    // The read models show the person as forgotten, without sealed fields.
    bounded("caught up", projections.wait_for(head.position))
        .await
        .unwrap();
    let doc = projections_person(&projections, &person).await;
    let personal = doc.personal();
    assert_eq!(personal.address, None);
    assert_eq!(personal.name, None);
    assert_eq!(doc.name, None, "the read model still holds the sealed name");
    assert!(personal.forgotten_at.is_some());
    assert!(doc.state().forgotten_at.is_some());
    let application: ApplicationDoc = projections
        .db()
        .document("care", &format!("application:{person}-1"))
        .await
        .unwrap()
        .expect("the application is projected");
    match &application.events[0].event {
        CertificationEvent::ApplicationFiled(filed) => {
            assert_eq!(filed.applicant, Applicant::Family { name: None });
            assert_eq!(filed.insured_name, None);
        }
        other => panic!("{other:?}"),
    }
    let care = projections.db().dump("care").await.unwrap();
    let care_text: String = care.iter().map(|(_, json)| json.as_str()).collect();
    for sealed in [sealed.as_str(), name.name.as_str(), kana.as_str()] {
        assert!(
            !care_text.contains(sealed),
            "the read model still holds a sealed value"
        );
    }

    projections.stop().await;
    store.close().await;
    // The raw database: no plaintext, and the destroyed key is gone.
    let raw = raw_database(db).await;
    assert_no_plaintext(&raw, "after forgetting");
    assert!(
        contains(&raw, sealed.as_str().as_bytes()),
        "the events keep their ciphertext"
    );
    assert!(
        !contains(&raw, &key_needle),
        "the destroyed data key is still in the database"
    );
    assert_eq!(data_key(db).await, None);
}

async fn projections_person(
    projections: &Projections,
    person: &str,
) -> kiban_projections::PersonDoc {
    projections
        .db()
        .document("care", &format!("person:{person}"))
        .await
        .unwrap()
        .expect("the person is projected")
}

async fn v1_rows_of_the_fixture_read_back_as_v2_through_the_store(db: &TestDb) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/upcast/insured.moved_house.v1.json"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let store = db.open().await;
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let insured = InsuredNumber::parse(FORGOTTEN_PERSON).unwrap();
    let stream = insured_stream(&insurer, &insured);
    // The rows as the earlier build recorded them: schema version 1, the
    // payload bytes verbatim.
    let events = rows
        .iter()
        .map(|row| NewEvent {
            event_id: EventId::from_uuid(Uuid::now_v7()).unwrap(),
            event_type: EventType::parse(row["event_type"].as_str().unwrap()).unwrap(),
            schema_version: u16::try_from(row["schema_version"].as_u64().unwrap()).unwrap(),
            occurred_at: day(0),
            actor: Actor::Insurer(insurer.clone()),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            payload: Payload::from_json(row["payload"].as_str().unwrap()).unwrap(),
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Exact(0), events)
        .await
        .unwrap();
    let recorded = store.read_stream(&stream, 1, 10).await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|e| e.schema_version == 1));
    assert!(recorded[0].payload.as_str().contains("new_address"));
    let read: Vec<InsuredEvent> = recorded
        .iter()
        .map(|e| {
            InsuredEvent::from_recorded(e.event_type.as_str(), e.schema_version, &e.payload)
                .unwrap()
        })
        .collect();
    assert_eq!(
        read,
        vec![
            InsuredEvent::from(MovedHouse {
                moved_on: chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
                address: Some(SealedValue::parse("v1.k7.AbCdEf0123").unwrap()),
            }),
            InsuredEvent::from(MovedHouse {
                moved_on: chrono::NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(),
                address: None,
            }),
        ]
    );
    // The engine decides on them (its load upcasts), and the projections
    // read them as v2.
    let engine = Engine::new(store.clone());
    let (_, version) = engine.load::<InsuredPerson>(&stream).await.unwrap();
    assert_eq!(version, 2);
    let projections = Projections::start(
        Db::open(db.url()).await.unwrap(),
        store.clone(),
        models::all(),
    )
    .await
    .unwrap();
    bounded("caught up", projections.wait_for(2)).await.unwrap();
    let doc = projections_person(&projections, &format!("{INSURER}-{FORGOTTEN_PERSON}")).await;
    assert_eq!(doc.events.len(), 2);
    assert_eq!(
        doc.personal().moved_on,
        chrono::NaiveDate::from_ymd_opt(2026, 9, 30)
    );
    // The stored bytes are untouched: the chain verifies.
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events: 2, .. }
    ));
    projections.stop().await;
    store.close().await;
}

async fn readers_see_personal_fields_opened_and_forgotten_over_https(db: &TestDb) {
    use crate::api::{Harness, office_t01, other_insurer, own_insurer};
    use crate::projections::script::PERSON;
    use reqwest::{Method, StatusCode};

    let harness = Harness::start(db).await;
    let moved = crate::projections::script::ingest(
        &harness.engine,
        INSURER,
        PERSON,
        None,
        "insured.moved_house",
        27,
        serde_json::json!({"moved_on": "2026-05-28", "address": {"plain": ADDRESS}}),
    )
    .await;
    bounded("caught up", harness.projections.wait_for(moved))
        .await
        .unwrap();
    let path = format!("/v1/persons/{INSURER}/{PERSON}/personal");
    // The insurer and the care-plan office (logged) read the address opened.
    for reader in [own_insurer(), office_t01()] {
        let (status, body) = harness.get(&reader, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["address_display"], ADDRESS, "{body}");
        assert_eq!(body["address"]["state"], "plain");
        assert_eq!(body["forgotten"], false);
    }
    let (status, _) = harness.get(&other_insurer(), &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Only the person's insurer forgets.
    let forget = format!("/v1/persons/{INSURER}/{PERSON}/forget");
    let (status, _) = harness
        .call(Some(&office_t01()), Method::POST, &forget, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = harness
        .call(Some(&own_insurer()), Method::POST, &forget, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["key_id"].is_string(), "{body}");
    let position = body["positions"][0].as_u64().expect("a position");
    bounded("caught up", harness.projections.wait_for(position))
        .await
        .unwrap();
    let (status, body) = harness.get(&own_insurer(), &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["forgotten"], true);
    assert_eq!(body["address"]["state"], "forgotten");
    assert_eq!(body["address_display"], kiban_store::FORGOTTEN_MARKER);
    harness.stop().await;
}
