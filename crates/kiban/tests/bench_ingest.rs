//! `kiban bench ingest` runs end to end (a private nats-server, a scratch
//! SQLite store) and its JSON line carries the promised figures. Nothing here
//! asserts a speed: benchmarks are programs, not tests.

mod common;

#[test]
fn bench_ingest_runs_end_to_end_and_reports_the_promised_keys() {
    let directory = tempfile::tempdir().unwrap();
    let (report, stdout) = common::json_report(common::run_ok(&sqlite_run(&directory, 20)));
    assert_eq!(report["bench"], "ingest");
    assert_eq!(report["backend"], "sqlite");
    // 20 persons × 8 messages recorded as 20 × 9 events (the decision is
    // also recorded on the person): the benchmark checks the store itself.
    assert_eq!(report["messages"], 160);
    assert_eq!(report["events"], 180);
    for key in [
        "raw_jetstream_msgs_per_s",
        "store_append_events_per_s",
        "ingest_msgs_per_s",
        "ingest_events_per_s",
        "share_of_ceiling",
        "receipt_load_events_per_s",
        "receipt_p50_ms",
        "receipt_p99_ms",
        "subscriber_load_events_per_s",
        "subscriber_p50_ms",
        "subscriber_p99_ms",
        "projection_events_per_s",
    ] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert!(report["receipt_p50_ms"].as_f64() <= report["receipt_p99_ms"].as_f64());
    // The read models' lag is reported (in events; it may be 0 throughout).
    let lag = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert!(lag("projection_lag_p50_events") <= lag("projection_lag_p99_events"));
    assert!(lag("projection_lag_p99_events") <= lag("projection_lag_max_events"));
    assert!(report["projection_catch_up_ms"].as_f64().unwrap() >= 0.0);
    // The subscriptions followed the writer: most pages from its tail.
    let pages = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    assert!(
        pages("subscription_pages_from_memory") > 0,
        "no page from the committed tail"
    );
    let _ = pages("subscription_pages_from_database");
    assert!(stdout.contains("commit → office subscriber"));
    assert!(stdout.contains("read models during sustained ingest"));
}

/// The benchmark makes its certifications relative to the clock: run two
/// and a half years from now, the platform's two-year bound on a message's
/// `occurred_at` (docs/domain.md) turns none of them away. (With the fixed
/// 2026-05 dates it had, every message was refused `occurred_too_long_ago`
/// from May 2028 on.)
#[test]
fn bench_ingest_runs_in_any_year() {
    for at in ["2029-06-15 10:00:00", "2030-01-01 00:30:00"] {
        let directory = tempfile::tempdir().unwrap();
        let (report, _) = common::json_report(common::run_ok_on(at, &sqlite_run(&directory, 4)));
        assert_eq!(report["messages"], 32, "on {at}");
        assert_eq!(report["events"], 36, "on {at}");
    }
}

/// The arguments of a short `bench ingest` of `persons` persons on SQLite in
/// `directory`, reporting JSON.
fn sqlite_run(directory: &tempfile::TempDir, persons: u32) -> Vec<String> {
    let directory = directory.path().to_str().expect("a UTF-8 path");
    let args = [
        "bench",
        "ingest",
        "--backend",
        "sqlite",
        "--directory",
        directory,
    ];
    let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    args.extend(["--persons".to_owned(), persons.to_string()]);
    args.extend(["--paced-seconds", "1", "--json"].map(str::to_owned));
    args
}
