//! The audit routes (監査, docs/audit.md): chain verification, a person's
//! read models as they stood at an earlier moment, and the access log per
//! office. Auditors only.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_events::Position;
use kiban_projections::{
    AccessEntry, ApplicationView, DocumentView, EligibilityView, LedgersView, ReadModelsAsOf,
    models,
};
use kiban_store::VerifyReport;

use axum::http::Uri;

use crate::auth::{Allow, Caller, PersonPath, office_number};
use crate::error::ApiError;
use crate::queries::{AccessLog, AccessLogQuery, access_log_page};
use crate::state::AppState;

async fn auditors_only(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    caller
        .allow(
            state,
            &[Allow::Auditors],
            "Only auditors use the audit routes (監査専用).",
        )
        .await
}

/// Most events one `GET /v1/audit/verify` checks: about a second of work
/// at the measured verification speed (docs/benchmarks.md "Replay"), well
/// inside the request timeout. A longer range is verified page by page:
/// the answer names `next_from`, the hash chain continues across pages
/// (each page starts from the stored hash of the event before it).
pub const AUDIT_VERIFY_EVENTS_PER_REQUEST_MAX: u64 = 1_000_000;

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct VerifyQuery {
    /// First position (default 1).
    #[serde(default)]
    pub from: Option<Position>,
    /// Last position (default the head).
    #[serde(default)]
    pub to: Option<Position>,
    /// Most events checked by this request (default and most
    /// [`AUDIT_VERIFY_EVENTS_PER_REQUEST_MAX`]).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// The answer of `GET /v1/audit/verify`: the report of the page checked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyPage {
    /// First position checked.
    pub from: Position,
    /// Last position checked.
    pub to: Position,
    /// Where the next page starts, when the range asked for goes beyond
    /// this page and the page verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_from: Option<Position>,
    #[serde(flatten)]
    pub report: VerifyReport,
}

/// `GET /v1/audit/verify?from=&to=&limit=`: the chain report of one page
/// (200 whether it verifies or not: the body's `outcome` says which),
/// with the stored signed checkpoints checked too ([`kiban_store::Store::verify_signed`]):
/// their signatures and links, the signed hashes inside the page, and a
/// head below the latest checkpoint.
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<VerifyQuery>,
) -> Result<Json<VerifyPage>, ApiError> {
    auditors_only(&state, &caller).await?;
    let from = query.from.unwrap_or(1);
    if from == 0 || query.to.is_some_and(|to| to < from) {
        return Err(ApiError::validation(
            "`from` starts at 1 and `to` may not be before it.",
        ));
    }
    let limit = query.limit.unwrap_or(AUDIT_VERIFY_EVENTS_PER_REQUEST_MAX);
    if limit == 0 || limit > AUDIT_VERIFY_EVENTS_PER_REQUEST_MAX {
        return Err(ApiError::validation(format!(
            "`limit` is 1 to {AUDIT_VERIFY_EVENTS_PER_REQUEST_MAX} events."
        )));
    }
    let wanted = match query.to {
        Some(to) => to,
        None => state.inner.store.head().await?.position,
    };
    let to = wanted.min(from.saturating_add(limit - 1));
    let report = state
        .inner
        .store
        .verify_signed(from, Some(to), &mut |_| {})
        .await?;
    let next_from = match report {
        VerifyReport::Verified { .. } if to < wanted => Some(to + 1),
        _ => None,
    };
    Ok(Json(VerifyPage {
        from,
        to,
        next_from,
        report,
    }))
}

/// Query of `GET /v1/audit/persons/{insurer}/{insured}`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AsOfQuery {
    /// RFC 3339 time: the state after every event recorded at or before it.
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    /// Or a position: the state after that event.
    #[serde(default)]
    pub at_position: Option<Position>,
}

/// A person's read models as they stood at a position.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PersonAsOf {
    /// The last event replayed.
    pub position: Position,
    /// The moment the views are evaluated at (validity, overdue): `as_of`,
    /// or the recording time of the event at `at_position`.
    pub as_of: DateTime<Utc>,
    pub eligibility: Option<EligibilityView>,
    pub certifications: Vec<ApplicationView>,
    pub documents: Vec<DocumentView>,
    pub ledgers: Option<LedgersView>,
    pub access_log: Vec<AccessEntry>,
}

/// `GET /v1/audit/persons/{insurer}/{insured}?as_of=|at_position=`: built
/// by replaying the store up to that moment into a temporary database.
pub async fn person_as_of(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
    Query(query): Query<AsOfQuery>,
) -> Result<Json<PersonAsOf>, ApiError> {
    auditors_only(&state, &caller).await?;
    let store = &state.inner.store;
    let (position, as_of) = match (query.as_of, query.at_position) {
        (Some(time), None) => (store.position_at(time).await?, time),
        (None, Some(position)) => {
            let event = store.read_all(position, 1).await?;
            let event = event
                .first()
                .filter(|e| e.position == position)
                .ok_or_else(|| ApiError::not_found("No event at that position."))?;
            (position, event.recorded_at)
        }
        _ => {
            return Err(ApiError::validation(
                "Give exactly one of `as_of` (RFC 3339) and `at_position`.",
            ));
        }
    };
    let replayed = ReadModelsAsOf::build(store, &models::all(), position).await?;
    let read = replayed.read();
    let key = person.key();
    let view = async {
        Ok::<_, kiban_projections::Error>(PersonAsOf {
            position: replayed.position,
            as_of,
            eligibility: read.eligibility(&key, as_of).await?,
            certifications: read.applications(&key, as_of).await?,
            documents: read.documents_of(&key).await?,
            ledgers: read.ledgers(&key, as_of).await?,
            access_log: read.access_log(Some(&key), None).await?,
        })
    }
    .await;
    replayed.close().await;
    let view = view?;
    if view.eligibility.is_none() && view.certifications.is_empty() {
        return Err(ApiError::not_found("No such person at that moment."));
    }
    Ok(Json(view))
}

/// `GET /v1/audit/offices/{office}/access-log?after=&limit=&order=`: every
/// read of a person's record by the office (who, when, terminal, basis),
/// one page ([`crate::queries::AccessLogQuery`]).
pub async fn office_access_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(office): Path<String>,
    uri: Uri,
    Query(query): Query<AccessLogQuery>,
) -> Result<AccessLog, ApiError> {
    auditors_only(&state, &caller).await?;
    let office = office_number(&office)?;
    access_log_page(&state, None, Some(office.as_str()), &uri, &query).await
}
