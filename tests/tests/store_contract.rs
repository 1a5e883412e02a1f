//! The store contract: the same scenarios against PostgreSQL and SQLite.
//!
//! Each scenario is one `async fn(&TestDb)`; [`contract!`] generates a
//! `postgres` and a `sqlite` test for each, so both backends are held to
//! exactly the same behaviour.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use kiban_events::{ExpectedVersion, Payload, RecordedEvent, StreamName};
use kiban_store::{
    AppendResult, BreakReason, Error, EventStore, READ_CONNECTIONS_DEFAULT, READ_EVENTS_MAX, Store,
    StoreOptions, SubscriptionPages, VerifyReport,
};
use kiban_tests::{Backend, TestDb, bounded, event, event_with_id, events, stream};

kiban_tests::on_both_backends!(
    append_reads_back_exactly_and_survives_reopening,
    concurrent_writers_on_one_stream_exactly_one_wins_per_version,
    retrying_writers_on_one_stream_get_contiguous_versions,
    resending_an_append_returns_the_original_result,
    reused_event_id_with_other_content_is_refused,
    mixed_stored_and_new_ids_write_nothing,
    positions_are_gapless_under_concurrent_appends_to_many_streams,
    subscription_catches_up_then_follows_live_appends_without_loss_or_duplicates,
    reads_page_through_streams_and_the_log,
    verify_accepts_an_intact_chain_and_any_range_of_it,
    verify_names_a_changed_payload,
    verify_names_a_deleted_event,
    verify_names_swapped_payloads,
    verify_names_swapped_positions,
    verify_names_an_altered_hash,
    domain_sized_payloads_are_stored_compressed_and_read_back_exactly,
    verify_names_swapped_compressed_payloads_and_a_damaged_frame,
    over_limit_and_malformed_appends_are_refused_and_write_nothing,
    close_ends_subscriptions_and_refuses_appends,
    second_store_refuses_writes_follows_the_writer_and_takes_over,
    read_range_streams_the_log_exactly_across_batches_and_names_a_gap,
    a_subscriber_that_keeps_up_takes_every_committed_event_from_memory,
    a_subscriber_far_behind_catches_up_from_the_database_then_follows_from_memory,
    a_store_that_is_not_the_writer_delivers_every_event_from_the_database,
);

/// Reads the whole log in pages.
async fn read_everything(store: &Store) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let page = store
            .read_all(all.len() as u64 + 1, 97)
            .await
            .expect("read_all");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn assert_gapless(all: &[RecordedEvent]) {
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            event.position,
            i as u64 + 1,
            "positions are 1..=N without gaps"
        );
    }
    let mut versions: BTreeMap<&StreamName, u64> = BTreeMap::new();
    for event in all {
        let version = versions.entry(&event.stream).or_insert(0);
        *version += 1;
        assert_eq!(
            event.version, *version,
            "versions of {} are contiguous",
            event.stream
        );
    }
}

async fn append_reads_back_exactly_and_survives_reopening(db: &TestDb) {
    let store = db.open().await;
    let s1 = stream("certification", "131016-0000012345-1");
    let first = store
        .append(&s1, ExpectedVersion::NoStream, events(3))
        .await
        .expect("append");
    assert_eq!((first.first_position, first.last_position), (1, 3));
    assert_eq!(first.next_expected_version, 3);
    let s2 = stream("insured", "131016-0000012345");
    let second = store
        .append(&s2, ExpectedVersion::Exact(0), events(2))
        .await
        .expect("append");
    assert_eq!((second.first_position, second.last_position), (4, 5));
    assert_eq!(second.events[0].prev_hash, first.events[2].hash);

    assert_eq!(store.read_stream(&s1, 1, 10).await.unwrap(), first.events);
    assert_eq!(
        store.read_stream(&s1, 2, 1).await.unwrap(),
        first.events[1..2]
    );
    let all = store.read_all(1, 100).await.unwrap();
    assert_eq!(all, [first.events.clone(), second.events.clone()].concat());
    let head = store.head().await.unwrap();
    assert_eq!((head.position, head.hash), (5, second.events[1].hash));

    store.close().await;
    let reopened = db.open().await;
    assert_eq!(
        reopened.read_all(1, 100).await.unwrap(),
        all,
        "byte for byte after reopening"
    );
    // A stale "new stream" append after reopening (the writer's cache is
    // empty): the database, not the cache, says the stream exists.
    match reopened
        .append(&s2, ExpectedVersion::NoStream, events(1))
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 2),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Through the trait, on another task: what projections and the engine
    // are written against (its futures are `Send`).
    let third = tokio::spawn(append_through_the_trait(reopened.clone(), s1.clone()))
        .await
        .expect("task")
        .expect("append after reopening");
    assert_eq!((third.first_position, third.next_expected_version), (6, 4));
    assert_eq!(third.events[0].prev_hash, second.events[1].hash);
}

