//! Several ingest batches in flight at once, never two with a common
//! ordering key.
//!
//! One batch at a time leaves the store idle while a batch's receipts are
//! flushed and its messages acknowledged, and makes each batch wait for its
//! slowest person. With [`INGEST_BATCHES_IN_FLIGHT_MAX`] batches running,
//! those waits overlap. The order of one person's facts is kept: a batch
//! sharing an ordering key with a running batch waits until that batch has
//! finished (receipts out, messages settled) before it starts, and while it
//! waits no further batch is taken.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Most batches handled at once by one ingest consumer. Each batch's
/// messages about different people already run concurrently; a few batches
/// more are enough to keep the store's group commit fed while earlier ones
/// publish receipts and acknowledge.
pub const INGEST_BATCHES_IN_FLIGHT_MAX: usize = 4;

type Work<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Splits a batch into groups of one ordering key each, in arrival order;
/// an item without a key (an invalid message) is a group of its own.
/// Returns the keys too, each once.
pub(crate) fn group_by_key<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> Option<String>,
) -> (Vec<String>, Vec<Vec<T>>) {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut group_of_key: HashMap<String, usize> = HashMap::new();
    for item in items {
        let index = match key(&item) {
            Some(key) => *group_of_key.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            }),
            None => {
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        groups[index].push(item);
    }
    (group_of_key.into_keys().collect(), groups)
}

/// Batches in flight, keyed by the ordering keys they hold.
pub(crate) struct KeyedPipeline<'a, T> {
    running: FuturesUnordered<Work<'a, (Vec<String>, T)>>,
    /// How many running batches hold each key (a batch lists a key once).
    busy: HashMap<String, usize>,
    /// A batch that shares a key with a running one, waiting for it.
    waiting: Option<(Vec<String>, Work<'a, T>)>,
}

impl<'a, T: Send + 'a> KeyedPipeline<'a, T> {
    pub(crate) fn new() -> Self {
        Self {
            running: FuturesUnordered::new(),
            busy: HashMap::new(),
            waiting: None,
        }
    }

    /// Whether another batch may be submitted now.
    pub(crate) fn can_accept(&self) -> bool {
        self.waiting.is_none() && self.running.len() < INGEST_BATCHES_IN_FLIGHT_MAX
    }

    /// Whether nothing runs or waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_none()
    }

    /// Starts `work` for a batch holding `keys` (each listed once), or
    /// parks it until the running batches it shares a key with are done.
    /// Call only when [`can_accept`](Self::can_accept).
    pub(crate) fn submit(&mut self, keys: Vec<String>, work: impl Future<Output = T> + Send + 'a) {
        debug_assert!(self.can_accept());
        let work: Work<'a, T> = Box::pin(work);
        if self.conflicts(&keys) {
            self.waiting = Some((keys, work));
        } else {
            self.start(keys, work);
        }
    }

    /// The next finished batch's output; `None` when nothing runs. A parked
    /// batch starts as soon as it no longer shares a key. Cancel-safe.
    pub(crate) async fn next_done(&mut self) -> Option<T> {
        let (keys, output) = self.running.next().await?;
        for key in keys {
            if let Some(count) = self.busy.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.busy.remove(&key);
                }
            }
        }
        if let Some((keys, _)) = &self.waiting
            && !self.conflicts(keys)
        {
            let (keys, work) = self.waiting.take().expect("checked above");
            self.start(keys, work);
        }
        Some(output)
    }

    /// Forgets the parked batch (it never started): used when the consumer
    /// stops taking work after a failure.
    pub(crate) fn drop_waiting(&mut self) {
        self.waiting = None;
    }

    fn conflicts(&self, keys: &[String]) -> bool {
        keys.iter().any(|key| self.busy.contains_key(key))
    }

    fn start(&mut self, keys: Vec<String>, work: Work<'a, T>) {
        for key in &keys {
            *self.busy.entry(key.clone()).or_default() += 1;
        }
        self.running
            .push(Box::pin(async move { (keys, work.await) }));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    use super::*;

    /// A batch that records when it starts and finishes on a signal.
    fn batch(
        log: &Arc<Mutex<Vec<String>>>,
        name: &'static str,
    ) -> (
        oneshot::Sender<()>,
        impl Future<Output = &'static str> + Send + 'static,
    ) {
        let (release, released) = oneshot::channel::<()>();
        let log = Arc::clone(log);
        (release, async move {
            log.lock().unwrap().push(format!("start {name}"));
            let _ = released.await;
            log.lock().unwrap().push(format!("end {name}"));
            name
        })
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|key| (*key).to_owned()).collect()
    }

    #[tokio::test]
    async fn disjoint_batches_overlap_and_a_shared_key_waits() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut pipeline = KeyedPipeline::new();
        let (release_a, a) = batch(&log, "a");
        let (release_b, b) = batch(&log, "b");
        let (release_c, c) = batch(&log, "c");
        pipeline.submit(keys(&["p1", "p2"]), a);
        pipeline.submit(keys(&["p3"]), b);
        assert!(pipeline.can_accept());
        // Shares p2 with a: parked, and nothing more is taken meanwhile.
        pipeline.submit(keys(&["p2", "p4"]), c);
        assert!(!pipeline.can_accept());

        // b finishes first: c still waits for a.
        release_b.send(()).unwrap();
        let drive = async {
            let first = pipeline.next_done().await;
            assert_eq!(first, Some("b"));
            assert!(!pipeline.can_accept(), "c still waits for a");
            release_a.send(()).unwrap();
            assert_eq!(pipeline.next_done().await, Some("a"));
            // a is done: c has started.
            assert!(pipeline.can_accept());
            release_c.send(()).unwrap();
            assert_eq!(pipeline.next_done().await, Some("c"));
            assert_eq!(pipeline.next_done().await, None);
        };
        drive.await;
        assert!(pipeline.is_idle());
        assert_eq!(
            *log.lock().unwrap(),
            ["start a", "start b", "end b", "end a", "start c", "end c"],
            "c started only after a finished"
        );
    }

    #[tokio::test]
    async fn at_most_the_limit_runs() {
        let mut pipeline = KeyedPipeline::new();
        let mut releases = Vec::new();
        for index in 0..INGEST_BATCHES_IN_FLIGHT_MAX {
            assert!(pipeline.can_accept());
            let (release, released) = oneshot::channel::<()>();
            releases.push(release);
            pipeline.submit(vec![format!("p{index}")], async move {
                let _ = released.await;
                index
            });
        }
        assert!(!pipeline.can_accept());
        releases.remove(0).send(()).unwrap();
        assert_eq!(pipeline.next_done().await, Some(0));
        assert!(pipeline.can_accept());
        pipeline.drop_waiting();
        for release in releases {
            release.send(()).unwrap();
        }
        let mut rest = Vec::new();
        while let Some(index) = pipeline.next_done().await {
            rest.push(index);
        }
        rest.sort_unstable();
        assert_eq!(rest, (1..INGEST_BATCHES_IN_FLIGHT_MAX).collect::<Vec<_>>());
    }
}
