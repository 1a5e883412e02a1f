//! `kiban` (library side of the command line): the whole system as one
//! value, so that `kiban serve`, `kiban demo` and the suites start it the
//! same way.
//!
//! - [`system`]: [`system::System::start`] — store, engine, projections,
//!   the HTTPS API, ingest (in-process bus or NATS JetStream with the
//!   outbox relay), office routing and timers; development certificates.
//! - [`entitlements`]: which offices may see an event, from the read models
//!   (the office routing's [`kiban_bus::routing::Entitlements`]).
//! - [`clients`]: a municipality's sender (publish, wait for the receipt)
//!   and an office's live feed, over either bus: `kiban emit`,
//!   `kiban subscribe` and the demo.
//! - [`demo`]: `kiban demo`, a small town through a compressed month.
//!
//! The binary's own modules (`cli.rs`, `commands.rs`, ...) parse arguments
//! and call into these.

pub mod clients;
pub mod demo;
pub mod entitlements;
pub mod system;
