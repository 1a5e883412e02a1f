//! [`Projections`]: the runners that keep each projection up to date, lag,
//! and rebuild.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use kiban_events::{Position, RecordedEvent};
use kiban_store::Store;

use crate::db::{Db, KeyFilter, Tx};
use crate::error::{Error, Result};
use crate::projection::Projection;

/// Most events applied in one transaction. Large enough that catching up
/// a million events takes thousands of commits, not a million; small enough
/// that a batch holds SQLite's write lock (shared with the store's writer)
/// for milliseconds.
pub const BATCH_EVENTS_MAX: usize = 256;

/// Events applied per transaction by a rebuild. A rebuild writes a fresh
/// generation nobody reads, and its transaction keeps documents in memory
/// and writes each one once at commit (see `Db::begin_rebuild`), so larger
/// batches mean fewer writes. On SQLite a batch holds the database's write
/// lock (shared with the store's writer) for its duration: at ~100,000
/// events/s, a few tens of milliseconds.
pub const REBUILD_BATCH_EVENTS: usize = 4_096;

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
    pub(crate) entries: Vec<Entry>,
    pub(crate) cancel: CancellationToken,
    /// The runner tasks (or the follower's, `follower.rs`). A std mutex:
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
    /// rebuilding it when its schema version changed) and starts one runner
    /// task per projection that catches up from its checkpoint and follows
    /// the store live.
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
            entries,
            cancel,
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        for index in 0..inner.entries.len() {
            let runner = Runner {
                db: inner.db.clone(),
                store: inner.store.clone(),
                projection: inner.entries[index].projection.clone(),
                checkpoint: inner.entries[index].checkpoint.clone(),
                cancel: inner.cancel.clone(),
            };
            tasks.push(tokio::spawn(runner.run()));
        }
        *inner.tasks.lock().expect("not poisoned") = tasks;
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
        for entry in &self.inner.entries {
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
    /// store: each batch read is applied to each projection's fresh
    /// generation in turn, and each new generation is swapped in when the
    /// pass reaches the head. Returns that position.
    pub async fn rebuild_all(&self) -> Result<Position> {
        let projections: Vec<&dyn Projection> = self
            .inner
            .entries
            .iter()
            .map(|entry| entry.projection.as_ref())
            .collect();
        rebuild_many(&self.inner.db, &self.inner.store, &projections).await
    }

    /// Stops the runners at their next safe point (between batches) and
    /// waits for them.
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
    let mut fresh = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        let live = db.live(name).await?.map_or(0, |(generation, _)| generation);
        let generation = db.last_generation(name).await?.max(live) + 1;
        fresh.push((
            *projection,
            generation,
            Arc::new(Mutex::new(KeyFilter::default())),
        ));
    }
    let apply = async |batch: &[RecordedEvent]| -> Result<Position> {
        for (projection, generation, written) in &fresh {
            apply_rebuild_batch(db, *projection, *generation, batch, written).await?;
        }
        Ok(batch.last().map_or(0, |event| event.position))
    };
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
            batch.extend(events?);
            if batch.len() >= REBUILD_BATCH_EVENTS {
                position = apply(&batch).await?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            position = apply(&batch).await?;
            batch.clear();
        }
    }
    for (projection, generation, _) in &fresh {
        let name = projection.name();
        let mut tx = db.begin(name, *generation).await?;
        tx.lock_live().await?;
        tx.set_checkpoint(position).await?;
        tx.make_live(projection.schema_version()).await?;
        tx.commit().await?;
        tracing::info!(
            projection = name,
            generation,
            position,
            "rebuilt projection is live"
        );
    }
    Ok(position)
}

/// Applies one rebuild batch in one transaction that keeps its writes in
/// memory until it commits.
async fn apply_rebuild_batch(
    db: &Db,
    projection: &dyn Projection,
    generation: i64,
    events: &[RecordedEvent],
    written: &Arc<Mutex<KeyFilter>>,
) -> Result<()> {
    let tx = db
        .begin_rebuild(projection.name(), generation, written.clone())
        .await?;
    match apply_in(tx, projection, generation, events, false).await? {
        Batch::Applied => Ok(()),
        Batch::NotLive => unreachable!("a rebuild batch does not check the live generation"),
    }
}

pub(crate) enum Batch {
    Applied,
    NotLive,
}

/// Applies `events` to `generation` and moves its checkpoint, in one
/// transaction. With `require_live`, does nothing (and says so) when
/// `generation` is no longer the served one.
pub(crate) async fn apply_batch(
    db: &Db,
    projection: &dyn Projection,
    generation: i64,
    events: &[RecordedEvent],
    require_live: bool,
) -> Result<Batch> {
    if events.is_empty() {
        return Ok(Batch::Applied);
    }
    let tx = db.begin(projection.name(), generation).await?;
    apply_in(tx, projection, generation, events, require_live).await
}

/// [`apply_batch`] in a transaction already begun.
async fn apply_in(
    mut tx: Tx,
    projection: &dyn Projection,
    generation: i64,
    events: &[RecordedEvent],
    require_live: bool,
) -> Result<Batch> {
    let Some(last) = events.last() else {
        return Ok(Batch::Applied);
    };
    // The first statement writes, so that SQLite takes its write lock (with
    // its busy wait) at once instead of failing to upgrade a read later.
    if require_live {
        if tx.lock_live().await? != Some(generation) {
            return Ok(Batch::NotLive);
        }
    } else {
        tx.set_checkpoint(events[0].position - 1).await?;
    }
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].position,
            pair[0].position + 1,
            "the store yields gapless positions"
        );
    }
    for event in events {
        projection.apply(&mut tx, event).await?;
    }
    tx.set_checkpoint(last.position).await?;
    tx.commit().await?;
    Ok(Batch::Applied)
}

/// One projection's task: catch up from the checkpoint, then follow live.
struct Runner {
    db: Db,
    store: Store,
    projection: Arc<dyn Projection>,
    checkpoint: watch::Sender<Position>,
    cancel: CancellationToken,
}

impl Runner {
    async fn run(self) {
        while !self.cancel.is_cancelled() {
            match self.follow().await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(projection = self.projection.name(), %error, "projection runner failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS)) => {}
                        () = self.cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Follows the live generation until it changes (`Ok`), the runner is
    /// cancelled (`Ok`), or something fails.
    async fn follow(&self) -> Result<()> {
        let name = self.projection.name();
        let (generation, _) =
            self.db.live(name).await?.ok_or_else(|| {
                Error::Invalid(format!("projection {name} has no live generation"))
            })?;
        let from = self.db.checkpoint(name, generation).await?;
        self.checkpoint.send_replace(from);
        let mut events = self
            .store
            .subscribe(from + 1)
            .ready_chunks(BATCH_EVENTS_MAX);
        loop {
            let chunk = tokio::select! {
                chunk = events.next() => chunk,
                () = self.cancel.cancelled() => return Ok(()),
            };
            let Some(chunk) = chunk else {
                return Err(Error::Store(kiban_store::Error::Closed));
            };
            let mut batch = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for item in chunk {
                match item {
                    Ok(event) => batch.push(event),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            let last = batch.last().map(|event| event.position);
            match apply_batch(&self.db, self.projection.as_ref(), generation, &batch, true).await? {
                Batch::NotLive => return Ok(()),
                Batch::Applied => {
                    if let Some(last) = last {
                        self.checkpoint.send_replace(last);
                    }
                }
            }
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
    }
}
