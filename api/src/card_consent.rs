//! Consent with the My Number card (issue 8 item 2; DOMAIN.md "Care-plan
//! notification and consent").
//!
//! 1. The office terminal asks `POST /v1/consents/challenge` for a
//!    challenge naming the insured person and the consent's expiry; the
//!    server keeps it, bound to the office, the terminal, the person and an
//!    expiry of [`CONSENT_CHALLENGE_TTL_SECONDS`].
//! 2. The person enters the PIN of the user-authentication certificate
//!    (利用者証明用電子証明書) and the card signs the challenge (RSA-2048,
//!    PKCS#1 v1.5, SHA-256).
//! 3. The terminal posts the certificate and the signature to
//!    `POST /v1/consents/card`. The server verifies the signature with the
//!    certificate's key, the certificate's chain to the configured JPKI CA
//!    certificates, its validity and the CRL file
//!    (`kiban_card::verify_challenge_signature`), finds the certificate's
//!    (issuer, serial) linked to that person (`insured.card_linked`,
//!    registered by the insurer or the federation with
//!    `POST /v1/persons/{insurer}/{insured}/card-links`), and records
//!    `insured.consent_given` with the terminal as actor. The Individual
//!    Number is never read: the user-authentication certificate does not
//!    carry it.
//!
//! A challenge is used once: a replay, an expired challenge and a challenge
//! of another office or terminal are refused with problem+json (stable
//! `code`s below). Challenges live in memory (a restart forgets them; they
//! expire within minutes anyway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use der::Decode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use kiban_card::{
    CheckedCrl, Revocation, VerifiedCardHolder, VerifyError, verify_challenge_signature,
};
use kiban_engine::CommandContext;
use kiban_events::domain::TerminalId;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::ids::OfficeNumber;

use crate::auth::{Allow, Caller, PersonId, PersonPath, fold, insurer_sharing};
use crate::commands::{CommandAccepted, Created, execute};
use crate::error::{ApiError, ProblemKind};
use crate::extract::{Command, JsonBody};
use crate::pki::{FileStamp, stamp};
use crate::state::AppState;

/// How long a challenge may be signed and posted, in seconds: time for the
/// person to put the card on the reader and enter the PIN.
pub const CONSENT_CHALLENGE_TTL_SECONDS: i64 = 300;

/// Most challenges outstanding at once; beyond it new ones are refused
/// (503 rate-limited) until some are used or expire. Bounds memory.
pub const CONSENT_CHALLENGES_MAX: usize = 10_000;

/// Most challenges one office terminal holds at once: a terminal with one
/// card reader serves one person at a time, and eight leave room for
/// retries. A new challenge beyond it replaces the terminal's oldest, so
/// one terminal (a stolen one, a faulty client) can never take more than
/// its share of [`CONSENT_CHALLENGES_MAX`], and a terminal that abandoned
/// its challenges is never locked out.
pub const CONSENT_CHALLENGES_PER_TERMINAL_MAX: usize = 8;

/// Where the server finds what it trusts for card signatures: the JPKI
/// user-authentication CA certificates (DER) and the CA's CRL file (DER),
/// looked at every verification and parsed again when it changed, so that a
/// refreshed CRL takes effect at once ([`CardCrlCache`]).
#[derive(Debug, Clone)]
pub struct CardTrust {
    /// Trusted CA certificates, DER.
    pub ca_certificates_der: Vec<Vec<u8>>,
    /// The CRL file (DER), issued by the trusted CA.
    pub crl_path: PathBuf,
}

/// One outstanding challenge.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    office: OfficeNumber,
    terminal: TerminalId,
    pub(crate) person: (String, String),
    pub(crate) purpose: Purpose,
    expires_at: DateTime<Utc>,
    text: String,
    /// Issue order (the clock may give two challenges the same time).
    serial: u64,
}

