//! The read models over real stores, on PostgreSQL and SQLite: read models
//! after a scripted history, catch-up then live, restart from the
//! checkpoint without applying twice, rebuild gives identical documents.
//!
//! [`script`] is shared with the API suite.

use std::sync::Arc;

use kiban_engine::Engine;
use kiban_projections::{Db, Projections, ReadModels, models};
use kiban_store::Store;
use kiban_tests::{TestDb, bounded};

use self::script::*;

// The suites of this binary import the macro from here (one macro for every
// suite: `kiban_tests::on_both_backends`).
pub(crate) use kiban_tests::on_both_backends;

on_both_backends!(
    read_models_show_a_scripted_history,
    projections_catch_up_then_follow_live,
    a_restart_resumes_from_the_checkpoint_without_applying_twice,
    a_rebuild_gives_identical_read_models_and_swaps_them_in,
    live_batches_give_the_read_models_a_rebuild_gives,
    a_rebuild_in_small_batches_gives_what_the_live_runner_gives,
    projections_at_different_checkpoints_apply_each_event_once,
);

/// The plan of a batch's prefetch on PostgreSQL, once the table has
/// statistics: the primary key probed for the batch's keys. The earlier
/// `doc_key IN (SELECT jsonb_array_elements_text($3::jsonb))` was planned
/// as a hash join over a sequential scan of the whole table, for any
/// number of keys (and on a table without statistics as a nested loop over
/// every document of the generation): 1–7 s per batch in `kiban simulate`
/// (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prefetch_probes_the_primary_key() {
    let db = TestDb::new(kiban_tests::Backend::Postgres).await;
    let read = Db::open(db.url()).await.unwrap();
    let kiban_store::PerBackend::Postgres(pool) = read.pool() else {
        unreachable!("a PostgreSQL database")
    };
    sqlx::raw_sql(
        "INSERT INTO projection_documents (projection, generation, doc_key, json)
            SELECT 'care', 1, 'person:' || i, '{}' FROM generate_series(1, 20000) i;
        INSERT INTO projection_documents (projection, generation, doc_key, json)
            SELECT 'organisations', 1, 'office:' || i, '{}' FROM generate_series(1, 2000) i;
        ANALYZE projection_documents",
    )
    .execute(pool)
    .await
    .unwrap();
    let keys: Vec<String> = (1..=3).map(|i| format!("person:{i}")).collect();
    let plan: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN {}", kiban_projections::PREFETCH_POSTGRES))
            .bind("care")
            .bind(1_i64)
            .bind(&keys)
            .fetch_all(pool)
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.lines()
            .any(|line| line.contains("Index Cond") && line.contains("doc_key = ANY")),
        "{plan}"
    );
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("Join"),
        "{plan}"
    );
    read.close().await;
}

/// On PostgreSQL the runner analyses the read-model tables as they grow
/// (here after the first row; `ANALYZE_AFTER_ROWS` rows by default), so that
/// a fresh database's first minutes are not planned without statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_models_are_analysed_as_they_grow() {
    let db = TestDb::new(kiban_tests::Backend::Postgres).await;
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    let read = Db::open_analysing_after(db.url(), 1).await.unwrap();
    let kiban_store::PerBackend::Postgres(pool) = read.pool().clone() else {
        unreachable!("a PostgreSQL database")
    };
    let analysed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'projection_documents'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(analysed().await, 0);
    let projections = Projections::start(read, store.clone(), models::all())
        .await
        .unwrap();
    let last = history(&engine, ANY_CREDENTIAL).await;
    caught_up(&projections, last).await;
    bounded("an ANALYZE of the read models", async {
        while analysed().await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    projections.stop().await;
    store.close().await;
}

/// A process that opens read-model tables analysed before goes on from
/// their size at that analysis (the next `ANALYZE` when they have doubled),
/// instead of analysing them again after its own first rows: a restart on a
/// national-size store ran four `ANALYZE`s of 1.2–1.6 s in its first 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_restart_does_not_analyse_tables_analysed_before_until_they_double() {
    let db = TestDb::new(kiban_tests::Backend::Postgres).await;
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    let read = Db::open_analysing_after(db.url(), 1).await.unwrap();
    assert_eq!(
        read.next_analysis_at(),
        1,
        "fresh tables: the first threshold"
    );
    let kiban_store::PerBackend::Postgres(pool) = read.pool().clone() else {
        unreachable!("a PostgreSQL database")
    };
    let projections = Projections::start(read, store.clone(), models::all())
        .await
        .unwrap();
    let last = history(&engine, ANY_CREDENTIAL).await;
    caught_up(&projections, last).await;
    projections.stop().await;
    sqlx::query("ANALYZE projection_documents, projection_index")
        .execute(&pool)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM projection_documents) + (SELECT count(*) FROM projection_index)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(rows > 0, "the history wrote read-model rows");
    let reopened = Db::open_analysing_after(db.url(), 1).await.unwrap();
    assert_eq!(
        reopened.next_analysis_at(),
        2 * rows as u64,
        "the next ANALYZE when the {rows} rows analysed before have doubled"
    );
    reopened.close().await;
    store.close().await;
}

