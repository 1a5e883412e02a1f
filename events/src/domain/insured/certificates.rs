//! Certifications and certificates: the decided certifications recorded on
//! the person, the renewal window a timer opens on the current one, the
//! copayment-ratio certificate (負担割合証) and the cost-limit certificate
//! (負担限度額認定証).
//!
//! State part: `certifications`, `renewal_windows_opened`,
//! `copayment_certificates` and `cost_limit_certificates` of
//! [`InsuredState`].

use chrono::{Datelike, NaiveDate};

use super::{
    CertificationRecorded, CopaymentCertificateIssued, CostLimitCertificateIssued, Decision,
    InsuredCommand, InsuredEvent, InsuredState, RenewalWindowOpened,
};
use crate::domain::certification::{CurrentCertification, ValidityPeriod, renewal_window_opens_on};
use crate::domain::dates::{is_august_first, month_start, next_july_31};
use crate::domain::rejection::{reject_if, rejection};
use crate::domain::{
    CareLevel, CopaymentRatio, CostLimitStage, Rejection, not_in_future, plausible,
};

/// Decides the certification and certificate commands.
pub(super) fn decide(state: &InsuredState, command: &InsuredCommand, today: NaiveDate) -> Decision {
    match command {
        InsuredCommand::RecordCertification {
            application_seq,
            level,
            validity,
        } => record_certification(state, *application_seq, *level, *validity),
        InsuredCommand::OpenRenewalWindow => open_renewal_window(state, today),
        InsuredCommand::IssueCopaymentCertificate { ratio, valid_from } => {
            issue_copayment(state, *ratio, *valid_from)
        }
        InsuredCommand::IssueCostLimitCertificate {
            stage,
            applied_on,
            for_coming_period,
        } => issue_cost_limit(state, *stage, *applied_on, *for_coming_period, today),
        _ => unreachable!("called for certificate commands only"),
    }
}

/// Applies a certification or certificate event.
pub(super) fn evolve(state: &mut InsuredState, event: &InsuredEvent) {
    match event {
        InsuredEvent::CertificationRecorded(e) => state.certifications.push(e.clone()),
        InsuredEvent::RenewalWindowOpened(e) => {
            state.renewal_windows_opened.insert(e.application_seq);
        }
        InsuredEvent::CopaymentCertificateIssued(e) => state.copayment_certificates.push(e.clone()),
        InsuredEvent::CostLimitCertificateIssued(e) => {
            state.cost_limit_certificates.push(e.clone())
        }
        _ => unreachable!("called for certificate events only"),
    }
}

impl InsuredState {
    /// The level certified on `date`: the latest recorded certification
    /// covering it (a change decision overrides from its start).
    pub fn level_on(&self, date: NaiveDate) -> Option<CareLevel> {
        self.certification_on(date).map(|c| c.level)
    }

    /// The certification in force on `date`: the latest recorded one
    /// covering it.
    pub fn certification_on(&self, date: NaiveDate) -> Option<&CertificationRecorded> {
        self.certifications
            .iter()
            .rev()
            .find(|c| c.validity.from <= date && date <= c.validity.until)
    }

    /// The current certification for an application made on `applied_on`,
    /// as the renewal and change rules need it: the one in force on that
    /// day, else the latest one that ended before it (so a late renewal is
    /// told it expired); never one that starts later (an already decided
    /// renewal). The one lookup the API and the municipal ingest share.
    pub fn current_certification(&self, applied_on: NaiveDate) -> Option<CurrentCertification> {
        self.certification_on(applied_on)
            .or_else(|| {
                self.certifications
                    .iter()
                    .filter(|c| c.validity.until < applied_on)
                    .max_by_key(|c| c.validity.until)
            })
            .map(|c| CurrentCertification {
                level: c.level,
                valid_from: c.validity.from,
                valid_until: c.validity.until,
            })
    }

    /// The copayment ratio on `date`: the latest certificate covering it.
    pub fn copayment_ratio_on(&self, date: NaiveDate) -> Option<CopaymentRatio> {
        self.copayment_certificates
            .iter()
            .rev()
            .find(|c| c.valid_from <= date && date <= c.valid_until)
            .map(|c| c.ratio)
    }

    /// The 要支援 or 要介護 level on `date`, or why there is none.
    pub(super) fn certified_level(&self, date: NaiveDate) -> Result<CareLevel, Rejection> {
        self.level_on(date)
            .filter(|level| level.step().is_some())
            .ok_or_else(|| {
                rejection!(
                    NotCertified,
                    format!("The person has no valid certification (要支援 or 要介護) on {date}."),
                    format!("{date} 時点で有効な要支援・要介護認定がありません。")
                )
            })
    }

