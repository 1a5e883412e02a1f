//! Office routing with the real entitlements (read models): an office
//! receives the updates of the persons it has consent for (or is the
//! care-plan office of), nothing about others, and nothing from an insurer
//! that does not share yet — on PostgreSQL and SQLite, through the
//! in-process bus that `kiban serve` wires.

use std::sync::Arc;

use chrono::Duration;
use futures::TryStreamExt;
use kiban_bus::local::LocalBus;
use kiban_bus::relay::FileCheckpoints;
use kiban_bus::routing::{Entitlements, OfficeSink, run_routing};
use kiban_engine::Engine;
use kiban_events::domain::TerminalId;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::ids::{InsuredNumber, InsurerNumber, OfficeNumber};
use kiban_events::{Actor, RecordedEvent};
use kiban_projections::{Db, Projections, models};
use kiban_store::Store;
use kiban_system::ReadModelEntitlements;
use kiban_tests::{TestDb, bounded};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::projections::script::*;

kiban_tests::on_both_backends!(
    offices_receive_exactly_what_they_are_entitled_to,
    an_office_that_becomes_entitled_receives_the_persons_snapshot_over_nats,
    offices_entitled_before_sharing_receive_the_snapshot_when_it_starts,
    events_before_sharing_go_to_nobody_however_late_they_are_routed,
    the_office_feed_carries_notices_and_no_payload,
    a_batch_is_entitled_as_its_events_one_by_one,
);

/// An office with no relation to anyone until the end.
const STRANGER_OFFICE: &str = "1319999999";
/// A person of the insurer that does not share.
const QUIET_PERSON: &str = "0000055555";
/// A person only the stranger office is given consent for, at the end.
const LAST_PERSON: &str = "0000077777";

async fn consent(engine: &Engine<Store>, insurer: &str, insured: &str, office: &str, days: i64) {
    let stream = insured_stream(
        &InsurerNumber::parse(insurer).unwrap(),
        &InsuredNumber::parse(insured).unwrap(),
    );
    run::<InsuredPerson>(
        engine,
        &stream,
        InsuredCommand::GiveConsent {
            office: OfficeNumber::parse(office).unwrap(),
            terminal: TerminalId::parse(TERMINAL).unwrap(),
            expires_at: day(days) + Duration::days(365),
        },
        Actor::system("consent").unwrap(),
        day(days),
    )
    .await;
}

/// The person files a new application on `days`.
async fn file_by_person(engine: &Engine<Store>, insurer: &str, insured: &str, days: i64) {
    let applied_on = (day(days) + Duration::hours(9)).date_naive().to_string();
    ingest(
        engine,
        insurer,
        insured,
        Some(1),
        "certification.filed",
        days,
        json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": applied_on}),
    )
    .await;
}

/// The municipality issues `insured`'s copayment certificate (負担割合証).
async fn copayment_certificate(engine: &Engine<Store>, insured: &str, days: i64) {
    let body = json!({"ratio": 1, "valid_from": "2026-05-01"});
    let kind = "insured.copayment_certificate_issued";
    ingest(engine, INSURER, insured, None, kind, days, body).await;
}

fn summary(event: &RecordedEvent) -> (String, String) {
    (
        event.stream.as_str().to_owned(),
        event.event_type.as_str().to_owned(),
    )
}

/// A store, engine and projections over a test database, with the office
/// routing running over the real entitlements into a sink.
struct Routed {
    store: Store,
    engine: Arc<Engine<Store>>,
    projections: Projections,
    cancel: CancellationToken,
    routing: tokio::task::JoinHandle<kiban_bus::Result<()>>,
    _checkpoints: tempfile::TempDir,
}

impl Routed {
    async fn start<K: OfficeSink + 'static>(db: &TestDb, sink: K) -> Routed {
        let (store, engine, projections) = started(db).await;
        let cancel = CancellationToken::new();
        let checkpoints_dir = tempfile::tempdir().unwrap();
        let routing = {
            let (store, cancel) = (store.clone(), cancel.clone());
            let entitlements = ReadModelEntitlements::new(projections.clone());
            let checkpoints = FileCheckpoints::new(checkpoints_dir.path());
            tokio::spawn(async move {
                run_routing(&store, &entitlements, &checkpoints, &sink, cancel).await
            })
        };
        Routed {
            store,
            engine,
            projections,
            cancel,
            routing,
            _checkpoints: checkpoints_dir,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        bounded("routing stops", self.routing)
            .await
            .unwrap()
            .unwrap();
        self.projections.stop().await;
        self.store.close().await;
    }
}

