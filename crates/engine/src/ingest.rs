//! A municipality's status message and its translation into commands.
//!
//! Municipalities (保険者) report what happened as status messages. Each one
//! is a command to record that fact: it names the fact by `kind` (the event
//! type it becomes, as listed in `docs/events.md`), identifies the aggregate
//! (`insurer`, and `insured` / `application` where the fact concerns a
//! person or one certification application), and carries the fact's own
//! fields in `body`. The engine looks up what the rules need from elsewhere
//! (the person's current certification for a renewal), decides, and records —
//! or rejects with a stable code.
//!
//! Personal fields arrive as plaintext (`{"plain": ...}`) and are sealed
//! with the person's key before the command is decided (`personal.rs`).
//!
//! Process manager: a recorded `certification.decided` with a validity is
//! also recorded on the person (`insured.certification_recorded`), under an
//! event id derived from the message's, so a retry never records it twice.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kiban_events::domain::DomainEvent;
use kiban_events::domain::certification::{
    CertificationApplication, CertificationCommand, CertificationEvent, CurrentCertification,
    certification_stream,
};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, InsurerState, insurer_stream};
use kiban_events::envelope::{Actor, EventId, Position, StreamName};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_store::EventStore;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::engine::{CommandContext, Engine, EngineError, Executed, derived_event_id};

/// How far a message's `occurred_at` may be ahead of the platform's clock.
/// Municipal clocks drift a little; a fact from further in the future is a
/// producer bug and would let a rule be checked against a day not yet come.
pub const OCCURRED_AT_FUTURE_SKEW_MAX_SECONDS: i64 = 300;

/// A municipality's status message, as `docs/integration.md` describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MunicipalMessage {
    /// The producer's event id: the idempotency key (and `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// What happened: an event type of `docs/events.md`.
    pub kind: String,
    /// The reporting insurer; must match the sender.
    pub insurer: InsurerNumber,
    /// The insured person, for facts about a person or an application.
    #[serde(default)]
    pub insured: Option<InsuredNumber>,
    /// The application's sequence number, for facts about an application.
    #[serde(default)]
    pub application: Option<u32>,
    /// When it happened, by the municipality's clock; the rules are checked
    /// as of this time.
    pub occurred_at: DateTime<Utc>,
    /// The fact's fields.
    #[serde(default)]
    pub body: Map<String, Value>,
}

/// A message that was not recorded: a stable code for machines, a message
/// for people. Final: re-sending the same message gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRejection {
    /// Stable snake_case code (`docs/integration.md` lists them).
    pub code: String,
    /// What is wrong and what to fix, in English.
    pub message: String,
}

