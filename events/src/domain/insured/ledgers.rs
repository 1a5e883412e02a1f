//! The benefit ledgers (DOMAIN.md "Benefit ledgers"): home modification
//! (住宅改修, a 200,000-yen cap per person, reset once on a three-step rise
//! in care need and on every move) and specified equipment purchases
//! (特定福祉用具購入, a 100,000-yen cap per fiscal year).
//!
//! State part: `home_modification` and `equipment` of [`InsuredState`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{
    Decision, EquipmentPurchaseRecorded, HomeModificationApplied, HomeModificationCapReset,
    HomeModificationWorkRecorded, InsuredCommand, InsuredEvent, InsuredState,
};
use crate::domain::dates::fiscal_year;
use crate::domain::rejection::{reject_if, rejection};
use crate::domain::{
    EquipmentCategory, Rejection, Yen, not_in_future, plausible, reason_within_limit,
};

/// Home-modification cap per person (住宅改修費支給限度基準額) **[law]**.
pub const HOME_MODIFICATION_CAP: Yen = Yen::new(200_000);

/// Equipment-purchase cap per fiscal year (福祉用具購入費支給限度基準額) **[law]**.
pub const EQUIPMENT_CAP_PER_FISCAL_YEAR: Yen = Yen::new(100_000);

/// Steps of rise in care need that reset the home-modification cap once **[law]**.
pub const HOME_MODIFICATION_RISE_STEPS: u8 = 3;

/// Why the home-modification cap was reset to a fresh 200,000 yen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "because", rename_all = "snake_case")]
pub enum CapResetReason {
    /// The person moved house.
    MovedHouse,
    /// The care need rose three or more steps from the first paid work's.
    CareNeedRose {
        /// The step at the start of the first paid work.
        from_step: u8,
        /// The step at the start of this work.
        to_step: u8,
    },
}

/// A prior application for home modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorApplication {
    /// The application date.
    pub applied_on: NaiveDate,
    /// Whether work was recorded against it.
    pub used: bool,
}

/// The home-modification ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeModificationLedger {
    /// Cost counted against the current cap; never above the cap.
    pub used: Yen,
    /// The step at the start of the first paid work since the last reset.
    pub base_step: Option<u8>,
    /// Whether the once-per-person reset on a three-step rise was used.
    pub rise_reset_used: bool,
    /// Prior applications by number.
    pub prior_applications: BTreeMap<u32, PriorApplication>,
}

impl HomeModificationLedger {
    /// What is left of the current cap.
    pub fn remaining(&self) -> Yen {
        HOME_MODIFICATION_CAP.saturating_sub(self.used)
    }
}

/// One fiscal year of the equipment-purchase ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EquipmentYear {
    /// Cost counted against the year's cap; never above the cap.
    pub used: Yen,
    /// Categories bought this year.
    pub categories: BTreeSet<EquipmentCategory>,
}

/// Decides the ledger commands.
pub(super) fn decide(state: &InsuredState, command: &InsuredCommand, today: NaiveDate) -> Decision {
    match command {
        InsuredCommand::ApplyForHomeModification {
            prior_application,
            applied_on,
            planned_cost,
        } => apply_for_home_modification(
            state,
            *prior_application,
            *applied_on,
            *planned_cost,
            today,
        ),
        InsuredCommand::RecordHomeModificationWork {
            prior_application,
            work_started_on,
            receipt_on,
            cost,
        } => record_home_modification(
            state,
            *prior_application,
            *work_started_on,
            *receipt_on,
            *cost,
            today,
        ),
        InsuredCommand::RecordEquipmentPurchase {
            category,
            purchased_on,
            cost,
            seller_designated,
            replacement_reason,
        } => record_equipment(
            state,
            Purchase {
                category: *category,
                purchased_on: *purchased_on,
                cost: *cost,
                seller_designated: *seller_designated,
                replacement_reason: replacement_reason.as_deref(),
            },
            today,
        ),
        _ => unreachable!("called for ledger commands only"),
    }
}

