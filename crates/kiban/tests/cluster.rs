//! Many kiban processes, one history (issue 20): real `kiban serve`
//! processes on loopback — PostgreSQL, one nats-server with JetStream (or a
//! three-node cluster, second test), two `--role engine` (each with its own
//! data directory) and three `--role api` behind HAProxy running
//! `deploy/haproxy.cfg` (TLS pass-through, `/readyz` health checks) — under
//! a bounded mixed load over HTTPS with client certificates through the
//! load balancer (offices' logged reads and proxy applications, the
//! federation's consents, the insurer's investigation sheets) and a
//! municipality's status messages over NATS, while the test kills -9 the
//! writing engine, later one API process, and (on the cluster) one NATS
//! node.
//!
//! Asserted, after the load:
//! - every command answered 2xx is in the store, each of its events once,
//!   on the stream the answer named;
//! - every logged read that returned data has its `insured.record_viewed`
//!   (per person: reads answered ≤ views recorded);
//! - errors occur only inside the fail-over windows the test measures:
//!   requests that overlapped the writer's outage (ended after its kill,
//!   began before the first command committed by the new writer), or
//!   overlapped the time between the API process's kill and HAProxy
//!   marking it down;
//! - a proxy application answered before the kill, sent again with its
//!   Idempotency-Key after the fail-over, is answered with its first result;
//! - every municipal message has an accepted receipt and is stored once,
//!   at the position its receipt named;
//! - the new writer's office routing continues from the old writer's
//!   checkpoint (shared in JetStream): nothing routed well before the kill
//!   is routed again;
//! - the hash chain verifies;
//! - the standby engine became the writer (it finished starting only after
//!   the kill, and the remaining API process reaches it);
//! - with no engine left, `/readyz` of the API process answers 503.
//!
//! A third test ends the writing engine's database session from outside:
//! the engine must exit non-zero (fencing) and the standby take over.
//!
//! The fail-over time (kill -9 → first command committed) is printed; it is
//! bounded only generously (a minute), never asserted tightly.
//!
//! Needs `KIBAN_TEST_DATABASE_URL` (a PostgreSQL server; `scripts/test` sets
//! it) and nats-server (`KIBAN_TEST_NATS_SERVER` or on the PATH).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{INSURER, KIBAN, OFFICE, bounded};
use kiban_api::client::{CertificationDocument, Client, ClientError};
use kiban_api::{ConsentRecord, Principal, ProxyApplication};
use kiban_engine::{CommandContext, Engine};
use kiban_events::domain::certification::{ApplicationKind, ValidityPeriod};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::{CareLevel, CopaymentRatio};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_store::Store;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

/// Persons of the load; each worker owns a few, so that its consent comes
/// before its reads and its one application before its uploads.
const PERSONS: u64 = 12;
/// Concurrent workers.
const WORKERS: u64 = 4;
/// Most operations per worker: bounds the load whatever happens.
const OPS_PER_WORKER_MAX: usize = 1500;
/// Commands committed between two phases of the test.
const COMMANDS_PER_PHASE: u64 = 40;
/// Where the test's direct clients of an API process behind HAProxy
/// connect from: a loopback address other than HAProxy's, so that the
/// process does not expect a PROXY protocol header from them.
const DIRECT_SOURCE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// A generous bound on the writer's fail-over, only to turn a hang into a
/// failure.
const FAILOVER_MAX: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_kill_9_of_the_writer_and_of_an_api_process() {
    let nats = Nats::One(kiban_bus::testing::NatsServer::start().await.unwrap());
    scenario(nats).await;
}

/// The same on a three-node NATS cluster (streams with three replicas),
/// and then one NATS node is killed as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_on_three_nats_nodes_survives_kill_9_of_the_writer_an_api_process_and_a_nats_node()
{
    let cluster = kiban_bus::testing::NatsCluster::start().await.unwrap();
    let bus = kiban_bus::client::Bus::connect_nats(&cluster.urls().join(","))
        .await
        .unwrap();
    let client = bus.nats_client().expect("a NATS bus");
    bounded(
        "a JetStream meta leader",
        cluster.wait_for_jetstream(client),
    )
    .await
    .unwrap();
    drop(bus);
    scenario(Nats::Cluster(cluster)).await;
}

/// Fencing: when the writing engine's lock connection is ended from
/// outside (a database fail-over, an operator), `kiban serve --role engine`
/// stops its parts and exits non-zero, so that its supervisor starts it
/// again as a standby; the standby takes over meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_engine_that_loses_its_lock_connection_exits_non_zero() {
    let nats = Nats::One(kiban_bus::testing::NatsServer::start().await.unwrap());
    let database = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut engine_1 = Proc::engine(&dir, "engine-1", &database.url, &nats).await;
    engine_1.wait_for_line("Ctrl-C to stop").await;
    let mut engine_2 = Proc::engine(&dir, "engine-2", &database.url, &nats).await;
    engine_2.wait_for_line("waiting for the writer lock").await;

    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    // The writer lock's key is the bytes `kibanwri` as a big-endian i64
    // (docs/store.md); pg_locks shows a bigint key as its high and low 32
    // bits. Other advisory locks (sqlx's migration lock, taken for a moment
    // by a process opening the database) are not the writer's.
    let key = *b"kibanwri";
    let high = i64::from(u32::from_be_bytes([key[0], key[1], key[2], key[3]]));
    let low = i64::from(u32::from_be_bytes([key[4], key[5], key[6], key[7]]));
    let ended: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND classid::bigint = $1 AND objid::bigint = $2 AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(high)
    .bind(low)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, [(true,)], "one session held the writer lock");
    let _ = admin.close().await;

    let status = bounded("engine 1 to stop", engine_1.child.wait())
        .await
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(
        engine_1.log_tail().contains("lost the writer lock"),
        "{}",
        engine_1.log_tail()
    );
    engine_2.wait_for_line("Ctrl-C to stop").await;
    drop(engine_2);
    database.drop_it().await;
}

