//! [`Projections`]: the runners that keep each projection up to date, lag,
//! and rebuild.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use kiban_events::Position;
use kiban_store::{SUBSCRIPTION_PAGE_EVENTS, Store};

use crate::db::{Db, KeyFilter, Writes};
use crate::error::{Error, Result};
use crate::projection::{Event, Projection};

/// Most events applied in one transaction while following the store. A
/// batch reads the documents it needs in one query per projection, changes
/// them in memory, and writes each changed one once, in multi-row
/// statements, in one transaction with every projection's checkpoint: the
/// fixed cost of a batch (a few round trips and one commit) is spread over
/// up to this many events when the runner is behind, and a batch is only as
/// large as what is there when it is not. On SQLite the write lock (shared
/// with the store's writer) is held only for the writes, not while the
/// batch reads and folds.
pub const BATCH_EVENTS_MAX: usize = 2_048;

/// Events applied per transaction by a rebuild. A rebuild writes a fresh
/// generation nobody reads, so larger batches mean fewer writes. On SQLite
/// a batch holds the database's write lock (shared with the store's writer)
/// while it writes: at ~100,000 events/s, a few tens of milliseconds.
pub const REBUILD_BATCH_EVENTS: usize = 4_096;

/// How long the runner waits for the next page of a catch-up before it
/// applies what it holds, in milliseconds: while the store is ahead a page
/// arrives within a read; at the head, a batch is not held back longer.
pub const GATHER_WAIT_MS: u64 = 20;

/// How long a runner waits before resubscribing after a failure, in
/// milliseconds: a database restart takes seconds, and a tight loop would
/// only fill the log.
pub const RETRY_DELAY_MS: u64 = 1_000;

/// One projection's position behind the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// The projection.
    pub projection: &'static str,
    /// The last position it applied.
    pub checkpoint: Position,
    /// The store's head when asked.
    pub head: Position,
}

impl Lag {
    /// Events not yet applied: head − checkpoint.
    pub fn events(&self) -> u64 {
        self.head.saturating_sub(self.checkpoint)
    }
}

pub(crate) struct Entry {
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) checkpoint: watch::Sender<Position>,
}

/// The running projections of one process. Cheap to clone.
#[derive(Clone)]
pub struct Projections {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) store: Store,
    pub(crate) entries: Arc<Vec<Entry>>,
    pub(crate) cancel: CancellationToken,
    /// The runner task (or the follower's, `follower.rs`). A std mutex:
    /// taken only to move the handles out on stop, never across an await.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Projections {
    /// Prepares each projection (creating its first generation, or
    /// rebuilding it when its schema version changed) and starts the runner
    /// that catches every projection up from its checkpoint and follows the
    /// store live: one task reading the store once and applying each batch
    /// (decoded once) to every projection, in one transaction with every
    /// projection's checkpoint.
    pub async fn start(
        db: Db,
        store: Store,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Projections> {
        let mut entries = Vec::new();
        for projection in projections {
            prepare(&db, &store, projection.as_ref()).await?;
            let (checkpoint, _) = watch::channel(0);
            entries.push(Entry {
                projection,
                checkpoint,
            });
        }
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            db,
            store,
            entries: Arc::new(entries),
            cancel,
            tasks: Mutex::new(Vec::new()),
        });
        let runner = Runner {
            db: inner.db.clone(),
            store: inner.store.clone(),
            entries: inner.entries.clone(),
            cancel: inner.cancel.clone(),
        };
        *inner.tasks.lock().expect("not poisoned") = vec![tokio::spawn(runner.run())];
        Ok(Projections { inner })
    }

    /// The read-model database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The names of the projections.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner
            .entries
            .iter()
            .map(|entry| entry.projection.name())
            .collect()
    }

    /// Each projection's checkpoint against the store's head.
    pub async fn lag(&self) -> Result<Vec<Lag>> {
        let head = self.inner.store.head().await?.position;
        Ok(self
            .inner
            .entries
            .iter()
            .map(|entry| Lag {
                projection: entry.projection.name(),
                checkpoint: *entry.checkpoint.borrow(),
                head,
            })
            .collect())
    }

    /// Waits until every projection has applied `position`.
    pub async fn wait_for(&self, position: Position) -> Result<()> {
        for entry in self.inner.entries.iter() {
            let mut receiver = entry.checkpoint.subscribe();
            tokio::select! {
                changed = receiver.wait_for(|checkpoint| *checkpoint >= position) => {
                    changed.map_err(|_| Error::Stopped)?;
                }
                () = self.inner.cancel.cancelled() => return Err(Error::Stopped),
            }
        }
        Ok(())
    }

    /// Replays the whole store into a fresh generation of `name` and then
    /// serves it, atomically; the old generation keeps serving until then.
    /// Returns the position the new generation had reached at the swap.
    pub async fn rebuild(&self, name: &str) -> Result<Position> {
        let entry = self
            .inner
            .entries
            .iter()
            .find(|entry| entry.projection.name() == name)
            .ok_or_else(|| Error::Invalid(format!("no projection named {name:?}")))?;
        rebuild(&self.inner.db, &self.inner.store, entry.projection.as_ref()).await
    }

    /// [`Projections::rebuild`] of every projection in one pass over the
    /// store: each batch read is decoded once and applied to each
    /// projection's fresh generation, and each new generation is swapped in
    /// when the pass reaches the head. Returns that position.
    pub async fn rebuild_all(&self) -> Result<Position> {
        let projections: Vec<&dyn Projection> = self
            .inner
            .entries
            .iter()
            .map(|entry| entry.projection.as_ref())
            .collect();
        rebuild_many(&self.inner.db, &self.inner.store, &projections).await
    }

    /// Stops the runner at its next safe point (between batches) and waits
    /// for it.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("not poisoned"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Creates the first generation, or rebuilds when the schema changed.
