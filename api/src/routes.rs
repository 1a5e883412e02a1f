//! Every route of the API, declared once: its path, its handler, what it
//! does and who may call it. The axum router and the OpenAPI document
//! (`GET /v1/openapi.json`) are both derived from [`api_routes`]: the
//! handler's own types give the parameters, the body, the answers and the
//! problems (`openapi.rs`), so a route cannot be served undocumented or
//! documented unserved.

use std::sync::Arc;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use aide::openapi::OpenApi;
use aide::transform::TransformOperation;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use serde_json::Value;
use tower::ServiceBuilder;

use crate::extract::DOCUMENT_UPLOAD_BYTES_MAX;
use crate::state::AppState;
use crate::{
    audit, card_consent, care_plan, commands, documents, me, openapi, ops, personal, queries,
    subsidies, updates,
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

/// Who may read a person's record (`auth::authorise_person_read`).
const PERSON_READERS: &str = "an office with live consent or as care-plan office (insurer sharing, active terminal; logged), the person's insurer, auditors";

/// Who may call the operations routes without a certificate.
const ANYONE: &str = "anyone, no certificate";

/// Any authenticated principal.
const ANY_PRINCIPAL: &str = "any principal";

/// The documentation of one operation: what it does and who may call it
/// (the handler enforces it with `Caller::allow` or the person-read rule).
fn op(
    summary: &'static str,
    allowed: &'static str,
) -> impl FnOnce(TransformOperation<'_>) -> TransformOperation<'_> {
    move |operation| {
        operation
            .summary(summary)
            .description(&format!("Allowed: {allowed}."))
    }
}

/// The body limit of the document upload routes.
fn upload_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(DOCUMENT_UPLOAD_BYTES_MAX)
}

/// Every route of the API (the office screens under `/ui` are HTML, not
/// part of the API, and are nested by [`router`]).
pub(crate) fn api_routes() -> ApiRouter<AppState> {
    let routes = ApiRouter::new()
        .api_route("/healthz", get_with(ops::healthz, op("Liveness", ANYONE)))
        .api_route(
            "/readyz",
            get_with(
                ops::readyz,
                op("Readiness (the store and the writer answer)", ANYONE),
            ),
        )
        .api_route(
            "/metrics",
            get_with(ops::metrics, op("Prometheus metrics", ANY_PRINCIPAL)),
        )
        .api_route(
            "/v1/openapi.json",
            get_with(ops::openapi, op("This document", ANY_PRINCIPAL)),
        )
        .api_route(
            "/v1/asyncapi.json",
            get_with(
                ops::asyncapi,
                op(
                    "The AsyncAPI 3.0 document of the NATS surface (docs/asyncapi.json)",
                    ANY_PRINCIPAL,
                ),
            ),
        );
    let routes = person_routes(routes);
    let routes = organisation_routes(routes);
    let routes = document_and_subsidy_routes(routes);
    let routes = consent_and_audit_routes(routes);
    person_view_routes(routes)
}

/// Who may call the person's view: the person signed in with their own
/// card (`Authorization: Bearer`), for their own record only.
const THE_PERSON: &str = "the signed-in person (a session opened with their My Number card; bearer token), their own record only; no client certificate admits it";

/// The sign-in routes: anyone, no client certificate (the card is the
/// credential). Declared with an empty security requirement.
fn sign_in_op(
    summary: &'static str,
) -> impl FnOnce(TransformOperation<'_>) -> TransformOperation<'_> {
    move |mut operation| {
        operation.inner_mut().security.push(Default::default());
        op(
            summary,
            "anyone, no certificate; the signature of a card linked to a person",
        )(operation)
    }
}

/// The person's own view (`/v1/me`, docs/api.md "The person's view").
fn person_view_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/v1/me/challenge",
            post_with(
                me::challenge,
                sign_in_op("A sign-in challenge for the person's My Number card to sign"),
            ),
        )
        .api_route(
            "/v1/me/sessions",
            post_with(
                me::open_session,
                sign_in_op("Sign in with the card's signature over a challenge: the person's session (bearer token)"),
            ),
        )
        .api_route(
            "/v1/me/session",
            delete_with(me::close_session, op("Sign out", THE_PERSON)),
        )
        .api_route(
            "/v1/me",
            get_with(
                me::record,
                op(
                    "The person's own record: certifications and progress, certificates, ledgers, care-plan office, consents, documents (logged)",
                    THE_PERSON,
                ),
            ),
        )
        .api_route(
            "/v1/me/access-log",
            get_with(
                me::access_log,
                op(
                    "Who read the person's record, newest first (?after=&limit=&order=; logged)",
                    THE_PERSON,
                ),
            ),
        )
        .api_route(
            "/v1/me/documents/{sha256}",
            get_with(
                me::document,
                op("Download one of the person's documents (logged)", THE_PERSON),
            ),
        )
        .api_route(
            "/v1/me/consents/{office}",
            delete_with(
                me::revoke_consent,
                op("The person revokes an office's consent", THE_PERSON),
            ),
        )
}

