//! `kiban-tests`: kiban's end-to-end suites and their harness.
//!
//! - `src/lib.rs` (this file): the harness. [`TestDb`] gives each test a fresh
//!   real database — a new PostgreSQL database `kiban_test_<random>` on the
//!   server named by [`DATABASE_URL_VAR`] (a `kiban_store::scratch`
//!   database, dropped afterwards), or a new SQLite
//!   file in a temporary directory — plus small builders of events.
//! - `src/bin/kiban-crash-appender.rs`: a child process for the crash-safety
//!   suite; it appends until it is killed.
//! - `tests/main.rs`: the one test binary; each suite is a module of it
//!   (`store_contract`, `crash_safety`, `bench_smoke`).
//!
//! Architecture invariants: suites run against real databases, never mocks;
//! PostgreSQL suites fail (never skip) when no server is configured; waits are
//! bounded only to turn a hang into a failure, and no assertion depends on
//! timing. The only SQL outside `kiban-store` is here, and only to tamper with
//! stored rows the way an attacker would.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use kiban_events::{Actor, EventId, EventType, NewEvent, Payload, StreamName};
use kiban_store::scratch::{Scratch, ScratchBackend};
use kiban_store::{Store, StoreOptions};
use sqlx::Connection;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server of the suites, as a
/// URL of a database the harness can connect to with the right to create
/// databases: `postgres://postgres@127.0.0.1:55432/postgres`.
pub const DATABASE_URL_VAR: &str = "KIBAN_TEST_DATABASE_URL";

/// The longest any single wait in a test may take before the test fails. Not
/// a timing assertion: it only turns a hang (a lost wake-up, a deadlock) into
/// a failure with a message.
pub const WAIT_MAX: Duration = Duration::from_secs(120);

/// The backends of the contract suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh database for one test. Dropping it drops the PostgreSQL database
/// (or deletes the SQLite directory).
///
/// A database made by [`TestDb::pair`] is a PostgreSQL one with a
/// nats-server of its own beside it: the API suites' harness then serves the
/// API from an API-role process's system and writes through an engine-role
/// one over that server (`--role api` + `--role engine`, docs/deploy.md)
/// instead of one `--role all` system.
#[derive(Debug)]
pub struct TestDb {
    backend: Backend,
    url: String,
    /// The database to drop (PostgreSQL only).
    postgres: Option<Scratch>,
    _dir: Option<tempfile::TempDir>,
    /// The pair's NATS server (pair mode only), killed on drop.
    nats: Option<kiban_bus::testing::NatsServer>,
}

impl TestDb {
    /// Creates a fresh, empty database of `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => Self::postgres().await,
            Backend::Sqlite => Self::sqlite(),
        }
    }

    /// A fresh PostgreSQL database and a nats-server of its own with
    /// JetStream, for a scenario run against an API process + engine
    /// process pair.
    pub async fn pair() -> TestDb {
        let mut db = Self::postgres().await;
        let nats = kiban_bus::testing::NatsServer::start()
            .await
            .unwrap_or_else(|e| {
                panic!("the pair mode needs nats-server (run `scripts/test`): {e}")
            });
        db.nats = Some(nats);
        db
    }

    /// The NATS server of a [`TestDb::pair`] database (`None` otherwise):
    /// whether the harness starts a pair, and where it talks.
    pub fn pair_nats_url(&self) -> Option<String> {
        self.nats.as_ref().map(kiban_bus::testing::NatsServer::url)
    }

    async fn postgres() -> TestDb {
        let server = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{DATABASE_URL_VAR} is not set: the PostgreSQL suites need a server. Run \
                 `scripts/test`, which starts one, or set {DATABASE_URL_VAR} to e.g. \
                 postgres://postgres@127.0.0.1:55432/postgres"
            )
        });
        let backend = ScratchBackend::Postgres {
            server_url: server.clone(),
        };
        let scratch = Scratch::create(&backend, "kiban_test")
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create a database on {DATABASE_URL_VAR}={server}: {e}")
            });
        TestDb {
            backend: Backend::Postgres,
            url: scratch.url().to_owned(),
            postgres: Some(scratch),
            _dir: None,
            nats: None,
        }
    }

    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("kiban.db").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            postgres: None,
            _dir: Some(dir),
            nats: None,
        }
    }

    /// The backend of this database.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL to give [`Store::open`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a store on this database with the default options.
    pub async fn open(&self) -> Store {
        self.open_with(StoreOptions::default()).await
    }

    /// Opens a store on this database.
    pub async fn open_with(&self, options: StoreOptions) -> Store {
        Store::open(&self.url, options)
            .await
            .unwrap_or_else(|e| panic!("open the store at {}: {e}", self.url))
    }

    /// Runs raw SQL (several statements allowed) on the database, outside the
    /// store: how the suites play an attacker editing rows.
    pub async fn tamper(&self, sql: &str) {
        match self.backend {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
                let _ = conn.close().await;
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
                let _ = conn.close().await;
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Failing to drop only leaves an empty database behind.
        if let Some(scratch) = self.postgres.take() {
            scratch.remove_blocking();
        }
    }
}

/// Awaits `future`, failing the test if it takes longer than [`WAIT_MAX`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT_MAX, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT_MAX:?}"))
}

