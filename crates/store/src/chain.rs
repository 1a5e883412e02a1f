//! The hash chain: `hash = SHA-256(prev_hash ‖ canonical bytes)`, and its
//! verification over any range of positions in constant memory.

use kiban_events::{Hash, Position};
use serde::Serialize;
use sha2::{Digest, Sha256};

use kiban_events::envelope::CanonicalFields;

use crate::backend::Readers;
use crate::error::{Error, Result};
use crate::scan::{RowBatch, SCAN_PAGE_EVENTS, Scan, ScannedRow};

/// Events read per keyset page while verifying (one statement, one
/// snapshot, each): see [`crate::scan`]. The rows are handed to the hashing
/// thread in batches of a few thousand; memory is constant however long the
/// chain.
pub const VERIFY_PAGE_EVENTS: usize = SCAN_PAGE_EVENTS as usize;

/// The chain step: `SHA-256(prev ‖ canonical)`.
pub fn chain_hash(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev.0);
    hasher.update(canonical);
    Hash(hasher.finalize().into())
}

/// The outcome of [`crate::Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum VerifyReport {
    /// Every event in the range is present and chained.
    Verified {
        /// How many events were checked.
        events: u64,
        /// The hash of the last event checked (of the event before the range
        /// when the range is empty): compare it with a signed checkpoint.
        head_hash: Hash,
    },
    /// The first position where the chain breaks, and why.
    Broken {
        position: Position,
        reason: BreakReason,
        /// How many events before `position` were checked and found intact.
        events_verified: u64,
    },
}

/// Why the chain breaks at a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum BreakReason {
    /// The event's content (payload or another field) was changed: its stored
    /// hash is not the hash of its stored content.
    ContentChanged { stored: Hash, recomputed: Hash },
    /// The event's `hash` field was changed: its content still hashes to the
    /// value the next event links to, but the stored hash differs.
    HashAltered { stored: Hash, recomputed: Hash },
    /// No event is stored at this position: it was removed (or the range asks
    /// for positions beyond the head).
    Missing,
    /// The event does not link to its predecessor (stored `prev_hash` is not
    /// the previous event's hash): events were reordered or replaced.
    ///
    /// Only stores from before migration 0010 stored a `prev_hash` apart
    /// from the previous row's `hash`; since then the link is that hash by
    /// construction, so this is no longer reported: reordered or replaced
    /// rows show as [`BreakReason::ContentChanged`] at the first row that
    /// does not hash to its stored hash (docs/store.md "Lean rows"). The
    /// variant stays so that reports recorded before still read.
    LinkBroken {
        stored_prev_hash: Option<Hash>,
        expected_prev_hash: Hash,
    },
    /// The chain is internally consistent but the stored hash at a signed
    /// checkpoint's position is not the signed one: the history up to here
    /// was rewritten (hashes recomputed) after the checkpoint was signed.
    CheckpointMismatch { signed: Hash, stored: Hash },
    /// The store ends at `head`, below a signed checkpoint at
    /// `signed_position`: the events `head + 1..=signed_position` (and any
    /// after them) were deleted. The break's position is `head + 1`.
    Truncated {
        head: Position,
        signed_position: Position,
    },
    /// No checkpoint is stored at this position, yet the signed checkpoint
    /// at `named_by` names it as the one before: rows of
    /// `audit_checkpoints` were deleted.
    CheckpointDeleted { named_by: Position },
    /// The stored checkpoint at this position does not verify: its
    /// signature is not valid for its key, or it names another key than the
    /// other checkpoints.
    CheckpointSignatureInvalid,
}

/// What [`crate::Store::verify_with`] walks and what it trusts.
#[derive(Debug, Clone, Default)]
pub struct VerifyRange {
    /// First position to check (from 1).
    pub from: Position,
    /// Last position to check; the head when `None`.
    pub to: Option<Position>,
    /// The hash of the event at `from - 1` taken as trusted (from a signed
    /// checkpoint) instead of the stored one. `None`: genesis when `from` is
    /// 1, otherwise the stored hash of `from - 1`.
    pub anchor: Option<Hash>,
    /// Signed hashes the chain must pass through: `(position, hash)` sorted
    /// by position. The stored hash at each position must equal it, which is
    /// what catches a history rewritten with recomputed hashes.
    pub checkpoints: Vec<(Position, Hash)>,
}

