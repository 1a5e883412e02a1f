//! The timers over real stores (DESIGN.md decision 9), on PostgreSQL and
//! SQLite: what falls due is recorded once, whatever restarts, and nothing
//! is recorded for what closed in time. Time is a value: every tick is given
//! its `now`; nothing sleeps.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use kiban_engine::timers::{
    CancellationToken, Due, FireOutcome, TIMER_ACTOR_COMPONENT, Timer, start_of_jst_day,
};
use kiban_engine::{CommandContext, Engine, Executed, Timers, timer_command_id};
use kiban_events::domain::certification::{
    Applicant, ApplicationKind, CertificationApplication, CertificationCommand, CertificationEvent,
    ValidityPeriod, certification_stream,
};
use kiban_events::domain::insured::{InsuredCommand, InsuredEvent, InsuredPerson, insured_stream};
use kiban_events::domain::subsidy::{
    ApplicantRecord, DesignationNotice, ReceiptLine, ReceiptPurpose, SubsidyApplicant,
    SubsidyApplication, SubsidyCommand, SubsidyEvent, SubsidyPolicy, subsidy_stream_for_office,
};
use kiban_events::domain::{
    CareLevel, DocumentRef, DomainEvent, RejectionCode, ServiceTypeCode, Sha256Digest, TerminalId,
    Yen,
};
use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};
use kiban_events::{Actor, EventId, RecordedEvent, StreamName};
use kiban_store::Store;
use kiban_tests::{TestDb, bounded};
use uuid::Uuid;

kiban_tests::on_both_backends!(
    an_undecided_application_reaches_its_deadline_once_across_restarts,
    a_second_ticker_records_nothing_more,
    a_decided_application_gets_no_deadline_event,
    an_extension_notice_moves_the_deadline,
    a_consent_expires_at_its_time_and_a_revoked_one_never,
    a_renewal_window_opens_60_days_before_the_validity_ends,
    an_undecided_subsidy_is_recorded_notice_and_payment_overdue,
    a_decided_subsidy_is_never_notice_overdue_but_may_be_payment_overdue,
    run_follows_the_store_live_and_stops_when_cancelled,
);

fn insurer() -> InsurerNumber {
    InsurerNumber::parse("131016").unwrap()
}

fn insured() -> InsuredNumber {
    InsuredNumber::parse("0000012345").unwrap()
}

fn office() -> OfficeNumber {
    OfficeNumber::parse("1312345678").unwrap()
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

/// Ten in the morning, Japan time.
fn morning(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 1, 0, 0).unwrap()
}

fn document(byte: u8) -> DocumentRef {
    let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
    DocumentRef::new(Sha256Digest::parse(&hex).unwrap(), "application/pdf", 1024).unwrap()
}

fn context(actor: Actor, now: DateTime<Utc>) -> CommandContext {
    CommandContext::new(EventId::from_uuid(Uuid::now_v7()).unwrap(), actor, now)
}

fn insurer_actor() -> Actor {
    Actor::Insurer(insurer())
}

fn office_actor() -> Actor {
    Actor::parse("office:1312345678/T-01").unwrap()
}

fn application(seq: u32) -> StreamName {
    certification_stream(&insurer(), &insured(), seq)
}

/// Files a new application `seq` on `applied_on`, by the insurer.
async fn file(engine: &Engine<Store>, seq: u32, applied_on: NaiveDate) {
    let command = CertificationCommand::FileApplication {
        insurer: insurer(),
        insured: insured(),
        seq,
        kind: ApplicationKind::New,
        applicant: Applicant::Person,
        applied_on,
        current_certification: None,
        insured_name: None,
    };
    let now = start_of_jst_day(applied_on) + Duration::hours(10);
    certification(engine, seq, command, now).await;
}

async fn certification(
    engine: &Engine<Store>,
    seq: u32,
    command: CertificationCommand,
    now: DateTime<Utc>,
) -> Executed {
    engine
        .execute::<CertificationApplication>(
            &application(seq),
            &command,
            &context(insurer_actor(), now),
        )
        .await
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// The events of `stream` with type `event_type`.
async fn events_of(store: &Store, stream: &StreamName, event_type: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, 1, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.event_type.as_str() == event_type)
        .collect()
}

