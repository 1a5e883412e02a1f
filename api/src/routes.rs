//! The route table: every route, its method, who may call it, and the
//! router built from it.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use tower::ServiceBuilder;

use crate::state::AppState;
use crate::{
    audit, card_consent, care_plan, commands, documents, ops, personal, queries, subsidies, updates,
};

/// Largest request body, in bytes. Commands are small JSON objects (a
/// consent, an application); 64 KiB is far above any and bounds memory per
/// request. Document uploads have their own, larger limit
/// (`DOCUMENT_UPLOAD_BYTES_MAX`).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// Longest a request may take, in milliseconds, before it is answered
/// 504: a query is a few lookups, a command one append; ten seconds means
/// the database is in trouble, and the client should hear so.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Most requests handled at once; beyond it requests are refused at once
/// with 503 rate-limited rather than queued. Sized to the read-model and
/// store pools (a request holds at most one connection of each).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// The axum path template.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Who may call it.
    pub allowed: &'static str,
    /// Whether it is a command (takes an `Idempotency-Key`).
    pub command: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    allowed: &'static str,
    command: bool,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        allowed,
        command,
    }
}

const PERSON_READERS: &str = "an office with live consent or as care-plan office (insurer sharing, active terminal; logged), the person's insurer, auditors";

/// Every route of the API.
pub const ROUTES: &[RouteDoc] = &[
    route(
        "GET",
        "/healthz",
        "Liveness",
        "anyone, no certificate",
        false,
    ),
    route(
        "GET",
        "/readyz",
        "Readiness (the store answers)",
        "anyone, no certificate",
        false,
    ),
    route(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "any principal",
        false,
    ),
    route(
        "GET",
        "/v1/openapi.json",
        "This document",
        "any principal",
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/eligibility",
        "Eligibility certificates",
        PERSON_READERS,
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/certifications",
        "Certification status and history",
        PERSON_READERS,
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/documents",
        "Documents of the certifications",
        PERSON_READERS,
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/ledgers",
        "Benefit ledgers",
        PERSON_READERS,
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/access-log",
        "Who read the record",
        "the person's insurer, auditors",
        false,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/certifications",
        "Proxy certification application",
        "an office with consent or as care-plan office",
        true,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/consents",
        "Record a consent (system integration)",
        "the federation",
        true,
    ),
    route(
        "DELETE",
        "/v1/persons/{insurer}/{insured}/consents/{office}",
        "Revoke a consent",
        "the office itself, the federation",
        true,
    ),
    route(
        "GET",
        "/v1/offices/{office}/caseload",
        "Persons the office may see (?after=&limit=)",
        "the office itself, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/offices/{office}/updates",
        "Server-Sent Events of the caseload (Last-Event-ID = position)",
        "the office itself, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/offices/{office}/terminals",
        "The office's terminals",
        "the office itself, the federation, auditors",
        false,
    ),
    route(
        "POST",
        "/v1/offices/{office}/terminals/{terminal}/lost",
        "Report a terminal lost or stolen",
        "the office itself, the federation",
        true,
    ),
    route(
        "GET",
        "/v1/terminals",
        "Every terminal",
        "the federation, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/insurers/{insurer}",
        "Insurer rollout status",
        "the insurer, the federation, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/insurers/{insurer}/overdue-applications",
        "Open applications past their deadline",
        "the insurer, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/medical/{institution}/opinion-requests",
        "Opinion requests addressed to the institution",
        "the institution, auditors",
        false,
    ),
    route(
        "GET",
        "/v1/subsidies",
        "Subsidy applications",
        "the federation and auditors (all), an office or institution (its own)",
        false,
    ),
    route(
        "GET",
        "/v1/access-log",
        "The whole access log",
        "auditors",
        false,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet",
        "Upload the investigation sheet (認定調査票; body = the document, Content-Type = its media type)",
        "the person's insurer",
        true,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/certifications/{seq}/opinion",
        "Upload the doctor's opinion (主治医意見書; body = the document, Content-Type = its media type)",
        "the medical institution asked for it",
        true,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/documents/{sha256}",
        "Download a document of the person's certifications by digest",
        PERSON_READERS,
        false,
    ),
    route(
        "POST",
        "/v1/attachments",
        "Upload a subsidy attachment (body = the document); answers its reference",
        "an office, a medical institution",
        false,
    ),
    route(
        "POST",
        "/v1/subsidies",
        "Apply for the subsidy (助成金申請) with uploaded attachments",
        "an office, a medical institution",
        true,
    ),
    route(
        "POST",
        "/v1/subsidies/{application}/decisions",
        "Review, deficiency, decision or payment of a subsidy application",
        "the federation",
        true,
    ),
    route(
        "GET",
        "/v1/subsidies/{application}/attachments/{sha256}",
        "Download an attachment of a subsidy application",
        "the federation, auditors, the applicant",
        false,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/care-plan-office",
        "Care-plan office notification (居宅サービス計画作成依頼届出) by the office itself",
        "an office with the person's live consent",
        true,
    ),
    route(
        "POST",
        "/v1/consents/challenge",
        "A challenge for the My Number card to sign ({insurer, insured, consent_expires_at})",
        "an office terminal",
        false,
    ),
    route(
        "POST",
        "/v1/consents/card",
        "Record a consent signed with the My Number card ({nonce, certificate_hex, signature_hex})",
        "the office terminal the challenge was issued to",
        true,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/card-links",
        "Link a card's user-authentication certificate to the person ({certificate_hex})",
        "the person's insurer, the federation",
        true,
    ),
    route(
        "GET",
        "/v1/audit/verify",
        "Verify the hash chain, one page of at most a million events (?from=&to=&limit=; next_from names the next page)",
        "auditors",
        false,
    ),
    route(
        "GET",
        "/v1/audit/persons/{insurer}/{insured}",
        "A person's read models as of a moment (?as_of=|at_position=), replayed",
        "auditors",
        false,
    ),
    route(
        "GET",
        "/v1/audit/offices/{office}/access-log",
        "Every read of a person's record by the office",
        "auditors",
        false,
    ),
    route(
        "GET",
        "/v1/persons/{insurer}/{insured}/personal",
        "Personal fields opened with the person's key (忘却済み once forgotten)",
        PERSON_READERS,
        false,
    ),
    route(
        "POST",
        "/v1/persons/{insurer}/{insured}/forget",
        "Forget the person (本人情報の消去): destroy their key, record insured.person_forgotten",
        "the person's insurer (no Idempotency-Key: idempotent per person)",
        false,
    ),
];

