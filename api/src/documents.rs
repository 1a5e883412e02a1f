//! Documents: the investigation sheet (認定調査票) uploaded by the insurer,
//! the doctor's opinion (主治医意見書) uploaded by the medical institution
//! asked for it, subsidy attachments uploaded by the applicant, and
//! download by digest for the principals allowed to read them.
//!
//! The body of an upload is the document itself (not JSON); its
//! `Content-Type` is the media type, one of [`crate::DOCUMENT_MEDIA_TYPES`], and
//! its size at most [`crate::DOCUMENT_UPLOAD_BYTES_MAX`]. The bytes go to the
//! store's content-addressed blobs first (durable), then the event recording
//! the document's digest, media type and size is appended through the
//! engine — never the bytes (DESIGN.md decision 12).

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::{CommandContext, EngineError};
use kiban_events::StreamName;
use kiban_events::domain::certification::{
    CertificationApplication, CertificationCommand, certification_stream,
};
use kiban_events::domain::{Decider, DocumentRef, Sha256Digest};

use crate::auth::{Allow, Caller, PersonId, authorise_person_read, fold};
use crate::commands::{CommandAccepted, Created, execute};
use crate::error::{ApiError, ProblemKind};
use crate::extract::{CommandKey, Document, uploader_name};
use crate::principal::Principal;
use crate::state::AppState;

/// Most bytes one principal (an office terminal's office, an institution)
/// may upload as subsidy attachments in 24 hours (issue 16, Low: blobs had no
/// quota). An application needs a few scans of at most 10 MiB each
/// ([`crate::DOCUMENT_UPLOAD_BYTES_MAX`]); 256 MiB a day leaves room for
/// several applications and retries, and bounds what one certificate can
/// make the store keep. Over it: 503 `rate-limited`.
pub const ATTACHMENT_BYTES_PER_DAY_MAX: u64 = 256 * 1024 * 1024;

/// What an attachment upload answers: the reference to put in a subsidy
/// application.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StoredDocument {
    /// SHA-256 of the bytes, 64 lower-case hex digits.
    pub sha256: String,
    /// The media type it was uploaded with.
    pub media_type: String,
    /// Its size.
    pub size_bytes: u64,
}

/// A stored document's bytes, answered with its media type.
#[derive(Debug)]
pub struct DocumentBytes {
    media_type: HeaderValue,
    bytes: Vec<u8>,
}

/// `Content-Security-Policy` of every download: a document opened in a
/// browser runs no script and has no origin (it cannot act as the staff
/// member who opened it on the `/ui` origin).
pub const DOWNLOAD_CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'";

impl IntoResponse for DocumentBytes {
    /// The bytes with their media type, as a download (`attachment`, never
    /// rendered inline), `nosniff` (the browser keeps the recorded media
    /// type) and a sandboxing CSP.
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.bytes));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.media_type);
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOWNLOAD_CONTENT_SECURITY_POLICY),
        );
        response
    }
}

/// A certification application named by a route's
/// `{insurer}/{insured}/certifications/{seq}` segments, parsed (400
/// `validation` when malformed).
#[derive(Debug, Clone)]
pub struct ApplicationPath(pub PersonId, pub u32);

impl<S: Send + Sync> FromRequestParts<S> for ApplicationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((insurer, insured, seq)) =
            Path::<(String, String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::validation("The path names no application."))?;
        let person = PersonId::parse(&insurer, &insured)?;
        let seq = seq.parse::<u32>().ok().filter(|s| *s >= 1).ok_or_else(|| {
            ApiError::validation("The application number must be a positive integer.")
        })?;
        Ok(Self(person, seq))
    }
}

/// `POST /v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet`:
/// the person's insurer records the investigation sheet (認定調査票).
pub async fn upload_investigation_sheet(
    State(state): State<AppState>,
    ApplicationPath(person, seq): ApplicationPath,
    command_key: CommandKey,
    document: Document,
) -> Result<CommandAccepted, ApiError> {
    command_key.claim(&state, &document.claim_bytes()).await?;
    let CommandKey { key, caller, .. } = command_key;
    caller
        .allow(
            &state,
            &[Allow::Insurer(&person.insurer)],
            "Only the person's insurer records the investigation sheet.",
        )
        .await?;
    let stream = certification_stream(&person.insurer, &person.insured, seq);
    let context = CommandContext::new(key, caller.actor(), state.now());
    let command = store_if_decided(&state, &stream, &context, &caller, &document, |sheet| {
        CertificationCommand::CompleteInvestigation {
            investigation_sheet: sheet,
        }
    })
    .await?;
    execute::<CertificationApplication>(&state, &stream, &command, context).await
}

/// `POST /v1/persons/{insurer}/{insured}/certifications/{seq}/opinion`: the
/// medical institution the insurer asked records the doctor's opinion
/// (主治医意見書).
pub async fn upload_opinion(
    State(state): State<AppState>,
    ApplicationPath(person, seq): ApplicationPath,
    command_key: CommandKey,
    document: Document,
) -> Result<CommandAccepted, ApiError> {
    command_key.claim(&state, &document.claim_bytes()).await?;
    let CommandKey { key, caller, .. } = command_key;
    let Principal::MedicalInstitution(institution) = &caller.principal else {
        return Err(ApiError::forbidden(
            "Only the medical institution asked for it records the doctor's opinion.",
        ));
    };
    let stream = certification_stream(&person.insurer, &person.insured, seq);
    let application = fold::<CertificationApplication>(&state, &stream).await?;
    if !application.opinion_requested_from.contains(institution) {
        // Not asked (or no such application): the institution sees nothing.
        return Err(ApiError::forbidden(
            "No opinion was requested from this institution for this application.",
        ));
    }
    let context = CommandContext::new(key, caller.actor(), state.now());
    let command = store_if_decided(&state, &stream, &context, &caller, &document, |opinion| {
        CertificationCommand::ReceiveOpinion {
            institution: institution.clone(),
            opinion,
        }
    })
    .await?;
    execute::<CertificationApplication>(&state, &stream, &command, context).await
}

