//! `kiban bench api` runs end to end (a scratch SQLite store, the real API
//! over HTTPS with client certificates, the trivial ceiling handler) and its
//! JSON line carries the promised figures; so does `kiban bench cluster`
//! (real processes behind HAProxy). Nothing here asserts a speed:
//! benchmarks are programs, not tests.

mod common;

#[test]
fn bench_api_runs_end_to_end_and_reports_the_promised_keys() {
    let directory = tempfile::tempdir().unwrap();
    let (report, stdout) = common::run_for_json(&[
        "bench",
        "api",
        "--directory",
        directory.path().to_str().expect("a UTF-8 path"),
        "--persons",
        "60",
        "--offices",
        "4",
        "--connections",
        "4",
        "--duration",
        "1",
        "--json",
    ]);
    assert_eq!(report["bench"], "api");
    assert_eq!(report["backend"], "sqlite");
    assert_eq!(
        (&report["persons"], &report["offices"], &report["insurers"]),
        (&60.into(), &4.into(), &1.into())
    );
    // The run fails on any non-200 answer, and checks that every office
    // read of a person appended exactly one access-log event.
    assert_eq!(report["errors"], 0);
    assert!(report["access_log_events"].as_u64().unwrap() > 0);
    // 1 insurer, 4 offices, 60 persons: 4 events (onboarded, standardised,
    // transmitted, sharing enabled) + 4 × 2 (registered, terminal), and per
    // person 8
    // (certification) + 3 (certification recorded, copayment ratio,
    // care-plan office) + a cost-limit certificate for every fifth + a
    // consent for every second.
    assert_eq!(report["events_loaded"], 4 + 8 + 60 * 11 + 12 + 30);
    for key in [
        "append_seconds",
        "projection_catch_up_seconds",
        "ceiling_rps",
        "ceiling_p50_ms",
        "ceiling_p99_ms",
        "ceiling_p999_ms",
        "api_rps",
        "api_p50_ms",
        "api_p99_ms",
        "api_p999_ms",
        "share_of_ceiling",
        "open_loop_target_rps",
        "open_loop_rps",
        "open_loop_p50_ms",
        "open_loop_p99_ms",
        "open_loop_p999_ms",
    ] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert!(report["api_p50_ms"].as_f64() <= report["api_p99_ms"].as_f64());
    let kinds = report["api_by_kind"].as_object().unwrap();
    for kind in [
        "office caseload page",
        "office eligibility",
        "office certifications",
        "insurer eligibility",
        "insurer certifications",
    ] {
        assert!(kinds[kind]["requests"].as_u64().unwrap() > 0, "{kind}");
    }
    assert!(stdout.contains("ceiling (trivial handler, same TLS)"));
}

/// `kiban bench cluster` runs end to end — PostgreSQL, a private
/// nats-server, an engine and three API processes (this binary) behind
/// HAProxy with `deploy/haproxy.cfg` — and its JSON line carries the
/// promised figures. Needs `KIBAN_TEST_DATABASE_URL`, nats-server on the
/// PATH and haproxy (`scripts/test` provides them).
#[test]
fn bench_cluster_runs_end_to_end_and_reports_the_promised_keys() {
    let database = std::env::var("KIBAN_TEST_DATABASE_URL")
        .expect("KIBAN_TEST_DATABASE_URL (run through scripts/test)");
    let haproxy = std::env::var("KIBAN_TEST_HAPROXY").unwrap_or_else(|_| "haproxy".to_owned());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
    let (report, stdout) = common::run_for_json(&[
        "bench",
        "cluster",
        "--database-url",
        &database,
        "--haproxy",
        &haproxy,
        "--haproxy-config",
        config,
        "--persons",
        "60",
        "--offices",
        "4",
        "--connections",
        "4",
        "--duration",
        "1",
        "--rounds",
        "1",
        "--json",
    ]);
    assert_eq!(report["bench"], "cluster");
    // The run fails on any failed request unless HAProxy's health checks
    // took a server out meanwhile (on a loaded machine a `/readyz` can
    // take longer than its writer ping's 1 s), and checks that every
    // logged read and command answered appended exactly one event.
    assert!(
        report["errors"] == 0 || report["servers_taken_out"].as_u64().unwrap() > 0,
        "{report}"
    );
    let by_processes = report["by_processes"].as_array().unwrap();
    assert_eq!(by_processes.len(), 3);
    for (n, figures) in by_processes.iter().enumerate() {
        assert_eq!(figures["api_processes"], n + 1);
        assert!(figures["rps_median"].as_f64().unwrap() > 0.0, "{figures}");
    }
    assert_eq!(report["runs"].as_array().unwrap().len(), 3);
    for phase in ["logged_read", "command"] {
        assert!(report[phase]["operations"].as_u64().unwrap() > 0, "{phase}");
        assert!(
            report[phase]["engine_cpu_ms"].as_f64().unwrap() >= 0.0,
            "{phase}"
        );
    }
    assert!(report["writer_failover_ms"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("writer fail-over (kill -9 → first command answered)"));
}
