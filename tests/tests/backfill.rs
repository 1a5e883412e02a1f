//! Back-filling a municipality's history (issue 17 item 4): a year of cases
//! loaded through `Engine::ingest` between `insurer.backfill_started` and
//! `insurer.backfill_completed`, with the timers ticking at the platform's
//! clock after every message, records no deadline, renewal window or
//! overdue notice that the loaded history contradicts. What is still open
//! when the back-fill completes is judged then, and only that is recorded.
//! On PostgreSQL and SQLite.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_engine::{CommandContext, Engine, Timers};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_events::{Actor, EventId, RecordedEvent};
use kiban_store::Store;
use kiban_tests::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

kiban_tests::on_both_backends!(
    a_year_of_history_back_filled_in_and_out_of_order_records_no_false_timer_event,
    outside_a_back_fill_a_fact_older_than_two_years_is_refused,
);

/// The platform's clock while loading: 2026-12-07 10:00 JST.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 1, 0, 0).unwrap()
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// 10:00 JST on `day` plus `days`.
fn at(day: NaiveDate, days: i64) -> DateTime<Utc> {
    (day + Duration::days(days))
        .and_hms_opt(1, 0, 0)
        .unwrap()
        .and_utc()
}

fn document(fill: char) -> Value {
    json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 1024})
}

fn message(
    insurer: &str,
    person: &str,
    application: Option<u32>,
    kind: &str,
    occurred_at: DateTime<Utc>,
    body: Value,
) -> MunicipalMessage {
    MunicipalMessage {
        event_id: Uuid::now_v7(),
        kind: kind.to_owned(),
        insurer: InsurerNumber::parse(insurer).unwrap(),
        insured: (!person.is_empty()).then(|| InsuredNumber::parse(person).unwrap()),
        application,
        occurred_at,
        body: body.as_object().cloned().unwrap(),
    }
}