/// Applies a home-modification event.
pub(super) fn evolve_home_modification(ledger: &mut HomeModificationLedger, event: &InsuredEvent) {
    match event {
        InsuredEvent::HomeModificationCapReset(e) => {
            ledger.used = Yen::ZERO;
            ledger.base_step = None;
            if let CapResetReason::CareNeedRose { .. } = e.reason {
                ledger.rise_reset_used = true;
            }
        }
        InsuredEvent::HomeModificationApplied(e) => {
            ledger.prior_applications.insert(
                e.prior_application,
                PriorApplication {
                    applied_on: e.applied_on,
                    used: false,
                },
            );
        }
        InsuredEvent::HomeModificationWorkRecorded(e) => {
            ledger.used = ledger
                .used
                .checked_add(e.counted_cost)
                .expect("counted cost stays within the cap");
            if ledger.base_step.is_none() && e.counted_cost > Yen::ZERO {
                ledger.base_step = Some(e.step_at_start);
            }
            if let Some(prior) = ledger.prior_applications.get_mut(&e.prior_application) {
                prior.used = true;
            }
        }
        _ => unreachable!("called for home-modification events only"),
    }
}

/// Applies an equipment purchase.
pub(super) fn evolve_equipment(
    equipment: &mut BTreeMap<i32, EquipmentYear>,
    event: &EquipmentPurchaseRecorded,
) {
    let year = equipment.entry(event.fiscal_year).or_default();
    year.used = year
        .used
        .checked_add(event.counted_cost)
        .expect("counted cost stays within the cap");
    year.categories.insert(event.category);
}

impl InsuredState {
    /// What is left of the home-modification cap for work starting on
    /// `date`: a fresh cap when the three-step rise reset would be due for
    /// it (the reset itself is recorded with the work), else what is left
    /// of the current one. This is what offices are shown.
    pub fn home_modification_remaining_on(&self, date: NaiveDate) -> Yen {
        let due = self
            .level_on(date)
            .and_then(|level| level.step())
            .and_then(|step| rise_reset(&self.home_modification, step, date));
        match due {
            Some(_) => HOME_MODIFICATION_CAP,
            None => self.home_modification.remaining(),
        }
    }

    /// What is left of the equipment cap in `fiscal_year`.
    pub fn equipment_remaining(&self, fiscal_year: i32) -> Yen {
        let used = self
            .equipment
            .get(&fiscal_year)
            .map_or(Yen::ZERO, |year| year.used);
        EQUIPMENT_CAP_PER_FISCAL_YEAR.saturating_sub(used)
    }
}

fn apply_for_home_modification(
    state: &InsuredState,
    prior_application: u32,
    applied_on: NaiveDate,
    planned_cost: Yen,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(applied_on, today)?;
    positive(planned_cost)?;
    state.certified_level(applied_on)?;
    reject_if!(
        state
            .home_modification
            .prior_applications
            .contains_key(&prior_application),
        PriorApplicationDuplicate,
        format!("Prior application {prior_application} already exists."),
        format!("事前申請 {prior_application} は既にあります。")
    );
    Ok(vec![
        HomeModificationApplied {
            prior_application,
            applied_on,
            planned_cost,
        }
        .into(),
    ])
}

fn positive(amount: Yen) -> Result<(), Rejection> {
    reject_if!(
        amount == Yen::ZERO,
        AmountZero,
        "The amount must be more than zero yen.",
        "金額は0円より大きくなければなりません。"
    );
    Ok(())
}

/// Home-modification work: a prior application first, the three-step
/// reset when due, then a payment capped at what is left.
fn record_home_modification(
    state: &InsuredState,
    prior_application: u32,
    work_started_on: NaiveDate,
    receipt_on: NaiveDate,
    cost: Yen,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    let ledger = &state.home_modification;
    prior_application_before(ledger, prior_application, work_started_on)?;
    not_in_future(receipt_on, today)?;
    plausible(&[work_started_on])?;
    positive(cost)?;
    let step = state
        .certified_level(work_started_on)?
        .step()
        .expect("a certified level has a step");
    let ratio = state.ratio_on(receipt_on)?;
    let mut events = Vec::new();
    let mut used = ledger.used;
    if let Some(reset) = rise_reset(ledger, step, work_started_on) {
        events.push(reset.into());
        used = Yen::ZERO;
    }
    let counted_cost = cost.min(HOME_MODIFICATION_CAP.saturating_sub(used));
    events.push(
        HomeModificationWorkRecorded {
            prior_application,
            work_started_on,
            receipt_on,
            cost,
            counted_cost,
            benefit: ratio.benefit_on(counted_cost),
            copayment_ratio: ratio,
            capped: counted_cost < cost,
            step_at_start: step,
        }
        .into(),
    );
    Ok(events)
}

