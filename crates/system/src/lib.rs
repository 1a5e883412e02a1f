//! `kiban-system`: the whole kiban system as a library, so that `kiban
//! serve`, the lab (`kiban demo`, `kiban simulate`, the benchmarks) and the
//! test suites start it one way.
//!
//! [`SystemBuilder`] takes what varies — the store URL, the bus (in-process
//! or NATS JetStream with its stream options), the HTTPS API on or off and
//! its certificates (files or development PKI), the timers on or off and
//! their interval, the clock (real or simulated), the office routing's
//! entitlements (by default [`ReadModelEntitlements`]), checkpoint signing,
//! the card-consent trust, the API's connection limits and a last
//! adjustment of its state, and an already-open store with its engine (the
//! test suites seed one first) — and [`SystemBuilder::start`] opens the
//! store, starts the projections, the API, ingest (and with NATS the outbox
//! relay), the office routing and the timers. The [`System`] it returns
//! reports each part's [`PartHealth`] and stops everything with
//! [`System::shutdown`].
//!
//! # Layout
//!
//! - this file: the builder, the running [`System`], and the supervision of
//!   background parts;
//! - [`supervise`]: restarts a failed part with jittered exponential
//!   backoff (`backon`), bounded, and records its health;
//! - [`config`]: the options and the files they come from (store URL, card
//!   trust, signing key);
//! - [`dev_pki`]: development certificates and their terminals;
//! - [`redact`]: URLs fit for logs;
//! - [`role`]: [`Role`]: one process of everything (`all`, the default), or
//!   a scaled-out deployment's `engine` (the writer and its standbys) and
//!   `api` processes (docs/deploy.md);
//! - [`entitlements`]: which offices may see an event, from the read models;
//! - [`replay`], [`audit`], [`admin`] and [`operator`]: the work behind
//!   `kiban replay`, `kiban audit checkpoint`, `kiban admin` (forgetting a
//!   person, staff accounts) and `kiban append` (events as an operator
//!   writes them).
//!
//! # Architecture invariants
//!
//! - Nothing else in kiban wires the parts together: the binary and the lab
//!   start the system here.
//! - Every background part runs in a task the [`System`] owns, logs with
//!   `tracing`, and stops at a safe point on [`System::shutdown`].
//! - This crate acts as an application: it reports errors with `anyhow`.
//!   It knows neither NATS nor HTTP itself (those stay in `kiban-bus` and
//!   `kiban-api`).

pub mod admin;
pub mod audit;
pub mod config;
pub mod dev_pki;
pub mod entitlements;
pub mod operator;
pub mod redact;
pub mod replay;
pub mod role;
pub mod supervise;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kiban_api::{AppState, Clock, ConnectionLimits, DevPki, Principal, ServeConfig, TlsFiles};
use kiban_bus::client::Bus;
use kiban_bus::engine::EngineHandler;
use kiban_bus::local::LocalBus;
use kiban_bus::relay::{Checkpoints, FileCheckpoints, SharedCheckpoints};
use kiban_bus::routing::{Entitlements, OfficeSink, run_routing};
use kiban_engine::{Engine, Timers};
use kiban_events::Position;
use kiban_projections::{Db, Projections, models};
use kiban_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{ApiOptions, BusOptions, CheckpointSigning, Tls, open_store};
pub use entitlements::ReadModelEntitlements;
pub use redact::redact_url;
pub use role::Role;
pub use supervise::{Health, PartHealth};

/// The system clock as a [`Clock`].
pub fn real_clock() -> Clock {
    Arc::new(chrono::Utc::now)
}

/// How the office routing's entitlements are made once the projections run.
type EntitlementsFactory<E> = Box<dyn FnOnce(&Projections) -> E + Send>;

/// What adjusts the API's state before it serves.
type StateHook = Box<dyn FnOnce(AppState) -> AppState + Send>;

/// How the API serves, beyond its [`ApiOptions`]: its connection limits and
/// a last adjustment of its state (the test suites set their policies,
/// trust and limits there).
struct Serving {
    limits: ConnectionLimits,
    configure: Option<StateHook>,
}

/// An already-open store and the engine over it, which the builder uses
/// instead of opening its own (a test suite seeds them first).
type OpenStore = (Store, Arc<Engine<Store>>);

