//! [`ApiError`]: every refusal of the API as RFC 9457 problem+json.
//!
//! Each kind has a stable `type` URI, `urn:kiban:problem:<kind>`; `title`
//! is fixed per kind, `detail` says what to fix and never carries internals
//! (database errors are logged, not returned).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::EngineError;
use kiban_events::domain::RejectionCode;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:kiban:problem:";

/// The kinds of problem, each with its status and stable `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: a malformed request (path, query, header or body).
    Validation,
    /// 401: no client certificate, or one that names no principal.
    Unauthenticated,
    /// 403: the principal may not do this.
    Forbidden,
    /// 403: an office without live consent or care-plan registration.
    ConsentRequired,
    /// 403: the office terminal is suspended (lost or stolen).
    TerminalSuspended,
    /// 404: nothing there, or nothing the principal may see.
    NotFound,
    /// 405: the route does not take this method (`Allow` names those it
    /// takes).
    MethodNotAllowed,
    /// 409: the command conflicts with what is recorded (an idempotency key
    /// reused for another command, a stream that kept changing).
    Conflict,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: a document upload of a media type not accepted.
    UnsupportedMediaType,
    /// 422: a business rule refused the command (the rejection code says
    /// which).
    Rejected,
    /// 503: too many requests in flight; retry later.
    RateLimited,
    /// 503: the store or read models are unavailable; retry later.
    Unavailable,
    /// 504: the request took longer than the limit.
    Timeout,
    /// 500: a bug; details are in the server log.
    Internal,
}

impl ProblemKind {
    /// The status code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ConsentRequired | Self::TerminalSuspended => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable slug of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::ConsentRequired => "consent-required",
            Self::TerminalSuspended => "terminal-suspended",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Rejected => "rejected",
            Self::RateLimited => "rate-limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    /// The fixed title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Validation => "The request is malformed",
            Self::Unauthenticated => {
                "Authentication is required (a client certificate; for /v1/me, a person's session)"
            }
            Self::Forbidden => "Not allowed for this principal",
            Self::ConsentRequired => "The person's consent is required",
            Self::TerminalSuspended => "The terminal is suspended",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "The route does not take this method",
            Self::Conflict => "Conflicts with what is recorded",
            Self::PayloadTooLarge => "The request body is too large",
            Self::UnsupportedMediaType => "The media type is not accepted",
            Self::Rejected => "Refused by a business rule",
            Self::RateLimited => "Too many requests in flight",
            Self::Unavailable => "Temporarily unavailable",
            Self::Timeout => "The request took too long",
            Self::Internal => "Internal error",
        }
    }

    /// The full `type` URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.slug())
    }

    /// Every kind, for the documentation and its test.
    pub const ALL: [ProblemKind; 15] = [
        Self::Validation,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::ConsentRequired,
        Self::TerminalSuspended,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Rejected,
        Self::RateLimited,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
    ];
}

/// A refusal of the API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct ApiError {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What to fix, for the caller; no internals.
    pub detail: String,
    /// The business rule's code, for [`ProblemKind::Rejected`] and
    /// [`ProblemKind::ConsentRequired`].
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            code: None,
        }
    }

    /// 400 validation.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Validation, detail)
    }

    /// 403 forbidden.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Forbidden, detail)
    }

    /// 404 not found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::NotFound, detail)
    }

    /// 500, logging the cause (which never reaches the body).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ProblemKind::Internal, "See the server log.")
    }
}

/// A problem document (RFC 9457), as every refusal answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// `urn:kiban:problem:<kind>`: stable, what a client branches on.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Fixed per kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What to fix; never internals.
    pub detail: String,
    /// The business rule's code when one refused
    /// (`rejected`, `consent-required`, card consent refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = Problem {
            type_uri: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail,
            code: self.code.map(str::to_owned),
        };
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<kiban_projections::Error> for ApiError {
    fn from(error: kiban_projections::Error) -> Self {
        match error {
            kiban_projections::Error::Database(_)
            | kiban_projections::Error::Store(_)
            | kiban_projections::Error::Stopped => {
                tracing::warn!(%error, "read models unavailable");
                Self::new(
                    ProblemKind::Unavailable,
                    "The read models are unavailable; retry later.",
                )
            }
            other => Self::internal(&other),
        }
    }
}

impl From<kiban_store::Error> for ApiError {
    fn from(error: kiban_store::Error) -> Self {
        tracing::warn!(%error, "event store unavailable");
        Self::new(
            ProblemKind::Unavailable,
            "The event store is unavailable; retry later.",
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rejected(rejection) => {
                let kind = match rejection.code() {
                    RejectionCode::NoViewingBasis => ProblemKind::ConsentRequired,
                    RejectionCode::InsurerNotSharing => ProblemKind::NotFound,
                    // A rule about who may report (docs/security.md,
                    // "A stolen terminal"), not about the record.
                    RejectionCode::LastOtherTerminal => ProblemKind::Forbidden,
                    _ => ProblemKind::Rejected,
                };
                Self {
                    kind,
                    detail: rejection.message().to_owned(),
                    code: Some(rejection.code().as_str()),
                }
            }
            EngineError::NotPermitted { .. } => {
                Self::forbidden("This principal may not record this event.")
            }
            EngineError::DuplicateEventId(_) => Self::new(
                ProblemKind::Conflict,
                "The Idempotency-Key was already used for a different command.",
            ),
            EngineError::Contention { .. } => Self::new(
                ProblemKind::Conflict,
                "The record kept changing under the command; retry with the same Idempotency-Key.",
            ),
            EngineError::Store(error) => error.into(),
            other @ EngineError::Corrupted { .. } => Self::internal(&other),
        }
    }
}
