//! The hash chain: `hash = SHA-256(prev_hash ‖ canonical bytes)`, and its
//! verification over any range of positions in constant memory.

use kiban_events::{Hash, Position};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::{RawEvent, Readers};
use crate::error::Result;

/// Events read per page while verifying. Verification is a sequential scan;
/// a thousand events (~1 MB at typical sizes) per round trip amortises the
/// query cost while keeping memory constant however long the chain.
pub const VERIFY_PAGE_EVENTS: usize = 1000;

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
    LinkBroken {
        stored_prev_hash: Option<Hash>,
        expected_prev_hash: Hash,
    },
    /// The chain is internally consistent but the stored hash at a signed
    /// checkpoint's position is not the signed one: the history up to here
    /// was rewritten (hashes recomputed) after the checkpoint was signed.
    CheckpointMismatch { signed: Hash, stored: Hash },
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
/// far after each page (a page is [`VERIFY_PAGE_EVENTS`]).
pub(crate) async fn verify_with(
    readers: &Readers,
    range: &VerifyRange,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport> {
    let from = range.from.max(1);
    let to = match range.to {
        Some(to) => to,
        None => readers.head().await?.map_or(0, |(p, _)| p.max(0) as u64),
    };
    let mut prev = match range.anchor {
        Some(anchor) => anchor,
        None if from == 1 => Hash::GENESIS,
        None => match readers.hashes_at(from - 1).await? {
            Some((_, hash)) => Hash::from_slice(&hash).unwrap_or_default(),
            None => return Ok(broken(from - 1, BreakReason::Missing, 0)),
        },
    };
    // Index of the next signed hash to pass through.
    let mut checkpoint = range.checkpoints.partition_point(|(p, _)| *p < from);
    let mut next = from;
    let mut buffer = Vec::with_capacity(4096);
    while next <= to {
        let want = usize::try_from(to - next + 1)
            .map_or(VERIFY_PAGE_EVENTS, |n| n.min(VERIFY_PAGE_EVENTS));
        let page = readers.read_all(next, want).await?;
        if page.is_empty() {
            return Ok(broken(next, BreakReason::Missing, next - from));
        }
        for row in &page {
            if row.position() != next {
                return Ok(broken(next, BreakReason::Missing, next - from));
            }
            if let Err(reason) = check_row(readers, row, &prev, &mut buffer).await? {
                return Ok(broken(next, reason, next - from));
            }
            prev = Hash::from_slice(&row.hash).expect("checked by check_row");
            while let Some(&(position, signed)) = range.checkpoints.get(checkpoint)
                && position <= next
            {
                if position == next && signed != prev {
                    let reason = BreakReason::CheckpointMismatch {
                        signed,
                        stored: prev,
                    };
                    return Ok(broken(next, reason, next - from));
                }
                checkpoint += 1;
            }
            next += 1;
        }
        progress(next - from);
    }
    Ok(VerifyReport::Verified {
        events: next - from,
        head_hash: prev,
    })
}

fn broken(position: Position, reason: BreakReason, events_verified: u64) -> VerifyReport {
    VerifyReport::Broken {
        position,
        reason,
        events_verified,
    }
}

/// Checks one row against the hash of its predecessor. The outer `Result` is
/// a database error; the inner one is the verdict.
async fn check_row(
    readers: &Readers,
    row: &RawEvent,
    prev: &Hash,
    buffer: &mut Vec<u8>,
) -> Result<Result<(), BreakReason>> {
    let stored_prev = Hash::from_slice(&row.prev_hash);
    if stored_prev != Some(*prev) {
        return Ok(Err(BreakReason::LinkBroken {
            stored_prev_hash: stored_prev,
            expected_prev_hash: *prev,
        }));
    }
    let stored = Hash::from_slice(&row.hash).unwrap_or_default();
    let recomputed = match canonical_bytes(row, buffer) {
        Some(bytes) => chain_hash(prev, bytes),
        // Lengths beyond the encoding's fields cannot have been appended.
        None => Hash::default(),
    };
    if row.hash.len() == 32 && stored == recomputed {
        return Ok(Ok(()));
    }
    // Either the content or the hash field changed. If the next event links
    // to the hash the content gives, the content is intact: the hash field
    // itself was altered.
    let next_links_to_content = match readers.hashes_at(row.position() + 1).await? {
        Some((next_prev, _)) => Hash::from_slice(&next_prev) == Some(recomputed),
        None => false,
    };
    Ok(Err(if next_links_to_content {
        BreakReason::HashAltered { stored, recomputed }
    } else {
        BreakReason::ContentChanged { stored, recomputed }
    }))
}

/// The canonical bytes of a stored row, or `None` when a field is longer
/// than the encoding allows (only possible after a change outside kiban).
fn canonical_bytes<'b>(row: &RawEvent, buffer: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    let fits = row.stream.len() <= usize::from(u16::MAX)
        && row.event_type.len() <= usize::from(u8::MAX)
        && row.actor.len() <= usize::from(u16::MAX)
        && u32::try_from(row.payload.len()).is_ok();
    if !fits {
        return None;
    }
    buffer.clear();
    row.canonical().write(buffer);
    Some(buffer)
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
