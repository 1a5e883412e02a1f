//! `kiban demo`: a small town through a compressed month, on the real
//! system (docs/demo.md).
//!
//! It starts the system as `kiban serve` does (store, projections, HTTPS
//! API with development certificates, ingest, office routing, timers) and
//! plays one insurer (131016), two care offices, a clinic and 50 insured
//! persons through one month, on a demo clock that starts 40 days ago and
//! moves a day at a time:
//!
//! - the municipality's messages go through the bus (in-process or NATS)
//!   and each waits for its receipt;
//! - the offices', the clinic's and the federation's actions go through the
//!   HTTPS API with the development client certificates;
//! - the offices' feeds are their routed updates (what each may see);
//! - the 30-day deadline of an undecided application is fired by the
//!   timers when the clock passes it.
//!
//! Driven through the engine directly: the insurer's onboarding (a
//! federation act, `POST /v1/insurers` outside the demo), and the
//! subsidy application, review, decision and payment (the subsidy routes are
//! being added to the API). The My Number card check before a consent is
//! SIMULATED (no card is read) and says so in the feed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use kiban_api::client::{Client, ClientError};
use kiban_api::{Clock, ConsentRecord, LostReport, ProxyApplication, paths};
use kiban_bus::ingest::{Receipt, ReceiptStatus};
use kiban_engine::{CommandContext, Engine};
use kiban_events::domain::TerminalId;
use kiban_events::domain::certification::ApplicationKind;
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::office::Loss;
use kiban_events::domain::office::{Office, office_stream};
use kiban_events::domain::subsidy::{
    ApplicantRecord, DesignationNotice, ReceiptLine, ReceiptPurpose, SubsidyApplicant,
    SubsidyApplication, SubsidyCommand, SubsidyPolicy, SubsidyState, SubsidyStatus,
    subsidy_stream_for_office,
};
use kiban_events::domain::{Decider, DocumentRef, ServiceTypeCode, Yen};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};
use kiban_events::{StreamName, UpdateNotice};
use kiban_store::Store;
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use kiban_bus::client::{Municipality, OfficeFeed, Outgoing, japanese_name};
use kiban_system::{ApiOptions, BusOptions, System, SystemBuilder, Tls};

/// The demo town's insurer (保険者番号).
pub const DEMO_INSURER: &str = "131016";
/// The care-plan office that files by proxy and applies for the subsidy.
pub const OFFICE_A: &str = "1312345678";
/// A second office, chosen by a person after a card check.
pub const OFFICE_B: &str = "1319876543";
/// The clinic asked for the doctors' opinions.
pub const CLINIC: &str = "1398765432";
/// Persons in the town.
pub const PERSONS: u32 = 50;
/// The subsidy the office is paid, in yen: two card readers (15,400) and
/// connection support (22,000), within the 64,000 limit of its category.
pub const SUBSIDY_EXPECTED_YEN: u64 = 37_400;
/// The demo's `KIBAN_EVENTS` size limit, in bytes (256 MiB).
pub const DEMO_EVENTS_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// How often the demo's timers tick, in milliseconds: a demo day passes in
/// about a second, so the timers look several times a day.
pub const DEMO_TIMER_INTERVAL_MS: u64 = 250;
/// How long the demo waits for a receipt or an update before it gives up.
const WAIT_SECS: u64 = 30;

/// What `kiban demo` was asked.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Plain output and exit after the story.
    pub script: bool,
    /// No pauses.
    pub fast: bool,
    /// NATS instead of the in-process bus.
    pub nats_url: Option<String>,
    /// Another store than the fresh SQLite file.
    pub database_url: Option<String>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where certificates (and the default database) go.
    pub data_dir: Option<PathBuf>,
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> anyhow::Result<ExitCode> {
    let (data_dir, _temporary) = match &options.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("kiban-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    let database_url = options
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("kiban.db").display()));
    let start = demo_start(Utc::now());
    let clock = DemoClock::new(start);
    let bus = match &options.nats_url {
        Some(url) => BusOptions::Nats {
            url: url.clone(),
            // A town's month is a few hundred events: a small KIBAN_EVENTS
            // fits any nats-server's storage.
            streams: kiban_bus::streams::StreamOptions {
                events_max_bytes: DEMO_EVENTS_MAX_BYTES,
                ..Default::default()
            },
        },
        None => BusOptions::InProcess,
    };
    let mut system = SystemBuilder::new(database_url, data_dir)
        .bus(bus)
        .api(Some(ApiOptions {
            listen: options.listen,
            tls: Tls::Development,
            card_trust: None,
        }))
        .clock(clock.as_clock())
        .timers(Some(Duration::from_millis(DEMO_TIMER_INTERVAL_MS)))
        .start()
        .await?;
    let out = Out::new(options.script, options.fast);
    out.title("kiban demo — 介護情報基盤 in a small town (一つの保険者、二つの事業所、一つの診療所、50人)");
    out.note(&format!(
        "API {} · {} · store {}",
        system.base_url().unwrap_or_default(),
        system.bus.describe(),
        kiban_system::redact_url(
            &options
                .database_url
                .clone()
                .unwrap_or_else(|| "SQLite (fresh)".into())
        )
    ));
    let story = Story::new(&system, clock.clone(), out.clone()).await?;
    let outcome = tokio::select! {
        outcome = story.play() => outcome,
        (task, error) = system.failed() => Err(anyhow::anyhow!("{task} stopped: {error}")),
    };
    if let Err(error) = outcome {
        system.shutdown().await;
        return Err(error);
    }
    clock.real_time();
    out.title("Explore the API (the demo keeps serving)");
    for line in system.curl_examples() {
        out.line(&format!("  {line}"));
    }
    for line in system.ui_login_lines() {
        out.line(&line);
    }
    if options.script {
        out.line("demo finished (script mode exits here)");
        system.shutdown().await;
        return Ok(ExitCode::SUCCESS);
    }
    out.line("Ctrl-C to stop.");
    let waited = tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
        (task, error) = system.failed() => Err(anyhow::anyhow!("{task} stopped: {error}")),
    };
    system.shutdown().await;
    waited.map(|()| ExitCode::SUCCESS)
}

