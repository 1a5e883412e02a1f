//! The command routes: each becomes a decider command executed by the
//! engine, under the caller's `Idempotency-Key` (the first event's id).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use kiban_engine::{CommandContext, EngineError, Executed};
use kiban_events::domain::certification::{
    Applicant, ApplicationKind, CertificationApplication, CertificationCommand,
    certification_stream,
};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::office::{Loss, Office, OfficeCommand, office_stream};
use kiban_events::domain::{Decider, Sha256Digest};
use kiban_events::envelope::{Actor, EventId, StreamName};

use crate::auth::{Allow, PersonId, PersonPath, fold, insurer_number, office_number, terminal_id};
use crate::error::{ApiError, ProblemKind};
use crate::extract::{Command, CommandKey};
use crate::principal::Principal;
use crate::state::AppState;

/// Most applications probed for one person (certifications) or one
/// applicant (subsidies) when choosing the next sequence number: far above
/// a lifetime of renewals, changes and re-applications, and it bounds the
/// probing.
pub const APPLICATIONS_PER_PERSON_MAX: u32 = 1000;

/// What a command answers: 201 Created, or 200 OK when the idempotency key
/// had been executed before (`replayed`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandAccepted {
    /// The event ids recorded (the first is the idempotency key).
    pub event_ids: Vec<Uuid>,
    /// Their positions.
    pub positions: Vec<u64>,
    /// True when the same key had been executed before.
    pub replayed: bool,
    /// The stream the events were recorded on.
    pub stream: String,
}

impl CommandAccepted {
    fn new(stream: String, executed: Executed) -> Self {
        Self {
            event_ids: executed
                .events
                .iter()
                .map(|e| *e.event_id.as_uuid())
                .collect(),
            positions: executed.positions(),
            replayed: executed.replayed,
            stream,
        }
    }
}

impl IntoResponse for CommandAccepted {
    fn into_response(self) -> Response {
        let status = if self.replayed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let position = self.positions.iter().max().copied().unwrap_or(0);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            crate::state::POSITION_HEADER,
            axum::http::HeaderValue::from(position),
        );
        response
    }
}

/// A 201 Created answer with a JSON body that is not a command's events (a
/// stored attachment, a consent challenge).
#[derive(Debug, Clone)]
pub struct Created<T>(pub T);

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

/// Executes `command` on `stream` through the engine and answers it (201,
/// or 200 when the idempotency key was executed before).
///
/// The key has been claimed with the request's digest
/// ([`CommandKey::claim`]), so a key executed before is a retry of the same
/// command: when deciding it again gives other events (a consent decided at
/// another "now"), the store refuses their ids as duplicates and the answer
/// is the events recorded the first time.
pub(crate) async fn execute<D>(
    state: &AppState,
    stream: &StreamName,
    command: &D::Command,
    context: CommandContext,
) -> Result<CommandAccepted, ApiError>
where
    D: Decider,
    D::State: Send + Sync + 'static,
{
    let engine = &state.inner.engine;
    let executed = match engine.execute::<D>(stream, command, &context).await {
        Ok(executed) => executed,
        Err(EngineError::DuplicateEventId(id)) => engine
            .find_recorded(stream, &context.command_id)
            .await?
            .ok_or(EngineError::DuplicateEventId(id))?,
        Err(error) => return Err(error.into()),
    };
    // Read your writes: answer once this process's read models show the
    // command (bounded; it is committed either way).
    let position = executed.positions().into_iter().max().unwrap_or(0);
    state.await_read_models(position).await;
    Ok(CommandAccepted::new(stream.to_string(), executed))
}

/// Body of a proxy certification application.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyApplication {
    /// `new`, `renewal` or `change`.
    pub kind: ApplicationKind,
    /// The application date.
    pub applied_on: NaiveDate,
}

