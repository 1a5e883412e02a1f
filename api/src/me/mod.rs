//! The person's own view (本人の閲覧, マイナポータル-style; issue 21): the
//! insured person, signed in with their own My Number card, reads their
//! record — certifications and their progress, certificates (負担割合証,
//! 負担限度額認定証), benefit ledgers, the care-plan office, consents (and
//! revokes one), documents about them — and the access log of their record:
//! which office read it, through which terminal, when and on what basis.
//!
//! - `sign_in.rs`: challenges, the card check, sessions.
//! - Here: the [`Me`] extractor (`Authorization: Bearer <token>`) and the
//!   `/v1/me` handlers; the web page `/me` is `ui::me`.
//!
//! Every read of the record through the person's view appends
//! `insured.own_record_viewed` before any data is returned: the person's
//! own reads are in the access log too. A person's session names one
//! record; no route under `/v1/me` takes a person in its path, so a person
//! cannot name anyone else's.

pub(crate) mod sign_in;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Uri, header};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::CommandContext;
use kiban_events::domain::Sha256Digest;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::envelope::Actor;
use kiban_projections::{ApplicationView, DocumentView, EligibilityView, LedgersView, ReadModels};

use crate::auth::{PersonId, execute_on_person, new_event_id, office_number};
use crate::card_consent::{ChallengeIssued, SignedChallenge};
use crate::commands::{CommandAccepted, Created, execute};
use crate::documents::{DocumentBytes, person_document};
use crate::error::{ApiError, ProblemKind};
use crate::extract::JsonBody;
use crate::queries::{AccessLog, AccessLogOrderParam, AccessLogQuery, access_log_page};
use crate::state::AppState;

pub use sign_in::{
    OpenedSession, PERSON_SESSION_SECONDS, PersonSession, SIGN_IN_CHALLENGE_TTL_SECONDS,
    SIGN_IN_CHALLENGES_MAX, SIGN_IN_CHALLENGES_PER_ADDRESS_MAX, address_key,
    open_simulated_session, sign_in_challenge_text,
};

/// The actor of what the person does through their view (revoking a
/// consent, reading): `system:me`, the person's view acting for the
/// signed-in person (whose record the stream is).
pub const PERSON_VIEW_ACTOR: &str = "me";

/// The signed-in person of a `/v1/me` request: the session of the bearer
/// token in `Authorization`.
#[derive(Debug, Clone)]
pub struct Me(pub PersonSession);

impl FromRequestParts<AppState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(sign_in_required());
        };
        sign_in::session(state, token)
            .await?
            .map(Me)
            .ok_or_else(sign_in_required)
    }
}

fn sign_in_required() -> ApiError {
    ApiError::new(
        ProblemKind::Unauthenticated,
        "Sign in with your My Number card (POST /v1/me/challenge, then POST /v1/me/sessions) and send Authorization: Bearer <token>; a session lasts 30 minutes.",
    )
}

/// Logs the person's own read of their record (`insured.own_record_viewed`)
/// and waits, bounded, for the read models to apply it (so the page shows
/// the person's latest events).
pub(crate) async fn log_own_read(state: &AppState, person: &PersonId) -> Result<(), ApiError> {
    let context = CommandContext::new(
        new_event_id(),
        Actor::system(PERSON_VIEW_ACTOR).expect("a valid component"),
        state.now(),
    );
    let executed = execute_on_person(state, person, &InsuredCommand::RecordOwnView, &context)
        .await
        .map_err(ApiError::from)?;
    if let Some(position) = executed.positions().last() {
        state.await_read_models(*position).await;
    }
    Ok(())
}

/// Body of `POST /v1/me/challenge`: nothing (`{}`).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {}

/// `POST /v1/me/challenge`: a sign-in challenge for the card to sign
/// (anyone; no client certificate).
pub async fn challenge(
    State(state): State<AppState>,
    client: Option<axum::Extension<crate::ClientAddress>>,
    JsonBody(SignInRequest {}): JsonBody<SignInRequest>,
) -> Result<Created<ChallengeIssued>, ApiError> {
    let client = client.map(|axum::Extension(crate::ClientAddress(address))| address.ip());
    let (nonce, expires_at) = state.inner.sign_ins.issue(state.now(), None, client)?;
    Ok(Created(ChallengeIssued {
        challenge: sign_in_challenge_text(&nonce),
        nonce,
        expires_at,
    }))
}

