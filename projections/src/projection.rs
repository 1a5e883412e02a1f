//! The [`Projection`] trait and the helpers read models share.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use kiban_events::domain::DomainEvent;
use kiban_events::{Position, RecordedEvent};

use crate::db::Tx;
use crate::error::{Error, Result};

/// A read model built from events.
///
/// The runner calls [`Projection::apply`] for every event in position order,
/// in batches; each batch and the checkpoint after it commit in one
/// transaction, so `apply` sees every event exactly once per generation.
/// `apply` must be deterministic (no clock, no randomness): a rebuild has to
/// give the same documents.
pub trait Projection: Send + Sync + 'static {
    /// The stable name: the `projection` column of its rows.
    fn name(&self) -> &'static str;

    /// The version of its document schema. Raising it makes the next start
    /// rebuild the projection before serving it.
    fn schema_version(&self) -> u32;

    /// Applies one event (ignoring the ones it does not care about).
    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> BoxFuture<'a, Result<()>>;
}

/// A domain event with where and when it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped<E> {
    /// Its global position.
    pub position: Position,
    /// When it happened, by the producer's clock.
    pub occurred_at: DateTime<Utc>,
    /// The event.
    pub event: E,
}

/// Reads `event` as a domain event of `E`.
pub fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<Stamped<E>> {
    let decoded = E::from_recorded(
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    )
    .map_err(|e| Error::Corrupted {
        position: event.position,
        reason: e.to_string(),
    })?;
    Ok(Stamped {
        position: event.position,
        occurred_at: event.occurred_at,
        event: decoded,
    })
}

/// Splits a stream id `a-b-c` into its parts; `None` when the count differs.
pub(crate) fn id_parts(id: &str, count: usize) -> Option<Vec<&str>> {
    let parts: Vec<&str> = id.split('-').collect();
    (parts.len() == count).then_some(parts)
}