/// Live updates fanned out by NATS (issue 20 item 4): an API process
/// serves an office's update stream from the office's NATS subject, not
/// from the store; what the engine process commits reaches it; a stream
/// resumed with `Last-Event-ID` after a disconnect gets exactly the events
/// the office may see after that id (replayed from the store), then live
/// ones (from NATS), each once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_office_updates_reach_an_api_process_through_nats_and_resume_exactly() {
    let pair = Pair::start().await;
    let (p0, p1) = (&pair.persons[0], &pair.persons[1]);
    let (federation, office_client, insurer_client) = (
        pair.balancer.client(0, &federation()),
        pair.balancer.client(0, &office()),
        pair.balancer.client(0, &insurer_principal()),
    );
    let database = &pair.database;
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let office_number = kiban_events::ids::OfficeNumber::parse(OFFICE).unwrap();
    let consent = ConsentRecord {
        office: OFFICE.to_owned(),
        terminal: "T-01".to_owned(),
        expires_at: Utc::now() + chrono::Duration::days(365),
    };
    let store = kiban_system::open_store(&database.url).await.unwrap();
    let consented = federation
        .give_consent(&insurer, p0, &consent)
        .await
        .unwrap();
    let start = consented.positions.iter().copied().max().unwrap();

    // Two streams of the office on the API process (one subscription).
    let mut first = office_client
        .office_updates(&office_number, None)
        .await
        .unwrap();
    let mut second = office_client
        .office_updates(&office_number, None)
        .await
        .unwrap();
    let application = ProxyApplication {
        kind: ApplicationKind::Change,
        applied_on: Utc::now().date_naive(),
    };
    let filed = office_client
        .file_application(&insurer, p0, &application)
        .await
        .unwrap();
    let live = routed_between(&store, start, max_position(&filed)).await;
    assert!(!live.is_empty(), "an application is routed to the office");
    let a = *live.last().unwrap();
    assert_eq!(ids_until(&mut first, a).await, live, "first stream");
    assert_eq!(ids_until(&mut second, a).await, live, "second stream");
    drop(first);
    drop(second);

    // While no stream is open: a consent (never routed), an application of
    // the second person, an investigation sheet of the first.
    federation
        .give_consent(&insurer, p1, &consent)
        .await
        .unwrap();
    office_client
        .file_application(&insurer, p1, &application)
        .await
        .unwrap();
    let seq = sequence_of(&filed);
    let sheet = b"%PDF-1.4\n% investigation sheet\n%%EOF\n".to_vec();
    let uploaded = insurer_client
        .upload_certification_document(
            &insurer,
            p0,
            seq,
            CertificationDocument::InvestigationSheet,
            "application/pdf",
            sheet,
        )
        .await
        .unwrap();
    let missed = routed_between(&store, a, max_position(&uploaded)).await;
    assert!(missed.len() >= 2, "{missed:?}");
    let mut resumed = office_client
        .office_updates(&office_number, Some(a))
        .await
        .unwrap();
    assert_eq!(
        ids_until(&mut resumed, *missed.last().unwrap()).await,
        missed,
        "replayed after Last-Event-ID {a}"
    );
    // Then live again, on the same stream.
    let again = insurer_client
        .upload_certification_document(
            &insurer,
            p0,
            seq,
            CertificationDocument::InvestigationSheet,
            "application/pdf",
            b"%PDF-1.4\n% second sheet\n%%EOF\n".to_vec(),
        )
        .await
        .unwrap();
    let after = routed_between(&store, *missed.last().unwrap(), max_position(&again)).await;
    assert!(!after.is_empty());
    assert_eq!(
        ids_until(&mut resumed, *after.last().unwrap()).await,
        after,
        "live after the replay"
    );
    drop(resumed);
    store.close().await;
    pair.stop().await;
}

/// The office's web screen (`/ui/events`) on an API process gets the
/// consent events naming its own office — its care-plan page waits for
/// them — as in one process (`--role all`), though they are not in the
/// office's NATS feed: the routing sends them to API processes on
/// `kiban.offices.<office>.consents`. Not another office's consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_office_screen_on_an_api_process_gets_its_own_offices_consents() {
    let pair = Pair::start().await;
    let (p0, p1) = (&pair.persons[0], &pair.persons[1]);
    let (base, database) = (&pair.base, &pair.database);
    let (federation, office_client) = (
        pair.balancer.client(0, &federation()),
        pair.balancer.client(0, &office()),
    );
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let consent_to = |office: &str| ConsentRecord {
        office: office.to_owned(),
        terminal: "T-01".to_owned(),
        expires_at: Utc::now() + chrono::Duration::days(365),
    };
    // The office may see both persons (before the screen opens).
    for person in [p0, p1] {
        federation
            .give_consent(&insurer, person, &consent_to(OFFICE))
            .await
            .unwrap();
    }
    let screen = screen_session(&pair.pki, base, &database.url).await;
    let mut events = bounded(
        "the screen's update stream",
        screen
            .client
            .get(format!("{base}/ui/events"))
            .header("cookie", &screen.cookies)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(events.status(), 200);
    let mut buffer = String::new();

    let application = ProxyApplication {
        kind: ApplicationKind::Change,
        applied_on: Utc::now().date_naive(),
    };
    let store = kiban_system::open_store(&database.url).await.unwrap();
    // First a routed update, received: from here on the stream is live
    // (its replay from the store has ended), and what follows comes from
    // NATS.
    let head = store.head().await.unwrap().position;
    let filed = office_client
        .file_application(&insurer, p0, &application)
        .await
        .unwrap();
    let routed = routed_between(&store, head, max_position(&filed)).await;
    assert!(!routed.is_empty(), "an application is routed to the office");
    let last = *routed.last().unwrap();
    assert_eq!(
        screen_ids_until(&mut events, &mut buffer, last).await,
        routed
    );

    // Another office's consent: not this screen's; then the own office's
    // (a renewal).
    federation
        .give_consent(&insurer, p0, &consent_to("1399999999"))
        .await
        .unwrap();
    let own = federation
        .give_consent(&insurer, p0, &consent_to(OFFICE))
        .await
        .unwrap();
    let filed = office_client
        .file_application(&insurer, p1, &application)
        .await
        .unwrap();
    let routed = routed_between(&store, last, max_position(&filed)).await;
    assert!(!routed.is_empty(), "an application is routed to the office");
    let mut expected = vec![max_position(&own)];
    expected.extend(routed);
    assert_eq!(
        screen_ids_until(&mut events, &mut buffer, *expected.last().unwrap()).await,
        expected,
        "the own office's consent, then the routed updates"
    );
    drop(events);
    store.close().await;
    pair.stop().await;
}

