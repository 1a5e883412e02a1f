//! The engine over real stores: a municipality's messages through
//! `Engine::ingest` into the store, on PostgreSQL and SQLite.

use chrono::{DateTime, TimeZone, Utc};
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_engine::{CommandContext, Engine, EngineError};
use kiban_events::domain::certification::{CertificationApplication, certification_stream};
use kiban_events::domain::insured::{InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_events::{Actor, EventId};
use kiban_store::Store;
use kiban_tests::TestDb;
use serde_json::json;
use uuid::Uuid;

kiban_tests::on_both_backends!(
    a_whole_certification_is_recorded_and_reaches_the_person,
    resending_a_message_is_harmless,
    impossible_transitions_and_bad_messages_are_rejected_with_codes,
    concurrent_commands_on_one_stream_all_land_in_order,
    an_office_may_not_record_a_decision,
    a_filing_carries_the_certification_in_force_not_the_latest,
    a_rejection_on_a_state_another_engine_moved_is_decided_again,
    a_load_sees_what_another_engine_appended,
    the_writers_engine_reads_no_stream_its_writer_knows_unchanged,
);

pub(crate) fn insurer() -> InsurerNumber {
    InsurerNumber::parse("131016").unwrap()
}

pub(crate) fn insured() -> InsuredNumber {
    InsuredNumber::parse("0000012345").unwrap()
}

/// The first day of this suite's stories: 2026-05-01 09:00 JST. The engine
/// is handed its own `now` here, so fixed dates stay valid in any year.
fn story_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap()
}

/// 2026-05-01 09:00 JST plus `days`.
fn day(days: i64) -> DateTime<Utc> {
    story_start() + chrono::Duration::days(days)
}

/// 09:00 JST (midnight UTC) `days_ago` days before now: the first day of a
/// story whose messages meet the platform's own clock (the ingest over a
/// bus), which refuses an `occurred_at` over two years old.
pub(crate) fn recent_start(days_ago: i64) -> DateTime<Utc> {
    let day = (Utc::now() - chrono::Duration::days(days_ago)).date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
}

pub(crate) fn message(kind: &str, days: i64, body: serde_json::Value) -> MunicipalMessage {
    message_at(day(days), kind, body)
}

/// A message about the test person's application 1 that happened `at`.
pub(crate) fn message_at(
    at: DateTime<Utc>,
    kind: &str,
    body: serde_json::Value,
) -> MunicipalMessage {
    MunicipalMessage {
        event_id: Uuid::now_v7(),
        kind: kind.to_owned(),
        insurer: insurer(),
        insured: Some(insured()),
        application: Some(1),
        occurred_at: at,
        body: body.as_object().cloned().unwrap_or_default(),
    }
}

fn document(fill: char) -> serde_json::Value {
    json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 48213})
}

/// The messages of the test person's new application from filing to
/// decision, from 2026-05-01.
pub(crate) fn whole_certification() -> Vec<MunicipalMessage> {
    whole_certification_from(story_start(), &insured())
}