fn decoded<E: DomainEvent>(event: &RecordedEvent) -> E {
    E::from_recorded(
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    )
    .unwrap()
}

async fn timers(engine: &Arc<Engine<Store>>) -> Timers<Store> {
    let mut timers = Timers::new(Arc::clone(engine));
    timers.catch_up().await.unwrap();
    timers
}

async fn an_undecided_application_reaches_its_deadline_once_across_restarts(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    file(&engine, 1, date(2026, 5, 1)).await;
    let mut ticker = timers(&engine).await;
    // Due 30 days after 2026-05-01: overdue from the start of 2026-06-01 JST.
    let fires_at = Utc.with_ymd_and_hms(2026, 5, 31, 15, 0, 0).unwrap();
    let entries = ticker.due_list().entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].timer, Timer::CertificationDeadline);
    assert_eq!(entries[0].due, Due::Date(date(2026, 5, 31)));
    assert_eq!(entries[0].fires_at, fires_at);

    let early = ticker.tick(fires_at - Duration::seconds(1)).await.unwrap();
    assert!(early.fired.is_empty(), "{early:?}");
    let report = ticker.tick(fires_at).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    let event = recorded[0];
    assert_eq!(event.event_type.as_str(), "certification.deadline_reached");
    assert_eq!(
        event.event_id,
        timer_command_id(
            &application(1),
            &Timer::CertificationDeadline,
            &Due::Date(date(2026, 5, 31))
        )
    );
    assert_eq!(
        event.actor,
        Actor::system(TIMER_ACTOR_COMPONENT).unwrap(),
        "recorded as system:timers"
    );
    assert_eq!(event.occurred_at, fires_at);
    match decoded::<CertificationEvent>(event) {
        CertificationEvent::DeadlineReached(reached) => {
            assert_eq!(reached.due_date, date(2026, 5, 31));
            assert_eq!(reached.reached_on, date(2026, 6, 1));
        }
        other => panic!("{other:?}"),
    }
    let head = store.head().await.unwrap().position;

    // Ticking again, later, records nothing: the entry left the list.
    let again = ticker.tick(fires_at + Duration::days(3)).await.unwrap();
    assert!(again.fired.is_empty(), "{again:?}");
    ticker.catch_up().await.unwrap();
    assert!(ticker.due_list().is_empty());

    // A restart: a new store handle, engine and due list from position 1.
    store.close().await;
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let mut restarted = timers(&engine).await;
    assert!(
        restarted.due_list().is_empty(),
        "the record closed the item"
    );
    let after = restarted.tick(fires_at + Duration::days(10)).await.unwrap();
    assert!(after.fired.is_empty(), "{after:?}");
    assert_eq!(store.head().await.unwrap().position, head);
    let reached = events_of(&store, &application(1), "certification.deadline_reached").await;
    assert_eq!(reached.len(), 1);
    store.close().await;
}

async fn a_second_ticker_records_nothing_more(db: &TestDb) {
    let store = db.open().await;
    let first_engine = Arc::new(Engine::new(store.clone()));
    // The second engine files the application, so its cache holds the state
    // from before the deadline was recorded: it decides on a stale state.
    let second_engine = Arc::new(Engine::new(store.clone()));
    file(&second_engine, 1, date(2026, 5, 1)).await;
    let mut first = timers(&first_engine).await;
    let mut second = timers(&second_engine).await;
    let fires_at = start_of_jst_day(date(2026, 6, 1));

    let report = first.tick(fires_at).await.unwrap();
    assert_eq!(report.recorded().len(), 1, "{report:?}");
    let head = store.head().await.unwrap().position;
    // The second ticker has not seen the record and fires the same timer a
    // day later (so with another `reached_on`): the deterministic id makes
    // the engine answer with what was recorded, and nothing new is stored.
    let report = second.tick(fires_at + Duration::days(1)).await.unwrap();
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert_eq!(report.fired[0].outcome, FireOutcome::AlreadyRecorded);
    assert_eq!(store.head().await.unwrap().position, head);
    let reached = events_of(&store, &application(1), "certification.deadline_reached").await;
    assert_eq!(reached.len(), 1);
    store.close().await;
}

