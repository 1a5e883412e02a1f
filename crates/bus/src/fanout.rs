//! Live office updates fanned out by NATS to the streams of an API process
//! (issue 20 item 4).
//!
//! The engine's office routing ([`crate::routing`]) publishes a notice
//! ([`UpdateNotice`]) of each event an office may see on
//! `kiban.offices.<office>.updates`. An API process holds
//! **one** NATS subscription per office that has at least one open stream
//! in it ([`OfficeFeeds`]), shared by all of that office's streams through
//! a broadcast channel, and dropped with the office's last stream; nothing
//! in the process follows the store per connection.
//!
//! The subscription is to `kiban.offices.<office>.*`: the office's updates
//! and the consent events naming it (`kiban.offices.<office>.consents`),
//! which only the office's web screen gets (`own_consents`: its care-plan
//! page waits for the person's consent), never its API stream.
//!
//! [`follow_office`] makes one office's exact stream of the notices of the
//! events after a position out of that subscription and a bounded replay from the store:
//!
//! 1. subscribe (or join the office's subscription), and wait until the
//!    subscription is at least [`SUBSCRIPTION_SETTLE_MS`] old, so that the
//!    NATS servers route to it (interest travels between the nodes of a
//!    cluster after the `SUB`);
//! 2. read the store's head `H`, and replay `(after, H]` from the store,
//!    keeping the events the same [`Entitlements`] give the office (what
//!    the routing sent, or would send), and with `own_consents` the consent
//!    events naming it;
//! 3. then take live updates, dropping any at or below the last position
//!    sent (everything up to `H` came from the replay; the routing repeats
//!    the end of its last batch after a restart or an engine fail-over).
//!
//! Why this is exact: every event above `H` committed after `H` was read,
//! hence after the subscription had settled, so the routing published it
//! to a subscription that receives it. Two things lose core-NATS messages,
//! and both are repaired the same way (a replay from the last position
//! sent up to the head of that moment, then live again): the broadcast
//! channel overflowing for a slow stream (`Lagged`), and the connection to
//! NATS breaking (messages published meanwhile are gone; a watcher sees the
//! client's connect count change and, once the resubscription has settled,
//! tells every stream). A replay longer than [`REPLAY_EVENTS_MAX`] events
//! ends the stream with [`FollowError::TooFarBehind`]: the client reads
//! what it missed through the query routes instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kiban_events::ids::OfficeNumber;
use kiban_events::{Position, RecordedEvent, UpdateNotice};
use kiban_store::{EventStore, Subscription};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::Error;
use crate::routing::Entitlements;
use crate::subjects::{office_consents_subject, office_feed_filter};

/// How long a new subscription (and a resubscription after a reconnect)
/// waits before the stream relies on it: the time NATS takes to make a new
/// interest known to every server of a cluster, with a wide margin (it is
/// milliseconds on a LAN). Paid once per office and process, when the
/// office's first stream opens.
pub const SUBSCRIPTION_SETTLE_MS: u64 = 250;

/// Updates buffered per office for its slowest stream; a stream further
/// behind repairs from the store.
pub const OFFICE_BROADCAST_CAPACITY: usize = 256;

/// Most events one replay may read from the store (the store's events, not
/// only the office's): a stream resumed from further back, or a repair
/// after a NATS outage longer than this, ends with
/// [`FollowError::TooFarBehind`].
pub const REPLAY_EVENTS_MAX: u64 = 100_000;

/// How often the connection watcher looks at the client's connect count.
const CONNECTS_POLL_MS: u64 = 100;

/// Why a followed office stream ended.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The replay would read more than [`REPLAY_EVENTS_MAX`] events.
    #[error(
        "position {after} is {behind} events behind the head; at most {max} are replayed: read what happened since through the query routes and follow from the head"
    )]
    TooFarBehind {
        /// The last position the stream had.
        after: Position,
        /// How far behind the head that is.
        behind: u64,
        /// [`REPLAY_EVENTS_MAX`].
        max: u64,
    },
    /// NATS, the store or the entitlements failed.
    #[error(transparent)]
    Bus(#[from] Error),
}

/// A notice as it came on the office's subscription.
#[derive(Debug)]
struct Live {
    notice: UpdateNotice,
    /// Whether it came on `kiban.offices.<office>.consents` (a consent event
    /// naming the office: for its screen only).
    consent: bool,
}

/// One office's shared subscription in this process.
struct Entry {
    updates: broadcast::Sender<Arc<Live>>,
    /// When the subscription was made.
    since: Instant,
    /// Ends the forwarding task (and unsubscribes) with the last stream.
    _stop: DropGuard,
}

/// The offices' subscriptions of one process, over one NATS connection.
/// Cheap to clone.
#[derive(Clone)]
pub struct OfficeFeeds {
    client: async_nats::Client,
    entries: Arc<Mutex<HashMap<OfficeNumber, Weak<Entry>>>>,
    /// Changes when the connection to NATS was made again (the watcher's
    /// wake-up for idle streams).
    reconnects: watch::Receiver<u64>,
    _watcher: Arc<DropGuard>,
}

