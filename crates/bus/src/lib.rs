//! `kiban-bus`: kiban over NATS JetStream (DESIGN.md decisions 6, 7, 11).
//!
//! Layout:
//!
//! - [`subjects`]: every NATS subject, stream and consumer name kiban uses.
//! - [`streams`]: idempotent creation of `KIBAN_INGEST`, `KIBAN_EVENTS` and
//!   the durable ingest consumer, with their limits.
//! - [`error`]: [`Error`], one variant per thing a caller branches on.
//! - [`testing`] (feature `testing`): a real `nats-server` (and a
//!   three-node cluster) on loopback ports for tests.
//!
//! Architecture invariants:
//!
//! - Only this crate knows NATS subject names; everything else asks
//!   [`subjects`].
//! - Every task this crate spawns has an owner and stops on a
//!   `CancellationToken`.
pub mod error;
pub mod ingest;
pub mod local;
pub mod relay;
pub mod routing;
pub mod streams;
pub mod subjects;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