/// `POST /v1/persons/{insurer}/{insured}/certifications`: an office files
/// a certification application by proxy (代行申請). Needs an active
/// terminal and the person's live consent or care-plan registration.
pub async fn file_application(
    State(state): State<AppState>,
    PersonPath(person): PersonPath,
    sent: Command<ProxyApplication>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let (office, _) = caller
        .office_terminal(&state, "Only an office files an application by proxy here.")
        .await?;
    crate::auth::require_sharing(&state, &person.insurer).await?;
    let now = state.now();
    let stream = insured_stream(&person.insurer, &person.insured);
    let person_state = fold::<InsuredPerson>(&state, &stream).await?;
    if person_state.viewing_basis(office, now).is_none() {
        return Err(ApiError::new(
            ProblemKind::ConsentRequired,
            "A proxy application needs the person's live consent or care-plan registration.",
        ));
    }
    let seq = next_application_seq(&state, &person, &command_id).await?;
    let command = CertificationCommand::FileApplication {
        insurer: person.insurer.clone(),
        insured: person.insured.clone(),
        seq,
        kind: request.kind,
        applicant: Applicant::Office {
            office: office.clone(),
        },
        applied_on: request.applied_on,
        current_certification: person_state.current_certification(request.applied_on),
        insured_name: None,
    };
    let stream = certification_stream(&person.insurer, &person.insured, seq);
    let context = CommandContext::new(command_id, caller.actor(), now);
    execute::<CertificationApplication>(&state, &stream, &command, context).await
}

/// The sequence number of the person's next application, or of the one
/// this idempotency key already filed (so a retry lands on the same stream).
async fn next_application_seq(
    state: &AppState,
    person: &PersonId,
    command_id: &EventId,
) -> Result<u32, ApiError> {
    next_stream_seq(state, command_id, |seq| {
        certification_stream(&person.insurer, &person.insured, seq)
    })
    .await
}

/// The first sequence number whose stream (`stream_of(seq)`) is empty, or
/// whose first event is `command_id` (so a retry lands on the same stream),
/// probing at most [`APPLICATIONS_PER_PERSON_MAX`] streams.
pub(crate) async fn next_stream_seq(
    state: &AppState,
    command_id: &EventId,
    stream_of: impl Fn(u32) -> StreamName,
) -> Result<u32, ApiError> {
    for seq in 1..=APPLICATIONS_PER_PERSON_MAX {
        let stream = stream_of(seq);
        let first = state.inner.store.read_stream(&stream, 1, 1).await?;
        match first.first() {
            None => return Ok(seq),
            Some(event) if &event.event_id == command_id => return Ok(seq),
            Some(_) => {}
        }
    }
    Err(ApiError::new(
        ProblemKind::Rejected,
        "Too many applications on record.",
    ))
}

/// Body of a lost-terminal report.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LostReport {
    /// `lost` or `stolen`.
    pub loss: Loss,
}

/// `POST /v1/offices/{office}/terminals/{terminal}/lost`: the office (from
/// any of its active terminals) or the federation reports a terminal lost
/// or stolen; it is refused from the next request on.
pub async fn report_terminal_lost(
    State(state): State<AppState>,
    Path((office, lost_terminal)): Path<(String, String)>,
    sent: Command<LostReport>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let office = office_number(&office)?;
    let lost_terminal = terminal_id(&lost_terminal)?;
    caller
        .allow(
            &state,
            &[Allow::Federation, Allow::Office(&office)],
            "Only the office itself or the federation reports its terminals.",
        )
        .await?;
    let stream = office_stream(&office);
    // The reporting terminal is the actor: the office may suspend its own
    // terminal at once (office.terminal_suspended admits it). It may not
    // report the office's last other active terminal (the decider's
    // `last_other_terminal`, 403 here).
    let reported_by = match &caller.principal {
        Principal::Office { terminal, .. } => Some(terminal.clone()),
        _ => None,
    };
    let actor = caller.actor();
    let command = OfficeCommand::ReportTerminalLost {
        terminal: lost_terminal,
        loss: request.loss,
        reported_by,
    };
    let context = CommandContext::new(command_id, actor, state.now());
    execute::<Office>(&state, &stream, &command, context).await
}

/// Body of a terminal's reinstatement.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reinstatement {
    /// SHA-256 (64 lower-case hex digits) of the DER of the new client
    /// certificate installed on the terminal.
    pub credential: String,
}

