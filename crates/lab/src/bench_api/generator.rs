//! The load generator of `kiban bench api`: keep-alive HTTPS connections
//! with client certificates (reqwest over rustls), one request at a time
//! each, in a closed loop or on an open-loop schedule.
//!
//! It builds its requests from `kiban_api::paths` rather than calling the
//! typed client (`kiban_api::client`): the client reads every answer into a
//! JSON value and owns its connection pool, while the generator measures
//! one keep-alive HTTP/1.1 connection per principal and only reads the
//! answer's bytes — what is measured stays the server's cost.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiban_api::{DevPki, Principal, paths};
use tokio::task::JoinSet;

use super::dataset::Population;

/// Persons per caseload page an office screen asks for.
pub const CASELOAD_PAGE: usize = 20;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT_S: u64 = 30;

/// What a request reads, as whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OfficeCaseload,
    OfficeEligibility,
    OfficeCertifications,
    InsurerEligibility,
    InsurerCertifications,
    /// A command: the federation records a person's consent to an office
    /// again (a renewal; one event, `insured.consent_given`).
    ConsentRenewal,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::OfficeCaseload,
        Kind::OfficeEligibility,
        Kind::OfficeCertifications,
        Kind::InsurerEligibility,
        Kind::InsurerCertifications,
        Kind::ConsentRenewal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::OfficeCaseload => "office caseload page",
            Kind::OfficeEligibility => "office eligibility",
            Kind::OfficeCertifications => "office certifications",
            Kind::InsurerEligibility => "insurer eligibility",
            Kind::InsurerCertifications => "insurer certifications",
            Kind::ConsentRenewal => "command (consent renewal)",
        }
    }

    /// Whether the API appends an access-log event for it.
    pub fn logged(self) -> bool {
        matches!(self, Kind::OfficeEligibility | Kind::OfficeCertifications)
    }
}

/// Who the connections are and what they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// `bench api`: three of four connections are office terminals
    /// (caseload pages and logged reads of a person), one of four an
    /// insurer (unlogged reads of its own people).
    Queries,
    /// `bench cluster`: three of four connections are office terminals
    /// sending only logged reads, one of four the federation sending
    /// commands (consent renewals for persons of an office's caseload).
    LoggedReadsAndCommands,
    /// Every connection an office terminal sending logged reads.
    LoggedReads,
    /// Every connection the federation sending commands.
    Commands,
}

/// What one connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An office terminal (its office's index); with `logged_only`, it
    /// never asks for a caseload page.
    Office {
        office: u64,
        logged_only: bool,
    },
    Insurer,
    /// The federation, renewing consents to this office.
    Federation {
        office: u64,
    },
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub kind: Kind,
    pub latency: Duration,
}

/// What an open-loop phase measured.
pub struct OpenLoop {
    pub samples: Vec<Sample>,
    /// First scheduled request → last answer.
    pub elapsed: Duration,
}

/// One keep-alive connection: its own client (one connection, since it has
/// one request in flight at a time), its principal and what it may read.
struct Connection {
    client: reqwest::Client,
    /// The persons it reads: the office's caseload or the insurer's people.
    persons: Arc<Vec<u64>>,
    role: Role,
    population: Population,
    random: u64,
    sent: u64,
}

impl Connection {
    /// The next request's kind and path: an office asks for a caseload page
    /// once in four requests, and otherwise alternates a person's
    /// eligibility and certification status; an insurer alternates those.
    fn next_request(&mut self) -> (Kind, String) {
        self.sent += 1;
        // splitmix64
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let person = self.persons[(z % self.persons.len() as u64) as usize];
        let (insurer, insured) = self.population.person(person);
        let kind = match (self.role, self.sent % 4) {
            (
                Role::Office {
                    logged_only: false, ..
                },
                0,
            ) => Kind::OfficeCaseload,
            (Role::Office { .. }, 0 | 1 | 3) => Kind::OfficeEligibility,
            (Role::Office { .. }, _) => Kind::OfficeCertifications,
            (Role::Insurer, n) if n.is_multiple_of(2) => Kind::InsurerEligibility,
            (Role::Insurer, _) => Kind::InsurerCertifications,
            (Role::Federation { .. }, _) => Kind::ConsentRenewal,
        };
        let path = match kind {
            Kind::OfficeCaseload => {
                let Role::Office { office, .. } = self.role else {
                    unreachable!("only office terminals ask for caseload pages")
                };
                let mut path = paths::caseload(self.population.office(office));
                write!(
                    path,
                    "?after=person:{insurer}-{insured}&limit={CASELOAD_PAGE}"
                )
                .expect("writing to a String cannot fail");
                path
            }
            Kind::OfficeEligibility | Kind::InsurerEligibility => {
                paths::person(insurer, insured, "/eligibility")
            }
            Kind::OfficeCertifications | Kind::InsurerCertifications => {
                paths::person(insurer, insured, "/certifications")
            }
            Kind::ConsentRenewal => paths::person(insurer, insured, "/consents"),
        };
        (kind, path)
    }