/// What to start; see the crate documentation.
pub struct SystemBuilder<E = ReadModelEntitlements> {
    database_url: String,
    data_dir: std::path::PathBuf,
    bus: BusOptions,
    api: Option<ApiOptions>,
    timers: Option<Duration>,
    clock: Clock,
    entitlements: EntitlementsFactory<E>,
    checkpoints: Option<CheckpointSigning>,
    ingest_clock: Option<Clock>,
    routing_checkpoints: Option<std::path::PathBuf>,
    person_keys: bool,
    role: Role,
    trusted_proxies: kiban_api::TrustedProxies,
    serving: Serving,
    open: Option<OpenStore>,
}

impl SystemBuilder {
    /// The store at `database_url`, the in-process bus, no API, timers at
    /// the engine's tick interval, the system clock, read-model
    /// entitlements; development certificates and routing checkpoints live
    /// under `data_dir`.
    pub fn new(database_url: impl Into<String>, data_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            database_url: database_url.into(),
            data_dir: data_dir.into(),
            bus: BusOptions::InProcess,
            api: None,
            timers: Some(Duration::from_millis(kiban_engine::TICK_INTERVAL_MS)),
            clock: real_clock(),
            entitlements: Box::new(|projections| ReadModelEntitlements::new(projections.clone())),
            checkpoints: None,
            ingest_clock: None,
            routing_checkpoints: None,
            person_keys: true,
            role: Role::All,
            trusted_proxies: kiban_api::TrustedProxies::default(),
            serving: Serving {
                limits: ConnectionLimits::default(),
                configure: None,
            },
            open: None,
        }
    }
}

impl<E> SystemBuilder<E> {
    /// The bus to ingest from and route office updates to.
    pub fn bus(mut self, bus: BusOptions) -> Self {
        self.bus = bus;
        self
    }

    /// Serves the HTTPS API (`None`: no API).
    pub fn api(mut self, api: Option<ApiOptions>) -> Self {
        self.api = api;
        self
    }

    /// The load balancers whose connections to the API begin with a PROXY
    /// protocol v2 header (`kiban serve --proxy-protocol-from`).
    pub fn proxy_protocol_from(mut self, proxies: kiban_api::TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Runs the timers every `interval` (`None`: no timers).
    pub fn timers(mut self, interval: Option<Duration>) -> Self {
        self.timers = interval;
        self
    }

    /// "Now" for the API and the timers.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// "Now" for the ingest handler (the system clock unless given): a
    /// simulation checks its municipalities' facts as of its own horizon.
    pub fn ingest_clock(mut self, clock: Clock) -> Self {
        self.ingest_clock = Some(clock);
        self
    }

    /// Where the office routing keeps its checkpoints, on either bus, so
    /// that a resumed run routes on from where it stopped. Without it: in
    /// JetStream (`KIBAN_CHECKPOINTS`, a stream
    /// stream keeping one message per checkpoint, shared by every engine of a deployment, so that a standby that takes over
    /// routes on where the old writer stopped; a checkpoint file under
    /// `<data dir>/checkpoints` from before the bucket is read once), in
    /// memory from the head with the in-process bus (nothing is kept for its
    /// offline subscribers).
    pub fn routing_checkpoints(mut self, directory: impl Into<std::path::PathBuf>) -> Self {
        self.routing_checkpoints = Some(directory.into());
        self
    }

    /// Which parts this process runs ([`Role`]; `All` by default).
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Whether the engine seals personal fields with per-person keys
    /// (crypto-shredding; on by default).
    pub fn person_keys(mut self, on: bool) -> Self {
        self.person_keys = on;
        self
    }

    /// The API's connection limits and timeouts (the defaults unless given).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.serving.limits = limits;
        self
    }

    /// Adjusts the API's state last, before it serves: the test suites set
    /// a subsidy policy, card trust or shorter limits this way, on any role
    /// that serves the API.
    pub fn configure_api(
        mut self,
        configure: impl FnOnce(AppState) -> AppState + Send + 'static,
    ) -> Self {
        self.serving.configure = Some(Box::new(configure));
        self
    }

    /// Runs on an already-open store and the engine over it instead of
    /// opening the store at the URL (whose database the projections still
    /// use): a test suite seeds a history first. Roles `all` and `engine`;
    /// with `engine` the store must be able to take the writer lock, and
    /// `person_keys` does not apply (the engine is as given). An API process
    /// opens its own store, which forwards its appends.
    pub fn open_store(mut self, store: Store, engine: Arc<Engine<Store>>) -> Self {
        self.open = Some((store, engine));
        self
    }

    /// Signs checkpoints while the system runs.
    pub fn checkpoint_signing(mut self, signing: Option<CheckpointSigning>) -> Self {
        self.checkpoints = signing;
        self
    }