/// A scripted history through the engine, as the suites need it.
pub(crate) mod script {
    use chrono::{DateTime, TimeZone, Utc};
    use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
    use kiban_engine::{CommandContext, Engine};
    use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
    use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
    use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
    use kiban_events::domain::{Decider, ServiceTypeCode, Sha256Digest, TerminalId};
    use kiban_events::ids::{InsuredNumber, InsurerNumber, OfficeNumber};
    use kiban_events::{Actor, EventId};
    use kiban_store::Store;
    use serde_json::json;
    use uuid::Uuid;

    /// The insurer whose data is shared.
    pub const INSURER: &str = "131016";
    /// An insurer onboarded but not yet sharing.
    pub const QUIET_INSURER: &str = "131024";
    /// The person with a whole decided certification.
    pub const PERSON: &str = "0000012345";
    /// A person with an open application, overdue later.
    pub const WAITING_PERSON: &str = "0000067890";
    /// The care office (with the person's care-plan registration).
    pub const OFFICE: &str = "1312345678";
    /// Its terminal.
    pub const TERMINAL: &str = "T-01";
    /// The medical institution asked for the opinion.
    pub const INSTITUTION: &str = "1310000001";

    pub fn insurer() -> InsurerNumber {
        InsurerNumber::parse(INSURER).unwrap()
    }

    pub fn office() -> OfficeNumber {
        OfficeNumber::parse(OFFICE).unwrap()
    }

    /// 2026-05-01 09:00 JST plus `days`.
    pub fn day(days: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap() + chrono::Duration::days(days)
    }

    fn id() -> EventId {
        EventId::from_uuid(Uuid::now_v7()).unwrap()
    }

