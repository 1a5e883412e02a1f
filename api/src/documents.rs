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

use kiban_engine::CommandContext;
use kiban_events::domain::Sha256Digest;
use kiban_events::domain::certification::{
    CertificationApplication, CertificationCommand, certification_stream,
};

use crate::auth::{Allow, Caller, PersonId, authorise_person_read, fold};
use crate::commands::{CommandAccepted, Created, execute};
use crate::error::ApiError;
use crate::extract::{CommandKey, Document};
use crate::principal::Principal;
use crate::state::AppState;

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
    let command = CertificationCommand::CompleteInvestigation {
        investigation_sheet: document.store(&state, &caller.principal).await?,
    };
    let context = CommandContext::new(key, caller.actor(), state.now());
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
    let command = CertificationCommand::ReceiveOpinion {
        institution: institution.clone(),
        opinion: document.store(&state, &caller.principal).await?,
    };
    let context = CommandContext::new(key, caller.actor(), state.now());
    execute::<CertificationApplication>(&state, &stream, &command, context).await
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
    let document = document.store(&state, &caller.principal).await?;
    Ok(Created(StoredDocument {
        sha256: document.sha256().to_string(),
        media_type: document.media_type().to_owned(),
        size_bytes: document.size_bytes(),
    }))
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
