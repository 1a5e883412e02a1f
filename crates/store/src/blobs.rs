//! Content-addressed blobs beside the events (DESIGN.md decision 12).
//!
//! Document bodies (認定調査票, 主治医意見書, subsidy attachments) are stored
//! once under their SHA-256 in the `blobs` table of the store's database;
//! events carry only a `DocumentRef` (digest, media type, size). A blob is
//! written before the event referring to it is appended, and is durable
//! when [`Store::put_blob`] returns (the same commit guarantees as events),
//! so no event can refer to bytes that are not there.
//!
//! Each upload also records who uploaded the bytes and the media type they
//! declared ([`Store::put_upload`], table `blob_uploads`, migration 0006):
//! the bytes are shared by digest, but what one principal uploaded is not
//! another's to attach ([`Store::uploads_of`]).
//!
//! Blobs are immutable: putting the same bytes again is a no-op that
//! returns the same digest. Bytes no recorded event names are removed a
//! week after their last upload (`blob_sweep.rs`). They are written through the read pool, not the
//! event writer: they have no position and no order, and a slow upload must
//! not hold up appends.

use sha2::{Digest, Sha256};

use crate::backend::Readers;
use crate::error::{Error, Result};
use crate::store::Store;

/// Largest blob accepted, in bytes: the documents' own limit
/// (`kiban_events::domain::DOCUMENT_BYTES_MAX`, 64 MiB).
pub const BLOB_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A stored blob: its digest (64 lower-case hex digits) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl Store {
    /// Stores `content` under its SHA-256 and returns the reference; durable
    /// on return. Storing bytes already present changes nothing. Empty
    /// content and content over [`BLOB_BYTES_MAX`] are [`Error::Invalid`].
    pub async fn put_blob(&self, content: &[u8]) -> Result<BlobRef> {
        if content.is_empty() || content.len() > BLOB_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "a blob must be 1 byte to {BLOB_BYTES_MAX} bytes (got {})",
                content.len()
            )));
        }
        let digest = Sha256::digest(content);
        let size = i64::try_from(content.len()).expect("bounded above");
        // Times by this process's clock on both backends, as the sweep and
        // the quota compare them with it (and as events' `recorded_at`):
        // not the database server's `now()`, which may differ.
        let now = chrono::Utc::now();
        match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO blobs (sha256, size_bytes, content, stored_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(digest.as_slice())
                .bind(size)
                .bind(content)
                .bind(now)
                .execute(pool)
                .await?;
            }
            Readers::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO blobs (sha256, size_bytes, content, stored_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(digest.as_slice())
                .bind(size)
                .bind(content)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?;
            }
        }
        Ok(BlobRef {
            sha256: hex::encode(digest),
            size_bytes: content.len() as u64,
        })
    }

    /// The content stored under `sha256` (64 lower-case hex digits), if any.
    /// The bytes read back are checked against the digest: a mismatch means
    /// the database was changed outside kiban ([`Error::Corrupted`] at position 0).
    pub async fn get_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let Some(key) = digest_bytes(sha256) else {
            return Ok(None);
        };
        let row: Option<Vec<u8>> = match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query_scalar("SELECT content FROM blobs WHERE sha256 = $1")
                    .bind(key.as_slice())
                    .fetch_optional(pool)
                    .await?
            }
            Readers::Sqlite(pool) => {
                sqlx::query_scalar("SELECT content FROM blobs WHERE sha256 = ?1")
                    .bind(key.as_slice())
                    .fetch_optional(pool)
                    .await?
            }
        };
        match row {
            // Position 0: no event is involved (no real event has it).
            Some(content) if Sha256::digest(&content).as_slice() != key.as_slice() => {
                Err(Error::Corrupted {
                    position: 0,
                    reason: format!("blob {sha256} does not hash to its key"),
                })
            }
            other => Ok(other),
        }
    }

    /// The size of the blob stored under `sha256`, if any (without reading
    /// its content).
    pub async fn blob_size(&self, sha256: &str) -> Result<Option<u64>> {
        let Some(key) = digest_bytes(sha256) else {
            return Ok(None);
        };
        let size: Option<i64> = match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query_scalar("SELECT size_bytes FROM blobs WHERE sha256 = $1")
                    .bind(key.as_slice())
                    .fetch_optional(pool)
                    .await?
            }
            Readers::Sqlite(pool) => {
                sqlx::query_scalar("SELECT size_bytes FROM blobs WHERE sha256 = ?1")
                    .bind(key.as_slice())
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(size.map(|s| u64::try_from(s).unwrap_or(0)))
    }
}

/// One recorded upload of a blob: the media type its uploader declared, the
/// blob's size and when the uploader last uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUpload {
    /// The media type declared at upload.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size_bytes: u64,
    /// The last upload of these bytes by this uploader with this media type
    /// (an upload again moves it): the API attaches only uploads younger
    /// than [`UPLOAD_ATTACHABLE_HOURS`](crate::UPLOAD_ATTACHABLE_HOURS).
    pub uploaded_at: chrono::DateTime<chrono::Utc>,
}

/// Longest uploader name (`blob_uploads.uploader`), in bytes.
pub const UPLOADER_BYTES_MAX: usize = 64;

