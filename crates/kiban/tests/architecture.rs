//! Architecture invariants that a compiler cannot see, checked from the
//! workspace manifests (`cargo metadata`): the arrows between kiban's crates
//! point one way (ARCHITECTURE.md), and the domain crate stays free of IO.

use std::collections::BTreeMap;
use std::process::Command;

/// For each kiban crate, the kiban crates it may depend on (normal and build
/// dependencies; dev-dependencies are free). `events ← store ← engine ←
/// projections / bus / api ← system ← lab ← binary`; the card crate stands
/// alone.
const ALLOWED: &[(&str, &[&str])] = &[
    ("kiban-events", &[]),
    ("kiban-store", &["kiban-events"]),
    ("kiban-engine", &["kiban-events", "kiban-store"]),
    ("kiban-projections", &["kiban-events", "kiban-store"]),
    (
        "kiban-bus",
        &["kiban-events", "kiban-store", "kiban-engine"],
    ),
    (
        "kiban-api",
        &[
            "kiban-events",
            "kiban-store",
            "kiban-engine",
            "kiban-projections",
            "kiban-card",
        ],
    ),
    ("kiban-card", &[]),
    (
        "kiban-system",
        &[
            "kiban-events",
            "kiban-store",
            "kiban-engine",
            "kiban-projections",
            "kiban-bus",
            "kiban-api",
        ],
    ),
    (
        "kiban-lab",
        &[
            "kiban-events",
            "kiban-store",
            "kiban-engine",
            "kiban-projections",
            "kiban-bus",
            "kiban-api",
            "kiban-system",
        ],
    ),
];

/// Crates the pure domain crate must never depend on: it does no IO.
const FORBIDDEN_IN_EVENTS: &[&str] = &["tokio", "sqlx", "async-nats", "axum", "reqwest", "pcsc"];

/// The workspace's `cargo metadata` (no dependencies' own packages).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn workspace_dependencies() -> BTreeMap<String, Vec<(String, Option<String>)>> {
    metadata()["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let dependencies = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let kind = d["kind"].as_str().map(str::to_owned);
                    (d["name"].as_str().unwrap().to_owned(), kind)
                })
                .collect();
            (package["name"].as_str().unwrap().to_owned(), dependencies)
        })
        .collect()
}

#[test]
fn arrows_between_crates_point_one_way() {
    let packages = workspace_dependencies();
    let allowed: BTreeMap<_, _> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (package, dependencies) in &packages {
        let Some(allowed) = allowed.get(package.as_str()) else {
            continue; // the binary and the test crate may use everything
        };
        for (dependency, kind) in dependencies {
            let is_dev = kind.as_deref() == Some("dev");
            if dependency.starts_with("kiban") && !is_dev && !allowed.contains(&dependency.as_str())
            {
                violations.push(format!("{package} depends on {dependency}"));
            }
        }
    }
    assert!(violations.is_empty(), "arrows turned round: {violations:?}");
    assert!(
        packages.contains_key("kiban-events"),
        "the check saw the workspace"
    );
}

#[test]
fn the_domain_crate_does_no_io() {
    let packages = workspace_dependencies();
    let events = &packages["kiban-events"];
    let offending: Vec<_> = events
        .iter()
        .filter(|(name, kind)| {
            kind.as_deref() != Some("dev") && FORBIDDEN_IN_EVENTS.contains(&name.as_str())
        })
        .collect();
    assert!(
        offending.is_empty(),
        "kiban-events depends on {offending:?}"
    );
}

/// Normal (not dev) dependencies of `package`, with their enabled features.
fn normal_dependencies(package: &str) -> Vec<(String, Vec<String>)> {
    let metadata = metadata();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .expect("the package is in the workspace");
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| {
            let features = d["features"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (d["name"].as_str().unwrap().to_owned(), features)
        })
        .collect()
}

#[test]
fn only_the_bus_crate_speaks_nats() {
    let packages = workspace_dependencies();
    let offending: Vec<&String> = packages
        .iter()
        .filter(|(name, _)| name.as_str() != "kiban-bus")
        .filter(|(_, dependencies)| {
            dependencies.iter().any(|(dependency, kind)| {
                dependency == "async-nats" && kind.as_deref() != Some("dev")
            })
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        offending.is_empty(),
        "async-nats outside kiban-bus: {offending:?}"
    );
}

#[test]
fn the_binary_does_not_depend_on_test_harnesses() {
    for (dependency, features) in normal_dependencies("kiban") {
        assert_ne!(dependency, "tempfile", "kiban depends on tempfile");
        assert!(
            !(dependency == "kiban-bus" && features.iter().any(|f| f == "testing")),
            "kiban depends on kiban-bus's testing harness"
        );
    }
}
