//! `kiban-engine`: how a command becomes recorded events.
//!
//! Every command, whatever its source (a municipality's message over NATS,
//! an office's request over HTTPS, a timer), goes through [`Engine::execute`]:
//! load the aggregate's stream (or take its state from a bounded cache),
//! `decide` with the pure decider of `kiban-events`, check that the actor may
//! cause each event, and `append` with `ExpectedVersion::Exact(version)`. A
//! conflict means another command got there first: reload and decide again,
//! a bounded number of times.
//!
//! Layout:
//! - `engine.rs`: [`Engine`], [`CommandContext`], [`Executed`], [`EngineError`].
//! - `cache.rs`: the bounded cache of recent aggregate states.
//! - `ingest.rs`: [`ingest::MunicipalMessage`], a municipality's status
//!   message, and its translation into decider commands.
//! - `personal.rs`: sealing the plaintext personal fields of a message
//!   with the person's key before it is decided (crypto-shredding).
//! - `timers.rs`: [`Timers`], the due list that follows the store and the
//!   ticker that records deadlines, renewal windows, consent expiries and
//!   overdue subsidies under deterministic ids (DESIGN.md decision 9).
//!
//! Architecture invariants:
//! - The engine knows neither NATS nor HTTP: transports hand it values.
//! - Nothing is appended that a decider did not return, and only with the
//!   version the decision was made on (`Exact`), so every recorded event was
//!   checked against the state it follows.
//! - Event ids are deterministic per command (the command id, then ids
//!   derived from it), so a retried command can never record twice.

mod cache;
mod engine;
pub mod ingest;
pub mod personal;
pub mod timers;

pub use cache::STATE_CACHE_CAPACITY_DEFAULT;
pub use engine::{
    CONFLICT_RETRIES_MAX, CommandContext, Engine, EngineError, Executed, derived_event_id,
};
pub use timers::{
    DueList, TICK_INTERVAL_MS, TIMER_NAMESPACE, TickReport, TimerError, Timers, timer_command_id,
};
