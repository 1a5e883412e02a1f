//! Office routing: committed events to the offices entitled to see them.
//!
//! [`run_routing`] follows the store from its checkpoint, asks
//! [`Entitlements`] which offices may see each event (consent, registered
//! care-plan office, the insurer's sharing enabled — rules that belong to the
//! domain and come in through the trait), and sends the event to each of them
//! through an [`OfficeSink`]: NATS (`kiban.offices.<office>.updates`,
//! [`NatsOfficeSink`]) or the in-process bus.
//!
//! Delivery to offices is live and at least once across restarts: the
//! checkpoint is saved after each batch has been flushed to the server, so a
//! crash repeats at most the last batch. Updates carry [`POSITION_HEADER`]
//! so an office can drop repeats. An office that was offline catches up
//! through the API, not through NATS (core NATS keeps nothing).

use std::future::Future;
use std::sync::Arc;

use async_nats::HeaderMap;
use futures::StreamExt;
use kiban_events::ids::OfficeNumber;
use kiban_events::{Position, RecordedEvent};
use kiban_store::EventStore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::relay::{Checkpoints, POSITION_HEADER};
use crate::subjects::office_updates_subject;

/// The routing's checkpoint name.
pub const ROUTING_CHECKPOINT: &str = "office-routing";

/// Most events routed between two checkpoint saves: bounds what a crash
/// repeats, while saving once per batch rather than per event keeps the
/// checkpoint's fsyncs off the hot path.
pub const ROUTING_BATCH_EVENTS_MAX: usize = 256;

/// Which offices may see an event. Implemented over the read models
/// (`kiban::entitlements::ReadModelEntitlements`); it runs for every event,
/// so it should be a lookup or two.
pub trait Entitlements: Send + Sync {
    /// The offices entitled to `event`, without repeats. `Err` (the read
    /// side is unavailable) stops the routing, which its owner restarts
    /// from the checkpoint.
    fn offices_for(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<Vec<OfficeNumber>>> + Send;

    /// The offices entitled to each of `events`, in order: what
    /// [`offices_for`](Self::offices_for) gives for each one. Routing asks
    /// once per batch, so that an implementation over a database can answer
    /// a batch in a few queries instead of a few per event; by default, one
    /// [`offices_for`](Self::offices_for) after another.
    fn offices_for_each(
        &self,
        events: &[Arc<RecordedEvent>],
    ) -> impl Future<Output = Result<Vec<Vec<OfficeNumber>>>> + Send {
        async move {
            let mut offices = Vec::with_capacity(events.len());
            for event in events {
                offices.push(self.offices_for(event).await?);
            }
            Ok(offices)
        }
    }
}

/// Where office updates go.
pub trait OfficeSink: Send + Sync {
    /// Sends `event` to `office`.
    fn send(
        &self,
        office: &OfficeNumber,
        event: &Arc<RecordedEvent>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Returns once everything sent has left this process.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Office updates over core NATS.
#[derive(Debug, Clone)]
pub struct NatsOfficeSink {
    client: async_nats::Client,
}

impl NatsOfficeSink {
    /// A sink publishing through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }
}

impl OfficeSink for NatsOfficeSink {
    async fn send(&self, office: &OfficeNumber, event: &Arc<RecordedEvent>) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(POSITION_HEADER, event.position.to_string().as_str());
        let body = serde_json::to_vec(event.as_ref()).expect("a recorded event serialises");
        self.client
            .publish_with_headers(office_updates_subject(office), headers, body.into())
            .await
            .map_err(|error| Error::from_nats("publishing an office update", error))
    }

    async fn flush(&self) -> Result<()> {
        self.client
            .flush()
            .await
            .map_err(|error| Error::from_nats("flushing office updates", error))
    }
}

/// Routes events from the store to offices until `cancel` fires. Returns
/// `Err` when the store, the sink or the checkpoint fails; the owner
/// restarts it, and it resumes from the checkpoint.
pub async fn run_routing<S, E, C, K>(
    store: &S,
    entitlements: &E,
    checkpoints: &C,
    sink: &K,
    cancel: CancellationToken,
) -> Result<()>
where
    S: EventStore,
    E: Entitlements,
    C: Checkpoints,
    K: OfficeSink,
{
    let from = checkpoints
        .load(ROUTING_CHECKPOINT)
        .await?
        .map_or(1, |position| position + 1);
    let mut batches = store.subscribe(from).ready_chunks(ROUTING_BATCH_EVENTS_MAX);
    loop {
        let batch = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            batch = batches.next() => batch,
        };
        let Some(batch) = batch else {
            return Err(Error::Source("the store subscription ended".to_owned()));
        };
        let events = batch
            .into_iter()
            .map(|event| event.map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|error| Error::Source(error.to_string()))?;
        let entitled = entitlements.offices_for_each(&events).await?;
        let mut last: Option<Position> = None;
        for (event, offices) in events.iter().zip(entitled) {
            for office in offices {
                sink.send(&office, event).await?;
            }
            last = Some(event.position);
        }
        sink.flush().await?;
        if let Some(position) = last {
            checkpoints.save(ROUTING_CHECKPOINT, position).await?;
        }
    }
}
