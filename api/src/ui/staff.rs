//! Staff accounts, sessions and the staff access log of the office web
//! screen: three tables of their own in the store's database, beside the
//! event chain (never in it: a password hash is not an event).
//!
//! - `ui_staff`: one row per office and user ID (スタッフ ID), the argon2id
//!   hash of the password, consecutive failures and the lockout end.
//! - `ui_sessions`: the SHA-256 of each session token (the token itself is
//!   only in the browser's cookie), the staff member, the terminal it was
//!   opened on, its CSRF token, its expiry and the end of its idle time.
//! - `ui_staff_views`: which staff member made each logged read: the
//!   position of the `insured.record_viewed` event beside the user ID.
//!
//! The tables belong to the store's migrations (`0005_ui_staff.sql`,
//! `0007_ui_sessions_idle.sql`), run
//! when the store or the read models' [`Db`] opens the database.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use kiban_events::ids::OfficeNumber;
use kiban_projections::Db;
use kiban_store::both;

/// Consecutive failed logins after which an account is locked.
pub const LOGIN_FAILURES_MAX: i64 = 5;

/// How long a locked account stays locked: long enough to stop guessing,
/// short enough that a member of staff who mistyped can go on after a
/// coffee (an administrator can also reset the password with `kiban admin
/// staff add`).
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// How long a session lasts from login: one working shift.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(9 * 60 * 60);

/// How long a session may go unused before it ends (the screen asks for
/// the password again): a break away from the desk. Every page or form
/// the session opens restarts it.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// Shortest password accepted.
pub const PASSWORD_CHARS_MIN: usize = 12;

/// Longest user ID.
pub const USER_ID_CHARS_MAX: usize = 32;

/// Why a staff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// The user ID is malformed.
    #[error("the user ID must be 1 to 32 letters, digits, '.', '_' or '-'")]
    BadUserId,
    /// The password is too short.
    #[error("the password must be at least 12 characters")]
    WeakPassword,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Hashing failed (a bug).
    #[error("password hashing: {0}")]
    Hash(String),
}

/// Whether `user` is a well-formed user ID.
pub fn valid_user_id(user: &str) -> bool {
    !user.is_empty()
        && user.chars().count() <= USER_ID_CHARS_MAX
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Adds a staff account to `office`, or sets a new password (and clears a
/// lockout) when the user exists. What `kiban admin staff add` runs. A new
/// password ends every session the account had open, in the same
/// transaction: whoever knew the old password is logged out.
pub async fn add_staff(
    db: &Db,
    office: &OfficeNumber,
    user: &str,
    password: &str,
) -> Result<(), StaffError> {
    if !valid_user_id(user) {
        return Err(StaffError::BadUserId);
    }
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(StaffError::WeakPassword);
    }
    let password = password.to_owned();
    let hash = off_runtime(move || hash_password(&password)).await?;
    let upsert =
        "INSERT INTO ui_staff (office, user_id, password_hash, failed_logins, locked_until_us)
        VALUES ($1, $2, $3, 0, NULL)
        ON CONFLICT (office, user_id) DO UPDATE
        SET password_hash = excluded.password_hash, failed_logins = 0, locked_until_us = NULL";
    let revoke = "DELETE FROM ui_sessions WHERE office = $1 AND user_id = $2";
    both!(db.pool(), pool => async {
        let mut tx = pool.begin().await?;
        sqlx::query(upsert)
            .bind(office.as_str())
            .bind(user)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(revoke)
            .bind(office.as_str())
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }.await)?;
    Ok(())
}

fn hash_password(password: &str) -> Result<String, StaffError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| StaffError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StaffError::Hash(e.to_string()))
}

/// The argon2 hash of a password nobody has, verified when the user ID is
/// unknown so that an unknown ID costs the same work as a known one.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).expect("hashing works"))
}

/// The permits for argon2: one per CPU. A hash takes tens of milliseconds
/// of CPU and memory; it runs on tokio's blocking pool, never on the
/// runtime's threads, so other requests go on while logins hash.
fn hashing_permits() -> &'static Semaphore {
    static PERMITS: std::sync::OnceLock<Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(hashing_permits_max()))
}

