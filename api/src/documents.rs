//! Documents: the investigation sheet (認定調査票) uploaded by the insurer,
//! the doctor's opinion (主治医意見書) uploaded by the medical institution
//! asked for it, subsidy attachments uploaded by the applicant, and
//! download by digest for the principals allowed to read them.
//!
//! The body of an upload is the document itself (not JSON); its
//! `Content-Type` is the media type, one of [`DOCUMENT_MEDIA_TYPES`], and
//! its size at most [`DOCUMENT_UPLOAD_BYTES_MAX`]. The bytes go to the
//! store's content-addressed blobs first (durable), then the event recording
//! the document's digest, media type and size is appended through the
//! engine — never the bytes (DESIGN.md decision 12).

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use kiban_engine::CommandContext;
use kiban_events::domain::certification::{
    CertificationApplication, CertificationCommand, certification_stream,
};
use kiban_events::domain::{DocumentRef, Sha256Digest};
use kiban_events::envelope::Actor;

use crate::auth::{Caller, PersonId, authorise_person_read, fold};
use crate::commands::{CommandAccepted, execute, idempotency_key};
use crate::error::{ApiError, ProblemKind};
use crate::principal::Principal;
use crate::routes::add;
use crate::state::AppState;

/// Largest document upload, in bytes (10 MiB): a scanned A4 form of a few
/// pages as PDF or TIFF is far below it; it bounds the memory an upload
/// holds (the body is buffered to be hashed before it is stored). Below the
/// events' own bound, `DOCUMENT_BYTES_MAX` (64 MiB).
pub const DOCUMENT_UPLOAD_BYTES_MAX: usize = 10 * 1024 * 1024;

/// Media types accepted for documents: PDF, the scanned-image formats, and
/// XML (the electronic doctor's opinion).
pub const DOCUMENT_MEDIA_TYPES: &[&str] = &[
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "application/xml",
];

/// What an attachment upload answers: the reference to put in a subsidy
/// application.
#[derive(Debug, Serialize)]
pub struct StoredDocument {
    pub sha256: String,
    pub media_type: String,
    pub size_bytes: u64,
}

/// Checks the media type and size, stores the bytes, and returns the
/// reference.
async fn store_document(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<DocumentRef, ApiError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !DOCUMENT_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            format!(
                "The Content-Type must be one of {} (got {media_type:?}).",
                DOCUMENT_MEDIA_TYPES.join(", ")
            ),
        ));
    }
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemKind::PayloadTooLarge,
                format!("A document is at most {DOCUMENT_UPLOAD_BYTES_MAX} bytes."),
            )
        } else {
            ApiError::validation("The request body could not be read.")
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::validation("The document is empty."));
    }
    let stored = state.inner.store.put_blob(&bytes).await?;
    let digest = Sha256Digest::parse(&stored.sha256).map_err(|e| ApiError::internal(&e))?;
    DocumentRef::new(digest, &media_type, stored.size_bytes).map_err(|e| ApiError::internal(&e))
}

/// Parses the application sequence number of a path.
fn application_seq(seq: &str) -> Result<u32, ApiError> {
    seq.parse::<u32>()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| ApiError::validation("The application number must be a positive integer."))
}