    /// Other entitlements for the office routing, made from the running
    /// projections (the simulation counts what is routed, for example).
    pub fn entitlements<F, E2>(self, make: F) -> SystemBuilder<E2>
    where
        F: FnOnce(&Projections) -> E2 + Send + 'static,
    {
        SystemBuilder {
            database_url: self.database_url,
            data_dir: self.data_dir,
            bus: self.bus,
            api: self.api,
            timers: self.timers,
            clock: self.clock,
            entitlements: Box::new(make),
            checkpoints: self.checkpoints,
            ingest_clock: self.ingest_clock,
            routing_checkpoints: self.routing_checkpoints,
            person_keys: self.person_keys,
            role: self.role,
            trusted_proxies: self.trusted_proxies,
            serving: self.serving,
            open: self.open,
        }
    }
}

impl<E: Entitlements + Send + Sync + 'static> SystemBuilder<E> {
    /// Starts everything; returns once the API listens and the bus is
    /// consumed.
    pub async fn start(self) -> anyhow::Result<System> {
        match self.role {
            Role::All => self.start_all().await,
            Role::Engine => role::start_engine(self).await,
            Role::Api => role::start_api(self).await,
        }
    }

    /// Everything in this process (`--role all`).
    async fn start_all(mut self) -> anyhow::Result<System> {
        let mut parts = match self.open.take() {
            Some((store, engine)) => Parts::with_engine(store, engine),
            None => Parts::new(&open_store(&self.database_url).await?, self.person_keys),
        };
        let store = parts.store.clone();
        parts.trusted_proxies = self.trusted_proxies.clone();
        let read_db = open_read_db(&self.database_url).await?;
        let projections = Projections::start(read_db, store.clone(), models::all())
            .await
            .context("cannot start the projections")?;
        if let Some(signing) = self.checkpoints {
            tracing::info!(
                every = signing.every,
                public_key = %signing.key.public_key_hex(),
                "signing a checkpoint every {} events",
                signing.every
            );
            store.spawn_checkpointer(signing.key, signing.every, signing.poll);
        }
        let api = match &self.api {
            Some(api) => Some(
                parts
                    .start_api(
                        api,
                        self.serving,
                        &self.data_dir,
                        &projections,
                        &self.clock,
                        None,
                    )
                    .await?,
            ),
            None => None,
        };
        let routing = Routing {
            entitlements: (self.entitlements)(&projections),
            checkpoints: self.routing_checkpoints,
            data_dir: self.data_dir,
        };
        let bus = parts
            .start_bus(&self.bus, self.ingest_clock, routing)
            .await?;
        if let Some(interval) = self.timers {
            parts.start_timers(self.clock.clone(), interval);
        }
        parts.start_blob_sweep();
        Ok(parts.into_system(projections, bus, api))
    }
}

/// The running API.
pub struct Api {
    /// Its bound address.
    pub addr: SocketAddr,
    /// The certificates it serves with.
    pub tls: TlsFiles,
    /// The development certificates (development mode only).
    pub dev: Option<DevPki>,
    server: kiban_api::Server,
}

/// The office routing's parts, until the bus is known.
struct Routing<E> {
    entitlements: E,
    checkpoints: Option<std::path::PathBuf>,
    data_dir: std::path::PathBuf,
}

/// The read models' database (the store's, with its own pool).
async fn open_read_db(database_url: &str) -> anyhow::Result<Db> {
    Db::open(database_url)
        .await
        .context("cannot open the read-model database")
}

/// How often the writing process sweeps unattached uploads (an hour): the
/// retention is a week, so an hour late is nothing, and each sweep reads
/// only the events since the last.
pub const BLOB_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// What is being started, before it becomes a [`System`].
struct Parts {
    store: Store,
    engine: Arc<Engine<Store>>,
    cancel: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    health: Health,
    /// The load balancers trusted with the PROXY protocol (the API's).
    trusted_proxies: kiban_api::TrustedProxies,
}

impl Parts {
    /// The running system: these parts with the projections, the bus and
    /// the API they were started with.
    fn into_system(self, projections: Projections, bus: Bus, api: Option<Api>) -> System {
        System {
            store: self.store,
            engine: self.engine,
            projections,
            bus,
            api,
            cancel: self.cancel,
            tasks: self.tasks,
            health: self.health,
        }
    }

