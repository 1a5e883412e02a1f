//! The whole system in one process: what `kiban serve` and `kiban demo` run.
//!
//! [`System::start`] opens the store, starts the projections, the HTTPS API
//! (production PEM paths, or development certificates made once under
//! `<data dir>/certs` and reused), ingest (the in-process [`LocalBus`], or
//! NATS JetStream with the outbox relay), the office routing with
//! [`ReadModelEntitlements`], and the timers. [`System::stop`] cancels them
//! all, waits for each, and closes the store.
//!
//! In development mode (no `--tls-*` paths) every office terminal with a
//! sample certificate is registered in the store at start, idempotently, so
//! that its certificate is accepted (see [`bootstrap_dev_terminals`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use kiban_api::pki::ClientFiles;
use kiban_api::principal::fingerprint;
use kiban_api::{AppState, CardTrust, Clock, DevPki, Principal, ServeConfig, TlsFiles};
use kiban_bus::engine::EngineHandler;
use kiban_bus::local::LocalBus;
use kiban_bus::relay::{Checkpoints, FileCheckpoints};
use kiban_bus::routing::{OfficeSink, run_routing};
use kiban_bus::streams::{StreamOptions, ensure_streams};
use kiban_engine::{CommandContext, Engine, Timers};
use kiban_events::Position;
use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
use kiban_events::domain::{ServiceTypeCode, Sha256Digest};
use kiban_events::envelope::{Actor, EventId};
use kiban_projections::{Db, Projections, models};
use kiban_store::{Store, StoreOptions};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::entitlements::ReadModelEntitlements;

/// The default data directory (SQLite file, certificates, checkpoints).
pub const DEFAULT_DATA_DIR: &str = "./kiban-data";

/// The default API address: loopback only, so a development server is not
/// reachable from the network by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// How long a failed background loop (routing) waits before it restarts
/// from its checkpoint.
pub const RESTART_DELAY_MS: u64 = 1_000;

/// The service type development offices are registered with: 43 居宅介護支援
/// (care-plan support), the office kind that files proxy applications.
pub const DEV_OFFICE_SERVICE_TYPE: &str = "43";

/// The sample principals of development mode: kiban-api's five, a second
/// terminal of the sample office (the demo reports it lost) and a second
/// office.
pub fn dev_principals() -> Vec<Principal> {
    let mut principals = kiban_api::dev_principals();
    for uri in [
        "kiban:office:1312345678:terminal:T-02",
        "kiban:office:1319876543:terminal:T-01",
    ] {
        principals.extend(Principal::from_uri(uri));
    }
    principals
}

/// How to start the system.
#[derive(Clone)]
pub struct SystemOptions {
    /// The event store's URL.
    pub database_url: String,
    /// NATS with JetStream; `None` for the in-process bus.
    pub nats_url: Option<String>,
    /// Where the API listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Production certificates; `None` for development certificates.
    pub tls: Option<TlsFiles>,
    /// Certificates (development) and checkpoints live here.
    pub data_dir: PathBuf,
    /// "Now" for the API and the timers.
    pub clock: Clock,
    /// How often the timers tick.
    pub timer_interval: Duration,
    /// The JetStream streams' replicas and limits (NATS only).
    pub streams: StreamOptions,
    /// The JPKI CA certificates and CRL for card consent; `None` leaves
    /// `POST /v1/consents/card` unavailable (503).
    pub card_trust: Option<CardTrust>,
}

impl SystemOptions {
    /// Options with the system clock and the engine's tick interval.
    pub fn new(database_url: String, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            database_url,
            nats_url: None,
            listen,
            tls: None,
            data_dir,
            clock: Arc::new(chrono::Utc::now),
            timer_interval: Duration::from_millis(kiban_engine::TICK_INTERVAL_MS),
            streams: StreamOptions::default(),
            card_trust: None,
        }
    }
}

/// The bus the system ingests from and routes office updates to.
#[derive(Clone)]
pub enum Bus {
    /// The in-process bus.
    Local(LocalBus),
    /// NATS JetStream (the URL, and the system's own connection).
    Nats {
        url: String,
        client: async_nats::Client,
    },
}

