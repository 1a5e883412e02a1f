//! The clean-up of unattached uploads (issue 16, Low; docs/security.md
//! "Unattached uploads"): a blob no recorded event names, and that nobody
//! uploaded within [`UNREFERENCED_BLOB_RETENTION_HOURS`], is removed with
//! its upload records.
//!
//! Two steps, [`Store::sweep_blobs`] running both:
//!
//! 1. [`Store::record_blob_references`] reads the log from where it stopped
//!    last (`blob_sweep.scanned_through`) to the head and records every
//!    digest an event's payload names in `blob_references` (migration
//!    0012). Any quoted string of 64 lower-case hex digits counts: a
//!    `DocumentRef` of any event type, today's or a later one, is found
//!    without a list of event types to keep up to date, and a digest that
//!    only looks like one keeps some bytes longer, never fewer.
//! 2. [`Store::remove_unreferenced_blobs`] removes the blobs stored before
//!    the cutoff that no recorded event names and that have no upload at or
//!    after the cutoff, each with its upload records.
//!
//! **The race with an application** (an upload named by a command decided
//! after step 1 looked) is closed by a grace period, not a lock: the API
//! attaches only uploads younger than [`UPLOAD_ATTACHABLE_HOURS`] (one day
//! less than the retention), and the investigation sheet and the doctor's
//! opinion are uploaded (which stamps the upload anew) in the request that
//! records them. So a blob the sweep may remove was last checked by a
//! command more than a day before the sweep began; a command is decided and
//! appended within seconds of its check (the API's request, the writer's
//! queue), so its event is in the log step 1 reads. The sweep therefore
//! needs no lock on the writer and runs beside appends.
//!
//! **The race with a new upload of the same bytes** (content addressing:
//! an upload of bytes the sweep is removing) is decided row by row: the
//! blob is deleted only if it still has no upload record (the foreign key
//! of `blob_uploads` refuses the delete otherwise, and the blob stays), and
//! an upload that finds its bytes removed between storing them and
//! recording itself stores them again ([`Store::put_upload`]).

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::backend::Readers;
use crate::error::Result;
use crate::store::Store;

/// How long bytes no recorded event names are kept after their last
/// upload, in hours (7 days): long enough for an office to prepare an
/// application over a week, short enough that abandoned uploads (bounded
/// per day by the API's quota) do not pile up.
pub const UNREFERENCED_BLOB_RETENTION_HOURS: i64 = 7 * 24;

/// How long after its last upload an upload may be named by a subsidy
/// application, in hours (6 days): one day less than the retention, the
/// grace that keeps the sweep from removing bytes a command is being
/// decided with (module documentation).
pub const UPLOAD_ATTACHABLE_HOURS: i64 = UNREFERENCED_BLOB_RETENTION_HOURS - 24;

/// Blobs looked at per query of step 2; the step repeats until a batch
/// removes nothing.
pub const BLOB_SWEEP_BATCH_MAX: i64 = 500;

/// Events read from the log per transaction of step 1.
const REFERENCE_SCAN_EVENTS_MAX: u64 = 10_000;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobSweep {
    /// The log was read up to this position (inclusive).
    pub scanned_through: u64,
    /// Digests newly found named by an event.
    pub references_recorded: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
}

impl Store {
    /// Both steps: references up to the head, then removal of what no
    /// event names and nobody uploaded within the retention before `now`.
    pub async fn sweep_blobs(&self, now: DateTime<Utc>) -> Result<BlobSweep> {
        let cutoff = now - chrono::Duration::hours(UNREFERENCED_BLOB_RETENTION_HOURS);
        let (scanned_through, references_recorded) = self.record_blob_references().await?;
        let (blobs_removed, bytes_removed) = self.remove_unreferenced_blobs(cutoff).await?;
        Ok(BlobSweep {
            scanned_through,
            references_recorded,
            blobs_removed,
            bytes_removed,
        })
    }

