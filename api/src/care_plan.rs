//! The care-plan office notification (居宅サービス計画作成依頼届出) filed
//! by the office itself: it needs the person's live consent for that
//! office (given with the My Number card), since the office acts on the
//! person's behalf.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::NaiveDate;
use serde::Deserialize;

use kiban_engine::CommandContext;
use kiban_events::domain::insured::{
    CarePlanOfficeKind, InsuredCommand, InsuredPerson, insured_stream,
};

use crate::auth::{Caller, PersonId, fold, insurer_sharing};
use crate::commands::{CommandAccepted, execute, idempotency_key, json_body, office_actor};
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// Body of a care-plan office notification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarePlanNotification {
    /// `home_care_support_office` (居宅介護支援事業所) or
    /// `community_general_support_center` (地域包括支援センター).
    pub office_kind: CarePlanOfficeKind,
    /// The filing date.
    pub filed_on: NaiveDate,
}

/// `POST /v1/persons/{insurer}/{insured}/care-plan-office`: the calling
/// office files the notification naming itself; refused without the
/// person's live consent for it (403 consent-required) and invisible (404)
/// while the insurer does not share data.
pub async fn notify_care_plan_office(
    State(state): State<AppState>,
    caller: Caller,
    Path((insurer, insured)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    let command_id = idempotency_key(&headers)?;
    let request: CarePlanNotification = json_body(body)?;
    let (office, terminal) = caller
        .office_terminal(
            &state,
            "Only an office files its own care-plan notification here.",
        )
        .await?;
    if !insurer_sharing(&state, &person.insurer).await? {
        return Err(ApiError::not_found("No such person."));
    }
    let now = state.now();
    let stream = insured_stream(&person.insurer, &person.insured);
    let folded = fold::<InsuredPerson>(&state, &stream).await?;
    if !folded.consent_live(office, now) {
        return Err(ApiError::new(
            ProblemKind::ConsentRequired,
            "A care-plan notification by the office needs the person's live consent for it.",
        ));
    }
    let command = InsuredCommand::RegisterCarePlanOffice {
        office: office.clone(),
        office_kind: request.office_kind,
        filed_on: request.filed_on,
    };
    execute::<InsuredPerson>(
        &state,
        &stream,
        &command,
        CommandContext::new(command_id, office_actor(office, terminal), now),
    )
    .await
}
