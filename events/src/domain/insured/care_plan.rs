//! The care-plan office (居宅サービス計画作成依頼届出): the office that
//! plans the person's care, filed first, changed, or re-filed when the
//! person moves between 要支援 and 要介護; until it takes effect, services
//! are paid in full first and reimbursed later (償還払い).
//!
//! State part: `care_plan_office` of [`InsuredState`].

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{
    CarePlanOfficeChanged, CarePlanOfficeRegistered, Decision, InsuredCommand, InsuredEvent,
    InsuredState,
};
use crate::domain::dates::month_start;
use crate::domain::rejection::reject_if;
use crate::domain::values::LevelGroup;
use crate::domain::{CareLevel, Rejection, not_in_future};
use crate::ids::OfficeNumber;

/// The kind of care-plan office.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CarePlanOfficeKind {
    /// 居宅介護支援事業所: plans care for 要介護.
    HomeCareSupportOffice,
    /// 地域包括支援センター: plans preventive care for 要支援.
    CommunityGeneralSupportCenter,
}

impl CarePlanOfficeKind {
    /// The level group this kind of office plans for.
    pub fn plans_for(self) -> LevelGroup {
        match self {
            Self::HomeCareSupportOffice => LevelGroup::Care,
            Self::CommunityGeneralSupportCenter => LevelGroup::Support,
        }
    }
}

/// The registered care-plan office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarePlanRegistration {
    /// The office.
    pub office: OfficeNumber,
    /// Its kind.
    pub office_kind: CarePlanOfficeKind,
    /// The level group it was filed for.
    pub level_group: LevelGroup,
    /// The filing date.
    pub filed_on: NaiveDate,
    /// The first day the office may bill.
    pub billable_from: NaiveDate,
}

/// Decides the care-plan filing.
pub(super) fn decide(state: &InsuredState, command: &InsuredCommand, today: NaiveDate) -> Decision {
    let InsuredCommand::RegisterCarePlanOffice {
        office,
        office_kind,
        filed_on,
        pending_application_on,
    } = command
    else {
        unreachable!("called for the care-plan filing only")
    };
    register_care_plan_office(
        state,
        office,
        *office_kind,
        *filed_on,
        *pending_application_on,
        today,
    )
}

/// Applies a care-plan filing: a change is a registration that replaces
/// the one before.
pub(super) fn evolve(registration: &mut Option<CarePlanRegistration>, event: &InsuredEvent) {
    *registration = Some(match event {
        InsuredEvent::CarePlanOfficeRegistered(e) => CarePlanRegistration {
            office: e.office.clone(),
            office_kind: e.office_kind,
            level_group: e.level_group,
            filed_on: e.filed_on,
            billable_from: e.billable_from,
        },
        InsuredEvent::CarePlanOfficeChanged(e) => CarePlanRegistration {
            office: e.office.clone(),
            office_kind: e.office_kind,
            level_group: e.level_group,
            filed_on: e.filed_on,
            billable_from: e.billable_from,
        },
        _ => unreachable!("called for care-plan events only"),
    });
}

/// How long a provisional filing (暫定ケアプラン: filed while the person was
/// not certified, the application pending) lets its office read the record
/// without a certification, in days from the filing **[ours]**: the 30-day
/// decision deadline with room for one extension notice (処理見込期間). A
/// decision within it takes over ([`InsuredState::care_plan_office_on`]); a
/// 非該当 decision, a withdrawal or a decision later than this leaves the
/// office without the basis.
pub const PROVISIONAL_CARE_PLAN_BASIS_DAYS: u64 = 60;

/// The service type codes (サービス種類コード) of the offices that file a
/// care-plan notification, with the kind each makes them: 居宅介護支援 (43)
/// and 介護予防支援 (46, the 地域包括支援センター's preventive care planning)
/// **[law]**. An office's kind comes from the service types it is
/// registered with (`office.registered`), never from the caller.
pub const CARE_PLAN_SERVICE_TYPES: &[(&str, CarePlanOfficeKind)] = &[
    ("43", CarePlanOfficeKind::HomeCareSupportOffice),
    ("46", CarePlanOfficeKind::CommunityGeneralSupportCenter),
];

impl CarePlanOfficeKind {
    /// The care-plan kinds an office registered with `service_types` may
    /// file as: none for an office without 43 or 46.
    pub fn registered<'a>(
        service_types: impl IntoIterator<Item = &'a crate::domain::ServiceTypeCode>,
    ) -> Vec<Self> {
        let mut kinds: Vec<Self> = service_types
            .into_iter()
            .filter_map(|code| {
                CARE_PLAN_SERVICE_TYPES
                    .iter()
                    .find(|(table, _)| *table == code.as_str())
                    .map(|(_, kind)| *kind)
            })
            .collect();
        kinds.sort_by_key(|kind| kind.plans_for() == LevelGroup::Support);
        kinds.dedup();
        kinds
    }
}

