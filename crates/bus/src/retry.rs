//! How the bus waits before trying again: exponential backoff with jitter
//! ([`backon`]), for the long-running tasks that restart after a failure
//! ([`restart_until_cancelled`]: the ingest subscription, the outbox relay)
//! and for an ingest message whose handler was unavailable
//! ([`ingest_retry_delay`]: JetStream's redelivery delay, and the
//! in-process bus's retry).
//!
//! Backoff, because a failure that outlasts the first retry (a NATS server
//! restarting, a database failing over) is better tried less and less often
//! than at a fixed rate; jitter, because many kiban processes, or many
//! messages, that failed together should not all come back at the same
//! instant and fail together again.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// First pause before a failed bus task (the ingest subscription, the
/// outbox relay) starts again. Short: the usual failure is a reconnect that
/// the client has already made.
pub const RESTART_DELAY_MIN_MS: u64 = 250;

/// Longest pause between two restarts of a bus task: a NATS server down
/// for minutes is tried this often (plus jitter), so work resumes within
/// seconds of its return, and the processes of a deployment do not hammer
/// it while it is down. There is no limit on attempts: the task runs until
/// it is cancelled or meets a failure an operator must fix.
pub const RESTART_DELAY_MAX_MS: u64 = 10_000;

/// A run of a bus task that lasted this long was healthy: after it fails,
/// the backoff starts again at [`RESTART_DELAY_MIN_MS`] rather than where
/// an outage long ago left it.
pub const RESTART_HEALTHY_AFTER_MS: u64 = 60_000;

/// How long an ingest message whose handler reported the store unavailable
/// waits before its second attempt: long enough for a database failover to
/// make progress. Later attempts wait twice as long each time, up to
/// [`INGEST_RETRY_DELAY_MAX_MS`].
pub const INGEST_RETRY_DELAY_MS: u64 = 2_000;

/// Longest wait between two attempts at one ingest message. With the
/// attempts bounded by
/// [`INGEST_MAX_DELIVER`](crate::streams::INGEST_MAX_DELIVER), all of them
/// together span minutes (about 8 without jitter), not hours: a producer
/// with no receipt by then re-sends.
pub const INGEST_RETRY_DELAY_MAX_MS: u64 = 30_000;

/// The restart delays: exponential from [`RESTART_DELAY_MIN_MS`] to
/// [`RESTART_DELAY_MAX_MS`] with jitter, endless.
fn restart_delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(RESTART_DELAY_MIN_MS))
        .with_max_delay(Duration::from_millis(RESTART_DELAY_MAX_MS))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long to wait before delivering an ingest message again after its
/// `attempt`-th delivery (1 for the first) met an unavailable handler:
/// [`INGEST_RETRY_DELAY_MS`], doubling, at most
/// [`INGEST_RETRY_DELAY_MAX_MS`], with jitter.
pub fn ingest_retry_delay(attempt: u32) -> Duration {
    let max = Duration::from_millis(INGEST_RETRY_DELAY_MAX_MS);
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(INGEST_RETRY_DELAY_MS))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1).min(RETRY_DOUBLINGS_MAX) as usize)
        .unwrap_or(max)
}

/// Attempts after which a delay has doubled past any maximum here (2 s
/// doubled 16 times is 36 hours), so later attempts need not step the
/// backoff further.
const RETRY_DOUBLINGS_MAX: u32 = 16;

/// Runs `run` again and again until `cancel` fires, with a backoff pause
/// after each failure: returns `Ok` when a run returns `Ok` (it was
/// cancelled) or `cancel` fires during a pause, and the error of a run when
/// `fatal` says no restart can help. `task` names the task in the log.
pub(crate) async fn restart_until_cancelled<F, Fut>(
    task: &str,
    cancel: &CancellationToken,
    fatal: impl Fn(&Error) -> bool,
    run: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    restart_with(restart_delays, task, cancel, fatal, run).await
}

/// [`restart_until_cancelled`] with the delays of `new_delays`, called again
/// after a healthy run.
async fn restart_with<D, F, Fut>(
    new_delays: impl Fn() -> D,
    task: &str,
    cancel: &CancellationToken,
    fatal: impl Fn(&Error) -> bool,
    mut run: F,
) -> Result<()>
where
    D: Iterator<Item = Duration>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut delays = new_delays();
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let error = match run().await {
            Ok(()) => break,
            Err(error) if fatal(&error) => return Err(error),
            Err(error) => error,
        };
        if started.elapsed() >= Duration::from_millis(RESTART_HEALTHY_AFTER_MS) {
            delays = new_delays();
        }
        let delay = delays
            .next()
            .unwrap_or(Duration::from_millis(RESTART_DELAY_MAX_MS));
        tracing::warn!(%error, task, delay_ms = delay.as_millis(), "bus task failed; restarting");
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_retries_wait_longer_each_time_within_their_bounds() {
        let min = Duration::from_millis(INGEST_RETRY_DELAY_MS);
        let max = Duration::from_millis(INGEST_RETRY_DELAY_MAX_MS);
        // Jitter adds at most the delay itself.
        let first = ingest_retry_delay(1);
        assert!(first >= min && first <= 2 * min, "{first:?}");
        let third = ingest_retry_delay(3);
        assert!(third >= 4 * min && third <= 8 * min, "{third:?}");
        for attempt in [10, 20, u32::MAX] {
            let late = ingest_retry_delay(attempt);
            assert!(
                late >= max && late <= 2 * max,
                "attempt {attempt}: {late:?}"
            );
        }
    }

    #[test]
    fn restart_delays_grow_from_the_minimum_to_the_maximum_and_never_end() {
        let delays: Vec<Duration> = restart_delays().take(100).collect();
        assert_eq!(delays.len(), 100);
        let min = Duration::from_millis(RESTART_DELAY_MIN_MS);
        let max = Duration::from_millis(RESTART_DELAY_MAX_MS);
        assert!(delays[0] >= min && delays[0] <= 2 * min, "{:?}", delays[0]);
        assert!(delays.iter().all(|delay| *delay <= 2 * max));
        assert!(delays[99] >= max);
    }

    /// No pause between runs: the test is about what restarts, not when.
    fn no_delays() -> std::iter::Repeat<Duration> {
        std::iter::repeat(Duration::ZERO)
    }

    #[tokio::test]
    async fn a_failed_run_restarts_until_one_succeeds_and_a_fatal_one_stops() {
        let cancel = CancellationToken::new();
        let mut runs = 0;
        let result = restart_with(
            no_delays,
            "test",
            &cancel,
            |_| false,
            || {
                runs += 1;
                let outcome = if runs < 4 {
                    Err(Error::Unavailable("down".to_owned()))
                } else {
                    Ok(())
                };
                async move { outcome }
            },
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(runs, 4);

        let result = restart_with(
            no_delays,
            "test",
            &cancel,
            |error| matches!(error, Error::Refused(_)),
            || async { Err(Error::Refused("misconfigured".to_owned())) },
        )
        .await;
        assert!(matches!(result, Err(Error::Refused(_))));
    }

    /// Cancelled while a run fails: the pause ends at once, with no
    /// further run, however long the delay.
    #[tokio::test]
    async fn a_cancelled_task_stops_during_its_pause() {
        let cancel = CancellationToken::new();
        let mut runs = 0;
        let result = restart_until_cancelled(
            "test",
            &cancel,
            |_| false,
            || {
                runs += 1;
                cancel.cancel();
                async { Err(Error::Unavailable("down".to_owned())) }
            },
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(runs, 1);
    }
}