/// 09:00 JST forty days before `now`: the story's month lies in the past,
/// so that every status message's time is before the real now. A month that
/// would cross an August 1st ends on the July 31st before it instead: the
/// copayment certificates' year runs from 8/1 to 7/31 (docs/domain.md), and
/// the story's renewal (day 22) must fall within the certificate of day 1.
/// (Started from `now` − 40 days alone, the demo failed when run from about
/// August 19th to September 8th.)
fn demo_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let mut day = (now - chrono::Duration::days(40)).date_naive();
    let last = day + chrono::Duration::days(STORY_LAST_DAY);
    let august = NaiveDate::from_ymd_opt(last.year(), 8, 1).expect("a valid date");
    if day < august && august <= last {
        day = august - chrono::Duration::days(STORY_LAST_DAY + 1);
    }
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
}

/// The story's last day (`at_day`'s largest argument).
const STORY_LAST_DAY: i64 = 32;

/// The demo's clock: a moving date during the story, the real time after.
#[derive(Clone)]
struct DemoClock {
    micros: Arc<AtomicI64>,
    start: DateTime<Utc>,
}

impl DemoClock {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            micros: Arc::new(AtomicI64::new(start.timestamp_micros())),
            start,
        }
    }

    fn as_clock(&self) -> Clock {
        let micros = self.micros.clone();
        Arc::new(move || match micros.load(Ordering::SeqCst) {
            0 => Utc::now(),
            at => Utc.timestamp_micros(at).single().unwrap_or_else(Utc::now),
        })
    }

    /// Day `n` of the story, 09:00 JST.
    fn day(&self, n: i64) -> DateTime<Utc> {
        self.start + chrono::Duration::days(n)
    }

    fn date(&self, n: i64) -> NaiveDate {
        (self.day(n) + chrono::Duration::hours(9)).date_naive()
    }

    fn set_day(&self, n: i64) {
        self.micros
            .store(self.day(n).timestamp_micros(), Ordering::SeqCst);
    }

    fn real_time(&self) {
        self.micros.store(0, Ordering::SeqCst);
    }
}

/// The feed's printer.
#[derive(Clone)]
struct Out {
    script: bool,
    fast: bool,
}

impl Out {
    fn new(script: bool, fast: bool) -> Self {
        Self { script, fast }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.script {
            text.to_owned()
        } else {
            format!("\x1b[{code}m{text}\x1b[0m")
        }
    }

    fn line(&self, text: &str) {
        println!("{text}");
    }

    fn title(&self, text: &str) {
        println!();
        println!("{}", self.paint("1", &format!("== {text}")));
    }

    fn note(&self, text: &str) {
        println!("   {}", self.paint("2", text));
    }

    fn day(&self, n: i64, date: NaiveDate, what: &str) {
        println!();
        println!(
            "{}",
            self.paint("1;36", &format!("-- day {n:>2} ({date}) {what}"))
        );
    }

    fn emitted(&self, kind: &str, who: &str, receipt: &Receipt) {
        let verdict = match receipt.status {
            ReceiptStatus::Accepted => format!(
                "accepted at {:?}",
                receipt.positions.clone().unwrap_or_default()
            ),
            ReceiptStatus::Rejected => format!(
                "REJECTED {} {}",
                receipt.code.clone().unwrap_or_default(),
                receipt.message.clone().unwrap_or_default()
            ),
        };
        println!(
            "   {} {kind} ({}) {who} → receipt {verdict}",
            self.paint("33", "municipality emitted"),
            japanese_name(kind)
        );
    }

    fn received(&self, office: &str, event: &UpdateNotice) {
        println!(
            "   {} {office} received #{} {} ({}) {}",
            self.paint("32", "office"),
            event.position,
            event.event_type.as_str(),
            japanese_name(event.event_type.as_str()),
            event.stream.as_str()
        );
    }

    fn api(&self, who: &str, method: &str, path: &str, status: u16, detail: &str) {
        println!(
            "   {} {who}: {method} {path} → {status} {detail}",
            self.paint("35", "API"),
        );
    }

    fn engine(&self, what: &str) {
        println!("   {} {what}", self.paint("34", "engine (direct)"));
    }

