//! What the binary's end-to-end tests share: a running `kiban serve`, HTTPS
//! clients with the development certificates, seeding the store before
//! serve opens it, and running a benchmark for its JSON report. Each test
//! binary uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kiban_engine::{CommandContext, Engine};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::InsurerNumber;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

pub const KIBAN: &str = env!("CARGO_BIN_EXE_kiban");
/// The longest any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(120);
pub const INSURER: &str = "131016";
pub const OFFICE: &str = "1312345678";
pub const PERSON: &str = "0000012345";

pub async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("kiban.db").display())
}

/// A running `kiban serve` and its stdout.
pub struct Serve {
    pub child: Child,
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub base: String,
}

impl Serve {
    pub async fn start(dir: &Path, nats_url: Option<&str>) -> Serve {
        Serve::start_with(dir, nats_url, &[]).await
    }

    /// The same with more arguments to `kiban serve`.
    pub async fn start_with(dir: &Path, nats_url: Option<&str>, extra: &[&OsStr]) -> Serve {
        let mut command = Command::new(KIBAN);
        command
            .args(["serve", "--database-url", &sqlite_url(dir), "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = nats_url {
            // The harness's nats-server has 1 GB of file storage.
            command.args(["--nats-url", url, "--events-max-bytes", "268435456"]);
        }
        let mut child = command.spawn().expect("kiban serve starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        loop {
            let line = bounded("serve's banner", stdout.next_line())
                .await
                .unwrap()
                .expect("kiban serve printed its banner before exiting");
            if let Some(rest) = line.strip_prefix("API: ") {
                base = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.starts_with("Ctrl-C to stop") {
                break;
            }
        }
        Serve {
            child,
            stdout,
            base: base.expect("the banner names the API address"),
        }
    }

    /// SIGINT (Ctrl-C), then the exit status.
    pub async fn interrupt(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        // Drain stdout so that the child never blocks on a full pipe; the
        // drain is bounded too, since a child that hangs keeps its stdout open.
        bounded("serve to exit", async {
            while let Ok(Some(_)) = self.stdout.next_line().await {}
            self.child.wait().await
        })
        .await
        .unwrap()
    }
}

pub fn client(certs: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(file) = identity {
        let pem = std::fs::read(certs.join(file)).unwrap();
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Onboards the insurer as the federation, straight into the store, before
/// kiban serve opens it (the command `POST /v1/insurers` executes).
pub async fn onboard(dir: &Path) {
    let store = kiban_system::open_store(&sqlite_url(dir)).await.unwrap();
    let engine = Arc::new(Engine::new(store.clone()));
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    engine
        .execute::<Insurer>(
            &insurer_stream(&insurer),
            &InsurerCommand::Onboard { insurer },
            &CommandContext::new(
                EventId::from_uuid(Uuid::now_v7()).unwrap(),
                Actor::Federation,
                chrono::Utc::now(),
            ),
        )
        .await
        .unwrap();
    store.close().await;
}

/// Runs `kiban` with `args` (without `KIBAN_BENCH_DATABASE_URL`, so that a
/// benchmark uses its SQLite scratch directory unless told otherwise),
/// asserts that it succeeded, and returns its standard output.
pub fn run_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    run_ok_in(std::process::Command::new(KIBAN), args)
}

/// `kiban` as it runs on another day: under libfaketime's `faketime`, its
/// clock starts at `at` (`YYYY-MM-DD hh:mm:ss`, UTC) and runs on from
/// there; timers (the monotonic clock) are left alone. Only this process's
/// clock moves: a nats-server it talks to keeps the real one.
/// `scripts/test` installs faketime; without it the test fails, naming it.
pub fn kiban_on(at: &str) -> std::process::Command {
    let found = std::process::Command::new("faketime")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "faketime (libfaketime) is needed: run under scripts/test, which installs it"
    );
    let mut command = std::process::Command::new("faketime");
    command
        // Not faked twice when the suite itself runs under libfaketime
        // (scripts/test-on-day): faketime sets its own.
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .args([at, KIBAN])
        .env("TZ", "UTC")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    command
}

/// [`run_ok`] with `kiban` run on the day `at` ([`kiban_on`]).
pub fn run_ok_on<S: AsRef<OsStr>>(at: &str, args: &[S]) -> String {
    run_ok_in(kiban_on(at), args)
}

fn run_ok_in<S: AsRef<OsStr>>(mut command: std::process::Command, args: &[S]) -> String {
    let output = command
        .args(args)
        .env_remove("KIBAN_BENCH_DATABASE_URL")
        .output()
        .expect("the kiban binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// [`run_ok`], and the last line of its output as JSON.
pub fn run_for_json(args: &[&str]) -> (serde_json::Value, String) {
    json_report(run_ok(args))
}

/// The last line of a benchmark's `stdout` as JSON, and `stdout`.
pub fn json_report(stdout: String) -> (serde_json::Value, String) {
    let report = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    (report, stdout)
}
