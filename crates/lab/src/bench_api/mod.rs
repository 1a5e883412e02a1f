//! `kiban bench api` (a program, not a test): the query API over HTTPS with
//! client certificates, driven by a built-in load generator, against the
//! ceiling of the same TLS stack.
//!
//! One run, on one machine, loopback only, in this order:
//!
//! 1. **load** — a fresh store (PostgreSQL scratch database or SQLite file)
//!    gets the data set of [`dataset`] (insurers, offices with a terminal
//!    each, persons with certifications, certificates, care-plan offices and
//!    consents), appended through the store; then the projections start
//!    and catch up, as after any restart. Both times are reported.
//! 2. **ceiling** — `connections` keep-alive HTTPS connections, each with
//!    its own client certificate, closed loop (each sends its next request
//!    when the answer has arrived) for `duration` seconds, against a trivial
//!    axum handler served by [`kiban_api::serve_router`]: the same listener,
//!    rustls configuration, client-certificate verification and hyper
//!    connection handling as the API. Requests per second, p50/p99/p99.9.
//! 3. **API, closed loop** — the same generator against the real API
//!    ([`kiban_api::serve`]): three of four connections are office terminals
//!    (caseload pages, and the eligibility certificates and certification
//!    status of persons in their caseload — each such read appends an
//!    access-log event before it answers), one of four an insurer (the same
//!    person reads of its own people).
//! 4. **API, open loop** — requests issued on a fixed schedule at
//!    `open_loop_percent` of the rate measured in 3, latency measured from
//!    each request's scheduled time (so a slow answer delays the latencies
//!    of the requests queued behind it, not the schedule).
//!
//! Every answer must be 200; the run fails on any error. The store's head
//! must have grown by exactly one access-log event per successful office
//! read of a person.

pub(crate) mod dataset;
pub(crate) mod generator;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use kiban_api::ServeConfig;
use kiban_store::scratch::{Scratch, ScratchBackend};
use kiban_store::{Store, StoreOptions};
use kiban_system::{ApiOptions, SystemBuilder, Tls};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::latency::Latencies;
use dataset::Population;
use generator::{Generator, Kind, Sample};

/// What to run.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    pub backend: ScratchBackend,
    pub persons: u64,
    pub offices: u64,
    /// Keep-alive connections of the load generator.
    pub connections: usize,
    /// Seconds measured in each phase (after [`WARMUP_SECONDS`]).
    pub duration_s: u64,
    /// The open-loop phase's rate as a share of the closed-loop API rate.
    pub open_loop_percent: u64,
}

/// Seconds each closed-loop phase runs before it measures: handshakes and
/// first requests are not the steady state.
pub const WARMUP_SECONDS: u64 = 1;

