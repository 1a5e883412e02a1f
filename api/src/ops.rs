//! Operations routes: health, readiness, metrics, the OpenAPI document, and
//! the middleware that counts requests and maps overload to problems.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, ProblemKind};
use crate::routes::ROUTES;
use crate::state::{AppState, LATENCY_BUCKETS_SECONDS};

/// `GET /healthz`: the process serves requests. No certificate needed.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the store answers. No certificate needed.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.inner.store.head().await?;
    Ok("ready\n")
}

/// `GET /metrics`: Prometheus text (request counts, projection lag). Any
/// authenticated principal.
pub async fn metrics(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let mut out = String::new();
    out.push_str(
        "# HELP kiban_api_requests_total Requests answered, by route, method and status.\n",
    );
    out.push_str("# TYPE kiban_api_requests_total counter\n");
    for ((route, method, status), count) in state.inner.metrics.snapshot() {
        let _ = writeln!(
            out,
            "kiban_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
        );
    }
    out.push_str("# HELP kiban_api_request_duration_seconds Time to answer a request (to the response head), by route template and method.\n");
    out.push_str("# TYPE kiban_api_request_duration_seconds histogram\n");
    for ((route, method), histogram) in state.inner.metrics.latencies() {
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS_SECONDS.iter().zip(histogram.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "kiban_api_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let labels = format!("route=\"{route}\",method=\"{method}\"");
        let _ = writeln!(
            out,
            "kiban_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
             kiban_api_request_duration_seconds_sum{{{labels}}} {}\n\
             kiban_api_request_duration_seconds_count{{{labels}}} {}",
            histogram.count, histogram.sum_seconds, histogram.count
        );
    }
    let head = state.inner.store.head().await?;
    out.push_str("# HELP kiban_store_events_total Events appended to the store (its head position); rate() is the append rate.\n");
    out.push_str("# TYPE kiban_store_events_total counter\n");
    let _ = writeln!(out, "kiban_store_events_total {}", head.position);
    out.push_str("# HELP kiban_api_created_total Requests answered 201 Created (commands that appended events, attachments stored), by route template.\n");
    out.push_str("# TYPE kiban_api_created_total counter\n");
    for ((route, method, status), count) in state.inner.metrics.snapshot() {
        if status == 201 {
            let _ = writeln!(
                out,
                "kiban_api_created_total{{route=\"{route}\",method=\"{method}\"}} {count}"
            );
        }
    }
    out.push_str("# HELP kiban_projection_lag_events Events between the store's head and a projection's checkpoint.\n");
    out.push_str("# TYPE kiban_projection_lag_events gauge\n");
    for lag in state.inner.projections.lag().await? {
        let _ = writeln!(
            out,
            "kiban_projection_lag_events{{projection=\"{}\"}} {}",
            lag.projection,
            lag.events()
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route. Any
/// authenticated principal.
pub async fn openapi(_caller: Caller) -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI document, built from [`ROUTES`] (the router refuses to
/// start with a route missing from it).
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "description": format!("Allowed: {}.", route.allowed),
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "RFC 9457 problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            }
        });
        if route.command {
            operation["parameters"]
                .as_array_mut()
                .expect("array")
                .push(json!({
                    "name": "Idempotency-Key", "in": "header", "required": true,
                    "schema": {"type": "string", "format": "uuid"}
                }));
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "kiban API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string"}
            }
        }}}
    })
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
