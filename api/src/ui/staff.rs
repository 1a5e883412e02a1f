//! Staff accounts, sessions and the staff access log of the office web
//! screen: three tables of their own in the store's database, beside the
//! event chain (never in it: a password hash is not an event).
//!
//! - `ui_staff`: one row per office and user ID (スタッフ ID), the argon2id
//!   hash of the password, consecutive failures and the lockout end.
//! - `ui_sessions`: the SHA-256 of each session token (the token itself is
//!   only in the browser's cookie), the staff member, the terminal it was
//!   opened on, its CSRF token and expiry.
//! - `ui_staff_views`: which staff member made each logged read: the
//!   position of the `insured.record_viewed` event beside the user ID.
//!
//! The tables belong to the store's migrations (`0005_ui_staff.sql`), run
//! when the store or the read models' [`Db`] opens the database.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

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
/// lockout) when the user exists. What `kiban admin staff add` runs.
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
    let hash = hash_password(password)?;
    let sql =
        "INSERT INTO ui_staff (office, user_id, password_hash, failed_logins, locked_until_us)
        VALUES ($1, $2, $3, 0, NULL)
        ON CONFLICT (office, user_id) DO UPDATE
        SET password_hash = excluded.password_hash, failed_logins = 0, locked_until_us = NULL";
    both!(db.pool(), pool => sqlx::query(sql)
        .bind(office.as_str())
        .bind(user)
        .bind(&hash)
        .execute(pool)
        .await.map(|_| ()))?;
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
/// unknown so that an unknown ID takes as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token()).expect("hashing works"))
}

/// What a login attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password is right: a session was opened.
    Opened(NewSession),
    /// Unknown user or wrong password (the page does not say which).
    Refused,
    /// Too many failures: locked until then.
    Locked(DateTime<Utc>),
}

/// A session just opened: the token goes into the cookie, the CSRF token
/// into every form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

/// Checks `password` for `user` of `office` at `now`; on success opens a
/// session bound to `terminal`. Counts failures and locks the account after
/// [`LOGIN_FAILURES_MAX`].
pub async fn login(
    db: &Db,
    office: &OfficeNumber,
    terminal: &str,
    user: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<LoginOutcome, StaffError> {
    let sql = "SELECT password_hash, failed_logins, locked_until_us FROM ui_staff
        WHERE office = $1 AND user_id = $2";
    let row: Option<(String, i64, Option<i64>)> = if valid_user_id(user) {
        both!(db.pool(), pool => sqlx::query_as(sql)
            .bind(office.as_str())
            .bind(user)
            .fetch_optional(pool)
            .await)?
    } else {
        None
    };
    let Some((hash, failed, locked_until)) = row else {
        let _ = verify(decoy_hash(), password);
        return Ok(LoginOutcome::Refused);
    };
    let now_us = now.timestamp_micros();
    if let Some(until) = locked_until.filter(|until| *until > now_us) {
        return Ok(LoginOutcome::Locked(
            DateTime::from_timestamp_micros(until).unwrap_or(now),
        ));
    }
    if !verify(&hash, password) {
        let failed = failed + 1;
        let locked_until = (failed >= LOGIN_FAILURES_MAX)
            .then(|| now_us + i64::try_from(LOCKOUT.as_micros()).unwrap_or(i64::MAX));
        // A lockout starts the count afresh once it ends.
        let stored_failures = if locked_until.is_some() { 0 } else { failed };
        let sql = "UPDATE ui_staff SET failed_logins = $3, locked_until_us = $4
            WHERE office = $1 AND user_id = $2";
        both!(db.pool(), pool => sqlx::query(sql)
            .bind(office.as_str())
            .bind(user)
            .bind(stored_failures)
            .bind(locked_until)
            .execute(pool)
            .await.map(|_| ()))?;
        return Ok(match locked_until {
            Some(until) => {
                LoginOutcome::Locked(DateTime::from_timestamp_micros(until).unwrap_or(now))
            }
            None => LoginOutcome::Refused,
        });
    }
    let reset = "UPDATE ui_staff SET failed_logins = 0, locked_until_us = NULL
        WHERE office = $1 AND user_id = $2";
    both!(db.pool(), pool => sqlx::query(reset)
        .bind(office.as_str())
        .bind(user)
        .execute(pool)
        .await.map(|_| ()))?;
    let session = NewSession {
        token: random_token(),
        csrf: random_token(),
    };
    let expires = now_us + i64::try_from(SESSION_LIFETIME.as_micros()).unwrap_or(i64::MAX);
    let insert =
        "INSERT INTO ui_sessions (token_sha256, office, user_id, terminal, csrf, expires_at_us)
        VALUES ($1, $2, $3, $4, $5, $6)";
    both!(db.pool(), pool => sqlx::query(insert)
        .bind(token_digest(&session.token))
        .bind(office.as_str())
        .bind(user)
        .bind(terminal)
        .bind(&session.csrf)
        .bind(expires)
        .execute(pool)
        .await.map(|_| ()))?;
    Ok(LoginOutcome::Opened(session))
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

/// The live session of `token` at `now`, if any.
pub async fn session(
    db: &Db,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>, sqlx::Error> {
    let sql = "SELECT office, user_id, terminal, csrf FROM ui_sessions
        WHERE token_sha256 = $1 AND expires_at_us > $2";
    let row: Option<(String, String, String, String)> = both!(db.pool(), pool => sqlx::query_as(sql)
        .bind(token_digest(token))
        .bind(now.timestamp_micros())
        .fetch_optional(pool)
        .await)?;
    Ok(row.map(|(office, user, terminal, csrf)| Session {
        office,
        user,
        terminal,
        csrf,
    }))
}

/// Ends the session of `token` (and drops expired ones on the way).
pub async fn logout(db: &Db, token: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let sql = "DELETE FROM ui_sessions WHERE token_sha256 = $1 OR expires_at_us <= $2";
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
