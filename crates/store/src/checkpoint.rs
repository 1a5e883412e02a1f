//! Signed checkpoints of the hash chain (docs/audit.md).
//!
//! A checkpoint is the platform's Ed25519 signature over "the event at
//! `position` has hash `hash`, stated at `created_at`". Verification can start
//! from one (trusting the signed hash instead of the stored one), and an
//! outside party holding an export ([`CheckpointExport`]) can prove that the
//! history was not rewritten since: a rewrite that recomputes every hash
//! still verifies internally, but no longer passes through the signed hashes.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use kiban_events::{Hash, Position};
use serde::{Deserialize, Serialize};

use crate::backend::audit as sql;
use crate::chain::{BreakReason, VerifyRange, VerifyReport};
use crate::error::{Error, Result};
use crate::store::Store;

/// The domain tag that starts every signed message, so that a checkpoint
/// signature can never be mistaken for a signature over anything else.
pub const CHECKPOINT_SIGNING_TAG: &[u8] = b"kiban checkpoint v1\n";

/// The domain tag of a linked checkpoint's message (one that also signs the
/// position of the checkpoint before it).
pub const LINKED_CHECKPOINT_SIGNING_TAG: &[u8] = b"kiban checkpoint v2\n";

/// The `format` of an export file.
pub const CHECKPOINT_EXPORT_FORMAT: &str = "kiban-checkpoints-v1";

/// Default number of events between automatic checkpoints.
pub const CHECKPOINT_EVERY_DEFAULT: u64 = 10_000;

/// The platform's checkpoint signing key.
#[derive(Clone)]
pub struct PlatformKey {
    signing: SigningKey,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        write!(f, "PlatformKey(public {})", self.public_key_hex())
    }
}

impl PlatformKey {
    /// A fresh random key (from the operating system's generator).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// Reads a key file: the 32-byte secret as 64 hex digits (one line).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the signing key {}: {e}",
                path.display()
            ))
        })?;
        let bytes = Hash::from_hex(text.trim()).ok_or_else(|| {
            Error::Invalid(format!(
                "the signing key {} is not 64 hex digits",
                path.display()
            ))
        })?;
        Ok(Self {
            signing: SigningKey::from_bytes(&bytes.0),
        })
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key when it
    /// does not exist: the development setup. Production passes a path to a
    /// key provisioned by operations and uses [`PlatformKey::load`].
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        let secret = Hash(key.signing.to_bytes()).to_string();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(path).and_then(|mut file| {
            std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())
        });
        written.map_err(|e| {
            Error::Invalid(format!(
                "cannot create the signing key {}: {e}",
                path.display()
            ))
        })?;
        Ok(key)
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public half as 64 hex digits.
    pub fn public_key_hex(&self) -> String {
        Hash(self.public_key().to_bytes()).to_string()
    }

    /// Signs "the event at `position` has hash `hash`" at `created_at`.
    pub fn sign(&self, position: Position, hash: Hash, created_at: DateTime<Utc>) -> Checkpoint {
        self.sign_message(position, hash, created_at, None)
    }

    /// Signs "the event at `position` has hash `hash`, and the checkpoint
    /// before this one is at `previous` (0: none)" at `created_at`: what
    /// the store records, so that a deleted checkpoint row is found.
    pub fn sign_linked(
        &self,
        position: Position,
        hash: Hash,
        created_at: DateTime<Utc>,
        previous: Position,
    ) -> Checkpoint {
        self.sign_message(position, hash, created_at, Some(previous))
    }

    fn sign_message(
        &self,
        position: Position,
        hash: Hash,
        created_at: DateTime<Utc>,
        previous: Option<Position>,
    ) -> Checkpoint {
        let created_at = kiban_events::envelope::to_store_precision(created_at);
        let message = message_of(position, &hash, created_at, previous);
        Checkpoint {
            position,
            hash,
            created_at,
            public_key: self.public_key_hex(),
            signature: hex::encode(self.signing.sign(&message).to_bytes()),
            previous,
        }
    }
}

/// The bytes a checkpoint signature covers: the tag, the position (8 bytes
/// big-endian), the hash (32 bytes) and the time (µs since the epoch, 8
/// bytes big-endian, two's complement).
pub fn signed_message(position: Position, hash: &Hash, created_at: DateTime<Utc>) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_SIGNING_TAG.len() + 48);
    message.extend_from_slice(CHECKPOINT_SIGNING_TAG);
    message.extend_from_slice(&position.to_be_bytes());
    message.extend_from_slice(&hash.0);
    message.extend_from_slice(&created_at.timestamp_micros().to_be_bytes());
    message
}