/// How one application ends in the loaded history.
enum End {
    /// Decided `days` after the application (care_2, validity by rule).
    Decided(i64),
    /// Withdrawn `days` after the application.
    Withdrawn(i64),
    /// An extension notice on day 24 to `expected`, decided on day `days`.
    ExtendedThenDecided(&'static str, i64),
    /// Still open: only the investigation is done.
    Open,
}

/// The messages of one application, in their real order.
fn application(
    insurer: &str,
    person: &str,
    seq: u32,
    kind: &str,
    applied_on: &str,
    end: End,
) -> Vec<MunicipalMessage> {
    let day = date(applied_on);
    let step = |kind: &str, days: i64, body: Value| {
        message(insurer, person, Some(seq), kind, at(day, days), body)
    };
    let mut steps = vec![
        step(
            "certification.filed",
            0,
            json!({"kind": kind, "applicant": {"by": "person"}, "applied_on": applied_on}),
        ),
        step(
            "certification.investigation_completed",
            5,
            json!({"investigation_sheet": document('a')}),
        ),
    ];
    let decided_on = match end {
        End::Open => return steps,
        End::Withdrawn(days) => {
            steps.push(step(
                "certification.withdrawn",
                days,
                json!({"reason": null}),
            ));
            return steps;
        }
        End::Decided(days) => days,
        End::ExtendedThenDecided(expected, days) => {
            steps.push(step(
                "certification.extension_notified",
                24,
                json!({"reason": "主治医意見書の遅延", "expected_decision_on": expected}),
            ));
            days
        }
    };
    steps.extend([
        step(
            "certification.opinion_received",
            7,
            json!({"institution": "1310000001", "opinion": document('b')}),
        ),
        step(
            "certification.primary_judgment_recorded",
            10,
            json!({"level": "care_2"}),
        ),
        step(
            "certification.secondary_judgment_recorded",
            decided_on - 1,
            json!({"level": "care_2"}),
        ),
        step(
            "certification.decided",
            decided_on,
            json!({"level": "care_2", "validity": null}),
        ),
    ]);
    steps.sort_by_key(|message| message.occurred_at);
    steps
}

/// One insurer's history from 2025-12 to the load, person by person (each
/// person's messages in their real order). The comments say what is true
/// on 2026-12-07.
fn history(insurer: &str) -> Vec<Vec<MunicipalMessage>> {
    let person = |n: u32| format!("00000000{n:02}");
    vec![
        // Certified 2025-12-01..2026-05-31, renewed in its window to
        // 2027-05-31: nothing is due.
        [
            application(
                insurer,
                &person(1),
                1,
                "new",
                "2025-12-01",
                End::Decided(24),
            ),
            application(
                insurer,
                &person(1),
                2,
                "renewal",
                "2026-04-10",
                End::Decided(28),
            ),
        ]
        .concat(),
        // Decided after its deadline (2026-03-04) and certified until
        // 2026-08-31: the deadline passed in history, the certification
        // ended: nothing is due now.
        application(
            insurer,
            &person(2),
            1,
            "new",
            "2026-02-02",
            End::Decided(46),
        ),
        // Open, its deadline (2026-12-01) passed before the load: overdue.
        application(insurer, &person(3), 1, "new", "2026-11-01", End::Open),
        // Open, due on 2026-12-25: not yet.
        application(insurer, &person(4), 1, "new", "2026-11-25", End::Open),
        // Withdrawn within ten days.
        application(
            insurer,
            &person(5),
            1,
            "new",
            "2026-01-10",
            End::Withdrawn(10),
        ),
        // Certified 2026-07-01..2026-12-31: its renewal window opened on
        // 2026-11-01 and is open today.
        application(
            insurer,
            &person(6),
            1,
            "new",
            "2026-07-01",
            End::Decided(24),
        ),
        // Extended to 2026-11-20 and decided on 2026-11-15.
        application(
            insurer,
            &person(7),
            1,
            "new",
            "2026-10-01",
            End::ExtendedThenDecided("2026-11-20", 45),
        ),
        // Filed two years and a month before the load and decided: only a
        // back-fill takes a fact that old.
        application(
            insurer,
            &person(8),
            1,
            "new",
            "2024-11-05",
            End::Decided(25),
        ),
    ]
}

async fn onboard(engine: &Engine<Store>, insurer: &str) {
    let number = InsurerNumber::parse(insurer).unwrap();
    let context = CommandContext::new(
        EventId::from_uuid(Uuid::now_v7()).unwrap(),
        Actor::Federation,
        now() - Duration::days(30),
    );
    engine
        .execute::<Insurer>(
            &insurer_stream(&number),
            &InsurerCommand::Onboard { insurer: number },
            &context,
        )
        .await
        .unwrap();
}

async fn ingest(engine: &Engine<Store>, message: MunicipalMessage, clock: DateTime<Utc>) {
    let what = format!(
        "{} of {:?} at {}",
        message.kind, message.insured, message.occurred_at
    );
    let sender = message.insurer.clone();
    match engine.ingest(message, &sender, clock).await.unwrap() {
        IngestOutcome::Accepted { .. } => {}
        IngestOutcome::Rejected(rejection) => panic!("{what} rejected: {rejection:?}"),
    }
}

/// The insurer's own rollout message (`insurer.backfill_*`).
fn rollout(insurer: &str, kind: &str, occurred_at: DateTime<Utc>) -> MunicipalMessage {
    message(insurer, "", None, kind, occurred_at, json!({}))
}

/// Follows the store and ticks at `clock`; returns what the tick recorded.
async fn tick(timers: &mut Timers<Store>, clock: DateTime<Utc>) -> Vec<RecordedEvent> {
    timers.catch_up().await.unwrap();
    let report = timers.tick(clock).await.unwrap();
    report.recorded().into_iter().cloned().collect()
}

/// Every event the timers recorded, as `(event type, stream, occurred_at)`.
async fn timer_events(store: &Store) -> Vec<(String, String, DateTime<Utc>)> {
    let mut found = Vec::new();
    for event in store
        .read_all(1, kiban_store::READ_EVENTS_MAX)
        .await
        .unwrap()
    {
        if event.actor.to_string() == "system:timers" {
            found.push((
                event.event_type.as_str().to_owned(),
                event.stream.to_string(),
                event.occurred_at,
            ));
        }
    }
    found
}

async fn a_year_of_history_back_filled_in_and_out_of_order_records_no_false_timer_event(
    db: &TestDb,
) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let (a, b) = ("131016", "271004");
    for insurer in [a, b] {
        onboard(&engine, insurer).await;
        ingest(
            &engine,
            rollout(insurer, "insurer.backfill_started", now()),
            now(),
        )
        .await;
    }
    let mut timers = Timers::new(Arc::clone(&engine));

