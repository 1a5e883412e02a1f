//! [`Projections::follow`]: the read models of a process that does not run
//! the projections (`kiban serve --role api`) but must know how far they
//! are: the engine that holds the writer lock applies the events and commits
//! each projection's checkpoint in its database; this process reads those
//! checkpoints every [`FOLLOW_POLL_MS`] (one indexed query for all
//! projections) and moves the same checkpoint watches the runners move in
//! the writer's process. So [`Projections::wait_for`] and
//! [`Projections::lag`] mean the same in every role, and the API can wait
//! for its read models to reach a command's position before answering
//! (read your writes).
//!
//! A poll, not PostgreSQL `LISTEN`: it works on both backends, costs one
//! small query per interval per API process, and bounds how stale the
//! follower can be by the interval alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiban_events::Position;
use kiban_store::{Store, both};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::error::Result;
use crate::projection::Projection;
use crate::runner::{Entry, Inner, Projections};

/// How often a follower reads the projections' checkpoints, in
/// milliseconds: a command answered in an API process waits for its read
/// models at most this much longer than in the writer's own process.
pub const FOLLOW_POLL_MS: u64 = 20;

/// The live generations' checkpoints, one row per projection.
const CHECKPOINTS_SQL: &str = "SELECT l.projection, c.position \
     FROM projection_live l JOIN projection_checkpoints c \
     ON c.projection = l.projection AND c.generation = l.generation";

impl Projections {
    /// The read models of `projections`, kept up to date by another process
    /// (the writer's); this one only follows their checkpoints, every
    /// `poll`. Nothing is prepared or rebuilt here: until the writer's
    /// process made a projection's first generation, its checkpoint is 0.
    /// [`Projections::rebuild`] must not be called on a follower.
    pub async fn follow(
        db: Db,
        store: Store,
        projections: Vec<Arc<dyn Projection>>,
        poll: Duration,
    ) -> Result<Projections> {
        let entries: Vec<Entry> = projections
            .into_iter()
            .map(|projection| Entry {
                projection,
                checkpoint: watch::channel(0).0,
            })
            .collect();
        let inner = Arc::new(Inner {
            db,
            store,
            entries: Arc::new(entries),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        // The first read before returning, so that `lag` is right at once.
        read_checkpoints(&inner).await?;
        let task = tokio::spawn(follow(Arc::downgrade(&inner), inner.cancel.clone(), poll));
        inner.tasks.lock().expect("not poisoned").push(task);
        Ok(Projections { inner })
    }
}

/// Reads the checkpoints until cancelled or the projections are dropped.
async fn follow(inner: std::sync::Weak<Inner>, cancel: CancellationToken, poll: Duration) {
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = read_checkpoints(&inner).await {
            tracing::warn!(%error, "cannot read the projections' checkpoints; retrying");
        }
    }
}

/// One read of every live checkpoint; each watch only moves forward (a
/// rebuilt generation is swapped in at or beyond the old one's position).
async fn read_checkpoints(inner: &Inner) -> Result<()> {
    let rows: Vec<(String, i64)> = both!(inner.db.pool(), pool => sqlx::query_as::<_, (String, i64)>(CHECKPOINTS_SQL)
        .fetch_all(pool)
        .await)?;
    for (name, position) in rows {
        let position = Position::try_from(position).unwrap_or(0);
        if let Some(entry) = inner
            .entries
            .iter()
            .find(|entry| entry.projection.name() == name)
        {
            entry.checkpoint.send_if_modified(|checkpoint| {
                let moved = position > *checkpoint;
                if moved {
                    *checkpoint = position;
                }
                moved
            });
        }
    }
    Ok(())
}
