//! The given / when / then helper for decider tests (after cqrs-es
//! `TestFramework`).
//!
//! ```
//! use kiban_events::domain::testing::given;
//! use kiban_events::domain::insurer::{Insurer, InsurerCommand};
//! use kiban_events::domain::RejectionCode;
//! use chrono::{NaiveDate, TimeZone, Utc};
//!
//! given::<Insurer>([])
//!     .when(
//!         InsurerCommand::CompleteStandardisation {
//!             completed_on: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
//!         },
//!         Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap(),
//!     )
//!     .then_rejected(RejectionCode::InsurerNotOnboarded);
//! ```
//!
//! Besides the expectation, every `then` checks what any accepted event must
//! satisfy: it survives `to_payload` / `from_recorded` unchanged, its event
//! type is a valid envelope event type, and folding it into the state does
//! not panic.

use chrono::{DateTime, Utc};

use super::{Decider, DomainEvent, Rejection, RejectionCode};

/// The history of an aggregate before the command.
pub struct Given<D: Decider> {
    state: D::State,
}

/// Starts a test from the events already recorded on the stream.
pub fn given<D: Decider>(events: impl IntoIterator<Item = D::Event>) -> Given<D> {
    let events: Vec<D::Event> = events.into_iter().collect();
    events.iter().for_each(assert_round_trips);
    Given {
        state: D::replay(&events),
    }
}

impl<D: Decider> Given<D> {
    /// Decides `command` at `now` against the history.
    pub fn when(self, command: D::Command, now: DateTime<Utc>) -> When<D> {
        let result = D::decide(&self.state, &command, now);
        When {
            state: self.state,
            command: format!("{command:?}"),
            result,
        }
    }

    /// The state folded from the history.
    pub fn state(&self) -> &D::State {
        &self.state
    }
}

/// The outcome of a decision, to check.
pub struct When<D: Decider> {
    state: D::State,
    command: String,
    result: Result<Vec<D::Event>, Rejection>,
}

impl<D: Decider> When<D> {
    /// Asserts the command was accepted with exactly `expected`; returns the
    /// state after the new events.
    #[track_caller]
    pub fn then(self, expected: Vec<D::Event>) -> D::State {
        let (events, state) = self.then_accepted();
        assert_eq!(events, expected, "events differ from the expectation");
        state
    }

    /// Asserts the command was accepted; returns the events and the state
    /// after them, for tests that check parts of them.
    #[track_caller]
    pub fn then_accepted(self) -> (Vec<D::Event>, D::State) {
        match self.result {
            Ok(events) => {
                events.iter().for_each(assert_round_trips);
                let state = events
                    .iter()
                    .fold(self.state, |state, event| D::evolve(state, event));
                (events, state)
            }
            Err(rejection) => panic!(
                "expected {} to be accepted, but it was rejected: {rejection}",
                self.command
            ),
        }
    }

    /// Asserts the command was rejected with `code` and a message in both
    /// languages; returns the rejection.
    #[track_caller]
    pub fn then_rejected(self, code: RejectionCode) -> Rejection {
        match self.result {
            Ok(events) => panic!(
                "expected {} to be rejected with {code}, but it was accepted: {events:?}",
                self.command
            ),
            Err(rejection) => {
                assert_eq!(rejection.code(), code, "wrong rejection: {rejection}");
                assert!(!rejection.message().is_empty(), "empty message");
                assert!(!rejection.message_ja().is_empty(), "empty Japanese message");
                rejection
            }
        }
    }
}

/// Asserts `event` comes back unchanged from its envelope form.
#[track_caller]
pub fn assert_round_trips<E: DomainEvent>(event: &E) {
    let payload = event.to_payload();
    let back = E::from_recorded(event.event_type(), event.schema_version(), &payload)
        .unwrap_or_else(|e| panic!("{} does not read back: {e}", event.event_type()));
    assert_eq!(
        &back,
        event,
        "{} changed in a round trip",
        event.event_type()
    );
    assert_eq!(
        event.envelope_event_type().as_str(),
        event.event_type(),
        "event type is not a valid envelope event type"
    );
}
