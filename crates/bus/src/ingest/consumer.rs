//! The JetStream consumer loop: pulls batches from the durable consumer of
//! `KIBAN_INGEST`, hands them to the handler in ordering-key groups,
//! publishes and flushes the receipts, then settles each message.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{self, MessagesError};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use futures::stream::ReadyChunks;
use kiban_events::ids::InsurerNumber;
use tokio_util::sync::CancellationToken;

use super::handler::{IngestHandler, Unavailable, decide};
use super::message::{Checked, IngestMessage, MSG_ID_HEADER, Receipt, check_message};
use crate::error::{Error, Result};
use crate::pipeline::{KeyedGroup, KeyedPipeline, Turn, group_by_key};
use crate::retry::{ingest_retry_delay, restart_until_cancelled};
use crate::streams::ingest_consumer_from_oldest_unacknowledged;
use crate::subjects::receipt_subject;

/// Most messages pulled and handled as one batch. Large enough that the
/// store's group commit sees many appends at once, small enough that one
/// batch's receipts go out within milliseconds.
pub const INGEST_BATCH_MESSAGES_MAX: usize = 256;

/// Idle heartbeat of the pull subscription: a lost connection or a
/// restarted server is noticed after two missed heartbeats.
pub const INGEST_HEARTBEAT_MS: u64 = 2_000;

/// How long one pull request stays open at the server before the client
/// issues a new one.
pub const INGEST_PULL_EXPIRES_MS: u64 = 10_000;

/// A pulled message and what [`check_message`] made of it.
type Pulled = (jetstream::Message, Checked);

/// How one message ends, after its receipt went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Accepted or rejected: acknowledge.
    Ack,
    /// Poison: terminate, never deliver again.
    Terminate,
    /// Not decided (handler unavailable, or an earlier message of its
    /// ordering key was not): deliver again later.
    Retry,
}

