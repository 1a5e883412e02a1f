//! The engine as the ingest handler: [`EngineHandler`] hands each valid
//! status message to `kiban_engine::Engine::ingest`, acting for the
//! message's insurer — which [`crate::ingest::check_message`] has checked
//! against the subject, which NATS permissions tie to the sending user.

use std::sync::Arc;

use kiban_engine::Engine;
use kiban_engine::ingest::{IngestOutcome, MunicipalMessage};
use kiban_store::EventStore;

use crate::ingest::{IngestHandler, IngestMessage, Unavailable, Verdict};

/// The clock a handler checks messages with ("not in the future").
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// [`IngestHandler`] over the engine, with the platform's clock (or
/// another, for a simulation that runs in simulated time).
pub struct EngineHandler<S> {
    engine: Arc<Engine<S>>,
    clock: Clock,
}

impl<S> std::fmt::Debug for EngineHandler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandler").finish_non_exhaustive()
    }
}

impl<S> EngineHandler<S> {
    /// A handler executing messages through `engine`.
    pub fn new(engine: Arc<Engine<S>>) -> Self {
        Self::with_clock(engine, Arc::new(chrono::Utc::now))
    }

    /// The same with another clock.
    pub fn with_clock(engine: Arc<Engine<S>>, clock: Clock) -> Self {
        Self { engine, clock }
    }
}

/// The engine's reading of a checked message (the same fields).
pub fn to_municipal(message: IngestMessage) -> MunicipalMessage {
    MunicipalMessage {
        event_id: *message.event_id.as_uuid(),
        kind: message.kind.to_string(),
        insurer: message.insurer,
        insured: message.insured,
        application: message.application,
        occurred_at: message.occurred_at,
        body: message.body,
    }
}

impl<S: EventStore + 'static> IngestHandler for EngineHandler<S> {
    async fn handle(&self, message: IngestMessage) -> Result<Verdict, Unavailable> {
        let sender = message.insurer.clone();
        let outcome = self
            .engine
            .ingest(to_municipal(message), &sender, (self.clock)())
            .await
            .map_err(|error| Unavailable(error.to_string()))?;
        Ok(match outcome {
            IngestOutcome::Accepted { positions, .. } => Verdict::Accepted { positions },
            IngestOutcome::Rejected(rejection) => Verdict::Rejected {
                code: rejection.code,
                message: rejection.message,
            },
        })
    }
}