impl IngestRejection {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The outcome of ingesting one message.
#[derive(Debug)]
pub enum IngestOutcome {
    /// Recorded (now, or earlier when `replayed`): the positions of its events.
    Accepted {
        positions: Vec<Position>,
        replayed: bool,
    },
    /// Not recorded, and never will be as it is.
    Rejected(IngestRejection),
}

/// What a message kind becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A certification-application command (needs `insured` and `application`).
    Certification(&'static str),
    /// An insured-person command (needs `insured`).
    Insured(&'static str),
    /// An insurer-rollout command.
    Insurer(&'static str),
}

/// The rejection codes of the engine's ingest with their meaning (the
/// workflow rules' codes are `RejectionCode`s; the transport's are
/// kiban-bus's). Receipts carry them; docs/asyncapi.json lists them.
pub const INGEST_REJECTION_CODES: &[(&str, &str)] = &[
    (
        "missing_field",
        "The kind needs `insured` (and, for a certification application, `application`) in the envelope.",
    ),
    (
        "invalid_body",
        "`body` does not have the fields the kind needs: one is missing, unknown, of the wrong type, or supplied by kiban (the message names it).",
    ),
    (
        "occurred_in_future",
        "`occurred_at` is more than 5 minutes ahead of the platform's clock.",
    ),
    (
        "occurred_too_long_ago",
        "`occurred_at` lies more than two years before the platform's clock and the insurer has no open back-fill: load history between insurer.backfill_started and insurer.backfill_completed.",
    ),
    (
        "not_permitted",
        "A municipality may not cause this event (or not for this insurer).",
    ),
    (
        "duplicate_event_id",
        "This event_id was already used for a different fact; a fixed message needs a new event_id.",
    ),
    (
        "personal_field_not_plain",
        "A personal field was sent as a bare string; send {\"plain\": \"...\"}.",
    ),
    (
        "person_forgotten",
        "The person was forgotten (本人情報の消去); nothing personal is recorded for them again.",
    ),
    (
        "sealing_unavailable",
        "This kiban keeps no person keys, so it accepts no personal fields.",
    ),
];

/// The kinds a municipality may report, and the command variant each becomes.
pub const MUNICIPAL_KINDS: &[&str] = &[
    "certification.filed",
    "certification.investigation_scheduled",
    "certification.investigation_completed",
    "certification.opinion_requested",
    "certification.opinion_received",
    "certification.primary_judgment_recorded",
    "certification.secondary_judgment_recorded",
    "certification.decided",
    "certification.extension_notified",
    "certification.withdrawn",
    "certification.rejected",
    "insured.copayment_certificate_issued",
    "insured.cost_limit_certificate_issued",
    "insured.care_plan_office_registered",
    "insured.moved_house",
    "insured.home_modification_applied",
    "insured.home_modification_work_recorded",
    "insured.equipment_purchase_recorded",
    "insurer.standardisation_completed",
    "insurer.data_transmission_completed",
    "insurer.backfill_started",
    "insurer.backfill_completed",
];

/// The fields of `certification.filed`'s command that the engine supplies:
/// from the envelope (`insurer`, `insured`, `application` as `seq`) and its
/// own lookup (the person's current certification). A body carrying one is
/// refused (`invalid_body`), and the schema of the body leaves them out.
const FILING_SUPPLIED_FIELDS: [&str; 4] = ["insurer", "insured", "seq", "current_certification"];

fn target(kind: &str) -> Option<Target> {
    use Target::*;
    Some(match kind {
        "certification.filed" => Certification("file_application"),
        "certification.investigation_scheduled" => Certification("schedule_investigation"),
        "certification.investigation_completed" => Certification("complete_investigation"),
        "certification.opinion_requested" => Certification("request_opinion"),
        "certification.opinion_received" => Certification("receive_opinion"),
        "certification.primary_judgment_recorded" => Certification("record_primary_judgment"),
        "certification.secondary_judgment_recorded" => Certification("record_secondary_judgment"),
        "certification.decided" => Certification("decide"),
        "certification.extension_notified" => Certification("notify_extension"),
        "certification.withdrawn" => Certification("withdraw"),
        "certification.rejected" => Certification("reject"),
        "insured.copayment_certificate_issued" => Insured("issue_copayment_certificate"),
        "insured.cost_limit_certificate_issued" => Insured("issue_cost_limit_certificate"),
        "insured.care_plan_office_registered" => Insured("register_care_plan_office"),
        "insured.moved_house" => Insured("record_move"),
        "insured.home_modification_applied" => Insured("apply_for_home_modification"),
        "insured.home_modification_work_recorded" => Insured("record_home_modification_work"),
        "insured.equipment_purchase_recorded" => Insured("record_equipment_purchase"),
        "insurer.standardisation_completed" => Insurer("complete_standardisation"),
        "insurer.data_transmission_completed" => Insurer("complete_data_transmission"),
        "insurer.backfill_started" => Insurer("start_backfill"),
        "insurer.backfill_completed" => Insurer("complete_backfill"),
        _ => return None,
    })
}

/// Builds the externally tagged JSON of a command variant from the body plus
/// fields the envelope supplies, and deserialises it.
fn command_from<C: serde::de::DeserializeOwned>(
    variant: &str,
    mut body: Map<String, Value>,
    injected: &[(&str, Value)],
) -> Result<C, IngestRejection> {
    for (key, value) in injected {
        if body.contains_key(*key) {
            return Err(IngestRejection::new(
                "invalid_body",
                format!("`{key}` is taken from the message envelope; remove it from `body`"),
            ));
        }
        body.insert((*key).to_owned(), value.clone());
    }
    let mut tagged = Map::new();
    tagged.insert(variant.to_owned(), Value::Object(body));
    serde_json::from_value(Value::Object(tagged))
        .map_err(|error| IngestRejection::new("invalid_body", format!("body: {error}")))
}

impl<S: EventStore> Engine<S> {
    /// Validates, translates and executes a municipality's message, acting
    /// for `sender` (the insurer the transport authenticated). `now` is the
    /// platform's clock. `Err` is transient (the store failed): the message
    /// may be retried as it is; everything final is an [`IngestOutcome`].
    pub async fn ingest(
        &self,
        message: MunicipalMessage,
        sender: &InsurerNumber,
        now: DateTime<Utc>,
    ) -> Result<IngestOutcome, EngineError> {
        match self.try_ingest(message, sender, now).await {
            Ok(executed) => Ok(IngestOutcome::Accepted {
                positions: executed.positions(),
                replayed: executed.replayed,
            }),
            Err(Failure::Rejected(rejection)) => Ok(IngestOutcome::Rejected(rejection)),
            Err(Failure::Engine(error)) => match rejection_for(&error) {
                Some(rejection) => Ok(IngestOutcome::Rejected(rejection)),
                None => Err(error),
            },
        }
    }

    async fn try_ingest(
        &self,
        message: MunicipalMessage,
        sender: &InsurerNumber,
        now: DateTime<Utc>,
    ) -> Result<Executed, Failure> {
        if &message.insurer != sender {
            return Err(reject(
                "insurer_mismatch",
                format!(
                    "message is for insurer {} but was sent by {sender}",
                    message.insurer
                ),
            ));
        }
        if message.occurred_at > now + Duration::seconds(OCCURRED_AT_FUTURE_SKEW_MAX_SECONDS) {
            return Err(reject(
                "occurred_in_future",
                format!("occurred_at {} is in the future", message.occurred_at),
            ));
        }
        let command_id = EventId::from_caller(message.event_id).ok_or_else(|| {
            reject(
                "invalid_field",
                format!(
                    "event_id must be a UUID of version 7 (or 4); {} is of version {}",
                    message.event_id,
                    message.event_id.get_version_num()
                ),
            )
        })?;
        let context = CommandContext {
            command_id,
            actor: Actor::Insurer(message.insurer.clone()),
            correlation_id: message.event_id,
            causation_id: None,
            occurred_at: message.occurred_at,
            now: message.occurred_at,
        };
        let Some(target) = target(&message.kind) else {
            return Err(reject(
                "unknown_kind",
                format!(
                    "kind {:?} is not one a municipality reports; see docs/integration.md",
                    message.kind
                ),
            ));
        };
        let backfilling = if matches!(target, Target::Insurer(_)) {
            false
        } else {
            self.require_onboarded(&message.insurer).await?.backfilling
        };
        // Outside a back-fill a message reports what happens now: a fact
        // older than the domain's report age is history (docs/domain.md).
        let earliest =
            kiban_events::domain::earliest_reportable(kiban_events::domain::jst_date(now));
        if !backfilling && kiban_events::domain::jst_date(message.occurred_at) < earliest {
            return Err(reject(
                "occurred_too_long_ago",
                format!(
                    "occurred_at {} lies more than two years before the platform's clock and \
                     insurer {} has no open back-fill (docs/integration.md \"Back-filling\")",
                    message.occurred_at, message.insurer
                ),
            ));
        }
        let mut message = message;
        crate::personal::seal_body(
            self.person_keys(),
            &mut message.body,
            &message.insurer,
            message.insured.as_ref(),
            &message.event_id.to_string(),
        )
        .await
        .map_err(|failure| match failure {
            crate::personal::SealFailure::Refused(code, text) => reject(code, text),
            crate::personal::SealFailure::Store(error) => Failure::Engine(error.into()),
        })?;
        match target {
            Target::Certification(variant) => {
                self.ingest_certification(variant, message, &context).await
            }
            Target::Insured(variant) => {
                let insured = require(&message.insured, "insured")?;
                let stream = insured_stream(&message.insurer, insured);
                let command: InsuredCommand = command_from(variant, message.body, &[])?;
                Ok(self
                    .execute::<InsuredPerson>(&stream, &command, &context)
                    .await?)
            }
            Target::Insurer(variant) => {
                let stream = insurer_stream(&message.insurer);
                let command: InsurerCommand = command_from(variant, message.body, &[])?;
                Ok(self.execute::<Insurer>(&stream, &command, &context).await?)
            }
        }
    }

    async fn ingest_certification(
        &self,
        variant: &str,
        message: MunicipalMessage,
        context: &CommandContext,
    ) -> Result<Executed, Failure> {
        let insured = require(&message.insured, "insured")?.clone();
        let seq = *require(&message.application, "application")?;
        let stream = certification_stream(&message.insurer, &insured, seq);
        let person = insured_stream(&message.insurer, &insured);
        let mut injected = Vec::new();
        if variant == "file_application" {
            // A missing or malformed date is refused by the command's own
            // deserialisation below; the lookup then has nothing to go on.
            let applied_on = message
                .body
                .get("applied_on")
                .and_then(|value| serde_json::from_value::<NaiveDate>(value.clone()).ok());
            let current = match applied_on {
                Some(applied_on) => self.current_certification(&person, applied_on).await?,
                None => None,
            };
            let [insurer_key, insured_key, seq_key, current_key] = FILING_SUPPLIED_FIELDS;
            injected = vec![
                (
                    insurer_key,
                    serde_json::to_value(&message.insurer).expect("serialisable"),
                ),
                (
                    insured_key,
                    serde_json::to_value(&insured).expect("serialisable"),
                ),
                (seq_key, Value::from(seq)),
                (
                    current_key,
                    serde_json::to_value(current).expect("serialisable"),
                ),
            ];
        }
        let command: CertificationCommand = command_from(variant, message.body, &injected)?;
        let mut executed = self
            .execute::<CertificationApplication>(&stream, &command, context)
            .await?;
        // Process manager: a decision with a validity becomes the person's
        // current certification.
        let decided = executed.events.iter().find_map(|recorded| {
            match CertificationEvent::from_recorded(
                recorded.event_type.as_str(),
                recorded.schema_version,
                &recorded.payload,
            ) {
                Ok(CertificationEvent::CertificationDecided(decided)) => Some(decided),
                _ => None,
            }
        });
        if let Some(record) = decided.and_then(|d| InsuredCommand::record_decision(seq, &d)) {
            let follow_up = CommandContext {
                command_id: derived_event_id(&context.command_id, 1_000),
                causation_id: Some(*context.command_id.as_uuid()),
                ..context.clone()
            };
            let recorded = self
                .execute::<InsuredPerson>(&person, &record, &follow_up)
                .await?;
            executed.events.extend(recorded.events);
        }
        Ok(executed)
    }

    /// Refuses facts about the people of an insurer the federation has not
    /// onboarded (`insurer_not_onboarded`): offices could never see them,
    /// and an insurer that is not on the platform has no business there.
    /// The insurer's own rollout messages are checked by its decider.
    /// The onboarding (and a back-fill's opening or closing) may have been
    /// recorded by another process (the API): [`Engine::load`] catches a
    /// cached state up with the store.
    /// Returns the insurer's state (whether a back-fill is open).
    async fn require_onboarded(&self, insurer: &InsurerNumber) -> Result<InsurerState, Failure> {
        let (state, _) = self.load::<Insurer>(&insurer_stream(insurer)).await?;
        if state.insurer.is_some() {
            return Ok(state);
        }
        Err(reject(
            kiban_events::domain::RejectionCode::InsurerNotOnboarded.as_str(),
            format!(
                "insurer {insurer} is not onboarded on the platform; the federation onboards it \
                 (POST /v1/insurers, docs/integration.md \"Onboarding\")"
            ),
        ))
    }

    /// The person's current certification for an application made on
    /// `applied_on` (`InsuredState::current_certification`, the lookup the
    /// API uses too).
    async fn current_certification(
        &self,
        person: &StreamName,
        applied_on: NaiveDate,
    ) -> Result<Option<CurrentCertification>, EngineError> {
        let (state, _) = self.load::<InsuredPerson>(person).await?;
        Ok(state.current_certification(applied_on))
    }
}

/// Why `try_ingest` stopped.
enum Failure {
    Rejected(IngestRejection),
    Engine(EngineError),
}

impl From<IngestRejection> for Failure {
    fn from(rejection: IngestRejection) -> Self {
        Failure::Rejected(rejection)
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        Failure::Engine(error)
    }
}

fn reject(code: &str, message: String) -> Failure {
    Failure::Rejected(IngestRejection::new(code, message))
}

fn require<'a, T>(value: &'a Option<T>, field: &str) -> Result<&'a T, IngestRejection> {
    value.as_ref().ok_or_else(|| {
        IngestRejection::new(
            "missing_field",
            format!("this kind needs `{field}` in the message envelope"),
        )
    })
}

/// The final engine errors, as rejections; `None` for transient ones.
fn rejection_for(error: &EngineError) -> Option<IngestRejection> {
    Some(match error {
        EngineError::Rejected(rejection) => {
            IngestRejection::new(rejection.code().as_str(), rejection.message().to_owned())
        }
        EngineError::NotPermitted { .. } => {
            IngestRejection::new("not_permitted", error.to_string())
        }
        EngineError::DuplicateEventId(_) => {
            IngestRejection::new("duplicate_event_id", error.to_string())
        }
        EngineError::Contention { .. } | EngineError::Corrupted { .. } | EngineError::Store(_) => {
            return None;
        }
    })
}

/// What a message kind's envelope must carry besides the fields every
/// message has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeNeeds {
    /// `insured` and `application` (a fact about one application).
    Application,
    /// `insured` (a fact about a person).
    Person,
    /// Neither (a fact about the insurer itself).
    Insurer,
}