/// What a challenge authorises once signed (issue 16 item 7): the card's
/// signature covers the text naming it, and each route takes only
/// challenges of its own purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Reading the person's record until the instant: `POST /v1/consents/card`.
    Consent { until: DateTime<Utc> },
    /// Filing the office as the person's care-plan office (居宅サービス計画作成依頼届出)
    /// on the date: `POST /v1/persons/{insurer}/{insured}/care-plan-office`.
    CarePlanOffice { filed_on: NaiveDate },
}

/// The next challenge's [`Challenge::serial`].
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The outstanding challenges, by nonce. A std mutex: held for one map
/// operation, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    by_nonce: Mutex<HashMap<String, Challenge>>,
}

impl Challenges {
    /// The map, for one operation (never held across an await).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Challenge>> {
        self.by_nonce.lock().expect("not poisoned")
    }
}

/// Body of a challenge request.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// 保険者番号.
    pub insurer: String,
    /// 被保険者番号.
    pub insured: String,
    /// For a consent to read the record: when it is to expire. Exactly one
    /// of this and `care_plan_notification`.
    #[serde(default)]
    pub consent_expires_at: Option<DateTime<Utc>>,
    /// For the care-plan office notification the office files naming
    /// itself (居宅サービス計画作成依頼届出): the challenge names it, and only
    /// `POST /v1/persons/{insurer}/{insured}/care-plan-office` with the same
    /// person and filing date takes its signature (issue 16 item 7).
    #[serde(default)]
    pub care_plan_notification: Option<CarePlanPurpose>,
}

/// The notification a care-plan challenge names.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CarePlanPurpose {
    /// The filing date of the notification.
    pub filed_on: NaiveDate,
}

/// A challenge for the card to sign.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChallengeIssued {
    /// Names the challenge when posting the signature.
    pub nonce: String,
    /// The exact text the card signs (its UTF-8 bytes).
    pub challenge: String,
    /// Until when it may be used.
    pub expires_at: DateTime<Utc>,
}

/// Body of a signed challenge.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedChallenge {
    /// The nonce of [`ChallengeIssued`].
    pub nonce: String,
    /// The card's user-authentication certificate, DER as hex.
    pub certificate_hex: String,
    /// The card's signature over the challenge text, hex.
    pub signature_hex: String,
}

/// A refusal with a stable `code`.
pub(crate) fn refused(kind: ProblemKind, code: &'static str, detail: &str) -> ApiError {
    ApiError {
        kind,
        detail: detail.to_owned(),
        code: Some(code),
    }
}

