//! `kiban-events`: the event vocabulary of kiban.
//!
//! This crate holds what every other crate agrees on, and nothing that does IO:
//!
//! - [`ids`]: validated identifiers of the care-insurance world (保険者番号,
//!   被保険者番号, 介護保険事業所番号, 医療機関コード). Constructing one is the
//!   only way to get one, so a value of these types is always well-formed.
//! - [`envelope`]: the recorded-event envelope (DESIGN.md decision 1), stream
//!   names, [`envelope::ExpectedVersion`], the actor of an event, and the
//!   canonical byte encoding that the hash chain covers.
//! - [`domain`]: the care workflows as pure deciders (DESIGN.md decision 5):
//!   the [`domain::Decider`] trait, one module per aggregate (certification
//!   application, insured person, care office, insurer, subsidy application),
//!   their events, commands and rejections.
//!
//! Architecture invariant: this crate does no IO, has no clock and depends on
//! neither tokio, sqlx nor async-nats. Time comes in as a value.

pub mod domain;
pub mod envelope;
pub mod ids;
#[cfg(feature = "schema")]
mod schema;

pub use envelope::{
    Actor, EventId, EventType, ExpectedVersion, Hash, NewEvent, Payload, Position, RecordedEvent,
    StreamName, UpdateNotice, Version,
};

pub use domain::{Decider, DecodeError, DomainEvent, Rejection, RejectionCode};
