//! `kiban-lab`: the programs that exercise kiban rather than run it — the
//! demo (`kiban demo`), the country-scale simulation (`kiban simulate`) and
//! the benchmarks (`kiban bench append|ingest|api|cluster|replay`). Each starts the real system through
//! [`kiban_system::SystemBuilder`]; none wires parts by hand.
//!
//! # Layout
//!
//! - [`cli`]: the arguments of `kiban demo`, `kiban simulate` and `kiban
//!   bench …` (clap) and how each runs; the binary dispatches here.
//! - [`demo`]: a small town through a compressed month, scene by scene
//!   (docs/demo.md).
//! - [`simulate`]: `plan.rs` derives one person's year from `(seed,
//!   person)`, `mod.rs` runs chunks through the real ingest path
//!   (docs/simulate.md).
//! - [`bench_append`] (against the store's [`kiban_store::baseline`]s),
//!   [`bench_ingest`], [`bench_api`] (`dataset.rs` decides the data set with
//!   the real deciders, `generator.rs` is the HTTPS load generator),
//!   [`bench_cluster`] (real `kiban serve` processes behind HAProxy),
//!   [`bench_replay`]: docs/benchmarks.md.
//! - [`nats_server`]: a private nats-server on a free loopback port for
//!   `bench ingest` without `--nats-url`.
//! - [`latency`]: latencies in an HDR histogram (bounded memory);
//!   [`report`]: where a benchmark runs and how it prints.
//!
//! # Architecture invariants
//!
//! - Production code of kiban does not depend on this crate except the
//!   `kiban` binary, which dispatches to it.
//! - The lab knows neither NATS nor SQL for events itself: it goes through
//!   `kiban-bus`'s clients and the store.
//! - The lab acts as an application: errors are `anyhow`, progress goes to
//!   stderr, reports to stdout.

pub mod bench_api;
pub mod bench_append;
pub mod bench_cluster;
pub mod bench_ingest;
pub mod bench_replay;
pub mod cli;
pub mod demo;
pub mod latency;
pub mod nats_server;
pub mod report;
pub mod simulate;
