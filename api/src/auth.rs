//! Authentication (the connection's [`ClientIdentity`]) and the
//! authorisation rules that need the store.
//!
//! Rules (DESIGN.md decision 10):
//! - an office reads a person only through a registered, unsuspended
//!   terminal whose credential is the certificate presented, only when the
//!   person's insurer shares data (otherwise the person is invisible: 404),
//!   and only with a live consent or as the registered care-plan office;
//!   each such read appends `insured.record_viewed` through the engine;
//! - an insurer sees its own people; an auditor sees everything; medical
//!   institutions and the federation see no person's record.
//!
//! Terminals and insurers are folded from the store on each request (their
//! streams are short), so a suspension takes effect on the next request.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use uuid::Uuid;

use kiban_engine::{CommandContext, EngineError, Executed};
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::domain::insurer::{Insurer, insurer_stream};
use kiban_events::domain::office::{Office, OfficeState, office_stream};
use kiban_events::domain::{Decider, DomainEvent, TerminalId};
use kiban_events::envelope::{Actor, EventId, StreamName};
use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};
use kiban_store::READ_EVENTS_MAX;

use crate::error::{ApiError, ProblemKind};
use crate::principal::{ClientIdentity, Principal};
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// SHA-256 fingerprint of the certificate presented.
    pub fingerprint: String,
}

/// One kind of principal a route admits, and for which resource: the
/// building block of [`Caller::allow`], the one authorisation check of the
/// routes (the rules that need more, a person's record, are
/// [`authorise_person_read`]).
#[derive(Debug, Clone, Copy)]
pub enum Allow<'a> {
    /// Any auditor.
    Auditors,
    /// The federation.
    Federation,
    /// This insurer.
    Insurer(&'a InsurerNumber),
    /// This office, through an active terminal whose credential is the
    /// certificate presented.
    Office(&'a OfficeNumber),
    /// Any office, through an active terminal.
    AnyOffice,
    /// This medical institution.
    Institution(&'a MedicalInstitutionCode),
    /// Any medical institution.
    AnyInstitution,
}

impl Allow<'_> {
    /// Whether `principal` is of this kind (an office's terminal is checked
    /// separately, against the store).
    fn admits(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (Allow::Auditors, Principal::Auditor(_))
            | (Allow::Federation, Principal::Federation)
            | (Allow::AnyOffice, Principal::Office { .. })
            | (Allow::AnyInstitution, Principal::MedicalInstitution(_)) => true,
            (Allow::Insurer(allowed), Principal::Insurer(own)) => allowed == &own,
            (Allow::Office(allowed), Principal::Office { office, .. }) => allowed == &office,
            (Allow::Institution(allowed), Principal::MedicalInstitution(own)) => allowed == &own,
            _ => false,
        }
    }
}

impl Caller {
    /// Admits the caller if it is one of `allowed` (an office only through
    /// an active terminal: [`check_terminal`]'s refusals), and refuses
    /// anyone else with 403 and `refusal`.
    pub async fn allow(
        &self,
        state: &AppState,
        allowed: &[Allow<'_>],
        refusal: &str,
    ) -> Result<(), ApiError> {
        if !allowed.iter().any(|allow| allow.admits(&self.principal)) {
            return Err(ApiError::forbidden(refusal));
        }
        if let Principal::Office { office, terminal } = &self.principal {
            check_terminal(state, office, terminal, &self.fingerprint).await?;
        }
        Ok(())
    }

    /// The actor of the events the caller causes: an office terminal, the
    /// insurer, the institution, the federation or the auditor.
    pub fn actor(&self) -> Actor {
        match &self.principal {
            Principal::Office { office, terminal } => Actor::Office {
                office: office.clone(),
                terminal: Some(terminal.as_str().to_owned()),
            },
            Principal::Insurer(insurer) => Actor::Insurer(insurer.clone()),
            Principal::MedicalInstitution(code) => Actor::MedicalInstitution(code.clone()),
            Principal::Auditor(id) => Actor::Auditor(id.clone()),
            Principal::Federation => Actor::Federation,
        }
    }

    /// The caller as an active office terminal: its office and terminal;
    /// 403 with `refusal` for any other principal, and the terminal's own
    /// refusal (unknown, suspended, another certificate) from
    /// [`check_terminal`].
    pub async fn office_terminal(
        &self,
        state: &AppState,
        refusal: &str,
    ) -> Result<(&OfficeNumber, &TerminalId), ApiError> {
        let Principal::Office { office, terminal } = &self.principal else {
            return Err(ApiError::forbidden(refusal));
        };
        check_terminal(state, office, terminal, &self.fingerprint).await?;
        Ok((office, terminal))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<ClientIdentity>() {
            Some(ClientIdentity::Verified {
                principal,
                fingerprint,
            }) => Ok(Caller {
                principal: principal.clone(),
                fingerprint: fingerprint.clone(),
            }),
            Some(ClientIdentity::Unrecognised) => Err(ApiError::new(
                ProblemKind::Unauthenticated,
                "The client certificate names no kiban principal (see docs/api.md).",
            )),
            _ => Err(ApiError::new(
                ProblemKind::Unauthenticated,
                "Present a client certificate issued by the platform CA.",
            )),
        }
    }
}

/// An insured person named in a path.
#[derive(Debug, Clone)]
pub struct PersonId {
    pub insurer: InsurerNumber,
    pub insured: InsuredNumber,
}

impl PersonId {
    /// Parses the path segments.
    pub fn parse(insurer: &str, insured: &str) -> Result<Self, ApiError> {
        Ok(Self {
            insurer: insurer_number(insurer)?,
            insured: InsuredNumber::parse(insured)
                .map_err(|_| ApiError::validation("The insured number must be 10 digits."))?,
        })
    }

