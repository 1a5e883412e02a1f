//! `kiban bench replay` (a program, not a test): how fast the store gives
//! back what it holds, and what that costs in memory.
//!
//! On a scratch database of each backend:
//!
//! 1. **write** — `events` synthetic workflow events: persons each with one
//!    certification (要介護認定) from filing to decision on
//!    `certification/<insurer>-<insured>-1` (8 events) and, on their own
//!    `insured/<insurer>-<insured>` stream, the recorded certification, the
//!    care-plan office (居宅介護支援事業所), a consent and two reads of the
//!    record by the office (5 events: reads are events, 閲覧記録); appended
//!    through [`Store::append`] by [`WRITERS`] concurrent tasks, so the
//!    chain is the real one and the streams interleave as in production;
//! 2. **read** — every row streamed out of the database as stored (the scan
//!    under verify and `read_range`, no parsing, no hashing);
//! 3. **read parsed** — [`Store::read_range`]: the same rows parsed into
//!    `RecordedEvent`s;
//! 4. **verify** — [`Store::verify`] over the whole chain;
//! 5. **follow** — the same projections caught up from checkpoint 0 by
//!    their live runner (`Projections::start`, as `kiban serve` after a
//!    restart far behind), until every projection has applied the head;
//! 6. **rebuild** — every projection of `kiban serve` (`models::all()`:
//!    care, organisations, access log) rebuilt from position 1 into fresh
//!    generations and swapped in, through [`Projections::rebuild_all`] (one
//!    pass over the store, each batch applied to each projection in turn);
//!    the rate is store events ÷ the time to rebuild all of them.
//!
//! Each phase reports events/s and the process's resident memory before and
//! after it and at its peak (the peak is reset before each phase through
//! `/proc/self/clear_refs` when the kernel allows it, so each phase has its
//! own).

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use kiban_events::StreamName;
use kiban_events::envelope::{Actor, EventId, EventType, ExpectedVersion, NewEvent, Payload};
use kiban_projections::{Db, Projections, models};
use kiban_store::scratch::{Scratch, ScratchBackend};
use kiban_store::{Store, StoreOptions, VerifyReport};
use serde::Serialize;
use uuid::Uuid;

use crate::report::{Backend, bench_backend};

/// Concurrent appending tasks while writing the scratch log.
const WRITERS: usize = 64;

/// Events per person: 8 on the certification, 5 on the person.
pub const EVENTS_PER_PERSON: u64 = 13;

/// Insurers (保険者) the persons are spread over.
const INSURERS: u64 = 40;

/// Care offices (事業所) the persons are spread over.
const OFFICES: u64 = 2_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct ReplayBenchOptions {
    pub backend: ScratchBackend,
    /// Events to write and replay (rounded up to whole persons).
    pub events: u64,
}

/// Resident memory around one phase, in MiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// The highest RSS during the phase (VmHWM); since process start when
    /// the kernel refused to reset it.
    pub peak_mib: f64,
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub events_per_s: f64,
    pub seconds: f64,
    #[serde(flatten)]
    pub memory: Memory,
}

/// The figures of one backend; serialises to the keys `kiban bench replay
/// --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayBenchReport {
    pub bench: &'static str,
    pub backend: &'static str,
    pub events: u64,
    pub persons: u64,
    /// Mean payload size, bytes.
    pub payload_bytes_mean: f64,
    /// Mean size of a row's stored text and byte fields (stream, type,
    /// actor, payload, both hashes), bytes.
    pub row_bytes_mean: f64,
    pub write: Phase,
    pub read: Phase,
    pub read_parsed: Phase,
    pub verify: Phase,
    /// The live runner catching up from checkpoint 0.
    pub follow: Phase,
    pub rebuild: Phase,
    /// The process's peak RSS over the whole run (VmHWM at the end, or the
    /// highest phase peak when peaks were reset), MiB.
    pub peak_rss_mib: f64,
}

