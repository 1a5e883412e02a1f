//! Several ingest batches in flight at once, each ordering key's messages
//! still handled in stream order.
//!
//! One batch at a time leaves the store idle while a batch's receipts are
//! flushed and its messages acknowledged, and makes each batch wait for its
//! slowest person. With [`INGEST_BATCHES_IN_FLIGHT_MAX`] batches running,
//! those waits overlap. The order of one person's facts is kept per
//! ordering key, not per batch: each group of a batch (one key's messages)
//! takes a [`Turn`] behind the same key's group in the batch submitted
//! before it, and is handled only when that group has been handled — its
//! events committed and its receipts handed to the connection — not when
//! that whole batch has flushed and acknowledged. Batches about the same
//! people one after the other (a producer reporting many people step by
//! step) thus overlap too: batch n + 1 decides a person as soon as batch n
//! has recorded that person's previous fact, while batch n still flushes
//! its receipts and acknowledges.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

/// Most batches handled at once by one ingest consumer. Each batch's
/// messages about different people already run concurrently; a few batches
/// more keep the store's group commit fed while earlier ones publish
/// receipts and acknowledge. Bounds the messages held unacknowledged by one
/// consumer at `INGEST_BATCH_MESSAGES_MAX` times this.
pub const INGEST_BATCHES_IN_FLIGHT_MAX: usize = 4;

type Work<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One ordering key's items of a batch (`None`: an item without a key).
pub(crate) type KeyedGroup<T> = (Option<String>, Vec<T>);

/// Splits a batch into groups of one ordering key each, in arrival order,
/// each with its key; an item without a key (an invalid message) is a group
/// of its own, without a key.
pub(crate) fn group_by_key<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> Option<String>,
) -> Vec<KeyedGroup<T>> {
    let mut groups: Vec<KeyedGroup<T>> = Vec::new();
    let mut group_of_key: HashMap<String, usize> = HashMap::new();
    for item in items {
        let index = match key(&item) {
            Some(key) => match group_of_key.get(&key) {
                Some(&index) => index,
                None => {
                    group_of_key.insert(key.clone(), groups.len());
                    groups.push((Some(key), Vec::new()));
                    groups.len() - 1
                }
            },
            None => {
                groups.push((None, Vec::new()));
                groups.len() - 1
            }
        };
        groups[index].1.push(item);
    }
    groups
}

/// How a group ended, as the next group of its key sees it: `None` while it
/// runs, `Some(true)` when every message was decided, `Some(false)` when it
/// stopped at one that could not be (the rest are delivered again).
type TurnState = Option<bool>;

/// A group's place in its ordering key's line.
#[derive(Debug)]
pub(crate) struct Turn {
    previous: Option<watch::Receiver<TurnState>>,
    done: watch::Sender<TurnState>,
}

impl Turn {
    /// Waits until the previous group of the same key has been handled.
    /// `false` when it stopped before deciding all its messages (or was
    /// dropped unfinished): then this group must not be handled either, or
    /// the key's facts would be recorded out of order.
    pub(crate) async fn wait_for_previous(&mut self) -> bool {
        let Some(previous) = &mut self.previous else {
            return true;
        };
        match previous.wait_for(Option::is_some).await {
            Ok(state) => *state == Some(true),
            Err(_) => false,
        }
    }

    /// Ends this turn: `decided` says whether every message of the group
    /// was decided. Dropping a turn unfinished counts as `false`.
    pub(crate) fn finish(self, decided: bool) {
        self.done.send_replace(Some(decided));
    }
}

/// Batches in flight, and the last turn of each ordering key they hold.
pub(crate) struct KeyedPipeline<'a, T> {
    running: FuturesUnordered<Work<'a, (Vec<String>, T)>>,
    /// The latest turn taken for each key held by a running batch.
    last_turns: HashMap<String, watch::Receiver<TurnState>>,
}

