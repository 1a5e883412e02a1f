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

/// The store's migrations before compact rows (`0009`): what the code
/// before issue 18 item 3 ran.
const BEFORE_COMPACT_MIGRATIONS: &[&str] = &[
    "0001_events.sql",
    "0002_audit.sql",
    "0003_blobs.sql",
    "0004_projections.sql",
    "0005_ui_staff.sql",
    "0006_security.sql",
    "0007_ui_sessions_idle.sql",
    "0008_person_sessions.sql",
];

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
    assert_eq!(
        applied_versions(&read_db).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    );

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
    assert_eq!(
        applied_versions(&again).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    );
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
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12],
        "the store found nothing left to migrate"
    );
    projections.stop().await;
    store.close().await;
}

/// The rows of `events` exactly as the code before compact rows inserted
/// them: every payload as its text, ids, times and hashes in the backend's
/// column types.
fn rows_as_before_compact_rows(backend: Backend, events: &[RecordedEvent]) -> String {
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
        sql.push_str(&format!(
            "INSERT INTO events (position, stream, version, event_id, event_type, \
             schema_version, occurred_at, recorded_at, actor, correlation_id, causation_id, \
             payload, prev_hash, hash) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
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
            text(e.payload.as_str()),
            bytes(&e.prev_hash.0),
            bytes(&e.hash.0),
        ));
    }
    sql
}

/// The domain's events (an insurer's onboarding), recorded by the engine
/// on a database of its own.
async fn domain_history(backend: Backend) -> Vec<RecordedEvent> {
    let source = TestDb::new(backend).await;
    let store = source.open().await;
    let engine = Arc::new(Engine::new(store.clone()));
    onboard_insurer(&engine, INSURER, true).await;
    let history = store.read_all(1, 1000).await.unwrap();
    store.close().await;
    history
}

async fn a_store_written_before_compact_rows_migrates_and_still_verifies(db: &TestDb) {
    let history = domain_history(db.backend()).await;
    assert!(history.len() >= 4, "{} events", history.len());
    let (old, new) = history.split_at(history.len() / 2);

    // The database as the code before compact rows left it.
    apply_migrations(db, BEFORE_COMPACT_MIGRATIONS).await;
    db.tamper(&rows_as_before_compact_rows(db.backend(), old))
        .await;

    // Today's code migrates it (0009), reads the old rows as they were and
    // verifies their chain.
    let store = db.open().await;
    let read_db = Db::open(db.url()).await.unwrap();
    assert_eq!(
        applied_versions(&read_db).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    );
    assert_eq!(store.read_all(1, 1000).await.unwrap(), old);
    assert!(matches!(
        store.verify(1, None).await.unwrap(),
        kiban_store::VerifyReport::Verified { events, head_hash }
            if events == old.len() as u64 && head_hash == old.last().unwrap().hash
    ));

    // New events continue the same chain, stored compact: the whole log
    // reads back exactly as the engine recorded it and verifies end to end.
    for event in new {
        let result = store
            .append(&event.stream, ExpectedVersion::Any, vec![new_event(event)])
            .await
            .unwrap();
        assert_eq!(result.first_position, event.position);
    }
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
        Backend::Postgres => "SELECT count(*) FROM events WHERE payload_z IS NOT NULL",
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
