//! `kiban card consent` end to end (issue 8): the virtual JPKI card in the
//! vpcd reader of a real pcscd, the `kiban` binary on the office terminal's
//! side, and `kiban serve` trusting the test JPKI CA through `--card-ca` and
//! `--card-crl`.
//!
//! - Before the consent the office may not read the person (403).
//! - A wrong PIN is refused by the card; nothing is recorded.
//! - With the right PIN the consent is recorded; the office then reads the
//!   person, and the auditor sees the read in the office's access log with
//!   the basis "consent".
//! - With `--care-plan-filed-on` the card signs a challenge naming the
//!   care-plan office notification, which the CLI files (issue 16 item 7).
//! - A card whose certificate comes from an untrusted CA signs, but the
//!   server refuses it (`card_not_trusted`).
//!
//! The only test of its binary: it may start pcscd and set
//! `PCSCLITE_CSOCK_NAME` before any thread runs (see
//! `kiban_card::test_pcscd`). It shares the virtual reader with
//! kiban-card's `pcsc` test; `.config/nextest.toml` keeps the two apart.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{INSURER, KIBAN, OFFICE, PERSON, Serve, bounded, client, onboard, sqlite_url};
use kiban_card::test_pcscd::TestPcscd;
use kiban_card::test_pki::{TEST_CARD_SERIAL, TestCards};
use kiban_engine::{CommandContext, Engine};
use kiban_events::domain::certification::ValidityPeriod;
use kiban_events::domain::dates::{month_start, validity_until};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::{CareLevel, CopaymentRatio};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

/// The virtual card's PIN (暗証番号).
const PIN: &str = "2468";

#[test]
fn card_consent_through_pcscd_against_a_running_server() {
    // Before any thread: may start pcscd and set PCSCLITE_CSOCK_NAME.
    let pcscd = TestPcscd::from_environment();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario(&pcscd));
}

