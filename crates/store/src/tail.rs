//! The committed tail: the events this store's writer committed most
//! recently, kept in memory so that in-process subscriptions (projections,
//! relay, routing, timers) take them from there instead of each reading them
//! back from the database.
//!
//! Only the writer task fills it, and only after the commit returned: nothing
//! uncommitted is ever in it. It holds one contiguous run of positions; a
//! batch that does not continue it (another store wrote in between, this
//! store just took the writer role) replaces it. It is bounded by events and
//! by payload bytes, evicting the oldest. A subscription whose next position
//! is not in it (it fell behind, or another process's writer committed the
//! events) reads from the database as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kiban_events::{Position, RecordedEvent};
use tokio::sync::watch;

/// Default for [`crate::StoreOptions::tail_events`]: two full writer batches,
/// about a megabyte and a half for 300-byte payloads.
pub const TAIL_EVENTS_DEFAULT: usize = 4096;

/// Most payload bytes the tail holds, whatever its event bound: a run of
/// large payloads keeps fewer events rather than more memory.
pub const TAIL_PAYLOAD_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Where the pages of this store's subscriptions came from, counted since the
/// store was opened ([`crate::Store::subscription_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionPages {
    /// Pages taken from the committed tail in memory.
    pub from_memory: u64,
    /// Pages read from the database.
    pub from_database: u64,
}

pub(crate) struct Tail {
    events_max: usize,
    ring: Mutex<Ring>,
    from_memory: AtomicU64,
    from_database: AtomicU64,
    /// The first and last positions of the batch the writer is committing
    /// now, `(0, 0)` when none. On PostgreSQL the head notification (and on both backends the
    /// head poll) can announce a commit before the writer's statement has
    /// returned and the rows are here; a subscription that finds its next
    /// position in flight waits for the writer instead of reading the
    /// database. Cleared when the statement returns, committed or not.
    in_flight: watch::Sender<(Position, Position)>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<RecordedEvent>>,
    bytes: usize,
}

impl Ring {
    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }
}

impl Tail {
    pub fn new(events_max: usize) -> Self {
        Self {
            events_max,
            ring: Mutex::new(Ring::default()),
            from_memory: AtomicU64::new(0),
            from_database: AtomicU64::new(0),
            in_flight: watch::Sender::new((0, 0)),
        }
    }

    /// Marks positions `first..=last` as being committed by the writer
    /// until the returned guard is dropped (after [`Tail::push`] on success).
    pub fn begin(&self, first: Position, last: Position) -> InFlight<'_> {
        if self.events_max > 0 {
            self.in_flight.send_replace((first, last));
        }
        InFlight(self)
    }

    /// Waits while the writer is committing a batch that holds `next`;
    /// returns at once otherwise.
    pub async fn settle(&self, next: Position) {
        let mut in_flight = self.in_flight.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = in_flight
            .wait_for(|&(first, last)| !(first..=last).contains(&next))
            .await;
    }

    /// Adds rows the writer has just committed (gapless, chained, in
    /// position order). Call only after the commit succeeded.
    pub fn push(&self, rows: &[RecordedEvent]) {
        if self.events_max == 0 || rows.is_empty() {
            return;
        }
        // Clone outside the lock; subscribers hold it only to copy `Arc`s.
        let skip = rows.len().saturating_sub(self.events_max);
        let fresh: Vec<Arc<RecordedEvent>> = rows[skip..].iter().cloned().map(Arc::new).collect();
        let mut ring = self.ring.lock().expect("not poisoned");
        let continues = ring.events.back().is_none_or(|last| {
            skip == 0 && fresh[0].position == last.position + 1 && fresh[0].prev_hash == last.hash
        });
        if !continues {
            ring.clear();
        }
        for event in fresh {
            ring.bytes += cost(&event);
            ring.events.push_back(event);
        }
        while ring.events.len() > self.events_max || ring.bytes > TAIL_PAYLOAD_BYTES_MAX {
            let Some(old) = ring.events.pop_front() else {
                break;
            };
            ring.bytes -= cost(&old);
        }
    }

    /// Forgets everything (the writer lost or re-took its role).
    pub fn clear(&self) {
        self.ring.lock().expect("not poisoned").clear();
    }

    /// Up to `max` events from position `from` on, if `from` is in the tail.
    pub fn read(&self, from: Position, max: usize) -> Option<Vec<RecordedEvent>> {
        let shared: Vec<Arc<RecordedEvent>> = {
            let ring = self.ring.lock().expect("not poisoned");
            let first = ring.events.front()?.position;
            let index = usize::try_from(from.checked_sub(first)?).ok()?;
            if index >= ring.events.len() {
                return None;
            }
            ring.events.range(index..).take(max).cloned().collect()
        };
        Some(shared.iter().map(|e| RecordedEvent::clone(e)).collect())
    }

    pub fn count(&self, from_memory: bool) {
        let counter = if from_memory {
            &self.from_memory
        } else {
            &self.from_database
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pages(&self) -> SubscriptionPages {
        SubscriptionPages {
            from_memory: self.from_memory.load(Ordering::Relaxed),
            from_database: self.from_database.load(Ordering::Relaxed),
        }
    }
}

/// Ends a [`Tail::begin`], also when the write fails or is abandoned.
pub(crate) struct InFlight<'a>(&'a Tail);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_if_modified(|range| {
            let was = *range;
            *range = (0, 0);
            was != (0, 0)
        });
    }
}