    /// The copayment ratio on a receipt date, or why there is none.
    pub(super) fn ratio_on(&self, date: NaiveDate) -> Result<CopaymentRatio, Rejection> {
        self.copayment_ratio_on(date).ok_or_else(|| {
            rejection!(
                NoCopaymentRatio,
                format!("No copayment-ratio certificate covers the receipt date {date}."),
                format!("領収日 {date} に有効な負担割合証がありません。")
            )
        })
    }
}

fn record_certification(
    state: &InsuredState,
    application_seq: u32,
    level: CareLevel,
    validity: ValidityPeriod,
) -> Result<Vec<InsuredEvent>, Rejection> {
    plausible(&[validity.from, validity.until])?;
    reject_if!(
        level == CareLevel::NotEligible,
        NotCertified,
        "A not-eligible (非該当) decision gives no certification to record.",
        "非該当の決定には記録する認定がありません。"
    );
    reject_if!(
        state
            .certifications
            .iter()
            .any(|c| c.application_seq == application_seq),
        CertificationAlreadyRecorded,
        format!("The certification of application {application_seq} is already recorded."),
        format!("申請 {application_seq} の認定は記録済みです。")
    );
    Ok(vec![
        CertificationRecorded {
            application_seq,
            level,
            validity,
        }
        .into(),
    ])
}

/// A timer's record that a renewal can be filed for the current (latest
/// recorded) certification: once per certification, from 60 days before its
/// validity ends until it ends.
fn open_renewal_window(
    state: &InsuredState,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    let current = state.certifications.last().ok_or_else(|| {
        rejection!(
            NotCertified,
            "The person has no recorded certification whose renewal could open.",
            "更新の対象となる認定が記録されていません。"
        )
    })?;
    let valid_until = current.validity.until;
    let opens_on = renewal_window_opens_on(valid_until);
    reject_if!(
        state
            .renewal_windows_opened
            .contains(&current.application_seq),
        DeadlineAlreadyRecorded,
        format!(
            "The renewal window of the certification ending on {valid_until} is already recorded as open."
        ),
        format!("有効期間満了日 {valid_until} の認定の更新受付開始は記録済みです。")
    );
    reject_if!(
        today < opens_on,
        DeadlineNotReached,
        format!(
            "The renewal window opens on {opens_on}, 60 days before the validity ends on {valid_until}."
        ),
        format!("更新申請の受付は有効期間満了日 {valid_until} の60日前（{opens_on}）からです。")
    );
    reject_if!(
        today > valid_until,
        CurrentCertificationExpired,
        format!("The certification ended on {valid_until}; there is nothing left to renew."),
        format!("認定は {valid_until} に終了しています。更新の対象がありません。")
    );
    Ok(vec![
        RenewalWindowOpened {
            application_seq: current.application_seq,
            valid_until,
            opens_on,
            opened_on: today,
        }
        .into(),
    ])
}

/// The copayment certificate runs to the next 7/31 from 8/1 (yearly
/// issue), from the start of a certification (newly certified), or from a
/// day inside the current certificate (a change of ratio).
fn issue_copayment(
    state: &InsuredState,
    ratio: CopaymentRatio,
    valid_from: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    plausible(&[valid_from])?;
    state.certified_level(valid_from)?;
    let starts_certification = state
        .certifications
        .iter()
        .any(|c| c.validity.from == valid_from);
    let changes_current = state.copayment_ratio_on(valid_from).is_some();
    reject_if!(
        !(is_august_first(valid_from) || starts_certification || changes_current),
        CopaymentStartInvalid,
        format!(
            "A copayment-ratio certificate starts on 8/1, on the first day of a certification, or during the current certificate; {valid_from} is none of these."
        ),
        format!(
            "負担割合証の開始日は8月1日、認定の開始日、または現在の証の有効期間中でなければなりません（{valid_from}）。"
        )
    );
    Ok(vec![
        CopaymentCertificateIssued {
            ratio,
            valid_from,
            valid_until: next_july_31(valid_from),
        }
        .into(),
    ])
}

/// The cost-limit certificate runs from the 1st of the application month
/// to the next 7/31 **[law]**; an application for the coming period (the
/// yearly renewal) made before 8/1 runs from that 8/1 to the 7/31 after,
/// so a renewal applied for in June or July is issued in advance **[ours,
/// from the law's yearly 8/1–7/31 period]**.
fn issue_cost_limit(
    state: &InsuredState,
    stage: CostLimitStage,
    applied_on: NaiveDate,
    for_coming_period: bool,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(applied_on, today)?;
    state.certified_level(applied_on)?;
    let valid_from = if for_coming_period && applied_on.month() < 8 {
        next_july_31(applied_on)
            .succ_opt()
            .expect("plausible dates have a next day")
    } else {
        month_start(applied_on)
    };
    Ok(vec![
        CostLimitCertificateIssued {
            stage,
            applied_on,
            valid_from,
            valid_until: next_july_31(valid_from),
        }
        .into(),
    ])
}