/// The messages of `insured`'s new application 1 from filing (on the day
/// of `start`) to decision (21 days later).
pub(crate) fn whole_certification_from(
    start: DateTime<Utc>,
    insured: &InsuredNumber,
) -> Vec<MunicipalMessage> {
    let date = |days: i64| {
        (start + chrono::Duration::days(days) + chrono::Duration::hours(9))
            .date_naive()
            .to_string()
    };
    [
        (
            "certification.filed",
            0,
            json!({"kind": "new", "applicant": {"by": "office", "office": "1312345678"}, "applied_on": date(0)}),
        ),
        (
            "certification.investigation_scheduled",
            2,
            json!({"scheduled_on": date(7)}),
        ),
        (
            "certification.investigation_completed",
            8,
            json!({"investigation_sheet": document('a')}),
        ),
        (
            "certification.opinion_requested",
            3,
            json!({"institution": "1310000001"}),
        ),
        (
            "certification.opinion_received",
            12,
            json!({"institution": "1310000001", "opinion": document('b')}),
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
    ]
    .into_iter()
    .map(|(kind, days, body)| MunicipalMessage {
        insured: Some(insured.clone()),
        ..message_at(start + chrono::Duration::days(days), kind, body)
    })
    .collect()
}

/// An engine over `store` whose insurer the federation has onboarded (at
/// position 1): facts of an insurer that is not are refused.
async fn onboarded(store: &Store) -> Engine<Store> {
    let engine = Engine::new(store.clone());
    crate::projections::script::onboard_insurer(&engine, insurer().as_str(), false).await;
    engine
}

async fn ingest_ok(engine: &Engine<Store>, message: MunicipalMessage) -> Vec<u64> {
    let kind = message.kind.clone();
    match engine
        .ingest(message, &insurer(), day(60))
        .await
        .expect("no store failure")
    {
        IngestOutcome::Accepted { positions, .. } => positions,
        IngestOutcome::Rejected(rejection) => panic!("{kind} rejected: {rejection:?}"),
    }
}

async fn ingest_rejected(engine: &Engine<Store>, message: MunicipalMessage) -> String {
    match engine
        .ingest(message, &insurer(), day(60))
        .await
        .expect("no store failure")
    {
        IngestOutcome::Rejected(rejection) => rejection.code,
        IngestOutcome::Accepted { positions, .. } => panic!("accepted at {positions:?}"),
    }
}

async fn a_whole_certification_is_recorded_and_reaches_the_person(db: &TestDb) {
    let store = db.open().await;
    let engine = onboarded(&store).await;
    let mut positions = Vec::new();
    for message in whole_certification() {
        positions.extend(ingest_ok(&engine, message).await);
    }
    // Eight facts on the application, and the decision on the person
    // (after the onboarding at 1).
    assert_eq!(positions, (2..=10).collect::<Vec<u64>>());
    let application = certification_stream(&insurer(), &insured(), 1);
    let (state, version) = engine
        .load::<CertificationApplication>(&application)
        .await
        .unwrap();
    assert_eq!(version, 8);
    let events = store.read_stream(&application, 1, 100).await.unwrap();
    assert_eq!(
        events.last().unwrap().event_type.as_str(),
        "certification.decided"
    );
    assert!(format!("{state:?}").contains("Care2"), "{state:?}");
    // The person now has the certification: new application, valid from the
    // application date (the 1st, so nothing is added) for 6 months.
    let person = insured_stream(&insurer(), &insured());
    let (person_state, person_version) = engine.load::<InsuredPerson>(&person).await.unwrap();
    assert_eq!(person_version, 1);
    let current = person_state
        .certifications
        .last()
        .expect("recorded on the person");
    assert_eq!(current.validity.from.to_string(), "2026-05-01");
    assert_eq!(current.validity.until.to_string(), "2026-10-31");
    // A fresh engine (no cache) folds the same states from the store.
    let fresh = Engine::new(store.clone());
    let (fresh_person, _) = fresh.load::<InsuredPerson>(&person).await.unwrap();
    assert_eq!(fresh_person, person_state);
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        kiban_store::VerifyReport::Verified { events: 10, .. }
    ));
    store.close().await;
}

async fn resending_a_message_is_harmless(db: &TestDb) {
    let store = db.open().await;
    let engine = onboarded(&store).await;
    let messages = whole_certification();
    let mut first = Vec::new();
    for message in messages.clone() {
        first.push(ingest_ok(&engine, message).await);
    }
    // Every message again, in order (a producer re-sending all it has no
    // receipt for): the same positions, nothing new stored.
    for (message, positions) in messages.into_iter().zip(&first) {
        let again = engine.ingest(message, &insurer(), day(60)).await.unwrap();
        match again {
            IngestOutcome::Accepted {
                positions: again,
                replayed,
            } => {
                assert!(replayed);
                assert_eq!(&again, positions);
            }
            IngestOutcome::Rejected(rejection) => panic!("resend rejected: {rejection:?}"),
        }
    }
    assert_eq!(store.head().await.unwrap().position, 10);
    store.close().await;
}

