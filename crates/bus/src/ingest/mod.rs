//! Ingest: municipalities' status messages in, receipts out.
//!
//! A municipality publishes an [`IngestMessage`] (JSON) on
//! `kiban.ingest.<insurer>.<event type>` with the header `Nats-Msg-Id` set to
//! its event id. [`run_ingest`] pulls such messages from the durable consumer
//! of `KIBAN_INGEST` in batches, checks each one ([`check_message`]: size,
//! JSON, schema, identifiers, subject against content), hands the valid ones
//! to an [`IngestHandler`] (the engine), publishes a [`Receipt`] on
//! `kiban.receipts.<insurer>`, and only then acknowledges the message.
//!
//! - Accepted and rejected messages are acknowledged after their receipt has
//!   been flushed to the server; poison messages (too large, not JSON) are
//!   terminated after their rejection receipt, never retried.
//! - A transient failure of the handler ([`Unavailable`]) leaves the message
//!   unacknowledged and the consumer re-opens its subscription after a
//!   pause; a subscription always starts at the oldest unacknowledged message
//!   (the consumer is re-created when it holds any, also after a crash of the
//!   process that pulled them), so the message is tried again before anything
//!   newer, for as long as the store stays unavailable.
//! - Messages about the same insured person (else the same insurer) are
//!   handled one after the other in stream order; different people in one
//!   batch concurrently, and up to
//!   [`INGEST_BATCHES_IN_FLIGHT_MAX`](crate::pipeline::INGEST_BATCHES_IN_FLIGHT_MAX)
//!   batches at once, a person's group in a later batch handled after the
//!   same person's group in an earlier one ([`crate::pipeline`]).
//! - Redelivered and re-sent messages are harmless: the handler is
//!   idempotent by event id and answers with the same receipt again.
//!
//! # Layout
//!
//! - `message`: the schema ([`IngestMessage`]), [`check_message`], the
//!   [`Receipt`] and the rejection [`codes`] of the transport layer.
//! - `handler`: the [`IngestHandler`] trait and its [`Verdict`].
//! - `consumer`: the JetStream consumer loop [`run_ingest`] and its limits.

mod consumer;
mod handler;
mod message;

pub use crate::retry::INGEST_RETRY_DELAY_MS;
pub use consumer::{
    INGEST_BATCH_MESSAGES_MAX, INGEST_HEARTBEAT_MS, INGEST_PULL_EXPIRES_MS, run_ingest,
};
pub(crate) use handler::decide;
pub use handler::{IngestHandler, Unavailable, Verdict};
pub(crate) use message::Checked;
pub use message::{
    INGEST_MESSAGE_BYTES_MAX, IngestMessage, MSG_ID_HEADER, RECEIPT_MESSAGE_BYTES_MAX, Receipt,
    ReceiptStatus, Refusal, TRANSPORT_CODES, check_message, codes,
};
