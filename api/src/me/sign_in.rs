//! The person's sign-in with their My Number card, and the sessions it
//! opens (docs/api.md "The person's view", docs/security.md).
//!
//! 1. A challenge: `POST /v1/me/challenge` (a program acting for the person
//!    over the API), or the sign-in page `GET /me/login` (a browser: the
//!    challenge is then bound to a random secret in the page's cookie).
//!    The text the card signs is [`sign_in_challenge_text`] of its nonce.
//! 2. The card signs it with the user-authentication key (the person
//!    enters the 4-digit PIN; `kiban card sign-in`).
//! 3. `POST /v1/me/sessions` with the nonce, the certificate and the
//!    signature: the server checks them as it checks a consent
//!    (`card_consent::verify_card`), finds the person the certificate is
//!    linked to (`insured.card_linked`, through the `card_links` read model,
//!    confirmed on the person's own stream) and opens a session of
//!    [`PERSON_SESSION_SECONDS`]. A challenge of the API answers the
//!    session's bearer token; a browser's is collected by the page that
//!    holds its secret (`POST /me/login`), which then sets the session
//!    cookie.
//!
//! Challenges live in memory (like the consent's); sessions in the
//! `person_sessions` table (SHA-256 of the token only), so that every API
//! process of a deployment accepts them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use kiban_events::domain::insured::{InsuredPerson, insured_stream};
use kiban_projections::Db;
use kiban_store::both;

use crate::auth::{PersonId, fold};
use crate::card_consent::{SignedChallenge, card_link_of, refused, verify_card};
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;
use crate::ui::staff::{random_token, same_secret};

/// How long a person's session lasts from sign-in, in seconds; it is not
/// extended by use. Short: the person's view is looked at, not worked in,
/// and a card is the credential (signing in again takes the card and the
/// PIN).
pub const PERSON_SESSION_SECONDS: i64 = 30 * 60;

/// How long a sign-in challenge may be signed and collected, in seconds:
/// time to put the card on the reader and enter the PIN.
pub const SIGN_IN_CHALLENGE_TTL_SECONDS: i64 = 300;

/// Most sign-in challenges outstanding at once; beyond it new ones are
/// refused (503 rate-limited) until some are used or expire. Bounds memory.
pub const SIGN_IN_CHALLENGES_MAX: usize = 10_000;

/// Most unsigned sign-in challenges one client address (an IPv6 client's
/// /64 network) holds at once: a new one beyond it replaces that address's
/// oldest. So one address cannot fill [`SIGN_IN_CHALLENGES_MAX`] and lock
/// everyone else out of signing in (it would take a hundred addresses),
/// while a person who reloads the sign-in page keeps getting challenges.
/// A hundred: several people signing in behind one carrier NAT at once.
pub const SIGN_IN_CHALLENGES_PER_ADDRESS_MAX: usize = 100;

/// What sign-in challenges are counted by: an IPv4 address, or an IPv6
/// address's /64 network (one subscriber's, which can use any address in
/// it); an IPv4 address mapped into IPv6 as that IPv4 address.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// The exact text the card signs for the sign-in challenge `nonce` (its
/// UTF-8 bytes): fixed, so that a program given only the nonce (the code
/// the sign-in page shows) signs the same text the server checks.
pub fn sign_in_challenge_text(nonce: &str) -> String {
    format!("kiban person sign-in v1\nnonce {nonce}\n")
}

/// A session just opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedSession {
    /// The bearer token / cookie value (only the person holds it).
    pub token: String,
    /// The person.
    pub insurer: String,
    pub insured: String,
    /// Its end.
    pub expires_at: DateTime<Utc>,
}

/// A live session of a person.
#[derive(Debug, Clone)]
pub struct PersonSession {
    /// Whose.
    pub person: PersonId,
    /// The CSRF token of the web page's forms.
    pub csrf: String,
    /// Its end.
    pub expires_at: DateTime<Utc>,
}

/// One outstanding challenge.
#[derive(Debug)]
struct SignIn {
    expires_at: DateTime<Utc>,
    /// Who asked for it ([`address_key`]), when known.
    client: Option<IpAddr>,
    /// Its place in the order of issue (the oldest makes room).
    issued: u64,
    /// For a browser: the SHA-256 of the secret in its sign-in cookie.
    browser: Option<String>,
    /// Once signed (a browser's, until the page collects it).
    signed: Option<OpenedSession>,
}

/// The outstanding sign-in challenges by nonce. A std mutex: held for one
/// map operation, never across an await.
#[derive(Debug, Default)]
pub(crate) struct SignIns {
    by_nonce: Mutex<HashMap<String, SignIn>>,
    issued: std::sync::atomic::AtomicU64,
}