async fn impossible_transitions_and_bad_messages_are_rejected_with_codes(db: &TestDb) {
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    // Issue 17: a fact from an insurer the federation has not onboarded is
    // refused, not stored out of offices' sight.
    let filed = json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-05-01"});
    assert_eq!(
        ingest_rejected(&engine, message("certification.filed", 0, filed)).await,
        "insurer_not_onboarded"
    );
    assert_eq!(store.head().await.unwrap().position, 0);
    let engine = onboarded(&store).await;
    // A decision before any application.
    let decided = message(
        "certification.decided",
        21,
        json!({"level": "care_2", "validity": null}),
    );
    assert_eq!(
        ingest_rejected(&engine, decided).await,
        "application_not_filed"
    );
    // An unknown kind, a missing envelope field, a malformed body.
    assert_eq!(
        ingest_rejected(&engine, message("certification.teleported", 0, json!({}))).await,
        "unknown_kind"
    );
    let mut no_person = message("insured.moved_house", 0, json!({"moved_on": "2026-05-01"}));
    no_person.insured = None;
    assert_eq!(ingest_rejected(&engine, no_person).await, "missing_field");
    let bad_level = message(
        "certification.filed",
        0,
        json!({"kind": "sideways", "applicant": {"by": "person"}, "applied_on": "2026-05-01"}),
    );
    assert_eq!(ingest_rejected(&engine, bad_level).await, "invalid_body");
    // Another insurer's message on this insurer's connection.
    let other = message(
        "certification.filed",
        0,
        json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-05-01"}),
    );
    let rejected = engine
        .ingest(other, &InsurerNumber::parse("271004").unwrap(), day(60))
        .await
        .unwrap();
    assert!(matches!(rejected, IngestOutcome::Rejected(r) if r.code == "insurer_mismatch"));
    // A fact from the future.
    let future = message(
        "certification.filed",
        0,
        json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-05-01"}),
    );
    let rejected = engine.ingest(future, &insurer(), day(-1)).await.unwrap();
    assert!(matches!(rejected, IngestOutcome::Rejected(r) if r.code == "occurred_in_future"));
    // Nothing of it was stored (the onboarding is at 1).
    assert_eq!(store.head().await.unwrap().position, 1);
    store.close().await;
}

async fn concurrent_commands_on_one_stream_all_land_in_order(db: &TestDb) {
    let store = db.open().await;
    let engine = std::sync::Arc::new(Engine::new(store.clone()));
    let stream = insurer_stream(&insurer());
    let context = |n: u128| {
        CommandContext::new(
            EventId::from_uuid(Uuid::from_u128(0x1000 + n)).unwrap(),
            Actor::Federation,
            day(0),
        )
    };
    engine
        .execute::<Insurer>(
            &stream,
            &InsurerCommand::Onboard { insurer: insurer() },
            &context(0),
        )
        .await
        .unwrap();
    // Two different commands race on one stream from two engines sharing
    // nothing but the store: both land, in some order, one after the other.
    let second_engine = Engine::with_cache_capacity(store.clone(), 16);
    let standardise = InsurerCommand::CompleteStandardisation {
        completed_on: chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
    };
    let same_command = context(1);
    let (a, b) = tokio::join!(
        engine.execute::<Insurer>(&stream, &standardise, &same_command),
        second_engine.execute::<Insurer>(&stream, &standardise, &same_command),
    );
    // The same command (same id) from both: recorded once, and both callers
    // get the same positions.
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.positions(), b.positions());
    let events = store.read_stream(&stream, 1, 100).await.unwrap();
    assert_eq!(events.len(), 2);
    store.close().await;
}