async fn a_decided_application_gets_no_deadline_event(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    file(&engine, 1, date(2026, 5, 1)).await;
    // This ticker saw only the filing.
    let mut stale = timers(&engine).await;
    let steps = [
        CertificationCommand::CompleteInvestigation {
            investigation_sheet: document(1),
        },
        CertificationCommand::ReceiveOpinion {
            institution: MedicalInstitutionCode::parse("1310000001").unwrap(),
            opinion: document(2),
        },
        CertificationCommand::RecordPrimaryJudgment {
            level: CareLevel::Care2,
        },
        CertificationCommand::RecordSecondaryJudgment {
            level: CareLevel::Care2,
        },
        CertificationCommand::Decide {
            level: CareLevel::Care2,
            validity: None,
        },
    ];
    for (day, step) in (10..).zip(steps) {
        certification(&engine, 1, step, morning(2026, 5, day)).await;
    }
    let late = start_of_jst_day(date(2026, 6, 10));
    // The stale list still has the deadline: the decider refuses it, and
    // the entry is dropped.
    let report = stale.tick(late).await.unwrap();
    assert_eq!(report.fired.len(), 1, "{report:?}");
    assert_eq!(
        report.fired[0].outcome,
        FireOutcome::Dropped(RejectionCode::ApplicationClosed)
    );
    // A list that saw the decision has no deadline at all.
    let mut fresh = timers(&engine).await;
    assert!(
        !fresh
            .due_list()
            .entries()
            .iter()
            .any(|entry| entry.timer == Timer::CertificationDeadline),
        "{:?}",
        fresh.due_list().entries()
    );
    let report = fresh.tick(late).await.unwrap();
    assert!(report.recorded().is_empty(), "{report:?}");
    let reached = events_of(&store, &application(1), "certification.deadline_reached").await;
    assert!(reached.is_empty(), "{reached:?}");
    store.close().await;
}

async fn an_extension_notice_moves_the_deadline(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    file(&engine, 1, date(2026, 5, 1)).await;
    let mut stale = timers(&engine).await;
    certification(
        &engine,
        1,
        CertificationCommand::NotifyExtension {
            reason: "主治医意見書の到着待ち".to_owned(),
            expected_decision_on: date(2026, 6, 20),
        },
        morning(2026, 5, 25),
    )
    .await;
    // A list that has not seen the extension fires at the old deadline: the
    // decider says it is not reached, the entry is dropped...
    let old = start_of_jst_day(date(2026, 6, 1));
    let report = stale.tick(old).await.unwrap();
    assert_eq!(
        report.fired[0].outcome,
        FireOutcome::Dropped(RejectionCode::DeadlineNotReached)
    );
    // ...and following the store brings the new deadline back.
    stale.catch_up().await.unwrap();
    let entries = stale.due_list().entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].due, Due::Date(date(2026, 6, 20)));
    let new = start_of_jst_day(date(2026, 6, 21));
    assert!(
        stale
            .tick(new - Duration::seconds(1))
            .await
            .unwrap()
            .fired
            .is_empty()
    );
    let report = stale.tick(new).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    match decoded::<CertificationEvent>(recorded[0]) {
        CertificationEvent::DeadlineReached(reached) => {
            assert_eq!(reached.due_date, date(2026, 6, 20))
        }
        other => panic!("{other:?}"),
    }
    store.close().await;
}

