//! kiban's end-to-end suites, compiled into one test binary (one link, one
//! process per test under nextest). Each suite is a module.

mod accessibility;
mod api;
mod audit;
mod backfill;
mod bench_smoke;
mod crash_safety;
mod dev_onboarding;
mod engine;
mod faults;
mod ingest;
mod person_view;
mod projections;
mod read_your_writes;
mod routing;
mod schema;
mod security;
mod served;
mod shred;
mod store_contract;
mod timers;
mod ui;
mod writer_failover;