    /// Executes `command` on `stream` as `actor` at `now`; panics on refusal.
    pub async fn run<D: Decider>(
        engine: &Engine<Store>,
        stream: &kiban_events::StreamName,
        command: D::Command,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> u64
    where
        D::State: Send + Sync + 'static,
    {
        let executed = engine
            .execute::<D>(stream, &command, &CommandContext::new(id(), actor, now))
            .await
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        executed.positions().last().copied().unwrap_or(0)
    }

    /// A municipality's message; panics on rejection.
    pub async fn ingest(
        engine: &Engine<Store>,
        insurer: &str,
        insured: &str,
        seq: Option<u32>,
        kind: &str,
        days: i64,
        body: serde_json::Value,
    ) -> u64 {
        let sender = InsurerNumber::parse(insurer).unwrap();
        let message = MunicipalMessage {
            event_id: Uuid::now_v7(),
            kind: kind.to_owned(),
            insurer: sender.clone(),
            insured: Some(InsuredNumber::parse(insured).unwrap()),
            application: seq,
            occurred_at: day(days),
            body: body.as_object().cloned().unwrap_or_default(),
        };
        match engine.ingest(message, &sender, day(days)).await.unwrap() {
            IngestOutcome::Accepted { positions, .. } => *positions.last().unwrap(),
            IngestOutcome::Rejected(rejection) => panic!("{kind} rejected: {rejection:?}"),
        }
    }

    /// Onboards `insurer`; with `sharing`, completes its data transmission.
    pub async fn onboard_insurer(engine: &Engine<Store>, insurer: &str, sharing: bool) -> u64 {
        let number = InsurerNumber::parse(insurer).unwrap();
        let stream = insurer_stream(&number);
        let mut last = run::<Insurer>(
            engine,
            &stream,
            InsurerCommand::Onboard {
                insurer: number.clone(),
            },
            Actor::Federation,
            day(-30),
        )
        .await;
        if sharing {
            last = start_sharing(engine, insurer, day(-25)).await;
        }
        last
    }

    /// The federation records `insurer`'s standardisation and data
    /// transmission completed `at` (which turns its sharing with offices
    /// on): the position of `insurer.sharing_enabled`.
    pub async fn start_sharing(engine: &Engine<Store>, insurer: &str, at: DateTime<Utc>) -> u64 {
        let stream = insurer_stream(&InsurerNumber::parse(insurer).unwrap());
        let on = (at + chrono::Duration::hours(9)).date_naive();
        let mut last = 0;
        for command in [
            InsurerCommand::CompleteStandardisation { completed_on: on },
            InsurerCommand::CompleteDataTransmission { completed_on: on },
        ] {
            last = run::<Insurer>(engine, &stream, command, Actor::Federation, at).await;
        }
        last
    }

    /// Registers `office` with `terminals` (id, certificate fingerprint).
    pub async fn register_office(
        engine: &Engine<Store>,
        office: &str,
        terminals: &[(&str, &str)],
    ) -> u64 {
        let number = OfficeNumber::parse(office).unwrap();
        let stream = office_stream(&number);
        let mut last = run::<Office>(
            engine,
            &stream,
            OfficeCommand::Register {
                office: number,
                service_types: vec![ServiceTypeCode::parse("43").unwrap()],
            },
            Actor::Federation,
            day(-20),
        )
        .await;
        for (terminal, credential) in terminals {
            last = run::<Office>(
                engine,
                &stream,
                OfficeCommand::RegisterTerminal {
                    terminal: TerminalId::parse(terminal).unwrap(),
                    credential: Sha256Digest::parse(credential).unwrap(),
                },
                Actor::Federation,
                day(-20),
            )
            .await;
        }
        last
    }

    fn document(fill: char) -> serde_json::Value {
        json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 48213})
    }

    /// A whole new certification of `insured` from filing to decision
    /// (care_2, from 2026-05-01 to 2026-10-31).
    pub async fn whole_certification(engine: &Engine<Store>, insurer: &str, insured: &str) -> u64 {
        let steps = [
            (
                "certification.filed",
                0,
                json!({"kind": "new", "applicant": {"by": "office", "office": OFFICE}, "applied_on": "2026-05-01"}),
            ),
            (
                "certification.investigation_scheduled",
                2,
                json!({"scheduled_on": "2026-05-08"}),
            ),
            (
                "certification.investigation_completed",
                8,
                json!({"investigation_sheet": document('a')}),
            ),
            (
                "certification.opinion_requested",
                9,
                json!({"institution": INSTITUTION}),
            ),
            (
                "certification.opinion_received",
                12,
                json!({"institution": INSTITUTION, "opinion": document('b')}),
            ),
            (
                "certification.primary_judgment_recorded",
                15,
                json!({"level": "care_2"}),
            ),
            (
                "certification.secondary_judgment_recorded",
                20,
                json!({"level": "care_2"}),
            ),
            (
                "certification.decided",
                21,
                json!({"level": "care_2", "validity": null}),
            ),
        ];
        let mut last = 0;
        for (kind, days, body) in steps {
            last = ingest(engine, insurer, insured, Some(1), kind, days, body).await;
        }
        last
    }

    /// The whole scripted history; returns the last position.
    /// `credential` is the fingerprint registered for the office terminal.
    pub async fn history(engine: &Engine<Store>, credential: &str) -> u64 {
        onboard_insurer(engine, INSURER, true).await;
        onboard_insurer(engine, QUIET_INSURER, false).await;
        register_office(engine, OFFICE, &[(TERMINAL, credential)]).await;
        whole_certification(engine, INSURER, PERSON).await;
        ingest(
            engine,
            INSURER,
            PERSON,
            None,
            "insured.copayment_certificate_issued",
            22,
            json!({"ratio": 1, "valid_from": "2026-05-01"}),
        )
        .await;
        ingest(engine, INSURER, PERSON, None, "insured.care_plan_office_registered", 23, json!({"office": OFFICE, "office_kind": "home_care_support_office", "filed_on": "2026-05-24"})).await;
        ingest(
            engine,
            INSURER,
            PERSON,
            None,
            "insured.copayment_certificate_issued",
            22,
            json!({"ratio": 2, "valid_from": "2026-08-01"}),
        )
        .await;
        ingest(engine, INSURER, PERSON, None, "insured.equipment_purchase_recorded", 25, json!({"category": "bathing_aid", "purchased_on": "2026-05-25", "cost": 30000, "seller_designated": true, "replacement_reason": null})).await;
        ingest(
            engine,
            INSURER,
            WAITING_PERSON,
            Some(1),
            "certification.filed",
            1,
            json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-05-02"}),
        )
        .await;
        let person = insured_stream(&insurer(), &InsuredNumber::parse(PERSON).unwrap());
        run::<InsuredPerson>(
            engine,
            &person,
            InsuredCommand::RecordView {
                office: office(),
                terminal: TerminalId::parse(TERMINAL).unwrap(),
                insurer_sharing_enabled: true,
            },
            Actor::system("api").unwrap(),
            day(26),
        )
        .await
    }

    /// The insurer links a card certificate to `PERSON` (day 27), so that
    /// every read model, `card_links` too, has a document; returns its
    /// position.
    pub async fn link_a_card(engine: &Engine<Store>) -> u64 {
        run::<InsuredPerson>(
            engine,
            &insured_stream(&insurer(), &InsuredNumber::parse(PERSON).unwrap()),
            InsuredCommand::LinkCard {
                issuer: "CN=kiban test JPKI user authentication CA".to_owned(),
                serial: "1001".to_owned(),
            },
            Actor::Insurer(insurer()),
            day(27),
        )
        .await
    }

    /// A fingerprint for suites that do not check terminals.
    pub const ANY_CREDENTIAL: &str =
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
}

async fn start(db: &TestDb, store: &Store) -> Projections {
    let read_db = Db::open(db.url()).await.expect("read-model database");
    Projections::start(read_db, store.clone(), models::all())
        .await
        .expect("projections start")
}

async fn caught_up(projections: &Projections, position: u64) {
    bounded("projections catching up", projections.wait_for(position))
        .await
        .expect("caught up");
}

fn person_key() -> String {
    format!("{INSURER}-{PERSON}")
}