async fn an_office_may_not_record_a_decision(db: &TestDb) {
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    let stream = insurer_stream(&insurer());
    let office = Actor::parse("office:1312345678/T-01").unwrap();
    let context = CommandContext::new(EventId::from_uuid(Uuid::now_v7()).unwrap(), office, day(0));
    let result = engine
        .execute::<Insurer>(
            &stream,
            &InsurerCommand::Onboard { insurer: insurer() },
            &context,
        )
        .await;
    assert!(
        matches!(result, Err(EngineError::NotPermitted { .. })),
        "{result:?}"
    );
    assert_eq!(store.head().await.unwrap().position, 0);
    store.close().await;
}

/// Issue 21, defect 7: the ingest looked the current certification up as
/// the latest recorded one, the API as the one in force on the application
/// date. Given a certification to 2026-10-31 and its renewal already
/// decided from 2026-11-01, a change application on 2026-05-01 through the
/// ingest carries the one in force (to 2026-10-31), as the API's would.
async fn a_filing_carries_the_certification_in_force_not_the_latest(db: &TestDb) {
    use kiban_events::domain::CareLevel;
    let store = db.open().await;
    let engine = onboarded(&store).await;
    record_certification(
        &engine,
        1,
        CareLevel::Care1,
        date(2025, 11, 1),
        date(2026, 10, 31),
    )
    .await;
    record_certification(
        &engine,
        2,
        CareLevel::Care2,
        date(2026, 11, 1),
        date(2027, 10, 31),
    )
    .await;
    let current = file_change(&engine, &engine, 3)
        .await
        .expect("a change application carries the current certification");
    assert_eq!(
        (current.level, current.valid_until),
        (CareLevel::Care1, date(2026, 10, 31))
    );
    store.close().await;
}

fn date(year: i32, month: u32, day_of_month: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(year, month, day_of_month).unwrap()
}

/// Records, as the insurer, the person's certification `seq` at `level`
/// from `from` to `until`.
async fn record_certification(
    engine: &Engine<Store>,
    seq: u32,
    level: kiban_events::domain::CareLevel,
    from: chrono::NaiveDate,
    until: chrono::NaiveDate,
) {
    use kiban_events::domain::certification::ValidityPeriod;
    use kiban_events::domain::insured::InsuredCommand;
    let command = InsuredCommand::RecordCertification {
        application_seq: seq,
        level,
        validity: ValidityPeriod { from, until },
    };
    let context = CommandContext::new(
        EventId::from_uuid(Uuid::now_v7()).unwrap(),
        Actor::Insurer(insurer()),
        day(0),
    );
    let person = insured_stream(&insurer(), &insured());
    engine
        .execute::<InsuredPerson>(&person, &command, &context)
        .await
        .unwrap();
}

/// Ingests through `ingesting` the filing of change application
/// `application` (applied on 2026-05-01), and answers the certification it
/// carries as `reading` loads it.
async fn file_change(
    ingesting: &Engine<Store>,
    reading: &Engine<Store>,
    application: u32,
) -> Option<kiban_events::domain::certification::CurrentCertification> {
    let mut filed = message(
        "certification.filed",
        0,
        json!({"kind": "change", "applicant": {"by": "person"}, "applied_on": "2026-05-01"}),
    );
    filed.application = Some(application);
    ingest_ok(ingesting, filed).await;
    let stream = certification_stream(&insurer(), &insured(), application);
    let (state, _) = reading
        .load::<CertificationApplication>(&stream)
        .await
        .unwrap();
    state
        .application
        .and_then(|filed| filed.current_certification)
}