/// Rejects work without an unused prior application, or started before it.
fn prior_application_before(
    ledger: &HomeModificationLedger,
    prior_application: u32,
    work_started_on: NaiveDate,
) -> Result<(), Rejection> {
    let prior = ledger
        .prior_applications
        .get(&prior_application)
        .filter(|prior| !prior.used)
        .ok_or_else(|| {
            rejection!(
                PriorApplicationMissing,
                format!("There is no unused prior application {prior_application}; home modification needs a prior application before the work."),
                format!("未使用の事前申請 {prior_application} がありません。住宅改修は着工前の事前申請が必要です。")
            )
        })?;
    reject_if!(
        work_started_on < prior.applied_on,
        WorkBeforePriorApplication,
        format!(
            "The work started on {work_started_on}, before the prior application of {}.",
            prior.applied_on
        ),
        format!(
            "着工日 {work_started_on} が事前申請日 {} より前です。",
            prior.applied_on
        )
    );
    Ok(())
}

/// The once-per-person reset when the care need at the start of the work
/// is [`HOME_MODIFICATION_RISE_STEPS`] or more above the first paid work's.
fn rise_reset(
    ledger: &HomeModificationLedger,
    step: u8,
    work_started_on: NaiveDate,
) -> Option<HomeModificationCapReset> {
    let base = ledger.base_step?;
    (!ledger.rise_reset_used && step >= base + HOME_MODIFICATION_RISE_STEPS).then_some(
        HomeModificationCapReset {
            reason: CapResetReason::CareNeedRose {
                from_step: base,
                to_step: step,
            },
            reset_on: work_started_on,
        },
    )
}

/// An equipment purchase as the command states it.
struct Purchase<'a> {
    category: EquipmentCategory,
    purchased_on: NaiveDate,
    cost: Yen,
    seller_designated: bool,
    replacement_reason: Option<&'a str>,
}

/// Equipment: a designated seller, one item per category per fiscal year
/// unless replaced for a reason, paid up to what is left of the year's cap.
fn record_equipment(
    state: &InsuredState,
    purchase: Purchase<'_>,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    let Purchase {
        category,
        purchased_on,
        cost,
        seller_designated,
        replacement_reason,
    } = purchase;
    reject_if!(
        !seller_designated,
        SellerNotDesignated,
        "Equipment is paid for only when bought from a designated seller.",
        "特定福祉用具は指定販売事業者から購入したものに限り支給されます。"
    );
    not_in_future(purchased_on, today)?;
    positive(cost)?;
    state.certified_level(purchased_on)?;
    let ratio = state.ratio_on(purchased_on)?;
    let year = fiscal_year(purchased_on);
    reason_within_limit(replacement_reason.unwrap_or_default())?;
    let replacement_reason = replacement_reason.map(str::trim).filter(|r| !r.is_empty());
    let already = state
        .equipment
        .get(&year)
        .is_some_and(|y| y.categories.contains(&category));
    reject_if!(
        already && replacement_reason.is_none(),
        EquipmentCategoryAlreadyPurchased,
        format!(
            "An item of {} was already bought in fiscal year {year}; a second one needs a replacement reason.",
            category.japanese_name()
        ),
        format!(
            "{year}年度に{}は購入済みです。再購入には理由が必要です。",
            category.japanese_name()
        )
    );
    let counted_cost = cost.min(state.equipment_remaining(year));
    Ok(vec![
        EquipmentPurchaseRecorded {
            fiscal_year: year,
            category,
            purchased_on,
            cost,
            counted_cost,
            benefit: ratio.benefit_on(counted_cost),
            copayment_ratio: ratio,
            capped: counted_cost < cost,
            replacement_reason: replacement_reason.map(str::to_owned),
        }
        .into(),
    ])
}