async fn read_models_show_a_scripted_history(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let projections = start(db, &store).await;
    let last = history(&engine, ANY_CREDENTIAL).await;
    caught_up(&projections, last).await;
    let read = ReadModels::new(projections.db().clone());
    let now = day(30);

    let eligibility = read
        .eligibility(&person_key(), now)
        .await
        .unwrap()
        .expect("person");
    let certification = eligibility.certification.expect("certified");
    assert_eq!(certification.level.code(), "care_2");
    assert_eq!(certification.valid_from.to_string(), "2026-05-01");
    assert_eq!(certification.valid_until.to_string(), "2026-10-31");
    assert_eq!(eligibility.copayment_certificates.len(), 2);
    assert!(eligibility.copayment_certificates[0].current);
    assert_eq!(eligibility.copayment_certificates[0].ratio.tenths(), 1);
    assert!(!eligibility.copayment_certificates[1].current);
    assert_eq!(
        eligibility.care_plan_office.expect("registered").office,
        OFFICE
    );

    let applications = read.applications(&person_key(), now).await.unwrap();
    assert_eq!(applications.len(), 1);
    let application = &applications[0];
    assert_eq!(application.status, "decided");
    assert_eq!(application.steps.len(), 8);
    assert_eq!(
        application.current_step.as_deref(),
        Some("certification.decided")
    );
    assert_eq!(application.decided_level.map(|l| l.code()), Some("care_2"));
    assert!(!application.overdue);
    assert_eq!(application.steps[2].occurred_at, day(8));

    let documents = read.documents_of(&person_key()).await.unwrap();
    let kinds: Vec<&str> = documents.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, ["investigation_sheet", "opinion"]);
    assert_eq!(documents[1].sha256, "b".repeat(64));
    assert_eq!(documents[1].size_bytes, 48213);

    let ledgers = read
        .ledgers(&person_key(), now)
        .await
        .unwrap()
        .expect("person");
    assert_eq!(ledgers.equipment_remaining, 70_000);
    assert_eq!(ledgers.home_modification_remaining, 200_000);
    assert_eq!(ledgers.fiscal_year, 2026);

    // The waiting person's application is past its 30 days at day 40, not at day 20.
    let overdue = read.overdue_applications(INSURER, day(40)).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].insured, WAITING_PERSON);
    assert_eq!(
        overdue[0].due_date.map(|d| d.to_string()).as_deref(),
        Some("2026-06-01")
    );
    assert!(
        read.overdue_applications(INSURER, day(20))
            .await
            .unwrap()
            .is_empty()
    );

    let caseload = read.caseload(&office(), "", 10, now).await.unwrap();
    assert_eq!(caseload.items.len(), 1);
    assert_eq!(caseload.items[0].insured, PERSON);
    assert_eq!(caseload.next, None);

    let terminals = read.terminals(Some(OFFICE)).await.unwrap();
    assert_eq!(terminals.len(), 1);
    assert!(!terminals[0].suspended);
    assert!(
        read.insurer(INSURER)
            .await
            .unwrap()
            .expect("insurer")
            .sharing_enabled
    );
    assert!(
        !read
            .insurer(QUIET_INSURER)
            .await
            .unwrap()
            .expect("insurer")
            .sharing_enabled
    );
    assert_eq!(
        read.opinion_requests(INSTITUTION, now).await.unwrap().len(),
        1
    );

    let log = read.access_log(Some(&person_key()), None).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reader, kiban_projections::Reader::Office);
    assert_eq!(log[0].office.as_deref(), Some(OFFICE));
    assert_eq!(log[0].terminal.as_deref(), Some(TERMINAL));
    let lag = projections.lag().await.unwrap();
    assert!(lag.iter().all(|l| l.events() == 0), "{lag:?}");
    projections.stop().await;
    store.close().await;
}

