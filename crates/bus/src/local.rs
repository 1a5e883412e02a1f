//! The in-process bus of the embedded default (no NATS URL).
//!
//! Same semantics as the NATS side, over tokio channels:
//!
//! - [`LocalBus::publish_ingest`] is a municipality's publish: the message
//!   goes through the same checks ([`check_message`]) and the same
//!   [`IngestHandler`], and its [`Receipt`] is sent to the receipt
//!   subscribers of its insurer ([`LocalBus::subscribe_receipts`]).
//! - A transient handler failure is retried after [`ingest_retry_delay`]
//!   (growing, with jitter), at most [`INGEST_MAX_DELIVER`] attempts, as
//!   JetStream would.
//! - [`LocalBus::sink`] is an [`OfficeSink`] for [`crate::routing::run_routing`];
//!   offices follow their updates with [`LocalBus::subscribe_office`].
//!
//! Nothing here is durable: a message not yet handled when the process
//! stops has no receipt, and its producer re-sends it — the same contract as
//! over NATS. Receipts and updates are broadcast: a subscriber that lags by
//! more than [`LOCAL_BROADCAST_CAPACITY`] messages loses the oldest and is
//! told so by the channel.

use std::sync::{Arc, Mutex};

use kiban_events::RecordedEvent;
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ingest::{
    Checked, INGEST_BATCH_MESSAGES_MAX, IngestHandler, IngestMessage, Receipt, Unavailable,
    check_message, decide,
};
use crate::pipeline::{KeyedGroup, KeyedPipeline, group_by_key};
use crate::retry::ingest_retry_delay;
use crate::routing::OfficeSink;
use crate::streams::INGEST_MAX_DELIVER;
use crate::subjects::ingest_subject;

/// Ingest messages queued for the handler. When full, `publish_ingest`
/// waits: back-pressure on producers instead of unbounded memory.
pub const LOCAL_INGEST_QUEUE_CAPACITY: usize = 4096;

/// Receipts and office updates buffered per broadcast channel for slow
/// subscribers.
pub const LOCAL_BROADCAST_CAPACITY: usize = 4096;

struct RawIngest {
    subject: String,
    msg_id: Option<String>,
    body: Vec<u8>,
}