/// The bytes a linked checkpoint's signature covers: [`signed_message`]'s
/// fields under [`LINKED_CHECKPOINT_SIGNING_TAG`], then the previous
/// checkpoint's position (8 bytes big-endian, 0 for none).
pub fn linked_signed_message(
    position: Position,
    hash: &Hash,
    created_at: DateTime<Utc>,
    previous: Position,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(LINKED_CHECKPOINT_SIGNING_TAG.len() + 56);
    message.extend_from_slice(LINKED_CHECKPOINT_SIGNING_TAG);
    message.extend_from_slice(&position.to_be_bytes());
    message.extend_from_slice(&hash.0);
    message.extend_from_slice(&created_at.timestamp_micros().to_be_bytes());
    message.extend_from_slice(&previous.to_be_bytes());
    message
}

fn message_of(
    position: Position,
    hash: &Hash,
    created_at: DateTime<Utc>,
    previous: Option<Position>,
) -> Vec<u8> {
    match previous {
        None => signed_message(position, hash, created_at),
        Some(previous) => linked_signed_message(position, hash, created_at, previous),
    }
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The position of the event whose hash is signed.
    pub position: Position,
    /// That event's hash.
    pub hash: Hash,
    /// When the checkpoint was made.
    pub created_at: DateTime<Utc>,
    /// The signer's Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// The Ed25519 signature over [`signed_message`] (or
    /// [`linked_signed_message`] when `previous` is given), 128 hex digits.
    pub signature: String,
    /// The position of the checkpoint before this one (0: none), signed
    /// with it; absent in checkpoints signed before checkpoints were linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Position>,
}

impl Checkpoint {
    /// Whether the signature is valid for `public_key` (the key the
    /// verifier trusts, not the one the checkpoint names).
    pub fn signature_valid(&self, public_key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let message = message_of(self.position, &self.hash, self.created_at, self.previous);
        public_key
            .verify(&message, &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// Parses a public key of 64 hex digits.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes = Hash::from_hex(hex_key.trim())
        .ok_or_else(|| Error::Invalid("a public key is 64 hex digits".to_owned()))?;
    VerifyingKey::from_bytes(&bytes.0)
        .map_err(|_| Error::Invalid("the public key is not a valid Ed25519 point".to_owned()))
}

/// What `kiban audit checkpoint export` writes: every checkpoint and the
/// public key that signed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointExport {
    /// [`CHECKPOINT_EXPORT_FORMAT`].
    pub format: String,
    /// The platform's public key, 64 hex digits.
    pub public_key: String,
    /// Every checkpoint, by position.
    pub checkpoints: Vec<Checkpoint>,
}

/// The outcome of checking an export against a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CheckpointCheck {
    /// Every signature is valid and the stored chain passes through every
    /// signed hash.
    Consistent {
        checkpoints: usize,
        events_verified: u64,
        head_hash: Hash,
    },
    /// A checkpoint's signature does not verify with the export's key (the
    /// file was edited, or signed by someone else).
    BadSignature { position: Position },
    /// The store's chain breaks (including at a signed hash it no longer has).
    Broken(VerifyReport),
}

impl Store {
    /// Verifies the chain from the last checkpoint (or genesis) to the head,
    /// then signs the head with `key` and records the checkpoint. Refuses
    /// (`Error::Corrupted`) to sign a chain that does not verify. Returns the
    /// existing checkpoint when the head is already checkpointed; `None` when
    /// the store is empty.
    pub async fn create_checkpoint(&self, key: &PlatformKey) -> Result<Option<Checkpoint>> {
        let head = self.head().await?;
        if head.position == 0 {
            return Ok(None);
        }
        let last = self.latest_checkpoint(Some(head.position)).await?;
        if let Some(last) = &last
            && last.position == head.position
        {
            return Ok(Some(last.clone()));
        }
        let range = match &last {
            Some(last) => VerifyRange {
                from: last.position + 1,
                to: Some(head.position),
                anchor: Some(last.hash),
                checkpoints: Vec::new(),
            },
            None => VerifyRange {
                from: 1,
                to: Some(head.position),
                ..VerifyRange::default()
            },
        };
        match self.verify_with(&range, &mut |_| {}).await? {
            VerifyReport::Verified { head_hash, .. } if head_hash == head.hash => {}
            report => {
                return Err(Error::Corrupted {
                    position: head.position,
                    reason: format!("refusing to sign a chain that does not verify: {report:?}"),
                });
            }
        }
        let previous = last.as_ref().map_or(0, |last| last.position);
        let checkpoint = key.sign_linked(head.position, head.hash, Utc::now(), previous);
        sql::insert_checkpoint(self.readers(), &checkpoint).await?;
        // Another process may have checkpointed the same position first.
        Ok(self
            .checkpoint_at(head.position)
            .await?
            .or(Some(checkpoint)))
    }