/// Adds `handler` at `path`, refusing (a bug) a route missing from [`ROUTES`].
pub(crate) fn add(
    router: Router<AppState>,
    method: &'static str,
    path: &'static str,
    handler: MethodRouter<AppState>,
) -> Router<AppState> {
    assert!(
        ROUTES.iter().any(|r| r.method == method && r.path == path),
        "route {method} {path} is missing from ROUTES (and so from the OpenAPI document)"
    );
    router.route(path, handler)
}

/// The API as an axum router, for [`crate::serve`] and for `oneshot` tests
/// (which insert a [`crate::ClientIdentity`] extension themselves).
pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    r = add(r, "GET", "/healthz", get(ops::healthz));
    r = add(r, "GET", "/readyz", get(ops::readyz));
    r = add(r, "GET", "/metrics", get(ops::metrics));
    r = add(r, "GET", "/v1/openapi.json", get(ops::openapi));
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/eligibility",
        get(queries::eligibility),
    );
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/certifications",
        get(queries::certifications).post(commands::file_application),
    );
    assert!(
        ROUTES
            .iter()
            .any(|r| r.method == "POST"
                && r.path == "/v1/persons/{insurer}/{insured}/certifications")
    );
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/documents",
        get(queries::documents),
    );
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/ledgers",
        get(queries::ledgers),
    );
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/access-log",
        get(queries::person_access_log),
    );
    r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/consents",
        post(commands::give_consent),
    );
    r = add(
        r,
        "DELETE",
        "/v1/persons/{insurer}/{insured}/consents/{office}",
        delete(commands::revoke_consent),
    );
    r = add(
        r,
        "GET",
        "/v1/offices/{office}/caseload",
        get(queries::caseload),
    );
    r = add(
        r,
        "GET",
        "/v1/offices/{office}/terminals",
        get(queries::terminals),
    );
    r = add(
        r,
        "POST",
        "/v1/offices/{office}/terminals/{terminal}/lost",
        post(commands::report_terminal_lost),
    );
    r = add(
        r,
        "GET",
        "/v1/offices/{office}/updates",
        get(updates::updates),
    );
    r = add(r, "GET", "/v1/terminals", get(queries::all_terminals));
    r = add(r, "GET", "/v1/insurers/{insurer}", get(queries::insurer));
    r = add(
        r,
        "GET",
        "/v1/insurers/{insurer}/overdue-applications",
        get(queries::overdue_applications),
    );
    r = add(
        r,
        "GET",
        "/v1/medical/{institution}/opinion-requests",
        get(queries::opinion_requests),
    );
    r = add(r, "GET", "/v1/subsidies", get(queries::subsidies));
    r = add(r, "GET", "/v1/access-log", get(queries::access_log));
    r = documents::routes(r);
    r = add(r, "POST", "/v1/subsidies", post(subsidies::apply));
    r = add(
        r,
        "POST",
        "/v1/subsidies/{application}/decisions",
        post(subsidies::decide),
    );
    r = add(
        r,
        "GET",
        "/v1/subsidies/{application}/attachments/{sha256}",
        get(subsidies::download_attachment),
    );
    r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/care-plan-office",
        post(care_plan::notify_care_plan_office),
    );
    r = r.nest("/ui", crate::ui::router());
    r = add(
        r,
        "POST",
        "/v1/consents/challenge",
        post(card_consent::challenge),
    );
    r = add(
        r,
        "POST",
        "/v1/consents/card",
        post(card_consent::card_consent),
    );
    r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/card-links",
        post(card_consent::link_card),
    );
    r = add(r, "GET", "/v1/audit/verify", get(audit::verify));
    r = add(
        r,
        "GET",
        "/v1/audit/persons/{insurer}/{insured}",
        get(audit::person_as_of),
    );
    r = add(
        r,
        "GET",
        "/v1/audit/offices/{office}/access-log",
        get(audit::office_access_log),
    );
    r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/personal",
        get(personal::personal),
    );
    r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/forget",
        post(personal::forget),
    );
    r.fallback(ops::fallback)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::count_requests,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(ops::middleware_error))
                .load_shed()
                .concurrency_limit(REQUESTS_IN_FLIGHT_MAX)
                .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS)),
        )
        .with_state(state)
}
