//! What records a checked message: the [`IngestHandler`] trait (the engine,
//! in production), its [`Verdict`], and [`decide`], which turns a checked
//! message into its receipt for both the NATS consumer and the in-process
//! bus.

use std::future::Future;

use kiban_events::Position;
use kiban_events::ids::InsurerNumber;

use super::message::{Checked, IngestMessage, Receipt};

/// What the handler decided about a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The events are committed (or were already, for a re-sent message).
    Accepted {
        /// Their store positions.
        positions: Vec<Position>,
    },
    /// The message breaks a rule; nothing was stored.
    Rejected {
        /// A stable code (`impossible_transition`, `unknown_kind`, ...).
        code: String,
        /// What is wrong, in words a municipality clerk understands.
        message: String,
    },
}

/// The handler could not decide now (the store is unavailable): the message
/// is left for JetStream to deliver again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler is unavailable: {0}")]
pub struct Unavailable(pub String);

/// What records a valid status message: the engine, in production.
///
/// Must be idempotent by `event_id`: a message handled twice (redelivered
/// after a crash, re-sent by its producer) gives the same [`Verdict`] again
/// and records nothing twice.
pub trait IngestHandler: Send + Sync + 'static {
    /// Records `message` or decides its rejection.
    fn handle(
        &self,
        message: IngestMessage,
    ) -> impl Future<Output = std::result::Result<Verdict, Unavailable>> + Send;
}

/// The receipt for a checked message and how to settle it, or
/// [`Unavailable`]. Shared by the NATS consumer and the in-process bus.
pub(crate) async fn decide<H: IngestHandler>(
    handler: &H,
    checked: Checked,
) -> std::result::Result<(Option<InsurerNumber>, Receipt, bool), Unavailable> {
    match checked {
        Err(refusal) => Ok((refusal.insurer, refusal.receipt, refusal.poison)),
        Ok(message) => {
            let insurer = message.insurer.clone();
            let event_id = message.event_id;
            let receipt = match handler.handle(message).await? {
                Verdict::Accepted { positions } => Receipt::accepted(event_id, positions),
                Verdict::Rejected { code, message } => {
                    Receipt::rejected(Some(event_id), &code, &message)
                }
            };
            Ok((Some(insurer), receipt, false))
        }
    }
}
