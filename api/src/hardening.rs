//! [`harden`]: the middleware around every route that keeps the API's
//! promises at the edge (docs/security.md):
//!
//! - a body whose `Content-Length` is over the route's limit is refused
//!   with 413 **before** it is read: hyper answers `100 Continue` only when
//!   a handler starts reading, so a client that waits for it gets the 413
//!   instead, and a client that sends anyway has its body drained (up to
//!   [`DRAIN_BYTES_MAX`], for at most the request timeout) so that it reads
//!   the answer rather than a reset;
//! - a refusal that is not problem+json (axum's own: a query string that does
//!   not parse, 405 on a known path with another method) is turned into one,
//!   outside `/ui` and `/me` (whose errors are pages) and the probes;
//! - `Strict-Transport-Security` on every answer; `Cache-Control: no-store`
//!   and `X-Content-Type-Options: nosniff` on every `/v1` answer.

use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, PROBLEM_JSON, ProblemKind};
use crate::extract::DOCUMENT_UPLOAD_BYTES_MAX;
use crate::routes::{REQUEST_BODY_BYTES_MAX, REQUEST_TIMEOUT_MS};
use crate::ui::SUBSIDY_FORM_BYTES_MAX;

/// The `Strict-Transport-Security` of every answer: one year, the API is
/// served over HTTPS only.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Most bytes of an over-limit body read and dropped so that the client
/// reads the 413 rather than a connection reset (a client that sends
/// `Expect: 100-continue` sends none). Beyond it the connection is closed.
pub const DRAIN_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest body of a refusal turned into problem+json that is kept as its
/// `detail` (axum's rejections are one sentence).
const DETAIL_BYTES_MAX: usize = 1024;

/// The body limit of the route `path` (the same limits the routes' own
/// `DefaultBodyLimit` layers apply).
fn body_limit(path: &str) -> usize {
    if path == "/v1/attachments"
        || path.ends_with("/investigation-sheet")
        || path.ends_with("/opinion")
    {
        DOCUMENT_UPLOAD_BYTES_MAX
    } else if path == "/ui/subsidy" {
        SUBSIDY_FORM_BYTES_MAX
    } else {
        REQUEST_BODY_BYTES_MAX
    }
}

/// The middleware (see the module documentation).
pub async fn harden(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    // The screens' errors (the office's `/ui`, the person's `/me`) are
    // pages; the probes answer plain text that load balancers read by
    // status alone.
    let own_form = path == "/ui"
        || path.starts_with("/ui/")
        || path == "/me"
        || path.starts_with("/me/")
        || matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    let mut response = match refuse_large_body(request, &path).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal,
    };
    if !own_form && (response.status().is_client_error() || response.status().is_server_error()) {
        response = as_problem(response).await;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
    );
    if path.starts_with("/v1/") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// The request, or its 413 when its `Content-Length` is over the route's
/// limit.
async fn refuse_large_body(request: Request, path: &str) -> Result<Request, Response> {
    let limit = body_limit(path);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|length| *length > limit as u64) else {
        return Ok(request);
    };
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue && declared <= DRAIN_BYTES_MAX as u64 {
        // The client is sending the body now: read it to the end (and drop
        // it) so that the answer is read, not lost in a reset.
        // Bounded in time as well: this runs outside the request timeout, and
        // a client trickling its body must not hold the connection.
        let drain = to_bytes(request.into_body(), DRAIN_BYTES_MAX);
        let _ = tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), drain).await;
    }
    let mut response = ApiError::new(
        ProblemKind::PayloadTooLarge,
        format!("The body is {declared} bytes; this route takes at most {limit}."),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Err(response)
}

/// `response` as problem+json when it is a refusal in another form.
async fn as_problem(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    let status = response.status();
    let kind = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::Validation,
        StatusCode::UNAUTHORIZED => ProblemKind::Unauthenticated,
        StatusCode::FORBIDDEN => ProblemKind::Forbidden,
        StatusCode::NOT_FOUND => ProblemKind::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ProblemKind::Timeout,
        StatusCode::SERVICE_UNAVAILABLE => ProblemKind::Unavailable,
        // Other refusals (none known) keep their form.
        _ => return response,
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = to_bytes(response.into_body(), DETAIL_BYTES_MAX)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let detail = match (kind, text) {
        (ProblemKind::MethodNotAllowed, _) => match &allow {
            Some(allow) => format!(
                "This route does not take this method; it takes {}.",
                allow.to_str().unwrap_or("another")
            ),
            None => "This route does not take this method.".to_owned(),
        },
        (_, Some(text)) => text,
        (kind, None) => kind.title().to_owned(),
    };
    let mut problem = ApiError::new(kind, detail).into_response();
    if let Some(allow) = allow {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}
