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
    /// The system that serves the API (`--role all`, or `--role api`).
    system: Option<System>,
    /// The engine-role system of the pair (pair mode only).
    writer: Option<System>,
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
        let builder = |role: Role| {
            // The suites run the timers themselves, at the moments they set.
            SystemBuilder::new(db.url(), dir.path())
                .role(role)
                .timers(None)
                .clock(now.clone())
        };
        let api = ApiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Tls::Files(tls.clone()),
            card_trust: None,
        };
        let (system, writer) = match db.pair_nats_url() {
            None => {
                let system = builder(Role::All)
                    .open_store(store.clone(), engine.clone())
                    .api(Some(api))
                    .connection_limits(limits)
                    .configure_api(configure)
                    .start()
                    .await
                    .expect("the system starts");
                (system, None)
            }
            Some(url) => {
                let bus = BusOptions::Nats {
                    url,
                    streams: kiban_bus::testing::stream_options(1),
                };
                let writer = builder(Role::Engine)
                    .bus(bus.clone())
                    .open_store(store.clone(), engine.clone())
                    .start()
                    .await
                    .expect("the engine-role system starts");
                let system = builder(Role::Api)
                    .bus(bus)
                    .api(Some(api))
                    .connection_limits(limits)
                    .configure_api(configure)
                    .start()
                    .await
                    .expect("the API-role system starts");
                (system, Some(writer))
            }
        };
        let projections = system.projections.clone();
        bounded("catch-up", projections.wait_for(last))
            .await
            .unwrap();
        let base = format!("https://127.0.0.1:{}", system.api().unwrap().addr.port());
        Served {
            store,
            engine,
            projections,
            base,
            system: Some(system),
            writer,
            clock,
            _dir: dir,
        }
    }

    pub(crate) fn set_clock(&self, now: DateTime<Utc>) {
        self.clock.store(now.timestamp_micros(), Ordering::SeqCst);
    }

    /// Stops the API's system, then the writer's (pair mode).
    pub(crate) async fn stop(mut self) {
        for system in [self.system.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            bounded("system shutdown", system.shutdown()).await;
        }
    }
}

/// The system as `kiban serve` starts it in development mode (HTTPS with
/// development certificates under `dir`, timers on): `--role all` with the
/// in-process bus, or on a [`TestDb::pair`] database an engine-role process
/// and then an API-role process over its NATS server (docs/deploy.md: the
/// API process registers the sample terminals, which are appends, once the
/// writer runs).
pub(crate) struct DevServed {
    system: System,
    writer: Option<System>,
}

impl DevServed {
    pub(crate) async fn start(db: &TestDb, dir: &std::path::Path) -> DevServed {
        let api = ApiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Tls::Development,
            card_trust: None,
        };
        let Some(url) = db.pair_nats_url() else {
            let system = SystemBuilder::new(db.url(), dir)
                .api(Some(api))
                .start()
                .await
                .expect("the system starts");
            return DevServed {
                system,
                writer: None,
            };
        };
        let bus = BusOptions::Nats {
            url,
            streams: kiban_bus::testing::stream_options(1),
        };
        // Each process its own data directory, except the certificates,
        // which the API processes of a development deployment share.
        let writer = SystemBuilder::new(db.url(), dir.join("engine"))
            .role(Role::Engine)
            .bus(bus.clone())
            .start()
            .await
            .expect("the engine-role system starts");
        let system = SystemBuilder::new(db.url(), dir)
            .role(Role::Api)
            .bus(bus)
            .api(Some(api))
            .start()
            .await
            .expect("the API-role system starts");
        DevServed {
            system,
            writer: Some(writer),
        }
    }

    /// Stops the API's system, then the writer's (pair mode).
    pub(crate) async fn shutdown(self) {
        bounded("system shutdown", self.system.shutdown()).await;
        if let Some(writer) = self.writer {
            bounded("writer shutdown", writer.shutdown()).await;
        }
    }
}

impl std::ops::Deref for DevServed {
    type Target = System;

    fn deref(&self) -> &System {
        &self.system
    }
}
