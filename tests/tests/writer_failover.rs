//! The writer role between stores on one database (issue 20 item 1): a
//! standby store takes the writer lock on its own once it is free and says
//! so (`Store::writer_status`), and a writer whose lock's connection is
//! killed gives the role up at once (fencing), on both backends where the
//! backend allows it.

use std::time::Duration;

use kiban_events::ExpectedVersion;
use kiban_store::{StoreOptions, VerifyReport, WriterMode};
use kiban_tests::{Backend, TestDb, bounded, events, stream};

fn standby() -> StoreOptions {
    StoreOptions {
        writer: WriterMode::Standby {
            poll: Duration::from_millis(50),
        },
        ..StoreOptions::default()
    }
}

async fn a_standby_takes_over_when_the_writer_closes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = db.open_with(standby()).await;
    let second = db.open_with(standby()).await;
    assert!(*first.writer_status().borrow(), "the first store writes");
    assert!(!*second.writer_status().borrow(), "the second stands by");
    let s = stream("test", "failover");
    first
        .append(&s, ExpectedVersion::NoStream, events(3))
        .await
        .unwrap();
    // A standby refuses appends rather than writing beside the writer.
    let refused = second
        .append(&s, ExpectedVersion::Any, events(1))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kiban_store::Error::NotWriter(_)),
        "{refused:?}"
    );

    first.close().await;
    let mut status = second.writer_status();
    bounded("the standby to take the lock", status.wait_for(|w| *w))
        .await
        .unwrap();
    let result = second
        .append(&s, ExpectedVersion::Exact(3), events(2))
        .await
        .unwrap();
    assert_eq!((result.first_position, result.last_position), (4, 5));
    assert!(matches!(
        second.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events: 5, .. }
    ));
    second.close().await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_writer_closes_postgres() {
    a_standby_takes_over_when_the_writer_closes(Backend::Postgres).await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_writer_closes_sqlite() {
    a_standby_takes_over_when_the_writer_closes(Backend::Sqlite).await;
}

/// PostgreSQL only: the session holding the lock is ended from outside (as
/// a database fail-over or an operator would); the idle writer notices
/// within its poll, says it is no longer the writer, and the standby takes
/// over. (SQLite's lock is a file lock no other process can take away.)
#[tokio::test]
async fn a_writer_whose_lock_connection_is_killed_gives_up_the_role_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let first = db.open_with(standby()).await;
    let second = db.open_with(standby()).await;
    let s = stream("test", "fencing");
    first
        .append(&s, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    assert!(*first.writer_status().borrow());
    db.tamper(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await;
    let mut first_status = first.writer_status();
    bounded("the old writer to give up", first_status.wait_for(|w| !*w))
        .await
        .unwrap();
    // As `kiban serve --role engine` does on this signal: stop. (Left
    // open, the store would contend for the lock again, as a standby.)
    first.close().await;
    let mut second_status = second.writer_status();
    bounded("the standby to take over", second_status.wait_for(|w| *w))
        .await
        .unwrap();
    second
        .append(&s, ExpectedVersion::Exact(2), events(1))
        .await
        .unwrap();
    assert!(matches!(
        second.verify(1, None).await.unwrap(),
        VerifyReport::Verified { events: 3, .. }
    ));
    second.close().await;
}
