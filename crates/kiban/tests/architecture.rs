//! Architecture invariants that a compiler cannot see (ARCHITECTURE.md):
//!
//! - the arrows between kiban's crates point one way;
//! - each outside trade has its owners: which crates may depend on `sqlx`,
//!   `rusqlite`, `async-nats`, `axum`/`hyper`, `reqwest`, `pcsc`, directly or
//!   through any outside crate (the whole dependency tree);
//! - `kiban-events` has no IO in its whole dependency tree;
//! - production code does not depend on test harnesses;
//! - only `kiban-bus` names a NATS subject, only `kiban-api` an HTTP path;
//! - nothing but `kiban-system` wires the parts together;
//! - the binary is argument parsing and dispatch: small, without import cycles;
//! - ARCHITECTURE.md's codemap has a heading for every crate.
//!
//! The dependency checks read the resolved graph from `cargo metadata`; the
//! source checks read the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// For each kiban crate, the kiban crates it may depend on (normal and build
/// dependencies; dev-dependencies are free).
const ALLOWED: &[(&str, &[&str])] = &[
    ("kiban-events", &[]),
    ("kiban-card", &[]),
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
    (
        "kiban-system",
        &[
            "kiban-events",
            "kiban-store",
            "kiban-engine",
            "kiban-projections",
            "kiban-bus",
            "kiban-api",
            "kiban-card",
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
            "kiban-card",
            "kiban-system",
        ],
    ),
    (
        "kiban",
        &[
            "kiban-events",
            "kiban-store",
            "kiban-engine",
            "kiban-projections",
            "kiban-bus",
            "kiban-api",
            "kiban-card",
            "kiban-system",
            "kiban-lab",
        ],
    ),
    // The end-to-end suites may use everything.
];

/// Outside crates that belong to one trade, and the kiban crates that may
/// depend on them, directly or through outside crates (normal dependencies;
/// tests aside).
const TRADES: &[(&str, &[&str])] = &[
    // SQL: the store owns the events and every table's migrations; the
    // projections query their read models; the office screen's staff
    // accounts live in the API.
    ("sqlx", &["kiban-store", "kiban-projections", "kiban-api"]),
    ("rusqlite", &["kiban-store"]),
    ("async-nats", &["kiban-bus"]),
    // HTTP: the API serves it; `bench api` measures the same TLS stack
    // against a trivial axum handler.
    ("axum", &["kiban-api", "kiban-lab"]),
    ("axum-extra", &["kiban-api"]),
    ("hyper", &["kiban-api"]),
    ("hyper-util", &["kiban-api"]),
    ("tower", &["kiban-api"]),
    ("tower-http", &["kiban-api"]),
    // The HTTP client: the API's typed client (feature `client`), and the
    // lab's `bench api` load generator, which keeps one reqwest client of
    // its own so that the typed client's retries do not enter what it
    // measures (it takes its paths from `kiban_api::paths`).
    ("reqwest", &["kiban-api", "kiban-lab"]),
    ("pcsc", &["kiban-card"]),
    // Scratch directories are the lab's (the demo's data, the benchmarks'
    // certificates) and the bus's nats-server harness's (optional, feature
    // `testing`, which only tests turn on): no other library, not the binary.
    ("tempfile", &["kiban-lab", "kiban-bus"]),
];

/// Crates that do IO (or bring an async runtime): none may appear anywhere
/// in the pure domain crate's dependency tree.
const IO_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-nats",
    "sqlx",
    "sqlx-core",
    "rusqlite",
    "libsqlite3-sys",
    "axum",
    "hyper",
    "reqwest",
    "pcsc",
    "pcsc-sys",
    "rustls",
    "tempfile",
];

/// Largest the binary crate may grow, in lines of Rust: it parses arguments
/// and dispatches; anything bigger belongs in a library.
const BINARY_LINES_MAX: usize = 1_500;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the workspace root holds Cargo.lock")
        .to_path_buf()
}

/// The platform this test runs on, as rustc names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--offline"])
        // Only this machine's platform: the packages of other platforms
        // (Windows, Android) are neither built nor downloaded here.
        .args(["--filter-platform", &host_triple()])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The resolved graph: package id → (name, is a workspace member).