/// Runs the ingest consumer until `cancel` fires: creates the streams'
/// consumer if needed, pulls batches, and survives NATS restarts (it
/// re-opens the subscription after a pause that grows while NATS stays
/// unavailable, [`crate::retry`]).
///
/// The caller owns the task it runs in. Returns `Err` only for a problem an
/// operator must fix ([`Error::Refused`]: the stream is missing, a
/// permission is denied).
pub async fn run_ingest<H: IngestHandler>(
    client: async_nats::Client,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> Result<()> {
    let context = jetstream::new(client.clone());
    restart_until_cancelled(
        "ingest subscription",
        &cancel,
        |error| matches!(error, Error::Refused(_)),
        || pull_until_failure(&client, &context, &handler, &cancel),
    )
    .await
}

/// One subscription's life: returns `Ok` when cancelled, `Err` when the
/// subscription broke.
async fn pull_until_failure<H: IngestHandler>(
    client: &async_nats::Client,
    context: &jetstream::Context,
    handler: &Arc<H>,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut batches = subscribe(context).await?;
    // A reconnect (to the same server restarted, or to another node of a
    // cluster) can strand the subscription's pull requests on the old
    // connection while heartbeats still arrive; a fresh subscription after
    // every reconnect removes that case.
    let statistics = client.statistics();
    let connects = statistics.connects.load(Ordering::Relaxed);
    let mut reconnect_check = tokio::time::interval(Duration::from_millis(INGEST_HEARTBEAT_MS));
    let mut pipeline = KeyedPipeline::new();
    let mut failed = None;
    while failed.is_none() {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = reconnect_check.tick() => {
                if statistics.connects.load(Ordering::Relaxed) != connects {
                    failed = Some(Error::Unavailable("reconnected to NATS".to_owned()));
                }
            }
            done = pipeline.next_done(), if !pipeline.is_idle() => {
                if let Some(Err(error)) = done {
                    failed = Some(error);
                }
            }
            batch = batches.next(), if pipeline.can_accept() => {
                let Some(batch) = batch else {
                    failed = Some(Error::Unavailable(
                        "the ingest subscription ended".to_owned(),
                    ));
                    continue;
                };
                tracing::debug!(messages = batch.len(), "ingest batch pulled");
                let (groups, error) = group_batch(batch);
                failed = error;
                pipeline.submit(groups, |groups| settle_batch(client, handler.as_ref(), groups));
            }
        }
    }
    // Stopping (cancelled or failed): no new batch; the running ones
    // finish, so that nothing decided goes without its receipt (a group
    // behind one that failed is not decided: it is delivered again).
    while let Some(done) = pipeline.next_done().await {
        if let Err(error) = done {
            failed.get_or_insert(error);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Opens the pull subscription on the durable consumer (created if
/// missing, re-created if it holds messages an earlier subscription never
/// acknowledged, so that those come first:
/// [`ingest_consumer_from_oldest_unacknowledged`]), its messages in batches
/// of at most [`INGEST_BATCH_MESSAGES_MAX`].
async fn subscribe(context: &jetstream::Context) -> Result<ReadyChunks<pull::Stream>> {
    let consumer = ingest_consumer_from_oldest_unacknowledged(context).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(INGEST_BATCH_MESSAGES_MAX)
        .heartbeat(Duration::from_millis(INGEST_HEARTBEAT_MS))
        .expires(Duration::from_millis(INGEST_PULL_EXPIRES_MS))
        .messages()
        .await
        .map_err(|error| Error::from_nats("opening the ingest subscription", error))?;
    Ok(messages.ready_chunks(INGEST_BATCH_MESSAGES_MAX))
}

/// Checks each message of a pulled batch and groups them by ordering key
/// ([`group_by_key`]); also returns the last pull error in the batch, after
/// which the subscription is re-opened.
fn group_batch(
    batch: Vec<std::result::Result<jetstream::Message, MessagesError>>,
) -> (Vec<KeyedGroup<Pulled>>, Option<Error>) {
    let mut failed = None;
    let messages = batch.into_iter().filter_map(|item| {
        item.map_err(|error| failed = Some(Error::from_nats("pulling ingest messages", error)))
            .ok()
    });
    let checked = messages.map(|message| {
        let checked = check_message(
            message.subject.as_str(),
            msg_id(message.headers.as_ref()),
            &message.payload,
        );
        (message, checked)
    });
    let groups = group_by_key(checked, |(_, checked)| {
        checked.as_ref().ok().map(IngestMessage::ordering_key)
    });
    (groups, failed)
}

/// Handles one batch's groups concurrently, publishes receipts, flushes
/// them, then settles every message.
async fn settle_batch<H: IngestHandler>(
    client: &async_nats::Client,
    handler: &H,
    groups: Vec<(Turn, Vec<Pulled>)>,
) -> Result<()> {
    let settled = futures::future::join_all(
        groups
            .into_iter()
            .map(|(turn, group)| handle_group(client, handler, turn, group)),
    )
    .await;
    // The receipts must be at the server before any acknowledgement: a
    // message acknowledged with its receipt still in this process's buffer
    // would be lost with the process.
    client
        .flush()
        .await
        .map_err(|error| Error::from_nats("flushing receipts", error))?;
    let mut retrying = false;
    for (message, settle) in settled.into_iter().flatten() {
        let kind = match settle {
            Settle::Ack => AckKind::Ack,
            Settle::Terminate => AckKind::Term,
            Settle::Retry => {
                retrying = true;
                AckKind::Nak(Some(redelivery_delay(&message)))
            }
        };
        // A lost acknowledgement only means a redelivery, which is harmless.
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, "acknowledging an ingest message failed");
        }
    }
    if retrying {
        // Messages already pulled behind the failed ones could be about the
        // same person; handling them before the failed ones come back would
        // reorder that person's facts. Dropping the subscription leaves them
        // and the failed ones unacknowledged, and the next subscription
        // delivers all of them first, in stream order
        // ([`ingest_consumer_from_oldest_unacknowledged`]), after a pause
        // in which the store can recover. (A later batch's group of a
        // failed key is not handled: its turn says so.)
        return Err(Error::Unavailable(
            "the ingest handler is unavailable".to_owned(),
        ));
    }
    Ok(())
}

/// Handles one ordering key's messages in order, once the same key's group
/// of an earlier batch has been handled (its [`Turn`]). After a transient
/// failure the rest of the group is not handled (it would be out of order)
/// and is delivered again with the failed one; so is the whole group when
/// the earlier one failed.
async fn handle_group<H: IngestHandler>(
    client: &async_nats::Client,
    handler: &H,
    mut turn: Turn,
    group: Vec<Pulled>,
) -> Vec<(jetstream::Message, Settle)> {
    let mut settled = Vec::with_capacity(group.len());
    let mut blocked = !turn.wait_for_previous().await;
    for (message, checked) in group {
        if blocked {
            settled.push((message, Settle::Retry));
            continue;
        }
        let settle = match decide(handler, checked).await {
            Err(Unavailable(reason)) => {
                tracing::warn!(%reason, "ingest handler unavailable; the message will be redelivered");
                blocked = true;
                Settle::Retry
            }
            Ok((insurer, receipt, poison)) => {
                match publish_receipt(client, insurer.as_ref(), &receipt).await {
                    Ok(()) if poison => Settle::Terminate,
                    Ok(()) => Settle::Ack,
                    Err(error) => {
                        tracing::warn!(%error, "publishing a receipt failed; the message will be redelivered");
                        blocked = true;
                        Settle::Retry
                    }
                }
            }
        };
        settled.push((message, settle));
    }
    // Its receipts are in the connection's buffer ahead of anything the
    // next group of this key publishes.
    turn.finish(!blocked);
    settled
}

/// Publishes `receipt` on `kiban.receipts.<insurer>`; with no insurer there
/// is nobody to tell, and the refusal is only logged.
async fn publish_receipt(
    client: &async_nats::Client,
    insurer: Option<&InsurerNumber>,
    receipt: &Receipt,
) -> Result<()> {
    let Some(insurer) = insurer else {
        tracing::warn!(
            ?receipt,
            "ingest message on a subject with no valid insurer; no receipt can be sent"
        );
        return Ok(());
    };
    let body = serde_json::to_vec(receipt).expect("a receipt serialises");
    client
        .publish(receipt_subject(insurer), body.into())
        .await
        .map_err(|error| Error::from_nats("publishing a receipt", error))
}

/// When JetStream should deliver `message` again: later with each
/// delivery ([`ingest_retry_delay`]), so a store that stays down is asked
/// less and less often, and with jitter, so the messages that failed
/// together do not all return at once.
fn redelivery_delay(message: &jetstream::Message) -> Duration {
    let delivered = message.info().map_or(1, |info| info.delivered);
    ingest_retry_delay(u32::try_from(delivered).unwrap_or(1))
}

fn msg_id(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(MSG_ID_HEADER).map(|value| value.as_str())
}