impl Store {
    /// Stores `content` like [`Store::put_blob`] and records that `uploader`
    /// (an opaque name of at most [`UPLOADER_BYTES_MAX`] bytes chosen by the
    /// caller, e.g. `office:1312345678`) uploaded it as `media_type`;
    /// durable on return. Recording the same upload again moves its time to
    /// now (it is kept, and attachable, that much longer; docs/security.md
    /// "Unattached uploads").
    pub async fn put_upload(
        &self,
        content: &[u8],
        uploader: &str,
        media_type: &str,
    ) -> Result<BlobRef> {
        if uploader.is_empty() || uploader.len() > UPLOADER_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "an uploader is 1 to {UPLOADER_BYTES_MAX} bytes"
            )));
        }
        if media_type.is_empty() || media_type.len() > 127 {
            return Err(Error::Invalid("a media type is 1 to 127 bytes".to_owned()));
        }
        let stored = self.put_blob(content).await?;
        let key = digest_bytes(&stored.sha256).expect("put_blob answers a digest");
        match self.record_upload(&key, uploader, media_type).await {
            // The blob sweep removed the bytes between the two statements
            // (they were old and unnamed): store them again, now.
            Err(error) if crate::blob_sweep::is_foreign_key_violation(&error) => {
                self.put_blob(content).await?;
                self.record_upload(&key, uploader, media_type).await?;
            }
            other => other?,
        }
        Ok(stored)
    }

    /// Records (or moves to now) `uploader`'s upload of the blob `key` as
    /// `media_type`.
    async fn record_upload(
        &self,
        key: &[u8; 32],
        uploader: &str,
        media_type: &str,
    ) -> std::result::Result<(), sqlx::Error> {
        // This process's clock, as in `put_blob`.
        let now = chrono::Utc::now();
        match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO blob_uploads (sha256, uploader, media_type, uploaded_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (sha256, uploader, media_type) \
                     DO UPDATE SET uploaded_at = excluded.uploaded_at",
                )
                .bind(key.as_slice())
                .bind(uploader)
                .bind(media_type)
                .bind(now)
                .execute(pool)
                .await?;
            }
            Readers::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO blob_uploads (sha256, uploader, media_type, uploaded_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sha256, uploader, media_type) \
                     DO UPDATE SET uploaded_at = excluded.uploaded_at",
                )
                .bind(key.as_slice())
                .bind(uploader)
                .bind(media_type)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// What `uploader` uploaded under `sha256`: one entry per media type it
    /// declared (none when it never uploaded those bytes, whoever else did).
    pub async fn uploads_of(&self, sha256: &str, uploader: &str) -> Result<Vec<BlobUpload>> {
        let Some(key) = digest_bytes(sha256) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> = match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT u.media_type, b.size_bytes, u.uploaded_at FROM blob_uploads u \
                     JOIN blobs b ON b.sha256 = u.sha256 \
                     WHERE u.sha256 = $1 AND u.uploader = $2 ORDER BY u.media_type",
                )
                .bind(key.as_slice())
                .bind(uploader)
                .fetch_all(pool)
                .await?
            }
            Readers::Sqlite(pool) => {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT u.media_type, b.size_bytes, u.uploaded_at FROM blob_uploads u \
                     JOIN blobs b ON b.sha256 = u.sha256 \
                     WHERE u.sha256 = ?1 AND u.uploader = ?2 ORDER BY u.media_type",
                )
                .bind(key.as_slice())
                .bind(uploader)
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|(media_type, size, micros)| {
                        let at =
                            chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
                        (media_type, size, at)
                    })
                    .collect()
            }
        };
        Ok(rows
            .into_iter()
            .map(|(media_type, size, uploaded_at)| BlobUpload {
                media_type,
                size_bytes: u64::try_from(size).unwrap_or(0),
                uploaded_at,
            })
            .collect())
    }
}

impl Store {
    /// The bytes of the uploads `uploader` recorded at or after `since`
    /// (each recorded upload counted with its blob's size): what an upload
    /// quota is checked against. Index `blob_uploads_by_uploader`
    /// (migration 0012).
    pub async fn uploaded_bytes_since(
        &self,
        uploader: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64> {
        let total: i64 = match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT COALESCE(SUM(b.size_bytes), 0)::BIGINT FROM blob_uploads u \
                     JOIN blobs b ON b.sha256 = u.sha256 \
                     WHERE u.uploader = $1 AND u.uploaded_at >= $2",
                )
                .bind(uploader)
                .bind(since)
                .fetch_one(pool)
                .await?
            }
            Readers::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COALESCE(SUM(b.size_bytes), 0) FROM blob_uploads u \
                     JOIN blobs b ON b.sha256 = u.sha256 \
                     WHERE u.uploader = ?1 AND u.uploaded_at >= ?2",
                )
                .bind(uploader)
                .bind(since.timestamp_micros())
                .fetch_one(pool)
                .await?
            }
        };
        Ok(u64::try_from(total).unwrap_or(0))
    }
}

/// The 32 bytes of a digest given as 64 lower-case hex digits.
fn digest_bytes(sha256: &str) -> Option<[u8; 32]> {
    if sha256.len() != 64 || sha256.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(sha256, &mut key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lower_case_hex_digests_are_keys() {
        assert!(digest_bytes(&"ab".repeat(32)).is_some());
        assert!(digest_bytes(&"AB".repeat(32)).is_none());
        assert!(digest_bytes("abc").is_none());
        assert!(digest_bytes(&"zz".repeat(32)).is_none());
    }
}