/// The ids an SSE response sends up to and including `last`.
async fn screen_ids_until(
    events: &mut reqwest::Response,
    buffer: &mut String,
    last: u64,
) -> Vec<u64> {
    bounded("the screen's events", async {
        let mut ids: Vec<u64> = Vec::new();
        while ids.last().is_none_or(|id| *id < last) {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                ids.extend(
                    block
                        .lines()
                        .filter_map(|line| line.strip_prefix("id:"))
                        .map(|id| id.trim().parse::<u64>().unwrap()),
                );
            }
            if ids.last().is_some_and(|id| *id >= last) {
                break;
            }
            let chunk = events
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        ids
    })
    .await
}

/// One engine and one API process (not behind HAProxy) on a fresh
/// database with the seed's persons and one nats-server; typed clients of
/// the API process with its development certificates.
struct Pair {
    database: TestDatabase,
    persons: Vec<InsuredNumber>,
    engine: Proc,
    api: Proc,
    base: String,
    pki: kiban_api::DevPki,
    balancer: Balancer,
    _nats: Nats,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn start() -> Pair {
        let nats = Nats::One(kiban_bus::testing::NatsServer::start().await.unwrap());
        let database = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let persons = seed(&database.url).await;
        let mut engine = Proc::engine(&dir, "engine", &database.url, &nats).await;
        engine.wait_for_line("Ctrl-C to stop").await;
        let api_dir = dir.path().join("api");
        let mut api = Proc::api(&dir, "api", &database.url, &nats.url(), &api_dir, false).await;
        let base = api.wait_for_api().await;
        let pki = kiban_system::dev_pki::dev_certificates(&api_dir.join("certs")).unwrap();
        let balancer = Balancer::new(&pki, std::slice::from_ref(&base));
        Pair {
            database,
            persons,
            engine,
            api,
            base,
            pki,
            balancer,
            _nats: nats,
            _dir: dir,
        }
    }

    async fn stop(self) {
        drop(self.engine);
        drop(self.api);
        self.database.drop_it().await;
    }
}

/// A staff member's signed-in web screen at the office terminal T-01.
struct Screen {
    client: reqwest::Client,
    /// The `Cookie` header of the session.
    cookies: String,
}

