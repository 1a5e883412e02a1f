//! [`Engine`]: load → decide → append, with retries on conflict.

use chrono::{DateTime, Utc};
use kiban_events::domain::{Decider, DecodeError, DomainEvent, Rejection};
use kiban_events::envelope::{Actor, EventId, ExpectedVersion, RecordedEvent, StreamName, Version};
use kiban_store::{EventStore, READ_EVENTS_MAX};
use uuid::Uuid;

use crate::cache::{STATE_CACHE_CAPACITY_DEFAULT, StateCache};

/// How many times a command is decided again after losing a race for its
/// stream. Races on one stream are rare (one municipality, one application);
/// five losses in a row mean something is hammering the stream, and the
/// caller should hear about it rather than spin.
pub const CONFLICT_RETRIES_MAX: usize = 5;

/// Who asks, when, and under which ids: everything about a command that is
/// not the command itself.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The idempotency key. The first event of the decision gets this id;
    /// further events get ids derived from it ([`derived_event_id`]), so the
    /// same command always produces the same event ids.
    pub command_id: EventId,
    /// Who causes the events; checked against each event's emitters.
    pub actor: Actor,
    /// The conversation this command belongs to.
    pub correlation_id: Uuid,
    /// The message that caused this command, if any.
    pub causation_id: Option<Uuid>,
    /// When the facts happened, by the producer's clock (the events'
    /// `occurred_at`).
    pub occurred_at: DateTime<Utc>,
    /// The time the decision is made at: the rules' "today".
    pub now: DateTime<Utc>,
}

impl CommandContext {
    /// A context for a command caused by nothing else: correlation = the
    /// command id, and the facts happen `now`.
    pub fn new(command_id: EventId, actor: Actor, now: DateTime<Utc>) -> Self {
        Self {
            command_id,
            actor,
            correlation_id: *command_id.as_uuid(),
            causation_id: None,
            occurred_at: now,
            now,
        }
    }
}

/// The id of the `index`-th event (from 0) of the command `command_id`.
/// Index 0 is the command id itself; later ones are UUID v5 under it.
pub fn derived_event_id(command_id: &EventId, index: usize) -> EventId {
    if index == 0 {
        *command_id
    } else {
        EventId::deterministic(command_id.as_uuid(), format!("event-{index}").as_bytes())
    }
}

/// What executing a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The events recorded for the command (now, or earlier when `replayed`).
    /// Empty when the decision was to record nothing.
    pub events: Vec<RecordedEvent>,
    /// True when the command had been executed before and these are the
    /// events recorded then: re-sending a command is harmless.
    pub replayed: bool,
}

impl Executed {
    /// Positions of the recorded events.
    pub fn positions(&self) -> Vec<u64> {
        self.events.iter().map(|event| event.position).collect()
    }
}

/// Why a command was not executed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The decider refused the command: a business rule. Final; the reason
    /// goes back to whoever sent the command.
    #[error("rejected ({}): {}", .0.code(), .0.message())]
    Rejected(Rejection),
    /// The actor may not cause this event (an office recording a decision).
    #[error("{actor} may not record {event_type}")]
    NotPermitted { actor: String, event_type: String },
    /// The command id was used before for an event with other content.
    #[error("event id {0} was already used for a different event")]
    DuplicateEventId(EventId),
    /// The stream kept changing under the command.
    #[error("stream {stream} kept changing; gave up after {attempts} attempts")]
    Contention { stream: StreamName, attempts: usize },
    /// A stored event could not be read back as a domain event: a bug or a
    /// missing upcaster, never the caller's fault.
    #[error("event at position {position} cannot be read: {source}")]
    Corrupted {
        position: u64,
        #[source]
        source: DecodeError,
    },
    /// The store failed (unavailable, closed, not the writer). Transient:
    /// the command may be retried as it is.
    #[error(transparent)]
    Store(#[from] kiban_store::Error),
}

/// Executes commands against one store.
pub struct Engine<S> {
    store: S,
    cache: StateCache,
    /// The per-person keys that seal personal fields on ingest; without
    /// them a message carrying plaintext personal data is refused.
    keys: Option<kiban_store::PersonKeys>,
}

impl<S: EventStore> Engine<S> {
    /// An engine over `store` with the default cache capacity.
    pub fn new(store: S) -> Self {
        Self::with_cache_capacity(store, STATE_CACHE_CAPACITY_DEFAULT)
    }

    /// An engine over `store` keeping at most `capacity` aggregate states.
    pub fn with_cache_capacity(store: S, capacity: usize) -> Self {
        Self {
            store,
            cache: StateCache::new(capacity),
            keys: None,
        }
    }