fn hashing_permits_max() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How many argon2 hashes are being computed right now (at most one per
/// CPU). For tests and diagnostics.
pub fn hashes_in_progress() -> usize {
    hashing_permits_max().saturating_sub(hashing_permits().available_permits())
}

/// Runs `work` (argon2) on the blocking pool once a permit is free. When
/// every permit is taken the login waits its turn (first come, first
/// served); only logins wait, and how many can wait is bounded by the
/// server's connection limits.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StaffError> + Send + 'static,
) -> Result<T, StaffError> {
    let permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| StaffError::Hash(e.to_string()))?;
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StaffError::Hash(e.to_string()))?;
    drop(permit);
    done
}

/// Whether `password` matches `hash` (the decoy's when `None`), computed
/// off the runtime.
async fn verify_off_runtime(hash: Option<String>, password: &str) -> Result<bool, StaffError> {
    let password = password.to_owned();
    off_runtime(move || {
        let right = match &hash {
            Some(hash) => verify(hash, &password),
            None => verify(decoy_hash(), &password),
        };
        Ok(right)
    })
    .await
}

/// What a login attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password is right and the account is not locked: a session was
    /// opened.
    Opened(NewSession),
    /// Anything else: an unknown user, a wrong password, or a locked
    /// account (even with the right password). One answer for all of them,
    /// after the same work, so that the answer does not tell whether a user
    /// ID exists; [`lockout`] says whether an account is locked.
    Refused,
}

