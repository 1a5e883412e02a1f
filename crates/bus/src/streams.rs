//! Creating kiban's JetStream streams and the ingest consumer, idempotently,
//! at start.
//!
//! Both streams use file storage. `get_or_create` leaves an existing stream
//! as it is, so a restart never changes a stream an operator has tuned; a
//! stream created by an older kiban keeps working because only its name and
//! subjects matter to the code.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use crate::error::{Error, Result};
use crate::subjects::{
    CHECKPOINTS_STREAM, CHECKPOINTS_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS, INGEST_CONSUMER,
    INGEST_STREAM, INGEST_SUBJECTS,
};

/// JetStream's duplicate window on [`INGEST_STREAM`]: short on purpose.
///
/// Inside the window JetStream silently drops a message whose `Nats-Msg-Id`
/// it has seen, so the consumer never sees it and **no receipt is sent for
/// it**. A municipality re-sends exactly the messages that got no receipt
/// (its receipt was lost, say); with a long window that re-send would vanish
/// and the municipality would wait in vain. Five seconds still absorbs a
/// client library's automatic re-publish after a reconnect, while any
/// deliberate re-send (after the receipt timeout, `docs/integration.md`
/// recommends at least 30 s) reaches the consumer, whose handler is
/// idempotent by event id and answers with the same receipt again.
pub const INGEST_DUPLICATE_WINDOW_MS: u64 = 5_000;

/// JetStream's duplicate window on [`EVENTS_STREAM`]: two minutes. The
/// relay restarts from an exact checkpoint, so the window is the second line
/// of defence: a relay that crashed after publishing but before noticing the
/// ack re-publishes within seconds, well inside it.
pub const EVENTS_DUPLICATE_WINDOW_MS: u64 = 120_000;

/// How long an unacknowledged ingest message stays in [`INGEST_STREAM`]:
/// a week. Messages are removed when acknowledged (work-queue retention); one
/// that outlives a week was never processed (kiban was down, or it hit
/// [`INGEST_MAX_DELIVER`]) and its producer has long re-sent it.
pub const INGEST_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// Most bytes [`EVENTS_STREAM`] keeps; the oldest messages go first. The
/// stream is a feed, not the record (the store is): ten gigabytes is weeks
/// of events. There is deliberately no age limit, so the stream's last
/// message — the relay's checkpoint — is never removed by age.
pub const EVENTS_MAX_BYTES: i64 = 10 * 1024 * 1024 * 1024;

/// How long JetStream waits for the ingest consumer to acknowledge a message
/// before delivering it again. Longer than the slowest handler call (a store
/// append waits at most 10 s for a connection) plus publishing its receipt,
/// so a message is redelivered only when kiban really lost it.
pub const INGEST_ACK_WAIT_MS: u64 = 30_000;

/// How many times JetStream delivers one ingest message to one consumer. A
/// message is only left unacknowledged when the handler reported a
/// transient failure (the store unavailable), after which the consumer is
/// re-created at the next subscription
/// ([`ingest_consumer_from_oldest_unacknowledged`]), so in practice a
/// message is tried again for as long as the store stays unavailable. Poison
/// messages never count against it: they are terminated with a rejection
/// receipt at once.
pub const INGEST_MAX_DELIVER: i64 = 20;

/// Most ingest messages delivered and not yet acknowledged: a few batches in
/// flight, so that a slow store bounds what kiban holds in memory.
pub const INGEST_MAX_ACK_PENDING: i64 = 4_096;

/// How the streams are created.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Replicas of each stream: 1 for a single server, 3 in a cluster.
    pub replicas: usize,
    /// See [`INGEST_DUPLICATE_WINDOW_MS`].
    pub ingest_duplicate_window: Duration,
    /// See [`EVENTS_DUPLICATE_WINDOW_MS`].
    pub events_duplicate_window: Duration,
    /// See [`EVENTS_MAX_BYTES`]; must fit the server's `max_file_store`.
    pub events_max_bytes: i64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            ingest_duplicate_window: Duration::from_millis(INGEST_DUPLICATE_WINDOW_MS),
            events_duplicate_window: Duration::from_millis(EVENTS_DUPLICATE_WINDOW_MS),
            events_max_bytes: EVENTS_MAX_BYTES,
        }
    }
}