struct Graph {
    names: BTreeMap<String, String>,
    members: BTreeSet<String>,
    /// id → ids of its normal (non-dev, non-build) dependencies.
    normal: BTreeMap<String, Vec<String>>,
    /// id → ids of its normal and build dependencies.
    linked: BTreeMap<String, Vec<String>>,
    /// package name → its manifest's dependency entries.
    manifests: BTreeMap<String, Vec<Value>>,
}

impl Graph {
    fn load() -> Graph {
        let metadata = metadata();
        let mut names = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        for package in metadata["packages"].as_array().unwrap() {
            let id = package["id"].as_str().unwrap().to_owned();
            let name = package["name"].as_str().unwrap().to_owned();
            names.insert(id, name.clone());
            let entries = package["dependencies"].as_array().unwrap().clone();
            manifests.entry(name).or_insert(entries);
        }
        let members = metadata["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        let mut normal = BTreeMap::new();
        let mut linked = BTreeMap::new();
        for node in metadata["resolve"]["nodes"].as_array().unwrap() {
            let id = node["id"].as_str().unwrap().to_owned();
            let mut n = Vec::new();
            let mut l = Vec::new();
            for dep in node["deps"].as_array().unwrap() {
                let kinds: Vec<Option<&str>> = dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k["kind"].as_str())
                    .collect();
                let pkg = dep["pkg"].as_str().unwrap().to_owned();
                if kinds.contains(&None) {
                    n.push(pkg.clone());
                }
                if kinds.iter().any(|k| k != &Some("dev")) {
                    l.push(pkg);
                }
            }
            normal.insert(id.clone(), n);
            linked.insert(id, l);
        }
        Graph {
            names,
            members,
            normal,
            linked,
            manifests,
        }
    }

    /// Every workspace crate but the end-to-end suites (which may use
    /// everything), as (id, name).
    fn production_members(&self) -> impl Iterator<Item = (&String, &str)> {
        self.members
            .iter()
            .map(|id| (id, self.name(id)))
            .filter(|(_, name)| *name != "kiban-tests")
    }

    fn name(&self, id: &str) -> &str {
        &self.names[id]
    }

    fn member(&self, name: &str) -> &str {
        self.members
            .iter()
            .find(|id| self.name(id) == name)
            .unwrap_or_else(|| panic!("{name} is a workspace member"))
    }

