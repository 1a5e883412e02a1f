//! Read models as they stood at an earlier position (audit time travel,
//! docs/audit.md): the store's events up to that position are replayed into
//! a fresh, temporary in-memory database — never from stored snapshots —
//! and [`ReadModels`] answers from it exactly as it would have then.

use std::sync::Arc;

use kiban_events::Position;
use kiban_store::{READ_EVENTS_MAX, Store};

use crate::db::Db;
use crate::error::Result;
use crate::projection::{Event, Projection};
use crate::read::ReadModels;
use crate::runner::{Target, Writer, make_first_generation};

/// Read models built from positions `1..=to` only, in their own temporary
/// database (dropped with the value).
#[derive(Debug)]
pub struct ReadModelsAsOf {
    /// The last position replayed (≤ `to`; lower when the store is shorter).
    pub position: Position,
    read: ReadModels,
    db: Db,
}

impl ReadModelsAsOf {
    /// Replays `store` up to `to` through `projections` into a fresh
    /// in-memory database.
    pub async fn build(
        store: &Store,
        projections: &[Arc<dyn Projection>],
        to: Position,
    ) -> Result<Self> {
        let db = Db::open("sqlite::memory:").await?;
        let mut targets = Vec::with_capacity(projections.len());
        for projection in projections {
            make_first_generation(&db, projection.as_ref()).await?;
            targets.push(Target::new(projection.as_ref(), 1, 0, None));
        }
        let mut writer = Writer::new(&db, targets, false);
        let mut position = 0;
        while position < to {
            let want =
                usize::try_from(to - position).map_or(READ_EVENTS_MAX, |n| n.min(READ_EVENTS_MAX));
            let page = store.read_all(position + 1, want).await?;
            let Some(last) = page.last() else { break };
            let last = last.position;
            let events: Vec<Event> = page.into_iter().map(Event::decode).collect();
            writer.push(&events).await?;
            // One batch at a time: the connections of an in-memory SQLite
            // database share one cache, where a read beside a write in
            // flight fails (SQLITE_LOCKED) instead of waiting.
            writer.finish().await?;
            position = last;
        }
        Ok(Self {
            position,
            read: ReadModels::new(db.clone()),
            db,
        })
    }

    /// The queries, answered from the replayed state.
    pub fn read(&self) -> &ReadModels {
        &self.read
    }

    /// The temporary database (to compare documents).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes the temporary database.
    pub async fn close(self) {
        self.db.close().await;
    }
}