/// Creates [`INGEST_STREAM`], [`EVENTS_STREAM`] and [`CHECKPOINTS_STREAM`]
/// unless they exist.
pub async fn ensure_streams(jetstream: &Context, options: &StreamOptions) -> Result<()> {
    let ingest = stream::Config {
        name: INGEST_STREAM.to_owned(),
        description: Some("kiban: status messages from municipalities".to_owned()),
        subjects: vec![INGEST_SUBJECTS.to_owned()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: options.replicas,
        duplicate_window: options.ingest_duplicate_window,
        max_age: Duration::from_secs(INGEST_MAX_AGE_SECS),
        ..Default::default()
    };
    let events = stream::Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("kiban: committed events, in store position order".to_owned()),
        subjects: vec![EVENTS_SUBJECTS.to_owned()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_bytes: options.events_max_bytes,
        storage: StorageType::File,
        num_replicas: options.replicas,
        duplicate_window: options.events_duplicate_window,
        ..Default::default()
    };
    let checkpoints = stream::Config {
        name: CHECKPOINTS_STREAM.to_owned(),
        description: Some("kiban: checkpoints shared by the engines".to_owned()),
        subjects: vec![CHECKPOINTS_SUBJECTS.to_owned()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_messages_per_subject: 1,
        storage: StorageType::File,
        num_replicas: options.replicas,
        ..Default::default()
    };
    for config in [ingest, events, checkpoints] {
        let name = config.name.clone();
        jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| Error::from_nats(&format!("creating stream {name}"), error))?;
    }
    Ok(())
}

/// The durable pull consumer of [`INGEST_STREAM`], with nothing delivered
/// and unacknowledged: a consumer holding such messages is re-created.
///
/// A message delivered to an earlier subscription — of a process killed
/// while handling it, or of this process, which drops its subscription
/// after a transient failure — would come back only after
/// [`INGEST_ACK_WAIT_MS`], while newer messages are delivered at once: a
/// person's later step would reach the engine before the earlier one and be
/// rejected for good (`step_out_of_order`). The stream has work-queue
/// retention, so what it still holds is exactly what was never
/// acknowledged; a new consumer delivers all of it first, in stream order.
/// Messages acknowledged whose acknowledgement had not reached the server
/// yet are handled again, which is harmless (the handler is idempotent by
/// event id). Only the single ingest process (the writer) calls this.
pub async fn ingest_consumer_from_oldest_unacknowledged(
    jetstream: &Context,
) -> Result<PullConsumer> {
    let mut consumer = ingest_consumer(jetstream).await?;
    let info = consumer
        .info()
        .await
        .map_err(|error| Error::from_nats("reading the ingest consumer", error))?;
    if info.num_ack_pending == 0 && info.delivered.stream_sequence == info.ack_floor.stream_sequence
    {
        return Ok(consumer);
    }
    tracing::info!(
        unacknowledged = info.num_ack_pending,
        "the ingest consumer holds unacknowledged messages; re-creating it so they come first"
    );
    ingest_stream(jetstream)
        .await?
        .delete_consumer(INGEST_CONSUMER)
        .await
        .map_err(|error| Error::from_nats("re-creating the ingest consumer", error))?;
    ingest_consumer(jetstream).await
}

async fn ingest_stream(jetstream: &Context) -> Result<stream::Stream> {
    jetstream
        .get_stream(INGEST_STREAM)
        .await
        .map_err(|error| Error::from_nats("looking up the ingest stream", error))
}

/// The durable pull consumer of [`INGEST_STREAM`], created unless it exists.
pub async fn ingest_consumer(jetstream: &Context) -> Result<PullConsumer> {
    ingest_stream(jetstream)
        .await?
        .get_or_create_consumer(
            INGEST_CONSUMER,
            pull::Config {
                durable_name: Some(INGEST_CONSUMER.to_owned()),
                description: Some(
                    "kiban: validates, records and answers status messages".to_owned(),
                ),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_millis(INGEST_ACK_WAIT_MS),
                max_deliver: INGEST_MAX_DELIVER,
                max_ack_pending: INGEST_MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| Error::from_nats("creating the ingest consumer", error))
}