async fn prepare(db: &Db, store: &Store, projection: &dyn Projection) -> Result<()> {
    match db.live(projection.name()).await? {
        Some((_, version)) if version == i64::from(projection.schema_version()) => Ok(()),
        Some(_) => rebuild(db, store, projection).await.map(|_| ()),
        None => make_first_generation(db, projection).await,
    }
}

/// Creates the next generation, empty at checkpoint 0, and serves it.
pub(crate) async fn make_first_generation(db: &Db, projection: &dyn Projection) -> Result<()> {
    let generation = db.last_generation(projection.name()).await? + 1;
    let mut tx = db.begin(projection.name(), generation).await?;
    tx.set_checkpoint(0).await?;
    tx.make_live(projection.schema_version()).await?;
    tx.commit().await
}

async fn rebuild(db: &Db, store: &Store, projection: &dyn Projection) -> Result<Position> {
    rebuild_many(db, store, &[projection]).await
}

/// Rebuilds `projections` into fresh generations in one pass over the store
/// and swaps each in at the end.
async fn rebuild_many(db: &Db, store: &Store, projections: &[&dyn Projection]) -> Result<Position> {
    let mut targets = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        let live = db.live(name).await?.map_or(0, |(generation, _)| generation);
        let generation = db.last_generation(name).await?.max(live) + 1;
        targets.push(Target {
            projection: *projection,
            generation,
            checkpoint: 0,
            written: Some(Arc::new(Mutex::new(KeyFilter::default()))),
        });
    }
    let mut position: Position = 0;
    let mut batch = Vec::with_capacity(REBUILD_BATCH_EVENTS);
    // Up to the head as it is when each pass starts; events appended during
    // a pass are picked up by the next one, until a pass finds none.
    loop {
        let head = store.head().await?.position;
        if head <= position {
            break;
        }
        let mut events = store.read_range(position + 1, head);
        while let Some(events) = events.next().await {
            batch.extend(events?.into_iter().map(Event::decode));
            if batch.len() >= REBUILD_BATCH_EVENTS {
                position = apply_rebuild_batch(db, &mut targets, &batch).await?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            position = apply_rebuild_batch(db, &mut targets, &batch).await?;
            batch.clear();
        }
    }
    for target in &targets {
        let name = target.projection.name();
        let mut tx = db.begin(name, target.generation).await?;
        tx.lock_live().await?;
        tx.set_checkpoint(position).await?;
        tx.make_live(target.projection.schema_version()).await?;
        tx.commit().await?;
        tracing::info!(
            projection = name,
            generation = target.generation,
            position,
            "rebuilt projection is live"
        );
    }
    Ok(position)
}

async fn apply_rebuild_batch(
    db: &Db,
    targets: &mut [Target<'_>],
    events: &[Event],
) -> Result<Position> {
    match apply_batch(db, targets, events, false).await? {
        Batch::Applied => Ok(events.last().map_or(0, Event::position)),
        Batch::NotLive => unreachable!("a rebuild batch does not check the live generation"),
    }
}

/// One generation a batch is applied to.
pub(crate) struct Target<'a> {
    pub(crate) projection: &'a dyn Projection,
    pub(crate) generation: i64,
    /// The last position applied to it: events at or below are skipped.
    pub(crate) checkpoint: Position,
    /// A rebuild's record of the keys written to the fresh generation.
    pub(crate) written: Option<Arc<Mutex<KeyFilter>>>,
}

pub(crate) enum Batch {
    Applied,
    NotLive,
}

