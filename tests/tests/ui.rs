//! The office web screen in a real headless Chromium over WebDriver
//! (chromedriver), against a real kiban-api server on a loopback port. The
//! browser presents the dev office-terminal certificate from an NSS
//! database in a temporary HOME (Chromium's `AutoSelectCertificateForUrls`
//! policy picks it without a prompt) and trusts the dev CA from the same
//! database. With `KIBAN_SCREENSHOTS=1` every screen is saved under
//! `docs/screens/`.
//!
//! The staff accounts themselves (lockout, sessions, the staff access log)
//! are tested on both backends without a browser.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use kiban_api::ui::staff::{self, LoginOutcome};
use kiban_api::{DevPki, Principal};
use kiban_engine::Engine;
use kiban_events::Actor;
use kiban_events::domain::TerminalId;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::ids::InsuredNumber;
use kiban_projections::Db;
use kiban_store::Store;
use kiban_tests::{TestDb, bounded};
use serde_json::json;

use crate::accessibility::{
    assert_accessible, assert_axe_finds_violations, assert_keyboard_reaches,
};
use crate::api::Served;
use crate::projections::on_both_backends;
use crate::projections::script::*;

on_both_backends!(
    staff_logins_lock_out_and_sessions_bind_to_the_office,
    names_are_logged_reads_once_per_session_searched_and_forgotten,
);

/// The person's view in the browser (issue 21): a person signs in with the
/// virtual My Number card through the private pcscd (as the consent's
/// test does), sees their own certification progress and the office's
/// read of their record, and is refused another person's record.
/// PostgreSQL only, like the office scenario; `/v1/me` is covered on both
/// backends by `person_view`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_signs_in_with_the_card_and_sees_who_read_their_record() {
    let db = TestDb::new(kiban_tests::Backend::Postgres).await;
    person_scenario(&db).await;
}

/// The browser scenario runs once, on PostgreSQL (the production backend);
/// the staff tables are covered on both by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn office_staff_work_through_every_screen_in_chromium() {
    let db = TestDb::new(kiban_tests::Backend::Postgres).await;
    browser_scenario(&db).await;
}

