//! Consent (閲覧同意): the person consents, with the My Number card, to an
//! office reading the record; the consent is revoked while live, or a timer
//! records that it expired.
//!
//! State part: `consents` of [`InsuredState`].

use std::collections::BTreeMap;

use chrono::{DateTime, Days, Utc};

use super::{
    ConsentExpired, ConsentGiven, ConsentRevoked, Decision, InsuredCommand, InsuredEvent,
    InsuredState,
};
use crate::domain::rejection::{reject_if, rejection};
use crate::domain::{Rejection, TerminalId};
use crate::ids::OfficeNumber;

/// Longest consent, in days **[ours]**: a year and a day, so a yearly
/// re-verification with the card never leaves a gap.
pub const CONSENT_DAYS_MAX: u64 = 366;

/// A consent on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// When it was given.
    pub given_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// Decides the consent commands: given (with an expiry within
/// [`CONSENT_DAYS_MAX`]), revoked while live, or expired by a timer at its
/// expiry.
pub(super) fn decide(
    state: &InsuredState,
    command: &InsuredCommand,
    now: DateTime<Utc>,
) -> Decision {
    let event = match command {
        InsuredCommand::GiveConsent {
            office,
            terminal,
            expires_at,
        } => give_consent(office, terminal, *expires_at, now)?,
        InsuredCommand::RevokeConsent { office } => revoke_consent(state, office, now)?,
        InsuredCommand::ExpireConsent { office } => expire_consent(state, office, now)?,
        _ => unreachable!("called for consent commands only"),
    };
    Ok(vec![event])
}

/// Applies a consent event: a revoked or expired consent is removed.
pub(super) fn evolve(consents: &mut BTreeMap<OfficeNumber, Consent>, event: &InsuredEvent) {
    match event {
        InsuredEvent::ConsentGiven(e) => {
            consents.insert(
                e.office.clone(),
                Consent {
                    given_at: e.given_at,
                    expires_at: e.expires_at,
                },
            );
        }
        InsuredEvent::ConsentRevoked(e) => {
            consents.remove(&e.office);
        }
        InsuredEvent::ConsentExpired(e) => {
            consents.remove(&e.office);
        }
        _ => unreachable!("called for consent events only"),
    }
}

/// The office a consent event (`insured.consent_given`,
/// `insured.consent_revoked`, `insured.consent_expired`) names; `None` for
/// any other event. The office routing sends it to that office's screen
/// only (never to its API stream or NATS feed).
pub fn consent_office(event: &crate::RecordedEvent) -> Option<OfficeNumber> {
    if !matches!(
        event.event_type.as_str(),
        "insured.consent_given" | "insured.consent_revoked" | "insured.consent_expired"
    ) {
        return None;
    }
    let payload = event.payload.parse::<serde_json::Value>().ok()?;
    OfficeNumber::parse(payload["office"].as_str()?).ok()
}

impl InsuredState {
    /// Whether `office` holds a consent that is live at `now`.
    pub fn consent_live(&self, office: &OfficeNumber, now: DateTime<Utc>) -> bool {
        self.consents
            .get(office)
            .is_some_and(|consent| now < consent.expires_at)
    }
}

fn give_consent(
    office: &OfficeNumber,
    terminal: &TerminalId,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<InsuredEvent, Rejection> {
    let latest = now + Days::new(CONSENT_DAYS_MAX);
    reject_if!(
        expires_at <= now || expires_at > latest,
        ConsentExpiryInvalid,
        format!("A consent must expire after now and within {CONSENT_DAYS_MAX} days."),
        format!("同意の有効期限は現在より後、{CONSENT_DAYS_MAX} 日以内でなければなりません。")
    );
    Ok(ConsentGiven {
        office: office.clone(),
        terminal: terminal.clone(),
        given_at: now,
        expires_at,
    }
    .into())
}

fn revoke_consent(
    state: &InsuredState,
    office: &OfficeNumber,
    now: DateTime<Utc>,
) -> Result<InsuredEvent, Rejection> {
    reject_if!(
        !state.consent_live(office, now),
        NoLiveConsent,
        format!("Office {office} holds no live consent of this person."),
        format!("事業所 {office} は本人の有効な同意を得ていません。")
    );
    Ok(ConsentRevoked {
        office: office.clone(),
        revoked_at: now,
    }
    .into())
}

/// A timer's record, at or after the expiry of a consent on record.
fn expire_consent(
    state: &InsuredState,
    office: &OfficeNumber,
    now: DateTime<Utc>,
) -> Result<InsuredEvent, Rejection> {
    let consent = state.consents.get(office).ok_or_else(|| {
        rejection!(
            NoLiveConsent,
            format!("Office {office} holds no consent of this person."),
            format!("事業所 {office} は本人の同意を得ていません。")
        )
    })?;
    reject_if!(
        now < consent.expires_at,
        ConsentNotExpired,
        format!(
            "The consent of office {office} expires at {}.",
            consent.expires_at
        ),
        format!(
            "事業所 {office} の同意の有効期限は {} です。",
            consent.expires_at
        )
    );
    Ok(ConsentExpired {
        office: office.clone(),
        expired_at: consent.expires_at,
    }
    .into())
}