impl Bus {
    /// A human description for the start banner.
    pub fn describe(&self) -> String {
        match self {
            Bus::Local(_) => "the in-process bus".to_owned(),
            Bus::Nats { url, .. } => {
                format!("NATS JetStream at {url} (ingest, outbox relay, office routing)")
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
    /// The API's bound address.
    pub api_addr: SocketAddr,
    /// The certificates the API serves with.
    pub tls: TlsFiles,
    /// The development certificates (development mode only).
    pub dev: Option<DevPki>,
    cancel: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    server: kiban_api::Server,
}

impl System {
    /// Starts everything; returns once the API listens and the bus is
    /// consumed.
    pub async fn start(options: SystemOptions) -> anyhow::Result<System> {
        let store = open_store(&options.database_url).await?;
        let engine = Arc::new(
            Engine::new(store.clone())
                .with_person_keys(kiban_store::PersonKeys::new(store.clone())),
        );
        let read_db = Db::open(&options.database_url)
            .await
            .context("cannot open the read-model database")?;
        let projections = Projections::start(read_db, store.clone(), models::all())
            .await
            .context("cannot start the projections")?;
        let (tls, dev) = match &options.tls {
            Some(tls) => (tls.clone(), None),
            None => {
                let pki = dev_certificates(&options.data_dir.join("certs"))?;
                bootstrap_dev_terminals(&engine, &pki, (options.clock)()).await?;
                (pki.tls.clone(), Some(pki))
            }
        };
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let state = AppState::with_clock(
            store.clone(),
            Arc::clone(&engine),
            projections.clone(),
            options.clock.clone(),
        );
        let state = match &options.card_trust {
            Some(trust) => state.with_card_trust(trust.clone()),
            None => state,
        };
        let server = kiban_api::serve(
            &ServeConfig {
                listen: options.listen,
                tls: tls.clone(),
            },
            state,
            cancel.clone(),
        )
        .await?;
        let handler = Arc::new(EngineHandler::new(Arc::clone(&engine)));
        let entitlements = ReadModelEntitlements::new(projections.clone());
        let bus = match &options.nats_url {
            Some(url) => {
                let client = async_nats::connect(url.as_str())
                    .await
                    .with_context(|| format!("cannot connect to NATS at {url}"))?;
                let jetstream = async_nats::jetstream::new(client.clone());
                ensure_streams(&jetstream, &options.streams)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot create the JetStream streams (KIBAN_EVENTS may be larger than \
                             the server's storage: {} bytes; see --events-max-bytes)",
                            options.streams.events_max_bytes
                        )
                    })?;
                let (c, h, stop) = (client.clone(), handler, cancel.clone());
                tasks.spawn(async move {
                    let result = kiban_bus::ingest::run_ingest(c, h, stop).await;
                    ("ingest", result.map_err(Into::into))
                });
                let (c, s, stop) = (client.clone(), store.clone(), cancel.clone());
                tasks.spawn(async move {
                    let result = kiban_bus::relay::run_relay(c, s, stop).await;
                    ("outbox relay", result.map_err(Into::into))
                });
                let checkpoints = FileCheckpoints::new(options.data_dir.join("checkpoints"));
                let sink = kiban_bus::routing::NatsOfficeSink::new(client.clone());
                spawn_routing(&mut tasks, &store, entitlements, checkpoints, sink, &cancel);
                Bus::Nats {
                    url: url.clone(),
                    client,
                }
            }
            None => {
                let bus = LocalBus::new();
                let (b, stop) = (bus.clone(), cancel.clone());
                tasks.spawn(async move {
                    let result = b.run_ingest(handler, stop).await;
                    ("ingest", result.map_err(Into::into))
                });
                // Nothing is kept for offline subscribers of the in-process
                // bus, so routing starts at the head on each start.
                let checkpoints = FromHead::new(store.head().await?.position);
                spawn_routing(
                    &mut tasks,
                    &store,
                    entitlements,
                    checkpoints,
                    bus.sink(),
                    &cancel,
                );
                Bus::Local(bus)
            }
        };
        let timers = Timers::new(Arc::clone(&engine));
        let (clock, interval, stop) = (
            options.clock.clone(),
            options.timer_interval,
            cancel.clone(),
        );
        tasks.spawn(async move {
            let result = timers.run(move || clock(), interval, stop).await;
            ("timers", result.map_err(Into::into))
        });
        Ok(System {
            store,
            engine,
            projections,
            bus,
            api_addr: server.local_addr,
            tls,
            dev,
            cancel,
            tasks,
            server,
        })
    }

    /// Returns when a background task stops on its own (an error the
    /// system cannot continue with): its name and what it said.
    pub async fn failed(&mut self) -> (String, String) {
        match self.tasks.join_next().await {
            Some(Ok((name, Ok(())))) => (name.to_owned(), "stopped".to_owned()),
            Some(Ok((name, Err(error)))) => (name.to_owned(), format!("{error:#}")),
            Some(Err(error)) => ("a task".to_owned(), error.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Stops everything: the API finishes the requests in flight, ingest
    /// finishes the message in hand, then the projections and the store
    /// close.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.server.wait().await;
        while self.tasks.join_next().await.is_some() {}
        self.projections.stop().await;
        self.store.close().await;
    }

    /// `https://127.0.0.1:<port>` (the address the API is bound to).
    pub fn base_url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    /// Ready-to-paste curl commands for the development certificates.
    pub fn curl_examples(&self) -> Vec<String> {
        let Some(dev) = &self.dev else {
            return Vec::new();
        };
        let base = self.base_url();
        let ca = self.tls.client_ca.display();
        let mut lines = vec![format!("curl --cacert {ca} {base}/healthz")];
        let paths = [
            (
                "kiban:office:1312345678:terminal:T-01",
                "/v1/offices/1312345678/caseload",
            ),
            ("kiban:insurer:131016", "/v1/insurers/131016"),
            (
                "kiban:medical:1398765432",
                "/v1/medical/1398765432/opinion-requests",
            ),
            ("kiban:federation", "/v1/terminals"),
            ("kiban:auditor:dev-auditor", "/v1/access-log"),
            ("kiban:auditor:dev-auditor", "/v1/openapi.json"),
        ];
        for (uri, path) in paths {
            let Some(files) = Principal::from_uri(uri).and_then(|p| dev.client(&p).cloned()) else {
                continue;
            };
            let pem = files.pem.display();
            lines.push(format!(
                "curl --cacert {ca} --cert {pem} --key {pem} {base}{path}"
            ));
        }
        lines
    }
}

fn spawn_routing<C, K>(
    tasks: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    store: &Store,
    entitlements: ReadModelEntitlements,
    checkpoints: C,
    sink: K,
    cancel: &CancellationToken,
) where
    C: Checkpoints + 'static,
    K: OfficeSink + 'static,
{
    let (store, cancel) = (store.clone(), cancel.clone());
    tasks.spawn(async move {
        while !cancel.is_cancelled() {
            match run_routing(&store, &entitlements, &checkpoints, &sink, cancel.clone()).await {
                Ok(()) => break,
                Err(kiban_bus::Error::Closed) => break,
                Err(error) => {
                    tracing::warn!(%error, "office routing stopped; restarting from its checkpoint");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(RESTART_DELAY_MS)) => {}
                    }
                }
            }
        }
        ("office routing", Ok(()))
    });
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
        let position = *self.position.lock().expect("not poisoned");
        Ok((position > 0).then_some(position))
    }