/// `POST /v1/consents/challenge`: an office terminal asks for a challenge
/// for one person.
pub async fn challenge(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<ChallengeRequest>,
) -> Result<Created<ChallengeIssued>, ApiError> {
    let person = PersonId::parse(&request.insurer, &request.insured)?;
    let (office, terminal) = caller
        .office_terminal(
            &state,
            "Only an office terminal with a card reader asks for a consent challenge.",
        )
        .await?;
    if !insurer_sharing(&state, &person.insurer).await? {
        return Err(ApiError::not_found("No such person."));
    }
    let purpose = match (request.consent_expires_at, &request.care_plan_notification) {
        (Some(until), None) => Purpose::Consent { until },
        (None, Some(notification)) => Purpose::CarePlanOffice {
            filed_on: notification.filed_on,
        },
        _ => {
            return Err(ApiError::validation(
                "Name exactly one purpose: consent_expires_at (a consent to read) or \
                 care_plan_notification (the care-plan office notification).",
            ));
        }
    };
    let now = state.now();
    let nonce = Uuid::new_v4().simple().to_string();
    let expires_at = now + chrono::Duration::seconds(CONSENT_CHALLENGE_TTL_SECONDS);
    // The first line names the purpose, the last its terms: a signature
    // over one purpose's text never verifies for another's.
    let (title, terms) = match &purpose {
        Purpose::Consent { until } => (
            "kiban consent v1",
            format!("consent until {}", until.to_rfc3339()),
        ),
        Purpose::CarePlanOffice { filed_on } => (
            "kiban care-plan office notification v1",
            format!("care-plan office from {filed_on}"),
        ),
    };
    let text = format!(
        "{title}\nnonce {nonce}\noffice {office}\nterminal {}\nperson {}-{}\n{terms}\n",
        terminal.as_str(),
        person.insurer,
        person.insured,
    );
    {
        let mut challenges = state.inner.challenges.lock();
        challenges.retain(|_, c| c.expires_at > now);
        let mut own: Vec<(u64, String)> = challenges
            .iter()
            .filter(|(_, c)| c.office == *office && c.terminal == *terminal)
            .map(|(nonce, c)| (c.serial, nonce.clone()))
            .collect();
        if own.len() >= CONSENT_CHALLENGES_PER_TERMINAL_MAX {
            own.sort();
            for (_, oldest) in own
                .iter()
                .take(own.len() + 1 - CONSENT_CHALLENGES_PER_TERMINAL_MAX)
            {
                challenges.remove(oldest);
            }
        }
        if challenges.len() >= CONSENT_CHALLENGES_MAX {
            return Err(ApiError::new(
                ProblemKind::RateLimited,
                "Too many consent challenges outstanding; retry shortly.",
            ));
        }
        challenges.insert(
            nonce.clone(),
            Challenge {
                office: office.clone(),
                terminal: terminal.clone(),
                person: (person.insurer.to_string(), person.insured.to_string()),
                purpose,
                expires_at,
                text: text.clone(),
                serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
    }
    Ok(Created(ChallengeIssued {
        nonce,
        challenge: text,
        expires_at,
    }))
}

/// `POST /v1/consents/card`: the terminal that asked posts the card's
/// certificate and signature; on success the consent is recorded.
pub async fn card_consent(
    State(state): State<AppState>,
    sent: Command<SignedChallenge>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let (office, terminal) = caller
        .office_terminal(
            &state,
            "Only an office terminal posts a signed consent challenge.",
        )
        .await?;
    let now = state.now();
    let (challenge, holder) = take_signed(&state, office, terminal, &request, now, |c| {
        matches!(c.purpose, Purpose::Consent { .. })
    })
    .await?;
    let Purpose::Consent { until } = challenge.purpose else {
        unreachable!("only consent challenges are taken")
    };
    let (insurer, insured) = &challenge.person;
    let person = PersonId::parse(insurer, insured)?;
    let stream = insured_stream(&person.insurer, &person.insured);
    let folded = fold::<InsuredPerson>(&state, &stream).await?;
    require_linked(&folded, &holder)?;
    let not_after: DateTime<Utc> = holder.not_after().into();
    let command = InsuredCommand::GiveConsent {
        office: office.clone(),
        terminal: terminal.clone(),
        expires_at: until.min(not_after),
    };
    let context = CommandContext::new(command_id, caller.actor(), now);
    execute::<InsuredPerson>(&state, &stream, &command, context).await
}

/// Takes the challenge `request` answers out of the map and checks the
/// card's signature over it: the challenge must be this office terminal's
/// (403 `challenge_wrong_office`, left in place), of a purpose `accepts`
/// (403 `challenge_wrong_purpose`, left in place: a consent signature never
/// files a care-plan notification, nor the other way round) and unexpired;
/// once found it is used, whatever the outcome.
pub(crate) async fn take_signed(
    state: &AppState,
    office: &OfficeNumber,
    terminal: &TerminalId,
    request: &SignedChallenge,
    now: DateTime<Utc>,
    accepts: impl Fn(&Challenge) -> bool,
) -> Result<(Challenge, VerifiedCardHolder), ApiError> {
    let challenge = {
        let mut challenges = state.inner.challenges.lock();
        let Some(found) = challenges.get(&request.nonce) else {
            return Err(refused(
                ProblemKind::Conflict,
                "challenge_unknown_or_used",
                "The challenge is unknown or was already used; ask for a new one.",
            ));
        };
        if &found.office != office || &found.terminal != terminal {
            // Left in place: the right terminal may still use it.
            return Err(refused(
                ProblemKind::Forbidden,
                "challenge_wrong_office",
                "The challenge was issued to another office terminal.",
            ));
        }
        if !accepts(found) {
            return Err(refused(
                ProblemKind::Forbidden,
                "challenge_wrong_purpose",
                "The person's card signed a challenge for something else: a consent to \
                 read authorises no care-plan notification, and a care-plan challenge \
                 names one person and filing date. Ask for a challenge naming this.",
            ));
        }
        challenges.remove(&request.nonce).expect("found above")
    };
    if challenge.expires_at <= now {
        return Err(refused(
            ProblemKind::Rejected,
            "challenge_expired",
            "The challenge expired; ask for a new one.",
        ));
    }
    let holder = verify_card(state, request, &challenge.text, now).await?;
    Ok((challenge, holder))
}

/// Refuses (403 `card_not_linked`) a card not linked to the person.
pub(crate) fn require_linked(
    person: &kiban_events::domain::insured::InsuredState,
    holder: &VerifiedCardHolder,
) -> Result<(), ApiError> {
    if person.card_links.contains(&card_link_of(holder)) {
        Ok(())
    } else {
        Err(refused(
            ProblemKind::Forbidden,
            "card_not_linked",
            "This card is not linked to the person; the insurer registers the link first.",
        ))
    }
}

/// Checks a card's signature over `text` (`request`'s certificate and
/// signature, hex): the signature with the certificate's key, the
/// certificate's chain to the configured JPKI CA certificates, its validity
/// at `now` and the CRL file. The one check of the consent and of the
/// person's sign-in (`me`).
pub(crate) async fn verify_card(
    state: &AppState,
    request: &SignedChallenge,
    text: &str,
    now: DateTime<Utc>,
) -> Result<VerifiedCardHolder, ApiError> {
    let certificate = hex::decode(request.certificate_hex.trim())
        .map_err(|_| ApiError::validation("certificate_hex must be hexadecimal DER."))?;
    let signature = hex::decode(request.signature_hex.trim())
        .map_err(|_| ApiError::validation("signature_hex must be hexadecimal."))?;
    let Some(trust) = state.inner.card_trust.as_ref() else {
        return Err(ApiError::new(
            ProblemKind::Unavailable,
            "My Number card verification is not configured on this server (no JPKI CA certificates).",
        ));
    };
    let crl = state.inner.card_crl.current(trust).await?;
    let cas = trust.ca_certificates_der.clone();
    let text = text.to_owned();
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(now.timestamp_micros().max(0) as u64);
    // RSA verifications (the card's key, its CA's): on the blocking pool,
    // never on a runtime thread.
    tokio::task::spawn_blocking(move || {
        let cas: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
        verify_challenge_signature(
            &certificate,
            &cas,
            Revocation::Checked(&crl),
            text.as_bytes(),
            &signature,
            at,
        )
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(card_refusal)
}

/// The card CRL (`CardTrust::crl_path`) parsed and checked once per version
/// of its file (issue 16, Low): the file is looked at (size, modification
/// time, inode: one `stat`) at each verification and parsed again, on the
/// blocking pool, only when it changed. A file that does not parse or
/// verify is remembered too (each verification answers 503 until it is
/// replaced, without parsing it again).
#[derive(Debug, Default)]
pub(crate) struct CardCrlCache {
    current: Mutex<Option<(FileStamp, ParsedCrl)>>,
}

/// One version of the CRL file, checked: the list, or why it is unusable.
type ParsedCrl = Result<Arc<CheckedCrl>, VerifyError>;

impl CardCrlCache {
    /// The checked CRL of `trust`'s file as it is now.
    async fn current(&self, trust: &CardTrust) -> Result<Arc<CheckedCrl>, ApiError> {
        let stamp = stamp(&trust.crl_path);
        let unavailable = || {
            ApiError::new(
                ProblemKind::Unavailable,
                "The certificate revocation list is unavailable; retry later.",
            )
        };
        if stamp.is_none() {
            tracing::error!("the JPKI CRL file cannot be read");
            return Err(unavailable());
        }
        let cached = self
            .current
            .lock()
            .expect("not poisoned")
            .as_ref()
            .filter(|(seen, _)| *seen == stamp)
            .map(|(_, parsed)| parsed.clone());
        let parsed = match cached {
            Some(parsed) => parsed,
            None => {
                let bytes = tokio::fs::read(&trust.crl_path).await.map_err(|e| {
                    tracing::error!(error = %e, "the JPKI CRL file cannot be read");
                    unavailable()
                })?;
                let cas = trust.ca_certificates_der.clone();
                let parsed = tokio::task::spawn_blocking(move || {
                    let cas: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
                    CheckedCrl::parse(&bytes, &cas).map(Arc::new)
                })
                .await
                .map_err(|e| ApiError::internal(&e))?;
                *self.current.lock().expect("not poisoned") = Some((stamp, parsed.clone()));
                parsed
            }
        };
        parsed.map_err(card_refusal)
    }
}

/// The (issuer, upper-case hex serial) a verified card certificate is
/// linked to a person by (`insured.card_linked`).
pub(crate) fn card_link_of(holder: &VerifiedCardHolder) -> (String, String) {
    (holder.issuer().to_owned(), holder.serial_number_hex())
}

/// A refused card signature as a problem; the code names the reason.
fn card_refusal(error: VerifyError) -> ApiError {
    let code = match &error {
        VerifyError::UntrustedIssuer | VerifyError::BadCertificateSignature => "card_not_trusted",
        VerifyError::Expired | VerifyError::NotYetValid => "card_certificate_not_valid",
        VerifyError::Revoked => "card_revoked",
        VerifyError::BadChallengeSignature => "card_signature_invalid",
        VerifyError::MalformedTrustedCa
        | VerifyError::NotACa
        | VerifyError::MalformedCrl
        | VerifyError::CrlNotFromIssuer
        | VerifyError::CrlOutOfDate => {
            tracing::error!(%error, "card trust configuration problem");
            return ApiError::new(
                ProblemKind::Unavailable,
                "The card trust configuration (CA certificates, CRL) is unusable; retry later.",
            );
        }
        _ => "card_certificate_invalid",
    };
    refused(
        ProblemKind::Forbidden,
        code,
        &format!("The card was refused: {error}."),
    )
}

/// Body of a card link.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardLinkRequest {
    /// The person's user-authentication certificate, DER as hex (read from
    /// the card at the insurer's counter; no PIN needed to read it).
    pub certificate_hex: String,
}

/// `POST /v1/persons/{insurer}/{insured}/card-links`: the person's insurer
/// or the federation links a card certificate (issuer, serial) to the
/// person.
pub async fn link_card(
    State(state): State<AppState>,
    PersonPath(person): PersonPath,
    sent: Command<CardLinkRequest>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    caller
        .allow(
            &state,
            &[Allow::Federation, Allow::Insurer(&person.insurer)],
            "Only the person's insurer or the federation links a card.",
        )
        .await?;
    let der = hex::decode(request.certificate_hex.trim())
        .map_err(|_| ApiError::validation("certificate_hex must be hexadecimal DER."))?;
    let certificate = x509_cert::Certificate::from_der(&der)
        .map_err(|_| ApiError::validation("The certificate is not DER X.509."))?;
    let tbs = &certificate.tbs_certificate;
    let serial: String = tbs
        .serial_number
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let command = InsuredCommand::LinkCard {
        issuer: tbs.issuer.to_string(),
        serial,
    };
    let stream = insured_stream(&person.insurer, &person.insured);
    let context = CommandContext::new(command_id, caller.actor(), state.now());
    execute::<InsuredPerson>(&state, &stream, &command, context).await
}
