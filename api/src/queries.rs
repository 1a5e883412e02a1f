//! The query routes: read models, after authorisation.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;

use kiban_projections::models::organisations::{institution_applicant_key, office_applicant_key};
use kiban_projections::{
    AccessEntry, AccessLogOrder, AccessLogPage, ApplicationView, CaseloadEntry, DocumentView,
    EligibilityView, InsurerView, LedgersView, Page, SubsidyView, TerminalView,
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

/// `GET /v1/persons/{insurer}/{insured}/access-log?after=&limit=&order=`:
/// the person's insurer and auditors; one page ([`AccessLogQuery`]).
pub async fn person_access_log(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
    uri: Uri,
    Query(query): Query<AccessLogQuery>,
) -> Result<AccessLog, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Insurer(&person.insurer)],
            "Only the person's insurer and auditors read the access log.",
        )
        .await?;
    access_log_page(&state, Some(&person.key()), None, &uri, &query).await
}

/// Query of the access-log routes: a page of at most `limit` entries
/// (1–500, default 500) in `order` (`oldest`, the default, or `newest`
/// first), after the entry at position `after` (the previous page's last;
/// the `Link: rel="next"` of a full page names it).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogQuery {
    /// Start after the entry at this position (in `order`).
    #[serde(default)]
    pub after: Option<u64>,
    /// Most entries (1–500, default 500).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `oldest` (default) or `newest` first.
    #[serde(default)]
    pub order: Option<AccessLogOrderParam>,
}

/// The order of an access-log page.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogOrderParam {
    /// Oldest first.
    Oldest,
    /// Newest first.
    Newest,
}

/// One page of an access log: a JSON array of entries, with a `Link:
/// <…>; rel="next"` header when the page is full (there may be more).
#[derive(Debug)]
pub struct AccessLog {
    pub(crate) entries: Vec<AccessEntry>,
    pub(crate) next: Option<String>,
}

impl IntoResponse for AccessLog {
    fn into_response(self) -> Response {
        let mut response = Json(self.entries).into_response();
        if let Some(next) = self.next
            && let Ok(link) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
        {
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }
}

/// One page of the access log of `person`, of `office`, or all, as the
/// route at `uri` answers it.
pub(crate) async fn access_log_page(
    state: &AppState,
    person: Option<&str>,
    office: Option<&str>,
    uri: &Uri,
    query: &AccessLogQuery,
) -> Result<AccessLog, ApiError> {
    let limit = query.limit.unwrap_or(kiban_projections::PAGE_ITEMS_MAX);
    if !(1..=kiban_projections::PAGE_ITEMS_MAX).contains(&limit) {
        return Err(ApiError::validation(format!(
            "`limit` is 1 to {} entries.",
            kiban_projections::PAGE_ITEMS_MAX
        )));
    }
    let (order, order_name) = match query.order {
        None | Some(AccessLogOrderParam::Oldest) => (AccessLogOrder::OldestFirst, "oldest"),
        Some(AccessLogOrderParam::Newest) => (AccessLogOrder::NewestFirst, "newest"),
    };
    let page = AccessLogPage {
        after: query.after,
        limit,
        order,
    };
    let entries = state
        .inner
        .read
        .access_log_page(person, office, &page)
        .await?;
    let next = (entries.len() == limit)
        .then(|| entries.last())
        .flatten()
        .map(|last| {
            format!(
                "{}?after={}&limit={limit}&order={order_name}",
                uri.path(),
                last.position
            )
        });
    Ok(AccessLog { entries, next })
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
    // Out of range is refused like a malformed number, never clamped: the
    // client learns its page size was not the one it asked for.
    if !(1..=kiban_projections::PAGE_ITEMS_MAX).contains(&limit) {
        return Err(ApiError::validation(format!(
            "`limit` is 1 to {} items.",
            kiban_projections::PAGE_ITEMS_MAX
        )));
    }
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
    let number = crate::auth::insurer_number(&insurer)?;
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
    let number = crate::auth::insurer_number(&insurer)?;
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
                .subsidies(Some(&office_applicant_key(office.as_str())), now)
                .await?
        }
        Principal::MedicalInstitution(code) => {
            let applicant = institution_applicant_key(code.as_str());
            state.inner.read.subsidies(Some(&applicant), now).await?
        }
        Principal::Insurer(_) => {
            return Err(ApiError::forbidden(
                "Insurers do not see subsidy applications.",
            ));
        }
    };
    Ok(Json(views))
}

/// `GET /v1/access-log?after=&limit=&order=`: the whole access log, one
/// page ([`AccessLogQuery`]); auditors only.
pub async fn access_log(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(query): Query<AccessLogQuery>,
) -> Result<AccessLog, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Auditors],
            "Only auditors read the whole access log.",
        )
        .await?;
    access_log_page(&state, None, None, &uri, &query).await
}