/// What `kind`'s envelope needs; `None` for a kind no municipality sends.
pub fn envelope_needs(kind: &str) -> Option<EnvelopeNeeds> {
    Some(match target(kind)? {
        Target::Certification(_) => EnvelopeNeeds::Application,
        Target::Insured(_) => EnvelopeNeeds::Person,
        Target::Insurer(_) => EnvelopeNeeds::Insurer,
    })
}

/// The JSON Schema of `kind`'s `body`, generated from the command variant
/// the kind becomes (its fields, types and documentation) without the
/// fields the engine supplies; `None` for a kind no municipality sends.
/// Types the body refers to are added to `generator`'s definitions.
pub fn body_schema(kind: &str, generator: &mut schemars::SchemaGenerator) -> Option<Value> {
    use schemars::JsonSchema;
    let (commands, variant, supplied): (schemars::Schema, &str, &[&str]) = match target(kind)? {
        Target::Certification(variant) => (
            CertificationCommand::json_schema(generator),
            variant,
            if variant == "file_application" {
                &FILING_SUPPLIED_FIELDS
            } else {
                &[]
            },
        ),
        Target::Insured(variant) => (InsuredCommand::json_schema(generator), variant, &[]),
        Target::Insurer(variant) => (InsurerCommand::json_schema(generator), variant, &[]),
    };
    let variants = commands
        .get("oneOf")
        .and_then(Value::as_array)
        .expect("a command enum is a oneOf of its variants");
    let tagged = variants
        .iter()
        .find(|schema| schema["properties"].get(variant).is_some())
        .expect("every municipal kind names a command variant with fields");
    let mut body = tagged["properties"][variant].clone();
    if let (Some(description), Value::Object(map)) = (tagged.get("description"), &mut body) {
        map.entry("description").or_insert(description.clone());
    }
    for field in supplied {
        if let Some(properties) = body["properties"].as_object_mut() {
            properties.remove(*field);
        }
        if let Some(required) = body["required"].as_array_mut() {
            required.retain(|name| name != field);
        }
    }
    Some(body)
}

/// Whether `kind` is one a municipality may report.
pub fn is_municipal_kind(kind: &str) -> bool {
    target(kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_has_a_target_and_is_an_event_type() {
        for kind in MUNICIPAL_KINDS {
            assert!(is_municipal_kind(kind), "{kind}");
            let known = kiban_events::domain::catalog::all_event_types().contains(kind);
            assert!(known, "{kind} is not an event type of docs/events.md");
        }
        assert!(!is_municipal_kind("office.registered"));
    }

    #[test]
    fn a_body_field_the_envelope_supplies_is_refused() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"insurer":"131016","kind":"new"}"#).unwrap();
        let error = command_from::<CertificationCommand>(
            "file_application",
            body,
            &[("insurer", Value::from("131016"))],
        )
        .unwrap_err();
        assert_eq!(error.code, "invalid_body");
    }

    #[test]
    fn an_unknown_body_field_is_refused_with_its_name() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"scheduled_on":"2026-05-01","colour":"red"}"#).unwrap();
        let error =
            command_from::<CertificationCommand>("schedule_investigation", body, &[]).unwrap_err();
        assert_eq!(error.code, "invalid_body");
        assert!(error.message.contains("colour"), "{}", error.message);
    }
}