async fn append_through_the_trait<S: EventStore>(
    store: S,
    stream: StreamName,
) -> kiban_store::Result<AppendResult> {
    assert_eq!(store.head().await?.position, 5);
    store
        .append(&stream, ExpectedVersion::Exact(3), events(1))
        .await
}

async fn concurrent_writers_on_one_stream_exactly_one_wins_per_version(db: &TestDb) {
    const WRITERS: usize = 16;
    let store = db.open().await;
    let s = stream("office", "1312345678");
    for version in 0..5u64 {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (store, s) = (store.clone(), s.clone());
                tokio::spawn(async move {
                    store
                        .append(&s, ExpectedVersion::Exact(version), events(1))
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match bounded("append", task).await.expect("task") {
                Ok(result) => {
                    won += 1;
                    assert_eq!(result.next_expected_version, version + 1);
                }
                Err(Error::Conflict {
                    actual, expected, ..
                }) => {
                    assert_eq!(actual, version + 1);
                    assert_eq!(expected, ExpectedVersion::Exact(version));
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(won, 1, "exactly one writer wins version {}", version + 1);
    }
    assert_gapless(&read_everything(&store).await);
}

async fn retrying_writers_on_one_stream_get_contiguous_versions(db: &TestDb) {
    const WRITERS: usize = 24;
    const APPENDS_EACH: usize = 5;
    let store = db.open().await;
    let s = stream("certification", "131016-0000000001-1");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                while acknowledged.len() < APPENDS_EACH {
                    let version = store
                        .read_stream(&s, 1, READ_EVENTS_MAX)
                        .await
                        .unwrap()
                        .len();
                    match store
                        .append(&s, ExpectedVersion::Exact(version as u64), events(1))
                        .await
                    {
                        Ok(result) => acknowledged.push(result),
                        Err(Error::Conflict { .. }) => {}
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut versions = HashSet::new();
    for task in tasks {
        for result in bounded("writer", task).await.expect("task") {
            assert!(
                versions.insert(result.next_expected_version),
                "one winner per version"
            );
        }
    }
    assert_eq!(versions.len(), WRITERS * APPENDS_EACH);
    let stored = store.read_stream(&s, 1, READ_EVENTS_MAX).await.unwrap();
    assert_eq!(stored.len(), WRITERS * APPENDS_EACH);
    assert_gapless(&read_everything(&store).await);
}

async fn resending_an_append_returns_the_original_result(db: &TestDb) {
    let store = db.open().await;
    let s = stream("subsidy", "131016-2026-0001");
    let batch = events(3);
    let original = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Exact(3), events(1))
        .await
        .unwrap();
    // The expected version no longer holds, but a re-send is recognised first.
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("a re-send succeeds");
    assert_eq!(again, original);
    // Re-sends racing each other (likely in one writer batch) all succeed
    // with one set of positions.
    let fresh = events(2);
    let s2 = stream("subsidy", "131016-2026-0002");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, s2, fresh) = (store.clone(), s2.clone(), fresh.clone());
            tokio::spawn(async move { store.append(&s2, ExpectedVersion::Any, fresh).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(bounded("re-send", task).await.unwrap().expect("re-send"));
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "every re-send gets one result"
    );
    let later = store
        .append(&s2, ExpectedVersion::Any, fresh)
        .await
        .unwrap();
    assert_eq!(later, results[0], "a re-send that expects any version");
    assert_eq!(store.head().await.unwrap().position, 6);
    assert_gapless(&read_everything(&store).await);
}

async fn reused_event_id_with_other_content_is_refused(db: &TestDb) {
    let store = db.open().await;
    let s = stream("insured", "131016-0000000009");
    let original = event(r#"{"level":"care_2"}"#);
    store
        .append(&s, ExpectedVersion::Any, vec![original.clone()])
        .await
        .unwrap();
    let other_payload = event_with_id(original.event_id, r#"{"level":"care_3"}"#);
    match store
        .append(&s, ExpectedVersion::Any, vec![other_payload])
        .await
    {
        Err(Error::DuplicateEventId { event_id }) => assert_eq!(event_id, original.event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    let other_stream = stream("insured", "131016-0000000010");
    match store
        .append(&other_stream, ExpectedVersion::Any, vec![original.clone()])
        .await
    {
        Err(Error::DuplicateEventId { event_id }) => assert_eq!(event_id, original.event_id),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap().position, 1, "nothing written");
}

async fn mixed_stored_and_new_ids_write_nothing(db: &TestDb) {
    let store = db.open().await;
    let s = stream("insured", "131016-0000000011");
    let stored = events(2);
    store
        .append(&s, ExpectedVersion::Any, stored.clone())
        .await
        .unwrap();
    let mixed = vec![stored[1].clone(), event(r#"{"new":true}"#)];
    match store.append(&s, ExpectedVersion::Any, mixed).await {
        Err(Error::MixedBatch { stored, total }) => assert_eq!((stored, total), (1, 2)),
        other => panic!("expected MixedBatch, got {other:?}"),
    }
    assert_eq!(read_everything(&store).await.len(), 2, "nothing written");
}

async fn positions_are_gapless_under_concurrent_appends_to_many_streams(db: &TestDb) {
    const WRITERS: usize = 16;
    const APPENDS_EACH: usize = 40;
    const STREAMS: usize = 20;
    let store = db.open().await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..APPENDS_EACH {
                    let s = stream("load", &format!("s{}", (w * 7 + i) % STREAMS));
                    let batch = events(1 + (w + i) % 3);
                    acknowledged.push(store.append(&s, ExpectedVersion::Any, batch).await.unwrap());
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(bounded("writer", task).await.expect("task"));
    }
    let all = read_everything(&store).await;
    assert_gapless(&all);
    let total: usize = acknowledged.iter().map(|r| r.events.len()).sum();
    assert_eq!(all.len(), total, "every acknowledged event, nothing else");
    for result in &acknowledged {
        let first = result.first_position as usize - 1;
        assert_eq!(all[first..first + result.events.len()], result.events[..]);
    }
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events, .. } if events as usize == total
    ));
}

async fn subscription_catches_up_then_follows_live_appends_without_loss_or_duplicates(db: &TestDb) {
    const BEFORE: usize = 300;
    const WRITERS: usize = 8;
    const LIVE_APPENDS_EACH: usize = 40;
    let store = db.open().await;
    for i in 0..BEFORE / 10 {
        let s = stream("early", &format!("s{}", i % 7));
        store
            .append(&s, ExpectedVersion::Any, events(10))
            .await
            .unwrap();
    }
    let from_start = store.subscribe(1);
    let from_middle = store.subscribe(250);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..LIVE_APPENDS_EACH {
                    let s = stream("live", &format!("w{w}-{}", i % 3));
                    store
                        .append(&s, ExpectedVersion::Any, events(1 + i % 2))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let live: usize = (0..LIVE_APPENDS_EACH).map(|i| 1 + i % 2).sum::<usize>() * WRITERS;
    let total = BEFORE + live;
    let seen: Vec<_> = bounded("subscription", from_start.take(total).collect::<Vec<_>>()).await;
    let seen_middle: Vec<_> = bounded(
        "subscription",
        from_middle.take(total - 249).collect::<Vec<_>>(),
    )
    .await;
    for writer in writers {
        writer.await.unwrap();
    }
    let seen: Vec<RecordedEvent> = seen.into_iter().map(|e| e.expect("event")).collect();
    let all = read_everything(&store).await;
    assert_eq!(all.len(), total);
    assert_eq!(seen, all, "every event once, in order");
    let seen_middle: Vec<RecordedEvent> = seen_middle.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(seen_middle, all[249..]);
}

async fn reads_page_through_streams_and_the_log(db: &TestDb) {
    let store = db.open().await;
    let s = stream("paging", "one");
    let other = stream("paging", "two");
    store
        .append(&s, ExpectedVersion::Any, events(1000))
        .await
        .unwrap();
    store
        .append(&other, ExpectedVersion::Any, events(5))
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Any, events(25))
        .await
        .unwrap();
    let capped = store.read_all(1, READ_EVENTS_MAX + 500).await.unwrap();
    assert_eq!(capped.len(), READ_EVENTS_MAX, "reads are bounded");
    let mut paged = Vec::new();
    while let page = store
        .read_stream(&s, paged.len() as u64 + 1, 7)
        .await
        .unwrap()
        && !page.is_empty()
    {
        assert!(page.len() <= 7);
        paged.extend(page);
    }
    assert_eq!(paged.len(), 1025);
    assert!(
        paged
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64 + 1 && e.stream == s)
    );
    assert_eq!(store.read_stream(&other, 3, 100).await.unwrap().len(), 3);
    assert!(store.read_stream(&other, 6, 100).await.unwrap().is_empty());
    assert!(store.read_all(1031, 10).await.unwrap().is_empty());
    assert_eq!(store.read_all(1029, 10).await.unwrap().len(), 2);
    assert_gapless(&read_everything(&store).await);
}

/// Ten events in four appends over two streams: the chain the verify
/// scenarios work on.
async fn ten_events(db: &TestDb) -> (Store, Vec<RecordedEvent>) {
    let store = db.open().await;
    let (a, b) = (stream("chain", "a"), stream("chain", "b"));
    for (s, n) in [(&a, 3), (&b, 2), (&a, 4), (&b, 1)] {
        store
            .append(s, ExpectedVersion::Any, events(n))
            .await
            .unwrap();
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 10);
    (store, all)
}

async fn verify_accepts_an_intact_chain_and_any_range_of_it(db: &TestDb) {
    let (store, all) = ten_events(db).await;
    assert_eq!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified {
            events: 10,
            head_hash: all[9].hash
        }
    );
    assert_eq!(
        store.verify(4, Some(7)).await.unwrap(),
        VerifyReport::Verified {
            events: 4,
            head_hash: all[6].hash
        }
    );
    assert!(matches!(
        store.verify(8, Some(12)).await.unwrap(),
        VerifyReport::Broken {
            position: 11,
            reason: BreakReason::Missing,
            events_verified: 3
        }
    ));
}

fn assert_broken_at(report: VerifyReport, expected: u64) -> BreakReason {
    match report {
        VerifyReport::Broken {
            position,
            reason,
            events_verified,
        } => {
            assert_eq!(position, expected, "the first broken position ({reason:?})");
            assert_eq!(events_verified, expected - 1);
            reason
        }
        VerifyReport::Verified { .. } => panic!("tampering at {expected} was not found"),
    }
}

async fn verify_names_a_changed_payload(db: &TestDb) {
    let (store, _) = ten_events(db).await;
    db.tamper(r#"UPDATE events SET payload = '{"n":999}' WHERE position = 5"#)
        .await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 5);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
    // A range after the change still verifies: it links to the stored hash.
    assert!(matches!(
        store.verify(6, None).await.unwrap(),
        VerifyReport::Verified { .. }
    ));
}

async fn verify_names_a_deleted_event(db: &TestDb) {
    let (store, _) = ten_events(db).await;
    db.tamper("DELETE FROM events WHERE position = 4").await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 4);
    assert_eq!(reason, BreakReason::Missing);
    assert!(matches!(
        store.read_all(1, 100).await,
        Err(Error::Corrupted { position: 4, .. })
    ));
}

async fn verify_names_swapped_payloads(db: &TestDb) {
    let (store, _) = ten_events(db).await;
    db.tamper(
        "UPDATE events SET payload = CASE position WHEN 6 THEN \
             (SELECT payload FROM events WHERE position = 7) \
             ELSE (SELECT payload FROM events WHERE position = 6) END \
         WHERE position IN (6, 7)",
    )
    .await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 6);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
}

async fn verify_names_swapped_positions(db: &TestDb) {
    let (store, _) = ten_events(db).await;
    db.tamper(
        "UPDATE events SET position = 1000000 WHERE position = 3; \
         UPDATE events SET position = 3 WHERE position = 4; \
         UPDATE events SET position = 4 WHERE position = 1000000;",
    )
    .await;
    // Rows store no link of their own (migration 0010): the row now at 3
    // is event 4's, whose canonical bytes name position 4, so it does not
    // hash to its stored hash at position 3.
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 3);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
}

/// A payload the size and shape of the domain's (an opinion received:
/// field names, dates, institution numbers and a document digest).
fn domain_payload(i: usize) -> String {
    format!(
        r#"{{"institution":"{:010}","opinion":{{"sha256":"{:064x}","media_type":"application/pdf","size_bytes":{}}},"received_on":"2026-11-{:02}"}}"#,
        2_100_015_107 + i,
        (i as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
        100_000 + i * 7,
        1 + i % 28
    )
}

/// How many rows hold their payload as text and how many as a zstd frame.
async fn stored_forms(db: &TestDb) -> (i64, i64) {
    use sqlx::Connection;
    match db.backend() {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            // A zstd frame starts with 0x28, which no JSON text does.
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE get_byte(payload, 0) <> 40), \
                        count(*) FILTER (WHERE get_byte(payload, 0) = 40) FROM events",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT coalesce(sum(typeof(payload) = 'text'), 0), \
                        coalesce(sum(typeof(payload) = 'blob'), 0) FROM events",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
    }
}

async fn domain_sized_payloads_are_stored_compressed_and_read_back_exactly(db: &TestDb) {
    let store = db.open().await;
    let payloads: Vec<String> = (0..40)
        .map(domain_payload)
        .chain(["{}".to_owned(), r#"{"n":1}"#.to_owned()])
        .collect();
    for chunk in payloads.chunks(7) {
        let new = chunk.iter().map(|p| event(p)).collect();
        store
            .append(&stream("compact", "a"), ExpectedVersion::Any, new)
            .await
            .unwrap();
    }
    // Compression only where it is shorter: the two tiny payloads stay text.
    assert_eq!(stored_forms(db).await, (2, 40));
    store.close().await;

    // A fresh store reads the rows from the database (no cache, no tail).
    let store = db.open().await;
    let all = read_everything(&store).await;
    let read: Vec<&str> = all.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(
        read,
        payloads.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let by_stream = store
        .read_stream(&stream("compact", "a"), 1, 100)
        .await
        .unwrap();
    assert_eq!(by_stream, all);
    assert_eq!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified {
            events: 42,
            head_hash: all[41].hash
        }
    );
    store.close().await;
}

async fn verify_names_swapped_compressed_payloads_and_a_damaged_frame(db: &TestDb) {
    let store = db.open().await;
    let new = (0..10).map(|i| event(&domain_payload(i))).collect();
    store
        .append(&stream("compact", "b"), ExpectedVersion::Any, new)
        .await
        .unwrap();
    assert_eq!(stored_forms(db).await, (0, 10));
    db.tamper(
        "UPDATE events SET payload = CASE position WHEN 6 THEN \
             (SELECT payload FROM events WHERE position = 7) \
             ELSE (SELECT payload FROM events WHERE position = 6) END \
         WHERE position IN (6, 7)",
    )
    .await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 6);
    assert!(
        matches!(reason, BreakReason::ContentChanged { .. }),
        "{reason:?}"
    );
    // A frame cut short no longer decompresses: the row is reported, never
    // read as something else.
    db.tamper(
        "UPDATE events SET payload = substr(payload, 1, length(payload) - 1) WHERE position = 3",
    )
    .await;
    assert!(
        matches!(
            store.verify(1, None).await,
            Err(Error::Corrupted { position: 3, .. })
        ),
        "verify"
    );
    let read = store.read_all(1, 100).await;
    assert!(
        matches!(read, Err(Error::Corrupted { position: 3, .. })),
        "read_all: {read:?}"
    );
    store.close().await;
}

async fn verify_names_an_altered_hash(db: &TestDb) {
    let (store, _) = ten_events(db).await;
    db.tamper(
        "UPDATE events SET hash = (SELECT hash FROM events WHERE position = 2) WHERE position = 5",
    )
    .await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 5);
    assert!(
        matches!(reason, BreakReason::HashAltered { .. }),
        "{reason:?}"
    );
}

async fn over_limit_and_malformed_appends_are_refused_and_write_nothing(db: &TestDb) {
    let store = db.open().await;
    let s = stream("limits", "one");
    let invalid = |result: kiban_store::Result<_>| matches!(result, Err(Error::Invalid(_)));
    assert!(
        invalid(store.append(&s, ExpectedVersion::Any, Vec::new()).await),
        "empty"
    );
    let too_many = events(kiban_events::envelope::EVENTS_PER_APPEND_MAX + 1);
    assert!(
        invalid(store.append(&s, ExpectedVersion::Any, too_many).await),
        "too many"
    );
    let mut oversized = event("{}");
    let big = format!(
        r#"{{"a":"{}"}}"#,
        "x".repeat(kiban_events::envelope::PAYLOAD_BYTES_MAX)
    );
    oversized.payload = Payload::from_stored(big);
    assert!(
        invalid(
            store
                .append(&s, ExpectedVersion::Any, vec![oversized])
                .await
        ),
        "oversized"
    );
    let repeated = event("{}");
    let twice = vec![repeated.clone(), repeated];
    assert!(
        invalid(store.append(&s, ExpectedVersion::Any, twice).await),
        "repeated id"
    );
    let mut version_zero = event("{}");
    version_zero.schema_version = 0;
    assert!(invalid(
        store
            .append(&s, ExpectedVersion::Any, vec![version_zero])
            .await
    ));
    // A stream name from JSON is validated while parsing: a bad one never
    // becomes a `StreamName`, so it cannot reach the store.
    let bad: Result<StreamName, _> = serde_json::from_str(r#""Certification/has space""#);
    let message = bad.expect_err("a bad stream name is refused").to_string();
    assert!(
        message.contains("stream name must be `kind/id`"),
        "{message}"
    );
    assert_eq!(store.head().await.unwrap().position, 0, "nothing written");
    assert!(store.read_all(1, 10).await.unwrap().is_empty());
}

async fn close_ends_subscriptions_and_refuses_appends(db: &TestDb) {
    let store = db.open().await;
    let s = stream("closing", "one");
    store
        .append(&s, ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    let mut subscription = store.subscribe(1);
    assert_eq!(subscription.next().await.unwrap().unwrap().position, 1);
    assert_eq!(subscription.next().await.unwrap().unwrap().position, 2);
    store.close().await;
    assert!(matches!(
        bounded("end", subscription.next()).await,
        Some(Err(Error::Closed))
    ));
    assert!(subscription.next().await.is_none());
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, events(1)).await,
        Err(Error::Closed)
    ));
    assert_eq!(
        db.backend() == Backend::Postgres,
        db.url().starts_with("postgres")
    );
}

/// Two stores on one database (as two kiban processes would be): the second
/// is a reader. It refuses appends with `NotWriter`, its subscriptions see
/// what the writer commits, and it takes over writing once the writer is gone.
async fn second_store_refuses_writes_follows_the_writer_and_takes_over(db: &TestDb) {
    let writer = db.open().await;
    let reader = db.open().await;
    let s = stream("office", "1312345678");
    match reader.append(&s, ExpectedVersion::Any, events(1)).await {
        Err(Error::NotWriter(message)) => assert!(message.contains("writer lock"), "{message}"),
        other => panic!("expected NotWriter, got {other:?}"),
    }
    let mut subscription = reader.subscribe(1);
    let first = writer
        .append(&s, ExpectedVersion::NoStream, events(3))
        .await
        .unwrap();
    let seen: Vec<_> = bounded("catch-up", (&mut subscription).take(3).collect::<Vec<_>>()).await;
    let seen: Vec<RecordedEvent> = seen.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(seen, first.events);
    let second = writer
        .append(&s, ExpectedVersion::Exact(3), events(2))
        .await
        .unwrap();
    let seen: Vec<_> = bounded("live", (&mut subscription).take(2).collect::<Vec<_>>()).await;
    let seen: Vec<RecordedEvent> = seen.into_iter().map(|e| e.unwrap()).collect();
    assert_eq!(seen, second.events);

    writer.close().await;
    // The old writer's PostgreSQL session ends asynchronously on the server,
    // so the reader may need a few attempts; the bound only turns a hang into
    // a failure.
    let taken_over = bounded("take over", async {
        loop {
            match reader
                .append(&s, ExpectedVersion::Exact(5), events(1))
                .await
            {
                Err(Error::NotWriter(_)) => tokio::task::yield_now().await,
                other => return other,
            }
        }
    })
    .await
    .expect("the reader takes over writing");
    assert_eq!(
        (taken_over.first_position, taken_over.next_expected_version),
        (6, 6)
    );
    assert_eq!(taken_over.events[0].prev_hash, second.events[1].hash);
    let next = bounded("own append", subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, taken_over.events[0]);
}

/// The writer's session dies under it (an operator or a failover kills the
/// backend): the batch in flight fails with a retryable error, the writer
/// reconnects, takes the lock again and reloads the head, and the log stays
/// gapless and chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writer_recovers_after_its_session_is_killed() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let s = stream("office", "1312345679");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    // End the writer's session and wait until PostgreSQL has ended it:
    // `pg_terminate_backend` returns before the backend exits, and until it
    // has, the session still holds the writer lock, so an append in that
    // moment is rightly told that another session holds it.
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let writers: Vec<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
         AND datname = current_database()",
    )
    .bind(kiban_store::WRITER_APPLICATION_NAME)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(writers.len(), 1, "one writer session");
    let pid = writers[0].0;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
    bounded("the writer's session to end", async {
        loop {
            let (alive,): (bool,) =
                sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !alive {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = admin.close().await;
    let mut failures = 0;
    let second = loop {
        match store.append(&s, ExpectedVersion::Exact(2), events(1)).await {
            Ok(result) => break result,
            Err(Error::Unavailable(_) | Error::Database(_)) if failures < 3 => failures += 1,
            Err(other) => panic!("unexpected error after the kill: {other}"),
        }
    };
    assert!(failures <= 1, "only the batch in flight fails ({failures})");
    assert_eq!(
        (second.first_position, second.next_expected_version),
        (3, 3)
    );
    assert_eq!(second.events[0].prev_hash, first.events[1].hash);
    assert_gapless(&read_everything(&store).await);
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events: 3, .. }
    ));
}

/// `read_range` (the verification scan, parsed) gives exactly what
/// `read_all` gives, for any range, across the scan's batches (4,096 rows),
/// and ends with `Corrupted` at a missing position.
async fn read_range_streams_the_log_exactly_across_batches_and_names_a_gap(db: &TestDb) {
    async fn collect(store: &Store, from: u64, to: u64) -> Result<Vec<RecordedEvent>, Error> {
        let mut batches = store.read_range(from, to);
        let mut all = Vec::new();
        while let Some(batch) = batches.next().await {
            all.extend(batch?);
        }
        Ok(all)
    }
    let (store, _) = ten_events(db).await;
    let bulk = stream("chain", "bulk");
    for _ in 0..5 {
        store
            .append(&bulk, ExpectedVersion::Any, events(1000))
            .await
            .unwrap();
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 5010);
    assert_eq!(collect(&store, 1, 5010).await.unwrap(), all);
    assert_eq!(collect(&store, 4, 7).await.unwrap(), all[3..7].to_vec());
    assert_eq!(
        collect(&store, 4000, 5010).await.unwrap(),
        all[3999..].to_vec()
    );
    assert!(collect(&store, 8, 7).await.unwrap().is_empty());
    // Verification walks the same batches: a change past the first one is
    // named at its position.
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events: 5010, .. }
    ));
    db.tamper(r#"UPDATE events SET payload = '{"n":1}' WHERE position = 4800"#)
        .await;
    let reason = assert_broken_at(store.verify(1, None).await.unwrap(), 4800);
    assert!(matches!(reason, BreakReason::ContentChanged { .. }));
    db.tamper("DELETE FROM events WHERE position = 4500").await;
    match collect(&store, 1, 5010).await {
        Err(Error::Corrupted { position, .. }) => assert_eq!(position, 4500),
        other => panic!("a gap at 4500 was not named: {:?}", other.map(|e| e.len())),
    }
    // Past the last stored event is missing too.
    db.tamper("DELETE FROM events WHERE position = 5010").await;
    assert!(matches!(
        collect(&store, 4600, 5010).await,
        Err(Error::Corrupted { position: 5010, .. })
    ));
    store.close().await;
}