impl SignIns {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SignIn>> {
        self.by_nonce.lock().expect("not poisoned")
    }

    /// A new challenge asked for from `client` (for the browser whose
    /// sign-in cookie holds `browser_secret`, when given): its nonce and
    /// expiry. The client's oldest unsigned challenge makes room when it
    /// holds [`SIGN_IN_CHALLENGES_PER_ADDRESS_MAX`].
    pub(crate) fn issue(
        &self,
        now: DateTime<Utc>,
        browser_secret: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(String, DateTime<Utc>), ApiError> {
        let nonce = Uuid::new_v4().simple().to_string();
        let expires_at = now + chrono::Duration::seconds(SIGN_IN_CHALLENGE_TTL_SECONDS);
        let client = client.map(address_key);
        let mut sign_ins = self.lock();
        sign_ins.retain(|_, s| s.expires_at > now);
        if let Some(client) = client {
            let held = sign_ins
                .iter()
                .filter(|(_, s)| s.client == Some(client) && s.signed.is_none());
            if held.clone().count() >= SIGN_IN_CHALLENGES_PER_ADDRESS_MAX {
                let oldest = held
                    .min_by_key(|(_, s)| s.issued)
                    .map(|(nonce, _)| nonce.clone())
                    .expect("the address holds some");
                sign_ins.remove(&oldest);
            }
        }
        if sign_ins.len() >= SIGN_IN_CHALLENGES_MAX {
            return Err(ApiError::new(
                ProblemKind::RateLimited,
                "Too many sign-ins outstanding; retry shortly.",
            ));
        }
        sign_ins.insert(
            nonce.clone(),
            SignIn {
                expires_at,
                client,
                issued: self
                    .issued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                browser: browser_secret.map(digest),
                signed: None,
            },
        );
        Ok((nonce, expires_at))
    }

    /// Takes the unsigned challenge `nonce` out to be signed (whatever
    /// happens next, it is used); tells whether a browser waits for it.
    fn take(&self, nonce: &str, now: DateTime<Utc>) -> Result<Option<String>, ApiError> {
        let mut sign_ins = self.lock();
        let Some(found) = sign_ins.get(nonce) else {
            return Err(unknown_challenge());
        };
        if found.signed.is_some() {
            return Err(unknown_challenge());
        }
        let found = sign_ins.remove(nonce).expect("found above");
        if found.expires_at <= now {
            return Err(refused(
                ProblemKind::Rejected,
                "challenge_expired",
                "The challenge expired; ask for a new one.",
            ));
        }
        Ok(found.browser)
    }

    /// Leaves a browser's signed challenge for its page to collect.
    fn leave_for_browser(&self, nonce: String, browser: String, session: OpenedSession) {
        let expires_at = session.expires_at;
        self.lock().insert(
            nonce,
            SignIn {
                expires_at,
                client: None,
                issued: self
                    .issued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                browser: Some(browser),
                signed: Some(session),
            },
        );
    }

    /// What became of the browser's challenge `nonce`: `Ok(Some)` the
    /// session once signed (taken out), `Ok(None)` not signed yet, `Err`
    /// unknown, expired or another browser's.
    pub(crate) fn collect(
        &self,
        nonce: &str,
        browser_secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<OpenedSession>, ApiError> {
        let mut sign_ins = self.lock();
        let mine = sign_ins.get(nonce).is_some_and(|found| {
            found.expires_at > now
                && found
                    .browser
                    .as_deref()
                    .is_some_and(|b| same_secret(b, &digest(browser_secret)))
        });
        if !mine {
            return Err(unknown_challenge());
        }
        if sign_ins
            .get(nonce)
            .is_some_and(|found| found.signed.is_none())
        {
            return Ok(None);
        }
        Ok(sign_ins.remove(nonce).and_then(|found| found.signed))
    }
}

fn unknown_challenge() -> ApiError {
    refused(
        ProblemKind::Conflict,
        "challenge_unknown_or_used",
        "The sign-in challenge is unknown or was already used; start the sign-in again.",
    )
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What a signed challenge came to: a session for the API client, or one
/// left for the browser that asked.
#[derive(Debug)]
pub(crate) enum SignedIn {
    /// The bearer token's session.
    Api(OpenedSession),
    /// The browser's sign-in page collects it.
    Browser(OpenedSession),
}

/// Checks a signed sign-in challenge and opens the person's session.
pub(crate) async fn sign_in(
    state: &AppState,
    request: &SignedChallenge,
) -> Result<SignedIn, ApiError> {
    let now = state.now();
    let browser = state.inner.sign_ins.take(&request.nonce, now)?;
    let holder = verify_card(state, request, &sign_in_challenge_text(&request.nonce), now).await?;
    let (issuer, serial) = card_link_of(&holder);
    let not_linked = || {
        refused(
            ProblemKind::Forbidden,
            "card_not_linked",
            "This card is not linked to any insured person; the insurer registers the link first.",
        )
    };
    let (insurer, insured) = state
        .inner
        .read
        .person_of_card(&issuer, &serial)
        .await?
        .ok_or_else(not_linked)?;
    let person = PersonId::parse(&insurer, &insured)?;
    // The read model names the person; their own stream confirms the link.
    let folded =
        fold::<InsuredPerson>(state, &insured_stream(&person.insurer, &person.insured)).await?;
    if !folded.card_links.contains(&(issuer, serial)) {
        return Err(not_linked());
    }
    let not_after: DateTime<Utc> = holder.not_after().into();
    let expires_at = (now + chrono::Duration::seconds(PERSON_SESSION_SECONDS)).min(not_after);
    let session = open_session(state.inner.projections.db(), &person, now, expires_at).await?;
    Ok(match browser {
        Some(browser) => {
            state
                .inner
                .sign_ins
                .leave_for_browser(request.nonce.clone(), browser, session.clone());
            SignedIn::Browser(session)
        }
        None => SignedIn::Api(session),
    })
}

fn database(error: sqlx::Error) -> ApiError {
    tracing::warn!(%error, "person sessions unavailable");
    ApiError::new(
        ProblemKind::Unavailable,
        "The database is unavailable; retry later.",
    )
}

/// Opens a session of [`PERSON_SESSION_SECONDS`] for the person without a
/// card: what `kiban demo` does, which has no card to read (it says so,
/// `[SIMULATED CARD]`, as for its consents). Not reachable over HTTP: it
/// needs the database, where anyone could write a session row anyway.
pub async fn open_simulated_session(
    db: &Db,
    insurer: &kiban_events::ids::InsurerNumber,
    insured: &kiban_events::ids::InsuredNumber,
    now: DateTime<Utc>,
) -> Result<OpenedSession, ApiError> {
    let person = PersonId {
        insurer: insurer.clone(),
        insured: insured.clone(),
    };
    let expires_at = now + chrono::Duration::seconds(PERSON_SESSION_SECONDS);
    open_session(db, &person, now, expires_at).await
}

/// Opens a session for `person` until `expires_at` (and drops ended ones
/// on the way).
async fn open_session(
    db: &Db,
    person: &PersonId,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<OpenedSession, ApiError> {
    let token = random_token();
    let insert = "INSERT INTO person_sessions (token_sha256, insurer, insured, csrf, expires_at_us)
        VALUES ($1, $2, $3, $4, $5)";
    let sweep = "DELETE FROM person_sessions WHERE expires_at_us <= $1";
    both!(db.pool(), pool => async {
        sqlx::query(sweep).bind(now.timestamp_micros()).execute(pool).await?;
        sqlx::query(insert)
            .bind(digest(&token))
            .bind(person.insurer.as_str())
            .bind(person.insured.as_str())
            .bind(random_token())
            .bind(expires_at.timestamp_micros())
            .execute(pool)
            .await
            .map(|_| ())
    }.await)
    .map_err(database)?;
    Ok(OpenedSession {
        token,
        insurer: person.insurer.to_string(),
        insured: person.insured.to_string(),
        expires_at,
    })
}

/// The live session of `token` at `now`, if any.
pub(crate) async fn session(
    state: &AppState,
    token: &str,
) -> Result<Option<PersonSession>, ApiError> {
    let sql = "SELECT insurer, insured, csrf, expires_at_us FROM person_sessions
        WHERE token_sha256 = $1 AND expires_at_us > $2";
    let db = state.inner.projections.db();
    let row: Option<(String, String, String, i64)> = both!(db.pool(), pool => sqlx::query_as(sql)
        .bind(digest(token))
        .bind(state.now().timestamp_micros())
        .fetch_optional(pool)
        .await)
    .map_err(database)?;
    let Some((insurer, insured, csrf, expires_at_us)) = row else {
        return Ok(None);
    };
    Ok(Some(PersonSession {
        person: PersonId::parse(&insurer, &insured)?,
        csrf,
        expires_at: DateTime::from_timestamp_micros(expires_at_us).unwrap_or_default(),
    }))
}

/// Ends the session of `token`.
pub(crate) async fn sign_out(state: &AppState, token: &str) -> Result<(), ApiError> {
    let sql = "DELETE FROM person_sessions WHERE token_sha256 = $1";
    let db = state.inner.projections.db();
    both!(db.pool(), pool => sqlx::query(sql)
        .bind(digest(token))
        .execute(pool)
        .await
        .map(|_| ()))
    .map_err(database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
    }
}