impl fmt::Display for ReplayBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay benchmark on {} ({} events, {} persons; payload {:.0} B, row {:.0} B on average)",
            self.backend, self.events, self.persons, self.payload_bytes_mean, self.row_bytes_mean
        )?;
        let phases = [
            ("write (append)", &self.write),
            ("read (raw rows)", &self.read),
            ("read (parsed)", &self.read_parsed),
            ("verify (chain)", &self.verify),
            ("follow (live, from 0)", &self.follow),
            ("rebuild (all projections)", &self.rebuild),
        ];
        for (name, phase) in phases {
            writeln!(
                f,
                "  {name:<26} {:>11.0} events/s  {:>7.2} s   RSS {:>6.1} → {:>6.1} MiB, peak {:>6.1} MiB",
                phase.events_per_s,
                phase.seconds,
                phase.memory.rss_before_mib,
                phase.memory.rss_after_mib,
                phase.memory.peak_mib
            )?;
        }
        write!(f, "  peak RSS of the run: {:.1} MiB", self.peak_rss_mib)
    }
}

/// What `kiban bench replay` was asked.
#[derive(Debug, Clone)]
pub struct ReplayRun {
    /// The backends to measure, one after the other.
    pub backends: Vec<Backend>,
    /// postgres: a server URL on which the benchmark may create (and drops
    /// afterwards) a database.
    pub database_url: Option<String>,
    /// sqlite: the directory for the benchmark's fresh database file.
    pub directory: PathBuf,
    /// Events to write and replay.
    pub events: u64,
    /// Print one JSON object per backend as the last lines.
    pub json: bool,
}

