//! `kiban simulate` at a small scale: interrupted with Ctrl-C after its
//! first chunk, resumed with the same command, and its invariants checked
//! against a recount from the store it wrote.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kiban_store::{Store, StoreOptions};

const PERSONS: &str = "1000";

fn simulate(directory: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiban"));
    command
        .arg("simulate")
        .arg("--database-url")
        .arg(format!("sqlite://{}", directory.join("kiban.db").display()))
        .arg("--checkpoint")
        .arg(directory.join("checkpoint.json"))
        .args(["--insurers", "2", "--persons", PERSONS, "--offices", "40"])
        .args(["--years", "1", "--seed", "11", "--chunk", "250", "--json"]);
    command
}

#[test]
fn a_small_simulation_interrupted_and_resumed_keeps_every_invariant() {
    let directory = tempfile::tempdir().unwrap();

    // First run: Ctrl-C once the first chunk is reported.
    let mut child = simulate(directory.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut progress = Vec::new();
    let mut interrupted = false;
    // Read to the end: a closed pipe would fail the child's next message.
    for line in stderr.lines() {
        let line = line.unwrap();
        if !interrupted && line.contains("persons 250/") {
            let kill = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            interrupted = true;
        }
        progress.push(line);
    }
    assert!(interrupted, "no progress line: {progress:#?}");
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(6),
        "interrupted exit code; stderr: {progress:#?}"
    );

    // Second run: the same command resumes and finishes.
    let output = simulate(directory.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        report["resumed_from_chunk"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(
        report["rejections"],
        serde_json::json!({}),
        "every planned fact is valid"
    );

    let applications = &report["applications"];
    let count = |key: &str| applications[key].as_u64().unwrap();
    assert_eq!(
        count("filed"),
        count("decided") + count("withdrawn") + count("left_open"),
        "every application ends decided, withdrawn or open past its deadline"
    );
    assert!(count("left_open") > 0 && count("extended") > 0 && count("withdrawn") > 0);
    assert_eq!(
        report["deadlines_recorded"].as_u64(),
        Some(count("left_open"))
    );
    assert_eq!(
        report["overdue_in_projection"].as_u64(),
        Some(count("left_open"))
    );
    assert_eq!(report["verified_events"], report["events"]);

    // A recount from the store.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let mut by_type = std::collections::BTreeMap::<String, u64>::new();
        let mut ids = std::collections::HashSet::new();
        let mut home_modification = std::collections::HashMap::<String, u64>::new();
        let mut from = 1;
        loop {
            let page = store.read_all(from, 1_000).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            for event in page {
                assert!(ids.insert(event.event_id), "an event recorded twice");
                *by_type.entry(event.event_type.to_string()).or_default() += 1;
                if event.event_type.as_str() == "insured.home_modification_work_recorded" {
                    let payload: serde_json::Value =
                        serde_json::from_str(event.payload.as_str()).unwrap();
                    let counted = payload["counted_cost"].as_u64().unwrap();
                    let benefit = payload["benefit"].as_u64().unwrap();
                    assert!(benefit <= counted && counted <= payload["cost"].as_u64().unwrap());
                    *home_modification
                        .entry(event.stream.to_string())
                        .or_default() += counted;
                }
            }
        }
        assert_eq!(from - 1, report["events"].as_u64().unwrap());
        let of = |event_type: &str| by_type.get(event_type).copied().unwrap_or(0);
        assert_eq!(of("certification.filed"), count("filed"));
        assert_eq!(of("certification.decided"), count("decided"));
        assert_eq!(of("certification.withdrawn"), count("withdrawn"));
        assert_eq!(of("certification.extension_notified"), count("extended"));
        assert_eq!(of("certification.deadline_reached"), count("left_open"));
        // The home-modification ledger never goes below zero: what was
        // counted against a person's cap never exceeds it.
        assert!(
            home_modification
                .values()
                .all(|&counted| counted <= 200_000)
        );
        store.close().await;
    });
}