/// `POST /v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet`:
/// the person's insurer records the investigation sheet (認定調査票).
pub async fn upload_investigation_sheet(
    State(state): State<AppState>,
    caller: Caller,
    Path((insurer, insured, seq)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    let seq = application_seq(&seq)?;
    let command_id = idempotency_key(&headers)?;
    if caller.principal != Principal::Insurer(person.insurer.clone()) {
        return Err(ApiError::forbidden(
            "Only the person's insurer records the investigation sheet.",
        ));
    }
    let stream = certification_stream(&person.insurer, &person.insured, seq);
    let document = store_document(&state, &headers, body).await?;
    let command = CertificationCommand::CompleteInvestigation {
        investigation_sheet: document,
    };
    execute::<CertificationApplication>(
        &state,
        &stream,
        &command,
        CommandContext::new(
            command_id,
            Actor::Insurer(person.insurer.clone()),
            state.now(),
        ),
    )
    .await
}

/// `POST /v1/persons/{insurer}/{insured}/certifications/{seq}/opinion`: the
/// medical institution the insurer asked records the doctor's opinion
/// (主治医意見書).
pub async fn upload_opinion(
    State(state): State<AppState>,
    caller: Caller,
    Path((insurer, insured, seq)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    let seq = application_seq(&seq)?;
    let command_id = idempotency_key(&headers)?;
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
    let document = store_document(&state, &headers, body).await?;
    let command = CertificationCommand::ReceiveOpinion {
        institution: institution.clone(),
        opinion: document,
    };
    execute::<CertificationApplication>(
        &state,
        &stream,
        &command,
        CommandContext::new(
            command_id,
            Actor::MedicalInstitution(institution.clone()),
            state.now(),
        ),
    )
    .await
}

/// `POST /v1/attachments`: an office (active terminal) or a medical
/// institution uploads a subsidy attachment (receipt, passbook copy,
/// designation notice); the answer is the reference to put in the
/// application. No event: the application records the references.
pub async fn upload_attachment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StoredDocument>), ApiError> {
    match &caller.principal {
        Principal::Office { office, terminal } => {
            crate::auth::check_terminal(&state, office, terminal, &caller.fingerprint).await?;
        }
        Principal::MedicalInstitution(_) => {}
        _ => {
            return Err(ApiError::forbidden(
                "Only subsidy applicants (offices, medical institutions) upload attachments.",
            ));
        }
    }
    let document = store_document(&state, &headers, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(StoredDocument {
            sha256: document.sha256().to_string(),
            media_type: document.media_type().to_owned(),
            size_bytes: document.size_bytes(),
        }),
    ))
}

/// The stored bytes of `document` as a response with its media type.
pub async fn document_response(
    state: &AppState,
    sha256: &str,
    media_type: &str,
) -> Result<Response, ApiError> {
    let bytes = state
        .inner
        .store
        .get_blob(sha256)
        .await?
        .ok_or_else(|| ApiError::not_found("No such document."))?;
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media_type).map_err(|e| ApiError::internal(&e))?,
    );
    Ok(response)
}

/// `GET /v1/persons/{insurer}/{insured}/documents/{sha256}`: a document of
/// the person's certifications, for the person readers (an office's read is
/// logged like any other).
pub async fn download_person_document(
    State(state): State<AppState>,
    caller: Caller,
    Path((insurer, insured, sha256)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    Sha256Digest::parse(&sha256)
        .map_err(|_| ApiError::validation("The digest must be 64 lower-case hex digits."))?;
    authorise_person_read(&state, &caller, &person).await?;
    let documents = state.inner.read.documents_of(&person.key()).await?;
    let Some(document) = documents.iter().find(|d| d.sha256 == sha256) else {
        return Err(ApiError::not_found("The person has no such document."));
    };
    document_response(&state, &sha256, &document.media_type).await
}

/// Adds the document routes, with their own body limit.
pub(crate) fn routes(r: Router<AppState>) -> Router<AppState> {
    let limit = || DefaultBodyLimit::max(DOCUMENT_UPLOAD_BYTES_MAX);
    let r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/certifications/{seq}/investigation-sheet",
        post(upload_investigation_sheet).layer(limit()),
    );
    let r = add(
        r,
        "POST",
        "/v1/persons/{insurer}/{insured}/certifications/{seq}/opinion",
        post(upload_opinion).layer(limit()),
    );
    let r = add(
        r,
        "GET",
        "/v1/persons/{insurer}/{insured}/documents/{sha256}",
        get(download_person_document),
    );
    add(
        r,
        "POST",
        "/v1/attachments",
        post(upload_attachment).layer(limit()),
    )
}