/// Walks positions `from..=to` (`to` = the head when `None`).
pub(crate) async fn verify(
    readers: &Readers,
    from: Position,
    to: Option<Position>,
) -> Result<VerifyReport> {
    let range = VerifyRange {
        from,
        to,
        ..VerifyRange::default()
    };
    verify_with(readers, &range, &mut |_| {}).await
}

/// Walks `range`, calling `progress` with the number of events checked so
/// far after each batch of the scan (a few thousand events).
///
/// The rows come from a [`Scan`] (read on its own thread or task, in keyset
/// pages, into recycled batches) and are hashed on a blocking thread of
/// their own, so reading and hashing overlap. The verdicts are the same as a
/// row-by-row walk's: the first break wins, and telling a changed hash field
/// from changed content still looks at the next event's link.
pub(crate) async fn verify_with(
    readers: &Readers,
    range: &VerifyRange,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport> {
    let from = range.from.max(1);
    let head = readers.head().await?.map_or(0, |(p, _)| p.max(0) as u64);
    let to = range.to.unwrap_or(head);
    if to >= head
        && let Some(report) = truncation(readers, head).await?
    {
        return Ok(report);
    }
    let prev = match range.anchor {
        Some(anchor) => anchor,
        None if from == 1 => Hash::GENESIS,
        None => match readers.hash_at(from - 1).await? {
            Some(hash) => Hash::from_slice(&hash).unwrap_or_default(),
            None => return Ok(broken(from - 1, BreakReason::Missing, 0)),
        },
    };
    if from > to {
        return Ok(VerifyReport::Verified {
            events: 0,
            head_hash: prev,
        });
    }
    // The signed hashes still ahead of the walk.
    let first = range.checkpoints.partition_point(|(p, _)| *p < from);
    let checkpoints = range.checkpoints[first..].to_vec();
    let scan = Scan::start(readers, from, to);
    let (checked, mut counts) = tokio::sync::mpsc::unbounded_channel();
    let walker = tokio::task::spawn_blocking(move || {
        let mut walk = Walk {
            prev,
            next: from,
            from,
            checkpoints,
            checkpoint: 0,
            buffer: Vec::with_capacity(4096),
        };
        walk.run(scan, to, &checked)
    });
    while let Some(count) = counts.recv().await {
        progress(count);
    }
    let verdict = walker
        .await
        .map_err(|e| Error::Unavailable(format!("the verification thread failed: {e}")))??;
    Ok(match verdict {
        Verdict::Report(report) => report,
        Verdict::Unlinked {
            position,
            stored,
            recomputed,
            events_verified,
        } => {
            // Either the content or the hash field changed. If the next event
            // links to the hash the content gives (its stored hash is the
            // chain step from there), the content is intact: the hash field
            // itself was altered.
            let next_links_to_content = links_to(readers, position + 1, &recomputed).await?;
            let reason = if next_links_to_content {
                BreakReason::HashAltered { stored, recomputed }
            } else {
                BreakReason::ContentChanged { stored, recomputed }
            };
            broken(position, reason, events_verified)
        }
    })
}

/// Whether the stored event at `position` hashes to its stored hash when
/// chained to `prev`. False when it is missing or does not parse.
async fn links_to(readers: &Readers, position: Position, prev: &Hash) -> Result<bool> {
    let Some(mut next) = readers.read_all(position, 1).await?.into_iter().next() else {
        return Ok(false);
    };
    if next.position() != position {
        return Ok(false);
    }
    next.prev_hash = Some(prev.0.to_vec());
    let stored = Hash::from_slice(&next.hash);
    Ok(match next.into_recorded() {
        Ok(event) => stored == Some(chain_hash(prev, &event.canonical_bytes())),
        Err(_) => false,
    })
}

/// A break when the store's head is below its latest signed checkpoint
/// (events at its tail were deleted, the checkpoint says they existed).
pub(crate) async fn truncation(readers: &Readers, head: Position) -> Result<Option<VerifyReport>> {
    let latest = crate::backend::audit::latest_checkpoint(readers, u64::MAX >> 1).await?;
    Ok(latest
        .filter(|signed| signed.position > head)
        .map(|signed| {
            broken(
                head + 1,
                BreakReason::Truncated {
                    head,
                    signed_position: signed.position,
                },
                0,
            )
        }))
}

/// What [`BreakReason::Truncated`] says, in words: for the writer's refusal.
pub(crate) fn truncated_message(head: Position, signed_position: Position) -> String {
    format!(
        "refusing to write: the store ends at position {head}, below its signed checkpoint at \
         position {signed_position}, so events {}..={signed_position} were deleted; run \
         `kiban audit verify` and restore them from a backup before writing again",
        head + 1
    )
}

/// What the hashing thread found.
enum Verdict {
    Report(VerifyReport),
    /// The row at `position` does not hash to its stored hash; which of
    /// [`BreakReason::ContentChanged`] and [`BreakReason::HashAltered`] it is
    /// takes a look at the next event (a database read, done by the caller).
    Unlinked {
        position: Position,
        stored: Hash,
        recomputed: Hash,
        events_verified: u64,
    },
}

/// The state of a walk along the chain.
struct Walk {
    /// The hash the next event must link to.
    prev: Hash,
    /// The position expected next.
    next: Position,
    from: Position,
    checkpoints: Vec<(Position, Hash)>,
    /// Index of the next signed hash to pass through.
    checkpoint: usize,
    /// The canonical bytes of the row being hashed (reused).
    buffer: Vec<u8>,
}

impl Walk {
    fn run(
        &mut self,
        mut scan: Scan,
        to: Position,
        checked: &tokio::sync::mpsc::UnboundedSender<u64>,
    ) -> Result<Verdict> {
        while let Some(batch) = scan.blocking_next() {
            let batch = batch?;
            for row in batch.rows() {
                if let Some(verdict) = self.step(&batch, row)? {
                    return Ok(verdict);
                }
            }
            let _ = checked.send(self.next - self.from);
            scan.recycle(batch);
        }
        if self.next <= to {
            return Ok(self.broken(BreakReason::Missing));
        }
        Ok(Verdict::Report(VerifyReport::Verified {
            events: self.next - self.from,
            head_hash: self.prev,
        }))
    }

    fn broken(&self, reason: BreakReason) -> Verdict {
        Verdict::Report(broken(self.next, reason, self.next - self.from))
    }

    /// Checks one row; `Some` is the verdict when the chain breaks here.
    fn step(&mut self, batch: &RowBatch, row: &ScannedRow) -> Result<Option<Verdict>> {
        if row.position() != self.next {
            return Ok(Some(self.broken(BreakReason::Missing)));
        }
        let canonical = batch.canonical(row)?;
        let recomputed = if canonical_fits(&canonical) {
            self.buffer.clear();
            canonical.write(&mut self.buffer);
            chain_hash(&self.prev, &self.buffer)
        } else {
            // Lengths beyond the encoding's fields cannot have been appended.
            Hash::default()
        };
        let stored = batch.hash(row);
        if stored != Some(recomputed) {
            return Ok(Some(Verdict::Unlinked {
                position: self.next,
                stored: stored.unwrap_or_default(),
                recomputed,
                events_verified: self.next - self.from,
            }));
        }
        self.prev = recomputed;
        while let Some(&(position, signed)) = self.checkpoints.get(self.checkpoint)
            && position <= self.next
        {
            if position == self.next && signed != self.prev {
                let reason = BreakReason::CheckpointMismatch {
                    signed,
                    stored: self.prev,
                };
                return Ok(Some(self.broken(reason)));
            }
            self.checkpoint += 1;
        }
        self.next += 1;
        Ok(None)
    }
}

fn broken(position: Position, reason: BreakReason, events_verified: u64) -> VerifyReport {
    VerifyReport::Broken {
        position,
        reason,
        events_verified,
    }
}

/// Whether the fields fit the canonical encoding (only a change outside
/// kiban can make one longer than its length prefix allows).
fn canonical_fits(fields: &CanonicalFields<'_>) -> bool {
    fields.stream.len() <= usize::from(u16::MAX)
        && fields.event_type.len() <= usize::from(u8::MAX)
        && fields.actor.len() <= usize::from(u16::MAX)
        && u32::try_from(fields.payload.len()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hash_is_sha256_of_prev_then_canonical() {
        // SHA-256 of 32 zero bytes followed by "abc", computed independently
        // of `chain_hash` by hashing the concatenation in one go.
        let mut joined = vec![0u8; 32];
        joined.extend_from_slice(b"abc");
        let expected = Hash(Sha256::digest(&joined).into());
        assert_eq!(chain_hash(&Hash::GENESIS, b"abc"), expected);
        assert_ne!(chain_hash(&Hash([1; 32]), b"abc"), expected);
    }
}
