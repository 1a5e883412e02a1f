//! Operations routes: health, readiness, metrics, the OpenAPI document, and
//! the middleware that counts requests and maps overload to problems.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// The media type of the OpenMetrics text exposition (which Prometheus
/// scrapes natively).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics in the OpenMetrics text exposition format.
#[derive(Debug)]
pub struct PrometheusText(pub String);

impl IntoResponse for PrometheusText {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(OPENMETRICS_TEXT),
        );
        response
    }
}

/// A plain-text status (`ok`; `ready` and a few `name value` lines), for
/// load balancers and probes; its own type so that the OpenAPI document
/// gives it a schema.
#[derive(Debug)]
pub struct StatusLine(pub std::borrow::Cow<'static, str>);

/// The media type of a [`StatusLine`].
pub const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

impl IntoResponse for StatusLine {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// `GET /healthz`: the process serves requests. No certificate needed.
pub async fn healthz() -> StatusLine {
    StatusLine("ok\n".into())
}

/// How long `/readyz` waits for the writer's answer, in milliseconds.
pub const READY_WRITER_TIMEOUT_MS: u64 = 1_000;

/// `GET /readyz`: whether this process can serve: the store's database
/// answers, and, in a process whose appends go to another process's writer
/// (`--role api`), a writer answers over NATS. The body says how far the
/// read models lag (`lag_events`: the store's head minus the slowest
/// projection's checkpoint); a lag alone does not make a process unready
/// (every API process reads the same read models, so a load balancer
/// could only take them all out). 503 problem+json when not ready. No
/// certificate needed.
pub async fn readyz(State(state): State<AppState>) -> Result<StatusLine, ApiError> {
    let head = state.inner.store.head().await?.position;
    let writer = match &state.inner.writer_probe {
        None => "local".to_owned(),
        Some(probe) => {
            let timeout = std::time::Duration::from_millis(READY_WRITER_TIMEOUT_MS);
            match tokio::time::timeout(timeout, (**probe)()).await {
                Ok(Ok(head)) => format!("reachable (head {head})"),
                Ok(Err(error)) => {
                    return Err(ApiError::new(
                        ProblemKind::Unavailable,
                        format!("not ready: the writer cannot be reached: {error}"),
                    ));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        ProblemKind::Unavailable,
                        "not ready: the writer did not answer in time",
                    ));
                }
            }
        }
    };
    let lag = state
        .inner
        .projections
        .lag()
        .await?
        .iter()
        .map(|lag| lag.events())
        .max()
        .unwrap_or(0);
    Ok(StatusLine(
        format!("ready\nhead {head}\nwriter {writer}\nlag_events {lag}\n").into(),
    ))
}

/// Holds a read that names a [`crate::state::MIN_POSITION_HEADER`] until
/// the read models have applied that position (bounded), so that a client
/// never reads state older than what it wrote or was told about: 400 for a
/// header that is not a number, 503 when the read models do not get there
/// in time.
pub async fn min_position(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(crate::state::MIN_POSITION_HEADER) else {
        return next.run(request).await;
    };
    let Some(position) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return ApiError::new(
            ProblemKind::Validation,
            "The Kiban-Min-Position header must be a store position (a number).",
        )
        .into_response();
    };
    if !state.await_read_models(position).await {
        return ApiError::new(
            ProblemKind::Unavailable,
            format!("The read models have not reached position {position} yet; retry shortly."),
        )
        .into_response();
    }
    next.run(request).await
}

/// The label of a projection's lag.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: &'static str,
}

/// `GET /metrics`: request counts and latencies, the store's head and the
/// projections' lag, in the OpenMetrics text format. Any authenticated
/// principal.
pub async fn metrics(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<PrometheusText, ApiError> {
    let head = state.inner.store.head().await?;
    let lags = state.inner.projections.lag().await?;
    let mut registry = Registry::default();
    state.inner.metrics.register(&mut registry);
    registry.register(
        "kiban_store_events",
        "Events appended to the store (its head position); rate() is the append rate",
        ConstCounter::new(head.position),
    );
    let lag = Family::<ProjectionLabels, Gauge>::default();
    for projection in lags {
        let events = i64::try_from(projection.events()).unwrap_or(i64::MAX);
        lag.get_or_create(&ProjectionLabels {
            projection: projection.projection,
        })
        .set(events);
    }
    registry.register(
        "kiban_projection_lag_events",
        "Events between the store's head and a projection's checkpoint",
        lag,
    );
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError::internal(&e))?;
    Ok(PrometheusText(text))
}

/// The OpenAPI document the router was built with (`routes.rs`), shared
/// by every request of `GET /v1/openapi.json`.
#[derive(Debug, Clone)]
pub struct OpenApiDocument(pub Arc<Value>);

/// `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route. Any
/// authenticated principal.
pub async fn openapi(
    Extension(OpenApiDocument(document)): Extension<OpenApiDocument>,
    _caller: Caller,
) -> Json<Value> {
    Json(document.as_ref().clone())
}

/// The AsyncAPI 3.0 document of the NATS surface: the committed
/// `docs/asyncapi.json`, which kiban-bus's tests keep equal to what it
/// generates from the message types (the API does not depend on the bus).
static ASYNCAPI: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    serde_json::from_str(include_str!("../../docs/asyncapi.json"))
        .expect("docs/asyncapi.json is JSON (kiban-bus's tests check it)")
});

/// `GET /v1/asyncapi.json`: the AsyncAPI 3.0 document of the NATS surface
/// (municipal status messages, receipts, office updates, relayed events).
/// Any authenticated principal.
pub async fn asyncapi(_caller: Caller) -> Json<Value> {
    Json(ASYNCAPI.clone())
}

/// Counts every answered request by route template (never the concrete
/// path, which holds personal numbers).
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        _ => "OTHER",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    // Until the head of the response is ready (an SSE stream counts its
    // opening, not its life).
    state.inner.metrics.count(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Maps errors of the tower layers (load shedding, timeout) to problems.
pub async fn middleware_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            ProblemKind::Timeout,
            "The request took longer than the limit.",
        )
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            ProblemKind::RateLimited,
            "Too many requests in flight; retry shortly.",
        )
    } else {
        ApiError::internal(&error)
    }
}

/// The answer for a path no route matches.
pub async fn fallback() -> ApiError {
    ApiError::new(ProblemKind::NotFound, "No such route.")
}