async fn a_consent_expires_at_its_time_and_a_revoked_one_never(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let person = insured_stream(&insurer(), &insured());
    let given_at = Utc.with_ymd_and_hms(2026, 5, 1, 3, 4, 5).unwrap();
    let expires_at = given_at + Duration::days(30);
    let other = OfficeNumber::parse("1398765432").unwrap();
    for office in [office(), other.clone()] {
        let command = InsuredCommand::GiveConsent {
            office,
            terminal: TerminalId::parse("T-01").unwrap(),
            expires_at,
        };
        engine
            .execute::<InsuredPerson>(&person, &command, &context(office_actor(), given_at))
            .await
            .unwrap();
    }
    engine
        .execute::<InsuredPerson>(
            &person,
            &InsuredCommand::RevokeConsent {
                office: other.clone(),
            },
            &context(office_actor(), given_at + Duration::days(1)),
        )
        .await
        .unwrap();
    let mut ticker = timers(&engine).await;
    assert_eq!(
        ticker.due_list().entries().len(),
        1,
        "the revoked consent left the list"
    );
    let early = ticker
        .tick(expires_at - Duration::seconds(1))
        .await
        .unwrap();
    assert!(early.fired.is_empty(), "{early:?}");
    let report = ticker.tick(expires_at).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    match decoded::<InsuredEvent>(recorded[0]) {
        InsuredEvent::ConsentExpired(expired) => {
            assert_eq!(expired.office, office());
            assert_eq!(expired.expired_at, expires_at);
        }
        other => panic!("{other:?}"),
    }
    let later = ticker.tick(expires_at + Duration::days(1)).await.unwrap();
    assert!(later.fired.is_empty(), "{later:?}");
    let expired = events_of(&store, &person, "insured.consent_expired").await;
    assert_eq!(expired.len(), 1, "only the live consent expired");
    store.close().await;
}

async fn a_renewal_window_opens_60_days_before_the_validity_ends(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let person = insured_stream(&insurer(), &insured());
    let command = InsuredCommand::RecordCertification {
        application_seq: 1,
        level: CareLevel::Care2,
        validity: ValidityPeriod {
            from: date(2026, 5, 1),
            until: date(2026, 10, 31),
        },
    };
    engine
        .execute::<InsuredPerson>(
            &person,
            &command,
            &context(insurer_actor(), morning(2026, 5, 25)),
        )
        .await
        .unwrap();
    let mut ticker = timers(&engine).await;
    // 60 days before 2026-10-31 is 2026-09-01, from its first instant.
    let opens = start_of_jst_day(date(2026, 9, 1));
    assert_eq!(opens, Utc.with_ymd_and_hms(2026, 8, 31, 15, 0, 0).unwrap());
    let early = ticker.tick(opens - Duration::seconds(1)).await.unwrap();
    assert!(early.fired.is_empty(), "{early:?}");
    let report = ticker.tick(opens).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    match decoded::<InsuredEvent>(recorded[0]) {
        InsuredEvent::RenewalWindowOpened(opened) => {
            assert_eq!(opened.application_seq, 1);
            assert_eq!(opened.opens_on, date(2026, 9, 1));
            assert_eq!(opened.valid_until, date(2026, 10, 31));
        }
        other => panic!("{other:?}"),
    }
    // A fresh list after the record has nothing left to open.
    let mut fresh = timers(&engine).await;
    assert!(fresh.due_list().is_empty());
    assert!(
        fresh
            .tick(opens + Duration::days(5))
            .await
            .unwrap()
            .fired
            .is_empty()
    );
    store.close().await;
}

/// An office applies for the subsidy on 2025-11-20: notice due by
/// 2025-12-31, payment by 2026-01-31.
async fn apply_for_subsidy(engine: &Engine<Store>, stream: &StreamName) {
    let service = ServiceTypeCode::parse("11").unwrap();
    let apply = SubsidyCommand::Apply {
        applicant: SubsidyApplicant::CareOffice {
            office: office(),
            service_types: vec![service.clone()],
            designation_notices: vec![DesignationNotice {
                service_type: service,
                document: document(3),
            }],
        },
        reader_count: 2,
        receipt_lines: vec![
            ReceiptLine {
                purpose: Some(ReceiptPurpose::CardReaders { count: 2 }),
                amount: Yen::new(15_400),
                receipt: document(4),
            },
            ReceiptLine {
                purpose: Some(ReceiptPurpose::ConnectionSupport),
                amount: Yen::new(22_000),
                receipt: document(5),
            },
        ],
        passbook: document(6),
        policy: SubsidyPolicy::FY2025,
        record: ApplicantRecord {
            registered_service_types: vec![ServiceTypeCode::parse("11").unwrap()],
            earlier: Vec::new(),
        },
    };
    engine
        .execute::<SubsidyApplication>(
            stream,
            &apply,
            &context(office_actor(), morning(2025, 11, 20)),
        )
        .await
        .unwrap();
}