impl InsuredState {
    /// The care-plan office whose registration lets it read the record on
    /// `date` (the care-plan basis of the access log) **[ours]**: the
    /// registered office while what authorised the filing holds — the
    /// person certified on `date` in the level group it was filed for, or,
    /// for a provisional filing (the person not certified on the filing
    /// date), up to [`PROVISIONAL_CARE_PLAN_BASIS_DAYS`] after the filing
    /// while no certification is in force. The basis ends when the
    /// certification ends without a renewal in force, when the person moves
    /// between 要支援 and 要介護 (the filing must be made again), and when
    /// another office is filed; it returns with a renewal or a new filing.
    pub fn care_plan_office_on(&self, date: NaiveDate) -> Option<&OfficeNumber> {
        let registration = self.care_plan_office.as_ref()?;
        if date < registration.filed_on {
            return None;
        }
        let in_effect = match self.level_on(date).and_then(CareLevel::group) {
            Some(group) => group == registration.level_group,
            None => {
                self.level_on(date).is_none()
                    && self.level_on(registration.filed_on).is_none()
                    && date
                        <= registration.filed_on
                            + chrono::Days::new(PROVISIONAL_CARE_PLAN_BASIS_DAYS)
            }
        };
        in_effect.then_some(&registration.office)
    }

    /// Whether the care-plan notification must be filed again because the
    /// person moved between 要支援 and 要介護 since it was filed.
    pub fn care_plan_refiling_required(&self, today: NaiveDate) -> bool {
        match (
            &self.care_plan_office,
            self.level_on(today).and_then(CareLevel::group),
        ) {
            (Some(registration), Some(group)) => registration.level_group != group,
            _ => false,
        }
    }

    /// Whether services on `date` are paid in full first and reimbursed
    /// later (償還払い): no care-plan office is registered, its filing takes
    /// effect only from the next month, or the person moved between 要支援
    /// and 要介護 since it was filed.
    pub fn reimbursement_only(&self, date: NaiveDate) -> bool {
        match &self.care_plan_office {
            None => true,
            Some(registration) => {
                date < registration.billable_from || self.care_plan_refiling_required(date)
            }
        }
    }
}

/// The care-plan filing. A person certified on the filing date is filed for
/// by the kind of office of their level group; a person not yet certified
/// whose new application is pending (applied on or before the filing) is
/// filed for with a provisional plan (暫定ケアプラン) by the kind of office
/// the filer expects, and must re-file if the decision falls in the other
/// group ([`InsuredState::care_plan_refiling_required`]) **[law, ours]**.
/// Services are billable from the 1st of the filing month: a filing by the
/// month end covers that month, billed to the 国保連 the month after
/// ([`billable_from`]).
fn register_care_plan_office(
    state: &InsuredState,
    office: &OfficeNumber,
    office_kind: CarePlanOfficeKind,
    filed_on: NaiveDate,
    pending_application_on: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(filed_on, today)?;
    let certified = state.certified_level(filed_on);
    let provisional = certified.is_err()
        && pending_application_on.is_some_and(|applied_on| applied_on <= filed_on);
    if provisional {
        return Ok(vec![filing(
            state,
            office,
            office_kind,
            office_kind.plans_for(),
            filed_on,
        )?]);
    }
    let level = certified?;
    let group = level.group().expect("a certified level has a group");
    reject_if!(
        office_kind.plans_for() != group,
        CarePlanOfficeKindMismatch,
        format!(
            "A person certified {} needs a {}.",
            level.japanese_name(),
            match group {
                LevelGroup::Care => "home care support office (居宅介護支援事業所)",
                LevelGroup::Support => "community general support center (地域包括支援センター)",
            }
        ),
        format!(
            "{} の方の届出先は{}です。",
            level.japanese_name(),
            match group {
                LevelGroup::Care => "居宅介護支援事業所",
                LevelGroup::Support => "地域包括支援センター",
            }
        )
    );
    Ok(vec![filing(state, office, office_kind, group, filed_on)?])
}

/// The first day whose services a filing on `filed_on` makes billable in
/// kind: the 1st of the filing month **[ours, from municipal practice]**.
/// The seed does not state it. The law (介護保険法施行規則 第64条) pays in
/// kind when the care-plan office was notified in advance (あらかじめ);
/// municipalities bill a month's services in kind when the notification
/// reaches them by that month's end (claimed to the 国保連 the next month;
/// a later filing is claimed a month late), e.g. 品川区 and 我孫子市.
pub fn billable_from(filed_on: NaiveDate) -> NaiveDate {
    month_start(filed_on)
}

/// The registration or change event of a filing for `group`.
fn filing(
    state: &InsuredState,
    office: &OfficeNumber,
    office_kind: CarePlanOfficeKind,
    group: LevelGroup,
    filed_on: NaiveDate,
) -> Result<InsuredEvent, Rejection> {
    let billable_from = billable_from(filed_on);
    let Some(current) = &state.care_plan_office else {
        return Ok(CarePlanOfficeRegistered {
            office: office.clone(),
            office_kind,
            level_group: group,
            filed_on,
            billable_from,
        }
        .into());
    };
    reject_if!(
        &current.office == office && current.level_group == group,
        CarePlanOfficeAlreadyRegistered,
        format!("Office {office} is already the registered care-plan office."),
        format!("事業所 {office} は既に届出済みです。")
    );
    Ok(CarePlanOfficeChanged {
        office: office.clone(),
        office_kind,
        level_group: group,
        previous_office: current.office.clone(),
        filed_on,
        billable_from,
    }
    .into())
}