/// Adds a staff account with `kiban admin staff add`, and signs in through
/// `/ui/login` (its CSRF token and cookie, then the session cookie).
async fn screen_session(pki: &kiban_api::DevPki, base: &str, database_url: &str) -> Screen {
    let password = "a long enough password";
    let added = Command::new(KIBAN)
        .args(["admin", "staff", "add", "--database-url", database_url])
        .args(["--office", OFFICE, "--user", "sato.care"])
        .env("KIBAN_STAFF_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let identity = reqwest::Identity::from_pem(
        &std::fs::read(&pki.client(&office()).expect("dev principal").pem).unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.tls.client_ca).unwrap()).unwrap(),
        )
        .identity(identity)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies_of = |response: &reqwest::Response| -> String {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok()?.split(';').next())
            .filter(|pair| !pair.ends_with('='))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let page = client.get(format!("{base}/ui/login")).send().await.unwrap();
    let login_cookie = cookies_of(&page);
    let html = page.text().await.unwrap();
    let marker = format!("name=\"{}\" value=\"", kiban_api::ui::CSRF_FIELD);
    let token = html
        .split_once(&marker)
        .and_then(|(_, rest)| rest.split('"').next())
        .expect("the login form carries its CSRF token")
        .to_owned();
    let signed_in = client
        .post(format!("{base}/ui/login"))
        .header("cookie", login_cookie)
        .form(&[
            (kiban_api::ui::CSRF_FIELD, token.as_str()),
            ("user", "sato.care"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "signed in");
    let cookies = cookies_of(&signed_in);
    assert!(cookies.contains(kiban_api::ui::SESSION_COOKIE), "{cookies}");
    Screen { client, cookies }
}

fn max_position(accepted: &kiban_api::CommandAccepted) -> u64 {
    accepted.positions.iter().copied().max().unwrap_or(0)
}

fn sequence_of(accepted: &kiban_api::CommandAccepted) -> u32 {
    accepted
        .stream
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("a certification stream ends in its sequence number")
}

/// The positions in `(after, until]` the office routing sends to the
/// offices of a person (every person of these tests has consented to
/// OFFICE, and the insurer shares).
async fn routed_between(store: &Store, after: u64, until: u64) -> Vec<u64> {
    let events = store
        .read_all(after + 1, usize::try_from(until - after).unwrap())
        .await
        .unwrap();
    events
        .iter()
        .filter(|e| e.position <= until && kiban_system::entitlements::routed_person(e).is_some())
        .map(|e| e.position)
        .collect()
}

/// The ids a stream sends up to and including `last`.
async fn ids_until(stream: &mut kiban_api::client::UpdateStream, last: u64) -> Vec<u64> {
    bounded("update events", async {
        let mut ids = Vec::new();
        while ids.last().is_none_or(|id| *id < last) {
            let event = stream
                .next_event()
                .await
                .unwrap()
                .expect("the stream stays open");
            ids.push(event.id);
        }
        ids
    })
    .await
}

/// The NATS of a scenario.
enum Nats {
    One(kiban_bus::testing::NatsServer),
    Cluster(kiban_bus::testing::NatsCluster),
}

impl Nats {
    /// What `--nats-url` gets: one URL, or all of the cluster's.
    fn url(&self) -> String {
        match self {
            Nats::One(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls().join(","),
        }
    }

    fn replicas(&self) -> &'static str {
        match self {
            Nats::One(_) => "1",
            Nats::Cluster(_) => "3",
        }
    }
}

async fn scenario(mut nats: Nats) {
    let database = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let persons = seed(&database.url).await;

    let load_for_municipality = Arc::new(Load::default());
    // Every office update the routing publishes, from before the first
    // engine starts (a client on the last node, which no phase kills).
    let routed = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let tap_bus = kiban_bus::client::Bus::connect_nats(nats.url().rsplit(',').next().unwrap())
        .await
        .unwrap();
    let mut tap = tap_bus.tap_office_updates().await.unwrap();
    let tapped = Arc::clone(&routed);
    let tap_task = tokio::spawn(async move {
        while let kiban_bus::client::Tapped::Item(event) = tap.next().await {
            tapped
                .lock()
                .unwrap()
                .push((event.position, Instant::now()));
        }
    });

    // Engine 1 first, so that it is the writer; engine 2 stands by. Each
    // has its own data directory: what they share is the database and
    // NATS (the routing's checkpoint is in JetStream's key-value bucket).
    let mut engine_1 = Proc::engine(&dir, "engine-1", &database.url, &nats).await;
    engine_1.wait_for_line("Ctrl-C to stop").await;
    let mut engine_2 = Proc::engine(&dir, "engine-2", &database.url, &nats).await;
    engine_2.wait_for_line("waiting for the writer lock").await;
    // API processes share one data directory, hence one development PKI
    // (the first creates it); started one after the other.
    let api_dir = dir.path().join("api");
    let mut api_1 = Proc::api(&dir, "api-1", &database.url, &nats.url(), &api_dir, true).await;
    let base_1 = api_1.wait_for_api().await;
    let mut api_2 = Proc::api(&dir, "api-2", &database.url, &nats.url(), &api_dir, true).await;
    let base_2 = api_2.wait_for_api().await;
    let mut api_3 = Proc::api(&dir, "api-3", &database.url, &nats.url(), &api_dir, true).await;
    let base_3 = api_3.wait_for_api().await;

    // Every request of the load goes through HAProxy with deploy/'s
    // configuration (TLS passed through; /readyz health checks).
    let pki = kiban_system::dev_pki::dev_certificates(&api_dir.join("certs")).unwrap();
    let haproxy = Haproxy::start(&dir, &pki, &[&base_1, &base_2, &base_3]).await;
    let balancer = Arc::new(Balancer::new(&pki, std::slice::from_ref(&haproxy.base)));
    let ready = balancer.client(0, &federation()).readyz().await.unwrap();
    assert!(ready.contains("writer reachable"), "{ready}");
    let municipality = tokio::spawn(run_municipality(
        nats.url(),
        Arc::clone(&load_for_municipality),
    ));

    let load = Arc::clone(&load_for_municipality);
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let mine: Vec<InsuredNumber> = persons
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % WORKERS == worker)
            .map(|(_, p)| p.clone())
            .collect();
        let (balancer, load) = (Arc::clone(&balancer), Arc::clone(&load));
        workers.push(tokio::spawn(run_worker(balancer, load, mine)));
    }

    // Phase 1: the load runs on a healthy cluster, at least until the
    // first office update routed is older than the repeat margin.
    load.wait_for_commands(COMMANDS_PER_PHASE).await;
    let first_routed = bounded("an office update", async {
        loop {
            if let Some((_, at)) = routed.lock().unwrap().first() {
                return *at;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep_until((first_routed + ROUTING_REPEAT_MARGIN * 2).into()).await;
    // Phase 2: kill -9 the writer.
    let killed_engine_at = Instant::now();
    *load.engine_killed_at.lock().unwrap() = Some(killed_engine_at);
    engine_1.kill_9().await;
    engine_2.wait_for_line("Ctrl-C to stop").await;
    let took_over_at = Instant::now();
    let committed_at = bounded(
        "a command committed by the new writer",
        load.first_success_started_after(killed_engine_at, Outcome::is_command),
    )
    .await;
    // Reads wait for the read models to show what was written: the window
    // ends when both work again (the new writer's projections run).
    let read_at = bounded(
        "a read after the fail-over",
        load.first_success_started_after(killed_engine_at, |o| !o.is_command()),
    )
    .await;
    let recovered_at = committed_at.max(read_at);
    let failover = committed_at - killed_engine_at;
    eprintln!(
        "writer fail-over: kill -9 → standby started as the writer: {:?}; → first command committed (answered): {:?}; → first read answered: {:?}",
        took_over_at - killed_engine_at,
        failover,
        read_at - killed_engine_at,
    );
    assert!(failover < FAILOVER_MAX, "fail-over took {failover:?}");
    let committed = load.commands.load(Ordering::SeqCst);
    load.wait_for_commands(committed + COMMANDS_PER_PHASE).await;
    // Phase 3: kill -9 one API process; HAProxy's health check takes it
    // out (the window ends when HAProxy says so).
    let api_killed_at = Instant::now();
    *load.api_killed_at.lock().unwrap() = Some(api_killed_at);
    api_2.kill_9().await;
    let api_out_at = haproxy.wait_for_down("api2").await;
    *load.api_out_at.lock().unwrap() = Some(api_out_at);
    eprintln!(
        "API process kill -9 → HAProxy marked it down: {:?}",
        api_out_at - api_killed_at
    );
    let committed = load.commands.load(Ordering::SeqCst);
    load.wait_for_commands(committed + COMMANDS_PER_PHASE).await;
    // Phase 4 (three NATS nodes): kill -9 one; its clients reconnect to
    // the others and JetStream keeps a quorum.
    if let Nats::Cluster(cluster) = &mut nats {
        let killed_at = Instant::now();
        *load.nats_killed_at.lock().unwrap() = Some(killed_at);
        cluster.server(0).kill();
        let recovered = bounded(
            "a command after the NATS node died",
            load.first_success_started_after(killed_at, Outcome::is_command),
        )
        .await;
        *load.nats_recovered_at.lock().unwrap() = Some(recovered);
        eprintln!(
            "NATS node kill -9 → first command committed (answered): {:?}",
            recovered - killed_at
        );
        let committed = load.commands.load(Ordering::SeqCst);
        load.wait_for_commands(committed + COMMANDS_PER_PHASE).await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        bounded("a worker to stop", worker).await.unwrap();
    }
    let messages = bounded("the municipality to stop", municipality)
        .await
        .unwrap();

    // The standby is the writer, and the API process left reaches it.
    assert!(
        engine_2.child.try_wait().unwrap().is_none(),
        "engine 2 runs"
    );
    let ready = balancer.client(0, &federation()).readyz().await.unwrap();
    assert!(ready.contains("writer reachable"), "{ready}");

    // A command answered by the first writer, sent again under its
    // Idempotency-Key (its first event id) after the writer changed, is
    // answered with the first result.
    let before_kill: Vec<Filed> = std::mem::take(&mut *load.applications.lock().unwrap())
        .into_iter()
        .filter(|filed| filed.answered < killed_engine_at)
        .collect();
    assert!(
        !before_kill.is_empty(),
        "applications were filed before the kill"
    );
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    for filed in &before_kill {
        let path = kiban_api::paths::person(&insurer, &filed.person, "/certifications");
        let again: kiban_api::CommandAccepted = balancer
            .client(0, &office())
            .command_with_key(
                filed.accepted.event_ids[0],
                reqwest::Method::POST,
                &path,
                Some(filed.body.clone()),
            )
            .await
            .unwrap();
        assert!(again.replayed, "{again:?}");
        assert_eq!(again.positions, filed.accepted.positions);
        assert_eq!(again.event_ids, filed.accepted.event_ids);
    }
    tap_task.abort();
    check_routing_continued(&routed.lock().unwrap(), killed_engine_at);
    let outcomes = std::mem::take(&mut *load.outcomes.lock().unwrap());
    let store = kiban_system::open_store(&database.url).await.unwrap();
    check(
        &store,
        &outcomes,
        &load,
        recovered_at,
        &[&engine_1, &engine_2, &api_1, &api_2, &api_3],
    )
    .await;
    check_messages(&store, &messages).await;
    store.close().await;
    eprintln!(
        "{} operations: {} commands committed, {} logged reads answered, {} errors inside the fail-over windows",
        outcomes.len(),
        outcomes
            .iter()
            .filter(|o| o.is_command() && o.result.is_ok())
            .count(),
        outcomes
            .iter()
            .filter(|o| o.kind == Kind::Read && o.result.is_ok())
            .count(),
        outcomes.iter().filter(|o| o.result.is_err()).count(),
    );
    // With no engine left, the API process says it is not ready (and
    // why) instead of accepting writes it cannot commit.
    engine_2.kill_9().await;
    // Directly, not through HAProxy (which takes the process out), and
    // from an address the process does not expect a PROXY header from.
    let direct = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.tls.client_ca).unwrap()).unwrap(),
        )
        .local_address(DIRECT_SOURCE)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let refused = direct.get(format!("{base_1}/readyz")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:kiban:problem:unavailable",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("writer"),
        "{problem}"
    );
    for outcome in outcomes.iter().filter(|o| o.result.is_err()) {
        eprintln!(
            "  error inside a window: {:?} on api {}: {}",
            outcome.kind,
            outcome.api,
            outcome.result.as_ref().unwrap_err()
        );
    }
    drop(api_1);
    drop(api_3);
    haproxy.stop().await;
    database.drop_it().await;
}

