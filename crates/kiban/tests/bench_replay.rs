//! `kiban bench replay` runs end to end on both backends (a scratch SQLite
//! file and a scratch PostgreSQL database) and its JSON lines carry the
//! promised figures. Nothing here asserts a speed: benchmarks are programs,
//! not tests.

mod common;

#[test]
fn bench_replay_runs_on_both_backends_and_reports_every_phase() {
    let server = std::env::var("KIBAN_TEST_DATABASE_URL").expect(
        "KIBAN_TEST_DATABASE_URL is not set: this test needs a PostgreSQL server \
         (scripts/test starts one), e.g. postgres://postgres@127.0.0.1:55432/postgres",
    );
    let directory = tempfile::tempdir().unwrap();
    let stdout = common::run_ok(&[
        "bench".as_ref(),
        "replay".as_ref(),
        "--backend".as_ref(),
        "both".as_ref(),
        "--directory".as_ref(),
        directory.path().as_os_str(),
        "--database-url".as_ref(),
        server.as_ref(),
        "--events".as_ref(),
        "250".as_ref(),
        "--json".as_ref(),
    ] as &[&std::ffi::OsStr]);
    let lines: Vec<&str> = stdout.lines().collect();
    let reports: Vec<serde_json::Value> = lines[lines.len() - 2..]
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON line per backend"))
        .collect();
    for (report, backend) in reports.iter().zip(["sqlite", "postgres"]) {
        assert_eq!(report["bench"], "replay");
        assert_eq!(report["backend"], backend);
        // 250 events round up to whole persons of 13 events: 20 persons.
        assert_eq!(report["events"], 260, "{backend}");
        assert_eq!(report["persons"], 20, "{backend}");
        assert!(report["payload_bytes_mean"].as_f64().unwrap() > 50.0);
        assert!(report["row_bytes_mean"].as_f64() > report["payload_bytes_mean"].as_f64());
        for phase in [
            "write",
            "read",
            "read_parsed",
            "verify",
            "follow",
            "rebuild",
        ] {
            for key in [
                "events_per_s",
                "seconds",
                "rss_before_mib",
                "rss_after_mib",
                "peak_mib",
            ] {
                let value = report[phase][key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{backend} {phase}.{key} missing"));
                assert!(
                    value.is_finite() && value > 0.0,
                    "{backend} {phase}.{key} = {value}"
                );
            }
        }
        assert!(report["peak_rss_mib"].as_f64().unwrap() > 0.0);
    }
    assert!(stdout.contains("rebuild (all projections)"));
    assert!(stdout.contains("follow (live, from 0)"));
    // The scratch SQLite database was removed.
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
}
