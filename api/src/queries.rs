//! The query routes: read models, after authorisation.

use axum::Json;
use axum::extract::{Path, Query, State};
use schemars::JsonSchema;
use serde::Deserialize;

use kiban_projections::{
    AccessEntry, ApplicationView, CaseloadEntry, DocumentView, EligibilityView, InsurerView,
    LedgersView, Page, SubsidyView, TerminalView,
};

use crate::auth::{
    Allow, Caller, PersonPath, authorise_person_read, check_terminal, office_number,
};
use crate::error::ApiError;
use crate::principal::Principal;
use crate::state::AppState;

/// Caseload page size when none is asked for.
pub const CASELOAD_PAGE_DEFAULT: usize = 100;

/// `GET /v1/persons/{insurer}/{insured}/eligibility`
pub async fn eligibility(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<EligibilityView>, ApiError> {
    authorise_person_read(&state, &caller, &person).await?;
    let view = state
        .inner
        .read
        .eligibility(&person.key(), state.now())
        .await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("No such person."))
}

/// `GET /v1/persons/{insurer}/{insured}/certifications`
pub async fn certifications(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<Vec<ApplicationView>>, ApiError> {
    authorise_person_read(&state, &caller, &person).await?;
    Ok(Json(
        state
            .inner
            .read
            .applications(&person.key(), state.now())
            .await?,
    ))
}

/// `GET /v1/persons/{insurer}/{insured}/documents`
pub async fn documents(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<Vec<DocumentView>>, ApiError> {
    authorise_person_read(&state, &caller, &person).await?;
    Ok(Json(state.inner.read.documents_of(&person.key()).await?))
}

/// `GET /v1/persons/{insurer}/{insured}/ledgers`
pub async fn ledgers(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<LedgersView>, ApiError> {
    authorise_person_read(&state, &caller, &person).await?;
    let view = state.inner.read.ledgers(&person.key(), state.now()).await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("No such person."))
}

/// `GET /v1/persons/{insurer}/{insured}/access-log`: the person's insurer
/// and auditors.
pub async fn person_access_log(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<Vec<AccessEntry>>, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Insurer(&person.insurer)],
            "Only the person's insurer and auditors read the access log.",
        )
        .await?;
    Ok(Json(
        state
            .inner
            .read
            .access_log(Some(&person.key()), None)
            .await?,
    ))
}

/// Query of the caseload.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CaseloadQuery {
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size (1–500).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/offices/{office}/caseload?after=&limit=`: the office itself
/// (through an active terminal) and auditors.
pub async fn caseload(
    State(state): State<AppState>,
    caller: Caller,
    Path(office): Path<String>,
    query: Result<Query<CaseloadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<CaseloadEntry>>, ApiError> {
    let office = office_number(&office)?;
    let Query(query) =
        query.map_err(|_| ApiError::validation("Use ?after=<cursor>&limit=<1-500>."))?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Office(&office)],
            "Only the office itself and auditors read its caseload.",
        )
        .await?;
    let after = query.after.unwrap_or_default();
    let limit = query.limit.unwrap_or(CASELOAD_PAGE_DEFAULT);
    Ok(Json(
        state
            .inner
            .read
            .caseload(&office, &after, limit, state.now())
            .await?,
    ))
}

/// `GET /v1/offices/{office}/terminals`: the office, the federation,
/// auditors.
pub async fn terminals(
    State(state): State<AppState>,
    caller: Caller,
    Path(office): Path<String>,
) -> Result<Json<Vec<TerminalView>>, ApiError> {
    let office = office_number(&office)?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Federation, Allow::Office(&office)],
            "Only the office, the federation and auditors see its terminals.",
        )
        .await?;
    Ok(Json(
        state.inner.read.terminals(Some(office.as_str())).await?,
    ))
}

/// `GET /v1/terminals`: every terminal; the federation and auditors.
pub async fn all_terminals(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TerminalView>>, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Federation],
            "Only the federation and auditors list all terminals.",
        )
        .await?;
    Ok(Json(state.inner.read.terminals(None).await?))
}

/// `GET /v1/insurers/{insurer}`: rollout status; the insurer, the
/// federation, auditors.
pub async fn insurer(
    State(state): State<AppState>,
    caller: Caller,
    Path(insurer): Path<String>,
) -> Result<Json<InsurerView>, ApiError> {
    let number = kiban_events::ids::InsurerNumber::parse(&insurer)
        .map_err(|_| ApiError::validation("The insurer number must be 6 digits."))?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Federation, Allow::Insurer(&number)],
            "Only the insurer, the federation and auditors see its rollout.",
        )
        .await?;
    let view = state.inner.read.insurer(number.as_str()).await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("No such insurer."))
}

/// `GET /v1/insurers/{insurer}/overdue-applications`: the insurer and
/// auditors.
pub async fn overdue_applications(
    State(state): State<AppState>,
    caller: Caller,
    Path(insurer): Path<String>,
) -> Result<Json<Vec<ApplicationView>>, ApiError> {
    let number = kiban_events::ids::InsurerNumber::parse(&insurer)
        .map_err(|_| ApiError::validation("The insurer number must be 6 digits."))?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Insurer(&number)],
            "Only the insurer and auditors list its overdue applications.",
        )
        .await?;
    Ok(Json(
        state
            .inner
            .read
            .overdue_applications(number.as_str(), state.now())
            .await?,
    ))
}

/// `GET /v1/medical/{institution}/opinion-requests`: the institution and
/// auditors.
pub async fn opinion_requests(
    State(state): State<AppState>,
    caller: Caller,
    Path(institution): Path<String>,
) -> Result<Json<Vec<ApplicationView>>, ApiError> {
    let code = kiban_events::ids::MedicalInstitutionCode::parse(&institution)
        .map_err(|_| ApiError::validation("The medical-institution code must be 10 digits."))?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Institution(&code)],
            "Only the institution asked and auditors see opinion requests.",
        )
        .await?;
    Ok(Json(
        state
            .inner
            .read
            .opinion_requests(code.as_str(), state.now())
            .await?,
    ))
}

/// `GET /v1/subsidies`: all for the federation and auditors; an office or
/// medical institution sees its own applications.
pub async fn subsidies(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SubsidyView>>, ApiError> {
    let now = state.now();
    let views = match &caller.principal {
        Principal::Auditor(_) | Principal::Federation => {
            state.inner.read.subsidies(None, now).await?
        }
        Principal::Office { office, terminal } => {
            check_terminal(&state, office, terminal, &caller.fingerprint).await?;
            state
                .inner
                .read
                .subsidies(Some(office.as_str()), now)
                .await?
        }
        Principal::MedicalInstitution(code) => {
            state.inner.read.subsidies(Some(code.as_str()), now).await?
        }
        Principal::Insurer(_) => {
            return Err(ApiError::forbidden(
                "Insurers do not see subsidy applications.",
            ));
        }
    };
    Ok(Json(views))
}

/// `GET /v1/access-log`: the whole access log; auditors only.
pub async fn access_log(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AccessEntry>>, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Auditors],
            "Only auditors read the whole access log.",
        )
        .await?;
    Ok(Json(state.inner.read.access_log(None, None).await?))
}