impl<'a, T: Send + 'a> KeyedPipeline<'a, T> {
    pub(crate) fn new() -> Self {
        Self {
            running: FuturesUnordered::new(),
            last_turns: HashMap::new(),
        }
    }

    /// Whether another batch may be submitted now.
    pub(crate) fn can_accept(&self) -> bool {
        self.running.len() < INGEST_BATCHES_IN_FLIGHT_MAX
    }

    /// Whether nothing runs.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts a batch: each group gets its [`Turn`] behind the same key's
    /// group of the batches submitted before, and `work` runs with them.
    /// Call only when [`can_accept`](Self::can_accept).
    pub(crate) fn submit<G, F>(
        &mut self,
        groups: Vec<(Option<String>, G)>,
        work: impl FnOnce(Vec<(Turn, G)>) -> F,
    ) where
        F: Future<Output = T> + Send + 'a,
    {
        debug_assert!(self.can_accept());
        let mut keys = Vec::new();
        let turns = groups
            .into_iter()
            .map(|(key, group)| {
                let (done, state) = watch::channel(None);
                let previous = match key {
                    Some(key) => {
                        let previous = self.last_turns.insert(key.clone(), state);
                        keys.push(key);
                        previous
                    }
                    None => None,
                };
                (Turn { previous, done }, group)
            })
            .collect();
        let work = work(turns);
        self.running
            .push(Box::pin(async move { (keys, work.await) }));
    }

    /// The next finished batch's output; `None` when nothing runs.
    /// Cancel-safe.
    pub(crate) async fn next_done(&mut self) -> Option<T> {
        let (keys, output) = self.running.next().await?;
        // A key's last turn is forgotten once it has ended: a later group
        // of that key then waits for nothing. (A turn that ended undecided
        // failed its batch, after which the consumer takes no new batch.)
        for key in keys {
            let ended = self
                .last_turns
                .get(&key)
                .is_some_and(|state| state.borrow().is_some() || state.has_changed().is_err());
            if ended {
                self.last_turns.remove(&key);
            }
        }
        Some(output)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A batch of one group per key, each waiting its turn, logging when it
    /// is handled, and finishing (decided or not) when released.
    fn submit(
        pipeline: &mut KeyedPipeline<'static, &'static str>,
        log: &Log,
        name: &'static str,
        keys: &[&'static str],
    ) -> Vec<oneshot::Sender<bool>> {
        let mut releases = Vec::new();
        let mut released = Vec::new();
        for _ in keys {
            let (release, on_release) = oneshot::channel::<bool>();
            releases.push(release);
            released.push(on_release);
        }
        let groups = keys
            .iter()
            .zip(released)
            .map(|(key, released)| (Some((*key).to_owned()), (*key, released)))
            .collect();
        let log = Arc::clone(log);
        pipeline.submit(groups, move |groups| async move {
            futures::future::join_all(groups.into_iter().map(|(mut turn, (key, released))| {
                let log = Arc::clone(&log);
                async move {
                    let previous_decided = turn.wait_for_previous().await;
                    log.lock()
                        .unwrap()
                        .push(format!("{name}:{key} after {previous_decided}"));
                    let decided = released.await.unwrap_or(false);
                    turn.finish(previous_decided && decided);
                }
            }))
            .await;
            name
        });
        releases
    }

    fn log_of(log: &Log) -> Vec<String> {
        log.lock().unwrap().clone()
    }

    #[test]
    fn groups_are_made_per_key_in_arrival_order() {
        let groups = group_by_key(["a1", "b1", "x", "a2", "b2"], |item| {
            (item.len() == 2).then(|| item[..1].to_owned())
        });
        assert_eq!(
            groups,
            [
                (Some("a".to_owned()), vec!["a1", "a2"]),
                (Some("b".to_owned()), vec!["b1", "b2"]),
                (None, vec!["x"]),
            ]
        );
    }

    /// Polls the pipeline until `line` is logged; no batch may finish
    /// meanwhile.
    async fn drive_until(
        pipeline: &mut KeyedPipeline<'static, &'static str>,
        log: &Log,
        line: &str,
    ) {
        let logged = async {
            while !log_of(log).iter().any(|logged| logged == line) {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            done = pipeline.next_done() => panic!("{done:?} finished before {line:?} was logged"),
            () = logged => {}
        }
    }

    /// The issue-18 change: a later batch sharing keys with a running one
    /// no longer waits for that whole batch; each key's group waits only
    /// for the same key's group before it.
    #[tokio::test]
    async fn a_key_waits_for_its_earlier_group_only() {
        let log: Log = Arc::default();
        let mut pipeline = KeyedPipeline::new();
        let mut first = submit(&mut pipeline, &log, "one", &["p1", "p2"]);
        // Shares p1 with the running batch, and is accepted at once.
        assert!(pipeline.can_accept());
        let second = submit(&mut pipeline, &log, "two", &["p1", "p3"]);
        // p3 has no earlier group: handled at once.
        drive_until(&mut pipeline, &log, "two:p3 after true").await;
        assert!(
            !log_of(&log).iter().any(|line| line.starts_with("two:p1")),
            "p1 of two waits for p1 of one: {:?}",
            log_of(&log)
        );
        // p1 of one is handled while p2 of one still runs: p1 of two goes.
        first.remove(0).send(true).unwrap();
        drive_until(&mut pipeline, &log, "two:p1 after true").await;
        for release in second {
            release.send(true).unwrap();
        }
        assert_eq!(
            pipeline.next_done().await,
            Some("two"),
            "two finishes before one"
        );
        first.remove(0).send(true).unwrap();
        assert_eq!(pipeline.next_done().await, Some("one"));
        assert_eq!(pipeline.next_done().await, None);
        assert!(pipeline.is_idle());
        assert!(pipeline.last_turns.is_empty(), "ended turns are forgotten");
    }

    #[tokio::test]
    async fn a_group_behind_an_undecided_one_is_not_decided() {
        let log: Log = Arc::default();
        let mut pipeline = KeyedPipeline::new();
        let first = submit(&mut pipeline, &log, "one", &["p1"]);
        let second = submit(&mut pipeline, &log, "two", &["p1"]);
        // One stops undecided (the store was unavailable); dropping the
        // release counts as that too.
        drop(first);
        assert_eq!(pipeline.next_done().await, Some("one"));
        drop(second);
        assert_eq!(pipeline.next_done().await, Some("two"));
        assert_eq!(log_of(&log), ["one:p1 after true", "two:p1 after false"]);
    }

    #[tokio::test]
    async fn at_most_the_limit_runs() {
        let log: Log = Arc::default();
        let mut pipeline = KeyedPipeline::new();
        let keys = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
        let mut releases = Vec::new();
        for index in 0..INGEST_BATCHES_IN_FLIGHT_MAX {
            assert!(pipeline.can_accept());
            releases.extend(submit(&mut pipeline, &log, "batch", &keys[index..=index]));
        }
        assert!(!pipeline.can_accept());
        releases.remove(0).send(true).unwrap();
        assert_eq!(pipeline.next_done().await, Some("batch"));
        assert!(pipeline.can_accept());
        for release in releases {
            release.send(true).unwrap();
        }
        let mut rest = 0;
        while pipeline.next_done().await.is_some() {
            rest += 1;
        }
        assert_eq!(rest, INGEST_BATCHES_IN_FLIGHT_MAX - 1);
    }
}