/// Municipal status messages of the load: each files a new person's
/// certification application (`certification.filed`).
const MESSAGES_MAX: u64 = 60;

/// How long the municipality waits for a receipt before it sends the
/// message again (docs/integration.md: a municipality re-sends what got no
/// receipt, with the same event id).
const RECEIPT_WAIT: Duration = Duration::from_secs(10);

/// A municipality sending status messages over NATS while the load runs,
/// one at a time, re-sending a message until it has a receipt; returns
/// each message's event id and its receipt.
async fn run_municipality(
    nats_url: String,
    load: Arc<Load>,
) -> Vec<(Uuid, kiban_bus::ingest::Receipt)> {
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let bus = kiban_bus::client::Bus::connect_nats_as_participant(&nats_url)
        .await
        .unwrap();
    let mut municipality = kiban_bus::client::Municipality::connect(&bus, insurer)
        .await
        .unwrap();
    let mut answered = Vec::new();
    for n in 0..MESSAGES_MAX {
        if load.stop.load(Ordering::SeqCst) {
            break;
        }
        let message = kiban_bus::client::Outgoing::from_json(serde_json::json!({
            "kind": "certification.filed",
            "insurer": INSURER,
            "insured": format!("{:010}", 5_000 + n),
            "application": 1,
            "occurred_at": Utc::now(),
            "body": {"kind": "new", "applicant": {"by": "office", "office": OFFICE},
                     "applied_on": Utc::now().date_naive()},
        }))
        .unwrap();
        let receipt = bounded("a receipt", async {
            loop {
                match municipality.send(&message, RECEIPT_WAIT).await {
                    Ok(receipt) => return receipt,
                    Err(error) => eprintln!("municipality: {error}; sending again"),
                }
            }
        })
        .await;
        answered.push((message.event_id, receipt));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answered
}

/// Every municipal message has an accepted receipt, and its event is in
/// the store exactly once, at the position the receipt named.
async fn check_messages(store: &Store, messages: &[(Uuid, kiban_bus::ingest::Receipt)]) {
    assert!(
        messages.len() >= 10,
        "{} municipal messages",
        messages.len()
    );
    let head = store.head().await.unwrap().position;
    let mut found: HashMap<Uuid, Vec<u64>> = HashMap::new();
    let mut events = store.read_range(1, head);
    while let Some(batch) = futures::StreamExt::next(&mut events).await {
        for event in batch.unwrap() {
            found
                .entry(*event.event_id.as_uuid())
                .or_default()
                .push(event.position);
        }
    }
    for (id, receipt) in messages {
        assert_eq!(
            receipt.status,
            kiban_bus::ingest::ReceiptStatus::Accepted,
            "{receipt:?}"
        );
        let positions = receipt.positions.clone().unwrap_or_default();
        assert_eq!(
            found.get(id),
            Some(&positions[..1].to_vec()),
            "message {id} stored once, where its receipt said"
        );
    }
    eprintln!("{} municipal messages, each stored once", messages.len());
}

/// HAProxy running deploy/haproxy.cfg in front of the API processes.
struct Haproxy {
    child: Child,
    /// `https://127.0.0.1:<port>` of its frontend.
    base: String,
    log: PathBuf,
}

impl Haproxy {
    async fn start(dir: &tempfile::TempDir, pki: &kiban_api::DevPki, bases: &[&String]) -> Haproxy {
        let binary = std::env::var("KIBAN_TEST_HAPROXY").unwrap_or_else(|_| "haproxy".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let mut command = Command::new(binary);
        command
            .args(["-db", "-f", config])
            .env("KIBAN_LB_BIND", format!("127.0.0.1:{port}"))
            .env("KIBAN_LB_CA", &pki.tls.client_ca)
            .env("KIBAN_LB_SNI", "localhost")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .kill_on_drop(true);
        for (i, base) in bases.iter().enumerate() {
            let address = base.strip_prefix("https://").expect("an https base");
            command.env(format!("KIBAN_API_{}", i + 1), address);
        }
        let child = command
            .spawn()
            .expect("haproxy starts (scripts/test installs it)");
        let base = format!("https://127.0.0.1:{port}");
        bounded("haproxy to listen", async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Haproxy { child, base, log }
    }

    /// When HAProxy says that `server` is down (its health check failed).
    async fn wait_for_down(&self, server: &str) -> Instant {
        let wanted = format!("kiban_api/{server} is DOWN");
        bounded("haproxy to take the process out", async {
            loop {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                if text.contains(&wanted) {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = bounded("haproxy to stop", self.child.wait()).await;
    }
}

/// Margin before the writer's kill after which an office update may be
/// sent again by the new writer: the old writer saves its routing
/// checkpoint after each batch it flushed, so only its last batch repeats.
const ROUTING_REPEAT_MARGIN: Duration = Duration::from_secs(2);

/// The new writer's routing continued where the old one stopped (the
/// shared checkpoint): nothing the old writer had routed well before its
/// kill was routed again, and routing went on after the kill. With a
/// checkpoint per engine, the standby would route everything again from
/// position 1.
fn check_routing_continued(routed: &[(u64, Instant)], killed_at: Instant) {
    let mut first: HashMap<u64, (Instant, usize)> = HashMap::new();
    for (position, at) in routed {
        first.entry(*position).or_insert((*at, 0)).1 += 1;
    }
    let old: Vec<(u64, usize)> = first
        .iter()
        .filter(|(_, (at, _))| *at + ROUTING_REPEAT_MARGIN < killed_at)
        .map(|(position, (_, count))| (*position, *count))
        .collect();
    assert!(!old.is_empty(), "the first writer routed office updates");
    let repeated: Vec<&(u64, usize)> = old.iter().filter(|(_, count)| *count > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} of {} updates routed before the kill were routed again: {repeated:?}",
        repeated.len(),
        old.len()
    );
    assert!(
        first.values().any(|(at, _)| *at > killed_at),
        "the new writer routes office updates"
    );
    eprintln!(
        "office routing: {} positions routed, {} sent more than once (the old writer's last batch)",
        first.len(),
        first.values().filter(|(_, count)| *count > 1).count()
    );
}

/// What the store must show for the outcomes of the load.
async fn check(
    store: &Store,
    outcomes: &[Outcome],
    load: &Load,
    recovered_at: Instant,
    processes: &[&Proc],
) {
    let head = store.head().await.unwrap().position;
    let mut by_id: HashMap<Uuid, (u32, String)> = HashMap::new();
    let mut views: HashMap<String, u64> = HashMap::new();
    let mut events = store.read_range(1, head);
    while let Some(batch) = futures::StreamExt::next(&mut events).await {
        for event in batch.unwrap() {
            let entry = by_id
                .entry(*event.event_id.as_uuid())
                .or_insert((0, event.stream.to_string()));
            entry.0 += 1;
            if event.event_type.as_str() == "insured.record_viewed" {
                *views.entry(event.stream.to_string()).or_default() += 1;
            }
        }
    }
    let engine_killed = load.engine_killed_at.lock().unwrap().expect("killed");
    let api_killed = load.api_killed_at.lock().unwrap().expect("killed");
    let nats_window = load
        .nats_killed_at
        .lock()
        .unwrap()
        .zip(*load.nats_recovered_at.lock().unwrap());
    let mut reads: HashMap<String, u64> = HashMap::new();
    let mut stray = Vec::new();
    for outcome in outcomes {
        match &outcome.result {
            Ok(Answer::Command { stream, event_ids }) => {
                for id in event_ids {
                    let found = by_id.get(id);
                    assert_eq!(
                        found.map(|(count, _)| *count),
                        Some(1),
                        "event {id} of a 2xx {:?} is in the store exactly once",
                        outcome.kind
                    );
                    assert_eq!(&found.unwrap().1, stream, "on the stream answered");
                }
            }
            Ok(Answer::Read { stream }) => *reads.entry(stream.clone()).or_default() += 1,
            Err(error) => {
                let writer_outage = outcome.ended > engine_killed && outcome.started < recovered_at;
                let api_out = load.api_out_at.lock().unwrap().expect("taken out");
                let dead_api = outcome.ended > api_killed && outcome.started < api_out;
                let nats_outage = match nats_window {
                    Some((killed, recovered)) => {
                        outcome.ended > killed && outcome.started < recovered
                    }
                    None => false,
                };
                if !writer_outage && !dead_api && !nats_outage {
                    stray.push(format!(
                        "{:?} on api {}: {error}",
                        outcome.kind, outcome.api
                    ));
                }
            }
        }
    }
    if !stray.is_empty() {
        for process in processes {
            eprintln!("---- {} ----\n{}", process.name, process.log_tail());
        }
    }
    assert!(
        stray.is_empty(),
        "errors outside the fail-over windows: {stray:#?}"
    );
    for (stream, answered) in &reads {
        let recorded = views.get(stream).copied().unwrap_or(0);
        assert!(
            recorded >= *answered,
            "{stream}: {answered} logged reads returned data but {recorded} views are recorded"
        );
    }
    assert!(
        outcomes
            .iter()
            .any(|o| o.is_command() && o.result.is_ok() && o.started > api_killed),
        "commands were committed after the API process died"
    );
    let report = store.verify(1, None).await.unwrap();
    assert!(
        matches!(report, kiban_store::VerifyReport::Verified { events, .. } if events == head),
        "{report:?}"
    );
}

/// One worker: for each of its persons in turn, the federation's consent
/// (once), the office's logged read, the office's proxy application (once),
/// and the insurer's investigation sheet (every round after the
/// application).
async fn run_worker(balancer: Arc<Balancer>, load: Arc<Load>, persons: Vec<InsuredNumber>) {
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let mut consented = vec![false; persons.len()];
    let mut applications: Vec<Option<u32>> = vec![None; persons.len()];
    let mut ops = 0;
    let mut round = 0usize;
    while !load.stop.load(Ordering::SeqCst) && ops < OPS_PER_WORKER_MAX {
        let i = round % persons.len();
        let person = &persons[i];
        round += 1;
        let stream = insured_stream(&insurer, person).to_string();
        if !consented[i] {
            let api = balancer.pick();
            let client = balancer.client(api, &federation());
            let consent = ConsentRecord {
                office: OFFICE.to_owned(),
                terminal: "T-01".to_owned(),
                expires_at: Utc::now() + chrono::Duration::days(365),
            };
            let outcome = load
                .run(Kind::Consent, api, &balancer, async {
                    client.give_consent(&insurer, person, &consent).await
                })
                .await;
            ops += 1;
            match outcome {
                Some(position) => {
                    // The office reads only after the read models show the
                    // consent (whichever API process answers).
                    balancer.observe(position);
                    consented[i] = true;
                }
                None => continue,
            }
        }
        let api = balancer.pick();
        let reader = balancer.client(api, &office());
        let started = Instant::now();
        let read = reader.eligibility(&insurer, person).await;
        load.record(
            Kind::Read,
            api,
            started,
            read.map(|_| Answer::Read {
                stream: stream.clone(),
            }),
            &balancer,
        );
        ops += 1;
        let api = balancer.pick();
        match applications[i] {
            None => {
                let client = balancer.client(api, &office());
                let body = ProxyApplication {
                    kind: ApplicationKind::Change,
                    applied_on: Utc::now().date_naive(),
                };
                let outcome = load
                    .run_answer(Kind::Application, api, &balancer, async {
                        client.file_application(&insurer, person, &body).await
                    })
                    .await;
                if let Some(accepted) = outcome {
                    let position = accepted.positions.iter().max().copied().unwrap_or(0);
                    balancer.observe(position);
                    load.applications.lock().unwrap().push(Filed {
                        person: person.clone(),
                        body: serde_json::to_vec(&body).unwrap(),
                        accepted: accepted.clone(),
                        answered: Instant::now(),
                    });
                    let seq = accepted
                        .stream
                        .rsplit('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .expect("a certification stream ends in its sequence number");
                    applications[i] = Some(seq);
                }
            }
            Some(seq) => {
                let client = balancer.client(api, &insurer_principal());
                let sheet =
                    format!("%PDF-1.4\n% investigation sheet {round}\n%%EOF\n").into_bytes();
                load.run(Kind::Sheet, api, &balancer, async {
                    client
                        .upload_certification_document(
                            &insurer,
                            person,
                            seq,
                            CertificationDocument::InvestigationSheet,
                            "application/pdf",
                            sheet,
                        )
                        .await
                })
                .await;
            }
        }
        ops += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Consent,
    Read,
    Application,
    Sheet,
}

#[derive(Debug)]
enum Answer {
    Command {
        stream: String,
        event_ids: Vec<Uuid>,
    },
    Read {
        stream: String,
    },
}

#[derive(Debug)]
struct Outcome {
    kind: Kind,
    api: usize,
    started: Instant,
    ended: Instant,
    result: Result<Answer, String>,
}

impl Outcome {
    fn is_command(&self) -> bool {
        self.kind != Kind::Read
    }
}

/// What the workers did, and the test's phases.
/// A proxy application answered 2xx, to be sent again later.
struct Filed {
    person: InsuredNumber,
    body: Vec<u8>,
    accepted: kiban_api::CommandAccepted,
    answered: Instant,
}

#[derive(Default)]
struct Load {
    outcomes: Mutex<Vec<Outcome>>,
    applications: Mutex<Vec<Filed>>,
    commands: AtomicU64,
    stop: AtomicBool,
    engine_killed_at: Mutex<Option<Instant>>,
    api_killed_at: Mutex<Option<Instant>>,
    nats_killed_at: Mutex<Option<Instant>>,
    nats_recovered_at: Mutex<Option<Instant>>,
    /// When HAProxy took the killed API process out.
    api_out_at: Mutex<Option<Instant>>,
}

impl Load {
    /// Runs a command; records it; the highest position it answered.
    async fn run(
        &self,
        kind: Kind,
        api: usize,
        balancer: &Balancer,
        command: impl std::future::Future<Output = Result<kiban_api::CommandAccepted, ClientError>>,
    ) -> Option<u64> {
        self.run_answer(kind, api, balancer, command)
            .await
            .map(|accepted| accepted.positions.iter().max().copied().unwrap_or(0))
    }

    /// [`Load::run`], with the whole answer.
    async fn run_answer(
        &self,
        kind: Kind,
        api: usize,
        balancer: &Balancer,
        command: impl std::future::Future<Output = Result<kiban_api::CommandAccepted, ClientError>>,
    ) -> Option<kiban_api::CommandAccepted> {
        let started = Instant::now();
        let result = command.await;
        let kept = result.as_ref().ok().cloned();
        self.record(
            kind,
            api,
            started,
            result.map(|accepted| Answer::Command {
                stream: accepted.stream,
                event_ids: accepted.event_ids,
            }),
            balancer,
        );
        kept
    }

    fn record(
        &self,
        kind: Kind,
        api: usize,
        started: Instant,
        result: Result<Answer, ClientError>,
        balancer: &Balancer,
    ) {
        if let Err(ClientError::Transport(_)) = &result {
            balancer.refused(api);
        }
        if matches!(result, Ok(Answer::Command { .. })) {
            self.commands.fetch_add(1, Ordering::SeqCst);
        }
        self.outcomes.lock().unwrap().push(Outcome {
            kind,
            api,
            started,
            ended: Instant::now(),
            result: result.map_err(|e| e.to_string()),
        });
    }

    async fn wait_for_commands(&self, count: u64) {
        bounded("commands to be committed", async {
            while self.commands.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// When the first operation of `which` that began after `instant` was
    /// answered 2xx.
    async fn first_success_started_after(
        &self,
        instant: Instant,
        which: impl Fn(&Outcome) -> bool,
    ) -> Instant {
        loop {
            let found = self
                .outcomes
                .lock()
                .unwrap()
                .iter()
                .filter(|o| which(o) && o.result.is_ok() && o.started > instant)
                .map(|o| o.ended)
                .min();
            if let Some(ended) = found {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The test's load balancer: round robin over the API processes, taking
/// one out at its first refused connection after the test killed it (as a
/// health check would, a little later).
struct Balancer {
    /// Per API process, per principal: a typed client.
    clients: Vec<HashMap<String, Client>>,
    killed: Vec<AtomicBool>,
    out: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl Balancer {
    fn new(pki: &kiban_api::DevPki, bases: &[String]) -> Self {
        let ca = std::fs::read(&pki.tls.client_ca).unwrap();
        let clients = bases
            .iter()
            .map(|base| {
                [office(), insurer_principal(), federation()]
                    .iter()
                    .map(|principal| {
                        let identity =
                            std::fs::read(&pki.client(principal).expect("dev principal").pem)
                                .unwrap();
                        let client = Client::new(base, &ca, Some(&identity)).unwrap();
                        (principal.to_uri(), client)
                    })
                    .collect()
            })
            .collect();
        Self {
            clients,
            killed: bases.iter().map(|_| AtomicBool::new(false)).collect(),
            out: bases.iter().map(|_| AtomicBool::new(false)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> usize {
        loop {
            let api = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
            if !self.out[api].load(Ordering::SeqCst) {
                return api;
            }
        }
    }

    fn client(&self, api: usize, principal: &Principal) -> &Client {
        &self.clients[api][&principal.to_uri()]
    }

    fn refused(&self, api: usize) {
        if self.killed[api].load(Ordering::SeqCst) {
            self.out[api].store(true, Ordering::SeqCst);
        }
    }

    /// Every client, on every API process, reads at or after `position`.
    fn observe(&self, position: u64) {
        for clients in &self.clients {
            for client in clients.values() {
                client.observe(position);
            }
        }
    }
}

fn office() -> Principal {
    Principal::from_uri(&format!("kiban:office:{OFFICE}:terminal:T-01")).unwrap()
}

fn insurer_principal() -> Principal {
    Principal::from_uri(&format!("kiban:insurer:{INSURER}")).unwrap()
}

fn federation() -> Principal {
    Principal::from_uri("kiban:federation").unwrap()
}

/// A `kiban serve` child process, its stdout lines and its log file.
struct Proc {
    name: String,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Proc {
    async fn start(dir: &tempfile::TempDir, name: &str, args: &[&str], data_dir: &Path) -> Proc {
        let log = dir.path().join(format!("{name}.log"));
        let mut child = Command::new(KIBAN)
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("KIBAN_CHECKPOINT_EVERY", "0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("kiban serve starts");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            log,
        }
    }

    /// An engine with its own data directory (`<dir>/<name>`): engines
    /// share only the database and NATS.
    async fn engine(dir: &tempfile::TempDir, name: &str, database_url: &str, nats: &Nats) -> Proc {
        let data_dir = dir.path().join(name);
        let nats_url = nats.url();
        let args = [
            "--role",
            "engine",
            "--database-url",
            database_url,
            "--nats-url",
            &nats_url,
            "--stream-replicas",
            nats.replicas(),
            // The harness's nats-server has 1 GB of file storage.
            "--events-max-bytes",
            "268435456",
        ];
        Proc::start(dir, name, &args, &data_dir).await
    }

    async fn api(
        dir: &tempfile::TempDir,
        name: &str,
        database_url: &str,
        nats_url: &str,
        data_dir: &Path,
        behind_haproxy: bool,
    ) -> Proc {
        let mut args = vec![
            "--role",
            "api",
            "--database-url",
            database_url,
            "--nats-url",
            nats_url,
            "--listen",
            "127.0.0.1:0",
        ];
        // HAProxy (deploy/haproxy.cfg) connects from 127.0.0.1 and sends
        // the PROXY protocol header; direct clients of these processes
        // connect from another loopback address ([`DIRECT_SOURCE`]).
        if behind_haproxy {
            args.extend(["--proxy-protocol-from", "127.0.0.1/32"]);
        }
        Proc::start(dir, name, &args, data_dir).await
    }

    async fn wait_for_line(&mut self, wanted: &str) -> String {
        let what = format!("{} to print {wanted:?}", self.name);
        let found = bounded(&what, async {
            while let Ok(Some(line)) = self.stdout.next_line().await {
                if line.contains(wanted) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Some(line) => line,
            None => panic!(
                "{} exited before printing {wanted:?}:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// The API's base URL from the banner, once it is up.
    async fn wait_for_api(&mut self) -> String {
        let line = self.wait_for_line("API: ").await;
        self.wait_for_line("Ctrl-C to stop").await;
        line.strip_prefix("API: ")
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the banner names the API address")
            .to_owned()
    }

    async fn kill_9(&mut self) {
        self.child.start_kill().unwrap();
        bounded("the process to die", self.child.wait())
            .await
            .unwrap();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A fresh PostgreSQL database on the server of `KIBAN_TEST_DATABASE_URL`.
struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let server = std::env::var("KIBAN_TEST_DATABASE_URL")
            .expect("KIBAN_TEST_DATABASE_URL names a PostgreSQL server (scripts/test starts one)");
        let name = format!("kiban_cluster_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = admin.close().await;
        let (base, _) = server
            .rsplit_once('/')
            .expect("the URL ends with /database");
        TestDatabase {
            url: format!("{base}/{name}"),
            server,
            name,
        }
    }

    async fn drop_it(self) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.server).await {
            let _ = sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

/// The insurer shares data, and each person holds a certification and a
/// copayment-ratio certificate: recorded before any kiban process starts.
async fn seed(url: &str) -> Vec<InsuredNumber> {
    let store = kiban_system::open_store(url).await.unwrap();
    let engine = Engine::new(store.clone());
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let context = || {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            Actor::Federation,
            Utc::now(),
        )
    };
    let insurer_context = || {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            Actor::Insurer(insurer.clone()),
            Utc::now(),
        )
    };
    // Dates from the clock: the rules refuse dates over two years old.
    let today = Utc::now().date_naive();
    for command in [
        InsurerCommand::Onboard {
            insurer: insurer.clone(),
        },
        InsurerCommand::CompleteStandardisation {
            completed_on: today - chrono::Duration::days(120),
        },
        InsurerCommand::CompleteDataTransmission {
            completed_on: today - chrono::Duration::days(90),
        },
    ] {
        engine
            .execute::<Insurer>(&insurer_stream(&insurer), &command, &context())
            .await
            .unwrap();
    }
    let mut persons = Vec::new();
    for n in 0..PERSONS {
        let person = InsuredNumber::parse(&format!("{:010}", 1000 + n)).unwrap();
        let stream = insured_stream(&insurer, &person);
        for command in [
            InsuredCommand::RecordCertification {
                application_seq: 1,
                level: CareLevel::Care2,
                validity: ValidityPeriod {
                    from: today - chrono::Duration::days(60),
                    until: today + chrono::Duration::days(300),
                },
            },
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: today - chrono::Duration::days(60),
            },
        ] {
            engine
                .execute::<InsuredPerson>(&stream, &command, &insurer_context())
                .await
                .unwrap();
        }
        persons.push(person);
    }
    store.close().await;
    persons
}
