//! The office web screen (介護WEBサービス for care-office staff), served
//! under `/ui` by the same server as the API: the terminal's client
//! certificate (mTLS, checked with the API's own rules on every request)
//! plus a staff login. Server-rendered HTML ([maud]), Japanese by default,
//! English with `?lang=en` or the toggle; one small script for the live
//! parts (Server-Sent Events); everything served from the binary.
//!
//! Layout: `staff.rs` accounts, sessions and the staff access log;
//! `web.rs` the request plumbing (language, extractors, errors, layout);
//! one file per screen: `caseload.rs`, `person.rs`, `forms.rs` (proxy
//! application, care-plan notification), `subsidy.rs`, `terminals.rs`;
//! `names.rs` the persons' names (search, the logged reads of names);
//! `me.rs` is the person's own view under `/me` (sign-in with the My
//! Number card, no client certificate, no staff login).
//! Decisions are in docs/ui.md.

mod caseload;
mod forms;
mod me;
mod names;
mod person;
pub mod staff;
mod subsidy;
mod terminals;
mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::state::AppState;

pub use me::{ACCESS_LOG_PAGE_ENTRIES, PERSON_SESSION_COOKIE, SIGN_IN_COOKIE};
pub use web::{CSRF_FIELD, LANG_COOKIE, SESSION_COOKIE};

/// The person's view, to be nested under `/me` (`me.rs`, docs/ui.md "The
/// person's view").
pub fn me_router() -> Router<AppState> {
    Router::new()
        .route("/", get(me::page))
        .route("/login", get(me::login_page).post(me::login_submit))
        .route("/logout", post(me::logout))
        .route("/documents/{sha256}", get(me::document))
        .route("/consents/{office}/revoke", post(me::revoke_consent))
        .fallback(me::not_found)
        .layer(axum::middleware::map_response(web::security_headers))
}

/// Largest subsidy form (with its scanned attachments), in bytes.
pub const SUBSIDY_FORM_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The screens, to be nested under `/ui`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(web::home))
        .route("/static/ui.css", get(web::css))
        .route("/static/ui.js", get(web::js))
        .route("/lang", get(web::switch_language))
        .route("/login", get(web::login_page).post(web::login_submit))
        .route("/logout", post(web::logout))
        .route("/caseload", get(caseload::page))
        .route("/caseload/rows", get(caseload::rows))
        .route("/events", get(caseload::events))
        .route("/persons/{insurer}/{insured}", get(person::page))
        .route(
            "/persons/{insurer}/{insured}/documents/{sha256}",
            get(person::document),
        )
        .route(
            "/persons/{insurer}/{insured}/apply",
            get(forms::proxy_page).post(forms::proxy_submit),
        )
        .route("/care-plan", get(forms::care_plan_start))
        .route(
            "/care-plan/{insurer}/{insured}",
            get(forms::care_plan_page).post(forms::care_plan_submit),
        )
        .route(
            "/care-plan/{insurer}/{insured}/consent",
            get(forms::consent_status),
        )
        .route(
            "/subsidy",
            get(subsidy::page)
                .post(subsidy::submit)
                .layer(DefaultBodyLimit::max(SUBSIDY_FORM_BYTES_MAX)),
        )
        .route("/subsidy/calculate", post(subsidy::calculate_preview))
        .route("/terminals", get(terminals::page))
        .route(
            "/terminals/{terminal}/lost",
            get(terminals::confirm).post(terminals::report),
        )
        .fallback(web::not_found)
        .layer(axum::middleware::map_response(web::security_headers))
}