    /// Step 1: records the digests named by the events after the last
    /// sweep's position, up to the head at the call; answers that head and
    /// how many digests were new.
    pub async fn record_blob_references(&self) -> Result<(u64, u64)> {
        let head = self.head().await?.position;
        let mut from = self.blob_sweep_position().await? + 1;
        let mut recorded = 0;
        while from <= head {
            let to = head.min(from + REFERENCE_SCAN_EVENTS_MAX - 1);
            let mut digests: Vec<([u8; 32], u64)> = Vec::new();
            let mut batches = self.read_range(from, to);
            while let Some(batch) = batches.next().await {
                for event in batch? {
                    for digest in quoted_digests(event.payload.as_str()) {
                        digests.push((digest, event.position));
                    }
                }
            }
            recorded += self.insert_references(&digests, to).await?;
            from = to + 1;
        }
        Ok((head, recorded))
    }

    /// How far the log was read for references.
    async fn blob_sweep_position(&self) -> Result<u64> {
        let sql = "SELECT scanned_through FROM blob_sweep WHERE id = 1";
        let position: i64 =
            crate::both!(self.readers(), pool => sqlx::query_scalar(sql).fetch_one(pool).await)?;
        Ok(u64::try_from(position).unwrap_or(0))
    }

    /// Records `digests` (each with the position naming it) and moves the
    /// sweep's position to `through`, in one transaction; answers how many
    /// digests were new.
    async fn insert_references(&self, digests: &[([u8; 32], u64)], through: u64) -> Result<u64> {
        let insert = "INSERT INTO blob_references (sha256, position) VALUES ($1, $2) \
                      ON CONFLICT (sha256) DO NOTHING";
        let advance = "UPDATE blob_sweep SET scanned_through = $1 WHERE id = 1";
        let position = |p: u64| i64::try_from(p).expect("positions fit i64");
        let inserted = crate::both!(self.readers(), pool => {
            let mut tx = pool.begin().await?;
            let mut inserted = 0;
            for (digest, at) in digests {
                inserted += sqlx::query(insert)
                    .bind(digest.as_slice())
                    .bind(position(*at))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            sqlx::query(advance)
                .bind(position(through))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            inserted
        });
        Ok(inserted)
    }

    /// Step 2: removes each blob stored before `cutoff` that no recorded
    /// event names (as far as step 1 has read) and that has no upload at or
    /// after `cutoff`, with its upload records; answers how many blobs and
    /// bytes. Run step 1 first: a blob named only by events step 1 has not
    /// read yet would be removed.
    pub async fn remove_unreferenced_blobs(&self, cutoff: DateTime<Utc>) -> Result<(u64, u64)> {
        let (mut blobs, mut bytes) = (0, 0);
        loop {
            let candidates = self.unreferenced_blobs(cutoff).await?;
            let mut removed_in_batch = 0;
            for (digest, size) in &candidates {
                if self.remove_blob(digest, cutoff).await? {
                    removed_in_batch += 1;
                    bytes += u64::try_from(*size).unwrap_or(0);
                }
            }
            blobs += removed_in_batch;
            if removed_in_batch == 0 || candidates.len() < BLOB_SWEEP_BATCH_MAX as usize {
                return Ok((blobs, bytes));
            }
        }
    }

    /// Up to [`BLOB_SWEEP_BATCH_MAX`] blobs step 2 may remove: digest and
    /// size.
    async fn unreferenced_blobs(&self, cutoff: DateTime<Utc>) -> Result<Vec<(Vec<u8>, i64)>> {
        Ok(match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT b.sha256, b.size_bytes FROM blobs b WHERE b.stored_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = b.sha256) \
                     AND NOT EXISTS (SELECT 1 FROM blob_uploads u \
                                     WHERE u.sha256 = b.sha256 AND u.uploaded_at >= $1) \
                     LIMIT $2",
                )
                .bind(cutoff)
                .bind(BLOB_SWEEP_BATCH_MAX)
                .fetch_all(pool)
                .await?
            }
            Readers::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT b.sha256, b.size_bytes FROM blobs b WHERE b.stored_at < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = b.sha256) \
                     AND NOT EXISTS (SELECT 1 FROM blob_uploads u \
                                     WHERE u.sha256 = b.sha256 AND u.uploaded_at >= ?1) \
                     LIMIT ?2",
                )
                .bind(cutoff.timestamp_micros())
                .bind(BLOB_SWEEP_BATCH_MAX)
                .fetch_all(pool)
                .await?
            }
        })
    }

    /// Removes one blob's stale upload records, then the blob if it is
    /// still unnamed, stored before `cutoff` and without any upload record;
    /// whether it was removed. An upload recorded meanwhile keeps it: the
    /// conditions are on the rows themselves, and the foreign key of
    /// `blob_uploads` refuses the delete of a blob with a record.
    async fn remove_blob(&self, digest: &[u8], cutoff: DateTime<Utc>) -> Result<bool> {
        let deleted = match self.readers() {
            Readers::Postgres(pool) => {
                sqlx::query(
                    "DELETE FROM blob_uploads WHERE sha256 = $1 AND uploaded_at < $2 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = $1)",
                )
                .bind(digest)
                .bind(cutoff)
                .execute(pool)
                .await?;
                sqlx::query(
                    "DELETE FROM blobs b WHERE b.sha256 = $1 AND b.stored_at < $2 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = $1) \
                     AND NOT EXISTS (SELECT 1 FROM blob_uploads u WHERE u.sha256 = $1)",
                )
                .bind(digest)
                .bind(cutoff)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            }
            Readers::Sqlite(pool) => {
                sqlx::query(
                    "DELETE FROM blob_uploads WHERE sha256 = ?1 AND uploaded_at < ?2 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = ?1)",
                )
                .bind(digest)
                .bind(cutoff.timestamp_micros())
                .execute(pool)
                .await?;
                sqlx::query(
                    "DELETE FROM blobs WHERE sha256 = ?1 AND stored_at < ?2 \
                     AND NOT EXISTS (SELECT 1 FROM blob_references r WHERE r.sha256 = ?1) \
                     AND NOT EXISTS (SELECT 1 FROM blob_uploads u WHERE u.sha256 = ?1)",
                )
                .bind(digest)
                .bind(cutoff.timestamp_micros())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            }
        };
        match deleted {
            Ok(rows) => Ok(rows == 1),
            Err(error) if is_foreign_key_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// Whether `error` is a foreign-key violation (either backend).
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
}

/// The digests a JSON text names: every string of exactly 64 lower-case hex
/// digits between quotes. Hex digits are never escaped in JSON, so a digest
/// in a string appears as these 66 bytes.
fn quoted_digests(json: &str) -> Vec<[u8; 32]> {
    let bytes = json.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at + 66 <= bytes.len() {
        if bytes[at] == b'"'
            && bytes[at + 65] == b'"'
            && bytes[at + 1..at + 65]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&bytes[at + 1..at + 65], &mut digest).expect("checked hex");
            found.push(digest);
            at += 66;
        } else {
            at += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quoted_digest_of_a_payload_is_found_and_nothing_else() {
        let a = "ab".repeat(32);
        let b = "0f".repeat(32);
        let payload = format!(
            r#"{{"receipt_lines":[{{"receipt":{{"sha256":"{a}","media_type":"application/pdf","size_bytes":3}}}}],"passbook":{{"sha256":"{b}"}},"note":"{a}0","upper":"{}","short":"{}"}}"#,
            "AB".repeat(32),
            "ab".repeat(31)
        );
        let found: Vec<String> = quoted_digests(&payload).iter().map(hex::encode).collect();
        assert_eq!(found, [a, b]);
    }
}
