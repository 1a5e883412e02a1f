//! `kiban-bus`: kiban over NATS JetStream (DESIGN.md decisions 6, 7, 11),
//! and the in-process bus of the embedded default.
//!
//! Municipalities publish status messages into JetStream; the ingest
//! consumer checks them, hands them to an [`ingest::IngestHandler`] (the
//! engine), answers each with a receipt and only then acknowledges it. The
//! outbox relay publishes every committed event to `KIBAN_EVENTS`; the office
//! routing sends each office the updates it is entitled to. `docs/nats.md`
//! is the operator's view, `docs/integration.md` the municipalities'.
//!
//! # Layout
//!
//! - [`subjects`]: every NATS subject, stream and consumer name.
//! - [`append`]: appends from any kiban process to the one writer (NATS
//!   request/reply): the writer's service and the [`append::NatsForwarder`]
//!   of a store that is not the writer.
//! - [`streams`]: idempotent creation of `KIBAN_INGEST`, `KIBAN_EVENTS` and
//!   the durable ingest consumer, with their limits.
//! - [`ingest`]: [`ingest::IngestMessage`], [`ingest::check_message`], the
//!   [`ingest::IngestHandler`] trait, [`ingest::Receipt`] and the consumer
//!   loop [`ingest::run_ingest`].
//! - [`relay`]: the outbox relay [`relay::run_relay`], the
//!   [`relay::Checkpoints`] trait with a JetStream and a file implementation.
//! - [`routing`]: [`routing::Entitlements`], [`routing::OfficeSink`] and
//!   [`routing::run_routing`].
//! - [`fanout`]: [`fanout::OfficeFeeds`] (one subscription per office
//!   and API process) and [`fanout::follow_office`], an office's exact live
//!   stream from those updates and a bounded replay from the store.
//! - [`local`]: [`local::LocalBus`], the same ingest, receipt and update
//!   semantics over tokio channels.
//! - [`engine`]: [`engine::EngineHandler`], the engine as the ingest handler.
//! - [`retry`]: backoff with jitter for restarting the bus's tasks and for
//!   delivering an ingest message again.
//! - [`error`]: [`Error`], one variant per thing a caller branches on, and
//!   the classification of the NATS client's typed errors.
//! - [`client`]: [`client::Bus`] (in-process or a NATS connection) and the
//!   two other sides of a bus: a municipality's sender
//!   ([`client::Municipality`]) and an office's feed ([`client::OfficeFeed`]).
//! - `testing` (feature `testing`): a real `nats-server` (restartable, or a
//!   three-node cluster) on loopback ports, and a store-backed ingest handler.
//!
//! # Architecture invariants
//!
//! - Only this crate knows NATS subject names; everything else asks
//!   [`subjects`].
//! - Nothing is acknowledged to a producer before it is durable in the store:
//!   an ingest message is acked only after the handler returned and its
//!   receipt was flushed to the server.
//! - `KIBAN_EVENTS` holds the store's events in position order with no gap
//!   and no repeat; its last message is the relay's checkpoint.
//! - Every loop here runs in a task its caller owns and stops on a
//!   `CancellationToken`; no lock is held across an `.await`. The one
//!   exception, [`fanout`], ends its tasks with the last handle that uses
//!   them (a drop guard): they belong to the streams, not to a part.

pub mod append;
pub mod asyncapi;
pub mod client;
pub mod engine;
pub mod error;
pub mod fanout;
pub mod ingest;
pub mod local;
pub mod pipeline;
pub mod relay;
pub mod retry;
pub mod routing;
pub mod streams;
pub mod subjects;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
