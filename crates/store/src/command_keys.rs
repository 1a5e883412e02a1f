//! The API's idempotency keys and the digest of the command each was first
//! used for (table `command_keys`, migration 0006; docs/security.md, item 12).
//!
//! The engine recognises a retried command by its event ids, which tells a
//! retry apart from another command only when both decide the same events.
//! The API claims the key with a digest of the request (route, principal,
//! canonical body) before deciding: the same digest is a retry and gets the
//! first answer; another digest is another command under a used key.

use uuid::Uuid;

use crate::backend::Readers;
use crate::error::Result;
use crate::store::Store;

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key was unused; it now belongs to this digest.
    New,
    /// The key was claimed before with the same digest: a retry.
    Same,
    /// The key was claimed before with another digest: another command.
    Different,
}

impl Store {
    /// Claims `key` for the command whose digest is `digest`; durable on
    /// return. Concurrent claims of one key agree: one is [`KeyClaim::New`],
    /// the others compare with its digest.
    pub async fn claim_command_key(&self, key: &Uuid, digest: &[u8; 32]) -> Result<KeyClaim> {
        let (inserted, stored): (u64, Option<Vec<u8>>) = match self.readers() {
            Readers::Postgres(pool) => {
                let inserted = sqlx::query(
                    "INSERT INTO command_keys (command_id, digest) VALUES ($1, $2) \
                     ON CONFLICT (command_id) DO NOTHING",
                )
                .bind(key)
                .bind(digest.as_slice())
                .execute(pool)
                .await?
                .rows_affected();
                let stored =
                    sqlx::query_scalar("SELECT digest FROM command_keys WHERE command_id = $1")
                        .bind(key)
                        .fetch_optional(pool)
                        .await?;
                (inserted, stored)
            }
            Readers::Sqlite(pool) => {
                let inserted = sqlx::query(
                    "INSERT INTO command_keys (command_id, digest, claimed_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (command_id) DO NOTHING",
                )
                .bind(key.as_bytes().as_slice())
                .bind(digest.as_slice())
                .bind(chrono::Utc::now().timestamp_micros())
                .execute(pool)
                .await?
                .rows_affected();
                let stored =
                    sqlx::query_scalar("SELECT digest FROM command_keys WHERE command_id = ?1")
                        .bind(key.as_bytes().as_slice())
                        .fetch_optional(pool)
                        .await?;
                (inserted, stored)
            }
        };
        Ok(match (inserted, stored) {
            (1, _) => KeyClaim::New,
            (_, Some(stored)) if stored.as_slice() == digest.as_slice() => KeyClaim::Same,
            _ => KeyClaim::Different,
        })
    }
}
