//! The request extractors every route shares: a JSON body with the API's
//! problem mapping ([`JsonBody`]), a command's key and caller
//! ([`CommandKey`]), a whole command ([`Command`]: key, caller, body) and a
//! document upload ([`Document`]).
//!
//! Each refuses with the same problems the handlers used to produce by
//! hand: a missing or malformed `Idempotency-Key`, an unreadable body or
//! JSON that does not match the schema are 400 `validation`, a body over the
//! limit is 413 `payload-too-large`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use kiban_events::domain::DocumentRef;
use kiban_events::domain::Sha256Digest;
use kiban_events::envelope::EventId;

use crate::auth::Caller;
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// The header carrying the caller's idempotency key (a UUID).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

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

/// The `Idempotency-Key` header as an event id.
pub fn idempotency_key(headers: &HeaderMap) -> Result<EventId, ApiError> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| ApiError::validation("Commands need an Idempotency-Key header (a UUID)."))?;
    value
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .and_then(|uuid| EventId::from_uuid(uuid).ok())
        .ok_or_else(|| ApiError::validation("The Idempotency-Key must be a non-nil UUID."))
}

/// The body's bytes, mapping an over-limit body to 413 with `too_large`.
fn body_bytes(body: Result<Bytes, BytesRejection>, too_large: &str) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ProblemKind::PayloadTooLarge, too_large)
        } else {
            ApiError::validation("The request body could not be read.")
        }
    })
}

/// A JSON body (`deny_unknown_fields` on the types makes an unknown field
/// a 400 as well). The `Content-Type` is not checked: clients that send
/// JSON as `text/plain` keep working, as they always have.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> JsonBody<T> {
    fn parse(body: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        let bytes = body_bytes(body, "The request body is over the limit.")?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::validation(format!("The JSON body does not match the schema: {e}"))
        })
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Self::parse(Bytes::from_request(request, state).await)
    }
}

/// What every command carries besides its body: the `Idempotency-Key` (the
/// first event's id) and the authenticated caller.
#[derive(Debug, Clone)]
pub struct CommandKey {
    /// The caller's idempotency key, the first event's id.
    pub key: EventId,
    /// Who sent the command.
    pub caller: Caller,
}

impl FromRequestParts<AppState> for CommandKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let key = idempotency_key(&parts.headers)?;
        Ok(Self { key, caller })
    }
}

/// A command route's request: key, caller and the JSON body `T`.
#[derive(Debug, Clone)]
pub struct Command<T> {
    /// The caller's idempotency key, the first event's id.
    pub key: EventId,
    /// Who sent the command.
    pub caller: Caller,
    /// The request body.
    pub body: T,
}

impl<T> Command<T> {
    /// The key, the caller and the body.
    pub fn into_parts(self) -> (EventId, Caller, T) {
        (self.key, self.caller, self.body)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Command<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let CommandKey { key, caller } = CommandKey::from_request_parts(&mut parts, state).await?;
        let JsonBody(body) =
            JsonBody::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self { key, caller, body })
    }
}

/// An uploaded document: the body is the document itself, its
/// `Content-Type` one of [`DOCUMENT_MEDIA_TYPES`], its size at most
/// [`DOCUMENT_UPLOAD_BYTES_MAX`] (the upload routes carry that body limit).
#[derive(Debug, Clone)]
pub struct Document {
    /// The media type, lower case, without parameters.
    pub media_type: String,
    /// The document's bytes (never empty).
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let media_type = request
            .headers()
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
        let bytes = body_bytes(
            Bytes::from_request(request, state).await,
            &format!("A document is at most {DOCUMENT_UPLOAD_BYTES_MAX} bytes."),
        )?;
        if bytes.is_empty() {
            return Err(ApiError::validation("The document is empty."));
        }
        Ok(Self { media_type, bytes })
    }
}

impl Document {
    /// Stores the bytes (durable, content-addressed) and returns the
    /// reference events record.
    pub async fn store(&self, state: &AppState) -> Result<DocumentRef, ApiError> {
        let stored = state.inner.store.put_blob(&self.bytes).await?;
        let digest = Sha256Digest::parse(&stored.sha256).map_err(|e| ApiError::internal(&e))?;
        DocumentRef::new(digest, &self.media_type, stored.size_bytes)
            .map_err(|e| ApiError::internal(&e))
    }
}