/// `kiban bench replay`: runs on each backend, prints each report, then
/// (with `--json`) one JSON line per backend.
pub async fn run(args: ReplayRun) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for &backend in &args.backends {
        let backend = bench_backend(backend, args.database_url.clone(), args.directory.clone())?;
        let report = bench_replay(ReplayBenchOptions {
            backend,
            events: args.events,
        })
        .await?;
        println!("{report}");
        reports.push(report);
    }
    if args.json {
        for report in &reports {
            println!("{}", serde_json::to_string(report)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the benchmark on one backend; see the module documentation.
pub async fn bench_replay(options: ReplayBenchOptions) -> anyhow::Result<ReplayBenchReport> {
    if options.events == 0 {
        bail!("--events must be at least 1");
    }
    let scratch = Scratch::create(&options.backend, "kiban_bench").await?;
    let outcome = run_phases(&scratch, &options).await;
    scratch.remove().await;
    outcome
}

async fn run_phases(
    scratch: &Scratch,
    options: &ReplayBenchOptions,
) -> anyhow::Result<ReplayBenchReport> {
    let persons = options.events.div_ceil(EVENTS_PER_PERSON);
    let events = persons * EVENTS_PER_PERSON;
    let store = Store::open(scratch.url(), StoreOptions::default()).await?;
    // The read models' first generations exist before the log is written
    // (as for a deployment that has been running), and their runners are
    // stopped so that the rebuild below is the only thing applying events.
    let db = Db::open(scratch.url()).await?;
    Projections::start(db.clone(), store.clone(), models::all())
        .await?
        .stop()
        .await;
    let outcome = async {
        eprintln!("phase 1/6: write {events} events ({persons} persons)");
        let write = measure(events, write_log(&store, persons)).await?;
        let head = store.head().await?.position;
        if head != events {
            bail!("expected {events} events written, the head is at {head}");
        }

        eprintln!("phase 2/6: read (raw rows)");
        let mut raw = None;
        let read = measure(events, async {
            raw = Some(store.read_raw(1, head).await?);
            Ok(())
        })
        .await?;
        let raw = raw.expect("measured");
        if raw.events != events {
            bail!("read {} rows of {events}", raw.events);
        }

        eprintln!("phase 3/6: read (parsed)");
        let read_parsed = measure(events, async {
            let mut batches = store.read_range(1, head);
            let mut count = 0u64;
            while let Some(batch) = batches.next().await {
                count += batch?.len() as u64;
            }
            if count != events {
                bail!("read_range gave {count} events of {events}");
            }
            Ok(())
        })
        .await?;

        eprintln!("phase 4/6: verify");
        let verify = measure(events, async {
            match store.verify(1, None).await? {
                VerifyReport::Verified {
                    events: checked, ..
                } if checked == events => Ok(()),
                other => bail!("the scratch chain does not verify: {other:?}"),
            }
        })
        .await?;

        eprintln!("phase 5/6: follow (the live runner from checkpoint 0)");
        let mut running = None;
        let follow = measure(events, async {
            let projections = Projections::start(db.clone(), store.clone(), models::all()).await?;
            projections.wait_for(head).await?;
            running = Some(projections);
            Ok(())
        })
        .await?;
        let projections = running.expect("measured");
        projections.stop().await;

        eprintln!("phase 6/6: rebuild every projection");
        let rebuild = measure(events, async {
            let reached = projections.rebuild_all().await?;
            if reached != head {
                bail!("the projections rebuilt to {reached}, not {head}");
            }
            Ok(())
        })
        .await?;
        let peak_rss_mib = [&write, &read, &read_parsed, &verify, &follow, &rebuild]
            .iter()
            .map(|phase| phase.memory.peak_mib)
            .fold(status_mib("VmHWM").unwrap_or(0.0), f64::max);
        Ok(ReplayBenchReport {
            bench: "replay",
            backend: scratch.backend_name(),
            events,
            persons,
            payload_bytes_mean: raw.payload_bytes as f64 / events as f64,
            row_bytes_mean: raw.bytes as f64 / events as f64,
            write,
            read,
            read_parsed,
            verify,
            follow,
            rebuild,
            peak_rss_mib,
        })
    }
    .await;
    db.close().await;
    store.close().await;
    outcome
}

/// Runs `phase` over `events` events and measures its rate and memory.
async fn measure(
    events: u64,
    phase: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Phase> {
    reset_peak_rss();
    let rss_before_mib = status_mib("VmRSS").unwrap_or(0.0);
    let started = Instant::now();
    phase.await?;
    let seconds = started.elapsed().as_secs_f64();
    let rss_after_mib = status_mib("VmRSS").unwrap_or(0.0);
    Ok(Phase {
        events_per_s: events as f64 / seconds,
        seconds,
        memory: Memory {
            rss_before_mib,
            rss_after_mib,
            peak_mib: status_mib("VmHWM").unwrap_or(0.0),
        },
    })
}

/// A `kB` line of `/proc/self/status` in MiB (`None` off Linux).
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux: `5` to `/proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Appends the events of `persons` persons from [`WRITERS`] tasks.
async fn write_log(store: &Store, persons: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let person = next.fetch_add(1, Ordering::Relaxed);
                if person >= persons {
                    return Ok::<_, anyhow::Error>(());
                }
                for (stream, events) in person_events(person) {
                    store
                        .append(&stream, ExpectedVersion::NoStream, events)
                        .await
                        .with_context(|| format!("appending to {stream}"))?;
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a writer task failed")??;
    }
    Ok(())
}

/// The two appends of person `n`: their certification, then their own
/// stream, with payloads as the domain serialises them.
pub fn person_events(n: u64) -> [(StreamName, Vec<NewEvent>); 2] {
    let insurer = format!("13{:04}", 1000 + n % INSURERS);
    let insured = format!("{:010}", 1_000_000 + n);
    let office = format!("13{:08}", 10_000_000 + n % OFFICES);
    let institution = format!("13{:08}", 20_000_000 + n % OFFICES);
    let start = NaiveDate::from_ymd_opt(2026, 4, 1).expect("a valid date")
        + Duration::days((n % 300) as i64);
    let day = |offset: i64| (start + Duration::days(offset)).to_string();
    let at = |offset: i64| -> DateTime<Utc> {
        Utc.from_utc_datetime(
            &(start + Duration::days(offset))
                .and_hms_opt(1, 30, 0)
                .expect("a valid time"),
        )
    };
    let digest = |kind: u8| format!("{:064x}", u128::from(kind) << 64 | u128::from(n));
    let document = |kind: u8, size: u64| {
        format!(
            r#"{{"sha256":"{}","media_type":"application/pdf","size_bytes":{size}}}"#,
            digest(kind)
        )
    };
    let level = ["care_1", "care_2", "care_3", "support_2"][(n % 4) as usize];
    let (valid_from, valid_until) = (day(31), day(31 + 364));
    let certification = [
        (
            "certification.filed",
            0,
            format!(
                r#"{{"insurer":"{insurer}","insured":"{insured}","seq":1,"kind":"new","applicant":{{"by":"office","office":"{office}"}},"applied_on":"{}","current_certification":null}}"#,
                day(0)
            ),
        ),
        (
            "certification.investigation_scheduled",
            2,
            format!(r#"{{"scheduled_on":"{}"}}"#, day(9)),
        ),
        (
            "certification.opinion_requested",
            3,
            format!(
                r#"{{"institution":"{institution}","requested_on":"{}"}}"#,
                day(3)
            ),
        ),
        (
            "certification.investigation_completed",
            9,
            format!(
                r#"{{"completed_on":"{}","investigation_sheet":{}}}"#,
                day(9),
                document(1, 48_213 + n % 5_000)
            ),
        ),
        (
            "certification.opinion_received",
            14,
            format!(
                r#"{{"institution":"{institution}","opinion":{},"received_on":"{}"}}"#,
                document(2, 31_877 + n % 7_000),
                day(14)
            ),
        ),
        (
            "certification.primary_judgment_recorded",
            17,
            format!(r#"{{"level":"{level}","judged_on":"{}"}}"#, day(17)),
        ),
        (
            "certification.secondary_judgment_recorded",
            24,
            format!(r#"{{"level":"{level}","judged_on":"{}"}}"#, day(24)),
        ),
        (
            "certification.decided",
            25,
            format!(
                r#"{{"level":"{level}","decided_on":"{}","validity":{{"from":"{valid_from}","until":"{valid_until}"}},"validity_months":12}}"#,
                day(25)
            ),
        ),
    ];
    let office_kind = if level.starts_with("support") {
        ("community_general_support_center", "support")
    } else {
        ("home_care_support_office", "care")
    };
    let person = [
        (
            "insured.certification_recorded",
            25,
            format!(
                r#"{{"application_seq":1,"level":"{level}","validity":{{"from":"{valid_from}","until":"{valid_until}"}}}}"#
            ),
        ),
        (
            "insured.care_plan_office_registered",
            28,
            format!(
                r#"{{"office":"{office}","office_kind":"{}","level_group":"{}","filed_on":"{}","billable_from":"{}"}}"#,
                office_kind.0,
                office_kind.1,
                day(28),
                day(31)
            ),
        ),
        (
            "insured.consent_given",
            29,
            format!(
                r#"{{"office":"{office}","terminal":"terminal-{:02}","given_at":"{}","expires_at":"{}"}}"#,
                n % 8,
                at(29).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                at(29 + 365).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        (
            "insured.record_viewed",
            33,
            format!(
                r#"{{"office":"{office}","terminal":"terminal-{:02}","basis":"consent","viewed_at":"{}"}}"#,
                n % 8,
                at(33).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        (
            "insured.record_viewed",
            61,
            format!(
                r#"{{"office":"{office}","terminal":"terminal-{:02}","basis":"care_plan_office","viewed_at":"{}"}}"#,
                (n + 3) % 8,
                at(61).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    ];
    let insurer_actor = format!("insurer:{insurer}");
    let correlation = Uuid::now_v7();
    let events = |list: &[(&str, i64, String)], actor: &str| -> Vec<NewEvent> {
        list.iter()
            .map(|(event_type, offset, payload)| NewEvent {
                event_id: EventId::from_uuid(Uuid::now_v7()).expect("v7 ids are not nil"),
                event_type: EventType::parse(event_type).expect("a catalog type"),
                schema_version: 1,
                occurred_at: at(*offset),
                actor: Actor::parse(actor).expect("a valid actor"),
                correlation_id: correlation,
                causation_id: None,
                payload: Payload::from_json(payload).expect("a JSON object"),
            })
            .collect()
    };
    let id = format!("{insurer}-{insured}");
    [
        (
            StreamName::new("certification", &format!("{id}-1")).expect("valid"),
            events(&certification, &insurer_actor),
        ),
        (
            StreamName::new("insured", &id).expect("valid"),
            events(&person, &insurer_actor),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use kiban_events::domain::DomainEvent;
    use kiban_events::domain::certification::CertificationEvent;
    use kiban_events::domain::insured::InsuredEvent;

    use super::*;

    fn decodes<E: DomainEvent>(events: &[NewEvent]) {
        for event in events {
            E::from_recorded(
                event.event_type.as_str(),
                event.schema_version,
                &event.payload,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", event.payload.as_str()));
        }
    }

    #[test]
    fn every_synthetic_event_decodes_as_its_domain_event() {
        for n in [0, 1, 2, 3, 12_345] {
            let [(certification, filed), (person, recorded)] = person_events(n);
            assert_eq!(certification.kind(), "certification");
            assert_eq!(person.kind(), "insured");
            assert_eq!(filed.len() + recorded.len(), EVENTS_PER_PERSON as usize);
            decodes::<CertificationEvent>(&filed);
            decodes::<InsuredEvent>(&recorded);
        }
    }
}