/// The two browser scenarios again against an API process + engine pair
/// (docs/deploy.md "The API suites against an API process + engine pair"):
/// the browser talks to the API process, whose decisions travel to the
/// writer over NATS. Written out rather than through `on_both_backends!`'s
/// `and_pair:`, which would add a SQLite run of each; these scenarios run on
/// PostgreSQL only (above). The pair module holds the paired scenario of
/// the macro above too (one `pair` module per file).
mod pair {
    use kiban_tests::TestDb;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn names_are_logged_reads_once_per_session_searched_and_forgotten() {
        let db = TestDb::pair().await;
        super::names_are_logged_reads_once_per_session_searched_and_forgotten(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_person_signs_in_with_the_card_and_sees_who_read_their_record() {
        let db = TestDb::pair().await;
        super::person_scenario(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn office_staff_work_through_every_screen_in_chromium() {
        let db = TestDb::pair().await;
        super::browser_scenario(&db).await;
    }
}

const STAFF_USER: &str = "sato.care";
/// A person whose filing carried their name and kana (sealed).
const NAMED_PERSON: &str = "0000077777";
const NAMED: &str = "山田 太郎";
const NAMED_KANA: &str = "ヤマダ タロウ";
/// The caseload searched for やまだ (percent-encoded).
const SEARCH_YAMADA: &str = "/ui/caseload?q=%E3%82%84%E3%81%BE%E3%81%A0";
const STAFF_PASSWORD: &str = "correct horse battery staple";
/// The browser, its WebDriver and the managed policy file that lets it
/// present the client certificate to the loopback test server without
/// asking: `scripts/test` finds the browser by name and sets these
/// variables; without them, the paths of Debian's `chromium` and
/// `chromium-driver` packages.
const CHROMIUM: (&str, &str) = ("KIBAN_TEST_CHROMIUM", "/usr/bin/chromium");
const CHROMEDRIVER: (&str, &str) = ("KIBAN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
const POLICY_FILE: (&str, &str) = (
    "KIBAN_TEST_CHROMIUM_POLICY",
    "/etc/chromium/policies/managed/kiban-test.json",
);
const POLICY: &str =
    r#"{"AutoSelectCertificateForUrls": ["{\"pattern\":\"https://127.0.0.1:*\",\"filter\":{}}"]}"#;
/// Longest wait for anything the browser shows.
const BROWSER_WAIT: Duration = Duration::from_secs(20);

fn office_terminal() -> Principal {
    Principal::from_uri(&format!("kiban:office:{OFFICE}:terminal:{TERMINAL}")).unwrap()
}

struct UiServer {
    served: Served,
    pki: DevPki,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for UiServer {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl UiServer {
    async fn start(db: &TestDb) -> UiServer {
        let dir = tempfile::tempdir().unwrap();
        let pki = kiban_api::dev_pki(dir.path(), &[office_terminal(), insurer_principal()])
            .expect("dev pki");
        let store = db.open().await;
        // Sealing personal fields (the named person's name) needs keys.
        let engine = Arc::new(
            Engine::new(store.clone())
                .with_person_keys(kiban_store::PersonKeys::new(store.clone())),
        );
        let last = history(
            &engine,
            &pki.client(&office_terminal()).unwrap().fingerprint,
        )
        .await;
        let trust = crate::api::card_trust(dir.path());
        let served = Served::start(db, store, engine, &pki.tls, last, |state| {
            state.with_card_trust(trust)
        })
        .await;
        UiServer { served, pki, dir }
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

async fn staff_logins_lock_out_and_sessions_bind_to_the_office(db: &TestDb) {
    let db = Db::open(db.url()).await.unwrap();
    let office = office();
    let now = day(30);
    staff::add_staff(&db, &office, STAFF_USER, STAFF_PASSWORD)
        .await
        .unwrap();
    assert!(matches!(
        staff::add_staff(&db, &office, "short", "too short").await,
        Err(staff::StaffError::WeakPassword)
    ));
    assert!(matches!(
        staff::add_staff(&db, &office, "bad id", STAFF_PASSWORD).await,
        Err(staff::StaffError::BadUserId)
    ));
    // The right password opens a session bound to the office and terminal.
    let opened = staff::login(&db, &office, TERMINAL, STAFF_USER, STAFF_PASSWORD, now)
        .await
        .unwrap();
    let LoginOutcome::Opened(session) = opened else {
        panic!("login refused: {opened:?}");
    };
    let found = staff::session(&db, &session.token, now).await.unwrap();
    let found = found.expect("the session is live");
    assert_eq!(
        (
            found.office.as_str(),
            found.user.as_str(),
            found.terminal.as_str()
        ),
        (OFFICE, STAFF_USER, TERMINAL)
    );
    assert_eq!(found.csrf, session.csrf);
    // Sessions end at the end of their lifetime and on logout.
    let later = now + chrono::Duration::from_std(staff::SESSION_LIFETIME).unwrap();
    assert_eq!(
        staff::session(&db, &session.token, later).await.unwrap(),
        None
    );
    staff::logout(&db, &session.token, now).await.unwrap();
    assert_eq!(
        staff::session(&db, &session.token, now).await.unwrap(),
        None
    );
    // The same user ID at another office is another account.
    let other = kiban_events::ids::OfficeNumber::parse("1319999999").unwrap();
    assert_eq!(
        staff::login(&db, &other, TERMINAL, STAFF_USER, STAFF_PASSWORD, now)
            .await
            .unwrap(),
        LoginOutcome::Refused
    );
    // Wrong passwords lock the account after LOGIN_FAILURES_MAX, and then
    // even the right one is refused until the lockout ends.
    for attempt in 1..staff::LOGIN_FAILURES_MAX {
        let outcome = staff::login(&db, &office, TERMINAL, STAFF_USER, "wrong password!", now)
            .await
            .unwrap();
        assert_eq!(outcome, LoginOutcome::Refused, "attempt {attempt}");
    }
    let locked = staff::login(&db, &office, TERMINAL, STAFF_USER, "wrong password!", now)
        .await
        .unwrap();
    let until = now + chrono::Duration::from_std(staff::LOCKOUT).unwrap();
    assert_eq!(locked, LoginOutcome::Refused);
    assert_eq!(
        staff::lockout(&db, &office, STAFF_USER).await.unwrap(),
        Some((staff::LOGIN_FAILURES_MAX, Some(until)))
    );
    assert_eq!(
        staff::login(&db, &office, TERMINAL, STAFF_USER, STAFF_PASSWORD, now)
            .await
            .unwrap(),
        LoginOutcome::Refused
    );
    assert!(matches!(
        staff::login(&db, &office, TERMINAL, STAFF_USER, STAFF_PASSWORD, until)
            .await
            .unwrap(),
        LoginOutcome::Opened(_)
    ));
    // The staff access log names who made a logged read.
    staff::record_staff_view(&db, 42, OFFICE, TERMINAL, STAFF_USER, now)
        .await
        .unwrap();
    assert_eq!(
        staff::staff_of_view(&db, 42).await.unwrap().as_deref(),
        Some(STAFF_USER)
    );
    assert_eq!(staff::staff_of_view(&db, 43).await.unwrap(), None);
    db.close().await;
}

// --- The browser ------------------------------------------------------------

/// chromedriver (and the Chromium it starts), killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A HOME whose NSS database trusts the dev CA and holds the terminal's
/// certificate and key.
fn nss_home(server: &UiServer) -> PathBuf {
    let home = trusting_home(server, "home");
    add_terminal_certificate(server, &home);
    home
}

/// A HOME (`name` under the test's directory) whose NSS database trusts
/// the dev CA and holds no client certificate: a person's own browser.
fn trusting_home(server: &UiServer, name: &str) -> PathBuf {
    let home = server.dir.path().join(name);
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    sh(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    let ca = server.pki.tls.client_ca.to_str().unwrap().to_owned();
    sh(Command::new("certutil").args([
        "-A",
        "-d",
        &db,
        "-n",
        "kiban-dev-ca",
        "-t",
        "CT,C,C",
        "-i",
        &ca,
    ]));
    home
}

/// The terminal's certificate and key added to `home`'s NSS database: the
/// PKCS#12 file the development PKI writes for browsers, with the password
/// `kiban serve` prints (docs/ui.md).
fn add_terminal_certificate(server: &UiServer, home: &Path) {
    let db = format!("sql:{}", home.join(".pki/nssdb").display());
    let p12 = server.pki.client(&office_terminal()).unwrap().p12.clone();
    sh(Command::new("pk12util").args([
        "-i",
        p12.to_str().unwrap(),
        "-d",
        &db,
        "-W",
        kiban_api::pki::DEV_PKCS12_PASSWORD,
    ]));
}

/// The path named by `(variable, fallback)`.
fn path_from_env((variable, fallback): (&str, &str)) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| fallback.into(), PathBuf::from)
}

fn install_policy() {
    let policy_file = path_from_env(POLICY_FILE);
    let current = std::fs::read_to_string(&policy_file).unwrap_or_default();
    if current != POLICY {
        std::fs::create_dir_all(policy_file.parent().unwrap())
            .expect("the Chromium policy directory (run as root, or let scripts/test install it)");
        std::fs::write(&policy_file, POLICY).expect("the Chromium policy file");
    }
}

async fn start_browser(home: &Path, profile: &Path) -> (Driver, Client) {
    install_policy();
    let port = free_port();
    let child = Command::new(path_from_env(CHROMEDRIVER))
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .env("LANG", "en_US.UTF-8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/test installs chromium-driver)");
    let driver = Driver { child, port };
    // chromedriver listens once it is ready.
    bounded("chromedriver start", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", driver.port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": path_from_env(CHROMIUM),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                // An English browser: the Japanese screen must still show
                // Japanese times (the page's language decides, not the
                // browser's).
                "--window-size=1280,1000", "--lang=en-US",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = bounded(
        "WebDriver session",
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port)),
    )
    .await
    .expect("a WebDriver session");
    (driver, client)
}

/// Every screen: checked with axe-core (no accessibility violation, see
/// `accessibility`), and saved as a screenshot under docs/screens/ when
/// asked.
async fn screen(client: &Client, name: &str) {
    assert_accessible(client, name).await;
    if std::env::var("KIBAN_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = client.screenshot().await.expect("a screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screens");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    let element = client
        .wait()
        .at_most(BROWSER_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"));
    element.text().await.unwrap()
}

/// Waits until the element at `css` shows `expected`.
async fn wait_text(client: &Client, css: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never showed {expected:?}; last: {text:?}; page: {}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live-update line of a Japanese page shows a 24-hour time
/// (`更新しました 15:38:01 (…)`), even in an English browser, which would
/// format `3:38:01 PM`.
fn assert_japanese_time(status: &str) {
    let time = status
        .trim_start_matches("更新しました ")
        .split(" (")
        .next()
        .unwrap_or_default();
    assert!(
        chrono::NaiveTime::parse_from_str(time, "%H:%M:%S").is_ok(),
        "not a Japanese time: {status:?}"
    );
}

async fn fill(client: &Client, css: &str, value: &str) {
    let element = client.find(Locator::Css(css)).await.unwrap();
    element.clear().await.unwrap();
    element.send_keys(value).await.unwrap();
}

/// Gives a file input a file (chromedriver uploads it).
async fn attach(client: &Client, css: &str, path: &str) {
    let element = client.find(Locator::Css(css)).await.unwrap();
    element.send_keys(path).await.unwrap();
}

/// Waits until the page's Server-Sent Events connection is open.
async fn wait_live(client: &Client) {
    bounded("the live connection", async {
        while client
            .find(Locator::Css("body[data-live=open]"))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn select(client: &Client, css: &str, value: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

async fn give_consent(server: &UiServer, insured: &str, at: DateTime<Utc>) {
    let stream = insured_stream(&insurer(), &InsuredNumber::parse(insured).unwrap());
    let last = run_command::<InsuredPerson>(
        &server.engine,
        &stream,
        InsuredCommand::GiveConsent {
            office: office(),
            terminal: TerminalId::parse(TERMINAL).unwrap(),
            expires_at: day(90),
        },
        Actor::system("consent").unwrap(),
        at,
    )
    .await;
    bounded("consent projected", server.projections.wait_for(last))
        .await
        .unwrap();
}

use crate::projections::script::run as run_command;

/// The named person files with their name and kana (sealed) and consents
/// to the office.
async fn seed_named_person(server: &UiServer) {
    ingest(
        &server.engine,
        INSURER,
        NAMED_PERSON,
        Some(1),
        "certification.filed",
        10,
        json!({"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-05-10",
               "insured_name": {"name": {"plain": NAMED}, "kana": {"plain": NAMED_KANA}}}),
    )
    .await;
    give_consent(server, NAMED_PERSON, day(29)).await;
}

/// A staff session at the office terminal: an HTTPS client presenting the
/// terminal's certificate, and the session cookie.
async fn staff_session(server: &UiServer) -> (reqwest::Client, String) {
    let accounts = server.projections.db().clone();
    let opened = staff::login(
        &accounts,
        &office(),
        TERMINAL,
        STAFF_USER,
        STAFF_PASSWORD,
        day(30),
    )
    .await
    .unwrap();
    let LoginOutcome::Opened(session) = opened else {
        panic!("login refused: {opened:?}");
    };
    let ca = std::fs::read(&server.pki.tls.client_ca).unwrap();
    let pem = std::fs::read(&server.pki.client(&office_terminal()).unwrap().pem).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let cookie = format!("{}={}", kiban_api::ui::SESSION_COOKIE, session.token);
    (client, cookie)
}

/// The HTML of `path` in a staff session.
async fn ui_page(
    server: &UiServer,
    (client, cookie): &(reqwest::Client, String),
    path: &str,
) -> String {
    let response = client
        .get(format!("{}{path}", server.base))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

/// Names without a browser, on both backends: shown opened in the
/// caseload and on the person page; a logged read once per person per
/// staff session (two pages of one session log once, a second session logs
/// again, the person page always logs); found by hiragana when opening
/// (the other persons left out); 忘却済み once forgotten.
async fn names_are_logged_reads_once_per_session_searched_and_forgotten(db: &TestDb) {
    let server = UiServer::start(db).await;
    staff::add_staff(
        server.projections.db(),
        &office(),
        STAFF_USER,
        STAFF_PASSWORD,
    )
    .await
    .unwrap();
    seed_named_person(&server).await;
    let named_row = format!("id=\"person-{INSURER}-{NAMED_PERSON}\"");
    let other_row = format!("id=\"person-{INSURER}-{PERSON}\"");

    let session = staff_session(&server).await;
    let page = ui_page(&server, &session, "/ui/caseload").await;
    assert!(
        page.contains(&named_row) && page.contains(NAMED) && page.contains(NAMED_KANA),
        "{page}"
    );
    assert_eq!(reads_of(&server, NAMED_PERSON).await, 1);
    ui_page(&server, &session, "/ui/caseload/rows").await;
    assert_eq!(reads_of(&server, NAMED_PERSON).await, 1, "once per session");
    // Search by hiragana: only the named person.
    let found = ui_page(&server, &session, SEARCH_YAMADA).await;
    assert!(
        found.contains(&named_row) && !found.contains(&other_row),
        "{found}"
    );
    let none = ui_page(
        &server,
        &session,
        "/ui/caseload?q=%E3%81%99%E3%81%9A%E3%81%8D",
    )
    .await;
    assert!(!none.contains(&named_row), "すずき matched: {none}");
    // Another session logs again; the person page always logs.
    let second = staff_session(&server).await;
    ui_page(&server, &second, "/ui/caseload").await;
    assert_eq!(reads_of(&server, NAMED_PERSON).await, 2, "a new session");
    let person = ui_page(
        &server,
        &second,
        &format!("/ui/persons/{INSURER}/{NAMED_PERSON}"),
    )
    .await;
    assert!(
        person.contains(NAMED) && person.contains(NAMED_KANA),
        "{person}"
    );
    assert_eq!(reads_of(&server, NAMED_PERSON).await, 3);

    // Forgotten: 忘却済み, the name nowhere.
    forget_named_person(&server).await;
    let page = ui_page(&server, &session, "/ui/caseload").await;
    assert!(
        page.contains(&named_row) && page.contains("忘却済み"),
        "{page}"
    );
    assert!(
        !page.contains(NAMED) && !page.contains(NAMED_KANA),
        "{page}"
    );
    let found = ui_page(&server, &session, SEARCH_YAMADA).await;
    assert!(
        !found.contains(&named_row),
        "a forgotten name was searched: {found}"
    );
    server.stop().await;
}

/// The named person's insurer forgets them (本人情報の消去); the read
/// models have caught up on return.
async fn forget_named_person(server: &UiServer) {
    let done = server
        .engine
        .forget_person(
            &insurer(),
            &InsuredNumber::parse(NAMED_PERSON).unwrap(),
            Actor::Insurer(insurer()),
            day(30),
        )
        .await
        .unwrap();
    let position = *done.executed.positions().last().unwrap();
    bounded(
        "forgetting projected",
        server.projections.wait_for(position),
    )
    .await
    .unwrap();
}

/// The named person's `insured.record_viewed` events.
async fn reads_of(server: &UiServer, insured: &str) -> usize {
    let stream = insured_stream(&insurer(), &InsuredNumber::parse(insured).unwrap());
    server
        .store
        .read_stream(&stream, 1, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type.as_str() == "insured.record_viewed")
        .count()
}

/// Names (issue 21): the caseload shows the sealed name and kana opened,
/// logs one read per person per staff session (not per page or refresh),
/// finds the person by hiragana, and shows 忘却済み once forgotten.
async fn names_in_the_caseload(server: &UiServer, client: &Client) {
    let base = server.base.clone();
    let named_row = format!("#person-{INSURER}-{NAMED_PERSON}");
    client
        .goto(&format!("{base}/ui/caseload?lang=ja"))
        .await
        .unwrap();
    wait_text(client, &format!("{named_row} .name"), NAMED).await;
    wait_text(client, &format!("{named_row} .kana"), NAMED_KANA).await;
    // Already shown (and logged) by the pages before, in this session.
    assert_eq!(
        reads_of(server, NAMED_PERSON).await,
        1,
        "one read per session"
    );
    fill(client, "#q", "やまだ").await;
    click(client, "#search").await;
    wait_text(client, &format!("{named_row} .name"), NAMED).await;
    let rows = client
        .find_all(Locator::Css("#caseload-rows tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only the named person matches");
    screen(client, "02-caseload-name-search").await;
    assert_eq!(
        reads_of(server, NAMED_PERSON).await,
        1,
        "one read per session"
    );
    // Forgotten: 忘却済み, with nothing to decrypt.
    forget_named_person(server).await;
    client.goto(&format!("{base}/ui/caseload")).await.unwrap();
    wait_text(client, &format!("{named_row} .name"), "忘却済み").await;
}

/// Everything but the decision of the waiting person's application.
async fn bring_waiting_person_to_the_decision(engine: &Engine<Store>) {
    let document = |fill: char| json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 1024});
    let steps = [
        (
            "certification.investigation_scheduled",
            2,
            json!({"scheduled_on": "2026-05-08"}),
        ),
        (
            "certification.investigation_completed",
            8,
            json!({"investigation_sheet": document('d')}),
        ),
        (
            "certification.opinion_requested",
            9,
            json!({"institution": INSTITUTION}),
        ),
        (
            "certification.opinion_received",
            12,
            json!({"institution": INSTITUTION, "opinion": document('e')}),
        ),
        (
            "certification.primary_judgment_recorded",
            15,
            json!({"level": "care_1"}),
        ),
        (
            "certification.secondary_judgment_recorded",
            20,
            json!({"level": "care_1"}),
        ),
    ];
    for (kind, days, body) in steps {
        ingest(engine, INSURER, WAITING_PERSON, Some(1), kind, days, body).await;
    }
}

async fn browser_scenario(db: &TestDb) {
    let server = UiServer::start(db).await;
    let db_handle = server.projections.db().clone();
    staff::add_staff(&db_handle, &office(), STAFF_USER, STAFF_PASSWORD)
        .await
        .unwrap();
    bring_waiting_person_to_the_decision(&server.engine).await;
    give_consent(&server, WAITING_PERSON, day(29)).await;
    seed_named_person(&server).await;
    let home = nss_home(&server);
    let profile = server.dir.path().join("profile");
    let (driver, client) = start_browser(&home, &profile).await;
    let base = server.base.clone();

    // 1. Log in: the screen asks for a staff login first.
    client.goto(&format!("{base}/ui/caseload")).await.unwrap();
    text_of(&client, "#login").await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/login")
    );
    assert_keyboard_reaches(&client, "01-login", &["user", "password"], "login").await;
    fill(&client, "#user", STAFF_USER).await;
    fill(&client, "#password", "not the password").await;
    screen(&client, "01-login").await;
    click(&client, "#login").await;
    wait_text(&client, "#login-error", "正しくありません").await;
    assert_accessible(&client, "01-login-refused").await;
    fill(&client, "#user", STAFF_USER).await;
    fill(&client, "#password", STAFF_PASSWORD).await;
    click(&client, "#login").await;

    // 2. The caseload shows the persons the office may see.
    let person_row = format!("#person-{INSURER}-{PERSON}");
    let waiting_row = format!("#person-{INSURER}-{WAITING_PERSON}");
    wait_text(&client, &format!("{person_row} .level"), "要介護2").await;
    wait_text(&client, &format!("{waiting_row} .progress"), "二次判定").await;
    assert_keyboard_reaches(&client, "02-caseload", &["q"], "search").await;
    // 3. A decision arrives while the page is open.
    wait_live(&client).await;
    ingest(
        &server.engine,
        INSURER,
        WAITING_PERSON,
        Some(1),
        "certification.decided",
        30,
        json!({"level": "care_1", "validity": null}),
    )
    .await;
    wait_text(&client, &format!("{waiting_row} .level"), "要介護1").await;
    wait_text(&client, "#live-status", "更新しました").await;
    assert_japanese_time(&text_of(&client, "#live-status").await);
    screen(&client, "02-caseload").await;
    client
        .goto(&format!("{base}/ui/caseload?lang=en"))
        .await
        .unwrap();
    wait_text(&client, &format!("{waiting_row} .level"), "Care level 1").await;
    screen(&client, "02-caseload-en").await;
    names_in_the_caseload(&server, &client).await;

    // 4. The person, and a document opened.
    client
        .goto(&format!("{base}/ui/persons/{INSURER}/{PERSON}?lang=ja"))
        .await
        .unwrap();
    wait_text(&client, "#care-level", "要介護2").await;
    wait_text(&client, "#care-plan-office", OFFICE).await;
    screen(&client, "03-person").await;
    click(&client, "table.documents tbody tr:first-child a").await;
    wait_text(&client, "#document-sha256", &"a".repeat(64)).await;
    assert_eq!(text_of(&client, "#document-kind").await, "認定調査票");
    screen(&client, "04-document").await;

    // 5. A proxy application: an invalid field, then fixed.
    client
        .goto(&format!("{base}/ui/persons/{INSURER}/{PERSON}/apply"))
        .await
        .unwrap();
    assert_keyboard_reaches(
        &client,
        "05-proxy-application",
        &["kind", "applied_on"],
        "submit",
    )
    .await;
    fill(&client, "#applied_on", "2099-01-01").await;
    click(&client, "#submit").await;
    wait_text(&client, "#kind-error", "申請区分").await;
    wait_text(&client, "#applied_on-error", "未来の日付").await;
    screen(&client, "05-proxy-application-invalid").await;
    select(&client, "#kind", "change").await;
    fill(&client, "#applied_on", "2026-05-30").await;
    click(&client, "#submit").await;
    wait_text(&client, "#accepted", "受け付けました").await;
    screen(&client, "06-proxy-application-filed").await;

    // 6. The care-plan notification's card step: the consent appears live.
    client
        .goto(&format!("{base}/ui/care-plan/{INSURER}/{PERSON}"))
        .await
        .unwrap();
    wait_text(&client, "#consent-command", "kiban card consent").await;
    text_of(&client, "#consent-pending").await;
    wait_live(&client).await;
    give_consent(&server, PERSON, day(30)).await;
    wait_text(&client, "#consent-given", "同意を確認しました").await;
    assert_keyboard_reaches(
        &client,
        "07-care-plan",
        &["office_kind", "filed_on"],
        "submit",
    )
    .await;
    screen(&client, "07-care-plan-consent").await;

    // 7. A subsidy application with the amount computed before submitting
    //    (inside FY2025's application window).
    server.set_clock(Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap());
    let files = server.dir.path().join("scans");
    std::fs::create_dir_all(&files).unwrap();
    let scan = |name: &str| {
        let path = files.join(name);
        std::fs::write(&path, format!("%PDF-1.4 scan of {name}")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    client.goto(&format!("{base}/ui/subsidy")).await.unwrap();
    let subsidy_fields = [
        "st-43",
        "notice_43",
        "reader_count",
        "line_purpose_1",
        "line_count_1",
        "line_amount_1",
        "line_receipt_1",
        "passbook",
    ];
    assert_keyboard_reaches(&client, "08-subsidy-form", &subsidy_fields, "submit").await;
    click(&client, "#st-43").await;
    attach(&client, "#notice_43", &scan("designation-notice.pdf")).await;
    fill(&client, "#reader_count", "2").await;
    select(&client, "#line_purpose_1", "card_readers").await;
    fill(&client, "#line_count_1", "2").await;
    fill(&client, "#line_amount_1", "50000").await;
    attach(&client, "#line_receipt_1", &scan("receipt-readers.pdf")).await;
    select(&client, "#line_purpose_2", "connection_support").await;
    fill(&client, "#line_amount_2", "30000").await;
    attach(&client, "#line_receipt_2", &scan("receipt-support.pdf")).await;
    attach(&client, "#passbook", &scan("passbook.pdf")).await;
    // 居宅介護支援 (43): limit 64,000 yen; 80,000 yen of eligible cost.
    wait_text(&client, "#payable", "64,000円").await;
    screen(&client, "08-subsidy-form").await;
    click(&client, "#submit").await;
    wait_text(&client, "#applied", "受け付けました").await;
    wait_text(&client, "#subsidy-applications .status", "受付済").await;
    screen(&client, "09-subsidy-applied").await;
    // The attachments are stored as blobs beside the events, by digest.
    for name in [
        "designation-notice.pdf",
        "receipt-readers.pdf",
        "passbook.pdf",
    ] {
        let bytes = std::fs::read(files.join(name)).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let stored = server.store.get_blob(&digest).await.unwrap();
        assert_eq!(stored.as_deref(), Some(bytes.as_slice()), "{name} stored");
    }
    server.set_clock(day(30));

    // 8. Terminals: report this terminal lost, confirm, and be refused.
    client.goto(&format!("{base}/ui/terminals")).await.unwrap();
    wait_text(&client, &format!("#terminal-{TERMINAL} .status"), "利用中").await;
    screen(&client, "10-terminals").await;
    click(&client, &format!("#terminal-{TERMINAL} a.button")).await;
    text_of(&client, "#own-terminal").await;
    assert_keyboard_reaches(&client, "11-terminal-lost-confirm", &[], "confirm-lost").await;
    screen(&client, "11-terminal-lost-confirm").await;
    click(&client, "#confirm-lost").await;
    wait_text(
        &client,
        "main[data-problem=terminal-suspended] h1",
        "利用停止",
    )
    .await;
    wait_text(&client, "main .en", "suspended").await;
    screen(&client, "12-terminal-suspended").await;
    // Any other screen is refused the same way.
    client.goto(&format!("{base}/ui/caseload")).await.unwrap();
    text_of(&client, "main[data-problem=terminal-suspended]").await;

    // The accessibility check can fail at all.
    assert_axe_finds_violations(&client).await;

    client.close().await.unwrap();
    drop(driver);
    server.stop().await;
}

/// The insurer links the first person's card (the suite's test card) to
/// `PERSON` through the API, with its own certificate.
async fn link_persons_card(server: &UiServer) {
    let (certificate, _) =
        crate::person_view::signed_by(crate::person_view::card("first"), &"x".repeat(32));
    let ca = std::fs::read(&server.pki.tls.client_ca).unwrap();
    let pem = std::fs::read(&server.pki.client(&insurer_principal()).unwrap().pem).unwrap();
    let api = kiban_api::client::Client::new(&server.base, &ca, Some(&pem)).unwrap();
    let linked = api
        .link_card(
            &insurer(),
            &InsuredNumber::parse(PERSON).unwrap(),
            &kiban_api::CardLinkRequest {
                certificate_hex: certificate,
            },
        )
        .await
        .expect("the card linked");
    bounded(
        "card link projected",
        server
            .projections
            .wait_for(*linked.positions.last().unwrap()),
    )
    .await
    .unwrap();
}

fn insurer_principal() -> Principal {
    Principal::from_uri(&format!("kiban:insurer:{INSURER}")).unwrap()
}

async fn person_scenario(db: &TestDb) {
    // Before any card goes in: the private pcscd of scripts/test.
    let pcscd = kiban_card::test_pcscd::TestPcscd::from_environment();
    let server = UiServer::start(db).await;
    bring_waiting_person_to_the_decision(&server.engine).await;
    link_persons_card(&server).await;
    let home = trusting_home(&server, "person-home");
    let profile = server.dir.path().join("person-profile");
    let (driver, client) = start_browser(&home, &profile).await;
    let base = server.base.clone();

    // 1. The person's view asks for a sign-in with the card.
    client.goto(&format!("{base}/me")).await.unwrap();
    let code = text_of(&client, "#sign-in-code").await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/me/login")
    );
    wait_text(&client, "#sign-in-command", &format!("--code {code}")).await;
    screen(&client, "20-person-sign-in").await;
    // Keyboard only: the Tab key reaches the one button of the form.
    assert_keyboard_reaches(&client, "20-person-sign-in", &[], "complete-sign-in").await;
    // Not signed yet: the page says so.
    click(&client, "#complete-sign-in").await;
    wait_text(
        &client,
        "#sign-in-message",
        "まだカードの署名を確認できません",
    )
    .await;

    // 2. The card signs the code through pcscd (what `kiban card sign-in
    //    --code` does), and the page completes the sign-in.
    let inserted = tokio::task::block_in_place(|| pcscd.insert(crate::person_view::card("first")));
    let text = kiban_api::me::sign_in_challenge_text(&code);
    let (certificate, signature) = tokio::task::block_in_place(|| {
        kiban_card::sign_challenge_with_card(
            None,
            Duration::from_secs(30),
            &kiban_card::Pin::new(crate::person_view::PIN).unwrap(),
            text.as_bytes(),
        )
    })
    .expect("the card signs through pcscd");
    tokio::task::block_in_place(|| pcscd.remove(inserted));
    let ca = std::fs::read(&server.pki.tls.client_ca).unwrap();
    let api = kiban_api::client::Client::new(&base, &ca, None).unwrap();
    let signed_in = api
        .sign_in(&kiban_api::SignedChallenge {
            nonce: code.clone(),
            certificate_hex: hex::encode(certificate),
            signature_hex: hex::encode(signature),
        })
        .await
        .expect("signed in");
    assert!(
        signed_in.browser && signed_in.token.is_none(),
        "{signed_in:?}"
    );
    assert_eq!(signed_in.insured, PERSON);
    click(&client, "#complete-sign-in").await;

    // 3. Their own record: the certification and its progress, and who
    //    read it: the office's terminal as the care-plan office.
    wait_text(&client, "#care-level", "要介護2").await;
    wait_text(
        &client,
        "section[aria-labelledby=certifications] .timeline",
        "二次判定",
    )
    .await;
    let office_row = "table.access-log tr.reader-office";
    wait_text(&client, &format!("{office_row} .reader"), OFFICE).await;
    wait_text(&client, &format!("{office_row} .terminal"), TERMINAL).await;
    wait_text(
        &client,
        &format!("{office_row} .basis"),
        "ケアプラン作成事業所",
    )
    .await;
    wait_text(
        &client,
        "table.access-log tbody tr:first-child .reader",
        "ご本人",
    )
    .await;
    let html_lang = client
        .find(Locator::Css("html"))
        .await
        .unwrap()
        .attr("lang")
        .await
        .unwrap();
    assert_eq!(html_lang.as_deref(), Some("ja"));
    screen(&client, "21-person-record").await;
    assert_keyboard_reaches(&client, "21-person-record", &[], "sign-out").await;
    client
        .execute(
            "document.getElementById('access-log').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    screen(&client, "21-person-access-log").await;

    // 4. Another person's record: a document of theirs is not found, and
    //    the office screen needs a terminal's certificate.
    client
        .goto(&format!("{base}/me/documents/{}", "d".repeat(64)))
        .await
        .unwrap();
    text_of(&client, "main[data-problem=not-found]").await;
    client
        .goto(&format!("{base}/ui/persons/{INSURER}/{WAITING_PERSON}"))
        .await
        .unwrap();
    text_of(&client, "main[data-problem=unauthenticated]").await;
    screen(&client, "22-person-refused").await;

    // 5. Signing out ends the session.
    client.goto(&format!("{base}/me")).await.unwrap();
    click(&client, "#sign-out").await;
    text_of(&client, "#sign-in-code").await;
    client.goto(&format!("{base}/me")).await.unwrap();
    text_of(&client, "#sign-in-code").await;

    client.close().await.unwrap();
    drop(driver);
    server.stop().await;
}