    /// The parts over `store`: its engine (sealing personal fields with the
    /// store's per-person keys when `person_keys`), nothing running yet.
    fn new(store: &Store, person_keys: bool) -> Parts {
        let engine = Engine::new(store.clone());
        let engine = if person_keys {
            engine.with_person_keys(kiban_store::PersonKeys::new(store.clone()))
        } else {
            engine
        };
        Parts::with_engine(store.clone(), Arc::new(engine))
    }

    /// The parts over `store` and the `engine` given with it.
    fn with_engine(store: Store, engine: Arc<Engine<Store>>) -> Parts {
        Parts {
            store,
            engine,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            health: Health::default(),
            trusted_proxies: kiban_api::TrustedProxies::default(),
        }
    }

    async fn start_api(
        &mut self,
        options: &ApiOptions,
        serving: Serving,
        data_dir: &std::path::Path,
        projections: &Projections,
        clock: &Clock,
        scaled_out: Option<(kiban_api::WriterProbe, kiban_api::UpdateFeed)>,
    ) -> anyhow::Result<Api> {
        let (tls, dev) = match &options.tls {
            Tls::Files(tls) => (tls.clone(), None),
            // Development certificates (a CA whose key anyone with the
            // data directory could have had, sample principals) are for
            // one machine: never on an address others can reach.
            Tls::Development if !options.listen.ip().is_loopback() => anyhow::bail!(
                "development certificates are refused on the non-loopback address {}: \
                 listen on 127.0.0.1 (or ::1), or give --tls-cert, --tls-key and --client-ca",
                options.listen
            ),
            Tls::Development => {
                let pki = dev_pki::dev_certificates(&data_dir.join("certs"))?;
                dev_pki::bootstrap_dev_terminals(&self.engine, &pki, clock()).await?;
                dev_pki::bootstrap_dev_staff(projections.db()).await?;
                (pki.tls.clone(), Some(pki))
            }
        };
        let state = AppState::with_clock(
            self.store.clone(),
            Arc::clone(&self.engine),
            projections.clone(),
            clock.clone(),
        );
        let state = match &options.card_trust {
            Some(trust) => state.with_card_trust(trust.clone()),
            None => state,
        };
        let state = match scaled_out {
            Some((probe, feed)) => state.with_writer_probe(probe).with_update_feed(feed),
            None => state,
        };
        let state = match serving.configure {
            Some(configure) => configure(state),
            None => state,
        };
        let config = ServeConfig {
            listen: options.listen,
            tls: tls.clone(),
        };
        let server = kiban_api::serve_behind(
            &config,
            serving.limits,
            self.trusted_proxies.clone(),
            state,
            self.cancel.clone(),
        )
        .await?;
        self.health.set("api", PartHealth::Running);
        Ok(Api {
            addr: server.local_addr,
            tls,
            dev,
            server,
        })
    }

    async fn start_bus<E>(
        &mut self,
        options: &BusOptions,
        ingest_clock: Option<Clock>,
        routing: Routing<E>,
    ) -> anyhow::Result<Bus>
    where
        E: Entitlements + Send + Sync + 'static,
    {
        let engine = Arc::clone(&self.engine);
        let handler = Arc::new(match ingest_clock {
            Some(clock) => EngineHandler::with_clock(engine, clock),
            None => EngineHandler::new(engine),
        });
        match options {
            BusOptions::Nats { url, streams } => {
                let bus = connect_nats(url, streams).await?;
                self.start_nats_parts(&bus, handler, routing);
                Ok(bus)
            }
            BusOptions::InProcess => {
                let local = LocalBus::new();
                let b = local.clone();
                // The in-process bus hands its queue to one consumer only; a
                // second start would find it taken, so ingest is not
                // restarted here.
                self.spawn("ingest", false, move |stop| {
                    let (b, h) = (b.clone(), Arc::clone(&handler));
                    async move { b.run_ingest(h, stop).await }
                });
                match routing.checkpoints {
                    Some(directory) => self.spawn_routing(
                        routing.entitlements,
                        FileCheckpoints::new(directory),
                        local.sink(),
                    ),
                    None => {
                        // Nothing is kept for offline subscribers of the
                        // in-process bus, so routing starts at the head on
                        // each start.
                        let checkpoints = FromHead::new(self.store.head().await?.position);
                        self.spawn_routing(routing.entitlements, checkpoints, local.sink());
                    }
                }
                Ok(Bus::Local(local))
            }
        }
    }

