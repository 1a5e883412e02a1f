//! The access log (閲覧記録): an office's read of the record is allowed or
//! refused by the same state that records it (a live consent, the
//! registered care-plan office), so one decision checks and logs **[ours]**.
//!
//! State part: `views_recorded` of [`InsuredState`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InsuredEvent, InsuredState, OwnRecordViewed, RecordViewed};
use crate::domain::rejection::{reject_if, rejection};
use crate::domain::{Rejection, TerminalId, jst_date};
use crate::ids::OfficeNumber;

/// What lets an office read a person's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ViewingBasis {
    /// A live consent given with the person's My Number card.
    Consent,
    /// The office is the registered care-plan office.
    CarePlanOffice,
}

impl InsuredState {
    /// What lets `office` read the record at `now`, if anything: a live
    /// consent, or the care-plan registration while it is in effect
    /// ([`InsuredState::care_plan_office_on`]).
    pub fn viewing_basis(&self, office: &OfficeNumber, now: DateTime<Utc>) -> Option<ViewingBasis> {
        if self.consent_live(office, now) {
            Some(ViewingBasis::Consent)
        } else if self.care_plan_office_on(jst_date(now)) == Some(office) {
            Some(ViewingBasis::CarePlanOffice)
        } else {
            None
        }
    }
}

/// A read is allowed by a live consent or the care-plan registration, and
/// only once the insurer shares; the same decision logs it.
pub(super) fn record_view(
    state: &InsuredState,
    office: &OfficeNumber,
    terminal: &TerminalId,
    insurer_sharing_enabled: bool,
    now: DateTime<Utc>,
) -> Result<Vec<InsuredEvent>, Rejection> {
    reject_if!(
        !insurer_sharing_enabled,
        InsurerNotSharing,
        "The person's insurer has not completed its data transmission; nothing is shared yet.",
        "保険者のデータ送信が完了していないため、情報は共有されていません。"
    );
    let basis = state.viewing_basis(office, now).ok_or_else(|| {
        rejection!(
            NoViewingBasis,
            format!("Office {office} has neither a live consent nor the care-plan registration of this person."),
            format!("事業所 {office} には本人の有効な同意も居宅サービス計画の届出もありません。")
        )
    })?;
    Ok(vec![
        RecordViewed {
            office: office.clone(),
            terminal: terminal.clone(),
            basis,
            viewed_at: now,
        }
        .into(),
    ])
}

/// The person's own read (the person's view): always allowed, since the
/// API has authenticated the person with their card; logged all the same.
pub(super) fn record_own_view(now: DateTime<Utc>) -> Vec<InsuredEvent> {
    vec![OwnRecordViewed { viewed_at: now }.into()]
}
