//! Every table has one migration path, on PostgreSQL and SQLite: a database
//! made by the code from before the read models' and the staff tables had
//! migrations (they were created at run time) opens with today's code and
//! keeps its rows; the read models open a fresh database before the store
//! as well as after it.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use kiban_api::ui::staff::{self, LoginOutcome};
use kiban_engine::Engine;
use kiban_events::{ExpectedVersion, NewEvent, RecordedEvent};
use kiban_projections::{Db, Projections, models};
use kiban_store::both;
use kiban_tests::{Backend, TestDb, bounded, on_both_backends};
use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;

use crate::projections::script::{INSURER, OFFICE, day, office, onboard_insurer};

on_both_backends!(
    a_database_from_before_the_migrations_opens_and_keeps_its_rows,
    the_read_models_open_a_fresh_database_before_the_store,
    a_store_written_before_compact_rows_migrates_and_still_verifies,
    a_store_written_before_lean_rows_migrates_and_still_verifies,
);

/// The store's migrations as the code before `0004` shipped them.
const LEGACY_MIGRATIONS: &[&str] = &["0001_events.sql", "0002_audit.sql", "0003_blobs.sql"];

/// What that code created at run time, word for word: the read models'
/// tables (`kiban-projections`' `Db::open`) and the web screen's staff tables
/// (at the first login or `kiban admin staff add`).
const LEGACY_RUNTIME_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS projection_live (
        projection TEXT PRIMARY KEY,
        generation BIGINT NOT NULL,
        schema_version BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS projection_checkpoints (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (projection, generation));
    CREATE TABLE IF NOT EXISTS projection_documents (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        doc_key TEXT NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (projection, generation, doc_key));
    CREATE TABLE IF NOT EXISTS projection_index (
        projection TEXT NOT NULL,
        generation BIGINT NOT NULL,
        index_name TEXT NOT NULL,
        index_key TEXT NOT NULL,
        doc_key TEXT NOT NULL,
        PRIMARY KEY (projection, generation, index_name, index_key, doc_key));
    CREATE INDEX IF NOT EXISTS projection_index_by_doc
        ON projection_index (projection, generation, index_name, doc_key);
    CREATE TABLE IF NOT EXISTS ui_staff (
        office TEXT NOT NULL,
        user_id TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until_us BIGINT,
        PRIMARY KEY (office, user_id));
    CREATE TABLE IF NOT EXISTS ui_sessions (
        token_sha256 TEXT PRIMARY KEY,
        office TEXT NOT NULL,
        user_id TEXT NOT NULL,
        terminal TEXT NOT NULL,
        csrf TEXT NOT NULL,
        expires_at_us BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS ui_staff_views (
        position BIGINT PRIMARY KEY,
        office TEXT NOT NULL,
        terminal TEXT NOT NULL,
        user_id TEXT NOT NULL,
        viewed_at_us BIGINT NOT NULL);
";

/// Rows that code left behind: a served document and a staff account.
const LEGACY_ROWS: &str = "
    INSERT INTO projection_live (projection, generation, schema_version)
        VALUES ('legacy', 3, 1);
    INSERT INTO projection_documents (projection, generation, doc_key, json)
        VALUES ('legacy', 3, 'k', '{\"kept\":true}');
    INSERT INTO ui_staff (office, user_id, password_hash, failed_logins)
        VALUES ('1312345678', 'old-hand', 'not-a-real-hash', 2);
";

/// The store's migrations before lean rows (`0010`): what the code of
/// compact rows (issue 18 item 3, first part) ran.
const BEFORE_LEAN_MIGRATIONS: &[&str] = &[
    "0001_events.sql",
    "0002_audit.sql",
    "0003_blobs.sql",
    "0004_projections.sql",
    "0005_ui_staff.sql",
    "0006_security.sql",
    "0007_ui_sessions_idle.sql",
    "0008_person_sessions.sql",
    "0009_compact_events.sql",
];

/// The store's migrations before compact rows (`0009`): what the code
/// before issue 18 item 3 ran.
const BEFORE_COMPACT_MIGRATIONS: &[&str] = BEFORE_LEAN_MIGRATIONS.split_at(8).0;

/// Every migration version of today's code.
const ALL_VERSIONS: [i64; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/// Applies the store's first three migrations the way the old code's
/// `Store::open` did, from a copy of just those files.
async fn apply_legacy_migrations(db: &TestDb) {
    apply_migrations(db, LEGACY_MIGRATIONS).await;
}

/// Applies the store's migrations named `files` (and no other) the way
/// `Store::open` does, from a copy of just those files.
async fn apply_migrations(db: &TestDb, files: &[&str]) {
    let backend = match db.backend() {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/store/migrations")
        .join(backend);
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let migrator = Migrator::new(dir.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), files.len());
    match db.backend() {
        Backend::Postgres => {
            let mut conn = sqlx::postgres::PgConnectOptions::from_str(db.url())
                .unwrap()
                .connect()
                .await
                .unwrap();
            migrator.run(&mut conn).await.unwrap();
        }
        Backend::Sqlite => {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(db.url())
                .unwrap()
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .connect()
                .await
                .unwrap();
            migrator.run(&mut conn).await.unwrap();
        }
    }
}

/// The versions recorded by the migrator, in order.
async fn applied_versions(db: &Db) -> Vec<i64> {
    let sql = "SELECT version FROM _sqlx_migrations ORDER BY version";
    both!(db.pool(), pool => sqlx::query_scalar(sql).fetch_all(pool).await).unwrap()
}

async fn a_database_from_before_the_migrations_opens_and_keeps_its_rows(db: &TestDb) {
    apply_legacy_migrations(db).await;
    db.tamper(LEGACY_RUNTIME_SCHEMA).await;
    db.tamper(LEGACY_ROWS).await;

    let store = db.open().await;
    let read_db = Db::open(db.url()).await.expect("the read models open");
    assert_eq!(applied_versions(&read_db).await, ALL_VERSIONS);

    // The rows the old code wrote are still there and still served.
    let kept: Option<serde_json::Value> = read_db.document("legacy", "k").await.unwrap();
    assert_eq!(kept, Some(serde_json::json!({"kept": true})));
    let sql = "SELECT failed_logins FROM ui_staff WHERE user_id = 'old-hand'";
    let failures: i64 =
        both!(read_db.pool(), pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap();
    assert_eq!(failures, 2);

    // And the adopted staff tables work as new ones do.
    staff::add_staff(&read_db, &office(), "new-hand", "a long enough password")
        .await
        .unwrap();
    let outcome = staff::login(
        &read_db,
        &office(),
        "T-01",
        "new-hand",
        "a long enough password",
        day(0),
    )
    .await
    .unwrap();
    let LoginOutcome::Opened(session) = outcome else {
        panic!("the new account logs in: {outcome:?}");
    };
    let found = staff::session(&read_db, &session.token, day(0))
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.office), Some(OFFICE.to_owned()));

    read_db.close().await;
    store.close().await;
}

async fn the_read_models_open_a_fresh_database_before_the_store(db: &TestDb) {
    let read_db = Db::open(db.url())
        .await
        .expect("the read models open first");
    // A second open finds every migration applied.
    let again = Db::open(db.url()).await.expect("and again");
    assert_eq!(applied_versions(&again).await, ALL_VERSIONS);
    again.close().await;

    let store = db.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    let projections = Projections::start(read_db, store.clone(), models::all())
        .await
        .expect("projections start");
    let last = onboard_insurer(&engine, INSURER, true).await;
    bounded("projections catching up", projections.wait_for(last))
        .await
        .expect("caught up");
    assert_eq!(
        applied_versions(projections.db()).await,
        ALL_VERSIONS,
        "the store found nothing left to migrate"
    );
    projections.stop().await;
    store.close().await;
}

/// The rows of `events` exactly as the code before compact rows inserted
/// them: every payload as its text, ids, times and hashes in the backend's
/// column types.
fn rows_as_before_compact_rows(backend: Backend, events: &[RecordedEvent]) -> String {
    rows_as_stored(backend, events, false)
}

/// The payload of a row as the code of compact rows (migration `0009`)
/// stored it: a zstd frame made with the dictionary shipped in kiban when
/// that is shorter than the text, else `None` (the text). Made here with
/// zstd itself, not with the store's code.
fn frame_as_compact_rows(payload: &str) -> Option<Vec<u8>> {
    let dictionary = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/store/dictionaries/payload-1.zdict"),
    )
    .unwrap();
    let frame = zstd::bulk::Compressor::with_dictionary(3, &dictionary)
        .unwrap()
        .compress(payload.as_bytes())
        .unwrap();
    (frame.len() < payload.len()).then_some(frame)
}

/// The rows of `events` as the code before lean rows (after `0009`)
/// inserted them: every column of `0001` (`prev_hash` included), and the
/// payload as a frame where that is shorter (PostgreSQL: in `payload_z`,
/// `payload` NULL; SQLite: a BLOB in `payload`) or as its text.
fn rows_as_before_lean_rows(backend: Backend, events: &[RecordedEvent]) -> String {
    rows_as_stored(backend, events, true)
}

/// The INSERTs of [`rows_as_before_compact_rows`] (`compact` false) and
/// [`rows_as_before_lean_rows`] (`compact` true).
fn rows_as_stored(backend: Backend, events: &[RecordedEvent], compact: bool) -> String {
    let text = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let postgres = backend == Backend::Postgres;
    let id = |u: &uuid::Uuid| {
        if postgres {
            format!("'{u}'::uuid")
        } else {
            format!("X'{}'", u.simple())
        }
    };
    let time = |t: &chrono::DateTime<chrono::Utc>| {
        if postgres {
            format!("'{}'::timestamptz", t.to_rfc3339())
        } else {
            t.timestamp_micros().to_string()
        }
    };
    let bytes = |b: &[u8]| {
        if postgres {
            format!("decode('{}', 'hex')", hex::encode(b))
        } else {
            format!("X'{}'", hex::encode(b))
        }
    };
    let mut sql = String::new();
    for e in events {
        let frame = compact
            .then(|| frame_as_compact_rows(e.payload.as_str()))
            .flatten();
        let (payload, payload_z) = match (&frame, postgres) {
            (None, _) => (text(e.payload.as_str()), "NULL".to_owned()),
            (Some(frame), true) => ("NULL".to_owned(), bytes(frame)),
            (Some(frame), false) => (bytes(frame), "NULL".to_owned()),
        };
        let (z_column, z_value) = if compact && postgres {
            (", payload_z", format!(", {payload_z}"))
        } else {
            ("", String::new())
        };
        sql.push_str(&format!(
            "INSERT INTO events (position, stream, version, event_id, event_type, \
             schema_version, occurred_at, recorded_at, actor, correlation_id, causation_id, \
             payload, prev_hash, hash{z_column}) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}{z_value});\n",
            e.position,
            text(e.stream.as_str()),
            e.version,
            id(e.event_id.as_uuid()),
            text(e.event_type.as_str()),
            e.schema_version,
            time(&e.occurred_at),
            time(&e.recorded_at),
            text(&e.actor.to_string()),
            id(&e.correlation_id),
            e.causation_id.map_or("NULL".to_owned(), |c| id(&c)),
            payload,
            bytes(&e.prev_hash.0),
            bytes(&e.hash.0),
        ));
    }
    sql
}

/// The domain's events (an insurer's onboarding), recorded by the engine
/// on a database of its own; with `tiny`, then one event whose payload is
/// `{}` (stored as text: compression would not shorten it) on a stream of
/// its own.
async fn domain_history(backend: Backend, tiny: bool) -> Vec<RecordedEvent> {
    let source = TestDb::new(backend).await;
    let store = source.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    onboard_insurer(&engine, INSURER, true).await;
    if tiny {
        store
            .append(
                &kiban_tests::stream("lean", "tiny"),
                ExpectedVersion::NoStream,
                vec![kiban_tests::event("{}")],
            )
            .await
            .unwrap();
    }
    let history = store.read_all(1, 1000).await.unwrap();
    store.close().await;
    history
}

/// Checks that `store` holds exactly `events` (from position 1) and that
/// their chain verifies to the last one's hash.
async fn assert_log_is(store: &kiban_store::Store, events: &[RecordedEvent]) {
    assert_eq!(store.read_all(1, 1000).await.unwrap(), events);
    assert_eq!(
        store.verify(1, None).await.unwrap(),
        kiban_store::VerifyReport::Verified {
            events: events.len() as u64,
            head_hash: events.last().unwrap().hash
        }
    );
}

/// Makes `db` as older code left it (its `migrations`, then the INSERTs
/// `rows` of the events `old`) and opens it with today's code, which
/// migrates it: every migration is applied, and the log is exactly `old`
/// and verifies.
async fn open_migrated(
    db: &TestDb,
    migrations: &[&str],
    rows: &str,
    old: &[RecordedEvent],
) -> (kiban_store::Store, Db) {
    apply_migrations(db, migrations).await;
    db.tamper(rows).await;
    let store = db.open().await;
    let read_db = Db::open(db.url()).await.unwrap();
    assert_eq!(applied_versions(&read_db).await, ALL_VERSIONS);
    assert_log_is(&store, old).await;
    (store, read_db)
}

/// Appends each of `events` again (same content) to `store`, which holds
/// the events before them: each lands at the position it was recorded at.
async fn append_again(store: &kiban_store::Store, events: &[RecordedEvent]) {
    for event in events {
        let result = store
            .append(&event.stream, ExpectedVersion::Any, vec![new_event(event)])
            .await
            .unwrap();
        assert_eq!(result.first_position, event.position);
    }
}

async fn a_store_written_before_compact_rows_migrates_and_still_verifies(db: &TestDb) {
    let history = domain_history(db.backend(), false).await;
    assert!(history.len() >= 4, "{} events", history.len());
    let (old, new) = history.split_at(history.len() / 2);

    // The database as the code before compact rows left it; today's code
    // migrates it (0009 on), reads the old rows as they were and verifies
    // their chain.
    let rows = rows_as_before_compact_rows(db.backend(), old);
    let (store, read_db) = open_migrated(db, BEFORE_COMPACT_MIGRATIONS, &rows, old).await;

    // New events continue the same chain, stored compact: the whole log
    // reads back exactly as the engine recorded it and verifies end to end.
    append_again(&store, new).await;
    let long = kiban_tests::event(&format!(
        r#"{{"institution":"2100015107","received_on":"2026-11-18","note":"{}"}}"#,
        "opinion received ".repeat(8)
    ));
    let long_payload = long.payload.clone();
    store
        .append(
            &kiban_tests::stream("compact", "x"),
            ExpectedVersion::Any,
            vec![long],
        )
        .await
        .unwrap();
    let all = store.read_all(1, 1000).await.unwrap();
    assert_eq!(all.len(), history.len() + 1);
    assert_eq!(&all[..old.len()], old);
    for (read, recorded) in all[old.len()..].iter().zip(new) {
        assert_eq!(
            (read.event_id, &read.payload),
            (recorded.event_id, &recorded.payload)
        );
    }
    assert_eq!(all.last().unwrap().payload, long_payload);
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        kiban_store::VerifyReport::Verified { events, .. } if events == all.len() as u64
    ));
    let compressed = match db.backend() {
        // A zstd frame starts with 0x28, which no JSON text does.
        Backend::Postgres => "SELECT count(*) FROM events WHERE get_byte(payload, 0) = 40",
        Backend::Sqlite => "SELECT count(*) FROM events WHERE typeof(payload) = 'blob'",
    };
    let compressed: i64 =
        both!(read_db.pool(), pool => sqlx::query_scalar(compressed).fetch_one(pool).await)
            .unwrap();
    assert!(compressed > 0, "new rows are stored compressed");
    read_db.close().await;
    store.close().await;
}

