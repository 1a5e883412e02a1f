//! A real `nats-server` for tests (feature `testing`).
//!
//! [`NatsServer`] starts one server with JetStream (file storage) on a free
//! loopback port in its own temporary directory, waits until it accepts
//! clients, and kills it in `Drop`. [`NatsServer::restart`] kills it and starts
//! it again on the same port with the same storage, which is how the fault
//! tests take the server away mid-run. [`NatsCluster`] starts three such
//! servers joined by routes, for R3 streams.
//!
//! The binary is `$KIBAN_TEST_NATS_SERVER` (set by `scripts/test`) or
//! `nats-server` on `PATH`. Everything binds to 127.0.0.1 only.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::{IngestHandler, IngestMessage, Unavailable, Verdict};

/// How long a server may take to accept connections after it was started.
/// A cold start with JetStream recovering a few thousand messages takes well
/// under a second on the test machine; ten seconds only bounds a hang.
pub const SERVER_START_TIMEOUT_MS: u64 = 10_000;

/// How long a three-node cluster may take to elect its JetStream meta leader.
/// Elections take a few seconds (route handshakes, then a Raft vote); this
/// only bounds a hang.
pub const CLUSTER_READY_TIMEOUT_MS: u64 = 30_000;

/// How often readiness is polled while waiting.
const READY_POLL_MS: u64 = 20;

/// How many times a start is retried on another port when the chosen free
/// port was taken between choosing it and the server binding it.
const PORT_RETRIES_MAX: usize = 5;

/// Why the harness could not provide a server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The binary could not be run (not installed, not executable).
    #[error("cannot run {binary}: {source} (install nats-server or set KIBAN_TEST_NATS_SERVER)")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// The server exited or did not become ready in time; the log tail says why.
    #[error("nats-server did not become ready: {reason}\n--- log ---\n{log}")]
    NotReady { reason: String, log: String },
    /// A file of the harness could not be written.
    #[error("harness file error: {0}")]
    Io(#[from] std::io::Error),
}

/// The nats-server binary the tests run.
pub fn nats_server_binary() -> String {
    std::env::var("KIBAN_TEST_NATS_SERVER")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "nats-server".to_owned())
}

/// A free TCP port on 127.0.0.1 (free when asked; see [`PORT_RETRIES_MAX`]).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Stream options for tests: `replicas` replicas and a small byte limit on
/// `KIBAN_EVENTS`, which fits the harness's JetStream storage limit.
pub fn stream_options(replicas: usize) -> crate::streams::StreamOptions {
    crate::streams::StreamOptions {
        replicas,
        events_max_bytes: 256 * 1024 * 1024,
        ..crate::streams::StreamOptions::default()
    }
}

/// One `nats-server` process with JetStream, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    port: u16,
    cluster: Option<ClusterSettings>,
    extra_config: String,
    directory: PathBuf,
    /// Owns the temporary directory of a standalone server; a cluster member
    /// lives in its cluster's directory.
    _owned_directory: Option<tempfile::TempDir>,
    child: Option<Child>,
}

#[derive(Debug, Clone)]
struct ClusterSettings {
    route_port: u16,
    peer_route_ports: Vec<u16>,
}