/// A stream name `kind/id`.
pub fn stream(kind: &str, id: &str) -> StreamName {
    StreamName::new(kind, id).expect("a valid stream name")
}

/// A new event with a fresh id and the given JSON object as payload.
pub fn event(payload: &str) -> NewEvent {
    event_with_id(
        EventId::from_uuid(Uuid::now_v7()).expect("v7 ids are not nil"),
        payload,
    )
}

/// A new event with the given id and payload.
pub fn event_with_id(event_id: EventId, payload: &str) -> NewEvent {
    NewEvent {
        event_id,
        event_type: EventType::parse("test.happened").expect("valid"),
        schema_version: 1,
        occurred_at: Utc::now(),
        actor: Actor::system("tests").expect("valid"),
        correlation_id: Uuid::from_u128(1),
        causation_id: None,
        payload: Payload::from_json(payload).expect("a JSON object"),
    }
}

/// `count` new events whose payloads say which one they are.
pub fn events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| event(&format!(r#"{{"n":{i}}}"#)))
        .collect()
}

/// What the crash-safety suite and its child process agree on: which events
/// an append of the child carries (so the suite can regenerate them and
/// compare content) and how the child reports an acknowledged append.
pub mod crash {
    use chrono::{TimeZone, Utc};
    use kiban_events::{Actor, EventId, EventType, NewEvent, Payload, StreamName};
    use uuid::Uuid;

    /// The namespace of the child's deterministic event ids.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6b69_6261_6e2d_6372_6173_6800_0000_0001);

    /// An acknowledged append, as the child prints it: `ack RUN TASK SEQ FIRST LAST`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ack {
        pub run: u32,
        pub task: u32,
        pub seq: u64,
        pub first_position: u64,
        pub last_position: u64,
    }

    impl Ack {
        /// The line the child prints.
        pub fn line(&self) -> String {
            format!(
                "ack {} {} {} {} {}",
                self.run, self.task, self.seq, self.first_position, self.last_position
            )
        }

        /// Parses a line printed by the child.
        pub fn parse(line: &str) -> Option<Ack> {
            let mut words = line.strip_prefix("ack ")?.split(' ');
            let mut next = || words.next()?.parse::<u64>().ok();
            Some(Ack {
                run: u32::try_from(next()?).ok()?,
                task: u32::try_from(next()?).ok()?,
                seq: next()?,
                first_position: next()?,
                last_position: next()?,
            })
        }
    }

    /// The stream task `task` of run `run` appends to.
    pub fn stream(run: u32, task: u32) -> StreamName {
        StreamName::new("crash", &format!("r{run}-t{task}")).expect("valid")
    }

    /// How many events append `seq` of a task carries: 1 to 4, so that
    /// multi-event appends can be caught half-written if atomicity breaks.
    pub fn events_per_append(seq: u64) -> usize {
        1 + (seq % 4) as usize
    }

    /// The events of append `seq` of task `task` in run `run`: fully
    /// determined by those three numbers.
    pub fn append_events(run: u32, task: u32, seq: u64) -> Vec<NewEvent> {
        let count = events_per_append(seq);
        (0..count)
            .map(|i| {
                let name = format!("{run}/{task}/{seq}/{i}");
                let payload = format!(
                    r#"{{"run":{run},"task":{task},"seq":{seq},"i":{i},"count":{count},"pad":"{}"}}"#,
                    "p".repeat(200)
                );
                NewEvent {
                    event_id: EventId::deterministic(&NAMESPACE, name.as_bytes()),
                    event_type: EventType::parse("crash.appended").expect("valid"),
                    schema_version: 1,
                    occurred_at: Utc
                        .timestamp_micros(1_775_000_000_000_000 + seq as i64)
                        .single()
                        .expect("valid"),
                    actor: Actor::system("crash-appender").expect("valid"),
                    correlation_id: Uuid::from_u128(u128::from(run) << 32 | u128::from(task)),
                    causation_id: None,
                    payload: Payload::from_json(&payload).expect("an object"),
                }
            })
            .collect()
    }
}

/// Generates, for each scenario `async fn name(db: &TestDb)` of the calling
/// module, a `postgres::name` and a `sqlite::name` test that run it on a
/// fresh database of each backend: the same scenarios hold both backends to
/// the same behaviour.
///
/// Scenarios that exercise the API are listed after `and_pair:` (all of
/// them: `on_both_backends!(and_pair: a, b)`; some: `on_both_backends!(a, b;
/// and_pair: c)`); each also gets a `pair::name` test on a
/// [`TestDb::pair`] database, where the harness serves the API from an
/// API-role system and writes through an engine-role one over NATS.
#[macro_export]
macro_rules! on_both_backends {
    (and_pair: $($paired:ident),* $(,)?) => {
        $crate::on_both_backends!(; and_pair: $($paired),*);
    };
    ($($scenario:ident),* $(,)? ; and_pair: $($paired:ident),* $(,)?) => {
        $crate::on_both_backends!($($scenario,)* $($paired),*);
        mod pair {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $paired() {
                    let db = $crate::TestDb::pair().await;
                    super::$paired(&db).await;
                }
            )*
        }
    };
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let db = $crate::TestDb::new($crate::Backend::Postgres).await;
                    super::$scenario(&db).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let db = $crate::TestDb::new($crate::Backend::Sqlite).await;
                    super::$scenario(&db).await;
                }
            )*
        }
    };
}