/// What one event counts against [`TAIL_PAYLOAD_BYTES_MAX`]: its payload
/// plus a rough constant for the rest of the envelope.
fn cost(event: &RecordedEvent) -> usize {
    event.payload.len() + 256
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use kiban_events::{Actor, EventId, EventType, Hash, Payload, StreamName};
    use uuid::Uuid;

    use super::*;

    /// A chained run of events at positions `from..from + n`.
    fn run(from: Position, n: usize, prev: Hash) -> Vec<RecordedEvent> {
        let mut prev_hash = prev;
        (0..n as u64)
            .map(|i| {
                let position = from + i;
                let hash = Hash([(position % 251) as u8 + 1; 32]);
                let event = RecordedEvent {
                    position,
                    stream: StreamName::parse("test/tail").unwrap(),
                    version: position,
                    event_id: EventId::from_uuid(Uuid::from_u128(u128::from(position) + 1))
                        .unwrap(),
                    event_type: EventType::parse("test.happened").unwrap(),
                    schema_version: 1,
                    occurred_at: Utc::now(),
                    recorded_at: Utc::now(),
                    actor: Actor::system("tests").unwrap(),
                    correlation_id: Uuid::from_u128(7),
                    causation_id: None,
                    payload: Payload::from_json("{}").unwrap(),
                    prev_hash,
                    hash,
                };
                prev_hash = hash;
                event
            })
            .collect()
    }

    fn positions(events: Option<Vec<RecordedEvent>>) -> Option<Vec<Position>> {
        events.map(|e| e.iter().map(|e| e.position).collect())
    }

    #[test]
    fn holds_a_bounded_contiguous_run_and_answers_only_inside_it() {
        let tail = Tail::new(5);
        assert_eq!(positions(tail.read(1, 10)), None);
        let first = run(1, 3, Hash::GENESIS);
        tail.push(&first);
        assert_eq!(positions(tail.read(2, 10)), Some(vec![2, 3]));
        assert_eq!(positions(tail.read(4, 10)), None, "not yet committed");
        let second = run(4, 4, first[2].hash);
        tail.push(&second);
        // 7 events, bound 5: 1 and 2 were evicted.
        assert_eq!(positions(tail.read(2, 10)), None);
        assert_eq!(positions(tail.read(3, 2)), Some(vec![3, 4]));
        assert_eq!(positions(tail.read(3, 10)), Some(vec![3, 4, 5, 6, 7]));
        // A batch that does not continue the run replaces it.
        tail.push(&run(20, 2, Hash([9; 32])));
        assert_eq!(positions(tail.read(7, 10)), None);
        assert_eq!(positions(tail.read(20, 10)), Some(vec![20, 21]));
        // So does one with the right position but another chain.
        tail.push(&run(22, 1, Hash([8; 32])));
        assert_eq!(positions(tail.read(20, 10)), None);
        assert_eq!(positions(tail.read(22, 10)), Some(vec![22]));
        // A batch larger than the bound keeps its newest events.
        tail.push(&run(23, 8, Hash([7; 32])));
        assert_eq!(positions(tail.read(22, 10)), None);
        assert_eq!(positions(tail.read(26, 10)), Some(vec![26, 27, 28, 29, 30]));
        tail.clear();
        assert_eq!(positions(tail.read(30, 10)), None);
    }

    #[test]
    fn a_disabled_tail_holds_nothing() {
        let tail = Tail::new(0);
        tail.push(&run(1, 3, Hash::GENESIS));
        assert_eq!(positions(tail.read(1, 10)), None);
    }
}