/// `POST /v1/offices/{office}/terminals/{terminal}/reinstatement`: the
/// federation reinstates a suspended terminal with a new credential (the
/// fingerprint of a newly issued client certificate); the old certificate
/// stays refused (docs/security.md, "A stolen terminal").
pub async fn reinstate_terminal(
    State(state): State<AppState>,
    Path((office, terminal)): Path<(String, String)>,
    sent: Command<Reinstatement>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let office = office_number(&office)?;
    let terminal = terminal_id(&terminal)?;
    let credential = Sha256Digest::parse(&request.credential).map_err(|_| {
        ApiError::validation("credential must be 64 lower-case hex digits (SHA-256).")
    })?;
    caller
        .allow(
            &state,
            &[Allow::Federation],
            "Only the federation reinstates a terminal.",
        )
        .await?;
    let command = OfficeCommand::ReinstateTerminal {
        terminal,
        credential,
    };
    let context = CommandContext::new(command_id, caller.actor(), state.now());
    execute::<Office>(&state, &office_stream(&office), &command, context).await
}

/// Body of a consent record.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRecord {
    /// The office consented to.
    pub office: String,
    /// The terminal whose card reader verified the card.
    pub terminal: String,
    /// When the consent expires.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/persons/{insurer}/{insured}/consents`: records a consent
/// verified elsewhere. The My Number card flow (challenge signed by the
/// card) is not served here yet, so this route is for the federation only
/// (system integration and tests); the event's actor is `system:consent`.
pub async fn give_consent(
    State(state): State<AppState>,
    PersonPath(person): PersonPath,
    sent: Command<ConsentRecord>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    caller
        .allow(
            &state,
            &[Allow::Federation],
            "Consents are recorded through the card flow; this route is the federation's.",
        )
        .await?;
    let command = InsuredCommand::GiveConsent {
        office: office_number(&request.office)?,
        terminal: terminal_id(&request.terminal)?,
        expires_at: request.expires_at,
    };
    let stream = insured_stream(&person.insurer, &person.insured);
    execute::<InsuredPerson>(
        &state,
        &stream,
        &command,
        CommandContext::new(
            command_id,
            Actor::system("consent").expect("valid"),
            state.now(),
        ),
    )
    .await
}

/// `DELETE /v1/persons/{insurer}/{insured}/consents/{office}`: the office
/// itself (through an active terminal) or the federation revokes a consent.
pub async fn revoke_consent(
    State(state): State<AppState>,
    Path((insurer, insured, office)): Path<(String, String, String)>,
    command_key: CommandKey,
) -> Result<CommandAccepted, ApiError> {
    command_key.claim(&state, &[]).await?;
    let CommandKey {
        key: command_id,
        caller,
        ..
    } = command_key;
    let person = PersonId::parse(&insurer, &insured)?;
    let office = office_number(&office)?;
    caller
        .allow(
            &state,
            &[Allow::Federation, Allow::Office(&office)],
            "Only the office itself or the federation revokes its consent.",
        )
        .await?;
    let actor = match caller.principal {
        Principal::Federation => Actor::system("consent").expect("valid"),
        _ => caller.actor(),
    };
    let stream = insured_stream(&person.insurer, &person.insured);
    let command = InsuredCommand::RevokeConsent { office };
    let context = CommandContext::new(command_id, actor, state.now());
    execute::<InsuredPerson>(&state, &stream, &command, context).await
}

/// Body of an insurer's onboarding.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsurerOnboarding {
    /// The insurer number (保険者番号) joining the platform: 6 digits, the
    /// first two a prefecture code 01-47.
    pub insurer: String,
}

/// `POST /v1/insurers`: the federation (国保中央会) onboards an insurer
/// (`insurer.onboarded`). Until then kiban refuses its status messages
/// (`insurer_not_onboarded`); docs/integration.md "Onboarding".
pub async fn onboard_insurer(
    State(state): State<AppState>,
    sent: Command<InsurerOnboarding>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    caller
        .allow(
            &state,
            &[Allow::Federation],
            "Only the federation onboards an insurer.",
        )
        .await?;
    let insurer = insurer_number(&request.insurer)?;
    let stream = insurer_stream(&insurer);
    let command = InsurerCommand::Onboard { insurer };
    let context = CommandContext::new(command_id, caller.actor(), state.now());
    execute::<Insurer>(&state, &stream, &command, context).await
}
