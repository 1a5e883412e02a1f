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
use sha2::{Digest, Sha256};
use uuid::Uuid;

use kiban_events::domain::DocumentRef;
use kiban_events::domain::Sha256Digest;
use kiban_events::envelope::EventId;
use kiban_store::KeyClaim;

use crate::auth::Caller;
use crate::error::{ApiError, ProblemKind};
use crate::principal::Principal;
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

/// The name an upload is recorded under (`blob_uploads.uploader`): the
/// organisation, not the terminal, because an office applies for a subsidy
/// as an office whichever terminal uploaded the attachment.
pub fn uploader_name(principal: &Principal) -> String {
    match principal {
        Principal::Office { office, .. } => format!("office:{}", office.as_str()),
        Principal::Insurer(insurer) => format!("insurer:{}", insurer.as_str()),
        Principal::MedicalInstitution(code) => format!("medical:{}", code.as_str()),
        Principal::Auditor(id) => format!("auditor:{id}"),
        Principal::Federation => "federation".to_owned(),
    }
}

/// The allowed media type a `Content-Type` names (lower case, parameters
/// dropped), or `None` when it is not one of [`DOCUMENT_MEDIA_TYPES`]. Every
/// upload path (the API's and the web screen's) checks its files with it.
pub fn document_media_type(content_type: &str) -> Option<&'static str> {
    let bare = content_type.split(';').next().unwrap_or("").trim();
    DOCUMENT_MEDIA_TYPES
        .iter()
        .find(|allowed| allowed.eq_ignore_ascii_case(bare))
        .copied()
}

/// The `Idempotency-Key` header as an event id.
pub fn idempotency_key(headers: &HeaderMap) -> Result<EventId, ApiError> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| ApiError::validation("Commands need an Idempotency-Key header (a UUID)."))?;
    value
        .to_str()
        .ok()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .and_then(caller_event_id)
        .ok_or_else(|| {
            ApiError::validation("The Idempotency-Key must be a UUID of version 7 (or 4).")
        })
}

/// A caller's UUID as an event id, when it is of a version callers make
/// (7 or 4; [`EventId::from_caller`] says why).
pub fn caller_event_id(uuid: Uuid) -> Option<EventId> {
    EventId::from_caller(uuid)
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
///
/// A route taking a `CommandKey` must [`CommandKey::claim`] it with its body
/// before executing anything ([`Command`] does so itself): the commands'
/// `execute` answers a retry's duplicate ids with the first answer, which is
/// right only once the claim has shown that the retry is the same command.
#[derive(Debug, Clone)]
pub struct CommandKey {
    /// The caller's idempotency key, the first event's id.
    pub key: EventId,
    /// Who sent the command.
    pub caller: Caller,
    /// The method and path of the request (the route with its parameters).
    pub route: String,
}

impl FromRequestParts<AppState> for CommandKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let key = idempotency_key(&parts.headers)?;
        let route = format!("{} {}", parts.method, parts.uri.path());
        Ok(Self { key, caller, route })
    }
}

impl CommandKey {
    /// Claims the key for this command: the digest of the route, the
    /// principal and `body` (canonical bytes: [`canonical_json`] for a JSON
    /// body, the media type and bytes of a document) is stored with the key
    /// the first time; a later request under the key must have the same
    /// digest, or it is 409 `conflict` before anything is decided.
    pub async fn claim(&self, state: &AppState, body: &[u8]) -> Result<(), ApiError> {
        let mut hasher = Sha256::new();
        for part in [
            b"kiban command digest v1".as_slice(),
            self.route.as_bytes(),
            self.caller.principal.to_uri().as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.update(body);
        let digest: [u8; 32] = hasher.finalize().into();
        match state
            .inner
            .store
            .claim_command_key(self.key.as_uuid(), &digest)
            .await?
        {
            KeyClaim::New | KeyClaim::Same => Ok(()),
            KeyClaim::Different => Err(ApiError::new(
                ProblemKind::Conflict,
                "The Idempotency-Key was already used for a different command (another route, \
                 caller or body); use a new key for a new command.",
            )),
        }
    }
}

/// A JSON value's canonical bytes: object keys sorted at every level, no
/// insignificant white space. Two bodies that mean the same JSON (keys in
/// another order, other spacing) give the same bytes.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.clone(), sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value serialises")
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

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Command<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let command_key = CommandKey::from_request_parts(&mut parts, state).await?;
        let JsonBody(value) =
            JsonBody::<serde_json::Value>::from_request(Request::from_parts(parts, body), state)
                .await?;
        let body = T::deserialize(&value).map_err(|e| {
            ApiError::validation(format!("The JSON body does not match the schema: {e}"))
        })?;
        command_key.claim(state, &canonical_json(&value)).await?;
        let CommandKey { key, caller, .. } = command_key;
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
        let sent = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(media_type) = document_media_type(sent) else {
            return Err(ApiError::new(
                ProblemKind::UnsupportedMediaType,
                format!(
                    "The Content-Type must be one of {} (got {sent:?}).",
                    DOCUMENT_MEDIA_TYPES.join(", ")
                ),
            ));
        };
        let media_type = media_type.to_owned();
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
    /// The bytes a command's key is claimed with: the media type, then the
    /// document.
    pub fn claim_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.media_type.len() + 1 + self.bytes.len());
        bytes.extend_from_slice(self.media_type.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.bytes);
        bytes
    }

    /// The reference storing the bytes will give (their SHA-256, this media
    /// type, their size), computed without storing anything.
    pub fn reference(&self) -> Result<DocumentRef, ApiError> {
        let digest = Sha256Digest::parse(&hex::encode(Sha256::digest(&self.bytes)))
            .map_err(|e| ApiError::internal(&e))?;
        DocumentRef::new(digest, &self.media_type, self.bytes.len() as u64)
            .map_err(|e| ApiError::internal(&e))
    }

    /// Stores the bytes (durable, content-addressed), records that
    /// `uploader` uploaded them with this media type, and returns the
    /// reference events record.
    pub async fn store(
        &self,
        state: &AppState,
        uploader: &Principal,
    ) -> Result<DocumentRef, ApiError> {
        let stored = state
            .inner
            .store
            .put_upload(&self.bytes, &uploader_name(uploader), &self.media_type)
            .await?;
        let digest = Sha256Digest::parse(&stored.sha256).map_err(|e| ApiError::internal(&e))?;
        DocumentRef::new(digest, &self.media_type, stored.size_bytes)
            .map_err(|e| ApiError::internal(&e))
    }
}
