//! A typed Rust client of the API (feature `client`): mutual TLS with a
//! client certificate, one method per route with the server's own request
//! and answer types, problem+json as [`ClientError::Problem`], and commands
//! sent under an `Idempotency-Key` (UUID v7) that is reused when a command
//! is sent again after a failed attempt, so it is recorded at most once.
//!
//! Read your writes: the client remembers the highest store position it
//! was answered (`Kiban-Position` of each command's answer, or one it was
//! told with [`Client::observe`], e.g. a municipality's receipt) and sends
//! it as `Kiban-Min-Position` on every read, so no read shows state older
//! than what this client wrote or saw, whichever API process answers.
//!
//! The read models' views are answered as JSON values ([`View`]): they are
//! the projections' serialised documents, described in the OpenAPI
//! document (`GET /v1/openapi.json`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

use crate::card_consent::{CardLinkRequest, ChallengeIssued, ChallengeRequest, SignedChallenge};
use crate::care_plan::CarePlanNotification;
use crate::commands::{
    CommandAccepted, ConsentRecord, InsurerOnboarding, LostReport, ProxyApplication,
};
use crate::documents::StoredDocument;
use crate::error::{PROBLEM_JSON, Problem};
use crate::extract::IDEMPOTENCY_KEY;
use crate::paths::{self, person};
use crate::subsidies::{SubsidyApplicationBody, SubsidyDecision};

/// How many times a command is sent before its failure is returned: a
/// lost connection or a 503 (overloaded, store unavailable) is retried
/// with the same key, so the command is recorded at most once.
pub const COMMAND_ATTEMPTS_MAX: u32 = 3;

/// Pause before the second attempt of a command, in milliseconds; doubled
/// before each further one. Short: the server sheds load at once rather
/// than queueing, so a retry soon after usually finds room.
pub const COMMAND_RETRY_DELAY_MS: u64 = 200;

/// Longest a request may take end to end, in milliseconds: above the
/// server's own request timeout (`REQUEST_TIMEOUT_MS`), so the server's
/// 504 problem arrives before the client gives up.
pub const CLIENT_TIMEOUT_MS: u64 = 15_000;

/// A read model's view, as the server serialises it.
pub type View = serde_json::Value;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused with a problem (RFC 9457); branch on
    /// `type_uri` (`urn:kiban:problem:<kind>`) and `code`.
    #[error("{} ({}): {}", .0.title, .0.type_uri, .0.detail)]
    Problem(Problem),
    /// The request did not reach the server or its answer did not arrive.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered something that is neither the route's answer
    /// nor a problem.
    #[error("unexpected answer {status}: {body}")]
    Unexpected {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The certificate, key or CA could not be read.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl ClientError {
    /// The problem's kind slug (`validation`, `forbidden`, …), if the
    /// server refused.
    pub fn problem_kind(&self) -> Option<&str> {
        match self {
            ClientError::Problem(problem) => {
                problem.type_uri.strip_prefix(crate::PROBLEM_TYPE_PREFIX)
            }
            _ => None,
        }
    }

    /// Whether sending the same command again may succeed.
    fn retryable(&self) -> bool {
        match self {
            ClientError::Transport(error) => !error.is_builder() && !error.is_decode(),
            ClientError::Problem(problem) => problem.status == 503,
            _ => false,
        }
    }
}

/// A client of one kiban server, as one principal.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The highest store position this client (and its clones) was
    /// answered; sent as `Kiban-Min-Position` on reads.
    seen: Arc<AtomicU64>,
}

/// Which document of a certification application is uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificationDocument {
    /// The investigation sheet (認定調査票), by the person's insurer.
    InvestigationSheet,
    /// The doctor's opinion (主治医意見書), by the institution asked.
    Opinion,
}