async fn scenario(pcscd: &TestPcscd) {
    let mut cards = TestCards::generate();
    // A card certificate current by the real clock, with which the real
    // kiban serve checks it (the test PKI's own starts on 2026-01-01 and
    // lasts five years: this test failed from 2031 with it).
    cards.certificate = cards.trusted_ca.issue_user_certificate(
        &cards.card_key.to_public_key(),
        TEST_CARD_SERIAL,
        SystemTime::now() - Duration::from_secs(24 * 3600),
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    // What the operator configures: the JPKI CA certificate (DER, as JPKI
    // publishes it) and a current CRL from that CA.
    let card_ca = dir.path().join("jpki-ca.der");
    std::fs::write(&card_ca, cards.trusted_ca.certificate_der()).unwrap();
    let card_crl = dir.path().join("jpki.crl");
    let now = SystemTime::now();
    std::fs::write(
        &card_crl,
        cards.trusted_ca.issue_crl(
            &[],
            now - Duration::from_secs(3600),
            Duration::from_secs(2 * 24 * 3600),
        ),
    )
    .unwrap();
    seed_person(dir.path()).await;

    let serve = Serve::start_with(
        dir.path(),
        None,
        &[
            OsStr::new("--card-ca"),
            card_ca.as_os_str(),
            OsStr::new("--card-crl"),
            card_crl.as_os_str(),
        ],
    )
    .await;
    let base = serve.base.clone();
    let office = client(&certs, Some(&format!("office-{OFFICE}-T-01.pem")));
    let eligibility = format!("{base}/v1/persons/{INSURER}/{PERSON}/eligibility");

    // The insurer links the card's certificate to the person (no PIN needed
    // to read it; the Individual Number is never read).
    let linked = client(&certs, Some(&format!("insurer-{INSURER}.pem")))
        .post(format!("{base}/v1/persons/{INSURER}/{PERSON}/card-links"))
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({"certificate_hex": hex::encode(&cards.certificate)}))
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 201, "{}", linked.text().await.unwrap());

    let before = office.get(&eligibility).send().await.unwrap();
    assert_eq!(before.status(), 403, "no consent yet");
    let problem: Value = before.json().await.unwrap();
    assert_eq!(
        problem["type"], "urn:kiban:problem:consent-required",
        "{problem}"
    );

    // A wrong PIN: the card refuses, the CLI says so in both languages.
    let inserted = pcscd.insert(cards.card(PIN));
    let wrong = card_consent(&base, &certs, "1357").await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "{stderr}");
    assert!(stderr.contains("wrong PIN: 2 tries left"), "{stderr}");
    assert!(stderr.contains("暗証番号が違います"), "{stderr}");
    assert_eq!(inserted.pin_tries_left(), 2);

    // The right PIN: the consent is recorded.
    let given = card_consent(&base, &certs, PIN).await;
    let stdout = String::from_utf8_lossy(&given.stdout);
    assert!(
        given.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&given.stderr)
    );
    assert!(stdout.contains("consent recorded"), "{stdout}");
    assert_eq!(inserted.pin_tries_left(), 3, "a right PIN resets the count");
    // The same card files the office (registered 43) as the person's
    // care-plan office: the card signs a challenge naming that notification
    // (issue 16 item 7); the consent just given would not do.
    let today = chrono::Utc::now().date_naive().to_string();
    let filed = card_consent_with(&base, &certs, PIN, &["--care-plan-filed-on", &today]).await;
    let stdout = String::from_utf8_lossy(&filed.stdout);
    assert!(
        filed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&filed.stderr)
    );
    assert!(
        stdout.contains("care-plan office notification filed"),
        "{stdout}"
    );
    pcscd.remove(inserted);

    // The office reads the person now, and the auditor sees that read.
    let read = office.get(&eligibility).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let view: Value = read.json().await.unwrap();
    assert_eq!(view["copayment_certificates"][0]["ratio"], 2, "{view}");
    // The access log is a read model: it shows the read once the
    // projection has caught up with the `record viewed` event.
    let auditor = client(&certs, Some("auditor-dev-auditor.pem"));
    let access_log = format!("{base}/v1/audit/offices/{OFFICE}/access-log");
    let (log, reads) = bounded("the read in the access log", async {
        loop {
            let log: Value = auditor
                .get(&access_log)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let reads: Vec<Value> = log
                .as_array()
                .expect("a list")
                .iter()
                .filter(|entry| entry["insured"] == PERSON)
                .cloned()
                .collect();
            if !reads.is_empty() {
                return (log, reads);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(reads.len(), 1, "{log}");
    assert_eq!(reads[0]["basis"], "consent", "{log}");
    assert_eq!(reads[0]["terminal"], "T-01", "{log}");

    // A card certified by a CA the server does not trust is refused.
    let inserted = pcscd.insert(cards.untrusted_card(PIN));
    let refused = card_consent(&base, &certs, PIN).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("[card_not_trusted]"), "{stderr}");
    pcscd.remove(inserted);

    let status = serve.interrupt().await;
    assert_eq!(status.code(), Some(0));
}

/// `kiban card consent` as the sample office terminal, the PIN on stdin.
async fn card_consent(base: &str, certs: &Path, pin: &str) -> Output {
    card_consent_with(base, certs, pin, &[]).await
}

/// [`card_consent`] with more arguments.
async fn card_consent_with(base: &str, certs: &Path, pin: &str, more: &[&str]) -> Output {
    let mut child = tokio::process::Command::new(KIBAN)
        .args(["card", "consent", "--server", base, "--office", OFFICE])
        .args(["--insurer", INSURER, "--insured", PERSON, "--pin-stdin"])
        .args(more)
        .arg("--cert")
        .arg(certs.join(format!("office-{OFFICE}-T-01.pem")))
        .arg("--cacert")
        .arg(certs.join("ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kiban card consent starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{pin}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    bounded("kiban card consent", child.wait_with_output())
        .await
        .unwrap()
}

/// The insurer shares data and the person holds a certification and a
/// copayment-ratio certificate: recorded straight into the store before
/// kiban serve opens it.
async fn seed_person(dir: &Path) {
    onboard(dir).await;
    let store = kiban_system::open_store(&sqlite_url(dir)).await.unwrap();
    let engine = Arc::new(Engine::new(store.clone()));
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let context = |actor: Actor| {
        CommandContext::new(
            EventId::from_uuid(Uuid::now_v7()).unwrap(),
            actor,
            chrono::Utc::now(),
        )
    };
    // Dates from the clock: the rules refuse dates over two years old.
    let today = chrono::Utc::now().date_naive();
    let days_ago = |days: i64| today - chrono::Duration::days(days);
    let from = month_start(days_ago(60));
    for command in [
        InsurerCommand::CompleteStandardisation {
            completed_on: days_ago(120),
        },
        InsurerCommand::CompleteDataTransmission {
            completed_on: days_ago(90),
        },
    ] {
        bounded(
            "insurer rollout",
            engine.execute::<Insurer>(
                &insurer_stream(&insurer),
                &command,
                &context(Actor::Federation),
            ),
        )
        .await
        .unwrap();
    }
    let person = insured_stream(&insurer, &InsuredNumber::parse(PERSON).unwrap());
    for command in [
        InsuredCommand::RecordCertification {
            application_seq: 1,
            level: CareLevel::Care2,
            validity: ValidityPeriod {
                from,
                until: validity_until(from, 12),
            },
        },
        InsuredCommand::IssueCopaymentCertificate {
            ratio: CopaymentRatio::new(2).unwrap(),
            valid_from: from,
        },
    ] {
        bounded(
            "the person's certificates",
            engine.execute::<InsuredPerson>(
                &person,
                &command,
                &context(Actor::Insurer(insurer.clone())),
            ),
        )
        .await
        .unwrap();
    }
    store.close().await;
}