    /// Ingest, the outbox relay and the office routing on a NATS bus.
    fn start_nats_parts<E>(
        &mut self,
        bus: &Bus,
        handler: Arc<EngineHandler<Store>>,
        routing: Routing<E>,
    ) where
        E: Entitlements + Send + Sync + 'static,
    {
        let client = bus.nats_client().expect("a NATS bus").clone();
        let c = client.clone();
        self.spawn("ingest", true, move |stop| {
            kiban_bus::ingest::run_ingest(c.clone(), Arc::clone(&handler), stop)
        });
        let (c, s) = (client.clone(), self.store.clone());
        self.spawn("outbox relay", true, move |stop| {
            kiban_bus::relay::run_relay(c.clone(), s.clone(), stop)
        });
        let sink = kiban_bus::routing::NatsOfficeSink::new(client.clone());
        match routing.checkpoints {
            Some(directory) => {
                self.spawn_routing(routing.entitlements, FileCheckpoints::new(directory), sink);
            }
            None => {
                // Shared by the engines; the files of a deployment from
                // before the bucket are read when it holds nothing yet.
                let files = FileCheckpoints::new(routing.data_dir.join("checkpoints"));
                let checkpoints = SharedCheckpoints::new(client, Some(files));
                self.spawn_routing(routing.entitlements, checkpoints, sink);
            }
        }
    }

    fn spawn_routing<E, C, K>(&mut self, entitlements: E, checkpoints: C, sink: K)
    where
        E: Entitlements + Send + Sync + 'static,
        C: Checkpoints + Send + Sync + 'static,
        K: OfficeSink + Send + Sync + 'static,
    {
        let shared = Arc::new((self.store.clone(), entitlements, checkpoints, sink));
        self.spawn("office routing", true, move |stop| {
            let shared = Arc::clone(&shared);
            async move {
                let (store, entitlements, checkpoints, sink) = &*shared;
                run_routing(store, entitlements, checkpoints, sink, stop).await
            }
        });
    }

    fn start_timers(&mut self, clock: Clock, interval: Duration) {
        let engine = Arc::clone(&self.engine);
        self.spawn("timers", true, move |stop| {
            let timers = Timers::new(Arc::clone(&engine));
            let clock = clock.clone();
            async move { timers.run(move || clock(), interval, stop).await }
        });
    }

    /// The part "blob sweep": every [`BLOB_SWEEP_INTERVAL`], the first an
    /// interval after the start, removes the uploads no recorded event
    /// names a week after their last upload (`Store::sweep_blobs`;
    /// docs/security.md "Unattached uploads"). In the process that writes
    /// (`all`, or the `engine` holding the writer lock), by the real clock:
    /// upload times are the database's, never a simulated clock's.
    fn start_blob_sweep(&mut self) {
        let store = self.store.clone();
        self.spawn("blob sweep", true, move |stop| {
            let store = store.clone();
            async move {
                let start = tokio::time::Instant::now() + BLOB_SWEEP_INTERVAL;
                let mut tick = tokio::time::interval_at(start, BLOB_SWEEP_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                        _ = tick.tick() => {}
                    }
                    let swept = store.sweep_blobs(chrono::Utc::now()).await?;
                    tracing::info!(
                        scanned_through = swept.scanned_through,
                        references = swept.references_recorded,
                        removed = swept.blobs_removed,
                        bytes = swept.bytes_removed,
                        "blob sweep"
                    );
                }
            }
        });
    }

    /// Runs a part in a task the system owns, restarted after a failure
    /// when `restart` says that is safe.
    fn spawn<F, Fut, Er>(&mut self, name: &'static str, restart: bool, make: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), Er>> + Send,
        Er: Into<anyhow::Error> + 'static,
    {
        let (cancel, health) = (self.cancel.clone(), self.health.clone());
        let policy = if restart {
            supervise::restart_policy()
        } else {
            supervise::no_restart()
        };
        self.tasks.spawn(async move {
            let result = supervise::supervise(name, policy, &health, &cancel, make).await;
            (name, result)
        });
    }
}

/// How long a starting process waits for JetStream to answer before it
/// gives up: a cluster electing its meta or stream leaders (seconds after a
/// node died), or without quorum until a node returns. Each attempt is
/// logged; a refusal (a conflicting stream, a missing permission) ends the
/// wait at once.
pub const JETSTREAM_STARTUP_WAIT: Duration = Duration::from_secs(120);