    /// Seals personal fields with `keys` (crypto-shredding, docs/audit.md).
    pub fn with_person_keys(mut self, keys: kiban_store::PersonKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The per-person keys, when sealing is enabled.
    pub fn person_keys(&self) -> Option<&kiban_store::PersonKeys> {
        self.keys.as_ref()
    }

    /// The store this engine appends to.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Number of aggregate states cached.
    pub fn cached_states(&self) -> usize {
        self.cache.len()
    }

    /// The current state and version of `stream` as aggregate `D`
    /// (`D::State::default()` and 0 for a stream that does not exist).
    ///
    /// Current as of the store, not of this engine: a cached state is
    /// caught up with what the store holds after its version (one indexed
    /// read, empty unless the stream moved; skipped when this process is
    /// the writer and its writer's version of the stream is the cached
    /// one, [`Engine::is_current`]), because another process may
    /// have appended to the stream — an API process through the writer's
    /// append service, or the writer while this process is an API process
    /// (docs/deploy.md "Each process's state cache"). Callers act on the
    /// answer (ingest looks up a person's certification in force), so a
    /// stale state here would be a wrong decision that no expected version
    /// catches.
    pub async fn load<D>(&self, stream: &StreamName) -> Result<(D::State, Version), EngineError>
    where
        D: Decider,
        D::State: Send + Sync + 'static,
    {
        let (state, version, cached) = self.load_noting_cache::<D>(stream).await?;
        if !cached || self.is_current(stream, version) {
            return Ok((state, version));
        }
        let (state, version, _) = self.catch_up::<D>(stream, state, version).await?;
        Ok((state, version))
    }

    /// Whether a state of `stream` at `version` is known to be current
    /// without reading: this process's store is the writer and its last
    /// commit left the stream at `version` (nobody else appends while it
    /// is the writer; [`kiban_store::Store::writer_version`]). Elsewhere (an
    /// API process, a standby) or for a stream the writer no longer
    /// remembers, the store is read.
    fn is_current(&self, stream: &StreamName, version: Version) -> bool {
        self.store.writer_version(stream) == Some(version)
    }

    /// Folds what the store holds after `version` onto the cached `state`,
    /// caches the result when the stream moved, and says whether it did.
    async fn catch_up<D>(
        &self,
        stream: &StreamName,
        state: D::State,
        version: Version,
    ) -> Result<(D::State, Version, bool), EngineError>
    where
        D: Decider,
        D::State: Send + Sync + 'static,
    {
        let (state, caught_up) = self.fold_from_store::<D>(stream, state, version).await?;
        let moved = caught_up != version;
        if moved {
            self.cache.put(stream.clone(), caught_up, state.clone());
        }
        Ok((state, caught_up, moved))
    }

    /// [`Engine::load`], and whether the state came from the cache.
    async fn load_noting_cache<D>(
        &self,
        stream: &StreamName,
    ) -> Result<(D::State, Version, bool), EngineError>
    where
        D: Decider,
        D::State: Send + Sync + 'static,
    {
        if let Some((version, state)) = self.cache.get::<D::State>(stream) {
            return Ok((state, version, true));
        }
        let (state, version) = self
            .fold_from_store::<D>(stream, D::State::default(), 0)
            .await?;
        self.cache.put(stream.clone(), version, state.clone());
        Ok((state, version, false))
    }

    /// Reads `stream` after `version` and folds it onto `state`.
    pub(crate) async fn fold_from_store<D>(
        &self,
        stream: &StreamName,
        mut state: D::State,
        mut version: Version,
    ) -> Result<(D::State, Version), EngineError>
    where
        D: Decider,
    {
        loop {
            let page = self
                .store
                .read_stream(stream, version + 1, READ_EVENTS_MAX)
                .await?;
            let full = page.len() == READ_EVENTS_MAX;
            for recorded in &page {
                let event = decode::<D>(recorded)?;
                state = D::evolve(state, &event);
                version = recorded.version;
            }
            if !full {
                return Ok((state, version));
            }
        }
    }

    /// Decides `command` on `stream` as aggregate `D` and records the result.
    ///
    /// Idempotent on `context.command_id`: when the command was executed
    /// before, the events recorded then are returned with `replayed` set,
    /// whether the decider would now accept it again or not.
    pub async fn execute<D>(
        &self,
        stream: &StreamName,
        command: &D::Command,
        context: &CommandContext,
    ) -> Result<Executed, EngineError>
    where
        D: Decider,
        D::State: Send + Sync + 'static,
    {
        for _attempt in 0..=CONFLICT_RETRIES_MAX {
            let (mut state, mut version, cached) = self.load_noting_cache::<D>(stream).await?;
            let mut decision = D::decide(&state, command, context.now);
            // A cached state is behind the store when another process
            // appended to the stream (the API processes and the writer of a
            // deployment each have an engine; docs/deploy.md). An accepted
            // decision finds that out by its expected version; a rejection
            // or a decision to record nothing would not, so they are made
            // again on the state caught up from the store.
            let recorded_something = matches!(&decision, Ok(events) if !events.is_empty());
            if cached && !recorded_something && !self.is_current(stream, version) {
                let moved;
                (state, version, moved) = self.catch_up::<D>(stream, state, version).await?;
                if moved {
                    decision = D::decide(&state, command, context.now);
                }
            }
            let events = match decision {
                Ok(events) => events,
                Err(rejection) => {
                    return match self.find_recorded(stream, &context.command_id).await? {
                        Some(executed) => Ok(executed),
                        None => Err(EngineError::Rejected(rejection)),
                    };
                }
            };
            if events.is_empty() {
                return Ok(Executed {
                    events: Vec::new(),
                    replayed: false,
                });
            }
            check_emitters(&events, &context.actor)?;
            let new_events = events
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    event.to_new_event(
                        derived_event_id(&context.command_id, index),
                        context.occurred_at,
                        context.actor.clone(),
                        context.correlation_id,
                        context.causation_id,
                    )
                })
                .collect();
            match self
                .store
                .append(stream, ExpectedVersion::Exact(version), new_events)
                .await
            {
                Ok(result) => {
                    let replayed = result.next_expected_version <= version;
                    if replayed {
                        // The store recognised the ids: the state in the cache
                        // may be behind what the store holds.
                        self.cache.forget(stream);
                    } else {
                        let state = events
                            .iter()
                            .fold(state, |state, event| D::evolve(state, event));
                        self.cache
                            .put(stream.clone(), result.next_expected_version, state);
                    }
                    return Ok(Executed {
                        events: result.events,
                        replayed,
                    });
                }
                Err(kiban_store::Error::Conflict { .. }) => {
                    self.cache.forget(stream);
                    tracing::debug!(%stream, "conflict; deciding again on the new state");
                }
                Err(kiban_store::Error::DuplicateEventId { event_id }) => {
                    return Err(EngineError::DuplicateEventId(event_id));
                }
                Err(error) => {
                    self.cache.forget(stream);
                    return Err(error.into());
                }
            }
        }
        Err(EngineError::Contention {
            stream: stream.clone(),
            attempts: CONFLICT_RETRIES_MAX + 1,
        })
    }

    /// The events a command with `command_id` recorded on `stream`, if it
    /// ran before (as `replayed`). Only asked after a rejection or a
    /// duplicate id, so the scan of the stream is off the common path;
    /// streams are short (tens of events). The API asks it when the store
    /// refuses a retried command's ids as [`EngineError::DuplicateEventId`]
    /// after checking that the retry is the same command (its digest).
    pub async fn find_recorded(
        &self,
        stream: &StreamName,
        command_id: &EventId,
    ) -> Result<Option<Executed>, EngineError> {
        let mut from = 1;
        let mut found: Vec<RecordedEvent> = Vec::new();
        loop {
            let page = self
                .store
                .read_stream(stream, from, READ_EVENTS_MAX)
                .await?;
            let full = page.len() == READ_EVENTS_MAX;
            for event in page {
                from = event.version + 1;
                // The command's events are its id, then the ids derived from
                // it in order: look for the next one expected.
                if event.event_id == derived_event_id(command_id, found.len()) {
                    found.push(event);
                }
            }
            if !full {
                break;
            }
        }
        Ok((!found.is_empty()).then_some(Executed {
            events: found,
            replayed: true,
        }))
    }
}

fn decode<D: Decider>(recorded: &RecordedEvent) -> Result<D::Event, EngineError> {
    D::Event::from_recorded(
        recorded.event_type.as_str(),
        recorded.schema_version,
        &recorded.payload,
    )
    .map_err(|source| EngineError::Corrupted {
        position: recorded.position,
        source,
    })
}

fn check_emitters<E: DomainEvent>(events: &[E], actor: &Actor) -> Result<(), EngineError> {
    match events.iter().find(|event| !event.admits_actor(actor)) {
        Some(event) => Err(EngineError::NotPermitted {
            actor: actor.to_string(),
            event_type: event.event_type().to_owned(),
        }),
        None => Ok(()),
    }
}