/// A session just opened: the token goes into the cookie, the CSRF token
/// into every form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Checks `password` for `user` of `office` at `now`; on success opens a
/// session bound to `terminal`. Every wrong password counts, in one SQL
/// statement (parallel guesses each count); the account locks at
/// [`LOGIN_FAILURES_MAX`] for [`LOCKOUT`].
pub async fn login(
    db: &Db,
    office: &OfficeNumber,
    terminal: &str,
    user: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<LoginOutcome, StaffError> {
    let sql = "SELECT password_hash, locked_until_us FROM ui_staff
        WHERE office = $1 AND user_id = $2";
    let row: Option<(String, Option<i64>)> = if valid_user_id(user) {
        both!(db.pool(), pool => sqlx::query_as(sql)
            .bind(office.as_str())
            .bind(user)
            .fetch_optional(pool)
            .await)?
    } else {
        None
    };
    let now_us = now.timestamp_micros();
    // The same work whatever the account: one argon2 verification.
    let (hash, locked_until) = row.unzip();
    let right = verify_off_runtime(hash.clone(), password).await?;
    if hash.is_none() {
        return Ok(LoginOutcome::Refused);
    }
    if !right {
        // Count the failure and lock at the limit in one statement. A
        // lockout that has ended starts the count afresh; a lockout in
        // force keeps its end (guesses during it still count).
        let sql = "UPDATE ui_staff SET
            failed_logins = CASE WHEN locked_until_us <= $3 THEN 1
                ELSE failed_logins + 1 END,
            locked_until_us = CASE WHEN locked_until_us <= $3 THEN NULL
                WHEN failed_logins + 1 >= $5 THEN COALESCE(locked_until_us, $4)
                ELSE locked_until_us END
            WHERE office = $1 AND user_id = $2";
        both!(db.pool(), pool => sqlx::query(sql)
            .bind(office.as_str())
            .bind(user)
            .bind(now_us)
            .bind(now_us.saturating_add(micros(LOCKOUT)))
            .bind(LOGIN_FAILURES_MAX)
            .execute(pool)
            .await.map(|_| ()))?;
        return Ok(LoginOutcome::Refused);
    }
    if locked_until.flatten().is_some_and(|until| until > now_us) {
        return Ok(LoginOutcome::Refused);
    }
    // The right password: clear the count unless parallel guesses locked
    // the account meanwhile.
    let reset = "UPDATE ui_staff SET failed_logins = 0, locked_until_us = NULL
        WHERE office = $1 AND user_id = $2
        AND (locked_until_us IS NULL OR locked_until_us <= $3)";
    let cleared = both!(db.pool(), pool => sqlx::query(reset)
        .bind(office.as_str())
        .bind(user)
        .bind(now_us)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
    if cleared == 0 {
        return Ok(LoginOutcome::Refused);
    }
    let session = NewSession {
        token: random_token(),
        csrf: random_token(),
    };
    let insert = "INSERT INTO ui_sessions
        (token_sha256, office, user_id, terminal, csrf, expires_at_us, idle_until_us)
        VALUES ($1, $2, $3, $4, $5, $6, $7)";
    both!(db.pool(), pool => sqlx::query(insert)
        .bind(token_digest(&session.token))
        .bind(office.as_str())
        .bind(user)
        .bind(terminal)
        .bind(&session.csrf)
        .bind(now_us.saturating_add(micros(SESSION_LIFETIME)))
        .bind(now_us.saturating_add(micros(SESSION_IDLE)))
        .execute(pool)
        .await.map(|_| ()))?;
    Ok(LoginOutcome::Opened(session))
}

/// The failed logins counted for `user` of `office` and the end of its
/// lockout, if it has ever been locked; `None` for an unknown account.
pub async fn lockout(
    db: &Db,
    office: &OfficeNumber,
    user: &str,
) -> Result<Option<(i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    let sql = "SELECT failed_logins, locked_until_us FROM ui_staff
        WHERE office = $1 AND user_id = $2";
    let row: Option<(i64, Option<i64>)> = both!(db.pool(), pool => sqlx::query_as(sql)
        .bind(office.as_str())
        .bind(user)
        .fetch_optional(pool)
        .await)?;
    Ok(row.map(|(failed, until)| (failed, until.and_then(DateTime::from_timestamp_micros))))
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub office: String,
    pub user: String,
    pub terminal: String,
    pub csrf: String,
}

/// The live session of `token` at `now`, if any: neither past its lifetime
/// nor idle for [`SESSION_IDLE`]. Using a session restarts its idle time
/// (in the same statement).
pub async fn session(
    db: &Db,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>, sqlx::Error> {
    let now_us = now.timestamp_micros();
    // The idle end only moves forward (a clock stepped back does not
    // shorten it).
    let sql = "UPDATE ui_sessions
        SET idle_until_us = CASE WHEN idle_until_us < $3 THEN $3 ELSE idle_until_us END
        WHERE token_sha256 = $1 AND expires_at_us > $2 AND idle_until_us > $2
        RETURNING office, user_id, terminal, csrf";
    let row: Option<(String, String, String, String)> = both!(db.pool(), pool => sqlx::query_as(sql)
        .bind(token_digest(token))
        .bind(now_us)
        .bind(now_us.saturating_add(micros(SESSION_IDLE)))
        .fetch_optional(pool)
        .await)?;
    Ok(row.map(|(office, user, terminal, csrf)| Session {
        office,
        user,
        terminal,
        csrf,
    }))
}

/// Whether the session of `token` is live at `now`, without restarting its
/// idle time (an open update stream checks this; watching is not activity).
pub async fn session_live(db: &Db, token: &str, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM ui_sessions
        WHERE token_sha256 = $1 AND expires_at_us > $2 AND idle_until_us > $2";
    let count: i64 = both!(db.pool(), pool => sqlx::query_scalar(sql)
        .bind(token_digest(token))
        .bind(now.timestamp_micros())
        .fetch_one(pool)
        .await)?;
    Ok(count > 0)
}

/// Ends the session of `token` (and drops expired and idle ones on the way).
pub async fn logout(db: &Db, token: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM ui_sessions WHERE token_sha256 = $1 OR expires_at_us <= $2 OR idle_until_us <= $2";
    both!(db.pool(), pool => sqlx::query(sql)
        .bind(token_digest(token))
        .bind(now.timestamp_micros())
        .execute(pool)
        .await.map(|_| ()))?;
    Ok(())
}

/// Records that `user` made the read logged at `position`.
pub async fn record_staff_view(
    db: &Db,
    position: u64,
    office: &str,
    terminal: &str,
    user: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO ui_staff_views (position, office, terminal, user_id, viewed_at_us)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (position) DO NOTHING";
    both!(db.pool(), pool => sqlx::query(sql)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(office)
        .bind(terminal)
        .bind(user)
        .bind(at.timestamp_micros())
        .execute(pool)
        .await.map(|_| ()))?;
    Ok(())
}

/// The staff member behind the logged read at `position`, if it was made
/// through the web screen.
pub async fn staff_of_view(db: &Db, position: u64) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT user_id FROM ui_staff_views WHERE position = $1";
    both!(db.pool(), pool => sqlx::query_scalar(sql)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .fetch_optional(pool)
        .await)
}

/// 32 random bytes as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_and_secrets() {
        assert!(valid_user_id("care-manager.01"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("a b"));
        assert!(!valid_user_id(&"x".repeat(33)));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        let hash = hash_password("correct horse battery").unwrap();
        assert!(verify(&hash, "correct horse battery"));
        assert!(!verify(&hash, "correct horse battery!"));
    }
}