async fn projections_catch_up_then_follow_live(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let last = history(&engine, ANY_CREDENTIAL).await;
    // Started after the history: catches up.
    let projections = start(db, &store).await;
    caught_up(&projections, last).await;
    let read = ReadModels::new(projections.db().clone());
    assert_eq!(read.access_log(None, None).await.unwrap().len(), 1);
    // Then follows: a second read and a consent for another office appear.
    let person = kiban_events::domain::insured::insured_stream(
        &insurer(),
        &kiban_events::ids::InsuredNumber::parse(PERSON).unwrap(),
    );
    let other = kiban_events::ids::OfficeNumber::parse("1319999999").unwrap();
    let live = run::<kiban_events::domain::insured::InsuredPerson>(
        &engine,
        &person,
        kiban_events::domain::insured::InsuredCommand::GiveConsent {
            office: other.clone(),
            terminal: kiban_events::domain::TerminalId::parse("X-1").unwrap(),
            expires_at: day(60),
        },
        kiban_events::Actor::system("consent").unwrap(),
        day(27),
    )
    .await;
    caught_up(&projections, live).await;
    let caseload = read.caseload(&other, "", 10, day(28)).await.unwrap();
    assert_eq!(caseload.items.len(), 1);
    // After the consent expires the office no longer sees the person.
    assert!(
        read.caseload(&other, "", 10, day(61))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    projections.stop().await;
    store.close().await;
}

async fn a_restart_resumes_from_the_checkpoint_without_applying_twice(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let last = history(&engine, ANY_CREDENTIAL).await;
    let first = start(db, &store).await;
    caught_up(&first, last).await;
    first.stop().await;
    let before = ReadModels::new(first.db().clone())
        .person(&person_key())
        .await
        .unwrap()
        .unwrap();
    // One more event while nothing runs, then a restart.
    let person = kiban_events::domain::insured::insured_stream(
        &insurer(),
        &kiban_events::ids::InsuredNumber::parse(PERSON).unwrap(),
    );
    let more = ingest(&engine, INSURER, PERSON, None, "insured.equipment_purchase_recorded", 28, serde_json::json!({"category": "walker", "purchased_on": "2026-05-29", "cost": 10000, "seller_designated": true, "replacement_reason": null})).await;
    let second = start(db, &store).await;
    caught_up(&second, more).await;
    let read = ReadModels::new(second.db().clone());
    let after = read.person(&person_key()).await.unwrap().unwrap();
    assert_eq!(
        after.events.len(),
        before.events.len() + 1,
        "each event applied exactly once"
    );
    let mut positions: Vec<u64> = after.events.iter().map(|e| e.position).collect();
    positions.dedup();
    assert_eq!(positions.len(), after.events.len());
    assert_eq!(
        read.ledgers(&person_key(), day(30))
            .await
            .unwrap()
            .unwrap()
            .equipment_remaining,
        60_000
    );
    assert_eq!(read.access_log(None, None).await.unwrap().len(), 1);
    let stored = store.read_stream(&person, 1, 100).await.unwrap().len();
    // Every insured event but the read is in the person's document.
    assert_eq!(after.events.len(), stored - 1);
    second.stop().await;
    store.close().await;
}

async fn a_rebuild_gives_identical_read_models_and_swaps_them_in(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let projections = start(db, &store).await;
    history(&engine, ANY_CREDENTIAL).await;
    // So that every read model has documents to rebuild.
    let last = link_a_card(&engine).await;
    caught_up(&projections, last).await;
    let names = projections.names();
    let mut before = Vec::new();
    let mut index_before = Vec::new();
    for name in &names {
        before.push(projections.db().dump(name).await.unwrap());
        index_before.push(projections.db().dump_index(name).await.unwrap());
    }
    for name in &names {
        let position = bounded("rebuild", projections.rebuild(name)).await.unwrap();
        assert_eq!(position, last);
    }
    for (name, before) in names.iter().zip(&before) {
        let after = projections.db().dump(name).await.unwrap();
        assert!(!after.is_empty(), "{name} has documents");
        assert_eq!(&after, before, "{name} rebuilt identically");
    }
    for (name, before) in names.iter().zip(&index_before) {
        let after = projections.db().dump_index(name).await.unwrap();
        assert_eq!(&after, before, "{name}'s indexes rebuilt identically");
    }
    assert!(
        index_before.iter().any(|entries| !entries.is_empty()),
        "the history fills some index"
    );
    // All of them in one pass: the same again.
    let position = bounded("rebuild all", projections.rebuild_all())
        .await
        .unwrap();
    assert_eq!(position, last);
    for ((name, before), index_before) in names.iter().zip(&before).zip(&index_before) {
        assert_eq!(&projections.db().dump(name).await.unwrap(), before);
        assert_eq!(
            &projections.db().dump_index(name).await.unwrap(),
            index_before
        );
    }
    // The runners follow the new generation.
    let more = ingest(&engine, INSURER, PERSON, None, "insured.equipment_purchase_recorded", 28, serde_json::json!({"category": "walker", "purchased_on": "2026-05-29", "cost": 10000, "seller_designated": true, "replacement_reason": null})).await;
    caught_up(&projections, more).await;
    let read = ReadModels::new(projections.db().clone());
    assert_eq!(
        read.ledgers(&person_key(), day(30))
            .await
            .unwrap()
            .unwrap()
            .equipment_remaining,
        60_000
    );
    projections.stop().await;
    store.close().await;
}

/// The batched live path. Persons' histories appended straight to the store
/// (no engine), so that many persons' streams interleave in one batch and
/// each document is touched many times within it.
mod synthetic {
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use kiban_events::StreamName;
    use kiban_events::envelope::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload};
    use kiban_store::Store;
    use uuid::Uuid;

    /// The insurer of every synthetic person.
    pub const INSURER: &str = "131016";

    /// The family applicant's (sealed) name in even persons' applications.
    pub fn family_name(n: u64) -> String {
        format!("sealed-family-name-{n}")
    }

    /// `<insurer>-<insured>` of person `n`.
    pub fn person(n: u64) -> String {
        format!("{INSURER}-{:010}", 2_000_000 + n)
    }

    /// The office of person `n`.
    pub fn office(n: u64) -> String {
        format!("13{:08}", 10_000_000 + n % 7)
    }

    fn at(days: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 1, 30, 0).single().unwrap() + Duration::days(days)
    }

    fn events(list: Vec<(&str, String)>) -> Vec<NewEvent> {
        list.into_iter()
            .enumerate()
            .map(|(i, (event_type, payload))| NewEvent {
                event_id: EventId::from_uuid(Uuid::now_v7()).unwrap(),
                event_type: EventType::parse(event_type).unwrap(),
                schema_version: 1,
                occurred_at: at(i as i64),
                actor: Actor::parse(&format!("insurer:{INSURER}")).unwrap(),
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                payload: Payload::from_json(&payload).unwrap(),
            })
            .collect()
    }

    /// Person `n`'s certification (filed → decided, 5 events; a family
    /// applicant with a sealed name for even `n`) and their own stream
    /// (the certification, the care-plan office, a consent for a second
    /// office, two reads of the record).
    pub async fn append_person(store: &Store, n: u64) {
        let insured = format!("{:010}", 2_000_000 + n);
        let office = office(n);
        let other = format!("13{:08}", 20_000_000 + n % 5);
        let applicant = if n.is_multiple_of(2) {
            format!(r#"{{"by":"family","name":"{}"}}"#, family_name(n))
        } else {
            format!(r#"{{"by":"office","office":"{office}"}}"#)
        };
        let certification = events(vec![
            ("certification.filed", format!(r#"{{"insurer":"{INSURER}","insured":"{insured}","seq":1,"kind":"new","applicant":{applicant},"applied_on":"2026-05-01","current_certification":null}}"#)),
            ("certification.investigation_scheduled", r#"{"scheduled_on":"2026-05-08"}"#.to_owned()),
            ("certification.opinion_requested", r#"{"institution":"1310000001","requested_on":"2026-05-03"}"#.to_owned()),
            ("certification.primary_judgment_recorded", r#"{"level":"care_2","judged_on":"2026-05-15"}"#.to_owned()),
            ("certification.decided", r#"{"level":"care_2","decided_on":"2026-05-20","validity":{"from":"2026-06-01","until":"2027-05-31"},"validity_months":12}"#.to_owned()),
        ]);
        let person = events(vec![
            ("insured.certification_recorded", r#"{"application_seq":1,"level":"care_2","validity":{"from":"2026-06-01","until":"2027-05-31"}}"#.to_owned()),
            ("insured.care_plan_office_registered", format!(r#"{{"office":"{office}","office_kind":"home_care_support_office","level_group":"care","filed_on":"2026-05-25","billable_from":"2026-06-01"}}"#)),
            ("insured.consent_given", format!(r#"{{"office":"{other}","terminal":"terminal-01","given_at":"2026-05-26T01:30:00Z","expires_at":"2027-05-26T01:30:00Z"}}"#)),
            ("insured.record_viewed", format!(r#"{{"office":"{office}","terminal":"terminal-02","basis":"care_plan_office","viewed_at":"2026-05-27T01:30:00Z"}}"#)),
            ("insured.record_viewed", format!(r#"{{"office":"{other}","terminal":"terminal-01","basis":"consent","viewed_at":"2026-05-28T01:30:00Z"}}"#)),
        ]);
        let id = self::person(n);
        store
            .append(
                &StreamName::new("certification", &format!("{id}-1")).unwrap(),
                ExpectedVersion::NoStream,
                certification,
            )
            .await
            .unwrap();
        // One event at a time: the person's events interleave with other
        // persons' in the log.
        for (version, event) in person.into_iter().enumerate() {
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version as u64)
            };
            store
                .append(
                    &StreamName::new("insured", &id).unwrap(),
                    expected,
                    vec![event],
                )
                .await
                .unwrap();
        }
    }

    /// Person `n` is forgotten (本人情報の消去): their stream's 6th event.
    pub async fn forget(store: &Store, n: u64) {
        let event = events(vec![(
            "insured.person_forgotten",
            r#"{"forgotten_at":"2026-06-10T00:00:00Z","key_id":null}"#.to_owned(),
        )]);
        store
            .append(
                &StreamName::new("insured", &person(n)).unwrap(),
                ExpectedVersion::Exact(5),
                event,
            )
            .await
            .unwrap();
    }

    /// Person `n` files a certification with a family applicant (one
    /// event) and is forgotten right after, as the first event of their own
    /// stream: the forgetting reads the application's index entry written
    /// by the event just before it.
    pub async fn filed_then_forgotten(store: &Store, n: u64) {
        let id = person(n);
        let insured = format!("{:010}", 2_000_000 + n);
        let filed = events(vec![(
            "certification.filed",
            format!(
                r#"{{"insurer":"{INSURER}","insured":"{insured}","seq":1,"kind":"new","applicant":{{"by":"family","name":"{}"}},"applied_on":"2026-05-01","current_certification":null}}"#,
                family_name(n)
            ),
        )]);
        store
            .append(
                &StreamName::new("certification", &format!("{id}-1")).unwrap(),
                ExpectedVersion::NoStream,
                filed,
            )
            .await
            .unwrap();
        let forgotten = events(vec![(
            "insured.person_forgotten",
            r#"{"forgotten_at":"2026-06-10T00:00:00Z","key_id":null}"#.to_owned(),
        )]);
        store
            .append(
                &StreamName::new("insured", &id).unwrap(),
                ExpectedVersion::NoStream,
                forgotten,
            )
            .await
            .unwrap();
    }

    /// Persons `persons` appended by 16 concurrent tasks, each forgotten
    /// right after its history when `forgotten(n)`.
    pub async fn append_persons(
        store: &Store,
        persons: std::ops::Range<u64>,
        forgotten: fn(u64) -> bool,
    ) {
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(persons.start));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, next, end) = (store.clone(), next.clone(), persons.end);
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= end {
                        return;
                    }
                    append_person(&store, n).await;
                    if forgotten(n) {
                        forget(&store, n).await;
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    }
}

/// Every projection's documents and index entries.
async fn dump_all(
    projections: &Projections,
) -> Vec<(Vec<(String, String)>, Vec<(String, String, String)>)> {
    let mut dumps = Vec::new();
    for name in projections.names() {
        dumps.push((
            projections.db().dump(name).await.unwrap(),
            projections.db().dump_index(name).await.unwrap(),
        ));
    }
    dumps
}

/// Live batches (a catch-up of hundreds of events in one batch, then
/// batches while appends go on) give exactly the documents and index
/// entries a rebuild of the same store gives — including a person
/// forgotten in the same batch as their application was filed, whose
/// family applicant's name must be gone from the application (the batch
/// has to see its own index entries).
async fn live_batches_give_the_read_models_a_rebuild_gives(db: &TestDb) {
    const PERSONS: u64 = 120;
    let forgotten = |n: u64| n.is_multiple_of(3);
    let store = db.open().await;
    // Half before the runner starts (it catches up in large batches)...
    synthetic::append_persons(&store, 0..PERSONS / 2, forgotten).await;
    let projections = start(db, &store).await;
    // ...half while it follows.
    synthetic::append_persons(&store, PERSONS / 2..PERSONS, forgotten).await;
    let head = store.head().await.unwrap().position;
    assert_eq!(head, PERSONS * 10 + PERSONS.div_ceil(3));
    caught_up(&projections, head).await;
    let live = dump_all(&projections).await;

    // What the live path built, checked on its own.
    let names = projections.names();
    let care = &live[names.iter().position(|n| *n == "care").unwrap()].0;
    let persons = care
        .iter()
        .filter(|(key, _)| key.starts_with("person:"))
        .count();
    let applications: Vec<&(String, String)> = care
        .iter()
        .filter(|(key, _)| key.starts_with("application:"))
        .collect();
    assert_eq!(persons as u64, PERSONS);
    assert_eq!(applications.len() as u64, PERSONS);
    for n in 0..PERSONS {
        let (_, json) = applications
            .iter()
            .find(|(key, _)| *key == format!("application:{}-1", synthetic::person(n)))
            .expect("each person's application");
        let named = json.contains(&synthetic::family_name(n));
        assert_eq!(
            named,
            n.is_multiple_of(2) && !forgotten(n),
            "person {n}: {json}"
        );
        let application: kiban_projections::ApplicationDoc = serde_json::from_str(json).unwrap();
        let positions: Vec<u64> = application.events.iter().map(|e| e.position).collect();
        assert_eq!(positions.len(), 5, "each event applied once: {positions:?}");
        assert!(positions.windows(2).all(|p| p[0] < p[1]));
    }
    let views = &live[names.iter().position(|n| *n == "access_log").unwrap()].0;
    assert_eq!(
        views.len() as u64,
        PERSONS * 2,
        "every read of a record logged once"
    );
    let read = ReadModels::new(projections.db().clone());
    let office = kiban_events::ids::OfficeNumber::parse(&synthetic::office(3)).unwrap();
    let caseload = read.caseload(&office, "", 100, day(40)).await.unwrap();
    let expected = (0..PERSONS).filter(|n| n % 7 == 3).count();
    assert_eq!(caseload.items.len(), expected);
    let lag = projections.lag().await.unwrap();
    assert!(
        lag.iter().all(|l| l.events() == 0 && l.checkpoint == head),
        "{lag:?}"
    );

    // A rebuild of the same store gives the same rows.
    let position = bounded("rebuild all", projections.rebuild_all())
        .await
        .unwrap();
    assert_eq!(position, head);
    let rebuilt = dump_all(&projections).await;
    for ((name, live), rebuilt) in names.iter().zip(&live).zip(&rebuilt) {
        assert_eq!(live.0, rebuilt.0, "{name}: documents");
        assert_eq!(live.1, rebuilt.1, "{name}: index entries");
    }

    // The operator's rebuild (`kiban admin rebuild-read-models`), beside
    // this running runner as beside a running kiban: its own store and
    // read-model connections, no runner. The same rows are swapped in, and
    // the runner goes on from them.
    let said = bounded(
        "kiban admin rebuild-read-models",
        kiban_system::admin::rebuild_read_models(db.url()),
    )
    .await
    .unwrap();
    assert!(said.contains(&format!("through position {head}")), "{said}");
    let rebuilt_apart = dump_all(&projections).await;
    for ((name, live), rebuilt) in names.iter().zip(&live).zip(&rebuilt_apart) {
        assert_eq!(live.0, rebuilt.0, "{name}: documents, rebuilt apart");
        assert_eq!(live.1, rebuilt.1, "{name}: index entries, rebuilt apart");
    }
    synthetic::append_persons(&store, PERSONS..PERSONS + 12, forgotten).await;
    let head = store.head().await.unwrap().position;
    caught_up(&projections, head).await;
    let care = &dump_all(&projections).await[names.iter().position(|n| *n == "care").unwrap()].0;
    let persons = care
        .iter()
        .filter(|(key, _)| key.starts_with("person:"))
        .count();
    assert_eq!(
        persons as u64,
        PERSONS + 12,
        "the runner went on after the swap"
    );
    projections.stop().await;
    store.close().await;
}

/// The batched writer folds a batch while the one before it commits, and
/// the batch reads what that one wrote from memory, not from the database
/// (docs/projections.md, "Runner"). Rebuilds in batches of 1, 7 and 64
/// events put a batch boundary between every pair of a person's events: a
/// document changed in consecutive batches, an application opened in one
/// batch and closed in the next, and a person forgotten in the batch right
/// after the one that filed their application
/// ([`synthetic::filed_then_forgotten`]: the forgetting reads that
/// application's document and index entry while their batch may still be
/// committing). Each gives the
/// documents and index entries the live runner gave.
async fn a_rebuild_in_small_batches_gives_what_the_live_runner_gives(db: &TestDb) {
    const PERSONS: u64 = 24;
    let forgotten = |n: u64| n.is_multiple_of(3);
    let store = db.open().await;
    synthetic::append_persons(&store, 0..PERSONS, forgotten).await;
    synthetic::filed_then_forgotten(&store, PERSONS).await;
    let projections = start(db, &store).await;
    let head = store.head().await.unwrap().position;
    caught_up(&projections, head).await;
    let live = dump_all(&projections).await;
    let names = projections.names();
    let care = &live[names.iter().position(|n| *n == "care").unwrap()].0;
    let (_, last) = care
        .iter()
        .find(|(key, _)| *key == format!("application:{}-1", synthetic::person(PERSONS)))
        .expect("the last person's application");
    assert!(!last.contains(&synthetic::family_name(PERSONS)), "{last}");
    let named = care
        .iter()
        .filter(|(key, json)| {
            key.starts_with("application:") && json.contains("sealed-family-name")
        })
        .count() as u64;
    // Even persons have a family applicant; those also divisible by 3 were
    // forgotten and their applicant's name removed.
    assert_eq!(
        named,
        (0..PERSONS).filter(|n| n % 2 == 0 && n % 3 != 0).count() as u64
    );
    for events in [1, 7, 64] {
        let position = bounded("rebuild all", projections.rebuild_all_in_batches_of(events))
            .await
            .unwrap();
        assert_eq!(position, head);
        let rebuilt = dump_all(&projections).await;
        for ((name, live), rebuilt) in names.iter().zip(&live).zip(&rebuilt) {
            assert_eq!(live.0, rebuilt.0, "{name}: documents, batches of {events}");
            assert_eq!(
                live.1, rebuilt.1,
                "{name}: index entries, batches of {events}"
            );
        }
    }
    projections.stop().await;
    store.close().await;
}

/// One runner follows every projection from the lowest checkpoint; a
/// projection ahead of the others skips what it has applied already.
async fn projections_at_different_checkpoints_apply_each_event_once(db: &TestDb) {
    let store = db.open().await;
    synthetic::append_persons(&store, 0..20, |_| false).await;
    let first = start(db, &store).await;
    let head = store.head().await.unwrap().position;
    caught_up(&first, head).await;
    first.stop().await;
    // More events while only the care projection runs: it gets ahead.
    synthetic::append_persons(&store, 20..40, |n| n.is_multiple_of(2)).await;
    let care_only = Projections::start(
        Db::open(db.url()).await.unwrap(),
        store.clone(),
        vec![Arc::new(models::care::CareProjection)],
    )
    .await
    .unwrap();
    let ahead = store.head().await.unwrap().position;
    caught_up(&care_only, ahead).await;
    care_only.stop().await;
    // Then all of them, with more to come.
    let all = start(db, &store).await;
    synthetic::append_persons(&store, 40..50, |_| false).await;
    let head = store.head().await.unwrap().position;
    caught_up(&all, head).await;
    let read = ReadModels::new(all.db().clone());
    for n in [0, 25, 26, 45] {
        let person = read.person(&synthetic::person(n)).await.unwrap().unwrap();
        let mut positions: Vec<u64> = person.events.iter().map(|e| e.position).collect();
        let count = positions.len();
        positions.dedup();
        assert_eq!(positions.len(), count, "person {n}: each event once");
        // 3 events of their own (reads belong to the access log), plus the
        // forgetting of even persons among 20..40.
        let expected = 3 + usize::from((20..40).contains(&n) && n.is_multiple_of(2));
        assert_eq!(count, expected, "person {n}");
    }
    // Every read logged once (the access log was behind the care
    // projection): one document per read, each under its own position.
    let views = all.db().dump("access_log").await.unwrap();
    assert_eq!(views.len(), 100);
    let applications = all
        .db()
        .dump("care")
        .await
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key.starts_with("application:"))
        .count();
    assert_eq!(applications, 50);
    all.stop().await;
    store.close().await;
}
