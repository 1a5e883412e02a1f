//! [`Role`]: which parts of kiban one process runs (`kiban serve --role`),
//! and how the `engine` and `api` roles start. docs/deploy.md is the
//! operator's view.
//!
//! - `all` (the default): everything in one process, as
//!   [`crate::SystemBuilder::start`] always did.
//! - `engine`: the writer. Opens the store in standby
//!   ([`WriterMode::Standby`]): it polls the writer lock every
//!   [`WRITER_POLL_INTERVAL_MS`] and, once it holds it, starts the append
//!   service (appends from API processes, `kiban_bus::append`), the
//!   projections, ingest, the outbox relay, the office routing, the timers
//!   and checkpoint signing. Two or more run; the others wait. **Fencing:**
//!   when the writer loses its lock (its database connection broke, or the
//!   database's head is not its own), the part "writer lock" fails, the
//!   system stops, and `kiban serve` exits non-zero so that its supervisor
//!   starts it again — as a standby. Positions stay gapless regardless:
//!   every batch is written on the connection that holds the lock, and a
//!   broken connection loses the lock with the write in flight.
//! - `api`: HTTPS (mTLS, authorisation, queries, the screens, SSE) and the
//!   engine's decisions, on state read from the database; its store never
//!   takes the writer lock and forwards every append to the writer over
//!   NATS ([`NatsForwarder`]). Its read models are followed, not run
//!   ([`Projections::follow`]). Any number run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use kiban_bus::append::NatsForwarder;
use kiban_bus::engine::EngineHandler;
use kiban_bus::fanout::{OfficeFeeds, follow_office};
use kiban_bus::routing::Entitlements;
use kiban_projections::{FOLLOW_POLL_MS, Projections, models};
use kiban_store::{StoreOptions, WRITER_POLL_INTERVAL_MS, WriterMode};

use crate::config::{BusOptions, open_store_with};
use crate::supervise::PartHealth;
use crate::{
    Parts, ReadModelEntitlements, Routing, System, SystemBuilder, connect_nats, open_read_db,
};

/// What the writer probe of an API process returns.
type PingFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send>>;

/// How long `/readyz` of an API process waits for the writer's answer.
pub const WRITER_PING_TIMEOUT_MS: u64 = 1_000;

/// Which parts of kiban one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Everything (the default; SQLite or PostgreSQL, either bus).
    #[default]
    All,
    /// The writer and everything that must run once (PostgreSQL and NATS).
    Engine,
    /// The HTTPS API, forwarding its appends to the writer (PostgreSQL and
    /// NATS).
    Api,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "all" => Ok(Role::All),
            "engine" => Ok(Role::Engine),
            "api" => Ok(Role::Api),
            other => Err(format!(
                "unknown role {other:?}: expected all, engine or api"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Engine => "engine",
            Role::Api => "api",
        })
    }
}

/// The NATS options of a scaled-out role, or why it cannot run.
fn scaled_out<E>(
    builder: &SystemBuilder<E>,
) -> anyhow::Result<(String, kiban_bus::streams::StreamOptions)> {
    let role = builder.role;
    anyhow::ensure!(
        builder.database_url.starts_with("postgres://")
            || builder.database_url.starts_with("postgresql://"),
        "--role {role} needs PostgreSQL (--database-url postgres://…): the processes of a deployment share one database"
    );
    match &builder.bus {
        BusOptions::Nats { url, streams } => Ok((url.clone(), streams.clone())),
        BusOptions::InProcess => anyhow::bail!(
            "--role {role} needs NATS (--nats-url): the processes of a deployment talk over it"
        ),
    }
}