/// The routes about one insured person.
fn person_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/v1/persons/{insurer}/{insured}/eligibility",
            get_with(
                queries::eligibility,
                op("Eligibility certificates", PERSON_READERS),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/certifications",
            get_with(
                queries::certifications,
                op("Certification status and history", PERSON_READERS),
            )
            .post_with(
                commands::file_application,
                op(
                    "Proxy certification application",
                    "an office with consent or as care-plan office",
                ),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/documents",
            get_with(
                queries::documents,
                op("Documents of the certifications", PERSON_READERS),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/ledgers",
            get_with(queries::ledgers, op("Benefit ledgers", PERSON_READERS)),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/access-log",
            get_with(
                queries::person_access_log,
                op("Who read the record", "the person's insurer, auditors"),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/consents",
            post_with(
                commands::give_consent,
                op("Record a consent (system integration)", "the federation"),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/consents/{office}",
            delete_with(
                commands::revoke_consent,
                op("Revoke a consent", "the office itself, the federation"),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/care-plan-office",
            post_with(
                care_plan::notify_care_plan_office,
                op(
                    "Care-plan office notification (居宅サービス計画作成依頼届出) by the office itself",
                    "an office with the person's live consent",
                ),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/personal",
            get_with(
                personal::personal,
                op(
                    "Personal fields opened with the person's key (忘却済み once forgotten)",
                    PERSON_READERS,
                ),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/forget",
            post_with(
                personal::forget,
                op(
                    "Forget the person (本人情報の消去): destroy their key, record insured.person_forgotten",
                    "the person's insurer (no Idempotency-Key: idempotent per person)",
                ),
            ),
        )
}

/// The routes about offices, insurers and institutions.
fn organisation_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/v1/offices/{office}/caseload",
            get_with(
                queries::caseload,
                op(
                    "Persons the office may see (?after=&limit=)",
                    "the office itself, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/offices/{office}/updates",
            get_with(
                updates::updates,
                op(
                    "Server-Sent Events of the caseload (Last-Event-ID = position)",
                    "the office itself, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/offices/{office}/terminals",
            get_with(
                queries::terminals,
                op(
                    "The office's terminals",
                    "the office itself, the federation, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/offices/{office}/terminals/{terminal}/lost",
            post_with(
                commands::report_terminal_lost,
                op(
                    "Report a terminal lost or stolen",
                    "the office itself (never its last other active terminal: 403 last_other_terminal), the federation",
                ),
            ),
        )
        .api_route(
            "/v1/offices/{office}/terminals/{terminal}/reinstatement",
            post_with(
                commands::reinstate_terminal,
                op(
                    "Reinstate a suspended terminal with a new credential (the new client certificate's SHA-256)",
                    "the federation",
                ),
            ),
        )
        .api_route(
            "/v1/terminals",
            get_with(
                queries::all_terminals,
                op("Every terminal", "the federation, auditors"),
            ),
        )
        .api_route(
            "/v1/insurers",
            post_with(
                commands::onboard_insurer,
                op(
                    "Onboard an insurer (insurer.onboarded); until then its status messages are refused (insurer_not_onboarded)",
                    "the federation",
                ),
            ),
        )
        .api_route(
            "/v1/insurers/{insurer}",
            get_with(
                queries::insurer,
                op(
                    "Insurer rollout status",
                    "the insurer, the federation, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/insurers/{insurer}/overdue-applications",
            get_with(
                queries::overdue_applications,
                op(
                    "Open applications past their deadline",
                    "the insurer, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/medical/{institution}/opinion-requests",
            get_with(
                queries::opinion_requests,
                op(
                    "Opinion requests addressed to the institution",
                    "the institution, auditors",
                ),
            ),
        )
        .api_route(
            "/v1/access-log",
            get_with(queries::access_log, op("The whole access log", "auditors")),
        )
}

/// Document uploads and downloads, and subsidies.
fn document_and_subsidy_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet",
            post_with(
                documents::upload_investigation_sheet,
                op(
                    "Upload the investigation sheet (認定調査票; body = the document, Content-Type = its media type)",
                    "the person's insurer",
                ),
            )
            .layer(upload_limit()),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/certifications/{seq}/opinion",
            post_with(
                documents::upload_opinion,
                op(
                    "Upload the doctor's opinion (主治医意見書; body = the document, Content-Type = its media type)",
                    "the medical institution asked for it",
                ),
            )
            .layer(upload_limit()),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/documents/{sha256}",
            get_with(
                documents::download_person_document,
                op(
                    "Download a document of the person's certifications by digest",
                    PERSON_READERS,
                ),
            ),
        )
        .api_route(
            "/v1/attachments",
            post_with(
                documents::upload_attachment,
                op(
                    "Upload a subsidy attachment (body = the document); answers its reference",
                    "an office, a medical institution",
                ),
            )
            .layer(upload_limit()),
        )
        .api_route(
            "/v1/subsidies",
            get_with(
                queries::subsidies,
                op(
                    "Subsidy applications",
                    "the federation and auditors (all), an office or institution (its own)",
                ),
            )
            .post_with(
                subsidies::apply,
                op(
                    "Apply for the subsidy (助成金申請) with uploaded attachments",
                    "an office, a medical institution",
                ),
            ),
        )
        .api_route(
            "/v1/subsidies/{application}/decisions",
            post_with(
                subsidies::decide,
                op(
                    "Review, deficiency, decision or payment of a subsidy application",
                    "the federation",
                ),
            ),
        )
        .api_route(
            "/v1/subsidies/{application}/attachments/{sha256}",
            get_with(
                subsidies::download_attachment,
                op(
                    "Download an attachment of a subsidy application",
                    "the federation, auditors, the applicant",
                ),
            ),
        )
}

/// Consent with the My Number card, card links, and the audit routes.
fn consent_and_audit_routes(routes: ApiRouter<AppState>) -> ApiRouter<AppState> {
    routes
        .api_route(
            "/v1/consents/challenge",
            post_with(
                card_consent::challenge,
                op(
                    "A challenge for the My Number card to sign",
                    "an office terminal",
                ),
            ),
        )
        .api_route(
            "/v1/consents/card",
            post_with(
                card_consent::card_consent,
                op(
                    "Record a consent signed with the My Number card",
                    "the office terminal the challenge was issued to",
                ),
            ),
        )
        .api_route(
            "/v1/persons/{insurer}/{insured}/card-links",
            post_with(
                card_consent::link_card,
                op(
                    "Link a card's user-authentication certificate to the person",
                    "the person's insurer, the federation",
                ),
            ),
        )
        .api_route(
            "/v1/audit/verify",
            get_with(
                audit::verify,
                op(
                    "Verify the hash chain, one page of at most a million events (?from=&to=&limit=; next_from names the next page)",
                    "auditors",
                ),
            ),
        )
        .api_route(
            "/v1/audit/persons/{insurer}/{insured}",
            get_with(
                audit::person_as_of,
                op(
                    "A person's read models as of a moment (?as_of=|at_position=), replayed",
                    "auditors",
                ),
            ),
        )
        .api_route(
            "/v1/audit/offices/{office}/access-log",
            get_with(
                audit::office_access_log,
                op("Every read of a person's record by the office", "auditors"),
            ),
        )
}

/// The router of [`api_routes`] and the OpenAPI document it declares.
fn finish() -> (Router<AppState>, OpenApi) {
    // aide generates into a thread-local context: start from a clean one,
    // with responses inferred from the handlers' types and schemas shared
    // through `components`.
    aide::generate::reset_context();
    aide::generate::infer_responses(true);
    aide::generate::extract_schemas(true);
    let mut api = OpenApi::default();
    let router = api_routes().finish_api_with(&mut api, |api| {
        api.title("kiban API")
            .version(env!("CARGO_PKG_VERSION"))
            .description("kiban's HTTPS API (docs/api.md). Every refusal is RFC 9457 problem+json.")
    });
    openapi::complete(&mut api);
    (router, api)
}

/// The OpenAPI 3.1 document of every route, as served at
/// `GET /v1/openapi.json`.
pub fn openapi_document() -> Value {
    serde_json::to_value(finish().1).expect("an OpenAPI document serialises")
}

/// The API as an axum router, for [`crate::serve`] and for `oneshot` tests
/// (which insert a [`crate::ClientIdentity`] extension themselves).
pub fn router(state: AppState) -> Router {
    let (routes, api) = finish();
    let document = Arc::new(serde_json::to_value(api).expect("an OpenAPI document serialises"));
    routes
        .nest("/ui", crate::ui::router())
        .nest("/me", crate::ui::me_router())
        .layer(Extension(ops::OpenApiDocument(document)))
        .fallback(ops::fallback)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::min_position,
        ))
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
        // Outermost: refuses over-limit bodies before anything reads them,
        // and gives every answer its security headers (docs/security.md).
        .layer(axum::middleware::from_fn(crate::hardening::harden))
        .with_state(state)
}