    /// `<insurer>-<insured>`: the read models' person id.
    pub fn key(&self) -> String {
        format!("{}-{}", self.insurer, self.insured)
    }
}

/// The insured person a route's `{insurer}/{insured}` segments name,
/// parsed (400 `validation` when malformed).
#[derive(Debug, Clone)]
pub struct PersonPath(pub PersonId);

impl<S: Send + Sync> FromRequestParts<S> for PersonPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((insurer, insured)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::validation("The path names no insured person."))?;
        PersonId::parse(&insurer, &insured).map(PersonPath)
    }
}

/// Parses an insurer number from a path or a body.
pub fn insurer_number(value: &str) -> Result<InsurerNumber, ApiError> {
    InsurerNumber::parse(value).map_err(|_| {
        ApiError::validation(
            "The insurer number (保険者番号) is 6 digits, the first two a prefecture code 01-47.",
        )
    })
}

/// Parses an office number from a path.
pub fn office_number(value: &str) -> Result<OfficeNumber, ApiError> {
    OfficeNumber::parse(value)
        .map_err(|_| ApiError::validation("The office number (介護保険事業所番号) is 10 digits, the first two a prefecture code 01-47."))
}

/// Parses a terminal id from a path or body.
pub fn terminal_id(value: &str) -> Result<TerminalId, ApiError> {
    TerminalId::parse(value).map_err(|_| ApiError::validation("The terminal id is malformed."))
}

/// Folds `stream` from the store (not the engine's cache): the current
/// state as committed, for decisions that must take effect at once.
pub async fn fold<D: Decider>(state: &AppState, stream: &StreamName) -> Result<D::State, ApiError> {
    let mut folded = D::State::default();
    let mut from = 1;
    loop {
        let page = state
            .inner
            .store
            .read_stream(stream, from, READ_EVENTS_MAX)
            .await?;
        let full = page.len() == READ_EVENTS_MAX;
        for recorded in &page {
            let event = D::Event::from_recorded(
                recorded.event_type.as_str(),
                recorded.schema_version,
                &recorded.payload,
            )
            .map_err(|e| ApiError::internal(&e))?;
            folded = D::evolve(folded, &event);
            from = recorded.version + 1;
        }
        if !full {
            return Ok(folded);
        }
    }
}

/// Checks that `terminal` of `office` is registered, not suspended, and
/// that its credential is the certificate presented.
pub async fn check_terminal(
    state: &AppState,
    office: &OfficeNumber,
    terminal: &TerminalId,
    fingerprint: &str,
) -> Result<OfficeState, ApiError> {
    let folded = fold::<Office>(state, &office_stream(office)).await?;
    let Some(registered) = folded.terminals.get(terminal) else {
        return Err(ApiError::forbidden(
            "This terminal is not registered for the office.",
        ));
    };
    if registered.suspended {
        return Err(ApiError::new(
            ProblemKind::TerminalSuspended,
            "This terminal was reported lost or stolen and is suspended.",
        ));
    }
    if registered.credential.as_str() != fingerprint {
        return Err(ApiError::forbidden(
            "The certificate presented is not this terminal's registered credential.",
        ));
    }
    Ok(folded)
}

/// Whether the insurer's data is shared with offices yet.
pub async fn insurer_sharing(state: &AppState, insurer: &InsurerNumber) -> Result<bool, ApiError> {
    Ok(fold::<Insurer>(state, &insurer_stream(insurer))
        .await?
        .sharing_enabled())
}

/// Refuses, as 404 "No such person." (the answer for a person an office
/// may not know of), any office action on a person whose insurer does not
/// share data yet: reads, proxy applications, care-plan notifications.
pub async fn require_sharing(state: &AppState, insurer: &InsurerNumber) -> Result<(), ApiError> {
    if insurer_sharing(state, insurer).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("No such person."))
    }
}

/// Authorises `caller` to read `person`'s record; for an office, records
/// the read in the access log (the engine decides it: consent or care-plan
/// office, insurer sharing).
pub async fn authorise_person_read(
    state: &AppState,
    caller: &Caller,
    person: &PersonId,
) -> Result<(), ApiError> {
    match &caller.principal {
        Principal::Auditor(_) => Ok(()),
        Principal::Insurer(insurer) if insurer == &person.insurer => Ok(()),
        Principal::Office { office, terminal } => {
            check_terminal(state, office, terminal, &caller.fingerprint).await?;
            let sharing = insurer_sharing(state, &person.insurer).await?;
            if !sharing {
                return Err(ApiError::not_found("No such person."));
            }
            let command = InsuredCommand::RecordView {
                office: office.clone(),
                terminal: terminal.clone(),
                insurer_sharing_enabled: sharing,
            };
            let context = CommandContext::new(
                new_event_id(),
                Actor::system("api").expect("valid"),
                state.now(),
            );
            execute_on_person(state, person, &command, &context).await?;
            Ok(())
        }
        _ => Err(ApiError::forbidden(
            "This principal may not read a person's record.",
        )),
    }
}

/// Executes `command` on `person`'s stream through the engine.
pub(crate) async fn execute_on_person(
    state: &AppState,
    person: &PersonId,
    command: &InsuredCommand,
    context: &CommandContext,
) -> Result<Executed, EngineError> {
    let stream = insured_stream(&person.insurer, &person.insured);
    state
        .inner
        .engine
        .execute::<InsuredPerson>(&stream, command, context)
        .await
}

/// A fresh event id (UUID v7) for a command the API itself issues.
pub fn new_event_id() -> EventId {
    EventId::from_uuid(Uuid::now_v7()).expect("v7 ids are not nil")
}
