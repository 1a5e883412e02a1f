//! The `kiban` binary's operator commands with good and bad input, run as
//! commands (the built binary, a real SQLite store in a temporary
//! directory): each documented exit code (README.md "Exit codes",
//! `crates/kiban/src/main.rs`) produced by a real invocation — `0`, `1`, `2`,
//! `3`, `4` here; `5` (`emit`) in `cli.rs`, `6` (`simulate`) in
//! `simulate.rs` — and `append`, `read`, `verify`, `audit verify`,
//! `audit checkpoint`, `replay`, `admin forget`, `admin staff add`, each
//! refused cleanly on bad input with nothing written.
//!
//! Every wait is bounded only to turn a hang into a failure.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use common::{INSURER, KIBAN, PERSON, bounded, sqlite_url};
use kiban_engine::Engine;
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_events::ids::InsurerNumber;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use uuid::Uuid;

/// What a run of the binary left.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

/// Runs `kiban args…` with `stdin` (empty when `None`) and extra `env`.
async fn kiban(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(KIBAN);
    command
        .args(args)
        .env_remove("KIBAN_DATABASE_URL")
        .env_remove("KIBAN_STAFF_PASSWORD")
        .env_remove("KIBAN_SIGNING_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the kiban binary runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let output = bounded(&format!("kiban {args:?}"), child.wait_with_output())
        .await
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The events `kiban read` prints for the whole store.
async fn read_all(url: &str) -> Vec<Value> {
    let run = kiban(&["read", "--database-url", url], None, &[])
        .await
        .expect(0);
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn event(event_type: &str, payload: Value) -> Value {
    json!({"event_id": Uuid::now_v7(), "event_type": event_type, "payload": payload})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let cases: &[&[&str]] = &[
        &["frobnicate"],
        // `--stream` is required.
        &["append", "--database-url", &url, "-"],
        // `--follow` reads all streams only.
        &[
            "read",
            "--database-url",
            &url,
            "--follow",
            "--stream",
            "a/b",
        ],
        &["read", "--database-url", &url, "--from", "first"],
        &["verify", "--database-url", &url, "--to", "-3"],
        // Exactly one target.
        &[
            "replay",
            "--database-url",
            &url,
            "--stream",
            "a/b",
            "--office",
            "1312345678",
        ],
        &[
            "replay",
            "--database-url",
            &url,
            "--stream",
            "a/b",
            "--as-of",
            "yesterday",
        ],
        &["audit", "checkpoint", "check", "--database-url", &url],
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "1312345678",
        ],
        &[
            "admin",
            "forget",
            "--database-url",
            &url,
            "--insurer",
            INSURER,
        ],
    ];
    for args in cases {
        let run = kiban(args, None, &[]).await.expect(2);
        assert!(
            run.stderr.contains("Usage") || run.stderr.contains("error:"),
            "{args:?}: {run:#?}"
        );
    }
    // Nothing was created by a refused command line.
    assert!(!dir.path().join("kiban.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_read_accept_good_input_and_refuse_bad_input_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());

    // Good: one event from standard input on a new stream.
    let first = event("test.happened", json!({"n": 1}));
    let run = kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/one",
            "--expected-version",
            "no-stream",
            "-",
        ],
        Some(&first.to_string()),
        &[],
    )
    .await
    .expect(0);
    let result: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(result["first_position"], 1, "{result}");
    assert_eq!(result["next_expected_version"], 1, "{result}");

    // Good: an array of two from a file, at the version just returned.
    let file = dir.path().join("two.json");
    let two = json!([
        event("test.happened", json!({"n": 2})),
        event("test.happened", json!({"n": 3})),
    ]);
    std::fs::write(&file, two.to_string()).unwrap();
    let path = file.to_str().unwrap();
    let run = kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/one",
            "--expected-version",
            "1",
            path,
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    let result: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(result["last_position"], 3, "{result}");

    // Refused by the store (exit 3), nothing written.
    let stale = event("test.happened", json!({"n": 4}));
    let run = kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/one",
            "--expected-version",
            "1",
            "-",
        ],
        Some(&stale.to_string()),
        &[],
    )
    .await
    .expect(3);
    assert!(
        run.stderr.to_lowercase().contains("conflict") || run.stderr.contains("version"),
        "{run:#?}"
    );
    // The first event's id again, on another stream.
    let reused =
        json!({"event_id": first["event_id"], "event_type": "test.happened", "payload": {"n": 5}});
    kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/two",
            "-",
        ],
        Some(&reused.to_string()),
        &[],
    )
    .await
    .expect(3);

    // Invalid input (exit 3: "invalid input — nothing written").
    let good = event("test.happened", json!({"n": 6})).to_string();
    let invalid: &[(&[&str], String)] = &[
        (&["--stream", "test/one"], "{\"event_type\": ".to_owned()),
        (&["--stream", "test/one"], "not json at all".to_owned()),
        (
            &["--stream", "test/one"],
            json!({"event_type": "test.happened", "payload": {}, "surprise": 1}).to_string(),
        ),
        (
            &["--stream", "test/one"],
            json!({"event_type": "Not A Type!", "payload": {}}).to_string(),
        ),
        (
            &["--stream", "test/one"],
            json!({"event_type": "test.happened", "payload": [1, 2]}).to_string(),
        ),
        (
            &["--stream", "test/one"],
            json!({"payload": {}}).to_string(),
        ),
        (&["--stream", "no-kind-no-slash"], good.clone()),
        (
            &["--stream", "test/one", "--expected-version", "soon"],
            good.clone(),
        ),
    ];
    for (args, input) in invalid {
        let mut line = vec!["append", "--database-url", &url];
        line.extend_from_slice(args);
        line.push("-");
        let run = kiban(&line, Some(input), &[]).await;
        assert_eq!(run.code, Some(3), "{args:?} {input:?}: {run:#?}");
        assert!(run.stderr.starts_with("kiban: "), "{run:#?}");
    }
    // An input file that cannot be read is an error (1), not a refusal.
    let missing = dir.path().join("missing.json");
    kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/one",
            missing.to_str().unwrap(),
        ],
        None,
        &[],
    )
    .await
    .expect(1);

    // Only the three good events are stored.
    let all = read_all(&url).await;
    let payloads: Vec<_> = all.iter().map(|e| e["payload"]["n"].clone()).collect();
    assert_eq!(payloads, vec![json!(1), json!(2), json!(3)]);
    let positions: Vec<_> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);

    // read: one stream from a version, a bounded number, an invalid stream.
    let run = kiban(
        &[
            "read",
            "--database-url",
            &url,
            "--stream",
            "test/one",
            "--from",
            "2",
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    assert_eq!(run.stdout.lines().count(), 2, "{run:#?}");
    let run = kiban(&["read", "--database-url", &url, "--max", "1"], None, &[])
        .await
        .expect(0);
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    let run = kiban(
        &["read", "--database-url", &url, "--stream", "nothing-here"],
        None,
        &[],
    )
    .await
    .expect(1);
    assert!(run.stdout.is_empty(), "{run:#?}");
    // A database URL of no known kind: an error (1), for `read` and for
    // `append` alike (the store refused no append: it never opened).
    kiban(
        &["read", "--database-url", "mysql://localhost/kiban"],
        None,
        &[],
    )
    .await
    .expect(1);
    kiban(
        &[
            "append",
            "--database-url",
            "mysql://localhost/kiban",
            "--stream",
            "test/one",
            "-",
        ],
        Some(&good),
        &[],
    )
    .await
    .expect(1);
}

/// Replaces `from` by `to` (the same length) in the SQLite files of `dir`:
/// what an attacker with write access to the disk does. Panics unless some
/// file held `from`.
fn tamper_with_files(dir: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut found = false;
    for name in ["kiban.db", "kiban.db-wal"] {
        let path = dir.join(name);
        let Ok(mut bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut index = 0;
        while let Some(at) = bytes[index..]
            .windows(from.len())
            .position(|window| window == from.as_bytes())
        {
            let start = index + at;
            bytes[start..start + to.len()].copy_from_slice(to.as_bytes());
            index = start + to.len();
            found = true;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(found, "{from:?} is in the database files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_audit_report_a_sound_chain_with_0_and_a_tampered_one_with_4() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let events = json!([
        event("test.happened", json!({"mark": "untouched-1"})),
        event("test.happened", json!({"mark": "untouched-2"})),
        event("test.happened", json!({"mark": "untouched-3"})),
    ]);
    kiban(
        &[
            "append",
            "--database-url",
            &url,
            "--stream",
            "test/audit",
            "-",
        ],
        Some(&events.to_string()),
        &[],
    )
    .await
    .expect(0);

    let run = kiban(&["verify", "--database-url", &url], None, &[])
        .await
        .expect(0);
    assert!(run.stdout.starts_with("verified 3 events"), "{run:#?}");
    let run = kiban(
        &["audit", "verify", "--database-url", &url, "--json"],
        None,
        &[],
    )
    .await
    .expect(0);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["events"], 3, "{report}");
    let run = kiban(
        &["audit", "checkpoint", "create", "--database-url", &url],
        None,
        &[],
    )
    .await
    .expect(0);
    assert!(
        run.stdout.starts_with("checkpoint at position 3"),
        "{run:#?}"
    );
    let export = dir.path().join("export.json");
    let export_path = export.to_str().unwrap();
    kiban(
        &[
            "audit",
            "checkpoint",
            "export",
            "--database-url",
            &url,
            "--out",
            export_path,
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    let run = kiban(
        &[
            "audit",
            "checkpoint",
            "check",
            "--database-url",
            &url,
            export_path,
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    assert!(
        run.stdout.starts_with("consistent: 1 signed checkpoints"),
        "{run:#?}"
    );

    // An export that is not JSON: an error (1).
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    kiban(
        &[
            "audit",
            "checkpoint",
            "check",
            "--database-url",
            &url,
            garbage.to_str().unwrap(),
        ],
        None,
        &[],
    )
    .await
    .expect(1);
    // A checkpoint's signature altered: BAD SIGNATURE (4).
    let mut document: Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let signature = find_signature(&mut document).expect("the export holds a signature");
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    signature.replace_range(0..1, flipped);
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, document.to_string()).unwrap();
    let run = kiban(
        &[
            "audit",
            "checkpoint",
            "check",
            "--database-url",
            &url,
            forged.to_str().unwrap(),
        ],
        None,
        &[],
    )
    .await
    .expect(4);
    assert!(run.stdout.contains("BAD SIGNATURE"), "{run:#?}");

    // An event's payload rewritten on disk: every check finds it (4).
    tamper_with_files(dir.path(), "untouched-2", "tampered-2!");
    let run = kiban(&["verify", "--database-url", &url], None, &[])
        .await
        .expect(4);
    assert!(run.stdout.starts_with("BROKEN at position 2"), "{run:#?}");
    kiban(&["audit", "verify", "--database-url", &url], None, &[])
        .await
        .expect(4);
    kiban(
        &[
            "audit",
            "checkpoint",
            "check",
            "--database-url",
            &url,
            export_path,
        ],
        None,
        &[],
    )
    .await
    .expect(4);
    // Verifying only what comes before the change still passes.
    kiban(&["verify", "--database-url", &url, "--to", "1"], None, &[])
        .await
        .expect(0);
}

/// The first string field named `signature` in `value`.
fn find_signature(value: &mut Value) -> Option<&mut String> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(_)) = map.get("signature") {
                return match map.get_mut("signature") {
                    Some(Value::String(text)) => Some(text),
                    _ => None,
                };
            }
            map.values_mut().find_map(find_signature)
        }
        Value::Array(items) => items.iter_mut().find_map(find_signature),
        _ => None,
    }
}

/// Records a whole certification of the test person, through the engine,
/// before any kiban command opens the store (the insurer onboarded first).
async fn seed_person(dir: &Path) {
    common::onboard(dir).await;
    let url = &sqlite_url(dir);
    let store = kiban_system::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(store.clone()));
    let insurer = InsurerNumber::parse(INSURER).unwrap();
    let day = |days: i64| {
        chrono::DateTime::parse_from_rfc3339("2026-05-01T09:00:00+09:00")
            .unwrap()
            .to_utc()
            + chrono::Duration::days(days)
    };
    let document = |fill: char| json!({"sha256": fill.to_string().repeat(64), "media_type": "application/pdf", "size_bytes": 1000});
    let steps = [
        (
            "certification.filed",
            0,
            json!({"kind": "new", "applicant": {"by": "office", "office": "1312345678"}, "applied_on": "2026-05-01"}),
        ),
        (
            "certification.investigation_scheduled",
            2,
            json!({"scheduled_on": "2026-05-08"}),
        ),
        (
            "certification.investigation_completed",
            8,
            json!({"investigation_sheet": document('a')}),
        ),
        (
            "certification.opinion_requested",
            3,
            json!({"institution": "1310000001"}),
        ),
        (
            "certification.opinion_received",
            12,
            json!({"institution": "1310000001", "opinion": document('b')}),
        ),
        (
            "certification.primary_judgment_recorded",
            15,
            json!({"level": "care_2"}),
        ),
        (
            "certification.secondary_judgment_recorded",
            20,
            json!({"level": "care_2"}),
        ),
        (
            "certification.decided",
            21,
            json!({"level": "care_2", "validity": null}),
        ),
    ];
    for (kind, days, body) in steps {
        let message = MunicipalMessage {
            event_id: Uuid::now_v7(),
            kind: kind.to_owned(),
            insurer: insurer.clone(),
            insured: Some(kiban_events::ids::InsuredNumber::parse(PERSON).unwrap()),
            application: Some(1),
            occurred_at: day(days),
            body: body.as_object().cloned().unwrap(),
        };
        match engine.ingest(message, &insurer, day(60)).await.unwrap() {
            IngestOutcome::Accepted { .. } => {}
            IngestOutcome::Rejected(rejection) => panic!("{kind}: {rejection:?}"),
        }
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_forget_and_staff_add_take_good_input_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    seed_person(dir.path()).await;
    let head = read_all(&url).await.len();
    assert_eq!(
        head, 10,
        "the onboarding, eight facts on the application, one on the person"
    );
    let person = format!("{INSURER}-{PERSON}");
    let application = format!("certification/{INSURER}-{PERSON}-1");

    // replay: a stream, a person, a position; JSON and text.
    let run = kiban(
        &[
            "replay",
            "--database-url",
            &url,
            "--stream",
            &application,
            "--json",
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    let replayed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        replayed.to_string().contains("certification.decided"),
        "{replayed}"
    );
    let run = kiban(
        &[
            "replay",
            "--database-url",
            &url,
            "--stream",
            &application,
            "--at-position",
            "2",
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    assert!(run.stdout.contains("1 events up to position 2"), "{run:#?}");
    assert!(!run.stdout.contains("certification.decided"), "{run:#?}");
    kiban(
        &["replay", "--database-url", &url, "--insured", &person],
        None,
        &[],
    )
    .await
    .expect(0);
    // Bad targets: no target, an invalid stream, an invalid person.
    kiban(&["replay", "--database-url", &url], None, &[])
        .await
        .expect(1);
    let run = kiban(
        &["replay", "--database-url", &url, "--stream", "no slash"],
        None,
        &[],
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("not a valid stream"), "{run:#?}");
    kiban(
        &["replay", "--database-url", &url, "--insured", ""],
        None,
        &[],
    )
    .await
    .expect(1);

    // admin staff add: bad office, short password, then good ones.
    let run = kiban(
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "12",
            "--user",
            "sato",
        ],
        None,
        &[("KIBAN_STAFF_PASSWORD", "a long enough password")],
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("office number"), "{run:#?}");
    kiban(
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "1312345678",
            "--user",
            "sato",
        ],
        None,
        &[("KIBAN_STAFF_PASSWORD", "short")],
    )
    .await
    .expect(1);
    kiban(
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "1312345678",
            "--user",
            "bad user!",
        ],
        None,
        &[("KIBAN_STAFF_PASSWORD", "a long enough password")],
    )
    .await
    .expect(1);
    let run = kiban(
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "1312345678",
            "--user",
            "sato",
        ],
        None,
        &[("KIBAN_STAFF_PASSWORD", "a long enough password")],
    )
    .await
    .expect(0);
    assert!(
        run.stdout
            .contains("staff account sato of office 1312345678 is ready"),
        "{run:#?}"
    );
    // The password from one line of standard input; an existing account
    // gets the new password.
    kiban(
        &[
            "admin",
            "staff",
            "add",
            "--database-url",
            &url,
            "--office",
            "1312345678",
            "--user",
            "sato",
        ],
        Some("another long password\n"),
        &[],
    )
    .await
    .expect(0);

    // admin forget: bad numbers, then the person, then again.
    let run = kiban(
        &[
            "admin",
            "forget",
            "--database-url",
            &url,
            "--insurer",
            "13101",
            "--insured",
            PERSON,
        ],
        None,
        &[],
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("6 digits"), "{run:#?}");
    let run = kiban(
        &[
            "admin",
            "forget",
            "--database-url",
            &url,
            "--insurer",
            INSURER,
            "--insured",
            "123",
        ],
        None,
        &[],
    )
    .await
    .expect(1);
    assert!(run.stderr.contains("10 digits"), "{run:#?}");
    assert_eq!(read_all(&url).await.len(), head, "refusals wrote nothing");
    let run = kiban(
        &[
            "admin",
            "forget",
            "--database-url",
            &url,
            "--insurer",
            INSURER,
            "--insured",
            PERSON,
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    assert!(
        run.stdout
            .contains("insured.person_forgotten recorded at position 11"),
        "{run:#?}"
    );
    let run = kiban(
        &[
            "admin",
            "forget",
            "--database-url",
            &url,
            "--insurer",
            INSURER,
            "--insured",
            PERSON,
        ],
        None,
        &[],
    )
    .await
    .expect(0);
    assert!(
        run.stdout.contains("already recorded as forgotten"),
        "{run:#?}"
    );
    // Forgetting keeps the chain whole.
    let run = kiban(&["verify", "--database-url", &url], None, &[])
        .await
        .expect(0);
    assert!(run.stdout.starts_with("verified 11 events"), "{run:#?}");
}

/// Issue 17 item 2: `kiban emit --check` validates messages offline (no
/// NATS is running here) and points at each problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_check_validates_messages_offline_with_json_pointers() {
    let good = serde_json::json!({
        "event_id": "0192b6a0-5c1e-7c3a-9f00-000000000001",
        "kind": "certification.filed",
        "insurer": "131016", "insured": "0000012345", "application": 1,
        "occurred_at": "2026-04-01T09:00:00+09:00",
        "body": {"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-04-01"}
    });
    let run = kiban(&["emit", "--check", "-"], Some(&good.to_string()), &[]).await;
    let run = run.expect(0);
    assert_eq!(run.stdout, "");
    let mut bad = good.clone();
    bad["body"]["applied_on"] = serde_json::json!("April 1st");
    bad["body"]["decided_on"] = serde_json::json!("2026-04-02");
    let lines = format!(
        "{good}\n{bad}\n{}\n",
        serde_json::json!({"kind": "insured.teleported"})
    );
    let run = kiban(
        &["emit", "--check", "--insurer", "271004", "-"],
        Some(&lines),
        &[],
    )
    .await
    .expect(7);
    for expected in [
        "message 1 /insurer: ",
        "message 2 /body/applied_on: ",
        "message 2 /body: ",
        "message 3 /kind: ",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected} in {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("decided_on"), "{}", run.stdout);
}