async fn an_undecided_subsidy_is_recorded_notice_and_payment_overdue(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let stream = subsidy_stream_for_office(&office(), 1);
    apply_for_subsidy(&engine, &stream).await;
    let mut ticker = timers(&engine).await;
    // Applied 2025-11-20: notice due by 2025-12-31, payment by 2026-01-31.
    let notice = start_of_jst_day(date(2026, 1, 1));
    assert!(
        ticker
            .tick(notice - Duration::seconds(1))
            .await
            .unwrap()
            .fired
            .is_empty()
    );
    let report = ticker.tick(notice).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    match decoded::<SubsidyEvent>(recorded[0]) {
        SubsidyEvent::NoticeOverdue(overdue) => {
            assert_eq!(overdue.notice_due_by, date(2025, 12, 31));
            assert_eq!(overdue.recorded_on, date(2026, 1, 1));
        }
        other => panic!("{other:?}"),
    }
    let payment = start_of_jst_day(date(2026, 2, 1));
    let report = ticker.tick(payment).await.unwrap();
    let recorded = report.recorded();
    assert_eq!(recorded.len(), 1, "{report:?}");
    assert_eq!(recorded[0].event_type.as_str(), "subsidy.payment_overdue");
    // Once each, whatever ticks after.
    let mut fresh = timers(&engine).await;
    assert!(fresh.due_list().is_empty());
    assert!(
        fresh
            .tick(payment + Duration::days(30))
            .await
            .unwrap()
            .fired
            .is_empty()
    );
    assert_eq!(
        events_of(&store, &stream, "subsidy.notice_overdue")
            .await
            .len(),
        1
    );
    store.close().await;
}

async fn a_decided_subsidy_is_never_notice_overdue_but_may_be_payment_overdue(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let stream = subsidy_stream_for_office(&office(), 1);
    apply_for_subsidy(&engine, &stream).await;
    for (command, day) in [
        (SubsidyCommand::StartReview, 1),
        (
            SubsidyCommand::Decide {
                earlier: Vec::new(),
                medical_institution_limit: None,
            },
            10,
        ),
    ] {
        engine
            .execute::<SubsidyApplication>(
                &stream,
                &command,
                &context(Actor::Federation, morning(2025, 12, day)),
            )
            .await
            .unwrap();
    }
    let mut ticker = timers(&engine).await;
    let entries = ticker.due_list().entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].timer, Timer::SubsidyPayment);
    let notice = ticker
        .tick(start_of_jst_day(date(2026, 1, 2)))
        .await
        .unwrap();
    assert!(notice.fired.is_empty(), "{notice:?}");
    let payment = ticker
        .tick(start_of_jst_day(date(2026, 2, 1)))
        .await
        .unwrap();
    let recorded = payment.recorded();
    assert_eq!(recorded.len(), 1, "{payment:?}");
    assert_eq!(recorded[0].event_type.as_str(), "subsidy.payment_overdue");
    assert!(
        events_of(&store, &stream, "subsidy.notice_overdue")
            .await
            .is_empty()
    );
    store.close().await;
}

async fn run_follows_the_store_live_and_stops_when_cancelled(db: &TestDb) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    // One application before the loop starts (caught up) and one after
    // (followed live); the clock says both are past their deadlines.
    file(&engine, 1, date(2026, 5, 1)).await;
    let cancel = CancellationToken::new();
    let clock = || Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    // A short interval so the test does not wait for the production one;
    // nothing below depends on how long anything takes.
    let task = tokio::spawn(Timers::new(Arc::clone(&engine)).run(
        clock,
        std::time::Duration::from_millis(20),
        cancel.clone(),
    ));
    let mut events = store.subscribe(1);
    file(&engine, 2, date(2026, 5, 2)).await;
    let mut reached = Vec::new();
    while reached.len() < 2 {
        let event = bounded("the deadline records", events.next())
            .await
            .expect("the subscription goes on")
            .unwrap();
        if event.event_type.as_str() == "certification.deadline_reached" {
            reached.push(event.stream.clone());
        }
    }
    reached.sort();
    assert_eq!(reached, vec![application(1), application(2)]);
    cancel.cancel();
    bounded("the timers stop", task)
        .await
        .expect("the task did not panic")
        .expect("the loop ends cleanly when cancelled");
    store.close().await;
}