impl NatsServer {
    /// Starts a standalone server with JetStream on a free port.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with_config("").await
    }

    /// Starts a standalone server whose configuration file also contains
    /// `extra_config` (accounts, authorization, limits).
    pub async fn start_with_config(extra_config: &str) -> Result<Self, HarnessError> {
        let directory = tempfile::Builder::new().prefix("kiban-nats-").tempdir()?;
        let mut last_error = None;
        for _ in 0..PORT_RETRIES_MAX {
            let mut server = NatsServer {
                name: "kiban-test".to_owned(),
                port: free_port(),
                cluster: None,
                extra_config: extra_config.to_owned(),
                directory: directory.path().to_owned(),
                _owned_directory: None,
                child: None,
            };
            match server.launch().await {
                Ok(()) => {
                    server._owned_directory = Some(directory);
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's name (`n1`.. in a cluster).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would. Its storage stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same
    /// storage and configuration.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.launch().await
    }

    /// Starts a killed server again (same port, storage, configuration).
    pub async fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.is_running() {
            return Ok(());
        }
        self.launch().await
    }

    fn log_path(&self) -> PathBuf {
        self.directory.join(format!("{}.log", self.name))
    }

    fn config_path(&self) -> PathBuf {
        self.directory.join(format!("{}.conf", self.name))
    }

    fn config_text(&self) -> String {
        let store = self.directory.join(format!("{}-jetstream", self.name));
        let mut text = String::new();
        let _ = writeln!(text, "server_name: {}", self.name);
        let _ = writeln!(text, "listen: 127.0.0.1:{}", self.port);
        let _ = writeln!(
            text,
            "jetstream {{\n  store_dir: {:?}\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}",
            store.display().to_string()
        );
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .peer_route_ports
                .iter()
                .map(|port| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            let _ = writeln!(
                text,
                "cluster {{\n  name: kiban-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}",
                cluster.route_port,
                routes.join(", ")
            );
        }
        text.push_str(&self.extra_config);
        text
    }

    /// Writes the configuration, spawns the process and waits until it
    /// accepts clients.
    async fn launch(&mut self) -> Result<(), HarnessError> {
        std::fs::write(self.config_path(), self.config_text())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let binary = nats_server_binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
        loop {
            if self.accepts_clients() {
                return Ok(());
            }
            if !self.is_running() {
                self.child = None;
                return Err(self.not_ready("the process exited"));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(self.not_ready("timed out waiting for the client port"));
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
        }
    }

    /// Whether the client port answers with the server's `INFO` line. The
    /// server opens the client port after JetStream has started.
    fn accepts_clients(&self) -> bool {
        use std::io::Read;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer).is_ok() && &buffer == b"INFO"
    }

    fn not_ready(&self, reason: &str) -> HarnessError {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        HarnessError::NotReady {
            reason: reason.to_owned(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `nats-server`s joined by routes into one JetStream cluster.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
    _directory: tempfile::TempDir,
}

impl NatsCluster {
    /// How many servers the cluster has.
    pub const SIZE: usize = 3;

    /// Starts three servers on free loopback ports and waits until each
    /// accepts clients. JetStream's meta leader may still be being elected:
    /// use [`NatsCluster::wait_for_jetstream`] before creating streams.
    pub async fn start() -> Result<Self, HarnessError> {
        let directory = tempfile::Builder::new()
            .prefix("kiban-nats-cluster-")
            .tempdir()?;
        let route_ports: Vec<u16> = (0..Self::SIZE).map(|_| free_port()).collect();
        let mut servers = Vec::with_capacity(Self::SIZE);
        for index in 0..Self::SIZE {
            let peer_route_ports = route_ports
                .iter()
                .enumerate()
                .filter(|(peer, _)| *peer != index)
                .map(|(_, port)| *port)
                .collect();
            let mut server = NatsServer {
                name: format!("n{}", index + 1),
                port: free_port(),
                cluster: Some(ClusterSettings {
                    route_port: route_ports[index],
                    peer_route_ports,
                }),
                extra_config: String::new(),
                directory: directory.path().to_owned(),
                _owned_directory: None,
                child: None,
            };
            server.launch().await?;
            servers.push(server);
        }
        Ok(Self {
            servers,
            _directory: directory,
        })
    }

    /// Waits until the JetStream API answers through `client`, that is until
    /// the cluster has elected a meta leader (bounded by
    /// [`CLUSTER_READY_TIMEOUT_MS`]).
    pub async fn wait_for_jetstream(
        &self,
        client: &async_nats::Client,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_millis(CLUSTER_READY_TIMEOUT_MS);
        loop {
            // `$JS.API.INFO` answers with the account's JetStream usage once
            // a meta leader exists, and with an error object before.
            let answer = client.request("$JS.API.INFO", "".into()).await;
            let problem = match answer {
                Ok(message) => {
                    match serde_json::from_slice::<serde_json::Value>(&message.payload) {
                        Ok(value) if value.get("error").is_none() => return Ok(()),
                        Ok(value) => value["error"].to_string(),
                        Err(error) => error.to_string(),
                    }
                }
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    reason: format!("no JetStream meta leader: {problem}"),
                    log: self.servers.iter().map(NatsServer::log).collect(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client URLs of all servers, for a client that fails over between
    /// them (`async_nats::connect(cluster.urls())`).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Server `index` (0-based).
    pub fn server(&mut self, index: usize) -> &mut NatsServer {
        &mut self.servers[index]
    }

    /// The directory holding the servers' configuration, logs and storage.
    pub fn directory(&self) -> &Path {
        self._directory.path()
    }
}

/// A real [`IngestHandler`] for tests: records each valid message as one
/// event in a store, idempotently by event id. The engine replaces it in
/// production (it checks the workflow rules; this one only knows which event
/// types a municipality may send).
///
/// The stream is the application's (`certification/<insurer>-<insured>-<n>`)
/// when the message names one, else the person's, else the insurer's.
#[derive(Debug, Clone)]
pub struct RecordingHandler<S> {
    store: S,
}

impl<S> RecordingHandler<S> {
    /// A handler appending to `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// Whether `kind` is an event type a municipality may send, by the domain's
/// event catalogs.
pub fn is_insurer_kind(kind: &kiban_events::EventType) -> bool {
    use kiban_events::domain::{DomainEvent, Emitter};
    use kiban_events::domain::{
        certification::CertificationEvent, insurer::InsurerEvent, office::OfficeEvent,
    };
    [
        CertificationEvent::CATALOG,
        InsurerEvent::CATALOG,
        OfficeEvent::CATALOG,
    ]
    .iter()
    .flat_map(|catalog| catalog.iter())
    .any(|spec| spec.event_type == kind.as_str() && spec.emitters.contains(&Emitter::Insurer))
}

/// The stream [`RecordingHandler`] records `message` in.
pub fn stream_of(message: &IngestMessage) -> kiban_events::StreamName {
    use kiban_events::domain::certification::certification_stream;
    use kiban_events::domain::insured::insured_stream;
    use kiban_events::domain::insurer::insurer_stream;
    match (&message.insured, message.application) {
        (Some(insured), Some(application)) => {
            certification_stream(&message.insurer, insured, application)
        }
        (Some(insured), None) => insured_stream(&message.insurer, insured),
        (None, _) => insurer_stream(&message.insurer),
    }
}

impl<S: kiban_store::EventStore + 'static> IngestHandler for RecordingHandler<S> {
    async fn handle(&self, message: IngestMessage) -> Result<Verdict, Unavailable> {
        use kiban_events::{Actor, ExpectedVersion, NewEvent};
        if !is_insurer_kind(&message.kind) {
            return Ok(Verdict::Rejected {
                code: crate::ingest::codes::UNKNOWN_KIND.to_owned(),
                message: format!("{} is not an event type a municipality sends", message.kind),
            });
        }
        let stream = stream_of(&message);
        let event = NewEvent {
            event_id: message.event_id,
            event_type: message.kind,
            schema_version: 1,
            occurred_at: message.occurred_at,
            actor: Actor::Insurer(message.insurer),
            correlation_id: *message.event_id.as_uuid(),
            causation_id: None,
            payload: kiban_events::Payload::from_json(
                &serde_json::to_string(&message.body).expect("a JSON map serialises"),
            )
            .map_err(|error| {
                Unavailable(format!("unreachable: a JSON object is a payload: {error}"))
            })?,
        };
        match self
            .store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
        {
            Ok(result) => Ok(Verdict::Accepted {
                positions: result.events.iter().map(|event| event.position).collect(),
            }),
            Err(
                error @ (kiban_store::Error::Unavailable(_)
                | kiban_store::Error::Database(_)
                | kiban_store::Error::Closed
                | kiban_store::Error::NotWriter(_)),
            ) => Err(Unavailable(error.to_string())),
            Err(error @ kiban_store::Error::DuplicateEventId { .. }) => Ok(Verdict::Rejected {
                code: "duplicate_event_id".to_owned(),
                message: error.to_string(),
            }),
            Err(error) => Ok(Verdict::Rejected {
                code: crate::ingest::codes::INVALID_FIELD.to_owned(),
                message: error.to_string(),
            }),
        }
    }
}
