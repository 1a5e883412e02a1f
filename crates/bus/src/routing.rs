//! Office routing: committed events to the offices entitled to see them.
//!
//! [`run_routing`] follows the store from its checkpoint, asks
//! [`Entitlements`] which offices may see each event (consent, registered
//! care-plan office, the insurer's sharing enabled — rules that belong to the
//! domain and come in through the trait), and sends the event to each of them
//! through an [`OfficeSink`]: NATS (`kiban.offices.<office>.updates`,
//! [`NatsOfficeSink`]) or the in-process bus. Over NATS an office gets an
//! [`UpdateNotice`] of each event, never the event itself (no payload,
//! actor, correlation or hashes): it reads the data through the API, where
//! every read is in the access log. A consent event goes to the
//! office it names on `kiban.offices.<office>.consents` instead, which only
//! API processes read, for that office's web screen (its care-plan page
//! waits for the person's consent); offices' own subscribers never get it.
//!
//! Delivery to offices is live and at least once across restarts: the
//! checkpoint is saved after each batch has been flushed to the server, so a
//! crash repeats at most the last batch. Updates carry [`POSITION_HEADER`]
//! so an office can drop repeats. An office that was offline catches up
//! through the API, not through NATS (core NATS keeps nothing).
//!
//! **Entitlement snapshots.** An event that makes an office entitled to a
//! person it was not entitled to just before (a consent given, a care-plan
//! office registered or changed: [`Entitlements::newly_entitled`]) also
//! sends that office a [`PersonSnapshot`] on the same subject: the notices
//! of every event of the person's streams up to that event that the feed
//! carries ([`Entitlements::carries`]), so the office knows what to read of
//! the person's past without polling. It is
//! marked with the header [`MESSAGE_KIND_HEADER`] = [`PERSON_SNAPSHOT`].

use std::future::Future;
use std::sync::Arc;

use async_nats::HeaderMap;
use futures::StreamExt;
use kiban_events::ids::OfficeNumber;
use kiban_events::{Position, RecordedEvent, StreamName, UpdateNotice};
use kiban_store::{EventStore, READ_EVENTS_MAX};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::relay::{Checkpoints, POSITION_HEADER};
use crate::subjects::{office_consents_subject, office_updates_subject};

/// The routing's checkpoint name.
pub const ROUTING_CHECKPOINT: &str = "office-routing";

/// Most events routed between two checkpoint saves: bounds what a crash
/// repeats, while saving once per batch rather than per event keeps the
/// checkpoint's fsyncs off the hot path.
pub const ROUTING_BATCH_EVENTS_MAX: usize = 256;

/// The header that tells a [`PersonSnapshot`] from a single [`UpdateNotice`]
/// on an office's subject; notices carry none.
pub const MESSAGE_KIND_HEADER: &str = "Kiban-Message";

/// [`MESSAGE_KIND_HEADER`]'s value, and [`PersonSnapshot::kind`].
pub const PERSON_SNAPSHOT: &str = "person_snapshot";

/// Largest snapshot, in bytes of JSON: under NATS's default `max_payload`
/// (1 MiB) with room for the headers. A person's history is far smaller
/// (a few dozen notices of about 200 bytes); beyond it the oldest events are left
/// out and [`PersonSnapshot::complete`] is false.
pub const SNAPSHOT_BYTES_MAX: usize = 768 * 1024;

/// Most applications a snapshot looks for (`certification/<person>-1` ..):
/// it stops at the first number with no application.
const SNAPSHOT_APPLICATIONS_MAX: u32 = 1_000;

/// What an office that has just become entitled to a person receives on
/// `kiban.offices.<office>.updates` (docs/nats.md "Office updates").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonSnapshot {
    /// Always [`PERSON_SNAPSHOT`].
    pub kind: String,
    /// The person's insurer (保険者番号).
    pub insurer: String,
    /// The person (被保険者番号).
    pub insured: String,
    /// The position of the event that made the office entitled: the
    /// snapshot is the person's state as of it, and the office's feed goes
    /// on after it.
    pub position: Position,
    /// Whether `events` holds every notice it should; false when the oldest
    /// were left out to stay under [`SNAPSHOT_BYTES_MAX`] (read them through
    /// the API).
    pub complete: bool,
    /// The notices of the person's events the feed carries, up to
    /// `position`, in position order: their applications' steps and results
    /// and their own record (certifications, certificates, care-plan office,
    /// ledgers); never reads, consents or moves. The office reads the data
    /// through the API (logged).
    pub events: Vec<UpdateNotice>,
}