    async fn save(&self, _: &str, position: Position) -> kiban_bus::Result<()> {
        *self.position.lock().expect("not poisoned") = position;
        Ok(())
    }
}

/// Opens the store, creating the directory of an SQLite file when needed.
pub async fn open_store(url: &str) -> anyhow::Result<Store> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the data directory {}", parent.display())
            })?;
        }
    }
    Store::open(url, StoreOptions::default())
        .await
        .with_context(|| format!("cannot open the store at {}", redact_url(url)))
}

/// A URL without its password, fit for a log line or an error message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// What `certs/manifest.json` records: which principal each client file is.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    clients: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    uri: String,
    file: String,
}

const MANIFEST: &str = "manifest.json";

/// The file name of a principal's client certificate:
/// `office-1312345678-T-01.pem`, `insurer-131016.pem`, ...
fn client_file_name(principal: &Principal) -> String {
    let uri = principal.to_uri();
    let name = uri
        .trim_start_matches("kiban:")
        .replace(":terminal:", "-")
        .replace(':', "-");
    format!("{name}.pem")
}

/// The development certificates under `dir`: made on first use (a CA, a
/// server certificate for 127.0.0.1 and localhost, one client certificate
/// per [`dev_principals`]) and reused afterwards, so that terminals
/// registered with their fingerprints stay valid across restarts.
pub fn dev_certificates(dir: &Path) -> anyhow::Result<DevPki> {
    let wanted = dev_principals();
    if let Some(pki) = load_dev_certificates(dir, &wanted)? {
        return Ok(pki);
    }
    let mut pki = kiban_api::dev_pki(dir, &wanted).with_context(|| {
        format!(
            "cannot create development certificates in {}",
            dir.display()
        )
    })?;
    let mut manifest = Manifest {
        clients: Vec::new(),
    };
    for client in &mut pki.clients {
        let file = client_file_name(&client.principal);
        let path = dir.join(&file);
        std::fs::rename(&client.pem, &path)
            .with_context(|| format!("cannot rename {}", client.pem.display()))?;
        client.pem = path;
        manifest.clients.push(ManifestEntry {
            uri: client.principal.to_uri(),
            file,
        });
    }
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)
        .context("cannot write the certificate manifest")?;
    Ok(pki)
}