    /// Every package reachable from `id` through normal dependencies.
    fn normal_tree(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![id.to_owned()];
        while let Some(next) = todo.pop() {
            for dep in &self.normal[&next] {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn arrows_between_crates_point_one_way() {
    let graph = Graph::load();
    let allowed: BTreeMap<_, _> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (member, name) in graph.production_members() {
        let allowed = allowed
            .get(name)
            .unwrap_or_else(|| panic!("{name} has a row in ALLOWED (and in ARCHITECTURE.md)"));
        for dep in &graph.linked[member] {
            let dep = graph.name(dep);
            if dep.starts_with("kiban") && !allowed.contains(&dep) {
                violations.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(violations.is_empty(), "arrows turned round: {violations:?}");
}

/// Whether the trade crate `dep` may be reached by kiban crate `name`.
fn owns(trades: &BTreeMap<&str, &[&str]>, name: &str, dep: &str) -> bool {
    trades.get(dep).is_none_or(|owners| owners.contains(&name))
}

#[test]
fn each_trade_has_its_owners() {
    let graph = Graph::load();
    let trades: BTreeMap<_, _> = TRADES.iter().copied().collect();
    let mut violations = Vec::new();
    let mut reached = 0;
    for (member, name) in graph.production_members() {
        // The whole tree of outside crates a member pulls in, through
        // outside crates only: another kiban crate's dependencies are
        // checked as that crate's, and a trade crate's own dependencies
        // belong to the trade (axum brings hyper). So a trade reached
        // through some outside crate counts as a dependency of the member.
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Vec<String>)> = graph.normal[member]
            .iter()
            .filter(|dep| !graph.members.contains(*dep))
            .map(|dep| (dep.clone(), vec![graph.name(dep).to_owned()]))
            .collect();
        while let Some((dep, path)) = todo.pop() {
            if !seen.insert(dep.clone()) {
                continue;
            }
            let dep_name = graph.name(&dep);
            if trades.contains_key(dep_name) {
                reached += 1;
                if !owns(&trades, name, dep_name) {
                    violations.push(format!("{name} → {}", path.join(" → ")));
                }
                continue;
            }
            for next in &graph.normal[&dep] {
                if !graph.members.contains(next) {
                    let mut path = path.clone();
                    path.push(graph.name(next).to_owned());
                    todo.push((next.clone(), path));
                }
            }
        }
    }
    assert!(violations.is_empty(), "a trade leaked: {violations:?}");
    // The walk reads a real graph: the owners do reach their trades.
    assert!(
        reached >= TRADES.len(),
        "only {reached} trade crates reached"
    );
}

#[test]
fn the_domain_crate_has_no_io_in_its_whole_dependency_tree() {
    let graph = Graph::load();
    let tree = graph.normal_tree(graph.member("kiban-events"));
    let offending: Vec<&str> = tree
        .iter()
        .map(|id| graph.name(id))
        .filter(|name| IO_CRATES.contains(name))
        .collect();
    assert!(offending.is_empty(), "kiban-events reaches {offending:?}");
    // The check reads a real tree: serde is in it.
    assert!(tree.iter().any(|id| graph.name(id) == "serde"));
}

#[test]
fn production_code_does_not_depend_on_test_harnesses() {
    let graph = Graph::load();
    let mut violations = Vec::new();
    for (package, entries) in &graph.manifests {
        if !package.starts_with("kiban") || package == "kiban-tests" {
            continue;
        }
        for entry in entries {
            if entry["kind"].as_str().is_some() {
                continue; // dev and build dependencies
            }
            let dep = entry["name"].as_str().unwrap();
            let features: Vec<&str> = entry["features"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if dep == "kiban-tests"
                || features.contains(&"testing")
                || features.contains(&"virtual-card")
            {
                violations.push(format!("{package} → {dep} {features:?}"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:?}");
}

/// The Rust files of the workspace that are production code: not under a
/// `tests/` folder, not the test crate, not a `testing`/`test_*` module.
fn production_sources() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let skip = name.starts_with('.')
                    || ["target", "tests", "examples", "benches", "node_modules"]
                        .contains(&name.as_str());
                if !skip {
                    todo.push(path);
                }
            } else if name.ends_with(".rs") && !name.starts_with("test") {
                let text = std::fs::read_to_string(&path).unwrap();
                let relative = path.strip_prefix(&root).unwrap().to_path_buf();
                files.push((relative, without_test_modules(&text)));
            }
        }
    }
    assert!(files.len() > 50, "the walk found the sources");
    files
}

/// The text before a file's `#[cfg(test)]` module (kiban puts unit tests
/// last in a file).
fn without_test_modules(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod ") {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// Lines of production code outside `owner` with a string literal that
/// starts with `literal` and is accepted by `names_it` (given the rest of the
/// literal, up to its closing quote).
fn literal_outside(literal: &str, owner: &str, names_it: fn(&str) -> bool) -> Vec<String> {
    production_sources()
        .into_iter()
        .filter(|(path, _)| !path.starts_with(owner))
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| {
                    let code = line.trim_start();
                    !code.starts_with("//")
                        && line.match_indices(literal).any(|(at, _)| {
                            let rest = &line[at + literal.len()..];
                            names_it(rest.split('"').next().unwrap_or(""))
                        })
                })
                .map(|(n, line)| format!("{}:{}: {}", path.display(), n + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn only_the_bus_names_nats_subjects() {
    // `"kiban.ingest.{insurer}…"` is a subject; `"kiban.db"` is a file name.
    let found = literal_outside("\"kiban.", "crates/bus", |rest| {
        rest.contains(['.', '>', '*', '{'])
    });
    assert!(
        found.is_empty(),
        "NATS subjects outside kiban-bus: {found:#?}"
    );
}

#[test]
fn only_the_api_names_http_paths() {
    let found = literal_outside("\"/v1/", "api", |_| true);
    assert!(found.is_empty(), "HTTP paths outside kiban-api: {found:#?}");
}

/// What starts a part of the system: only `kiban-system` may call these.
const WIRING: &[&str] = &[
    "Projections::start(",
    "Projections::follow(",
    "kiban_api::serve(",
    "serve_limited(",
    "run_append_service(",
    "run_ingest(",
    "run_relay(",
    "run_routing(",
    "Timers::new(",
];

/// Files outside `kiban-system` that may start one part on its own, and why.
const WIRING_EXCEPTIONS: &[(&str, &str)] = &[
    // `bench replay` measures the projections' rebuild alone, against a
    // scratch store, not the running system.
    ("crates/lab/src/bench_replay.rs", "Projections::start("),
    // The simulation ticks the timers itself at each simulated day, so that
    // a run is deterministic; the system's own timer loop is off.
    ("crates/lab/src/simulate/mod.rs", "Timers::new("),
];

#[test]
fn nothing_but_the_system_crate_wires_parts_together() {
    let mut found = Vec::new();
    for (path, text) in production_sources() {
        let owner = [
            "crates/system",
            "crates/bus",
            "crates/engine",
            "api",
            "projections",
        ];
        if owner.iter().any(|o| path.starts_with(o)) {
            continue;
        }
        for call in WIRING {
            let excepted = WIRING_EXCEPTIONS
                .iter()
                .any(|(file, c)| path == Path::new(file) && c == call);
            if text.contains(call) && !excepted {
                found.push(format!("{} calls {call}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "wiring outside kiban-system: {found:#?}");
}

/// Lines of `text` that build a `System` value (a struct literal, not its
/// declaration, an `impl` or a return type).
fn system_literals(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|line| {
            !line.starts_with("//")
                && line.match_indices("System {").any(|(at, _)| {
                    let before = line[..at].trim_end();
                    let word_starts = !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
                    word_starts
                        && !["struct", "impl", "for", "->", "&"]
                            .iter()
                            .any(|keyword| before.ends_with(keyword))
                })
        })
        .collect()
}

#[test]
fn the_system_is_put_together_in_exactly_one_place() {
    // Production code: one `System { … }` literal, in kiban-system
    // (`Parts::into_system`); every role and every caller gets its System
    // from `SystemBuilder::start`.
    let mut found = Vec::new();
    for (path, text) in production_sources() {
        for line in system_literals(&text) {
            found.push(format!("{}: {line}", path.display()));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "a System is built in exactly one place: {found:#?}"
    );
    assert!(
        found[0].starts_with("crates/system/"),
        "the one place is kiban-system: {found:#?}"
    );
    // The end-to-end suites serve the API through the builder too (their
    // harness `Served`, in both the one-process and the pair mode): none
    // starts the API server by hand.
    let tests = workspace_root().join("tests/tests");
    let mut by_hand = Vec::new();
    let mut todo = vec![tests];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in ["kiban_api::serve(", "serve_limited("] {
                    if text.contains(call) {
                        by_hand.push(format!("{} calls {call}", path.display()));
                    }
                }
                for line in system_literals(&text) {
                    by_hand.push(format!("{}: {line}", path.display()));
                }
            }
        }
    }
    assert!(
        by_hand.is_empty(),
        "the test suites start the API by hand: {by_hand:#?}"
    );
}

#[test]
fn the_binary_is_small_and_its_modules_import_no_circle() {
    let src = workspace_root().join("crates/kiban/src");
    let mut lines = 0;
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut todo = vec![src.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            lines += text.lines().count();
            let relative = path.strip_prefix(&src).unwrap();
            let module = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if module == "main" || module == "lib" {
                continue;
            }
            let used = text
                .match_indices("crate::")
                .map(|(at, _)| {
                    text[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .filter(|used| !used.is_empty() && *used != module)
                .collect::<Vec<_>>();
            imports.entry(module).or_default().extend(used);
        }
    }
    assert!(
        lines < BINARY_LINES_MAX,
        "crates/kiban/src has {lines} lines (at most {BINARY_LINES_MAX})"
    );
    // Depth-first search for a circle among the binary's modules.
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, imports, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        let mut path = Vec::new();
        if let Some(circle) = visit(module, &imports, &mut path, &mut done) {
            panic!("the binary's modules import in a circle: {circle:?}");
        }
    }
    assert!(imports.len() > 3, "the check saw the binary's modules");
}

#[test]
fn the_codemap_lists_every_crate() {
    let graph = Graph::load();
    let map = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<&str> = graph
        .members
        .iter()
        .map(|id| graph.name(id))
        .filter(|name| !map.contains(&format!("— `{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md has no heading for {missing:?}"
    );
}