/// `recorded` as a new event again (same id, type, times and payload).
fn new_event(recorded: &RecordedEvent) -> NewEvent {
    NewEvent {
        event_id: recorded.event_id,
        event_type: recorded.event_type.clone(),
        schema_version: recorded.schema_version,
        occurred_at: recorded.occurred_at,
        actor: recorded.actor.clone(),
        correlation_id: recorded.correlation_id,
        causation_id: recorded.causation_id,
        payload: recorded.payload.clone(),
    }
}

async fn a_store_written_before_lean_rows_migrates_and_still_verifies(db: &TestDb) {
    let history = domain_history(db.backend(), true).await;
    assert!(history.len() >= 5, "{} events", history.len());
    let frames = history
        .iter()
        .filter(|e| frame_as_compact_rows(e.payload.as_str()).is_some())
        .count();
    assert!(
        frames > 0 && frames < history.len(),
        "both stored forms: {frames} frames of {}",
        history.len()
    );
    let (old, new) = history.split_at(history.len() - 2);

    // The database as the code of compact rows (migrations 0001-0009) left
    // it: every row with its `prev_hash`, payloads as frames or text.
    // Today's code migrates it (0010) and reads every old event back
    // exactly as recorded, the hash of the event before included, by
    // position, by stream and by id; the chain verifies.
    let rows = rows_as_before_lean_rows(db.backend(), old);
    let (store, read_db) = open_migrated(db, BEFORE_LEAN_MIGRATIONS, &rows, old).await;
    let mut streams: Vec<_> = old.iter().map(|e| e.stream.clone()).collect();
    streams.dedup();
    for name in &streams {
        let by_stream: Vec<RecordedEvent> =
            old.iter().filter(|e| &e.stream == name).cloned().collect();
        assert_eq!(store.read_stream(name, 1, 1000).await.unwrap(), by_stream);
    }
    let mut ranged = Vec::new();
    let mut range = store.read_range(2, old.len() as u64);
    while let Some(batch) = futures::StreamExt::next(&mut range).await {
        ranged.extend(batch.unwrap());
    }
    assert_eq!(ranged, old[1..]);
    // Re-sending an old event is recognised (the writer reads it by id)
    // and answered with the original.
    let first = &old[0];
    let again = store
        .append(&first.stream, ExpectedVersion::Any, vec![new_event(first)])
        .await
        .unwrap();
    assert_eq!(again.events, vec![first.clone()]);

    // The rows no longer store what can be recomputed or named once.
    let gone = match db.backend() {
        Backend::Postgres => {
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events' \
             AND column_name IN ('prev_hash', 'payload_z', 'event_type', 'actor')"
        }
        Backend::Sqlite => {
            "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'prev_hash'"
        }
    };
    let gone: i64 =
        both!(read_db.pool(), pool => sqlx::query_scalar(gone).fetch_one(pool).await).unwrap();
    assert_eq!(gone, 0);

    // New events continue the same chain; the whole log reads back and
    // verifies end to end.
    append_again(&store, new).await;
    let all = store.read_all(1, 1000).await.unwrap();
    assert_eq!(all.len(), history.len());
    assert_eq!(&all[..old.len()], old);
    for (read, recorded) in all[old.len()..].iter().zip(new) {
        assert_eq!(
            (read.event_id, &read.payload, &read.event_type, &read.actor),
            (
                recorded.event_id,
                &recorded.payload,
                &recorded.event_type,
                &recorded.actor
            )
        );
    }
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_log_is(&store, &all).await;
    read_db.close().await;
    store.close().await;
}