/// The hash chain links every event to the one before it.
fn assert_chained(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "the chain links at {}",
            pair[1].position
        );
    }
}

/// Appends from `writers` concurrent tasks (`appends` each, 1–2 events
/// each); returns how many events they wrote.
fn spawn_appenders(
    store: &Store,
    kind: &'static str,
    writers: usize,
    appends: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, usize) {
    let handles = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..appends {
                    let s = stream(kind, &format!("w{w}-{}", i % 3));
                    store
                        .append(&s, ExpectedVersion::Any, events(1 + i % 2))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let total = (0..appends).map(|i| 1 + i % 2).sum::<usize>() * writers;
    (handles, total)
}

/// Takes `n` events from a subscription, failing on an error.
async fn take(subscription: &mut kiban_store::Subscription, n: usize) -> Vec<RecordedEvent> {
    let seen: Vec<_> = bounded("subscription", subscription.take(n).collect::<Vec<_>>()).await;
    seen.into_iter().map(|e| e.expect("event")).collect()
}

/// The writer hands what it commits to the store's own subscribers from
/// memory: while concurrent appenders write, a subscriber that keeps up gets
/// every event exactly once, in order, with the committed bytes and hashes
/// (equal to what the database holds, and the chain verifies), and none of
/// its pages came from the database.
async fn a_subscriber_that_keeps_up_takes_every_committed_event_from_memory(db: &TestDb) {
    let store = db.open().await;
    let mut subscription = store.subscribe(1);
    let (appenders, total) = spawn_appenders(&store, "tail", 8, 40);
    let seen = take(&mut subscription, total).await;
    for appender in appenders {
        appender.await.unwrap();
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), total);
    assert_eq!(seen, all, "every event once, in order, exactly as stored");
    assert_chained(&seen);
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events, .. } if events as usize == total
    ));
    let pages = store.subscription_pages();
    assert!(pages.from_memory > 0, "{pages:?}");
    assert_eq!(pages.from_database, 0, "{pages:?}");
}