/// Connects to NATS and creates (idempotently) the JetStream streams,
/// trying again for up to [`JETSTREAM_STARTUP_WAIT`] while JetStream is
/// unavailable.
async fn connect_nats(
    url: &str,
    streams: &kiban_bus::streams::StreamOptions,
) -> anyhow::Result<Bus> {
    use backon::BackoffBuilder;
    let bus = Bus::connect_nats(url).await?;
    let deadline = tokio::time::Instant::now() + JETSTREAM_STARTUP_WAIT;
    let mut delays = backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match bus.ensure_streams(streams).await {
            Ok(()) => return Ok(bus),
            Err(kiban_bus::Error::Unavailable(reason))
                if tokio::time::Instant::now() < deadline =>
            {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    %reason,
                    ?delay,
                    "JetStream is not ready (a cluster electing its leader, or without quorum): trying again"
                );
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "cannot create the JetStream streams (KIBAN_EVENTS at {} bytes)",
                    streams.events_max_bytes
                )));
            }
        }
    }
}

/// A running system.
pub struct System {
    /// The event store.
    pub store: Store,
    /// The engine every command goes through.
    pub engine: Arc<Engine<Store>>,
    /// The running projections.
    pub projections: Projections,
    /// The bus.
    pub bus: Bus,
    /// The HTTPS API, when it was asked for.
    pub api: Option<Api>,
    cancel: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    health: Health,
}

impl System {
    /// Returns when a background part stops for good on its own (an error
    /// the system cannot continue with, after its restarts): its name and
    /// what it said.
    pub async fn failed(&mut self) -> (String, String) {
        match self.tasks.join_next().await {
            Some(Ok((name, Ok(())))) => (name.to_owned(), "stopped".to_owned()),
            Some(Ok((name, Err(error)))) => (name.to_owned(), format!("{error:#}")),
            Some(Err(error)) => ("a task".to_owned(), error.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Each part that was started, and how it is: running, restarting after
    /// a failure (how often, why), stopped, or failed for good.
    pub fn health(&self) -> Vec<(&'static str, PartHealth)> {
        self.health.snapshot()
    }

    /// Stops everything gracefully: the API finishes the requests in
    /// flight, ingest finishes the message in hand, then the projections
    /// and the store close.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(api) = self.api.take() {
            api.server.wait().await;
        }
        while self.tasks.join_next().await.is_some() {}
        self.projections.stop().await;
        self.store.close().await;
    }

    /// The running API; an error when the system was started without one.
    pub fn api(&self) -> anyhow::Result<&Api> {
        self.api
            .as_ref()
            .context("the system was started without the API")
    }

    /// `https://127.0.0.1:<port>` (the address the API is bound to).
    pub fn base_url(&self) -> Option<String> {
        self.api.as_ref().map(|api| format!("https://{}", api.addr))
    }

    /// Ready-to-paste curl commands for the development certificates.
    pub fn curl_examples(&self) -> Vec<String> {
        match &self.api {
            Some(Api {
                addr,
                tls,
                dev: Some(dev),
                ..
            }) => dev_pki::curl_examples(dev, &tls.client_ca, &format!("https://{addr}")),
            _ => Vec::new(),
        }
    }

    /// How to open the office web screen in a browser with the development
    /// certificates and the development staff account.
    pub fn ui_login_lines(&self) -> Vec<String> {
        match &self.api {
            Some(Api {
                addr,
                tls,
                dev: Some(dev),
                ..
            }) => dev_pki::ui_login_lines(dev, &tls.client_ca, &format!("https://{addr}")),
            _ => Vec::new(),
        }
    }
}

/// A development principal's client certificate, when the API runs with
/// development certificates.
pub fn dev_client(system: &System, principal: &Principal) -> Option<kiban_api::pki::ClientFiles> {
    system
        .api
        .as_ref()?
        .dev
        .as_ref()?
        .client(principal)
        .cloned()
}

/// A checkpoint that starts at a given position and lives in memory: the
/// in-process bus's routing, which has nobody to replay to after a restart.
struct FromHead {
    position: Mutex<Position>,
}

impl FromHead {
    fn new(position: Position) -> Self {
        Self {
            position: Mutex::new(position),
        }
    }
}

impl Checkpoints for FromHead {
    async fn load(&self, _: &str) -> kiban_bus::Result<Option<Position>> {
        // A std lock: held for a copy, never across an await.
        let position = *self.position.lock().expect("not poisoned");
        Ok((position > 0).then_some(position))
    }

    async fn save(&self, _: &str, position: Position) -> kiban_bus::Result<()> {
        *self.position.lock().expect("not poisoned") = position;
        Ok(())
    }
}
