//! `kiban-api`: the HTTPS API of kiban (DESIGN.md decision 10).
//!
//! axum under `/v1`, served over rustls with client certificates. The
//! client certificate's URI SAN names the [`Principal`] (an office terminal,
//! an insurer, a medical institution, an auditor, the federation; see
//! [`principal`]); queries read the projections, commands go through the
//! engine with the caller's `Idempotency-Key` as the first event's id, and
//! every refusal is RFC 9457 problem+json ([`ApiError`]).
//!
//! # Entry points
//!
//! - [`serve`]`(&`[`ServeConfig`]`, `[`AppState`]`, CancellationToken)` →
//!   [`Server`] (its `local_addr`, and `wait()` after shutdown).
//! - [`router`]`(`[`AppState`]`)` for `oneshot` tests; insert a
//!   [`ClientIdentity`] extension to play a client certificate.
//! - [`dev_pki`]`(dir, principals)`: development CA, server and client
//!   certificates as PEM files.
//!
//! # Layout
//!
//! - `principal.rs`: certificate → principal; `pki.rs`: certificates and
//!   the rustls configuration; `server.rs`: the accept loop, with its
//!   connection limits and timeouts ([`ConnectionLimits`]).
//! - `auth.rs`: the caller extractor, the one authorisation check
//!   (`Caller::allow`) and the rules that need the store; `extract.rs`: the
//!   JSON body, [`Command`] (body, `Idempotency-Key`, caller) and document
//!   upload extractors; `queries.rs`, `commands.rs`: the `/v1` handlers;
//!   `documents.rs`: uploads and downloads of documents; `subsidies.rs`:
//!   subsidy applications and decisions; `care_plan.rs`: the care-plan
//!   office notification; `card_consent.rs`: consent with the My Number
//!   card (challenge, signature, card links); `me/`: the person's own
//!   view (`/v1/me`: sign-in with the person's card, sessions, their
//!   record and its access log; the web page is `ui/me.rs`);
//!   `ops.rs`: health, readiness, metrics, OpenAPI; `routes.rs`: every
//!   route declared once, with the router and the OpenAPI 3.1 document
//!   derived from it ([`router`], [`openapi_document`]); `openapi.rs`: how
//!   the extractors and answers describe themselves in that document.
//! - `error.rs`: [`ApiError`] and the problem kinds; `hardening.rs`: the
//!   outermost middleware (over-limit bodies refused before they are read,
//!   every refusal problem+json, the security headers; docs/security.md).
//!
//! # Invariants
//!
//! - Only this crate knows HTTP.
//! - Every route except `/healthz`, `/readyz` and the person's view
//!   requires a verified client certificate naming a principal; a
//!   certificate from another CA fails the handshake. The person's view
//!   (`/v1/me`, `/me`) requires a person's session opened with their My
//!   Number card, and nothing else admits it.
//! - Every read of a person's record by an office appends
//!   `insured.record_viewed` before any data is returned; every read by the
//!   person themself (`/v1/me`, `/me`) appends `insured.own_record_viewed`.
//! - Problem bodies never carry internals; logs carry no personal data
//!   (metrics use route templates, not paths).
//! - Every task (the accept loop, each connection) is owned by the
//!   [`Server`] and stops when the shutdown token is cancelled.

mod audit;
mod auth;
mod card_consent;
mod care_plan;
#[cfg(feature = "client")]
pub mod client;
mod commands;
mod documents;
mod error;
mod extract;
mod hardening;
pub mod me;
mod openapi;
mod ops;
pub mod paths;
mod personal;
pub mod pki;
pub mod principal;
mod queries;
mod routes;
mod server;
mod state;
mod subsidies;
pub mod ui;
mod updates;

pub use auth::Caller;
pub use card_consent::{
    CONSENT_CHALLENGE_TTL_SECONDS, CONSENT_CHALLENGES_MAX, CONSENT_CHALLENGES_PER_TERMINAL_MAX,
    CardLinkRequest, CardTrust, CarePlanPurpose, ChallengeIssued, ChallengeRequest,
    SignedChallenge,
};
pub use care_plan::CarePlanNotification;
pub use commands::{
    APPLICATIONS_PER_PERSON_MAX, CommandAccepted, ConsentRecord, LostReport, ProxyApplication,
};
pub use documents::StoredDocument;
pub use error::{ApiError, PROBLEM_JSON, PROBLEM_TYPE_PREFIX, Problem, ProblemKind};
pub use extract::{
    Command, CommandKey, DOCUMENT_MEDIA_TYPES, DOCUMENT_UPLOAD_BYTES_MAX, IDEMPOTENCY_KEY,
};
pub use ipnet::IpNet;
pub use pki::{DevPki, TlsFiles, dev_pki, dev_principals};
pub use principal::{ClientIdentity, Principal};
pub use queries::CASELOAD_PAGE_DEFAULT;
pub use routes::{
    REQUEST_BODY_BYTES_MAX, REQUEST_TIMEOUT_MS, REQUESTS_IN_FLIGHT_MAX, openapi_document, router,
};
pub use server::{
    CONNECTIONS_MAX, CONNECTIONS_PER_ADDRESS_MAX, ClientAddress, ConnectionLimits,
    HANDSHAKE_TIMEOUT_MS, HEADER_READ_TIMEOUT_MS, PROXY_HEADER_BYTES_MAX, ServeConfig, ServeError,
    Server, TrustedProxies, parse_proxy_source, serve, serve_behind, serve_limited, serve_router,
    serve_router_behind,
};
pub use state::{
    AppState, Clock, MIN_POSITION_HEADER, POSITION_HEADER, READ_YOUR_WRITES_WAIT_MS,
    SUBSIDY_POLICY_DEFAULT, UpdateFeed, WriterProbe,
};
pub use subsidies::{SubsidyApplicationBody, SubsidyDecision};
pub use updates::LAST_EVENT_ID;