impl std::fmt::Debug for OfficeFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficeFeeds").finish_non_exhaustive()
    }
}

/// A stream's hold on its office's subscription.
pub struct OfficeSubscription {
    updates: broadcast::Receiver<Arc<Live>>,
    reconnects: watch::Receiver<u64>,
    statistics: Arc<async_nats::Statistics>,
    /// The client's connect count this stream has repaired up to.
    connects: u64,
    entry: Arc<Entry>,
}

impl OfficeSubscription {
    /// Whether the client connected again since the stream last looked
    /// (updates published in between may be lost).
    fn reconnected(&mut self) -> bool {
        let now = self
            .statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        std::mem::replace(&mut self.connects, now) != now
    }
}

impl OfficeFeeds {
    /// The feeds over `client`; must be made inside a tokio runtime (it
    /// starts the connection watcher, which ends with the last clone).
    pub fn new(client: async_nats::Client) -> Self {
        let (sender, reconnects) = watch::channel(0);
        let stop = CancellationToken::new();
        let statistics = client.statistics();
        let watch_stop = stop.clone();
        tokio::spawn(async move {
            let connects = || {
                statistics
                    .connects
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            let mut seen = connects();
            let mut tick = tokio::time::interval(Duration::from_millis(CONNECTS_POLL_MS));
            loop {
                tokio::select! {
                    () = watch_stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = connects();
                if now != seen {
                    seen = now;
                    tracing::info!("reconnected to NATS: office streams repair from the store");
                    sender.send_modify(|count| *count += 1);
                }
            }
        });
        Self {
            client,
            entries: Arc::new(Mutex::new(HashMap::new())),
            reconnects,
            _watcher: Arc::new(stop.drop_guard()),
        }
    }

    /// How many offices this process is subscribed for.
    pub fn offices(&self) -> usize {
        self.entries
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|entry| entry.strong_count() > 0)
            .count()
    }

    fn live(&self, office: &OfficeNumber) -> Option<Arc<Entry>> {
        // A std lock: held for a lookup, never across an await.
        self.entries
            .lock()
            .expect("not poisoned")
            .get(office)
            .and_then(Weak::upgrade)
    }

    /// Joins `office`'s subscription, making it when it is the first.
    pub async fn subscribe(&self, office: &OfficeNumber) -> Result<OfficeSubscription, Error> {
        let entry = match self.live(office) {
            Some(entry) => entry,
            None => {
                let subscriber = self
                    .client
                    .subscribe(office_feed_filter(office))
                    .await
                    .map_err(|error| {
                        Error::Unavailable(format!("subscribing to an office's updates: {error}"))
                    })?;
                let mut entries = self.entries.lock().expect("not poisoned");
                entries.retain(|_, entry| entry.strong_count() > 0);
                match entries.get(office).and_then(Weak::upgrade) {
                    // Another stream subscribed meanwhile: ours is dropped
                    // (and unsubscribed).
                    Some(entry) => entry,
                    None => {
                        let (updates, _) = broadcast::channel(OFFICE_BROADCAST_CAPACITY);
                        let stop = CancellationToken::new();
                        tokio::spawn(forward(
                            subscriber,
                            office_consents_subject(office),
                            updates.clone(),
                            stop.clone(),
                        ));
                        let entry = Arc::new(Entry {
                            updates,
                            since: Instant::now(),
                            _stop: stop.drop_guard(),
                        });
                        entries.insert(office.clone(), Arc::downgrade(&entry));
                        entry
                    }
                }
            }
        };
        let statistics = self.client.statistics();
        let connects = statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(OfficeSubscription {
            updates: entry.updates.subscribe(),
            reconnects: self.reconnects.clone(),
            statistics,
            connects,
            entry,
        })
    }
}

/// Hands the office's NATS messages to its streams until the last stream
/// is gone (or the connection closes for good).
async fn forward(
    mut subscriber: async_nats::Subscriber,
    consents: String,
    updates: broadcast::Sender<Arc<Live>>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = subscriber.next() => message,
        };
        let Some(message) = message else { break };
        if crate::routing::is_snapshot(&message) {
            // Person snapshots are for NATS subscribers; an API stream
            // sends notices of single events only.
            continue;
        }
        match serde_json::from_slice::<UpdateNotice>(&message.payload) {
            // No receiver left only means the last stream is closing.
            Ok(notice) => drop(updates.send(Arc::new(Live {
                notice,
                consent: message.subject.as_str() == consents,
            }))),
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "an office update that is no notice")
            }
        }
    }
    let _ = subscriber.unsubscribe().await;
}