/// A subscriber further behind than the tail holds reads the database,
/// then, once it has caught up, takes the live events from memory, without a
/// gap or a duplicate at the seam.
async fn a_subscriber_far_behind_catches_up_from_the_database_then_follows_from_memory(
    db: &TestDb,
) {
    const TAIL: usize = 50;
    let store = db
        .open_with(StoreOptions {
            tail_events: TAIL,
            ..StoreOptions::default()
        })
        .await;
    for i in 0..120 {
        let s = stream("behind", &format!("s{}", i % 7));
        store
            .append(&s, ExpectedVersion::Any, events(10))
            .await
            .unwrap();
    }
    let mut subscription = store.subscribe(1);
    let mut seen = take(&mut subscription, 1200).await;
    let caught_up = store.subscription_pages();
    assert!(caught_up.from_database >= 3, "{caught_up:?}");
    assert_eq!(caught_up.from_memory, 0, "{caught_up:?}");
    // In lockstep: each append is taken while it is still in the tail.
    for i in 0..20 {
        let s = stream("behind", &format!("live{}", i % 3));
        store
            .append(&s, ExpectedVersion::Any, events(5))
            .await
            .unwrap();
        seen.extend(take(&mut subscription, 5).await);
    }
    let following = store.subscription_pages();
    assert!(following.from_memory >= 20, "{following:?}");
    assert_eq!(
        following.from_database, caught_up.from_database,
        "{following:?}"
    );
    // Then concurrent appenders; whichever way each page comes, nothing is
    // lost or repeated.
    let (appenders, live) = spawn_appenders(&store, "behindlive", 6, 30);
    seen.extend(take(&mut subscription, live).await);
    for appender in appenders {
        appender.await.unwrap();
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 1200 + 100 + live);
    assert_eq!(seen, all, "every event once, in order, exactly as stored");
    assert_chained(&seen);
}