/// Whether a message on an office's subject is a [`PersonSnapshot`] rather
/// than a single [`UpdateNotice`].
pub fn is_snapshot(message: &async_nats::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(MESSAGE_KIND_HEADER))
        .is_some_and(|kind| kind.as_str() == PERSON_SNAPSHOT)
}

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

    /// The offices `event` makes entitled to its person that were not
    /// entitled just before it (a consent given, a care-plan office
    /// registered or changed, the insurer sharing): each receives a
    /// [`PersonSnapshot`]. Default: none.
    fn newly_entitled(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<Vec<OfficeNumber>>> + Send {
        let _ = event;
        async { Ok(Vec::new()) }
    }

    /// When `event` turns its insurer's sharing on (`insurer.sharing_enabled`):
    /// each person of that insurer (their `insured/<insurer>-<insured>`
    /// stream) whom offices were already entitled to then (a consent or a
    /// care-plan office recorded before sharing), with those offices: each
    /// receives the person's [`PersonSnapshot`] as of `event`, as an office
    /// newly entitled does. Default: none.
    fn entitled_when_sharing_starts(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<Vec<(StreamName, Vec<OfficeNumber>)>>> + Send {
        let _ = event;
        async { Ok(Vec::new()) }
    }

    /// Whether the office feed carries `event` to an entitled office (the
    /// kinds of events about a person that are routed at all); a snapshot
    /// holds only those. Default: every event.
    fn carries(&self, event: &RecordedEvent) -> bool {
        let _ = event;
        true
    }

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
    /// Sends `event` to `office` (over NATS, its [`UpdateNotice`]).
    fn send(
        &self,
        office: &OfficeNumber,
        event: &Arc<RecordedEvent>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sends a consent event to the screen of the office it names (not to
    /// the office's feed); by default nowhere (a process without API
    /// processes to feed: its screens follow its own store).
    fn send_own_consent(
        &self,
        office: &OfficeNumber,
        event: &Arc<RecordedEvent>,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (office, event);
        async { Ok(()) }
    }

    /// Sends `snapshot` to `office`. Default: nothing (the in-process bus
    /// carries single events only).
    fn send_snapshot(
        &self,
        office: &OfficeNumber,
        snapshot: &PersonSnapshot,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (office, snapshot);
        async { Ok(()) }
    }

    /// Returns once everything sent has left this process.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Office updates over core NATS: an [`UpdateNotice`] per event.
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

impl NatsOfficeSink {
    async fn publish(&self, subject: String, event: &Arc<RecordedEvent>) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(POSITION_HEADER, event.position.to_string().as_str());
        let notice = UpdateNotice::from(event.as_ref());
        let body = serde_json::to_vec(&notice).expect("a notice serialises");
        self.client
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|error| Error::from_nats("publishing an office update", error))
    }
}

impl OfficeSink for NatsOfficeSink {
    async fn send(&self, office: &OfficeNumber, event: &Arc<RecordedEvent>) -> Result<()> {
        self.publish(office_updates_subject(office), event).await
    }

    async fn send_own_consent(
        &self,
        office: &OfficeNumber,
        event: &Arc<RecordedEvent>,
    ) -> Result<()> {
        self.publish(office_consents_subject(office), event).await
    }

    async fn send_snapshot(&self, office: &OfficeNumber, snapshot: &PersonSnapshot) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(POSITION_HEADER, snapshot.position.to_string().as_str());
        headers.insert(MESSAGE_KIND_HEADER, PERSON_SNAPSHOT);
        let body = serde_json::to_vec(snapshot).expect("a snapshot serialises");
        self.client
            .publish_with_headers(office_updates_subject(office), headers, body.into())
            .await
            .map_err(|error| Error::from_nats("publishing a person snapshot", error))
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
            if let Some(office) = kiban_events::domain::insured::consent_office(event) {
                sink.send_own_consent(&office, event).await?;
            }
            // Offices newly entitled to the event's person, and, when it
            // turns sharing on, to each person entitled before: each gets
            // the person's snapshot as of the event.
            let mut snapshots = entitlements.entitled_when_sharing_starts(event).await?;
            let newly = entitlements.newly_entitled(event).await?;
            if !newly.is_empty() {
                snapshots.push((event.stream.clone(), newly));
            }
            for (person, offices) in snapshots {
                let snapshot =
                    person_snapshot(store, entitlements, &person, event.position).await?;
                for office in offices {
                    sink.send_snapshot(&office, &snapshot).await?;
                }
            }
            last = Some(event.position);
        }
        sink.flush().await?;
        if let Some(position) = last {
            checkpoints.save(ROUTING_CHECKPOINT, position).await?;
        }
    }
}

/// The snapshot of the person whose own stream is `stream`
/// (`insured/<insurer>-<insured>`): the events the feed carries of that
/// stream and of their applications (`certification/<insurer>-<insured>-<n>`),
/// up to `position`.
pub async fn person_snapshot<S: EventStore, E: Entitlements>(
    store: &S,
    entitlements: &E,
    stream: &StreamName,
    position: Position,
) -> Result<PersonSnapshot> {
    let person = stream.id();
    let (insurer, insured) = person.split_once('-').unwrap_or((person, ""));
    let mut events = stream_until(store, stream, position).await?;
    for seq in 1..=SNAPSHOT_APPLICATIONS_MAX {
        let application = StreamName::new("certification", &format!("{person}-{seq}"))
            .map_err(|error| Error::Source(error.to_string()))?;
        let found = stream_until(store, &application, position).await?;
        if found.is_empty() {
            break;
        }
        events.extend(found);
    }
    events.retain(|recorded| entitlements.carries(recorded));
    events.sort_by_key(|recorded| recorded.position);
    let mut snapshot = PersonSnapshot {
        kind: PERSON_SNAPSHOT.to_owned(),
        insurer: insurer.to_owned(),
        insured: insured.to_owned(),
        position,
        complete: true,
        events: events.iter().map(UpdateNotice::from).collect(),
    };
    while serde_json::to_vec(&snapshot).map_or(0, |json| json.len()) > SNAPSHOT_BYTES_MAX
        && !snapshot.events.is_empty()
    {
        let drop = snapshot.events.len().div_ceil(10);
        snapshot.events.drain(..drop);
        snapshot.complete = false;
    }
    Ok(snapshot)
}

/// The events of `stream` at positions up to `until`.
async fn stream_until<S: EventStore>(
    store: &S,
    stream: &StreamName,
    until: Position,
) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(stream, from, READ_EVENTS_MAX)
            .await
            .map_err(|error| Error::Source(error.to_string()))?;
        let full = page.len() == READ_EVENTS_MAX;
        from += page.len() as u64;
        let before = page
            .iter()
            .take_while(|recorded| recorded.position <= until);
        let past = before.clone().count() < page.len();
        events.extend(before.cloned());
        if !full || past {
            return Ok(events);
        }
    }
}