    /// The body of a consent renewal: the connection's office, for a year.
    fn consent_body(&self) -> serde_json::Value {
        let Role::Federation { office } = self.role else {
            unreachable!("only the federation renews consents")
        };
        serde_json::json!({
            "office": self.population.office(office).to_string(),
            "terminal": super::dataset::TERMINAL,
            "expires_at": chrono::Utc::now() + chrono::Duration::days(365),
        })
    }
}

/// The connections and the error count over every phase.
pub struct Generator {
    connections: Vec<Arc<tokio::sync::Mutex<Connection>>>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    office_person_reads: Arc<AtomicU64>,
    commands_answered: Arc<AtomicU64>,
}

impl Generator {
    /// `count` connections: three of four as office terminals (offices
    /// spread over the population), one of four as insurers.
    pub fn new(pki: &DevPki, population: Population, count: usize) -> anyhow::Result<Self> {
        Self::with_mix(pki, population, count, Mix::Queries)
    }

    /// `count` connections as `mix` says (offices spread over the
    /// population; the federation needs a certificate in `pki` for
    /// [`Mix::LoggedReadsAndCommands`] and [`Mix::Commands`]).
    pub fn with_mix(
        pki: &DevPki,
        population: Population,
        count: usize,
        mix: Mix,
    ) -> anyhow::Result<Self> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.tls.client_ca)?)?;
        let mut connections = Vec::with_capacity(count);
        for index in 0..count as u64 {
            let office = (index * 7919) % population.offices;
            let fourth = index % 4 == 3;
            let role = match mix {
                Mix::Queries if fourth => Role::Insurer,
                Mix::Queries => Role::Office {
                    office,
                    logged_only: false,
                },
                Mix::LoggedReadsAndCommands if fourth => Role::Federation { office },
                Mix::Commands => Role::Federation { office },
                Mix::LoggedReadsAndCommands | Mix::LoggedReads => Role::Office {
                    office,
                    logged_only: true,
                },
            };
            let (principal, persons) = match role {
                Role::Insurer => {
                    let insurer = index / 4 % population.insurers;
                    (
                        Principal::Insurer(population.insurer(insurer)),
                        population.persons_of_insurer(insurer),
                    )
                }
                Role::Office { office, .. } => {
                    let terminal =
                        kiban_events::domain::TerminalId::parse(super::dataset::TERMINAL)?;
                    (
                        Principal::Office {
                            office: population.office(office),
                            terminal,
                        },
                        population.caseload(office),
                    )
                }
                Role::Federation { office } => (Principal::Federation, population.caseload(office)),
            };
            if persons.is_empty() {
                anyhow::bail!("a connection's principal sees nobody: use more --persons");
            }
            let files = pki
                .client(&principal)
                .ok_or_else(|| anyhow::anyhow!("no certificate for {}", principal.to_uri()))?;
            let client = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .identity(reqwest::Identity::from_pem(&std::fs::read(&files.pem)?)?)
                .http1_only()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(REQUEST_TIMEOUT_S))
                .build()?;
            connections.push(Arc::new(tokio::sync::Mutex::new(Connection {
                client,
                persons: Arc::new(persons),
                role,
                population,
                random: index,
                sent: index,
            })));
        }
        Ok(Self {
            connections,
            errors: Arc::default(),
            first_error: Arc::default(),
            office_person_reads: Arc::default(),
            commands_answered: Arc::default(),
        })
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// What the first failure said.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("not poisoned").clone()
    }

    /// Office reads of a person answered 200 so far, warm-ups included
    /// (against the API, each appended an access-log event).
    pub fn office_person_reads(&self) -> u64 {
        self.office_person_reads.load(Ordering::Relaxed)
    }

    /// Commands answered 2xx so far, warm-ups included (each appended one
    /// event).
    pub fn commands_answered(&self) -> u64 {
        self.commands_answered.load(Ordering::Relaxed)
    }

    /// Every connection sends its next request as soon as the previous one
    /// is answered, for `warmup + duration`; requests sent after the warm-up
    /// and answered before the end are returned.
    pub async fn closed_loop(
        &self,
        address: SocketAddr,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<Vec<Sample>> {
        let measure_from = Instant::now() + warmup;
        let end = measure_from + duration;
        let mut tasks = JoinSet::new();
        for connection in &self.connections {
            let (connection, recorder) = (connection.clone(), self.recorder(address));
            tasks.spawn(async move {
                let mut connection = connection.lock().await;
                let mut samples = Vec::new();
                while Instant::now() < end {
                    let sent = Instant::now();
                    if let Some(sample) = recorder.request(&mut connection).await
                        && sent >= measure_from
                        && sent + sample.latency <= end
                    {
                        samples.push(sample);
                    }
                }
                samples
            });
        }
        let mut samples = Vec::new();
        while let Some(done) = tasks.join_next().await {
            samples.extend(done?);
        }
        Ok(samples)
    }

    /// Requests issued on a fixed schedule at `rate` per second for
    /// `duration`, each on the next idle connection; the latency runs from
    /// the request's scheduled time.
    pub async fn open_loop(
        &self,
        address: SocketAddr,
        rate: f64,
        duration: Duration,
    ) -> anyhow::Result<OpenLoop> {
        let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel();
        for connection in &self.connections {
            idle_tx
                .send(connection.clone())
                .expect("the receiver is here");
        }
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        let mut samples = Vec::with_capacity(total as usize);
        for k in 0..total {
            let due = started + Duration::from_secs_f64(k as f64 / rate.max(f64::MIN_POSITIVE));
            tokio::time::sleep_until(due.into()).await;
            let connection = idle_rx.recv().await.expect("the sender is here");
            let (idle, recorder) = (idle_tx.clone(), self.recorder(address));
            tasks.spawn(async move {
                let mut guard = connection.lock().await;
                let answered = recorder.request(&mut guard).await;
                drop(guard);
                let _ = idle.send(connection);
                answered.map(|sample| Sample {
                    kind: sample.kind,
                    latency: due.elapsed(),
                })
            });
            while let Some(done) = tasks.try_join_next() {
                samples.extend(done?);
            }
        }
        while let Some(done) = tasks.join_next().await {
            samples.extend(done?);
        }
        Ok(OpenLoop {
            samples,
            elapsed: started.elapsed(),
        })
    }

    /// Every connection sends requests one after the other (errors
    /// expected: a fail-over is under way) until one sent at or after
    /// `since` is answered 2xx, or `bound` has passed; the earliest such
    /// answer's time, if any.
    pub async fn first_success_after(
        &self,
        address: SocketAddr,
        since: Instant,
        bound: Duration,
    ) -> Option<Instant> {
        let end = Instant::now() + bound;
        let mut tasks = JoinSet::new();
        for connection in &self.connections {
            let (connection, recorder) = (connection.clone(), self.recorder(address));
            tasks.spawn(async move {
                let mut connection = connection.lock().await;
                while Instant::now() < end {
                    let sent = Instant::now();
                    if recorder.request(&mut connection).await.is_some() && sent >= since {
                        return Some(Instant::now());
                    }
                    // A refused request comes back at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None
            });
        }
        let mut first: Option<Instant> = None;
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(at)) = done {
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        first
    }

    fn recorder(&self, address: SocketAddr) -> Recorder {
        Recorder {
            base: format!("https://{address}"),
            errors: self.errors.clone(),
            first_error: self.first_error.clone(),
            office_person_reads: self.office_person_reads.clone(),
            commands_answered: self.commands_answered.clone(),
        }
    }
}

/// Sends one request and counts what happened.
struct Recorder {
    base: String,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    office_person_reads: Arc<AtomicU64>,
    commands_answered: Arc<AtomicU64>,
}

impl Recorder {
    /// The request's sample when it was answered 2xx with its whole body;
    /// `None` (and an error counted) otherwise.
    async fn request(&self, connection: &mut Connection) -> Option<Sample> {
        let (kind, path) = connection.next_request();
        let sent = Instant::now();
        let url = format!("{}{path}", self.base);
        let request = match kind {
            Kind::ConsentRenewal => connection
                .client
                .post(url)
                .header("idempotency-key", uuid::Uuid::now_v7().to_string())
                .json(&connection.consent_body()),
            _ => connection.client.get(url),
        };
        let outcome = async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            anyhow::Ok((status, body))
        }
        .await;
        let latency = sent.elapsed();
        let failure = match outcome {
            Ok((status, _)) if status.is_success() => None,
            Ok((status, body)) => Some(format!(
                "{} {path}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            )),
            Err(error) => Some(format!("{path}: {error:#}")),
        };
        if let Some(failure) = failure {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("not poisoned")
                .get_or_insert(failure);
            return None;
        }
        if kind.logged() {
            self.office_person_reads.fetch_add(1, Ordering::Relaxed);
        }
        if kind == Kind::ConsentRenewal {
            self.commands_answered.fetch_add(1, Ordering::Relaxed);
        }
        Some(Sample { kind, latency })
    }
}

/// The ceiling's handler: a constant small JSON body, no state, no
/// authorisation — only what the TLS stack and hyper cost.
pub fn trivial_router() -> axum::Router {
    axum::Router::new().fallback(|| async { axum::Json(serde_json::json!({"ok": true})) })
}