/// The command `make` builds around `document`'s reference, once the
/// application's rules accept it: the bytes are stored only then (issue 16,
/// Low: a refused upload — a second sheet, an application withdrawn or
/// decided, no such application — left its document in the blob store).
/// The command is decided on the stream's state first, without appending;
/// a retry of a command already recorded under the key passes (the engine
/// answers it with the first answer). A command refused only by a change
/// between this decision and the append leaves its bytes stored
/// unreferenced, like an attachment never applied with (docs/api.md,
/// "Documents").
async fn store_if_decided(
    state: &AppState,
    stream: &StreamName,
    context: &CommandContext,
    caller: &Caller,
    document: &Document,
    make: impl Fn(DocumentRef) -> CertificationCommand,
) -> Result<CertificationCommand, ApiError> {
    let folded = fold::<CertificationApplication>(state, stream).await?;
    let trial = make(document.reference()?);
    if let Err(rejection) = CertificationApplication::decide(&folded, &trial, context.now) {
        let engine = &state.inner.engine;
        if engine
            .find_recorded(stream, &context.command_id)
            .await?
            .is_none()
        {
            return Err(EngineError::Rejected(rejection).into());
        }
    }
    Ok(make(document.store(state, &caller.principal).await?))
}

/// `POST /v1/attachments`: an office (active terminal) or a medical
/// institution uploads a subsidy attachment (receipt, passbook copy,
/// designation notice); the answer is the reference to put in the
/// application. No event: the application records the references.
pub async fn upload_attachment(
    State(state): State<AppState>,
    caller: Caller,
    document: Document,
) -> Result<Created<StoredDocument>, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::AnyOffice, Allow::AnyInstitution],
            "Only subsidy applicants (offices, medical institutions) upload attachments.",
        )
        .await?;
    let uploader = uploader_name(&caller.principal);
    check_attachment_quota(&state, &uploader, document.bytes.len() as u64).await?;
    let document = document.store(&state, &caller.principal).await?;
    Ok(Created(StoredDocument {
        sha256: document.sha256().to_string(),
        media_type: document.media_type().to_owned(),
        size_bytes: document.size_bytes(),
    }))
}

/// Refuses (503 `rate-limited`) `bytes` more attachment bytes from
/// `uploader` (`extract::uploader_name`) when, with what it uploaded in the
/// last 24 hours (by the database's clock, which stamps the uploads), they
/// would pass the state's daily quota ([`ATTACHMENT_BYTES_PER_DAY_MAX`]).
/// The API's attachment route and the web screen's subsidy form.
pub(crate) async fn check_attachment_quota(
    state: &AppState,
    uploader: &str,
    bytes: u64,
) -> Result<(), ApiError> {
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let uploaded = state
        .inner
        .store
        .uploaded_bytes_since(uploader, since)
        .await?;
    let quota = state.inner.attachment_bytes_per_day;
    if uploaded.saturating_add(bytes) > quota {
        return Err(ApiError::new(
            ProblemKind::RateLimited,
            format!(
                "{uploaded} bytes of attachments were uploaded in the last 24 hours; the daily \
                 quota is {quota} bytes. Retry later."
            ),
        ));
    }
    Ok(())
}

/// The stored bytes of `document` with its media type.
pub async fn document_response(
    state: &AppState,
    sha256: &str,
    media_type: &str,
) -> Result<DocumentBytes, ApiError> {
    let bytes = state
        .inner
        .store
        .get_blob(sha256)
        .await?
        .ok_or_else(|| ApiError::not_found("No such document."))?;
    Ok(DocumentBytes {
        media_type: HeaderValue::from_str(media_type).map_err(|e| ApiError::internal(&e))?,
        bytes,
    })
}

/// `GET /v1/persons/{insurer}/{insured}/documents/{sha256}`: a document of
/// the person's certifications, for the person readers (an office's read is
/// logged like any other).
pub async fn download_person_document(
    State(state): State<AppState>,
    caller: Caller,
    Path((insurer, insured, sha256)): Path<(String, String, String)>,
) -> Result<DocumentBytes, ApiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    Sha256Digest::parse(&sha256)
        .map_err(|_| ApiError::validation("The digest must be 64 lower-case hex digits."))?;
    authorise_person_read(&state, &caller, &person).await?;
    person_document(&state, &person, &sha256).await
}

/// The bytes of `person`'s document `sha256` (a digest checked already),
/// once the caller is known to be allowed to read the person: 404 when it
/// is not one of the person's documents.
pub(crate) async fn person_document(
    state: &AppState,
    person: &PersonId,
    sha256: &str,
) -> Result<DocumentBytes, ApiError> {
    let documents = state.inner.read.documents_of(&person.key()).await?;
    let Some(document) = documents.iter().find(|d| d.sha256 == sha256) else {
        return Err(ApiError::not_found("The person has no such document."));
    };
    document_response(state, sha256, &document.media_type).await
}