/// The in-process bus. Cheap to clone: clones share the channels.
#[derive(Clone)]
pub struct LocalBus {
    ingest: mpsc::Sender<RawIngest>,
    /// Taken by the one ingest consumer. A sync mutex: it is held only to
    /// take the receiver, never across an `.await`.
    ingest_receiver: Arc<Mutex<Option<mpsc::Receiver<RawIngest>>>>,
    receipts: broadcast::Sender<(InsurerNumber, Receipt)>,
    updates: broadcast::Sender<(OfficeNumber, Arc<RecordedEvent>)>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus").finish_non_exhaustive()
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBus {
    /// A new bus with nothing subscribed.
    pub fn new() -> Self {
        let (ingest, receiver) = mpsc::channel(LOCAL_INGEST_QUEUE_CAPACITY);
        let (receipts, _) = broadcast::channel(LOCAL_BROADCAST_CAPACITY);
        let (updates, _) = broadcast::channel(LOCAL_BROADCAST_CAPACITY);
        Self {
            ingest,
            ingest_receiver: Arc::new(Mutex::new(Some(receiver))),
            receipts,
            updates,
        }
    }

    /// Publishes a status message as a municipality would on
    /// `kiban.ingest.<insurer>.<kind>`, with `msg_id` as its `Nats-Msg-Id`.
    pub async fn publish_ingest(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        body: Vec<u8>,
    ) -> Result<()> {
        let message = RawIngest {
            subject: subject.to_owned(),
            msg_id: msg_id.map(str::to_owned),
            body,
        };
        self.ingest.send(message).await.map_err(|_| Error::Closed)
    }

    /// The subject a municipality publishes `kind` on (for callers that have
    /// the typed values at hand).
    pub fn ingest_subject(insurer: &InsurerNumber, kind: &kiban_events::EventType) -> String {
        ingest_subject(insurer, kind)
    }

    /// Receipts for `insurer` from now on.
    pub fn subscribe_receipts(&self, insurer: InsurerNumber) -> Filtered<InsurerNumber, Receipt> {
        Filtered {
            key: insurer,
            receiver: self.receipts.subscribe(),
        }
    }

    /// Updates for `office` from now on.
    pub fn subscribe_office(
        &self,
        office: OfficeNumber,
    ) -> Filtered<OfficeNumber, Arc<RecordedEvent>> {
        Filtered {
            key: office,
            receiver: self.updates.subscribe(),
        }
    }

    /// Every insurer's receipts from now on (the simulation's view of all
    /// municipalities at once).
    pub fn subscribe_all_receipts(&self) -> broadcast::Receiver<(InsurerNumber, Receipt)> {
        self.receipts.subscribe()
    }

    /// Every office's updates from now on.
    pub fn subscribe_all_updates(&self) -> broadcast::Receiver<(OfficeNumber, Arc<RecordedEvent>)> {
        self.updates.subscribe()
    }

    /// The office sink routing sends to.
    pub fn sink(&self) -> LocalOfficeSink {
        LocalOfficeSink {
            updates: self.updates.clone(),
        }
    }

    /// Runs the ingest consumer until `cancel` fires. Only one may run per
    /// bus: a second call returns [`Error::Closed`].
    pub async fn run_ingest<H: IngestHandler>(
        &self,
        handler: Arc<H>,
        cancel: CancellationToken,
    ) -> Result<()> {
        let receiver = self
            .ingest_receiver
            .lock()
            .expect("the lock is never poisoned: nothing panics while holding it")
            .take();
        let Some(mut receiver) = receiver else {
            return Err(Error::Closed);
        };
        // Like the JetStream consumer: what is queued is handled as one
        // batch, one ordering key after the other within a group and the
        // groups concurrently, so that their appends share commits; and a
        // few batches at once, a key's group in a later batch after the
        // same key's group in an earlier one (`crate::pipeline`).
        let handler = handler.as_ref();
        let cancel = &cancel;
        let mut pipeline = KeyedPipeline::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = pipeline.next_done(), if !pipeline.is_idle() => {}
                message = receiver.recv(), if pipeline.can_accept() => {
                    let Some(message) = message else {
                        break;
                    };
                    let mut batch = vec![message];
                    while batch.len() < INGEST_BATCH_MESSAGES_MAX {
                        match receiver.try_recv() {
                            Ok(message) => batch.push(message),
                            Err(_) => break,
                        }
                    }
                    let groups = group_by_ordering_key(batch);
                    pipeline.submit(groups, |groups| async move {
                        futures::future::join_all(groups.into_iter().map(|(mut turn, group)| async move {
                            // No redelivery here: whatever became of the
                            // key's earlier group, this one is handled
                            // after it.
                            turn.wait_for_previous().await;
                            for message in group {
                                self.handle(handler, message, cancel).await;
                            }
                            turn.finish(true);
                        }))
                        .await;
                    });
                }
            }
        }
        // What was taken is finished (the in-process queue has no
        // redelivery).
        while pipeline.next_done().await.is_some() {}
        Ok(())
    }

    async fn handle<H: IngestHandler>(
        &self,
        handler: &H,
        checked: Checked,
        cancel: &CancellationToken,
    ) {
        for attempt in 1..=INGEST_MAX_DELIVER {
            match decide(handler, checked.clone()).await {
                Ok((Some(insurer), receipt, _poison)) => {
                    // No subscriber is not an error: nobody listens yet.
                    let _ = self.receipts.send((insurer, receipt));
                    return;
                }
                Ok((None, receipt, _)) => {
                    tracing::warn!(
                        ?receipt,
                        "local ingest message with no valid insurer; no receipt can be sent"
                    );
                    return;
                }
                Err(Unavailable(reason)) => {
                    tracing::warn!(%reason, attempt, "local ingest handler unavailable; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(ingest_retry_delay(u32::try_from(attempt).unwrap_or(u32::MAX))) => {}
                    }
                }
            }
        }
        tracing::warn!(
            "local ingest message dropped after {INGEST_MAX_DELIVER} attempts; its producer re-sends it"
        );
    }
}

/// Checks each message of a batch once and groups them by ordering key
/// ([`group_by_key`]).
fn group_by_ordering_key(batch: Vec<RawIngest>) -> Vec<KeyedGroup<Checked>> {
    let checked = batch
        .iter()
        .map(|message| check_message(&message.subject, message.msg_id.as_deref(), &message.body));
    group_by_key(checked, |checked| {
        checked.as_ref().ok().map(IngestMessage::ordering_key)
    })
}

/// A subscription to one insurer's receipts or one office's updates.
pub struct Filtered<K, T> {
    key: K,
    receiver: broadcast::Receiver<(K, T)>,
}

impl<K: PartialEq + Clone, T: Clone> Filtered<K, T> {
    /// The next item for this subscription; `Err` when the bus is gone or
    /// this subscriber lagged and lost items.
    pub async fn next(&mut self) -> Result<T> {
        loop {
            match self.receiver.recv().await {
                Ok((key, item)) if key == self.key => return Ok(item),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Closed) => return Err(Error::Closed),
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    return Err(Error::Unavailable(format!(
                        "the subscriber lagged and lost {lost} items"
                    )));
                }
            }
        }
    }
}

/// [`OfficeSink`] of the in-process bus.
#[derive(Debug, Clone)]
pub struct LocalOfficeSink {
    updates: broadcast::Sender<(OfficeNumber, Arc<RecordedEvent>)>,
}

impl OfficeSink for LocalOfficeSink {
    async fn send(&self, office: &OfficeNumber, event: &Arc<RecordedEvent>) -> Result<()> {
        let _ = self.updates.send((office.clone(), event.clone()));
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