/// Two engines over one store are two processes of a deployment (an API
/// process and the writer, or two API processes; docs/deploy.md), each with
/// its cache of the states it decided on. A command the first engine
/// rejected on its cached state is decided again once the second has moved
/// the stream: here a terminal the first did not know yet is reported lost.
/// Before the fix the first engine kept rejecting on its stale state (in
/// pair mode an API process refused an office's read with 403 after a
/// consent the writer had recorded:
/// `person_view::pair::a_person_revokes_a_consent_and_the_office_can_no_longer_read`).
async fn a_rejection_on_a_state_another_engine_moved_is_decided_again(db: &TestDb) {
    use kiban_events::domain::office::{Loss, Office, OfficeCommand, office_stream};
    use kiban_events::domain::{ServiceTypeCode, Sha256Digest, TerminalId};
    use kiban_events::ids::OfficeNumber;

    let store = db.open().await;
    let (api, writer) = (Engine::new(store.clone()), Engine::new(store.clone()));
    let office = OfficeNumber::parse("1312345678").unwrap();
    let stream = office_stream(&office);
    let terminal = TerminalId::parse("T-02").unwrap();
    let context = || {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            Actor::Federation,
            day(0),
        )
    };
    let register = OfficeCommand::Register {
        office: office.clone(),
        service_types: vec![ServiceTypeCode::parse("43").unwrap()],
    };
    api.execute::<Office>(&stream, &register, &context())
        .await
        .unwrap();
    let lost = OfficeCommand::ReportTerminalLost {
        terminal: terminal.clone(),
        loss: Loss::Lost,
        reported_by: None,
    };
    let refused = api.execute::<Office>(&stream, &lost, &context()).await;
    assert!(
        matches!(refused, Err(EngineError::Rejected(_))),
        "an unknown terminal cannot be reported lost: {refused:?}"
    );
    let add = OfficeCommand::RegisterTerminal {
        terminal,
        credential: Sha256Digest::parse(&"a".repeat(64)).unwrap(),
    };
    writer
        .execute::<Office>(&stream, &add, &context())
        .await
        .unwrap();
    let reported = api
        .execute::<Office>(&stream, &lost, &context())
        .await
        .unwrap_or_else(|e| panic!("decided on the stale cached state: {e}"));
    let kinds: Vec<&str> = reported
        .events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["office.terminal_reported_lost", "office.terminal_suspended"]
    );
    store.close().await;
}

/// The writer's engine caches a person's state; another process (an API
/// process, whose appends the writer's append service commits straight to
/// the store, past the writer's engine) records a certification on the
/// person; the writer's ingest then files a change application, which must
/// carry that certification. Before the fix `Engine::load` answered the
/// writer's cached state (no certification), and the filing was refused
/// with `current_certification_missing` (docs/deploy.md "Each process's
/// state cache").
async fn a_load_sees_what_another_engine_appended(db: &TestDb) {
    use kiban_events::domain::CareLevel;
    let store = db.open().await;
    let writer = onboarded(&store).await;
    let api = Engine::new(store.clone());
    let person = insured_stream(&insurer(), &insured());
    let (before, version) = writer.load::<InsuredPerson>(&person).await.unwrap();
    assert_eq!((before.certifications.len(), version), (0, 0));
    record_certification(
        &api,
        1,
        CareLevel::Care1,
        date(2025, 11, 1),
        date(2026, 10, 31),
    )
    .await;
    let current = file_change(&writer, &api, 2)
        .await
        .expect("the change application carries the certification the other engine recorded");
    assert_eq!(
        (current.level, current.valid_until),
        (CareLevel::Care1, date(2026, 10, 31))
    );
    let (after, version) = writer.load::<InsuredPerson>(&person).await.unwrap();
    assert_eq!(
        (after.certifications.len(), version),
        (1, 1),
        "the writer's load answered its stale cached state"
    );
    store.close().await;
}

/// The store of [`the_writers_engine_reads_no_stream_its_writer_knows_unchanged`]:
/// the real store, noting which streams are read.
struct NotingReads {
    store: Store,
    reads: std::sync::Mutex<Vec<kiban_events::StreamName>>,
}