    async fn pause(&self) {
        if !self.fast {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
}

/// What the offices received, for the story to wait on.
#[derive(Default)]
struct Received {
    events: Mutex<Vec<(String, UpdateNotice)>>,
    changed: Notify,
}

impl Received {
    /// Waits until `office` received an event of `kind` on `stream`.
    async fn wait(&self, office: &str, kind: &str, stream: &str) -> anyhow::Result<UpdateNotice> {
        let search = async {
            loop {
                let notified = self.changed.notified();
                if let Some(found) = self
                    .events
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .find(|(o, e)| {
                        o == office && e.event_type.as_str() == kind && e.stream.as_str() == stream
                    })
                    .map(|(_, e)| e.clone())
                {
                    return found;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(WAIT_SECS), search)
            .await
            .with_context(|| format!("office {office} did not receive {kind} on {stream}"))
    }
}

/// The federation's principal (the consent platform).
const FEDERATION: &str = "kiban:federation";

/// Who acts in the story: the principals that call the API, and the town's
/// persons (the first four have parts; the rest are "the town").
struct Cast {
    office_t01: String,
    office_t02: String,
    office_b: String,
    clinic: String,
    persons: Vec<String>,
}

struct Story {
    clock: DemoClock,
    out: Out,
    engine: Arc<Engine<Store>>,
    projections: kiban_projections::Projections,
    municipality: tokio::sync::Mutex<Municipality>,
    received: Arc<Received>,
    /// A typed API client per development principal (its URI).
    clients: BTreeMap<String, Client>,
    /// A typed API client without a certificate: the person's (their
    /// session is a bearer token).
    person: Client,
    /// This run's number (from the wall clock's seconds), part of every
    /// insured number.
    run: u32,
}

impl Story {
    async fn new(system: &System, clock: DemoClock, out: Out) -> anyhow::Result<Story> {
        let dev = system
            .api()?
            .dev
            .as_ref()
            .context("the demo runs with development certificates")?;
        let ca = std::fs::read(&dev.tls.client_ca)?;
        let base = system.base_url().context("the demo runs with the API")?;
        let mut clients = BTreeMap::new();
        for client in &dev.clients {
            let pem = std::fs::read(&client.pem)?;
            let built = Client::new(&base, &ca, Some(&pem))?;
            clients.insert(client.principal.to_uri(), built);
        }
        let received = Arc::new(Received::default());
        for office in [OFFICE_A, OFFICE_B] {
            let mut feed = OfficeFeed::connect(&system.bus, OfficeNumber::parse(office)?).await?;
            let (received, out) = (received.clone(), out.clone());
            tokio::spawn(async move {
                while let Ok(event) = feed.next().await {
                    out.received(office, &event);
                    received
                        .events
                        .lock()
                        .expect("not poisoned")
                        .push((office.to_owned(), event));
                    received.changed.notify_waiters();
                }
            });
        }
        let municipality =
            Municipality::connect(&system.bus, InsurerNumber::parse(DEMO_INSURER)?).await?;
        Ok(Story {
            clock,
            out,
            engine: system.engine.clone(),
            projections: system.projections.clone(),
            municipality: tokio::sync::Mutex::new(municipality),
            received,
            clients,
            person: Client::new(&base, &ca, None)?,
            run: (Utc::now().timestamp() % 100_000) as u32,
        })
    }

    /// The insured number of the town's `n`-th person (1-based): a number
    /// made fresh for each run, so that the demo can run again on the same
    /// store.
    fn person(&self, n: u32) -> String {
        format!("9{:05}{n:04}", self.run)
    }

    async fn emit(
        &self,
        kind: &str,
        insured: Option<&str>,
        application: Option<u32>,
        day: i64,
        body: Value,
        quiet: bool,
    ) -> anyhow::Result<Receipt> {
        let message = Outgoing::from_json(json!({
            "event_id": Uuid::now_v7(),
            "kind": kind,
            "insurer": DEMO_INSURER,
            "insured": insured,
            "application": application,
            "occurred_at": self.clock.day(day) + chrono::Duration::hours(1),
            "body": body,
        }))?;
        let receipt = self
            .municipality
            .lock()
            .await
            .send(&message, Duration::from_secs(WAIT_SECS))
            .await?;
        if !quiet || receipt.status != ReceiptStatus::Accepted {
            let who = match (insured, application) {
                (Some(p), Some(a)) => format!("for {p} application {a}"),
                (Some(p), None) => format!("for {p}"),
                _ => String::new(),
            };
            self.out.emitted(kind, &who, &receipt);
        }
        if receipt.status != ReceiptStatus::Accepted {
            bail!("the municipality's {kind} was rejected: {receipt:?}");
        }
        // Read your writes across parties: whoever reads next sees at
        // least what the municipality was told is recorded.
        let position = receipt.positions.iter().flatten().max().copied();
        for client in self.clients.values() {
            client.observe(position.unwrap_or(0));
        }
        Ok(receipt)
    }

    /// The typed client of the development principal `who`.
    /// A consent for a year at `office`'s terminal T-01, recorded by the
    /// consent platform after a (simulated) card check of `person`.
    async fn card_consent(&self, office: &str, person: &str) -> anyhow::Result<()> {
        self.out.note(&format!(
            "[SIMULATED CARD] マイナンバーカード本人確認 at office {office} terminal T-01 for {person} — simulated, no card is read"
        ));
        let (insurer, insured) = Self::ids(person)?;
        let consent = ConsentRecord {
            office: office.to_owned(),
            terminal: "T-01".to_owned(),
            expires_at: self.clock.day(365),
        };
        self.api(
            "federation (consent platform)",
            ("POST", &paths::person(&insurer, &insured, "/consents")),
            self.client(FEDERATION)?
                .give_consent(&insurer, &insured, &consent),
            201,
        )
        .await?;
        Ok(())
    }

    fn client(&self, who: &str) -> anyhow::Result<&Client> {
        self.clients
            .get(who)
            .with_context(|| format!("no development certificate for {who}"))
    }

    /// The insurer's and the town's `person`'s numbers, typed.
    fn ids(person: &str) -> anyhow::Result<(InsurerNumber, InsuredNumber)> {
        Ok((
            InsurerNumber::parse(DEMO_INSURER)?,
            InsuredNumber::parse(person)?,
        ))
    }

    /// Awaits a call of the typed client, prints it (`method path →
    /// status`), and fails the demo unless it answered `expect`: a
    /// success status or a problem's.
    async fn api<T: serde::Serialize>(
        &self,
        label: &str,
        (method, path): (&str, &str),
        call: impl Future<Output = Result<T, ClientError>>,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = match call.await {
            Ok(answer) => {
                let value = serde_json::to_value(answer)?;
                // The server's statuses: 201 for a command recorded now,
                // 200 for a query or a command replayed under its key.
                let replayed = value.get("replayed") == Some(&Value::Bool(true));
                let status = if method == "GET" || replayed {
                    200
                } else {
                    201
                };
                (status, value)
            }
            Err(ClientError::Problem(problem)) => (problem.status, serde_json::to_value(problem)?),
            Err(error) => return Err(error).with_context(|| format!("{method} {path}")),
        };
        let detail = match value.get("type").and_then(Value::as_str) {
            Some(problem) => problem.to_owned(),
            None => String::new(),
        };
        self.out.api(label, method, path, status, &detail);
        if status != expect {
            bail!("{method} {path} answered {status}, expected {expect}: {value}");
        }
        Ok(value)
    }

    /// Office A's terminal T-01 reads a person's view at
    /// `/v1/persons/{insurer}/{insured}<rest>` (a read the access log records).
    async fn office_a_reads(
        &self,
        (insurer, insured, rest): (&InsurerNumber, &InsuredNumber, &str),
        call: impl Future<Output = Result<Value, ClientError>>,
    ) -> anyhow::Result<Value> {
        let path = paths::person(insurer, insured, rest);
        let label = format!("office {OFFICE_A} T-01 reads (logged)");
        self.api(&label, ("GET", &path), call, 200).await
    }

    async fn at_day(&self, n: i64, what: &str) {
        self.clock.set_day(n);
        self.out.day(n, self.clock.date(n), what);
        self.out.pause().await;
    }

    async fn play(&self) -> anyhow::Result<()> {
        let cast = Cast {
            office_t01: format!("kiban:office:{OFFICE_A}:terminal:T-01"),
            office_t02: format!("kiban:office:{OFFICE_A}:terminal:T-02"),
            office_b: format!("kiban:office:{OFFICE_B}:terminal:T-01"),
            clinic: format!("kiban:medical:{CLINIC}"),
            persons: (1..=PERSONS).map(|n| self.person(n)).collect(),
        };
        self.join(&cast).await?;
        self.consents_and_filing(&cast).await?;
        self.investigations(&cast).await?;
        self.visits_and_opinions(&cast).await?;
        self.judgments(&cast).await?;
        self.decisions(&cast).await?;
        self.renewal_and_home_modification(&cast).await?;
        self.care_plan_office(&cast).await?;
        self.card_reader_subsidy(&cast).await?;
        self.lost_terminal(&cast).await?;
        self.person_checks_record(&cast).await?;
        self.deadline(&cast).await?;
        self.out.title("the month is over");
        Ok(())
    }

    /// Day 0: the town joins the platform.
    async fn join(&self, _cast: &Cast) -> anyhow::Result<()> {
        self.at_day(0, "the town joins the platform (保険者の参加)")
            .await;
        self.join_platform().await?;
        self.out.note(&format!(
            "{PERSONS} insured persons live in the town (被保険者)"
        ));
        Ok(())
    }

    /// Day 1: consents (after a simulated card check) and applications, by proxy and by the town.
    async fn consents_and_filing(&self, cast: &Cast) -> anyhow::Result<()> {
        let office_t01 = &cast.office_t01;
        let town = &cast.persons[3..];
        let p1 = &cast.persons[0];
        let p2 = &cast.persons[1];
        let p3 = &cast.persons[2];
        self.at_day(1, "consents and proxy applications (同意・代行申請)")
            .await;
        for person in [p1, p2, p3] {
            self.card_consent(OFFICE_A, person).await?;
        }
        self.town(
            "certification.filed",
            town,
            1,
            |_, date| json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": date}),
        )
        .await?;
        for person in [p1, p2, p3] {
            let (insurer, insured) = Self::ids(person)?;
            let application = ProxyApplication {
                kind: ApplicationKind::New,
                applied_on: self.clock.date(1),
            };
            self.api(
                &format!("office {OFFICE_A} T-01 (代行申請)"),
                (
                    "POST",
                    &paths::person(&insurer, &insured, "/certifications"),
                ),
                self.client(office_t01)?
                    .file_application(&insurer, &insured, &application),
                201,
            )
            .await?;
            self.received
                .wait(
                    OFFICE_A,
                    "certification.filed",
                    &format!("certification/{DEMO_INSURER}-{person}-1"),
                )
                .await?;
        }
        Ok(())
    }

    /// Day 3: investigations scheduled, opinions requested; the clinic sees its requests.
    async fn investigations(&self, cast: &Cast) -> anyhow::Result<()> {
        let clinic = &cast.clinic;
        let town = &cast.persons[3..];
        let p1 = &cast.persons[0];
        let p2 = &cast.persons[1];
        let p3 = &cast.persons[2];
        self.at_day(3, "investigations and the clinic (認定調査・主治医意見書)")
            .await;
        for person in [p1, p2, p3] {
            self.emit(
                "certification.investigation_scheduled",
                Some(person),
                Some(1),
                3,
                json!({"scheduled_on": self.clock.date(8)}),
                false,
            )
            .await?;
            self.emit(
                "certification.opinion_requested",
                Some(person),
                Some(1),
                3,
                json!({"institution": CLINIC}),
                false,
            )
            .await?;
        }
        self.town(
            "certification.investigation_scheduled",
            town,
            3,
            |_, _| json!({"scheduled_on": self.clock.date(8)}),
        )
        .await?;
        self.town(
            "certification.opinion_requested",
            town,
            3,
            |_, _| json!({"institution": CLINIC}),
        )
        .await?;
        let requests = self
            .api(
                &format!("clinic {CLINIC}"),
                ("GET", &paths::opinion_requests(CLINIC)),
                self.client(clinic)?
                    .opinion_requests(&MedicalInstitutionCode::parse(CLINIC)?),
                200,
            )
            .await?;
        self.out.note(&format!(
            "the clinic sees {} opinion requests addressed to it",
            requests.as_array().map_or(0, Vec::len)
        ));
        Ok(())
    }

    /// Days 8 and 12: investigation visits, the clinic's opinions.
    async fn visits_and_opinions(&self, cast: &Cast) -> anyhow::Result<()> {
        let town = &cast.persons[3..];
        let p1 = &cast.persons[0];
        let p2 = &cast.persons[1];
        let p3 = &cast.persons[2];
        self.at_day(8, "investigation visits (訪問調査)").await;
        for person in [p1, p2, p3] {
            self.emit(
                "certification.investigation_completed",
                Some(person),
                Some(1),
                8,
                json!({"investigation_sheet": document('a')}),
                false,
            )
            .await?;
        }
        self.town(
            "certification.investigation_completed",
            town,
            8,
            |_, _| json!({"investigation_sheet": document('a')}),
        )
        .await?;
        self.at_day(12, "the clinic's opinions arrive").await;
        self.out.note("(the clinic's document upload route is not in the API yet: the municipality reports the opinion)");
        for person in [p1, p2] {
            self.emit(
                "certification.opinion_received",
                Some(person),
                Some(1),
                12,
                json!({"institution": CLINIC, "opinion": document('b')}),
                false,
            )
            .await?;
        }
        self.town(
            "certification.opinion_received",
            town,
            12,
            |_, _| json!({"institution": CLINIC, "opinion": document('b')}),
        )
        .await?;
        Ok(())
    }

    /// Days 15 and 20: primary judgment and the certification committee.
    async fn judgments(&self, cast: &Cast) -> anyhow::Result<()> {
        self.at_day(15, "primary judgment (一次判定)").await;
        self.judgment(cast, "certification.primary_judgment_recorded", 15)
            .await?;
        self.at_day(20, "certification committee (介護認定審査会)")
            .await;
        self.judgment(cast, "certification.secondary_judgment_recorded", 20)
            .await
    }

    /// One judgment of `kind` on `day`: 要介護2 for the first two persons,
    /// the town's own level for everyone else.
    async fn judgment(&self, cast: &Cast, kind: &str, day: i64) -> anyhow::Result<()> {
        for person in &cast.persons[..2] {
            self.emit(
                kind,
                Some(person),
                Some(1),
                day,
                json!({"level": "care_2"}),
                false,
            )
            .await?;
        }
        let town = &cast.persons[3..];
        self.town(kind, town, day, |n, _| json!({"level": town_level(n)}))
            .await
    }

    /// Day 21: decisions reach the office; first copayment certificates.
    async fn decisions(&self, cast: &Cast) -> anyhow::Result<()> {
        let office_t01 = &cast.office_t01;
        let town = &cast.persons[3..];
        let p1 = &cast.persons[0];
        let p2 = &cast.persons[1];
        self.at_day(21, "decisions (認定 決定)").await;
        for person in [p1, p2] {
            self.emit(
                "certification.decided",
                Some(person),
                Some(1),
                21,
                json!({"level": "care_2", "validity": null}),
                false,
            )
            .await?;
            let decided = self
                .received
                .wait(
                    OFFICE_A,
                    "certification.decided",
                    &format!("certification/{DEMO_INSURER}-{person}-1"),
                )
                .await?;
            self.out.line(&format!(
                "   ✔ office {OFFICE_A} received the decision for {person} (要介護2) at position {}",
                decided.position));
        }
        self.town(
            "certification.decided",
            town,
            21,
            |n, _| json!({"level": town_level(n), "validity": null}),
        )
        .await?;
        for person in [p1, p2] {
            self.emit(
                "insured.copayment_certificate_issued",
                Some(person),
                None,
                21,
                json!({"ratio": 1, "valid_from": self.clock.date(1)}),
                false,
            )
            .await?;
        }
        // A first certificate starts on the first day of the certification.
        self.town(
            "insured.copayment_certificate_issued",
            town,
            21,
            |_, _| json!({"ratio": 1, "valid_from": self.clock.date(1)}),
        )
        .await?;
        let (insurer, insured) = Self::ids(p1)?;
        let eligibility = self
            .office_a_reads(
                (&insurer, &insured, "/eligibility"),
                self.client(office_t01)?.eligibility(&insurer, &insured),
            )
            .await?;
        let level = shown(&eligibility, "/certification/level");
        self.out
            .note(&format!("eligibility of {p1}: care level {level}"));
        Ok(())
    }

    /// Days 22 and 23: a certificate renewed; a home modification.
    async fn renewal_and_home_modification(&self, cast: &Cast) -> anyhow::Result<()> {
        let office_t01 = &cast.office_t01;
        let p1 = &cast.persons[0];
        let p2 = &cast.persons[1];
        self.at_day(
            22,
            "certificate renewal (負担割合証の更新: 1割 → 2割 after an income review)",
        )
        .await;
        self.emit(
            "insured.copayment_certificate_issued",
            Some(p1),
            None,
            22,
            json!({"ratio": 2, "valid_from": self.clock.date(22)}),
            false,
        )
        .await?;
        self.received
            .wait(
                OFFICE_A,
                "insured.copayment_certificate_issued",
                &format!("insured/{DEMO_INSURER}-{p1}"),
            )
            .await?;

        self.at_day(23, "home modification (住宅改修)").await;
        self.emit("insured.home_modification_applied", Some(p2), None, 23,
            json!({"prior_application": 1, "applied_on": self.clock.date(23), "planned_cost": 150000}), false).await?;
        self.emit(
            "insured.home_modification_work_recorded",
            Some(p2),
            None,
            26,
            json!({"prior_application": 1, "work_started_on": self.clock.date(24),
                "receipt_on": self.clock.date(26), "cost": 150000}),
            false,
        )
        .await?;
        let (insurer, insured) = Self::ids(p2)?;
        let ledgers = self
            .office_a_reads(
                (&insurer, &insured, "/ledgers"),
                self.client(office_t01)?.ledgers(&insurer, &insured),
            )
            .await?;
        let remaining = shown(&ledgers, "/home_modification_remaining");
        self.out.note(&format!(
            "home modification remaining for {p2}: ¥{remaining}"
        ));
        Ok(())
    }

    /// Day 24: a care-plan office chosen after a card check.
    async fn care_plan_office(&self, cast: &Cast) -> anyhow::Result<()> {
        let office_b = &cast.office_b;
        let p4 = &cast.persons[3];
        self.at_day(
            24,
            "a care-plan office chosen after a card check (居宅サービス計画作成依頼届出)",
        )
        .await;
        self.card_consent(OFFICE_B, p4).await?;
        self.emit("insured.care_plan_office_registered", Some(p4), None, 24,
            json!({"office": OFFICE_B, "office_kind": "home_care_support_office", "filed_on": self.clock.date(24)}), false).await?;
        self.received
            .wait(
                OFFICE_B,
                "insured.care_plan_office_registered",
                &format!("insured/{DEMO_INSURER}-{p4}"),
            )
            .await?;
        self.api(
            &format!("office {OFFICE_B} T-01"),
            ("GET", &paths::caseload(OFFICE_B)),
            self.client(office_b)?
                .caseload(&OfficeNumber::parse(OFFICE_B)?, None, None),
            200,
        )
        .await?;
        Ok(())
    }

    /// Day 25: the card-reader subsidy, applied for and paid.
    async fn card_reader_subsidy(&self, _cast: &Cast) -> anyhow::Result<()> {
        let federation = FEDERATION;
        self.at_day(25, "card-reader subsidy (補助金申請・審査・支払)")
            .await;
        let paid = self.subsidy().await?;
        self.out.line(&format!(
            "   ✔ subsidy paid: {} (expected {})",
            yen(paid),
            yen(SUBSIDY_EXPECTED_YEN)
        ));
        // The read models follow the store; the API answers from them.
        let head = self.engine.store().head().await?.position;
        self.projections.wait_for(head).await?;
        let subsidies = self
            .api(
                "federation",
                ("GET", paths::SUBSIDIES),
                self.client(federation)?.subsidies(),
                200,
            )
            .await?;
        for subsidy in subsidies.as_array().into_iter().flatten() {
            self.out.note(&format!(
                "the federation's list (read model): {} status {}, payable {}",
                subsidy["application"].as_str().unwrap_or("?"),
                subsidy["status"].as_str().unwrap_or("?"),
                yen(subsidy["payable"].as_u64().unwrap_or(0))
            ));
        }
        Ok(())
    }

    /// Day 29: the person's side. The first person signs in to their own
    /// view (`/v1/me`; the card check simulated, as for the consents),
    /// sees their record, and which office read it, when and why.
    async fn person_checks_record(&self, cast: &Cast) -> anyhow::Result<()> {
        let p1 = &cast.persons[0];
        self.at_day(29, "a person checks their own record (ご本人の閲覧)")
            .await;
        self.out.note(&format!(
            "[SIMULATED CARD] {p1} signs in to their own view with the My Number card — simulated, no card is read (`kiban card sign-in` reads a real one)"
        ));
        let (insurer, insured) = Self::ids(p1)?;
        let session = kiban_api::me::open_simulated_session(
            self.projections.db(),
            &insurer,
            &insured,
            self.clock.day(29),
        )
        .await?;
        let who = format!("person {p1} (logged)");
        let record = self
            .api(
                &who,
                ("GET", paths::ME),
                self.person.my_record(&session.token),
                200,
            )
            .await?;
        self.out.note(&format!(
            "{p1} sees their care level {} and {} consent(s)",
            record["eligibility"]["certification"]["level"]
                .as_str()
                .unwrap_or("-"),
            record["consents"].as_array().map_or(0, Vec::len),
        ));
        let log = self
            .api(
                &who,
                ("GET", paths::ME_ACCESS_LOG),
                self.person.my_access_log(&session.token),
                200,
            )
            .await?;
        let reads: Vec<&Value> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["reader"] == "office")
            .collect();
        if reads.is_empty() {
            bail!("the person sees no office's read of their record: {log}");
        }
        let text = |entry: &Value, key: &str| entry[key].as_str().unwrap_or("-").to_owned();
        for entry in reads {
            self.out.line(&format!(
                "   ✔ {p1} sees: office {} terminal {} read the record at {} (basis {})",
                text(entry, "office"),
                text(entry, "terminal"),
                text(entry, "viewed_at"),
                text(entry, "basis"),
            ));
        }
        Ok(())
    }

    /// Day 28: a lost terminal is refused.
    async fn lost_terminal(&self, cast: &Cast) -> anyhow::Result<()> {
        let office_t01 = &cast.office_t01;
        let office_t02 = &cast.office_t02;
        self.at_day(28, "a lost terminal (端末紛失)").await;
        if self.terminal_suspended(OFFICE_A, "T-02").await? {
            self.out
                .note("T-02 was reported lost by an earlier run on this store");
        } else {
            // T-02 is the office's last other active terminal: T-01 may not
            // report it (a stolen T-01 would keep the office out so); the
            // office calls the portal, which reports it as the federation
            // (docs/security.md, "A stolen terminal: what an office does").
            let report = LostReport { loss: Loss::Lost };
            self.api(
                &format!("office {OFFICE_A} T-01 reports T-02 lost"),
                ("POST", &paths::terminal_lost(OFFICE_A, "T-02")),
                self.client(office_t01)?.report_terminal_lost(
                    &OfficeNumber::parse(OFFICE_A)?,
                    "T-02",
                    &report,
                ),
                403,
            )
            .await?;
            self.api(
                "the portal (federation) reports T-02 lost for the office",
                ("POST", &paths::terminal_lost(OFFICE_A, "T-02")),
                self.client(FEDERATION)?.report_terminal_lost(
                    &OfficeNumber::parse(OFFICE_A)?,
                    "T-02",
                    &report,
                ),
                201,
            )
            .await?;
        }
        let refused = self
            .api(
                &format!("office {OFFICE_A} T-02 (the lost terminal)"),
                ("GET", &paths::caseload(OFFICE_A)),
                self.client(office_t02)?
                    .caseload(&OfficeNumber::parse(OFFICE_A)?, None, None),
                403,
            )
            .await?;
        self.out.line(&format!(
            "   ✔ the lost terminal is refused: {}",
            refused.get("type").and_then(Value::as_str).unwrap_or("?")
        ));
        Ok(())
    }

    /// Day 32: the timers fire the 30-day deadline.
    async fn deadline(&self, cast: &Cast) -> anyhow::Result<()> {
        let p3 = &cast.persons[2];
        self.at_day(32, "30 days without a decision (処理期限)")
            .await;
        self.out.note(&format!(
            "the timers see {p3}'s application, filed on day 1, still undecided"
        ));
        self.received
            .wait(
                OFFICE_A,
                "certification.deadline_reached",
                &format!("certification/{DEMO_INSURER}-{p3}-1"),
            )
            .await?;
        self.out.line(&format!(
            "   ✔ office {OFFICE_A} was told {p3}'s application passed its 30-day deadline"
        ));
        Ok(())
    }

    /// The same message for every person of `town` (the persons the story
    /// does not follow one by one), printed as one summary line.
    async fn town(
        &self,
        kind: &str,
        town: &[String],
        day: i64,
        body: impl Fn(usize, NaiveDate) -> Value,
    ) -> anyhow::Result<()> {
        let application = kind.starts_with("certification.").then_some(1);
        for (n, person) in town.iter().enumerate() {
            self.emit(
                kind,
                Some(person),
                application,
                day,
                body(n, self.clock.date(day)),
                true,
            )
            .await?;
        }
        self.out.line(&format!(
            "   {} {kind} ({}) for {} more persons of the town → {} receipts, all accepted",
            self.out.paint("33", "municipality emitted"),
            japanese_name(kind),
            town.len(),
            town.len()
        ));
        Ok(())
    }

    async fn run_engine<D: Decider>(
        &self,
        stream: &StreamName,
        command: &D::Command,
        actor: Actor,
        day: i64,
    ) -> anyhow::Result<()>
    where
        D::State: Send + Sync + 'static,
    {
        let context = CommandContext::new(
            EventId::from_uuid(Uuid::now_v7())?,
            actor,
            self.clock.day(day),
        );
        self.engine.execute::<D>(stream, command, &context).await?;
        Ok(())
    }

    /// The insurer joins: onboarded by the federation, then the
    /// municipality reports standardisation and data transmission done
    /// (sharing turns on) — unless an earlier run on this store did.
    async fn join_platform(&self) -> anyhow::Result<()> {
        let insurer = InsurerNumber::parse(DEMO_INSURER)?;
        let stream = insurer_stream(&insurer);
        let (state, version) = self.engine.load::<Insurer>(&stream).await?;
        if version > 0 {
            self.out.engine(&format!(
                "insurer {DEMO_INSURER} is already on the platform (an earlier run on this store)"
            ));
            if state.sharing_enabled() {
                return Ok(());
            }
        } else {
            self.run_engine::<Insurer>(
                &stream,
                &InsurerCommand::Onboard { insurer },
                Actor::Federation,
                0,
            )
            .await?;
            self.out.engine(&format!(
                "the federation onboards insurer {DEMO_INSURER} (what POST /v1/insurers records)"
            ));
        }
        for kind in [
            "insurer.standardisation_completed",
            "insurer.data_transmission_completed",
        ] {
            let body = json!({"completed_on": self.clock.date(0)});
            self.emit(kind, None, None, 0, body, false).await?;
        }
        Ok(())
    }

    async fn terminal_suspended(&self, office: &str, terminal: &str) -> anyhow::Result<bool> {
        let stream = office_stream(&OfficeNumber::parse(office)?);
        let (state, _) = self.engine.load::<Office>(&stream).await?;
        Ok(state
            .terminals
            .get(&TerminalId::parse(terminal)?)
            .is_some_and(|t| t.suspended))
    }

    /// The office's card-reader subsidy from application to payment;
    /// returns the amount paid.
    async fn subsidy(&self) -> anyhow::Result<u64> {
        let office = OfficeNumber::parse(OFFICE_A)?;
        let mut seq = 1;
        let stream = loop {
            let stream = subsidy_stream_for_office(&office, seq);
            let (_, version) = self.engine.load::<SubsidyApplication>(&stream).await?;
            if version == 0 {
                break stream;
            }
            seq += 1;
        };
        let service = ServiceTypeCode::parse(kiban_system::dev_pki::DEV_OFFICE_SERVICE_TYPE)?;
        let policy = SubsidyPolicy {
            window_from: self.clock.date(-30),
            window_until: self.clock.date(200),
            closing_month_from: self.clock.date(400),
            medical_institution_limit: None,
        };
        let apply = SubsidyCommand::Apply {
            applicant: SubsidyApplicant::CareOffice {
                office: office.clone(),
                service_types: vec![service.clone()],
                designation_notices: vec![DesignationNotice {
                    service_type: service,
                    document: document_ref('c'),
                }],
            },
            reader_count: 2,
            receipt_lines: vec![
                ReceiptLine {
                    purpose: Some(ReceiptPurpose::CardReaders { count: 2 }),
                    amount: Yen::new(15_400),
                    receipt: document_ref('d'),
                },
                ReceiptLine {
                    purpose: Some(ReceiptPurpose::ConnectionSupport),
                    amount: Yen::new(22_000),
                    receipt: document_ref('e'),
                },
            ],
            passbook: document_ref('f'),
            policy,
            // The demo runs again on the same store with the same receipts;
            // each run is judged as the office's first application (the
            // per-office judgement across applications is the API's, see
            // `api/src/subsidies.rs`).
            record: ApplicantRecord {
                registered_service_types: vec![ServiceTypeCode::parse(
                    kiban_system::dev_pki::DEV_OFFICE_SERVICE_TYPE,
                )?],
                earlier: Vec::new(),
            },
        };
        let office_actor = Actor::parse(&format!("office:{OFFICE_A}"))?;
        self.run_engine::<SubsidyApplication>(&stream, &apply, office_actor, 25)
            .await?;
        self.out.engine(&format!(
            "office {OFFICE_A} applies: 2 card readers ¥15,400 + connection support ¥22,000 (subsidy routes are not in the API yet)"
        ));
        self.run_engine::<SubsidyApplication>(
            &stream,
            &SubsidyCommand::StartReview,
            Actor::Federation,
            26,
        )
        .await?;
        self.out
            .engine("the federation (国保中央会) starts the review");
        self.run_engine::<SubsidyApplication>(
            &stream,
            &SubsidyCommand::Decide {
                earlier: Vec::new(),
                medical_institution_limit: None,
            },
            Actor::Federation,
            27,
        )
        .await?;
        let decided = self.subsidy_state(&stream).await?;
        let amount = decided
            .decision
            .map(|decision| decision.payable)
            .context("the subsidy has no decision")?;
        self.out.engine(&format!(
            "the federation decides {} (交付決定)",
            yen(amount.get())
        ));
        self.run_engine::<SubsidyApplication>(
            &stream,
            &SubsidyCommand::Pay { amount },
            Actor::Federation,
            28,
        )
        .await?;
        let paid = self.subsidy_state(&stream).await?;
        if paid.status != SubsidyStatus::Paid {
            bail!("the subsidy is {:?}, not paid", paid.status);
        }
        self.out.engine(&format!(
            "the federation pays {} — {stream} is paid",
            yen(amount.get())
        ));
        Ok(amount.get())
    }

    async fn subsidy_state(&self, stream: &StreamName) -> anyhow::Result<SubsidyState> {
        Ok(self.engine.load::<SubsidyApplication>(stream).await?.0)
    }
}

/// `¥37,400`.
/// The JSON value at `pointer` in `view` as printed, or nothing.
fn shown(view: &Value, pointer: &str) -> String {
    view.pointer(pointer)
        .map(Value::to_string)
        .unwrap_or_default()
}

fn yen(amount: u64) -> String {
    let digits = amount.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    format!("¥{out}")
}

/// The care level of the town's `n`-th person.
fn town_level(n: usize) -> &'static str {
    ["care_1", "care_2", "care_3", "support_2", "care_4"][n % 5]
}

/// A document reference as a message body carries it (a digest, not the
/// document).
fn document(fill: char) -> Value {
    json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 48213})
}