/// Figures of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct KindFigures {
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The figures; serialises to the keys `kiban bench api --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub persons: u64,
    pub offices: u64,
    pub insurers: u64,
    pub events_loaded: u64,
    pub append_seconds: f64,
    pub projection_catch_up_seconds: f64,
    pub connections: usize,
    pub duration_s: u64,
    pub ceiling_rps: f64,
    pub ceiling_p50_ms: f64,
    pub ceiling_p99_ms: f64,
    pub ceiling_p999_ms: f64,
    pub api_rps: f64,
    pub api_p50_ms: f64,
    pub api_p99_ms: f64,
    pub api_p999_ms: f64,
    /// API requests/s ÷ ceiling requests/s (target ≥ 0.5).
    pub share_of_ceiling: f64,
    pub open_loop_target_rps: f64,
    pub open_loop_rps: f64,
    pub open_loop_p50_ms: f64,
    pub open_loop_p99_ms: f64,
    pub open_loop_p999_ms: f64,
    /// Non-200 answers and failed requests over all phases (must be 0).
    pub errors: u64,
    /// `insured.record_viewed` events appended by the API phases.
    pub access_log_events: u64,
    /// The closed-loop API phase by kind of request.
    pub api_by_kind: BTreeMap<&'static str, KindFigures>,
}

impl fmt::Display for ApiBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "API benchmark on {} ({} persons, {} offices, {} insurers; {} connections, {} s per phase)",
            self.backend,
            self.persons,
            self.offices,
            self.insurers,
            self.connections,
            self.duration_s
        )?;
        writeln!(
            f,
            "  load: {} events appended in {:.1} s, projections caught up in {:.1} s",
            self.events_loaded, self.append_seconds, self.projection_catch_up_seconds
        )?;
        writeln!(
            f,
            "  ceiling (trivial handler, same TLS): {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
            self.ceiling_rps, self.ceiling_p50_ms, self.ceiling_p99_ms, self.ceiling_p999_ms
        )?;
        writeln!(
            f,
            "  API, closed loop:                    {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({:.0}% of the ceiling)",
            self.api_rps,
            self.api_p50_ms,
            self.api_p99_ms,
            self.api_p999_ms,
            100.0 * self.share_of_ceiling
        )?;
        for (kind, figures) in &self.api_by_kind {
            writeln!(
                f,
                "    {kind:<26} {:>7} requests  p50 {:.2} ms  p99 {:.2} ms",
                figures.requests, figures.p50_ms, figures.p99_ms
            )?;
        }
        writeln!(
            f,
            "  API, open loop at {:.0} req/s:  {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
            self.open_loop_target_rps,
            self.open_loop_rps,
            self.open_loop_p50_ms,
            self.open_loop_p99_ms,
            self.open_loop_p999_ms
        )?;
        write!(
            f,
            "  errors: {}   access-log events appended: {}",
            self.errors, self.access_log_events
        )
    }
}

/// Runs the benchmark; see the module documentation.
pub async fn bench_api(options: ApiBenchOptions) -> anyhow::Result<ApiBenchReport> {
    if options.persons == 0 || options.offices == 0 || options.duration_s == 0 {
        bail!("--persons, --offices and --duration must be at least 1");
    }
    if options.connections == 0 || options.connections > kiban_api::REQUESTS_IN_FLIGHT_MAX {
        bail!(
            "--connections must be 1 to {} (the API sheds load beyond that)",
            kiban_api::REQUESTS_IN_FLIGHT_MAX
        );
    }
    if !(1..=100).contains(&options.open_loop_percent) {
        bail!("--open-loop-percent must be 1 to 100");
    }
    let scratch = Scratch::create(&options.backend, "kiban_bench").await?;
    let outcome = run_phases(&scratch, &options).await;
    scratch.remove().await;
    outcome
}

async fn run_phases(
    scratch: &Scratch,
    options: &ApiBenchOptions,
) -> anyhow::Result<ApiBenchReport> {
    let population = Population::new(options.persons, options.offices);
    let certificates = tempfile::tempdir()?;
    let (pki, loaded) = load_data_set(
        scratch.url(),
        population,
        certificates.path(),
        &population.principals(),
    )
    .await?;
    eprintln!(
        "load: {} events appended in {:.1} s; projections catching up",
        loaded.events, loaded.append_seconds
    );
    let caught_up = Instant::now();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    // The API alone: queries need neither timers nor sealing keys.
    let system = SystemBuilder::new(scratch.url(), certificates.path())
        .api(Some(ApiOptions {
            listen: loopback,
            tls: Tls::Files(pki.tls.clone()),
            card_trust: None,
        }))
        .timers(None)
        .person_keys(false)
        .start()
        .await?;
    let store = system.store.clone();
    system
        .projections
        .wait_for(store.head().await?.position)
        .await?;
    let projection_seconds = caught_up.elapsed().as_secs_f64();
    eprintln!("load: projections caught up in {projection_seconds:.1} s");
    let api = system.api()?.addr;
    let cancel = CancellationToken::new();
    let config = ServeConfig {
        listen: loopback,
        tls: pki.tls.clone(),
    };
    let ceiling =
        kiban_api::serve_router(&config, generator::trivial_router(), cancel.clone()).await?;
    let outcome = async {
        let generator = Generator::new(&pki, population, options.connections)?;
        let duration = Duration::from_secs(options.duration_s);
        let warmup = Duration::from_secs(WARMUP_SECONDS);

        eprintln!("phase 1/3: ceiling, closed loop");
        let trivial = generator
            .closed_loop(ceiling.local_addr, warmup, duration)
            .await?;
        let head_before = store.head().await?.position;
        let reads_before = generator.office_person_reads();
        eprintln!("phase 2/3: API, closed loop");
        let closed = generator.closed_loop(api, warmup, duration).await?;
        let api_rps = closed.len() as f64 / duration.as_secs_f64();
        let target = api_rps * options.open_loop_percent as f64 / 100.0;
        eprintln!("phase 3/3: API, open loop at {target:.0} req/s");
        let open = generator.open_loop(api, target, duration).await?;
        let head_after = store.head().await?.position;

        let errors = generator.errors();
        if errors > 0 {
            bail!(
                "{errors} requests failed (first: {})",
                generator.first_error().unwrap_or_default()
            );
        }
        let office_reads = generator.office_person_reads() - reads_before;
        if head_after - head_before != office_reads {
            bail!(
                "{office_reads} office reads of a person were answered but {} events were appended",
                head_after - head_before
            );
        }
        let ceiling_rps = trivial.len() as f64 / duration.as_secs_f64();
        let open_elapsed = open.elapsed.as_secs_f64();
        Ok(ApiBenchReport {
            bench: "api",
            backend: scratch.backend_name(),
            persons: population.persons,
            offices: population.offices,
            insurers: population.insurers,
            events_loaded: loaded.events,
            append_seconds: loaded.append_seconds,
            projection_catch_up_seconds: projection_seconds,
            connections: options.connections,
            duration_s: options.duration_s,
            ceiling_rps,
            ceiling_p50_ms: quantile(&trivial, 0.50),
            ceiling_p99_ms: quantile(&trivial, 0.99),
            ceiling_p999_ms: quantile(&trivial, 0.999),
            api_rps,
            api_p50_ms: quantile(&closed, 0.50),
            api_p99_ms: quantile(&closed, 0.99),
            api_p999_ms: quantile(&closed, 0.999),
            share_of_ceiling: api_rps / ceiling_rps,
            open_loop_target_rps: target,
            open_loop_rps: open.samples.len() as f64 / open_elapsed,
            open_loop_p50_ms: quantile(&open.samples, 0.50),
            open_loop_p99_ms: quantile(&open.samples, 0.99),
            open_loop_p999_ms: quantile(&open.samples, 0.999),
            errors,
            access_log_events: head_after - head_before,
            api_by_kind: by_kind(&closed),
        })
    }
    .await;
    cancel.cancel();
    ceiling.wait().await;
    system.shutdown().await;
    outcome
}

/// Makes the certificates of `principals` (the offices' first) under
/// `certificates` and appends the data set to the fresh store at `url`,
/// each office's terminal registered with its certificate. The loader's
/// store handle is closed before this returns: it holds the writer lock,
/// which the system started next takes.
pub(crate) async fn load_data_set(
    url: &str,
    population: Population,
    certificates: &std::path::Path,
    principals: &[kiban_api::Principal],
) -> anyhow::Result<(kiban_api::DevPki, dataset::Loaded)> {
    let pki = kiban_api::dev_pki(certificates, principals)?;
    let fingerprints: Vec<String> = pki
        .clients
        .iter()
        .take(population.offices as usize)
        .map(|client| client.fingerprint.clone())
        .collect();
    let store = Store::open(url, StoreOptions::default()).await?;
    eprintln!(
        "load: {} persons, {} offices, {} insurers",
        population.persons, population.offices, population.insurers
    );
    let loaded = dataset::load(&store, population, &fingerprints, chrono::Utc::now()).await;
    store.close().await;
    Ok((pki, loaded?))
}

pub(crate) fn quantile(samples: &[Sample], p: f64) -> f64 {
    let mut latencies = Latencies::new();
    for sample in samples {
        latencies.record(sample.latency);
    }
    latencies.percentile_ms(p)
}

pub(crate) fn by_kind(samples: &[Sample]) -> BTreeMap<&'static str, KindFigures> {
    Kind::ALL
        .iter()
        .filter_map(|kind| {
            let of_kind: Vec<Sample> = samples
                .iter()
                .filter(|s| s.kind == *kind)
                .cloned()
                .collect();
            (!of_kind.is_empty()).then(|| {
                (
                    kind.name(),
                    KindFigures {
                        requests: of_kind.len() as u64,
                        p50_ms: quantile(&of_kind, 0.50),
                        p99_ms: quantile(&of_kind, 0.99),
                    },
                )
            })
        })
        .collect()
}

/// `kiban bench api`: runs and prints the report (and the JSON line).
pub async fn run(options: ApiBenchOptions, json: bool) -> anyhow::Result<std::process::ExitCode> {
    crate::report::print_report(&bench_api(options).await?, json)
}