/// A stored document's bytes and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentDownload {
    /// The media type it was recorded with.
    pub media_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Client {
    /// A client of `base_url` (`https://host:port`) trusting the CA in
    /// `ca_pem` and presenting the certificate and key in `identity_pem`
    /// (one PEM file holding both, as `dev_pki` writes them); `None` for
    /// no certificate (only `/healthz` and `/readyz` answer then).
    pub fn new(
        base_url: &str,
        ca_pem: &[u8],
        identity_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_millis(CLIENT_TIMEOUT_MS));
        if let Some(pem) = identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| ClientError::Tls(format!("client certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            seen: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Makes later reads wait until the server's read models have applied
    /// `position` (a position this client learnt elsewhere, such as a
    /// municipality's receipt).
    pub fn observe(&self, position: u64) {
        self.seen.fetch_max(position, Ordering::Relaxed);
    }

    /// The highest store position this client was answered or told.
    pub fn seen_position(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let seen = self.seen_position();
        // Reads of the read models; not the probes and metrics.
        let reads = method == Method::GET && !matches!(path, "/healthz" | "/readyz" | "/metrics");
        let request = self.http.request(method, format!("{}{path}", self.base));
        if reads && seen > 0 {
            request.header(crate::state::MIN_POSITION_HEADER, seen)
        } else {
            request
        }
    }

    /// Sends `request` and reads a JSON answer or a problem.
    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = request.send().await?;
        let response = refuse_problems(response).await?;
        if let Some(position) = response
            .headers()
            .get(crate::state::POSITION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.observe(position);
        }
        let status = response.status();
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|_| unexpected(status, &bytes))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    /// Sends a command under a fresh key, retrying with the same key.
    async fn command<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        self.command_with_key(Uuid::now_v7(), method, path, body)
            .await
    }

    /// Sends a command under `key` (a retry of an earlier call reuses its
    /// key), retrying a failed attempt up to [`COMMAND_ATTEMPTS_MAX`] times.
    pub async fn command_with_key<T: DeserializeOwned>(
        &self,
        key: Uuid,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let mut delay = Duration::from_millis(COMMAND_RETRY_DELAY_MS);
        let mut attempt = 1;
        loop {
            let mut request = self
                .request(method.clone(), path)
                .header(IDEMPOTENCY_KEY, key.to_string());
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            match self.json(request).await {
                Err(error) if error.retryable() && attempt < COMMAND_ATTEMPTS_MAX => {
                    tracing::debug!(%error, attempt, "command failed; sending it again");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        key: Option<Uuid>,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<T, ClientError> {
        let mut request = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes);
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY, key.to_string());
        }
        self.json(request).await
    }

    async fn download(&self, path: &str) -> Result<DocumentDownload, ClientError> {
        let response = refuse_problems(self.request(Method::GET, path).send().await?).await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await?.to_vec();
        Ok(DocumentDownload { media_type, bytes })
    }

    async fn text(&self, path: &str) -> Result<String, ClientError> {
        let response = refuse_problems(self.request(Method::GET, path).send().await?).await?;
        Ok(response.text().await?)
    }
}

/// A command's body as the JSON sent (again, on a retry).
fn json_body(body: &impl Serialize) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(body).expect("request bodies serialise"))
}

/// Bytes of a body shown in an error: enough to recognise it.
const UNEXPECTED_BODY_CHARS_MAX: usize = 200;

fn unexpected(status: StatusCode, bytes: &[u8]) -> ClientError {
    ClientError::Unexpected {
        status: status.as_u16(),
        body: String::from_utf8_lossy(bytes)
            .chars()
            .take(UNEXPECTED_BODY_CHARS_MAX)
            .collect(),
    }
}

/// The response if it succeeded; its problem (or an unexpected answer)
/// otherwise.
async fn refuse_problems(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    let bytes = response.bytes().await?;
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) if is_problem => Err(ClientError::Problem(problem)),
        _ => Err(unexpected(status, &bytes)),
    }
}

