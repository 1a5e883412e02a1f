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

use crate::db::{Carry, Db, KeyFilter, Writes};
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
        self.rebuild_all_in_batches_of(REBUILD_BATCH_EVENTS).await
    }

    /// [`Projections::rebuild_all`] in batches of `events` events instead
    /// of [`REBUILD_BATCH_EVENTS`] (tests: many batch boundaries, each
    /// batch folded while the one before commits).
    #[doc(hidden)]
    pub async fn rebuild_all_in_batches_of(&self, events: usize) -> Result<Position> {
        let projections: Vec<&dyn Projection> = self
            .inner
            .entries
            .iter()
            .map(|entry| entry.projection.as_ref())
            .collect();
        rebuild_many(
            &self.inner.db,
            &self.inner.store,
            &projections,
            events.max(1),
        )
        .await
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

/// [`Projections::rebuild_all`] in a process that runs no runner of its
/// own (`kiban admin rebuild-read-models`): replays the whole store into a
/// fresh generation of each of `projections` and swaps each in. Safe beside
/// the process whose runner keeps them: that runner finds the new
/// generation on its next batch and goes on from its checkpoint, and every
/// read names the live generation (docs/projections.md "Rebuild").
/// Returns the position the new generations had reached at the swap.
pub async fn rebuild_apart(
    db: &Db,
    store: &Store,
    projections: &[Arc<dyn Projection>],
) -> Result<Position> {
    let projections: Vec<&dyn Projection> = projections.iter().map(AsRef::as_ref).collect();
    rebuild_many(db, store, &projections, REBUILD_BATCH_EVENTS).await
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
    rebuild_many(db, store, &[projection], REBUILD_BATCH_EVENTS).await
}

/// Rebuilds `projections` into fresh generations in one pass over the store,
/// `batch_events` events per batch, and swaps each in at the end.
async fn rebuild_many(
    db: &Db,
    store: &Store,
    projections: &[&dyn Projection],
    batch_events: usize,
) -> Result<Position> {
    let mut targets = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        let live = db.live(name).await?.map_or(0, |(generation, _)| generation);
        let generation = db.last_generation(name).await?.max(live) + 1;
        targets.push(Target::new(
            *projection,
            generation,
            0,
            Some(Arc::new(Mutex::new(KeyFilter::default()))),
        ));
    }
    let mut writer = Writer::new(db, targets, false);
    let mut position: Position = 0;
    let mut batch = Vec::with_capacity(batch_events);
    // Up to the head as it is when each pass starts; events appended during
    // a pass are picked up by the next one, until a pass finds none.
    loop {
        let head = store.head().await?.position;
        if head <= position {
            break;
        }
        let mut pages = decoded_pages(store, position + 1, head);
        while let Some(page) = pages.recv().await {
            for event in page? {
                batch.push(event);
                if batch.len() >= batch_events {
                    writer.push(&batch).await?;
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            writer.push(&batch).await?;
            batch.clear();
        }
        position = writer.finish().await?.expect("a rebuild is not live");
    }
    for target in &writer.targets {
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

/// Pages of `from..=to` read and decoded ([`Event::decode`]) by a task of
/// their own, a few pages ahead of the batches that fold them.
fn decoded_pages(
    store: &Store,
    from: Position,
    to: Position,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Event>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(DECODED_PAGES_AHEAD);
    let mut pages = store.read_range(from, to);
    tokio::spawn(async move {
        while let Some(page) = pages.next().await {
            let page = page
                .map(|events| events.into_iter().map(Event::decode).collect())
                .map_err(Error::from);
            let failed = page.is_err();
            if sender.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// Pages a rebuild reads and decodes ahead of the batch being folded.
const DECODED_PAGES_AHEAD: usize = 4;

/// One generation a batch is applied to.
pub(crate) struct Target<'a> {
    pub(crate) projection: &'a dyn Projection,
    pub(crate) generation: i64,
    /// The last position folded into it: events at or below are skipped.
    pub(crate) checkpoint: Position,
    /// The last position committed to it (≤ `checkpoint`).
    pub(crate) committed: Position,
    /// A rebuild's record of the keys written to the fresh generation.
    pub(crate) written: Option<Arc<Mutex<KeyFilter>>>,
    /// What the last batch folded into it wrote, for the next one.
    carry: Carry,
}

impl<'a> Target<'a> {
    pub(crate) fn new(
        projection: &'a dyn Projection,
        generation: i64,
        checkpoint: Position,
        written: Option<Arc<Mutex<KeyFilter>>>,
    ) -> Target<'a> {
        Target {
            projection,
            generation,
            checkpoint,
            committed: checkpoint,
            written,
            carry: Carry::default(),
        }
    }
}

/// The batched writer of the runner, of rebuilds and of the read models at
/// an earlier position: folds each batch (decoded once) into every target,
/// then commits its writes and checkpoints in one transaction **in the
/// background** while the next batch is read and folded — at most one
/// commit in flight, each waited for before the next starts, so commits
/// stay in position order. The next batch reads what the one in flight
/// wrote from the writer's memory (`Carry`), never from the database.
pub(crate) struct Writer<'a> {
    db: Db,
    pub(crate) targets: Vec<Target<'a>>,
    require_live: bool,
    /// The commit running in the background and the position it reaches.
    in_flight: Option<(JoinHandle<Result<bool>>, Position)>,
    /// The last position of the last batch committed (0 before any).
    committed: Position,
}

impl<'a> Writer<'a> {
    /// With `require_live`, a commit first checks that each generation it
    /// writes is still the served one (the live runner).
    pub(crate) fn new(db: &Db, targets: Vec<Target<'a>>, require_live: bool) -> Writer<'a> {
        Writer {
            db: db.clone(),
            targets,
            require_live,
            in_flight: None,
            committed: 0,
        }
    }

    /// Folds `events` (each target only those past its checkpoint), waits
    /// for the previous batch's commit and starts this one's. `Ok(false)`
    /// when the previous commit found a generation no longer served (this
    /// batch is then dropped).
    pub(crate) async fn push(&mut self, events: &[Event]) -> Result<bool> {
        let Some(last) = events.last().map(Event::position) else {
            return Ok(true);
        };
        for pair in events.windows(2) {
            assert_eq!(
                pair[1].position(),
                pair[0].position() + 1,
                "the store yields gapless positions"
            );
        }
        let db = &self.db;
        let mut active: Vec<&mut Target<'a>> = self
            .targets
            .iter_mut()
            .filter(|target| target.checkpoint < last)
            .collect();
        let folds = active.iter_mut().map(|target| {
            let skip = events.partition_point(|event| event.position() <= target.checkpoint);
            let carried = std::mem::take(&mut target.carry);
            fold(
                db,
                target.projection,
                target.generation,
                target.written.clone(),
                carried,
                &events[skip..],
                last,
            )
        });
        let folded = futures::future::try_join_all(folds).await?;
        let writes: Vec<Writes> = active
            .into_iter()
            .zip(folded)
            .map(|(target, (batch, carry))| {
                target.carry = carry;
                target.checkpoint = last;
                batch
            })
            .collect();
        if self.finish().await?.is_none() {
            return Ok(false);
        }
        let (db, require_live) = (self.db.clone(), self.require_live);
        let commit = tokio::spawn(async move { db.commit(writes, require_live).await });
        self.in_flight = Some((commit, last));
        Ok(true)
    }

    /// Waits for the commit in flight, if any: the last position of the
    /// last batch committed, or `None` when the commit found a generation
    /// no longer served (nothing of it was written).
    pub(crate) async fn finish(&mut self) -> Result<Option<Position>> {
        if let Some((commit, last)) = self.in_flight.take() {
            let live = commit.await.map_err(|error| {
                Error::Invalid(format!("a read-model commit panicked: {error}"))
            })??;
            if !live {
                return Ok(None);
            }
            for target in &mut self.targets {
                target.committed = target.committed.max(last);
            }
            self.committed = last;
        }
        Ok(Some(self.committed))
    }

    /// Whether a commit is running in the background.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// Applies `events` to one generation in memory.
async fn fold(
    db: &Db,
    projection: &dyn Projection,
    generation: i64,
    written: Option<Arc<Mutex<KeyFilter>>>,
    carried: Carry,
    events: &[Event],
    last: Position,
) -> Result<(Writes, Carry)> {
    let mut tx = db.batch(projection.name(), generation, written, carried);
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
            targets.push(Target::new(
                entry.projection.as_ref(),
                generation,
                checkpoint,
                None,
            ));
        }
        let Some(from) = targets.iter().map(|target| target.checkpoint).min() else {
            // No projections: nothing to follow.
            self.cancel.cancelled().await;
            return Ok(());
        };
        let mut writer = Writer::new(&self.db, targets, true);
        let followed = self.follow_with(&mut writer, from).await;
        // A commit still in flight (cancelled, or a failure reading the
        // store) is waited for: `stop` returns with nothing running.
        let finished = writer.finish().await;
        self.publish(&writer);
        followed.and(finished.map(|_| ()))
    }

    /// Moves each projection's watched checkpoint to what has committed.
    fn publish(&self, writer: &Writer<'_>) {
        for (entry, target) in self.entries.iter().zip(&writer.targets) {
            entry.checkpoint.send_if_modified(|checkpoint| {
                let moved = *checkpoint != target.committed;
                *checkpoint = target.committed;
                moved
            });
        }
    }

    async fn follow_with(&self, writer: &mut Writer<'_>, from: Position) -> Result<()> {
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
            let mut behind = false;
            loop {
                let next = if gathering {
                    let wait = Duration::from_millis(GATHER_WAIT_MS);
                    tokio::select! {
                        chunk = tokio::time::timeout(wait, events.next()) => chunk.ok(),
                        () = self.cancel.cancelled() => return Ok(()),
                    }
                } else if writer.in_flight() {
                    // A batch still committing: its checkpoints move as
                    // soon as it has, unless more events come first.
                    let wait = Duration::from_millis(GATHER_WAIT_MS);
                    tokio::select! {
                        chunk = tokio::time::timeout(wait, events.next()) => match chunk {
                            Ok(chunk) => Some(chunk),
                            Err(_) => {
                                if writer.finish().await?.is_none() {
                                    return Ok(());
                                }
                                self.publish(writer);
                                continue;
                            }
                        },
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
                if failure.is_some() || !whole {
                    break;
                }
                if batch.len() >= BATCH_EVENTS_MAX {
                    behind = true;
                    break;
                }
                gathering = true;
            }
            if !writer.push(&batch).await? {
                return Ok(());
            }
            // Behind the store, this batch commits while the next one is
            // read and folded; at the head it is waited for, so that the
            // checkpoints move as soon as it has committed.
            if !behind && writer.finish().await?.is_none() {
                return Ok(());
            }
            self.publish(writer);
            if let Some(error) = failure {
                return Err(error.into());
            }
        }
    }
}