/// Where a followed stream stands.
struct Follow<S, E> {
    store: S,
    entitlements: E,
    office: OfficeNumber,
    /// Whether the consent events naming the office are sent (its screen).
    own_consents: bool,
    subscription: OfficeSubscription,
    /// The last position sent (or skipped as not the office's).
    last: Position,
    /// A replay in progress: the store's events from `last + 1`, up to
    /// the head of when it began.
    replay: Option<(Subscription, Position)>,
    /// Before the first replay.
    started: bool,
}

/// The notices of the events `office` may see after position `after` (with
/// `own_consents`, also of the consent events naming it), each once and in
/// order, live: see the module documentation. Ends with an error when NATS,
/// the store or the entitlements fail, or a replay would be too long.
pub fn follow_office<S, E>(
    feeds: &OfficeFeeds,
    store: S,
    entitlements: E,
    office: OfficeNumber,
    after: Position,
    own_consents: bool,
) -> impl Stream<Item = Result<UpdateNotice, FollowError>> + Send + 'static
where
    S: EventStore + 'static,
    E: Entitlements + 'static,
{
    let feeds = feeds.clone();
    futures::stream::once(async move {
        let subscription = feeds.subscribe(&office).await?;
        Ok::<_, FollowError>(Follow {
            store,
            entitlements,
            office,
            own_consents,
            subscription,
            last: after,
            replay: None,
            started: false,
        })
    })
    .flat_map(|follow| match follow {
        Ok(follow) => futures::stream::try_unfold(follow, |mut follow| async move {
            let event = follow.next().await?;
            Ok(Some((event, follow)))
        })
        .left_stream(),
        Err(error) => futures::stream::once(async move { Err(error) }).right_stream(),
    })
}

impl<S: EventStore, E: Entitlements> Follow<S, E> {
    /// The next notice of the office's stream.
    async fn next(&mut self) -> Result<UpdateNotice, FollowError> {
        loop {
            if !self.started {
                self.started = true;
                // Reconnects before this point are covered by the replay.
                self.subscription.reconnects.borrow_and_update();
                self.subscription.reconnected();
                tokio::time::sleep_until(
                    self.subscription.entry.since + Duration::from_millis(SUBSCRIPTION_SETTLE_MS),
                )
                .await;
                self.begin_replay().await?;
            }
            if let Some((events, until)) = &mut self.replay {
                let until = *until;
                let Some(event) = events.next().await else {
                    return Err(Error::Source("the store subscription ended".to_owned()).into());
                };
                let event = event.map_err(|error| Error::Source(error.to_string()))?;
                if event.position >= until {
                    self.replay = None;
                }
                self.last = event.position;
                if self.own_consent(&event)
                    || entitled(&self.entitlements, &self.office, &event).await?
                {
                    return Ok(UpdateNotice::from(&event));
                }
                continue;
            }
            let update = tokio::select! {
                changed = self.subscription.reconnects.changed() => {
                    if changed.is_err() {
                        return Err(Error::Closed.into());
                    }
                    None
                }
                update = self.subscription.updates.recv() => Some(update),
            };
            // Checked before anything received is sent: an update that
            // arrived after a reconnect may follow updates lost during it.
            if self.subscription.reconnected() {
                // The resubscription must reach every server before the
                // head the repair reads.
                tokio::time::sleep(Duration::from_millis(SUBSCRIPTION_SETTLE_MS)).await;
                self.begin_replay().await?;
                continue;
            }
            match update {
                Some(Ok(live)) if live.notice.position > self.last => {
                    // A consent event came on the consents subject: for
                    // the office's screen only.
                    if !live.consent || self.own_consents {
                        self.last = live.notice.position;
                        return Ok(live.notice.clone());
                    }
                }
                Some(Err(broadcast::error::RecvError::Lagged(_))) => self.begin_replay().await?,
                Some(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(Error::Closed.into());
                }
                Some(Ok(_)) | None => {}
            }
        }
    }

    /// Whether `event` is a consent event naming the office, and the stream
    /// sends those.
    fn own_consent(&self, event: &RecordedEvent) -> bool {
        self.own_consents
            && kiban_events::domain::insured::consent_office(event).as_ref() == Some(&self.office)
    }

    /// Replays `(last, head]` from the store (nothing when the stream is at
    /// the head).
    async fn begin_replay(&mut self) -> Result<(), FollowError> {
        let head = self
            .store
            .head()
            .await
            .map_err(|error| Error::Source(error.to_string()))?
            .position;
        let behind = head.saturating_sub(self.last);
        if behind > REPLAY_EVENTS_MAX {
            return Err(FollowError::TooFarBehind {
                after: self.last,
                behind,
                max: REPLAY_EVENTS_MAX,
            });
        }
        self.replay = (behind > 0).then(|| (self.store.subscribe(self.last + 1), head));
        Ok(())
    }
}

/// Whether the routing sends (or would send) `event` to `office`.
async fn entitled<E: Entitlements>(
    entitlements: &E,
    office: &OfficeNumber,
    event: &RecordedEvent,
) -> Result<bool, FollowError> {
    Ok(entitlements.offices_for(event).await?.contains(office))
}
