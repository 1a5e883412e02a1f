//! The care-plan office notification (居宅サービス計画作成依頼届出) filed
//! by the office itself: the office acts on the person's behalf, so it
//! needs the person's My Number card signature over a challenge naming this
//! notification (`POST /v1/consents/challenge` with
//! `care_plan_notification`: office, terminal, person, filing date). A
//! consent to read is not enough (issue 16 item 7): a consent signed for
//! "read my record" does not make the office the person's care-plan office.

use axum::extract::State;
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::CommandContext;
use kiban_events::domain::CareLevel;
use kiban_events::domain::insured::{
    CarePlanOfficeKind, InsuredCommand, InsuredPerson, InsuredState, insured_stream,
};
use kiban_events::domain::office::OfficeState;

use crate::Principal;
use crate::auth::{PersonPath, check_terminal, fold, require_sharing};
use crate::card_consent::{Purpose, SignedChallenge, refused, require_linked, take_signed};
use crate::commands::{CommandAccepted, execute};
use crate::error::{ApiError, ProblemKind};
use crate::extract::Command;
use crate::state::AppState;

/// Body of a care-plan office notification.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CarePlanNotification {
    /// Optional: `home_care_support_office` (居宅介護支援事業所, service type
    /// 43) or `community_general_support_center` (地域包括支援センター,
    /// 介護予防支援 46). The kind always comes from the service types the
    /// office is registered with; this only chooses between the two for an
    /// office registered with both, and is refused when the office is not
    /// registered for it (403 `not_a_care_plan_office`).
    #[serde(default)]
    pub office_kind: Option<CarePlanOfficeKind>,
    /// The filing date; the signed challenge names the same.
    pub filed_on: NaiveDate,
    /// The person's card signature over a challenge asked for this
    /// notification (`care_plan_notification` with the same `filed_on`).
    /// Without it the notification is refused 403 `consent-required`, code
    /// `care_plan_signature_required`; a challenge of another purpose, person
    /// or date 403 `challenge_wrong_purpose`.
    #[serde(default)]
    pub card: Option<SignedChallenge>,
}

/// `POST /v1/persons/{insurer}/{insured}/care-plan-office`: the calling
/// office files the notification naming itself; refused without the
/// person's card signature for it (403 consent-required,
/// `care_plan_signature_required`), for an office not
/// registered as a care-plan office (403 `not_a_care_plan_office`), and
/// invisible (404) while the insurer does not share data.
pub async fn notify_care_plan_office(
    State(state): State<AppState>,
    PersonPath(person): PersonPath,
    sent: Command<CarePlanNotification>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let Principal::Office { office, terminal } = &caller.principal else {
        return Err(ApiError::forbidden(
            "Only an office files its own care-plan notification here.",
        ));
    };
    let registered = check_terminal(&state, office, terminal, &caller.fingerprint).await?;
    require_sharing(&state, &person.insurer).await?;
    let now = state.now();
    let stream = insured_stream(&person.insurer, &person.insured);
    let folded = fold::<InsuredPerson>(&state, &stream).await?;
    let office_kind = care_plan_kind(&registered, &folded, request.office_kind, request.filed_on)?;
    let Some(card) = &request.card else {
        return Err(refused(
            ProblemKind::ConsentRequired,
            "care_plan_signature_required",
            "A care-plan notification by the office needs the person's My Number card \
             signature over a challenge naming it (POST /v1/consents/challenge with \
             care_plan_notification); a consent to read is not enough.",
        ));
    };
    let names = (person.insurer.to_string(), person.insured.to_string());
    let filed_on = request.filed_on;
    let (_, holder) = take_signed(&state, office, terminal, card, now, |c| {
        c.purpose == Purpose::CarePlanOffice { filed_on } && c.person == names
    })
    .await?;
    require_linked(&folded, &holder)?;
    let command = InsuredCommand::RegisterCarePlanOffice {
        office: office.clone(),
        office_kind,
        filed_on: request.filed_on,
        pending_application_on: None,
    };
    let context = CommandContext::new(command_id, caller.actor(), now);
    execute::<InsuredPerson>(&state, &stream, &command, context).await
}

/// The kind of care-plan office `office` files as (issue 16 item 7): one
/// of the kinds its registered service types make it
/// ([`CarePlanOfficeKind::registered`]); `requested` chooses among them, and
/// without it an office registered as both files as the kind of the
/// person's level group on `filed_on`. An office registered as neither (a
/// day-service office, say) is refused 403 `not_a_care_plan_office`, as is
/// a requested kind it is not registered for. The one rule of the API route
/// and the web screen's form.
pub(crate) fn care_plan_kind(
    office: &OfficeState,
    person: &InsuredState,
    requested: Option<CarePlanOfficeKind>,
    filed_on: NaiveDate,
) -> Result<CarePlanOfficeKind, ApiError> {
    let kinds = CarePlanOfficeKind::registered(&office.service_types);
    let chosen = match requested {
        Some(kind) => kinds.contains(&kind).then_some(kind),
        None => {
            let group = person.level_on(filed_on).and_then(CareLevel::group);
            kinds
                .iter()
                .copied()
                .find(|kind| Some(kind.plans_for()) == group)
                .or(kinds.first().copied())
        }
    };
    chosen.ok_or_else(|| {
        refused(
            ProblemKind::Forbidden,
            "not_a_care_plan_office",
            "The office is not registered for this kind of care planning: a care-plan \
             notification is filed by an office registered with service type 43 \
             (居宅介護支援) or 46 (介護予防支援, 地域包括支援センター).",
        )
    })
}
