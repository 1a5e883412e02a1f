//! The append benchmark runs end to end and reports exactly the promised
//! keys. Nothing here asserts a speed: benchmarks are programs, not tests.

use kiban_lab::bench_append::{AppendBenchOptions, bench_append};
use kiban_store::scratch::ScratchBackend;
use kiban_tests::{DATABASE_URL_VAR, bounded};

async fn runs_and_reports(backend: ScratchBackend, name: &str) {
    let options = AppendBenchOptions {
        backend,
        writers: 4,
        batch: 3,
        events: 40,
    };
    let report = bounded("the benchmark", bench_append(options))
        .await
        .expect("bench");
    assert_eq!(
        (report.bench, report.backend, report.events),
        ("append", name, 40)
    );
    let json = serde_json::to_value(&report).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "backend",
            "bench",
            "events",
            "events_per_s",
            "naive_events_per_s",
            "p50_ms",
            "p99_ms",
            "raw_events_per_s"
        ]
    );
    for rate in [
        report.events_per_s,
        report.naive_events_per_s,
        report.raw_events_per_s,
    ] {
        assert!(rate.is_finite() && rate > 0.0);
    }
    assert!(report.p50_ms <= report.p99_ms);
    assert!(report.to_string().contains("events/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bench_append_runs_and_reports_the_promised_keys() {
    let server_url = std::env::var(DATABASE_URL_VAR)
        .unwrap_or_else(|_| panic!("{DATABASE_URL_VAR} is not set: run scripts/test or set it"));
    runs_and_reports(ScratchBackend::Postgres { server_url }, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bench_append_runs_and_reports_the_promised_keys() {
    let directory = tempfile::tempdir().unwrap();
    let backend = ScratchBackend::Sqlite {
        directory: directory.path().to_owned(),
    };
    runs_and_reports(backend, "sqlite").await;
}