/// Applies `events` (decoded once) to every target — each only the events
/// past its checkpoint — and moves the targets' checkpoints, in one
/// transaction. Each projection first reads the documents the batch needs
/// in one query, then folds the events in memory; the transaction only
/// writes. With `require_live`, writes nothing (and says so) when a
/// target's generation is no longer the served one; otherwise (and on
/// success) each target's `checkpoint` is the batch's last position.
pub(crate) async fn apply_batch(
    db: &Db,
    targets: &mut [Target<'_>],
    events: &[Event],
    require_live: bool,
) -> Result<Batch> {
    let Some(last) = events.last().map(Event::position) else {
        return Ok(Batch::Applied);
    };
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].position(),
            pair[0].position() + 1,
            "the store yields gapless positions"
        );
    }
    let folds = targets
        .iter()
        .filter(|target| target.checkpoint < last)
        .map(|target| {
            let skip = events.partition_point(|event| event.position() <= target.checkpoint);
            fold(db, target, &events[skip..], last)
        });
    let writes = futures::future::try_join_all(folds).await?;
    if !db.commit(writes, require_live).await? {
        return Ok(Batch::NotLive);
    }
    for target in targets.iter_mut() {
        target.checkpoint = target.checkpoint.max(last);
    }
    Ok(Batch::Applied)
}

/// Applies `events` to one target's generation in memory.
async fn fold(db: &Db, target: &Target<'_>, events: &[Event], last: Position) -> Result<Writes> {
    let projection = target.projection;
    let mut tx = db.batch(projection.name(), target.generation, target.written.clone());
    let mut keys = Vec::new();
    for event in events {
        projection.prefetch(event, &mut keys);
    }
    tx.prefetch(keys).await?;
    for event in events {
        projection.apply(&mut tx, event).await?;
    }
    tx.into_writes(last)
}

/// The task that keeps every projection up to date: catch up from the
/// checkpoints, then follow live.
struct Runner {
    db: Db,
    store: Store,
    entries: Arc<Vec<Entry>>,
    cancel: CancellationToken,
}

impl Runner {
    async fn run(self) {
        while !self.cancel.is_cancelled() {
            match self.follow().await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "projection runner failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS)) => {}
                        () = self.cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Follows the live generations until one changes (`Ok`), the runner is
    /// cancelled (`Ok`), or something fails.
    async fn follow(&self) -> Result<()> {
        let mut targets = Vec::with_capacity(self.entries.len());
        for entry in self.entries.iter() {
            let name = entry.projection.name();
            let (generation, _) = self.db.live(name).await?.ok_or_else(|| {
                Error::Invalid(format!("projection {name} has no live generation"))
            })?;
            let checkpoint = self.db.checkpoint(name, generation).await?;
            entry.checkpoint.send_replace(checkpoint);
            targets.push(Target {
                projection: entry.projection.as_ref(),
                generation,
                checkpoint,
                written: None,
            });
        }
        let Some(from) = targets.iter().map(|target| target.checkpoint).min() else {
            // No projections: nothing to follow.
            self.cancel.cancelled().await;
            return Ok(());
        };
        let mut events = self
            .store
            .subscribe(from + 1)
            .ready_chunks(SUBSCRIPTION_PAGE_EVENTS);
        loop {
            let mut batch = Vec::new();
            let mut failure = None;
            // The first chunk as soon as there is one; more only while the
            // chunks are whole pages (the store is ahead) and quick to come.
            let mut gathering = false;
            loop {
                let next = if gathering {
                    let wait = Duration::from_millis(GATHER_WAIT_MS);
                    tokio::select! {
                        chunk = tokio::time::timeout(wait, events.next()) => chunk.ok(),
                        () = self.cancel.cancelled() => return Ok(()),
                    }
                } else {
                    tokio::select! {
                        chunk = events.next() => Some(chunk),
                        () = self.cancel.cancelled() => return Ok(()),
                    }
                };
                let Some(chunk) = next else { break };
                let Some(chunk) = chunk else {
                    failure = Some(kiban_store::Error::Closed);
                    break;
                };
                let whole = chunk.len() == SUBSCRIPTION_PAGE_EVENTS;
                for item in chunk {
                    match item {
                        Ok(event) => batch.push(Event::decode(event)),
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                if failure.is_some() || !whole || batch.len() >= BATCH_EVENTS_MAX {
                    break;
                }
                gathering = true;
            }
            match apply_batch(&self.db, &mut targets, &batch, true).await? {
                Batch::NotLive => return Ok(()),
                Batch::Applied => {
                    for (entry, target) in self.entries.iter().zip(&targets) {
                        entry.checkpoint.send_if_modified(|checkpoint| {
                            let moved = *checkpoint != target.checkpoint;
                            *checkpoint = target.checkpoint;
                            moved
                        });
                    }
                }
            }
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
    }
}