fn load_dev_certificates(dir: &Path, wanted: &[Principal]) -> anyhow::Result<Option<DevPki>> {
    let Ok(text) = std::fs::read(dir.join(MANIFEST)) else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&text).context("certs/manifest.json")?;
    let tls = TlsFiles {
        client_ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    let have: BTreeSet<&str> = manifest.clients.iter().map(|c| c.uri.as_str()).collect();
    let want: Vec<String> = wanted.iter().map(Principal::to_uri).collect();
    let complete = want.iter().all(|uri| have.contains(uri.as_str()))
        && [&tls.client_ca, &tls.server_cert, &tls.server_key]
            .iter()
            .all(|path| path.exists());
    if !complete {
        return Ok(None);
    }
    let mut clients = Vec::new();
    for entry in &manifest.clients {
        let Some(principal) = Principal::from_uri(&entry.uri) else {
            continue;
        };
        let pem = dir.join(&entry.file);
        let certificate = CertificateDer::from_pem_file(&pem)
            .with_context(|| format!("cannot read the certificate in {}", pem.display()))?;
        clients.push(ClientFiles {
            principal,
            fingerprint: fingerprint(certificate.as_ref()),
            pem,
        });
    }
    Ok(Some(DevPki { tls, clients }))
}

/// Registers (as the federation) every office and office terminal of the
/// development certificates that the store does not know yet; a terminal
/// already registered with another certificate is reported, not changed.
pub async fn bootstrap_dev_terminals(
    engine: &Engine<Store>,
    pki: &DevPki,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    for client in &pki.clients {
        let Principal::Office { office, terminal } = &client.principal else {
            continue;
        };
        let stream = office_stream(office);
        let context = || {
            CommandContext::new(
                EventId::from_uuid(Uuid::now_v7()).expect("a v7 id is not nil"),
                Actor::Federation,
                now,
            )
        };
        let (state, _) = engine.load::<Office>(&stream).await?;
        if state.office.is_none() {
            let register = OfficeCommand::Register {
                office: office.clone(),
                service_types: vec![ServiceTypeCode::parse(DEV_OFFICE_SERVICE_TYPE)?],
            };
            engine
                .execute::<Office>(&stream, &register, &context())
                .await?;
        }
        let (state, _) = engine.load::<Office>(&stream).await?;
        let credential = Sha256Digest::parse(&client.fingerprint)?;
        match state.terminals.get(terminal) {
            None => {
                let register = OfficeCommand::RegisterTerminal {
                    terminal: terminal.clone(),
                    credential,
                };
                engine
                    .execute::<Office>(&stream, &register, &context())
                    .await?;
            }
            Some(known) if known.credential != credential => {
                eprintln!(
                    "note: terminal {} of office {office} is registered with another certificate \
                     (a different certs directory?); its sample certificate will be refused",
                    terminal.as_str()
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The card-consent trust from files: each CA file holds one or more
/// certificates in PEM, or one in DER; the CRL file must exist now (it is
/// read again at every verification, so a refreshed file takes effect at
/// once). JPKI publishes its CA certificates in DER.
pub fn load_card_trust(ca_files: &[PathBuf], crl: &Path) -> anyhow::Result<CardTrust> {
    let mut ca_certificates_der = Vec::new();
    for file in ca_files {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read the card CA file {}", file.display()))?;
        if bytes.windows(10).any(|window| window == b"-----BEGIN") {
            let before = ca_certificates_der.len();
            for certificate in CertificateDer::pem_slice_iter(&bytes) {
                let certificate = certificate.with_context(|| {
                    format!("invalid PEM in the card CA file {}", file.display())
                })?;
                ca_certificates_der.push(certificate.as_ref().to_vec());
            }
            anyhow::ensure!(
                ca_certificates_der.len() > before,
                "no certificate in the card CA file {}",
                file.display()
            );
        } else {
            ca_certificates_der.push(bytes);
        }
    }
    anyhow::ensure!(
        !ca_certificates_der.is_empty(),
        "card consent needs at least one --card-ca"
    );
    std::fs::metadata(crl)
        .with_context(|| format!("cannot read the card CRL file {}", crl.display()))?;
    Ok(CardTrust {
        ca_certificates_der,
        crl_path: crl.to_owned(),
    })
}
