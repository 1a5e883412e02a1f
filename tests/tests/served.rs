//! [`Served`]: the API of a test on a loopback port, started through
//! `kiban_system::SystemBuilder` like `kiban serve`: one `--role all` system
//! on the test's database, or — on a [`TestDb::pair`] database — an
//! engine-role system (the writer, on the store the test seeded) and an
//! API-role system that serves HTTPS, decides on state it reads from
//! PostgreSQL, forwards every append (commands, access-log records) to the
//! writer over NATS and follows the read models (docs/deploy.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use kiban_api::{AppState, Clock, ConnectionLimits, TlsFiles};
use kiban_engine::Engine;
use kiban_projections::Projections;
use kiban_store::Store;
use kiban_system::{ApiOptions, BusOptions, Role, System, SystemBuilder, Tls};
use kiban_tests::{TestDb, bounded};

use crate::projections::script::day;

/// The API of a test on a loopback port: the store, the engine, the
/// projections caught up with the seeded history, and "now" from a clock
/// the test sets (day 30 to begin with). The API and UI harnesses both run
/// on it.
///
/// In pair mode `store` and `engine` are the writer's (the ones the test
/// seeded, now run by the engine-role system), and `projections` are the
/// API process's (what its answers read), so that a test waiting for a
/// position there reads its effect through the API.
pub(crate) struct Served {
    pub(crate) store: Store,
    pub(crate) engine: Arc<Engine<Store>>,
    pub(crate) projections: Projections,
    pub(crate) base: String,
    systems: Systems,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Serves, with `tls`, the state `configure` adjusts, over `store` and
    /// `engine` (which hold the seeded history), and waits until the
    /// projections have applied `last`.
    pub(crate) async fn start(
        db: &TestDb,
        store: Store,
        engine: Arc<Engine<Store>>,
        tls: &TlsFiles,
        last: u64,
        configure: impl FnOnce(AppState) -> AppState + Send + 'static,
    ) -> Served {
        let limits = ConnectionLimits::default();
        Served::start_limited(db, store, engine, tls, last, limits, configure).await
    }

    /// [`Served::start`] with other connection limits than the defaults.
    pub(crate) async fn start_limited(
        db: &TestDb,
        store: Store,
        engine: Arc<Engine<Store>>,
        tls: &TlsFiles,
        last: u64,
        limits: ConnectionLimits,
        configure: impl FnOnce(AppState) -> AppState + Send + 'static,
    ) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(day(30).timestamp_micros()));
        let reading = clock.clone();
        let now: Clock = Arc::new(move || {
            Utc.timestamp_micros(reading.load(Ordering::SeqCst))
                .unwrap()
        });
        let api = ApiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Tls::Files(tls.clone()),
            card_trust: None,
        };
        let systems = Systems::start(
            db,
            // The suites run the timers themselves, at the moments they set.
            |role| {
                SystemBuilder::new(db.url(), dir.path())
                    .role(role)
                    .timers(None)
                    .clock(now.clone())
            },
            |writer| writer.open_store(store.clone(), engine.clone()),
            |server| {
                server
                    .api(Some(api))
                    .connection_limits(limits)
                    .configure_api(configure)
            },
        )
        .await;
        let projections = systems.system.projections.clone();
        bounded("catch-up", projections.wait_for(last))
            .await
            .unwrap();
        let port = systems.system.api().unwrap().addr.port();
        Served {
            store,
            engine,
            projections,
            base: format!("https://127.0.0.1:{port}"),
            systems,
            clock,
            _dir: dir,
        }
    }

    pub(crate) fn set_clock(&self, now: DateTime<Utc>) {
        self.clock.store(now.timestamp_micros(), Ordering::SeqCst);
    }

    pub(crate) async fn stop(self) {
        self.systems.shutdown().await;
    }
}

/// The system as `kiban serve` starts it in development mode (HTTPS with
/// development certificates under `dir`, timers on), in either mode of
/// [`Systems`]. In pair mode the API process registers the sample
/// terminals (appends) once the writer runs, and the processes share the
/// development certificates but not their data directories.
pub(crate) struct DevServed {
    systems: Systems,
}

impl DevServed {
    pub(crate) async fn start(db: &TestDb, dir: &std::path::Path) -> DevServed {
        let api = ApiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Tls::Development,
            card_trust: None,
        };
        let systems = Systems::start(
            db,
            |role| match role {
                Role::Engine => SystemBuilder::new(db.url(), dir.join("engine")).role(role),
                _ => SystemBuilder::new(db.url(), dir).role(role),
            },
            |writer| writer,
            |server| server.api(Some(api)),
        )
        .await;
        DevServed { systems }
    }

    pub(crate) async fn shutdown(self) {
        self.systems.shutdown().await;
    }
}

impl std::ops::Deref for DevServed {
    type Target = System;

    fn deref(&self) -> &System {
        &self.systems.system
    }
}

/// What a harness runs: one `--role all` system, or on a [`TestDb::pair`]
/// database an engine-role system (the writer) and an API-role system over
/// the database's nats-server.
struct Systems {
    /// The system that serves the API (`--role all`, or `--role api`).
    system: System,
    /// The engine-role system of the pair (pair mode only).
    writer: Option<System>,
}

impl Systems {
    /// `builder` makes each process's builder for its role; `writes` adds
    /// what the writing process needs (the one process, or the engine),
    /// `serves` what the serving one needs (the one process, or the API).
    async fn start(
        db: &TestDb,
        builder: impl Fn(Role) -> SystemBuilder,
        writes: impl FnOnce(SystemBuilder) -> SystemBuilder,
        serves: impl FnOnce(SystemBuilder) -> SystemBuilder,
    ) -> Systems {
        let Some(url) = db.pair_nats_url() else {
            let system = serves(writes(builder(Role::All)))
                .start()
                .await
                .expect("the system starts");
            return Systems {
                system,
                writer: None,
            };
        };
        let bus = BusOptions::Nats {
            url,
            streams: kiban_bus::testing::stream_options(1),
        };
        let writer = writes(builder(Role::Engine).bus(bus.clone()))
            .start()
            .await
            .expect("the engine-role system starts");
        let system = serves(builder(Role::Api).bus(bus))
            .start()
            .await
            .expect("the API-role system starts");
        Systems {
            system,
            writer: Some(writer),
        }
    }

    /// Stops the API's system, then the writer's.
    async fn shutdown(self) {
        bounded("system shutdown", self.system.shutdown()).await;
        if let Some(writer) = self.writer {
            bounded("writer shutdown", writer.shutdown()).await;
        }
    }
}
