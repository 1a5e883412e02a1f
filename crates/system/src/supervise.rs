//! Supervision of the system's background parts: each runs in a task the
//! system owns; a part that fails is restarted with jittered exponential
//! backoff (`backon`) where that is safe, a bounded number of times in a
//! row, and its [`PartHealth`] says what happened.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first wait before a failed part is restarted: long enough for a
/// NATS or database blip to pass, short enough that little is queued.
pub const RESTART_DELAY_MIN_MS: u64 = 500;

/// The longest wait between two restarts of a part.
pub const RESTART_DELAY_MAX_MS: u64 = 30_000;

/// Restarts in a row after which a part is given up on (reported failed,
/// which stops `kiban serve`): with the delays above, about two minutes of
/// a dependency being away.
pub const RESTARTS_IN_A_ROW_MAX: usize = 8;

/// A part that ran this long before failing was healthy: its next failure
/// starts a new series of restarts instead of counting towards the last.
pub const HEALTHY_RUN_S: u64 = 60;

/// How a part is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartHealth {
    /// Running.
    Running,
    /// Failed and waiting to be restarted: the restarts in a row so far and
    /// the last error.
    Restarting { restarts: usize, error: String },
    /// Stopped on its own without an error (or at shutdown).
    Stopped,
    /// Failed for good: the last error.
    Failed(String),
}

/// The health of every part, shared between the supervisors and the
/// [`crate::System`].
#[derive(Debug, Clone, Default)]
pub struct Health {
    // A std lock: held only to copy or replace an entry, never across an
    // await.
    parts: Arc<Mutex<BTreeMap<&'static str, PartHealth>>>,
}

impl Health {
    /// Records how `part` is.
    pub fn set(&self, part: &'static str, health: PartHealth) {
        self.parts
            .lock()
            .expect("the lock is never poisoned: nothing panics while holding it")
            .insert(part, health);
    }

    /// Every part and how it is, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, PartHealth)> {
        self.parts
            .lock()
            .expect("the lock is never poisoned: nothing panics while holding it")
            .iter()
            .map(|(name, health)| (*name, health.clone()))
            .collect()
    }
}

/// The backoff of a part that may be restarted.
pub fn restart_policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(RESTART_DELAY_MIN_MS))
        .with_max_delay(Duration::from_millis(RESTART_DELAY_MAX_MS))
        .with_max_times(RESTARTS_IN_A_ROW_MAX)
        .with_jitter()
}

/// The "backoff" of a part that must not be restarted: none.
pub fn no_restart() -> ExponentialBuilder {
    ExponentialBuilder::default().with_max_times(0)
}

/// Runs the part `make` starts until it stops without an error, `cancel`
/// fires, or it failed more than `policy` allows in a row. A part that
/// reports [`kiban_bus::Error::Closed`] has nothing left to read: it stops.
pub async fn supervise<F, Fut, E>(
    name: &'static str,
    policy: ExponentialBuilder,
    health: &Health,
    cancel: &CancellationToken,
    mut make: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let mut backoff = policy.build();
    let mut restarts = 0;
    loop {
        health.set(name, PartHealth::Running);
        let started = Instant::now();
        let error: anyhow::Error = match make(cancel.clone()).await {
            Ok(()) => break,
            Err(error) => error.into(),
        };
        if cancel.is_cancelled() || is_closed(&error) {
            break;
        }
        if started.elapsed() >= Duration::from_secs(HEALTHY_RUN_S) {
            backoff = policy.build();
            restarts = 0;
        }
        let Some(delay) = backoff.next() else {
            tracing::error!(part = name, error = %format!("{error:#}"), "failed; not restarted");
            health.set(name, PartHealth::Failed(format!("{error:#}")));
            return Err(error);
        };
        restarts += 1;
        tracing::warn!(
            part = name,
            restarts,
            delay_ms = delay.as_millis() as u64,
            error = %format!("{error:#}"),
            "failed; restarting"
        );
        health.set(
            name,
            PartHealth::Restarting {
                restarts,
                error: format!("{error:#}"),
            },
        );
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    health.set(name, PartHealth::Stopped);
    Ok(())
}

fn is_closed(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<kiban_bus::Error>(),
        Some(kiban_bus::Error::Closed)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn failing_then_ok(
        failures: usize,
        policy: ExponentialBuilder,
    ) -> (anyhow::Result<()>, usize, Health) {
        let calls = Arc::new(AtomicUsize::new(0));
        let health = Health::default();
        let cancel = CancellationToken::new();
        let counted = Arc::clone(&calls);
        let result = supervise("part", policy, &health, &cancel, move |_| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < failures {
                    anyhow::bail!("failure {call}")
                }
                Ok(())
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst), health)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_part_is_restarted_until_it_runs() {
        let (result, calls, health) = failing_then_ok(3, restart_policy()).await;
        assert!(result.is_ok());
        assert_eq!(calls, 4);
        assert_eq!(health.snapshot(), vec![("part", PartHealth::Stopped)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_keeps_failing_is_given_up_on_and_reported() {
        let (result, calls, health) = failing_then_ok(usize::MAX, restart_policy()).await;
        assert!(result.is_err());
        assert_eq!(calls, RESTARTS_IN_A_ROW_MAX + 1);
        let [(_, PartHealth::Failed(error))] = &health.snapshot()[..] else {
            panic!("not failed: {:?}", health.snapshot());
        };
        assert!(error.contains("failure"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_must_not_restart_fails_at_once() {
        let (result, calls, _) = failing_then_ok(1, no_restart()).await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_bus_stops_the_part_without_restart() {
        let health = Health::default();
        let cancel = CancellationToken::new();
        let result = supervise("ingest", restart_policy(), &health, &cancel, |_| async {
            Err::<(), _>(kiban_bus::Error::Closed)
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(health.snapshot(), vec![("ingest", PartHealth::Stopped)]);
    }
}