/// Events written by another store's writer (another process on the same
/// database) are not in this store's memory: its subscriptions read them
/// from the database, all of them, in order.
async fn a_store_that_is_not_the_writer_delivers_every_event_from_the_database(db: &TestDb) {
    let writer = db.open().await;
    let reader = db.open().await;
    let mut subscription = reader.subscribe(1);
    let (appenders, total) = spawn_appenders(&writer, "other", 6, 30);
    let seen = take(&mut subscription, total).await;
    for appender in appenders {
        appender.await.unwrap();
    }
    let all = read_everything(&reader).await;
    assert_eq!(all.len(), total);
    assert_eq!(seen, all, "every event once, in order, exactly as stored");
    assert_chained(&seen);
    let pages = reader.subscription_pages();
    assert_eq!(pages.from_memory, 0, "{pages:?}");
    assert!(pages.from_database > 0, "{pages:?}");
    assert_eq!(
        writer.subscription_pages(),
        SubscriptionPages::default(),
        "the writer's store has no subscriber"
    );
}

/// The read pool checks a PostgreSQL connection (a ping) before every use,
/// so read connections the server ended while they were idle (a restart,
/// a fail-over, `pg_terminate_backend`) are replaced and every read after
/// succeeds. Pinging only connections idle for over a second was tried and
/// measured (docs/benchmarks.md "The pool's ping, measured and kept"): this
/// test failed with it — the head poller uses a connection every second,
/// which was never pinged, and the read on it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_connections_ended_while_idle_are_replaced_before_use() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.open().await;
    let s = stream("pool", "idle");
    store
        .append(&s, ExpectedVersion::NoStream, events(3))
        .await
        .unwrap();
    // Every read connection of the pool opened and back in it, idle.
    let reads = (0..READ_CONNECTIONS_DEFAULT).map(|_| store.read_stream(&s, 1, 10));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().len(), 3);
    }
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'kiban-store' \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        ended.iter().filter(|ended| **ended).count() >= 2,
        "the pool's connections were ended: {ended:?}"
    );
    for _ in 0..2 * READ_CONNECTIONS_DEFAULT {
        let read = store.read_stream(&s, 1, 10).await;
        assert_eq!(
            read.expect("a read after the server ended the idle connections")
                .len(),
            3
        );
    }
}