/// A store, its engine and the read models running on `db`.
async fn started(db: &TestDb) -> (Store, Arc<Engine<Store>>, Projections) {
    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let projections = Projections::start(
        Db::open(db.url()).await.unwrap(),
        store.clone(),
        models::all(),
    )
    .await
    .unwrap();
    (store, engine, projections)
}

/// The sharing and the quiet insurer, the office and the stranger office.
async fn organisations(engine: &Engine<Store>) {
    onboard_insurer(engine, INSURER, true).await;
    onboard_insurer(engine, QUIET_INSURER, false).await;
    register_office(engine, OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    register_office(engine, STRANGER_OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
}

async fn offices_receive_exactly_what_they_are_entitled_to(db: &TestDb) {
    let bus = LocalBus::new();
    let mut office = bus.subscribe_office(OfficeNumber::parse(OFFICE).unwrap());
    let mut stranger = bus.subscribe_office(OfficeNumber::parse(STRANGER_OFFICE).unwrap());
    let routed = Routed::start(db, bus.sink()).await;
    let engine = Arc::clone(&routed.engine);

    organisations(&engine).await;
    // The office has consent for PERSON (of the sharing insurer) and for
    // QUIET_PERSON (of the insurer that does not share); WAITING_PERSON has
    // no relation to it.
    consent(&engine, INSURER, PERSON, OFFICE, 0).await;
    consent(&engine, QUIET_INSURER, QUIET_PERSON, OFFICE, 0).await;
    file_by_person(&engine, QUIET_INSURER, QUIET_PERSON, 1).await;
    file_by_person(&engine, INSURER, WAITING_PERSON, 1).await;
    whole_certification(&engine, INSURER, PERSON).await;
    copayment_certificate(&engine, PERSON, 22).await;
    // The end marker: the stranger office's first relation.
    consent(&engine, INSURER, LAST_PERSON, STRANGER_OFFICE, 23).await;
    file_by_person(&engine, INSURER, LAST_PERSON, 23).await;

    // The office: the whole certification of PERSON, then the certificate —
    // nothing of QUIET_PERSON (insurer not sharing) or WAITING_PERSON.
    let person_application = format!("certification/{INSURER}-{PERSON}-1");
    let mut expected: Vec<(String, String)> = [
        "certification.filed",
        "certification.investigation_scheduled",
        "certification.investigation_completed",
        "certification.opinion_requested",
        "certification.opinion_received",
        "certification.primary_judgment_recorded",
        "certification.secondary_judgment_recorded",
        "certification.decided",
    ]
    .iter()
    .map(|kind| (person_application.clone(), (*kind).to_owned()))
    .collect();
    let decided_also = format!("insured/{INSURER}-{PERSON}");
    let mut received = Vec::new();
    loop {
        let event = bounded("an office update", office.next()).await.unwrap();
        let last = event.event_type.as_str() == "insured.copayment_certificate_issued";
        received.push(summary(&event));
        if last {
            break;
        }
    }
    // The decision also records the certification on the person's stream.
    received.retain(|(stream, kind)| {
        !(stream == &decided_also && kind == "insured.certification_recorded")
    });
    expected.push((
        decided_also.clone(),
        "insured.copayment_certificate_issued".to_owned(),
    ));
    assert_eq!(received, expected);

    // The stranger office: nothing until its own client's application.
    let first = bounded("the stranger's update", stranger.next())
        .await
        .unwrap();
    assert_eq!(
        summary(&first),
        (
            format!("certification/{INSURER}-{LAST_PERSON}-1"),
            "certification.filed".to_owned()
        )
    );
    routed.stop().await;
}

/// A nats-server, the office's subscriber on its updates subject (with its
/// client), and the routing publishing to the server.
async fn routed_over_nats(
    db: &TestDb,
) -> (
    kiban_bus::testing::NatsServer,
    async_nats::Client,
    async_nats::Subscriber,
    Routed,
) {
    let server = kiban_bus::testing::NatsServer::start().await.unwrap();
    let kiban = async_nats::connect(server.url()).await.unwrap();
    let office_client = async_nats::connect(server.url()).await.unwrap();
    let office = office_client
        .subscribe(format!("kiban.offices.{OFFICE}.updates"))
        .await
        .unwrap();
    office_client.flush().await.unwrap();
    let routed = Routed::start(db, kiban_bus::routing::NatsOfficeSink::new(kiban)).await;
    (server, office_client, office, routed)
}

/// Issue 17 item 5: an office that becomes entitled to a person after their
/// decision (here by consent) receives the person's history on its NATS
/// subject, so it never has to poll; the snapshot names the decision and
/// nothing outside the office's entitlement (no other person, no consents,
/// no reads), and (issue 16 item 10) holds notices only: no payload, actor
/// or hashes, the data is read through the API, logged. Through a real
/// nats-server.
async fn an_office_that_becomes_entitled_receives_the_persons_snapshot_over_nats(db: &TestDb) {
    let (_server, _client, mut office, routed) = routed_over_nats(db).await;
    let (engine, store) = (Arc::clone(&routed.engine), routed.store.clone());

    onboard_insurer(&engine, INSURER, true).await;
    register_office(&engine, OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    register_office(&engine, STRANGER_OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    // PERSON is decided while the office has no relation to them; another
    // office holds a consent; another person is decided too.
    consent(&engine, INSURER, PERSON, STRANGER_OFFICE, 0).await;
    whole_certification(&engine, INSURER, PERSON).await;
    whole_certification(&engine, INSURER, WAITING_PERSON).await;
    // The office becomes entitled: the person's consent.
    consent(&engine, INSURER, PERSON, OFFICE, 23).await;
    let consent_position = store.head().await.unwrap().position;
    copayment_certificate(&engine, PERSON, 24).await;

    // First on the office's subject: the snapshot, as of the consent.
    let snapshot = next_snapshot(&mut office, &store, PERSON, consent_position).await;
    let types: Vec<&str> = snapshot
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert!(types.contains(&"certification.decided"), "{types:?}");
    assert!(
        types.contains(&"insured.certification_recorded"),
        "{types:?}"
    );
    assert!(types.contains(&"certification.filed"), "{types:?}");
    let own = [
        format!("insured/{INSURER}-{PERSON}"),
        format!("certification/{INSURER}-{PERSON}-1"),
    ];
    for event in &snapshot.events {
        assert!(
            own.contains(&event.stream.as_str().to_owned()),
            "{}",
            event.stream
        );
        assert!(
            !event.event_type.as_str().starts_with("insured.consent_"),
            "{types:?}"
        );
        assert!(event.position <= snapshot.position);
    }
    let positions: Vec<u64> = snapshot.events.iter().map(|e| e.position).collect();
    assert!(positions.is_sorted(), "{positions:?}");
    // Then the feed goes on with the person's next event.
    let next = next_notice(&mut office, &store).await;
    assert_eq!(next["event_type"], "insured.copayment_certificate_issued");
    assert!(next["position"].as_u64().unwrap() > snapshot.position);

    routed.stop().await;
}

/// An office given a consent before the person's insurer shares data (the
/// consent platform may record it; the municipality may register a
/// care-plan office) receives nothing until sharing starts, then the
/// person's snapshot as of that moment, as an office newly entitled does,
/// and the feed after it. Through a real nats-server.
async fn offices_entitled_before_sharing_receive_the_snapshot_when_it_starts(db: &TestDb) {
    let (_server, _client, mut office, routed) = routed_over_nats(db).await;
    let (engine, store) = (Arc::clone(&routed.engine), routed.store.clone());

    onboard_insurer(&engine, INSURER, false).await;
    register_office(&engine, OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    register_office(&engine, STRANGER_OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    // Before sharing: the office's consent and the person's certification;
    // another person with another office's consent; a third with none.
    consent(&engine, INSURER, PERSON, OFFICE, 0).await;
    whole_certification(&engine, INSURER, PERSON).await;
    consent(&engine, INSURER, LAST_PERSON, STRANGER_OFFICE, 1).await;
    whole_certification(&engine, INSURER, WAITING_PERSON).await;
    let before_sharing = store.head().await.unwrap().position;
    // Sharing starts (標準化 and データ送信 completed).
    let sharing_position = start_sharing(&engine, INSURER, day(30)).await;
    assert_eq!(
        event_at(&store, sharing_position).await.event_type.as_str(),
        "insurer.sharing_enabled"
    );
    copayment_certificate(&engine, PERSON, 31).await;

    // The first message on the office's subject: the snapshot, as of the
    // start of sharing — nothing was routed to it before.
    let snapshot = next_snapshot(&mut office, &store, PERSON, sharing_position).await;
    let types: Vec<&str> = snapshot
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert!(types.contains(&"certification.filed"), "{types:?}");
    assert!(types.contains(&"certification.decided"), "{types:?}");
    assert!(snapshot.events.iter().all(|e| e.position <= before_sharing));
    // Then the person's next event, and nothing of the other persons.
    let next = next_notice(&mut office, &store).await;
    assert_eq!(next["event_type"], "insured.copayment_certificate_issued");
    assert_eq!(next["stream"], format!("insured/{INSURER}-{PERSON}"));

    routed.stop().await;
}

/// Routing judges an insurer's sharing as of each event, like the rest of
/// the entitlement: events recorded before `insurer.sharing_enabled` go to
/// nobody and make nobody newly entitled even when they are routed after
/// it (a routing that lags), and the offices entitled then are those the
/// sharing event names. Before, sharing was read as it is now: a lagging
/// routing sent the pre-sharing events and a snapshot at the consent, and
/// the scenario above failed when the routing lagged (seen in a full run).
async fn events_before_sharing_go_to_nobody_however_late_they_are_routed(db: &TestDb) {
    let (store, engine, projections) = started(db).await;
    onboard_insurer(&engine, INSURER, false).await;
    register_office(&engine, OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    consent(&engine, INSURER, PERSON, OFFICE, 0).await;
    whole_certification(&engine, INSURER, PERSON).await;
    let before_sharing = store.head().await.unwrap().position;
    start_sharing(&engine, INSURER, day(30)).await;
    copayment_certificate(&engine, PERSON, 31).await;
    // The read models are past the start of sharing: what a routing that
    // lags behind it reads.
    let events = every_event_applied(&store, &projections).await;

    let entitlements = ReadModelEntitlements::new(projections.clone());
    let offices = entitlements.offices_for_each(&events).await.unwrap();
    let office = OfficeNumber::parse(OFFICE).unwrap();
    for (event, offices) in events.iter().zip(&offices) {
        assert_eq!(
            offices.contains(&office),
            event.position > before_sharing && event.stream.kind() == "insured",
            "{:?}",
            summary(event)
        );
        assert_eq!(offices, &entitlements.offices_for(event).await.unwrap());
        let newly = entitlements.newly_entitled(event).await.unwrap();
        assert!(
            newly.is_empty(),
            "{:?} made {newly:?} entitled",
            summary(event)
        );
        let at_sharing = entitlements
            .entitled_when_sharing_starts(event)
            .await
            .unwrap();
        let expected = if event.event_type.as_str() == "insurer.sharing_enabled" {
            vec![(
                kiban_tests::stream("insured", &format!("{INSURER}-{PERSON}")),
                vec![office.clone()],
            )]
        } else {
            Vec::new()
        };
        assert_eq!(at_sharing, expected, "{:?}", summary(event));
    }
    projections.stop().await;
    store.close().await;
}

/// Every event of the store, once the read models have applied them all.
async fn every_event_applied(store: &Store, projections: &Projections) -> Vec<Arc<RecordedEvent>> {
    let head = store.head().await.unwrap().position;
    bounded("the read models", projections.wait_for(head))
        .await
        .unwrap();
    let pages: Vec<Vec<RecordedEvent>> = store.read_range(1, head).try_collect().await.unwrap();
    let events: Vec<Arc<RecordedEvent>> = pages.into_iter().flatten().map(Arc::new).collect();
    assert_eq!(events.len() as u64, head);
    events
}

/// The next message on an office's subject, which must be a complete
/// person snapshot (by its header) of notices only, of the test insurer's
/// `insured` as of `position`.
async fn next_snapshot(
    office: &mut async_nats::Subscriber,
    store: &Store,
    insured: &str,
    position: u64,
) -> kiban_bus::routing::PersonSnapshot {
    use futures::StreamExt;
    use kiban_bus::routing::{MESSAGE_KIND_HEADER, PERSON_SNAPSHOT};
    let message = bounded("the snapshot", office.next()).await.unwrap();
    let kind = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MESSAGE_KIND_HEADER));
    assert_eq!(kind.map(|value| value.as_str()), Some(PERSON_SNAPSHOT));
    let raw: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    for notice in raw["events"].as_array().unwrap() {
        assert_is_notice(notice, store).await;
    }
    let snapshot: kiban_bus::routing::PersonSnapshot =
        serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(snapshot.kind, PERSON_SNAPSHOT);
    assert_eq!(
        (snapshot.insurer.as_str(), snapshot.insured.as_str()),
        (INSURER, insured)
    );
    assert_eq!(snapshot.position, position);
    assert!(snapshot.complete);
    snapshot
}

/// The next message on an office's subject, which must be a single
/// notice (no snapshot header), as JSON.
async fn next_notice(office: &mut async_nats::Subscriber, store: &Store) -> serde_json::Value {
    use futures::StreamExt;
    let message = bounded("the next update", office.next()).await.unwrap();
    let kind = message
        .headers
        .as_ref()
        .and_then(|h| h.get(kiban_bus::routing::MESSAGE_KIND_HEADER));
    assert!(kind.is_none(), "a snapshot where a notice was due");
    let notice: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_is_notice(&notice, store).await;
    notice
}

/// The notice of an event, as the API's update stream sends it (the SSE
/// `data` of `GET /v1/offices/{office}/updates`, docs/api.md): written out
/// here rather than taken from the code, so that the test fails if either
/// feed's form changes.
fn api_notice(event: &RecordedEvent) -> serde_json::Value {
    json!({
        "position": event.position,
        "event_type": event.event_type.as_str(),
        "stream": event.stream.as_str(),
        "occurred_at": event.occurred_at,
        "recorded_at": event.recorded_at,
    })
}

/// `value`, a message (or a snapshot's entry) of an office's feed, is
/// exactly the API notice of the recorded event at its position.
async fn assert_is_notice(value: &serde_json::Value, store: &Store) {
    let position = value["position"].as_u64().expect("a position");
    assert_eq!(value, &api_notice(&event_at(store, position).await));
}

/// The recorded event at `position`.
async fn event_at(store: &Store, position: u64) -> RecordedEvent {
    let mut found = store
        .read_range(position, position)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .concat();
    assert_eq!(found.len(), 1, "one event at {position}");
    found.remove(0)
}

/// Issue 16 item 10: data about a person reaches an office only through a
/// logged read, so the NATS office feed carries notices: an entitled
/// office's message about an application filed by a family member with
/// their (sealed) name and a reason is the API stream's notice of the
/// event, without payload, sealed fields, actor, correlation or hashes.
/// Through a real nats-server.
async fn the_office_feed_carries_notices_and_no_payload(db: &TestDb) {
    use futures::StreamExt;
    use kiban_bus::routing::is_snapshot;
    let (_server, _client, mut office, routed) = routed_over_nats(db).await;
    let store = routed.store.clone();
    // An engine that seals personal fields, as `kiban serve` runs it.
    let engine =
        Engine::new(store.clone()).with_person_keys(kiban_store::PersonKeys::new(store.clone()));
    onboard_insurer(&engine, INSURER, true).await;
    register_office(&engine, OFFICE, &[(TERMINAL, ANY_CREDENTIAL)]).await;
    consent(&engine, INSURER, PERSON, OFFICE, 0).await;
    const FAMILY_NAME: &str = "介護 花子";
    let applied_on = (day(2) + Duration::hours(9)).date_naive().to_string();
    ingest(
        &engine,
        INSURER,
        PERSON,
        Some(1),
        "certification.filed",
        2,
        json!({"kind": "new", "applicant": {"by": "family", "name": {"plain": FAMILY_NAME}},
               "applied_on": applied_on}),
    )
    .await;

    let message = loop {
        let message = bounded("the office's update", office.next()).await.unwrap();
        if !is_snapshot(&message) {
            break message;
        }
    };
    let position: u64 = message
        .headers
        .as_ref()
        .and_then(|h| h.get(kiban_bus::relay::POSITION_HEADER))
        .expect("a Kiban-Position header")
        .as_str()
        .parse()
        .unwrap();
    let recorded = event_at(&store, position).await;
    assert_eq!(recorded.event_type.as_str(), "certification.filed");
    let payload: serde_json::Value = recorded.payload.parse().unwrap();
    let sealed = payload["applicant"]["name"]
        .as_str()
        .expect("the name is recorded sealed")
        .to_owned();
    let text = std::str::from_utf8(&message.payload).unwrap();
    for leak in [
        "payload",
        "hash",
        "actor",
        "correlation_id",
        "event_id",
        "applicant",
        FAMILY_NAME,
        sealed.as_str(),
        recorded.hash.to_string().as_str(),
    ] {
        assert!(!text.contains(leak), "{leak:?} on the office feed: {text}");
    }
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(value, api_notice(&recorded));

    routed.stop().await;
}

/// Routing asks for a whole batch at once (`offices_for_each`: two queries
/// for the batch): over a history where who is entitled changes between
/// events of one person and differs between persons and insurers, the
/// batch's answer is exactly what asking event by event gives, and that
/// answer is the rule's (the office gets its consenting person's
/// certification, the stranger only its own person's events after its
/// consent, nobody anything of the insurer that does not share).
async fn a_batch_is_entitled_as_its_events_one_by_one(db: &TestDb) {
    let (store, engine, projections) = started(db).await;
    organisations(&engine).await;
    consent(&engine, INSURER, PERSON, OFFICE, 0).await;
    consent(&engine, QUIET_INSURER, QUIET_PERSON, OFFICE, 0).await;
    file_by_person(&engine, QUIET_INSURER, QUIET_PERSON, 1).await;
    file_by_person(&engine, INSURER, WAITING_PERSON, 1).await;
    file_by_person(&engine, INSURER, LAST_PERSON, 1).await;
    whole_certification(&engine, INSURER, PERSON).await;
    consent(&engine, INSURER, LAST_PERSON, STRANGER_OFFICE, 23).await;
    ingest(
        &engine,
        INSURER,
        LAST_PERSON,
        Some(1),
        "certification.withdrawn",
        24,
        json!({"reason": null}),
    )
    .await;
    let events = every_event_applied(&store, &projections).await;

    let entitlements = ReadModelEntitlements::new(projections.clone());
    let batch = entitlements.offices_for_each(&events).await.unwrap();
    let mut one_by_one = Vec::new();
    for event in &events {
        one_by_one.push(entitlements.offices_for(event).await.unwrap());
    }
    assert_eq!(batch, one_by_one);

    let sent_to = |office: &str| -> Vec<(String, String)> {
        let office = OfficeNumber::parse(office).unwrap();
        events
            .iter()
            .zip(&batch)
            .filter(|(_, offices)| offices.contains(&office))
            .map(|(event, _)| summary(event))
            .collect()
    };
    let to_office = sent_to(OFFICE);
    assert_eq!(to_office.len(), 9, "{to_office:?}");
    assert!(
        to_office
            .iter()
            .all(|(stream, _)| stream.contains(&format!("{INSURER}-{PERSON}"))),
        "{to_office:?}"
    );
    // LAST_PERSON's filing came before the stranger's consent: only the
    // withdrawal after it is the stranger's.
    assert_eq!(
        sent_to(STRANGER_OFFICE),
        [(
            format!("certification/{INSURER}-{LAST_PERSON}-1"),
            "certification.withdrawn".to_owned()
        )]
    );
    projections.stop().await;
    store.close().await;
}