    // Insurer A loads in time order across its persons; insurer B out of
    // time order across them: the persons round-robin, the last one first
    // (each person's own messages stay in their real order). The timers
    // tick at the platform's clock after every message.
    let mut in_order: Vec<MunicipalMessage> = history(a).into_iter().flatten().collect();
    in_order.sort_by_key(|message| message.occurred_at);
    let mut persons: Vec<std::collections::VecDeque<MunicipalMessage>> =
        history(b).into_iter().rev().map(Into::into).collect();
    let mut out_of_order = Vec::new();
    while persons.iter().any(|person| !person.is_empty()) {
        for person in &mut persons {
            out_of_order.extend(person.pop_front());
        }
    }
    let mut loaded = 0;
    for message in in_order.into_iter().chain(out_of_order) {
        ingest(&engine, message, now()).await;
        assert_eq!(
            tick(&mut timers, now()).await,
            vec![],
            "a tick while loading recorded"
        );
        loaded += 1;
    }
    assert!(loaded > 60, "{loaded}");
    assert!(
        timers.due_list().held() > 0,
        "the back-fills hold their timers"
    );

    // A completes: its still-open overdue application and its open renewal
    // window are recorded, at the completion; B's are still held. Then B.
    for (insurer, done) in [
        (a, now() + Duration::hours(1)),
        (b, now() + Duration::hours(2)),
    ] {
        let completed = rollout(insurer, "insurer.backfill_completed", done);
        ingest(&engine, completed, done).await;
        let mut found: Vec<(String, String, DateTime<Utc>)> = tick(&mut timers, done)
            .await
            .iter()
            .map(|e| {
                (
                    e.event_type.as_str().to_owned(),
                    e.stream.to_string(),
                    e.occurred_at,
                )
            })
            .collect();
        found.sort();
        let deadline = "certification.deadline_reached".to_owned();
        let window = "insured.renewal_window_opened".to_owned();
        assert_eq!(
            found,
            vec![
                (
                    deadline,
                    format!("certification/{insurer}-0000000003-1"),
                    done
                ),
                (window, format!("insured/{insurer}-0000000006"), done),
            ]
        );
    }
    assert_eq!(timers.due_list().held(), 0);

    // The application still within its deadline falls due at its own time.
    let after_christmas = Utc.with_ymd_and_hms(2026, 12, 26, 1, 0, 0).unwrap();
    let recorded = tick(&mut timers, after_christmas).await;
    let mut streams: Vec<String> = recorded.iter().map(|e| e.stream.to_string()).collect();
    streams.sort();
    assert_eq!(
        streams,
        [
            format!("certification/{a}-0000000004-1"),
            format!("certification/{b}-0000000004-1")
        ]
    );

    // A fresh due list built from the whole log (a restart) records nothing
    // more, and the store holds exactly these six timer events.
    let mut restarted = Timers::new(Arc::clone(&engine));
    assert_eq!(tick(&mut restarted, after_christmas).await, vec![]);
    let all = timer_events(&store).await;
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.iter().all(|(_, _, occurred_at)| *occurred_at >= now()),
        "nothing recorded out of time order: {all:?}"
    );
}

async fn outside_a_back_fill_a_fact_older_than_two_years_is_refused(db: &TestDb) {
    let store = db.open().await;
    let engine = Engine::new(store.clone());
    let insurer = "131016";
    onboard(&engine, insurer).await;
    let old = || application(insurer, "0000000009", 1, "new", "2024-11-05", End::Open).remove(0);
    let sender = InsurerNumber::parse(insurer).unwrap();
    let refused = |message: MunicipalMessage| {
        let engine = &engine;
        let sender = sender.clone();
        async move {
            match engine.ingest(message, &sender, now()).await.unwrap() {
                IngestOutcome::Rejected(rejection) => rejection.code,
                IngestOutcome::Accepted { positions, .. } => format!("accepted at {positions:?}"),
            }
        }
    };
    // Issue 16 item 15: a live filing of 2024-11-05, two years and a month
    // before the platform's clock.
    assert_eq!(refused(old()).await, "occurred_too_long_ago");
    // A recent message about a date that old is refused by the rules.
    let mut recent = old();
    recent.occurred_at = now();
    assert_eq!(refused(recent).await, "date_too_far_in_past");
    // The back-fill messages themselves are live: their occurred_at is bounded.
    let long_ago = at(date("2024-11-05"), 0);
    let start = rollout(insurer, "insurer.backfill_started", long_ago);
    assert_eq!(refused(start).await, "occurred_too_long_ago");
    // Inside a back-fill the same filing is history and is recorded; after
    // it, refused again.
    let start = rollout(insurer, "insurer.backfill_started", now());
    ingest(&engine, start, now()).await;
    ingest(&engine, old(), now()).await;
    let completed = rollout(insurer, "insurer.backfill_completed", now());
    ingest(&engine, completed, now()).await;
    let mut another = old();
    another.application = Some(2);
    assert_eq!(refused(another).await, "occurred_too_long_ago");
}