/// A query about one person: `GET /v1/persons/{insurer}/{insured}<rest>`.
macro_rules! person_query {
    ($(#[$doc:meta])* $name:ident, $rest:literal, $answer:ty) => {
        $(#[$doc])*
        pub async fn $name(
            &self,
            insurer: &InsurerNumber,
            insured: &InsuredNumber,
        ) -> Result<$answer, ClientError> {
            self.get(&person(insurer, insured, $rest)).await
        }
    };
}

/// A command about one person with a JSON body:
/// `POST /v1/persons/{insurer}/{insured}<rest>`.
macro_rules! person_command {
    ($(#[$doc:meta])* $name:ident, $rest:literal, $body:ty) => {
        $(#[$doc])*
        pub async fn $name(
            &self,
            insurer: &InsurerNumber,
            insured: &InsuredNumber,
            body: &$body,
        ) -> Result<CommandAccepted, ClientError> {
            let path = person(insurer, insured, $rest);
            self.command(Method::POST, &path, json_body(body)).await
        }
    };
}

/// Operations and queries.
impl Client {
    /// `GET /healthz`.
    pub async fn healthz(&self) -> Result<String, ClientError> {
        self.text("/healthz").await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> Result<String, ClientError> {
        self.text("/readyz").await
    }

    /// `GET /metrics` (OpenMetrics text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.text("/metrics").await
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get(paths::OPENAPI).await
    }

    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/eligibility`.
        eligibility, "/eligibility", View
    );
    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/certifications`.
        certifications, "/certifications", Vec<View>
    );
    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/documents`.
        documents, "/documents", Vec<View>
    );
    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/ledgers`.
        ledgers, "/ledgers", View
    );
    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/access-log`.
        person_access_log, "/access-log", Vec<View>
    );
    person_query!(
        /// `GET /v1/persons/{insurer}/{insured}/personal`.
        personal, "/personal", View
    );

    /// `GET /v1/persons/{insurer}/{insured}/documents/{sha256}`.
    pub async fn person_document(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        sha256: &str,
    ) -> Result<DocumentDownload, ClientError> {
        self.download(&person(insurer, insured, &format!("/documents/{sha256}")))
            .await
    }

    /// `GET /v1/offices/{office}/caseload?after=&limit=`.
    pub async fn caseload(
        &self,
        office: &OfficeNumber,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<View, ClientError> {
        let request = self
            .request(Method::GET, &paths::caseload(office))
            .query(&[("after", after.map(str::to_owned))])
            .query(&[("limit", limit)]);
        self.json(request).await
    }

    /// `GET /v1/offices/{office}/terminals`.
    pub async fn terminals(&self, office: &OfficeNumber) -> Result<Vec<View>, ClientError> {
        self.get(&paths::office(office, "/terminals")).await
    }

    /// `GET /v1/terminals`.
    pub async fn all_terminals(&self) -> Result<Vec<View>, ClientError> {
        self.get(paths::TERMINALS).await
    }

    /// `GET /v1/insurers/{insurer}`.
    pub async fn insurer(&self, insurer: &InsurerNumber) -> Result<View, ClientError> {
        self.get(&paths::insurer(insurer, "")).await
    }

    /// `GET /v1/insurers/{insurer}/overdue-applications`.
    pub async fn overdue_applications(
        &self,
        insurer: &InsurerNumber,
    ) -> Result<Vec<View>, ClientError> {
        self.get(&paths::insurer(insurer, "/overdue-applications"))
            .await
    }

    /// `GET /v1/medical/{institution}/opinion-requests`.
    pub async fn opinion_requests(
        &self,
        institution: &MedicalInstitutionCode,
    ) -> Result<Vec<View>, ClientError> {
        self.get(&paths::opinion_requests(institution)).await
    }

    /// `GET /v1/subsidies`.
    pub async fn subsidies(&self) -> Result<Vec<View>, ClientError> {
        self.get(paths::SUBSIDIES).await
    }

    /// `GET /v1/subsidies/{application}/attachments/{sha256}`.
    pub async fn subsidy_attachment(
        &self,
        application: &str,
        sha256: &str,
    ) -> Result<DocumentDownload, ClientError> {
        self.download(&paths::subsidy(
            application,
            &format!("/attachments/{sha256}"),
        ))
        .await
    }

    /// `GET /v1/access-log`.
    pub async fn access_log(&self) -> Result<Vec<View>, ClientError> {
        self.get(paths::ACCESS_LOG).await
    }

    /// `GET /v1/audit/verify?from=&to=&limit=`.
    pub async fn audit_verify(
        &self,
        from: Option<u64>,
        to: Option<u64>,
        limit: Option<u64>,
    ) -> Result<View, ClientError> {
        let request = self.request(Method::GET, paths::AUDIT_VERIFY).query(&[
            ("from", from),
            ("to", to),
            ("limit", limit),
        ]);
        self.json(request).await
    }

    /// `GET /v1/audit/persons/{insurer}/{insured}?at_position=`.
    pub async fn audit_person_at(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        position: u64,
    ) -> Result<View, ClientError> {
        let request = self
            .request(Method::GET, &paths::audit_person(insurer, insured))
            .query(&[("at_position", position)]);
        self.json(request).await
    }

    /// `GET /v1/audit/offices/{office}/access-log`.
    pub async fn audit_office_access_log(
        &self,
        office: &OfficeNumber,
    ) -> Result<Vec<View>, ClientError> {
        self.get(&paths::audit_office_access_log(office)).await
    }
}

/// Commands.
impl Client {
    person_command!(
        /// `POST /v1/persons/{insurer}/{insured}/certifications`.
        file_application, "/certifications", ProxyApplication
    );

    person_command!(
        /// `POST /v1/persons/{insurer}/{insured}/consents`.
        give_consent, "/consents", ConsentRecord
    );

    /// `DELETE /v1/persons/{insurer}/{insured}/consents/{office}`.
    pub async fn revoke_consent(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        office: &OfficeNumber,
    ) -> Result<CommandAccepted, ClientError> {
        let path = person(insurer, insured, &format!("/consents/{office}"));
        self.command(Method::DELETE, &path, None).await
    }

    person_command!(
        /// `POST /v1/persons/{insurer}/{insured}/care-plan-office`.
        notify_care_plan_office, "/care-plan-office", CarePlanNotification
    );

    person_command!(
        /// `POST /v1/persons/{insurer}/{insured}/card-links`.
        link_card, "/card-links", CardLinkRequest
    );

    /// `POST /v1/persons/{insurer}/{insured}/forget` (no key: idempotent
    /// per person).
    pub async fn forget(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
    ) -> Result<View, ClientError> {
        self.json(self.request(Method::POST, &person(insurer, insured, "/forget")))
            .await
    }

    /// `POST /v1/offices/{office}/terminals/{terminal}/lost`.
    pub async fn report_terminal_lost(
        &self,
        office: &OfficeNumber,
        terminal: &str,
        body: &LostReport,
    ) -> Result<CommandAccepted, ClientError> {
        let path = paths::terminal_lost(office, terminal);
        self.command(Method::POST, &path, json_body(body)).await
    }

    /// `POST /v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet`
    /// or `…/opinion`: a document of an application.
    pub async fn upload_certification_document(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        seq: u32,
        which: CertificationDocument,
        media_type: &str,
        document: Vec<u8>,
    ) -> Result<CommandAccepted, ClientError> {
        let rest = match which {
            CertificationDocument::InvestigationSheet => "investigation-sheet",
            CertificationDocument::Opinion => "opinion",
        };
        let path = person(insurer, insured, &format!("/certifications/{seq}/{rest}"));
        self.upload(&path, Some(Uuid::now_v7()), media_type, document)
            .await
    }

    /// `POST /v1/attachments`.
    pub async fn upload_attachment(
        &self,
        media_type: &str,
        document: Vec<u8>,
    ) -> Result<StoredDocument, ClientError> {
        self.upload(paths::ATTACHMENTS, None, media_type, document)
            .await
    }

    /// `POST /v1/insurers`: onboards `insurer` (the federation).
    pub async fn onboard_insurer(
        &self,
        insurer: &InsurerNumber,
    ) -> Result<CommandAccepted, ClientError> {
        let body = InsurerOnboarding {
            insurer: insurer.to_string(),
        };
        self.command(Method::POST, paths::INSURERS, json_body(&body))
            .await
    }

    /// `POST /v1/subsidies`.
    pub async fn apply_for_subsidy(
        &self,
        body: &SubsidyApplicationBody,
    ) -> Result<CommandAccepted, ClientError> {
        self.command(Method::POST, paths::SUBSIDIES, json_body(body))
            .await
    }

    /// `POST /v1/subsidies/{application}/decisions`.
    pub async fn decide_subsidy(
        &self,
        application: &str,
        body: &SubsidyDecision,
    ) -> Result<CommandAccepted, ClientError> {
        let path = paths::subsidy(application, "/decisions");
        self.command(Method::POST, &path, json_body(body)).await
    }

    /// `POST /v1/consents/challenge`.
    pub async fn consent_challenge(
        &self,
        body: &ChallengeRequest,
    ) -> Result<ChallengeIssued, ClientError> {
        let request = self
            .request(Method::POST, paths::CONSENT_CHALLENGE)
            .json(body);
        self.json(request).await
    }

    /// `POST /v1/consents/card`.
    pub async fn card_consent(
        &self,
        body: &SignedChallenge,
    ) -> Result<CommandAccepted, ClientError> {
        self.command(Method::POST, paths::CARD_CONSENT, json_body(body))
            .await
    }

    /// Submits the card's signature `signed` for `purpose` about
    /// `insurer`'s `insured`: `POST /v1/consents/card` for a consent,
    /// `POST /v1/persons/{insurer}/{insured}/care-plan-office` for the
    /// care-plan office notification.
    pub async fn submit_signed(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        purpose: &CardPurpose,
        signed: SignedChallenge,
    ) -> Result<CommandAccepted, ClientError> {
        match *purpose {
            CardPurpose::Consent { .. } => self.card_consent(&signed).await,
            CardPurpose::CarePlan {
                filed_on,
                office_kind,
            } => {
                let notification = CarePlanNotification {
                    office_kind,
                    filed_on,
                    card: Some(signed),
                };
                self.notify_care_plan_office(insurer, insured, &notification)
                    .await
            }
        }
    }

    /// `POST /v1/me/challenge`: a sign-in challenge for the person's card
    /// (no client certificate needed).
    pub async fn sign_in_challenge(&self) -> Result<ChallengeIssued, ClientError> {
        let request = self
            .request(Method::POST, paths::ME_CHALLENGE)
            .json(&crate::me::SignInRequest {});
        self.json(request).await
    }

    /// `POST /v1/me/sessions`: the card's signature over a sign-in
    /// challenge; the person's session.
    pub async fn sign_in(
        &self,
        body: &SignedChallenge,
    ) -> Result<crate::me::PersonSignedIn, ClientError> {
        let request = self.request(Method::POST, paths::ME_SESSIONS).json(body);
        self.json(request).await
    }

    /// `GET /v1/me` with the person's session `token`.
    pub async fn my_record(&self, token: &str) -> Result<View, ClientError> {
        self.json(self.request(Method::GET, paths::ME).bearer_auth(token))
            .await
    }

    /// `GET /v1/me/access-log` (newest first) with the person's session
    /// `token`.
    pub async fn my_access_log(&self, token: &str) -> Result<Vec<View>, ClientError> {
        let request = self
            .request(Method::GET, paths::ME_ACCESS_LOG)
            .bearer_auth(token);
        self.json(request).await
    }
}

/// Longest an update stream opened by [`Client::office_updates`] stays
/// open on the client's side (the client's request timeout does not apply
/// to it).
pub const UPDATE_STREAM_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1_000;

/// Live updates.
impl Client {
    /// `GET /v1/offices/{office}/updates`: the office's Server-Sent Events,
    /// after `last_event_id` when given (a resume), else from the head.
    pub async fn office_updates(
        &self,
        office: &OfficeNumber,
        last_event_id: Option<u64>,
    ) -> Result<UpdateStream, ClientError> {
        let mut request = self
            .http
            .get(format!(
                "{}{}",
                self.base,
                paths::office(office, "/updates")
            ))
            .timeout(Duration::from_millis(UPDATE_STREAM_TIMEOUT_MS));
        if let Some(id) = last_event_id {
            request = request.header(crate::updates::LAST_EVENT_ID, id);
        }
        let response = refuse_problems(request.send().await?).await?;
        Ok(UpdateStream {
            response,
            buffer: String::new(),
        })
    }
}

/// One Server-Sent Event of an update stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateEvent {
    /// Its `id` (the store position).
    pub id: u64,
    /// Its `event` (the event type).
    pub event: String,
    /// Its `data`.
    pub data: String,
}

/// An open update stream ([`Client::office_updates`]).
#[derive(Debug)]
pub struct UpdateStream {
    response: reqwest::Response,
    buffer: String,
}

impl UpdateStream {
    /// The next event (keep-alive comments skipped); `None` when the server
    /// ended the stream.
    pub async fn next_event(&mut self) -> Result<Option<UpdateEvent>, ClientError> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("id", value)) => id = value.trim().parse().ok(),
                        Some(("event", value)) => value.trim().clone_into(&mut event),
                        Some(("data", value)) => data.push_str(value.trim_start()),
                        _ => {}
                    }
                }
                match id {
                    Some(id) => return Ok(Some(UpdateEvent { id, event, data })),
                    None => continue,
                }
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

/// What a person's card signature is asked for (`kiban card consent`):
/// the challenge names it, and only the matching route takes the signature
/// (docs/card.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardPurpose {
    /// A consent to read the person's record until `expires_at`.
    Consent {
        /// When the consent ends.
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// The care-plan office notification (居宅サービス計画作成依頼届出) the
    /// office files naming itself.
    CarePlan {
        /// The filing date.
        filed_on: chrono::NaiveDate,
        /// The office's kind; `None`: as the office is registered.
        office_kind: Option<kiban_events::domain::insured::CarePlanOfficeKind>,
    },
}

impl CardPurpose {
    /// The care-plan office notification filed on `care_plan_filed_on`
    /// (with the office's kind, when given), or else a consent to read for
    /// `consent_days` from now.
    pub fn new(
        care_plan_filed_on: Option<chrono::NaiveDate>,
        office_kind: Option<kiban_events::domain::insured::CarePlanOfficeKind>,
        consent_days: u32,
    ) -> CardPurpose {
        match care_plan_filed_on {
            Some(filed_on) => CardPurpose::CarePlan {
                filed_on,
                office_kind,
            },
            None => CardPurpose::Consent {
                expires_at: chrono::Utc::now() + chrono::Duration::days(i64::from(consent_days)),
            },
        }
    }

    /// The challenge request for `insurer`'s `insured` with this purpose.
    pub fn challenge(&self, insurer: &str, insured: &str) -> ChallengeRequest {
        let (consent_expires_at, care_plan_notification) = match *self {
            CardPurpose::Consent { expires_at } => (Some(expires_at), None),
            CardPurpose::CarePlan { filed_on, .. } => (
                None,
                Some(crate::card_consent::CarePlanPurpose { filed_on }),
            ),
        };
        ChallengeRequest {
            insurer: insurer.to_owned(),
            insured: insured.to_owned(),
            consent_expires_at,
            care_plan_notification,
        }
    }

    /// What the person is told once the server accepted it.
    pub fn done(&self) -> &'static str {
        match self {
            CardPurpose::Consent { .. } => "consent recorded / 同意を記録しました",
            CardPurpose::CarePlan { .. } => {
                "care-plan office notification filed / 居宅サービス計画作成依頼届出を受け付けました"
            }
        }
    }
}

/// `--office-kind`'s value: `home_care_support_office` or
/// `community_general_support_center`.
pub fn parse_care_plan_office_kind(
    kind: &str,
) -> Result<kiban_events::domain::insured::CarePlanOfficeKind, String> {
    serde_json::from_value(serde_json::Value::String(kind.to_owned()))
        .map_err(|_| "home_care_support_office or community_general_support_center".to_owned())
}