/// What a signed sign-in challenge answers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PersonSignedIn {
    /// The bearer token of the session (`Authorization: Bearer <token>`);
    /// absent when a browser's sign-in page asked for the challenge (the
    /// page collects the session as a cookie).
    pub token: Option<String>,
    /// Whether the session went to the browser that showed the code.
    pub browser: bool,
    /// 保険者番号 of the person the card is linked to.
    pub insurer: String,
    /// 被保険者番号.
    pub insured: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/me/sessions`: the card's certificate and signature over a
/// sign-in challenge; opens the person's session (anyone; the card is the
/// credential).
pub async fn open_session(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SignedChallenge>,
) -> Result<Created<PersonSignedIn>, ApiError> {
    let signed = sign_in::sign_in(&state, &request).await?;
    let (session, browser) = match signed {
        sign_in::SignedIn::Api(session) => (session, false),
        sign_in::SignedIn::Browser(session) => (session, true),
    };
    Ok(Created(PersonSignedIn {
        token: (!browser).then(|| session.token.clone()),
        browser,
        insurer: session.insurer,
        insured: session.insured,
        expires_at: session.expires_at,
    }))
}

/// What signing out answers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SignedOut {
    /// Always true: the session has ended.
    pub signed_out: bool,
}

/// `DELETE /v1/me/session`: ends the bearer token's session.
pub async fn close_session(
    State(state): State<AppState>,
    _me: Me,
    parts: axum::http::HeaderMap,
) -> Result<Json<SignedOut>, ApiError> {
    if let Some(token) = parts
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        sign_in::sign_out(&state, token.trim()).await?;
    }
    Ok(Json(SignedOut { signed_out: true }))
}

/// A live consent, as the person sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConsentView {
    /// The office allowed to read the record.
    pub office: String,
    /// When the person gave it (with their card at the office's terminal).
    pub given_at: DateTime<Utc>,
    /// When it ends unless revoked first.
    pub expires_at: DateTime<Utc>,
}

/// The person's record as the person sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MyRecord {
    /// Certificates in force, the certification in force and the care-plan
    /// office (居宅介護支援事業所).
    pub eligibility: EligibilityView,
    /// Certification applications with their progress, oldest first.
    pub certifications: Vec<ApplicationView>,
    /// Benefit ledgers (住宅改修費・福祉用具購入費).
    pub ledgers: Option<LedgersView>,
    /// Live consents, by office.
    pub consents: Vec<ConsentView>,
    /// Documents about the person (認定調査票, 主治医意見書).
    pub documents: Vec<DocumentView>,
}

impl MyRecord {
    /// The record of `person` from the read models at `now`; 404 when
    /// nothing about the person is recorded.
    pub(crate) async fn read(
        read: &ReadModels,
        person: &PersonId,
        now: DateTime<Utc>,
    ) -> Result<MyRecord, ApiError> {
        let key = person.key();
        let not_found = || ApiError::not_found("Nothing is recorded about you yet.");
        let doc = read.person(&key).await?.ok_or_else(not_found)?;
        let eligibility = read.eligibility(&key, now).await?.ok_or_else(not_found)?;
        let consents = doc
            .state()
            .consents
            .into_iter()
            .filter(|(_, consent)| now < consent.expires_at)
            .map(|(office, consent)| ConsentView {
                office: office.to_string(),
                given_at: consent.given_at,
                expires_at: consent.expires_at,
            })
            .collect();
        Ok(MyRecord {
            eligibility,
            certifications: read.applications(&key, now).await?,
            ledgers: read.ledgers(&key, now).await?,
            consents,
            documents: read.documents_of(&key).await?,
        })
    }
}

/// `GET /v1/me`: the signed-in person's record (a logged read).
pub async fn record(State(state): State<AppState>, Me(me): Me) -> Result<Json<MyRecord>, ApiError> {
    log_own_read(&state, &me.person).await?;
    Ok(Json(
        MyRecord::read(&state.inner.read, &me.person, state.now()).await?,
    ))
}

/// `GET /v1/me/access-log?after=&limit=&order=`: who read the person's
/// record — newest first unless `order=oldest` (a logged read).
pub async fn access_log(
    State(state): State<AppState>,
    Me(me): Me,
    uri: Uri,
    Query(query): Query<AccessLogQuery>,
) -> Result<AccessLog, ApiError> {
    log_own_read(&state, &me.person).await?;
    let query = AccessLogQuery {
        order: query.order.or(Some(AccessLogOrderParam::Newest)),
        ..query
    };
    access_log_page(&state, Some(&me.person.key()), None, &uri, &query).await
}

/// `GET /v1/me/documents/{sha256}`: one of the person's documents (a
/// logged read); 404 for any digest that is not one of theirs.
pub async fn document(
    State(state): State<AppState>,
    Me(me): Me,
    Path(sha256): Path<String>,
) -> Result<DocumentBytes, ApiError> {
    Sha256Digest::parse(&sha256)
        .map_err(|_| ApiError::validation("The digest must be 64 lower-case hex digits."))?;
    log_own_read(&state, &me.person).await?;
    person_document(&state, &me.person, &sha256).await
}

/// Revokes `office`'s consent on the person's record, as the person.
pub(crate) async fn revoke(
    state: &AppState,
    person: &PersonId,
    office: &str,
    command_id: kiban_events::envelope::EventId,
) -> Result<CommandAccepted, ApiError> {
    let office = office_number(office)?;
    let command = InsuredCommand::RevokeConsent { office };
    let actor = Actor::system(PERSON_VIEW_ACTOR).expect("a valid component");
    let context = CommandContext::new(command_id, actor, state.now());
    let stream = insured_stream(&person.insurer, &person.insured);
    execute::<InsuredPerson>(state, &stream, &command, context).await
}

/// `DELETE /v1/me/consents/{office}`: the person revokes an office's
/// consent.
pub async fn revoke_consent(
    State(state): State<AppState>,
    Me(me): Me,
    Path(office): Path<String>,
) -> Result<CommandAccepted, ApiError> {
    revoke(&state, &me.person, &office, new_event_id()).await
}