/// `--role engine`: waits to hold the writer lock, then starts everything
/// that must run once.
pub(crate) async fn start_engine<E>(mut builder: SystemBuilder<E>) -> anyhow::Result<System>
where
    E: Entitlements + Send + Sync + 'static,
{
    let (url, streams) = scaled_out(&builder)?;
    let (store, engine) = match builder.open.take() {
        Some((store, engine)) => (store, Some(engine)),
        None => {
            let options = StoreOptions {
                writer: WriterMode::Standby {
                    poll: Duration::from_millis(WRITER_POLL_INTERVAL_MS),
                },
                ..StoreOptions::default()
            };
            (open_store_with(&builder.database_url, options).await?, None)
        }
    };
    let bus = connect_nats(&url, &streams).await?;
    let mut status = store.writer_status();
    if !*status.borrow() {
        tracing::info!("standing by: another engine holds the writer lock");
    }
    status
        .wait_for(|writer| *writer)
        .await
        .context("the store closed while standing by")?;
    tracing::info!("this engine is the writer");
    let mut parts = match engine {
        Some(engine) => Parts::with_engine(store.clone(), engine),
        None => Parts::new(&store, builder.person_keys),
    };
    spawn_fence(&mut parts);
    // First, so that API processes can write again as early as possible.
    let client = bus.nats_client().expect("a NATS bus").clone();
    let s = store.clone();
    parts.spawn("append service", true, move |stop| {
        kiban_bus::append::run_append_service(client.clone(), s.clone(), stop)
    });
    let read_db = open_read_db(&builder.database_url).await?;
    let projections = Projections::start(read_db, store.clone(), models::all())
        .await
        .context("cannot start the projections")?;
    if let Some(signing) = builder.checkpoints {
        store.spawn_checkpointer(signing.key, signing.every, signing.poll);
    }
    let engine = Arc::clone(&parts.engine);
    let handler = Arc::new(match builder.ingest_clock {
        Some(clock) => EngineHandler::with_clock(engine, clock),
        None => EngineHandler::new(engine),
    });
    let routing = Routing {
        entitlements: (builder.entitlements)(&projections),
        checkpoints: builder.routing_checkpoints,
        data_dir: builder.data_dir,
    };
    parts.start_nats_parts(&bus, handler, routing);
    if let Some(interval) = builder.timers {
        parts.start_timers(builder.clock.clone(), interval);
    }
    parts.start_blob_sweep();
    Ok(parts.into_system(projections, bus, None))
}

/// An API process's live office updates: one NATS subscription per office
/// with open streams, the same entitlements as the engine's routing for
/// the replay from the store (`kiban_bus::fanout`).
fn update_feed(
    feeds: OfficeFeeds,
    store: &kiban_store::Store,
    projections: &Projections,
) -> kiban_api::UpdateFeed {
    let store = store.clone();
    let entitlements = ReadModelEntitlements::new(projections.clone());
    Arc::new(move |office, after, own_consents| {
        follow_office(
            &feeds,
            store.clone(),
            entitlements.clone(),
            office,
            after,
            own_consents,
        )
        .map(|item| item.map_err(|error| error.to_string()))
        .boxed()
    })
}

/// The part "writer lock": fails (for good) when this engine stops being
/// the writer, which stops the system (fencing; see the module docs).
fn spawn_fence(parts: &mut Parts) {
    let status = parts.store.writer_status();
    parts.health.set("writer lock", PartHealth::Running);
    parts.spawn("writer lock", false, move |stop| {
        let mut status = status.clone();
        async move {
            tokio::select! {
                () = stop.cancelled() => Ok(()),
                _ = status.wait_for(|writer| !*writer) => Err(anyhow::anyhow!(
                    "this engine lost the writer lock (its database connection broke or another writer wrote); \
                     stopping so that a supervisor starts it again as a standby"
                )),
            }
        }
    });
}

/// `--role api`: the HTTPS API over a store that forwards its appends.
pub(crate) async fn start_api<E>(builder: SystemBuilder<E>) -> anyhow::Result<System> {
    let (url, _) = scaled_out(&builder)?;
    anyhow::ensure!(
        builder.open.is_none(),
        "--role api opens its own store (one that forwards its appends to the writer)"
    );
    let bus = kiban_bus::client::Bus::connect_nats(&url).await?;
    let client = bus.nats_client().expect("a NATS bus").clone();
    let options = StoreOptions {
        writer: WriterMode::Forward(Arc::new(NatsForwarder::new(client.clone()))),
        ..StoreOptions::default()
    };
    let store = open_store_with(&builder.database_url, options).await?;
    let read_db = open_read_db(&builder.database_url).await?;
    let projections = Projections::follow(
        read_db,
        store.clone(),
        models::all(),
        Duration::from_millis(FOLLOW_POLL_MS),
    )
    .await
    .context("cannot follow the projections")?;
    let mut parts = Parts::new(&store, builder.person_keys);
    parts.trusted_proxies = builder.trusted_proxies.clone();
    let ping_client = client.clone();
    let probe: kiban_api::WriterProbe = Arc::new(move || -> PingFuture {
        let client = ping_client.clone();
        Box::pin(async move {
            kiban_bus::append::ping_writer(&client, Duration::from_millis(WRITER_PING_TIMEOUT_MS))
                .await
                .map_err(|error| error.to_string())
        })
    });
    let feed = update_feed(OfficeFeeds::new(client.clone()), &store, &projections);
    let api = match &builder.api {
        Some(options) => Some(
            parts
                .start_api(
                    options,
                    builder.serving,
                    &builder.data_dir,
                    &projections,
                    &builder.clock,
                    Some((probe, feed)),
                )
                .await?,
        ),
        None => None,
    };
    Ok(parts.into_system(projections, bus, api))
}
