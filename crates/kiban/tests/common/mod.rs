//! Shared by the benchmark smoke tests: run the `kiban` binary and take the
//! JSON line it prints last.

use std::process::Command;

/// Runs `kiban` with `args` (without `KIBAN_BENCH_DATABASE_URL`, so that a
/// benchmark uses its SQLite scratch directory), asserts that it succeeded,
/// and returns the last line of its output as JSON, and the whole output.
pub fn run_for_json(args: &[&str]) -> (serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kiban"))
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
    let report = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    (report, stdout)
}