fn document_ref(fill: char) -> DocumentRef {
    serde_json::from_value(document(fill)).expect("a valid document reference")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiban_events::domain::dates::next_july_31;

    /// Whatever day the demo is started on, its month lies in the past,
    /// within one copayment year (8/1–7/31), and not far back.
    #[test]
    fn the_story_fits_one_copayment_year_on_every_day_it_can_be_started() {
        let mut today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        while today <= NaiveDate::from_ymd_opt(2029, 12, 31).unwrap() {
            let now = Utc.from_utc_datetime(&today.and_hms_opt(3, 0, 0).unwrap());
            let clock = DemoClock::new(demo_start(now));
            let (first, last) = (clock.date(1), clock.date(STORY_LAST_DAY));
            assert_eq!(
                next_july_31(first),
                next_july_31(last),
                "started on {today}: the story's days 1 ({first}) to {STORY_LAST_DAY} ({last}) \
                 cross an August 1st"
            );
            assert!(
                clock.day(STORY_LAST_DAY) < now,
                "started on {today}: ends at {last}"
            );
            assert!(
                now - clock.day(0) <= chrono::Duration::days(40 + STORY_LAST_DAY + 1),
                "started on {today}: begins {} days back",
                (now - clock.day(0)).num_days()
            );
            today = today.succ_opt().unwrap();
        }
    }
}
