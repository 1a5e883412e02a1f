//! The SQL of the audit tables (`audit_checkpoints`, `person_keys`), one
//! dialect for both backends: times are microseconds since the epoch in a
//! BIGINT/INTEGER column and `$n` parameters work on both.

use kiban_events::{Hash, Position};

use super::{Readers, to_i64};
use crate::checkpoint::{Checkpoint, from_micros};
use crate::error::{Error, Result};

type CheckpointRow = (i64, Vec<u8>, i64, Vec<u8>, Vec<u8>, Option<i64>);

const CHECKPOINT_COLUMNS: &str =
    "position, hash, created_at, public_key, signature, previous_position";

fn checkpoint_from_row(row: CheckpointRow) -> Result<Checkpoint> {
    let (position, hash, created_at, public_key, signature, previous) = row;
    let position = u64::try_from(position).unwrap_or(0);
    let hash = Hash::from_slice(&hash).ok_or_else(|| Error::Corrupted {
        position,
        reason: "the checkpoint's hash is not 32 bytes".to_owned(),
    })?;
    Ok(Checkpoint {
        position,
        hash,
        created_at: from_micros(created_at),
        public_key: hex::encode(public_key),
        signature: hex::encode(signature),
        previous: previous.map(|p| u64::try_from(p).unwrap_or(0)),
    })
}

pub(crate) async fn insert_checkpoint(readers: &Readers, checkpoint: &Checkpoint) -> Result<()> {
    let public_key = hex::decode(&checkpoint.public_key)
        .map_err(|_| Error::Invalid("public key is not hex".to_owned()))?;
    let signature = hex::decode(&checkpoint.signature)
        .map_err(|_| Error::Invalid("signature is not hex".to_owned()))?;
    let sql = "INSERT INTO audit_checkpoints \
               (position, hash, created_at, public_key, signature, previous_position) \
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (position) DO NOTHING";
    crate::both!(readers, pool => sqlx::query(sql)
        .bind(to_i64(checkpoint.position))
        .bind(&checkpoint.hash.0[..])
        .bind(checkpoint.created_at.timestamp_micros())
        .bind(public_key)
        .bind(signature)
        .bind(checkpoint.previous.map(to_i64))
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Checkpoints with a position in `range` (all when `None`), by position.
pub(crate) async fn checkpoints(
    readers: &Readers,
    range: Option<(Position, Position)>,
) -> Result<Vec<Checkpoint>> {
    let (low, high) = range.unwrap_or((0, u64::MAX >> 1));
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
         WHERE position BETWEEN $1 AND $2 ORDER BY position"
    );
    let rows: Vec<CheckpointRow> = crate::both!(readers, pool => sqlx::query_as(&sql)
        .bind(to_i64(low))
        .bind(to_i64(high))
        .fetch_all(pool)
        .await)?;
    rows.into_iter().map(checkpoint_from_row).collect()
}

pub(crate) async fn latest_checkpoint(
    readers: &Readers,
    at_or_before: Position,
) -> Result<Option<Checkpoint>> {
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
         WHERE position <= $1 ORDER BY position DESC LIMIT 1"
    );
    let row: Option<CheckpointRow> = crate::both!(readers, pool => sqlx::query_as(&sql)
        .bind(to_i64(at_or_before))
        .fetch_optional(pool)
        .await)?;
    row.map(checkpoint_from_row).transpose()
}

/// The last position recorded at or before `time` (0 when none). A scan of
/// `recorded_at`, exact even if the clock ever stepped back between batches.
pub(crate) async fn position_at(
    readers: &Readers,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<Position> {
    let position: Option<i64> = match readers {
        Readers::Postgres(pool) => {
            sqlx::query_scalar("SELECT MAX(position) FROM events WHERE recorded_at <= $1")
                .bind(time)
                .fetch_one(pool)
                .await?
        }
        Readers::Sqlite(pool) => {
            sqlx::query_scalar("SELECT MAX(position) FROM events WHERE recorded_at <= $1")
                .bind(time.timestamp_micros())
                .fetch_one(pool)
                .await?
        }
    };
    Ok(position.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
}

/// A row of `person_keys`: the key id and the data key (`None` once forgotten).
pub(crate) type PersonKeyRow = (String, Option<Vec<u8>>);

/// The key row of `person` (`<insurer>-<insured>`), if any.
pub(crate) async fn person_key(readers: &Readers, person: &str) -> Result<Option<PersonKeyRow>> {
    let sql = "SELECT key_id, data_key FROM person_keys WHERE person = $1";
    let row: Option<PersonKeyRow> = crate::both!(readers, pool => sqlx::query_as(sql)
        .bind(person)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Inserts a key for `person` unless one exists (another caller may have
/// created it first; the caller reads the row back).
pub(crate) async fn insert_person_key(
    readers: &Readers,
    person: &str,
    key_id: &str,
    data_key: Option<&[u8]>,
    created_at_micros: i64,
    forgotten_at_micros: Option<i64>,
) -> Result<()> {
    let sql = "INSERT INTO person_keys (person, key_id, data_key, created_at, forgotten_at) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (person) DO NOTHING";
    crate::both!(readers, pool => sqlx::query(sql)
        .bind(person)
        .bind(key_id)
        .bind(data_key)
        .bind(created_at_micros)
        .bind(forgotten_at_micros)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Destroys the data key of `person` (NULL, `forgotten_at` set once) and
/// returns the key id, or `None` when the person has no key row. Then makes
/// the old key bytes unreachable in the database files: SQLite overwrites
/// the freed cell with zeros (`secure_delete` on the updating connection)
/// and checkpoints the WAL into the main file, truncating it; PostgreSQL
/// vacuums the table so the dead row version holding the key is pruned.
pub(crate) async fn destroy_person_key(
    readers: &Readers,
    person: &str,
    forgotten_at_micros: i64,
) -> Result<Option<String>> {
    let sql = "UPDATE person_keys SET data_key = NULL, \
               forgotten_at = COALESCE(forgotten_at, $2) WHERE person = $1 RETURNING key_id";
    match readers {
        Readers::Postgres(pool) => {
            let key_id: Option<String> = sqlx::query_scalar(sql)
                .bind(person)
                .bind(forgotten_at_micros)
                .fetch_optional(pool)
                .await?;
            sqlx::query("VACUUM person_keys").execute(pool).await?;
            Ok(key_id)
        }
        Readers::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *conn)
                .await?;
            let key_id: Option<String> = sqlx::query_scalar(sql)
                .bind(person)
                .bind(forgotten_at_micros)
                .fetch_optional(&mut *conn)
                .await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await?;
            Ok(key_id)
        }
    }
}
