//! The care-plan office notification (居宅サービス計画作成依頼届出) filed
//! by the office itself: it needs the person's live consent for that
//! office (given with the My Number card), since the office acts on the
//! person's behalf.

use axum::extract::State;
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::CommandContext;
use kiban_events::domain::insured::{
    CarePlanOfficeKind, InsuredCommand, InsuredPerson, insured_stream,
};

use crate::auth::{PersonPath, fold, require_sharing};
use crate::commands::{CommandAccepted, execute};
use crate::error::{ApiError, ProblemKind};
use crate::extract::Command;
use crate::state::AppState;

/// Body of a care-plan office notification.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
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
    PersonPath(person): PersonPath,
    sent: Command<CarePlanNotification>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let (office, _) = caller
        .office_terminal(
            &state,
            "Only an office files its own care-plan notification here.",
        )
        .await?;
    require_sharing(&state, &person.insurer).await?;
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
        pending_application_on: None,
    };
    let context = CommandContext::new(command_id, caller.actor(), now);
    execute::<InsuredPerson>(&state, &stream, &command, context).await
}