    /// The last position recorded at or before `time` (0 when none): what
    /// "as of `time`" means for replay.
    pub async fn position_at(&self, time: DateTime<Utc>) -> Result<Position> {
        sql::position_at(self.readers(), time).await
    }

    /// Every checkpoint, by position.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        sql::checkpoints(self.readers(), None).await
    }

    /// The checkpoint at `position`, if any.
    pub async fn checkpoint_at(&self, position: Position) -> Result<Option<Checkpoint>> {
        Ok(sql::checkpoints(self.readers(), Some((position, position)))
            .await?
            .pop())
    }

    /// The last checkpoint at or before `position` (any when `None`).
    pub async fn latest_checkpoint(
        &self,
        position: Option<Position>,
    ) -> Result<Option<Checkpoint>> {
        sql::latest_checkpoint(self.readers(), position.unwrap_or(u64::MAX >> 1)).await
    }

    /// Every checkpoint with the key that must have signed them.
    pub async fn export_checkpoints(&self, key: &VerifyingKey) -> Result<CheckpointExport> {
        Ok(CheckpointExport {
            format: CHECKPOINT_EXPORT_FORMAT.to_owned(),
            public_key: Hash(key.to_bytes()).to_string(),
            checkpoints: self.checkpoints().await?,
        })
    }

    /// Checks an export against this store: every signature with the
    /// export's key (which the outside party compares with the key it was
    /// given out of band), then the whole chain from genesis to the head
    /// through every signed hash.
    pub async fn check_export(
        &self,
        export: &CheckpointExport,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<CheckpointCheck> {
        if export.format != CHECKPOINT_EXPORT_FORMAT {
            return Err(Error::Invalid(format!(
                "not a checkpoint export (format {:?}, expected {CHECKPOINT_EXPORT_FORMAT:?})",
                export.format
            )));
        }
        let key = parse_public_key(&export.public_key)?;
        let mut signed = Vec::with_capacity(export.checkpoints.len());
        for checkpoint in &export.checkpoints {
            if !checkpoint.signature_valid(&key) {
                return Ok(CheckpointCheck::BadSignature {
                    position: checkpoint.position,
                });
            }
            signed.push((checkpoint.position, checkpoint.hash));
        }
        signed.sort_by_key(|(position, _)| *position);
        let head = self.head().await?.position;
        let to = head.max(signed.last().map_or(0, |(position, _)| *position));
        let range = VerifyRange {
            from: 1,
            to: Some(to),
            anchor: None,
            checkpoints: signed,
        };
        Ok(match self.verify_with(&range, progress).await? {
            VerifyReport::Verified { events, head_hash } => CheckpointCheck::Consistent {
                checkpoints: export.checkpoints.len(),
                events_verified: events,
                head_hash,
            },
            broken => CheckpointCheck::Broken(broken),
        })
    }

    /// Verifies from the last checkpoint at or before `to` (any when
    /// `None`) signed by `key` (genesis when there is none), trusting its
    /// signed hash instead of the stored one. Before walking on from it, the
    /// event at the checkpoint's own position must be there and hash (from
    /// its content and the stored hash before it) to the signed hash: a
    /// store cut below the checkpoint, or changed at it, is broken there
    /// rather than "verified, 0 events". Returns the checkpoint used and the
    /// report.
    pub async fn verify_from_checkpoint(
        &self,
        key: &VerifyingKey,
        to: Option<Position>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(Option<Checkpoint>, VerifyReport)> {
        let checkpoint = self.latest_checkpoint(to).await?;
        let Some(checkpoint) = checkpoint else {
            let range = VerifyRange {
                from: 1,
                to,
                ..VerifyRange::default()
            };
            return Ok((None, self.verify_with(&range, progress).await?));
        };
        if !checkpoint.signature_valid(key) {
            let report = VerifyReport::Broken {
                position: checkpoint.position,
                reason: BreakReason::CheckpointMismatch {
                    signed: checkpoint.hash,
                    stored: checkpoint.hash,
                },
                events_verified: 0,
            };
            return Ok((Some(checkpoint), report));
        }
        let at_checkpoint = VerifyRange {
            from: checkpoint.position,
            to: Some(checkpoint.position),
            anchor: None,
            checkpoints: vec![(checkpoint.position, checkpoint.hash)],
        };
        let head = self.head().await?.position;
        let report = match crate::chain::truncation(self.readers(), head).await? {
            Some(truncated) => truncated,
            None => self.verify_with(&at_checkpoint, &mut |_| {}).await?,
        };
        if matches!(report, VerifyReport::Broken { .. }) {
            return Ok((Some(checkpoint), report));
        }
        let range = VerifyRange {
            from: checkpoint.position + 1,
            to,
            anchor: Some(checkpoint.hash),
            checkpoints: Vec::new(),
        };
        let report = self.verify_with(&range, progress).await?;
        Ok((Some(checkpoint), report))
    }

    /// Verifies positions `from..=to` (`to` = the head when `None`) like
    /// [`Store::verify`], and the stored signed checkpoints with them: every
    /// signature must verify with the key the checkpoints name (one key for
    /// all), every linked checkpoint's predecessor must be stored (a deleted
    /// row is [`BreakReason::CheckpointDeleted`]), the chain must pass
    /// through the signed hash of every checkpoint in the range, and the
    /// head may not be below the latest checkpoint. What `GET
    /// /v1/audit/verify` answers. The key itself is trusted as stored: an
    /// outside party compares it with the one it was given
    /// ([`Store::check_export`]).
    pub async fn verify_signed(
        &self,
        from: Position,
        to: Option<Position>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<VerifyReport> {
        let stored = self.checkpoints().await?;
        if let Some(report) = checkpoint_table_break(&stored) {
            return Ok(report);
        }
        let last = to.unwrap_or(u64::MAX);
        let range = VerifyRange {
            from,
            to,
            anchor: None,
            checkpoints: stored
                .iter()
                .filter(|c| c.position >= from && c.position <= last)
                .map(|c| (c.position, c.hash))
                .collect(),
        };
        self.verify_with(&range, progress).await
    }

    /// Starts a task that checkpoints every `every` events (checking once
    /// per `poll`), until the store closes. Failures are logged and retried
    /// at the next poll; they never stop the store.
    pub fn spawn_checkpointer(&self, key: PlatformKey, every: u64, poll: Duration) {
        let weak = self.downgrade();
        let cancel = self.cancel_token();
        let every = every.max(1);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(store) = weak.upgrade() else { break };
                let due = async {
                    let head = store.head().await?.position;
                    let last = store
                        .latest_checkpoint(None)
                        .await?
                        .map_or(0, |c| c.position);
                    Ok::<_, Error>(head >= last + every)
                };
                match due.await {
                    Ok(true) => {
                        if let Err(error) = store.create_checkpoint(&key).await {
                            tracing::warn!(%error, "checkpoint failed; retrying later");
                        }
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "checkpoint check failed"),
                }
            }
        });
        self.own_task(task);
    }
}

/// The first problem of the stored checkpoints themselves (by position):
/// a signature that does not verify, a second key, or a linked checkpoint
/// whose predecessor is not stored.
fn checkpoint_table_break(stored: &[Checkpoint]) -> Option<VerifyReport> {
    let broken = |position: Position, reason: BreakReason| VerifyReport::Broken {
        position,
        reason,
        events_verified: 0,
    };
    let key = stored.first().map(|c| parse_public_key(&c.public_key));
    for checkpoint in stored {
        let valid = match &key {
            Some(Ok(key)) => {
                checkpoint.public_key == stored[0].public_key && checkpoint.signature_valid(key)
            }
            _ => false,
        };
        if !valid {
            return Some(broken(
                checkpoint.position,
                BreakReason::CheckpointSignatureInvalid,
            ));
        }
        if let Some(previous) = checkpoint.previous
            && previous > 0
            && stored
                .binary_search_by_key(&previous, |c| c.position)
                .is_err()
        {
            return Some(broken(
                previous,
                BreakReason::CheckpointDeleted {
                    named_by: checkpoint.position,
                },
            ));
        }
    }
    None
}

/// Microseconds since the epoch back to a time (for rows).
pub(crate) fn from_micros(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}