impl kiban_store::EventStore for NotingReads {
    fn append(
        &self,
        stream: &kiban_events::StreamName,
        expected: kiban_events::ExpectedVersion,
        events: Vec<kiban_events::NewEvent>,
    ) -> impl Future<Output = kiban_store::Result<kiban_store::AppendResult>> + Send {
        self.store.append(stream, expected, events)
    }

    fn read_stream(
        &self,
        stream: &kiban_events::StreamName,
        from: kiban_events::Version,
        max: usize,
    ) -> impl Future<Output = kiban_store::Result<Vec<kiban_events::RecordedEvent>>> + Send {
        self.reads.lock().unwrap().push(stream.clone());
        self.store.read_stream(stream, from, max)
    }

    fn read_all(
        &self,
        from: kiban_events::Position,
        max: usize,
    ) -> impl Future<Output = kiban_store::Result<Vec<kiban_events::RecordedEvent>>> + Send {
        self.store.read_all(from, max)
    }

    fn head(&self) -> impl Future<Output = kiban_store::Result<kiban_store::Head>> + Send {
        self.store.head()
    }

    fn subscribe(&self, from: kiban_events::Position) -> kiban_store::Subscription {
        self.store.subscribe(from)
    }

    fn verify(
        &self,
        from: kiban_events::Position,
        to: Option<kiban_events::Position>,
    ) -> impl Future<Output = kiban_store::Result<kiban_store::VerifyReport>> + Send {
        self.store.verify(from, to)
    }

    fn writer_version(&self, stream: &kiban_events::StreamName) -> Option<kiban_events::Version> {
        self.store.writer_version(stream)
    }
}

/// Issue 18 (ingest's seams): every ingested message loads its insurer
/// (onboarded? back-fill open?), and `Engine::load` caught a cached state
/// up with one read of the store each time — a store round trip per
/// message to learn that nothing changed. In the process that is the
/// writer nobody else appends, so the writer's own version of the stream
/// says whether the cache is current. Before, the insurer's stream was read
/// once per message (8 times here); now once, to fill the cache. The
/// other engine's append still makes the next load read (the writer's
/// version moved past the cached one), as
/// `a_load_sees_what_another_engine_appended` checks for a person.
async fn the_writers_engine_reads_no_stream_its_writer_knows_unchanged(db: &TestDb) {
    let store = db.open().await;
    let other = onboarded(&store).await;
    let engine = Engine::new(NotingReads {
        store: store.clone(),
        reads: std::sync::Mutex::default(),
    });
    let insurer_events = insurer_stream(&insurer());
    for message in whole_certification() {
        let kind = message.kind.clone();
        let outcome = engine.ingest(message, &insurer(), day(60)).await.unwrap();
        assert!(
            matches!(outcome, IngestOutcome::Accepted { .. }),
            "{kind}: {outcome:?}"
        );
    }
    let insurer_reads = |noting: &NotingReads| {
        noting
            .reads
            .lock()
            .unwrap()
            .iter()
            .filter(|stream| **stream == insurer_events)
            .count()
    };
    assert_eq!(
        insurer_reads(engine.store()),
        1,
        "the insurer's stream is read once, then known current from the writer"
    );
    assert_eq!(
        store.writer_version(&insurer_events),
        Some(engine.load::<Insurer>(&insurer_events).await.unwrap().1)
    );
    // Another engine moves the insurer (a back-fill opens): the next load
    // reads it.
    other
        .execute::<Insurer>(
            &insurer_events,
            &InsurerCommand::StartBackfill {},
            &CommandContext::new(
                EventId::from_uuid(Uuid::now_v7()).unwrap(),
                Actor::Insurer(insurer()),
                day(0),
            ),
        )
        .await
        .unwrap();
    let (state, _) = engine.load::<Insurer>(&insurer_events).await.unwrap();
    assert!(state.backfilling, "the load saw the other engine's append");
    assert_eq!(insurer_reads(engine.store()), 2);
    store.close().await;
}
