//! The care-need certification application (要介護認定, DOMAIN.md
//! "Certification workflow").
//!
//! Stream: `certification/<insurer>-<insured>-<seq>`, one stream per
//! application. The steps, and which may repeat or be skipped **[ours]**:
//!
//! | step | requires | repeat | may be skipped |
//! | --- | --- | --- | --- |
//! | filed | nothing on the stream | no | no |
//! | investigation scheduled | filed, no primary judgment yet | yes (re-scheduled) | yes |
//! | investigation completed | filed, no primary judgment yet | yes (re-investigation replaces the sheet) | no |
//! | opinion requested | filed, no primary judgment yet | yes (another doctor) | yes |
//! | opinion received | filed, no primary judgment yet | yes (replaces the opinion) | no |
//! | primary judgment | investigation completed and opinion received, no secondary judgment yet | yes (re-run) | no |
//! | secondary judgment | primary judgment | no | no |
//! | decided | secondary judgment, same level | no | no |
//! | extension notified | open, on or before the current deadline | yes (each before the deadline it extends) | yes |
//! | withdrawn / rejected | open | no | — |
//! | deadline reached | open and overdue (a timer) | once per deadline | — |
//!
//! After decided, withdrawn or rejected nothing more happens on the stream.
//! Dates of steps are the Japanese date of `now`, except the application
//! date and the investigation appointment, which the command carries.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::dates::{is_month_end, validity_months, validity_until};
use super::event::domain_events;
use super::rejection::{reject_if, rejection};
use super::{
    CareLevel, Decider, DocumentRef, Rejection, SealedValue, jst_date, not_in_future, plausible,
    reason_given, reason_within_limit,
};
use crate::envelope::StreamName;
use crate::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// Days from the application date to the decision deadline **[law]**.
pub const DECISION_DEADLINE_DAYS: u64 = 30;

/// Days before the validity ends from which a renewal may be filed **[law]**.
pub const RENEWAL_WINDOW_DAYS: u64 = 60;

/// The first day a renewal (更新申請) of a validity ending on `valid_until`
/// can be filed **[law]**: [`RENEWAL_WINDOW_DAYS`] before the end.
pub fn renewal_window_opens_on(valid_until: NaiveDate) -> NaiveDate {
    valid_until - Days::new(RENEWAL_WINDOW_DAYS)
}

/// Whether `today` lies in the renewal window of a validity ending on
/// `valid_until`: from [`renewal_window_opens_on`] to the last day, both
/// included. The decider refuses a renewal filed outside it; timers and
/// screens use it to say that a renewal is due.
pub fn in_renewal_window(today: NaiveDate, valid_until: NaiveDate) -> bool {
    renewal_window_opens_on(valid_until) <= today && today <= valid_until
}

/// The stream of one certification application:
/// `certification/<insurer>-<insured>-<seq>`.
pub fn certification_stream(
    insurer: &InsurerNumber,
    insured: &InsuredNumber,
    seq: u32,
) -> StreamName {
    StreamName::new("certification", &format!("{insurer}-{insured}-{seq}"))
        .expect("numbers and a sequence make a valid stream id")
}

/// 申請区分: what is applied for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ApplicationKind {
    /// 新規: a first certification.
    New,
    /// 更新: renewal of the current certification.
    Renewal,
    /// 区分変更: a change of level during the validity.
    Change,
}

impl ApplicationKind {
    /// The validity range in months **[law]**: (minimum, by rule, maximum).
    /// A renewal to the same level as before may run to 48 months.
    pub fn validity_months(self, same_level_renewal: bool) -> (u32, u32, u32) {
        match (self, same_level_renewal) {
            (Self::New | Self::Change, _) => (3, 6, 12),
            (Self::Renewal, false) => (3, 12, 36),
            (Self::Renewal, true) => (3, 12, 48),
        }
    }
}

/// Who filed the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Applicant {
    /// The insured person.
    Person,
    /// A family member; the name, when given, only sealed.
    Family {
        /// The family member's name (氏名), sealed with the insured
        /// person's key (a producer sends `{"plain": ...}`).
        name: Option<SealedValue>,
    },
    /// A care office by proxy (代行申請).
    Office {
        /// The office that filed.
        office: OfficeNumber,
    },
}

/// The insured person's own name as the application form (要介護認定申請書)
/// carries it: 氏名 and フリガナ, each sealed with the person's key (a
/// producer sends `{"plain": ...}`). What care staff know their clients by;
/// the platform never needs it to route anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InsuredName {
    /// 氏名, sealed.
    pub name: SealedValue,
    /// フリガナ (katakana), sealed; none when the form had none.
    #[serde(default)]
    pub kana: Option<SealedValue>,
}

/// A certification as looked up elsewhere (the insured person's current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CurrentCertification {
    /// The certified level.
    pub level: CareLevel,
    /// First day of validity.
    pub valid_from: NaiveDate,
    /// Last day of validity.
    pub valid_until: NaiveDate,
}

impl CurrentCertification {
    /// Whether it certifies a need (not 非該当) on `date`.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.level != CareLevel::NotEligible && self.valid_from <= date && date <= self.valid_until
    }
}

/// A validity period (有効期間), both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ValidityPeriod {
    /// First day.
    pub from: NaiveDate,
    /// Last day, always a month end.
    pub until: NaiveDate,
}

domain_events! {
    /// What happens to a certification application.
    pub enum CertificationEvent {
        /// An application for certification was filed (申請).
        ApplicationFiled = "certification.filed", v 2, by [Insurer, Office],
            label "要介護認定 申請" / "Application filed" {
            /// The insurer.
            insurer: InsurerNumber,
            /// The insured person.
            insured: InsuredNumber,
            /// The application's sequence number for this person.
            seq: u32,
            /// New, renewal or change.
            kind: ApplicationKind,
            /// Who filed it.
            applicant: Applicant,
            /// The application date.
            applied_on: NaiveDate,
            /// The certification current when filed (renewal and change), as looked up.
            current_certification: Option<CurrentCertification>,
            /// The insured person's name and kana from the form, sealed; the latest filing's is the person's name on the care staff's screens.
            insured_name: Option<InsuredName>,
        }
        /// The certification investigation (認定調査) was scheduled.
        InvestigationScheduled = "certification.investigation_scheduled", v 1, by [Insurer, Office],
            label "認定調査 日程決定" / "Investigation scheduled" {
            /// The appointment day.
            scheduled_on: NaiveDate,
        }
        /// The investigation was done; the investigation sheet (認定調査票) is available.
        InvestigationCompleted = "certification.investigation_completed", v 1, by [Insurer, Office],
            label "認定調査 完了（調査票）" / "Investigation done" {
            /// The day it was recorded.
            completed_on: NaiveDate,
            /// The investigation sheet.
            investigation_sheet: DocumentRef,
        }
        /// The doctor's opinion (主治医意見書) was requested from a medical institution.
        OpinionRequested = "certification.opinion_requested", v 1, by [Insurer],
            label "主治医意見書 依頼" / "Doctor's opinion requested" {
            /// The medical institution asked.
            institution: MedicalInstitutionCode,
            /// The day of the request.
            requested_on: NaiveDate,
        }
        /// The doctor's opinion arrived; it is available.
        OpinionReceived = "certification.opinion_received", v 1, by [Insurer, MedicalInstitution],
            label "主治医意見書 受領" / "Doctor's opinion received" {
            /// The medical institution that wrote it.
            institution: MedicalInstitutionCode,
            /// The opinion.
            opinion: DocumentRef,
            /// The day it arrived.
            received_on: NaiveDate,
        }
        /// The computer's primary judgment (一次判定).
        PrimaryJudgmentRecorded = "certification.primary_judgment_recorded", v 1, by [Insurer],
            label "一次判定" / "Primary judgment" {
            /// The level judged.
            level: CareLevel,
            /// The day of the judgment.
            judged_on: NaiveDate,
        }
        /// The certification board's secondary judgment (二次判定, 介護認定審査会).
        SecondaryJudgmentRecorded = "certification.secondary_judgment_recorded", v 1, by [Insurer],
            label "二次判定（認定審査会）" / "Secondary judgment" {
            /// The level judged.
            level: CareLevel,
            /// The day of the judgment.
            judged_on: NaiveDate,
        }
        /// The insurer decided the certification (認定).
        CertificationDecided = "certification.decided", v 1, by [Insurer],
            label "認定 決定" / "Decided" {
            /// The level decided.
            level: CareLevel,
            /// The day of the decision.
            decided_on: NaiveDate,
            /// The validity period; none for 非該当.
            validity: Option<ValidityPeriod>,
            /// The validity in months as the rules count them; none for 非該当.
            validity_months: Option<u32>,
        }
        /// The insurer notified an extension of the decision period (処理見込期間).
        ExtensionNotified = "certification.extension_notified", v 1, by [Insurer],
            label "処理延期通知" / "Extension notified" {
            /// Why the decision takes longer.
            reason: String,
            /// The day by which the decision is expected.
            expected_decision_on: NaiveDate,
            /// The day of the notice.
            notified_on: NaiveDate,
        }
        /// The applicant withdrew the application (取下げ).
        ApplicationWithdrawn = "certification.withdrawn", v 1, by [Insurer, Office],
            label "申請 取下げ" / "Withdrawn" {
            /// The day of the withdrawal.
            withdrawn_on: NaiveDate,
            /// Why, when given.
            reason: Option<String>,
        }
        /// The insurer rejected the application (却下), e.g. not insured.
        ApplicationRejected = "certification.rejected", v 1, by [Insurer],
            label "申請 却下" / "Rejected" {
            /// The day of the rejection.
            rejected_on: NaiveDate,
            /// Why.
            reason: String,
        }
        /// The decision deadline passed without a decision (a timer's record).
        DeadlineReached = "certification.deadline_reached", v 1, by [System],
            label "処理期限（30日）到来" / "Decision deadline reached" {
            /// The deadline that passed (30 days after the application, or the extension's expected date).
            due_date: NaiveDate,
            /// The day the timer recorded it.
            reached_on: NaiveDate,
        }
    }
}

/// What may be asked of a certification application.
/// Deserialisable so that a municipality's status message can name a command
/// by its snake_case variant name with the variant's fields as a JSON object
/// (`kiban-engine`'s ingest translation; `docs/integration.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CertificationCommand {
    /// File an application.
    FileApplication {
        /// The insurer.
        insurer: InsurerNumber,
        /// The insured person.
        insured: InsuredNumber,
        /// The application's sequence number (the stream's).
        seq: u32,
        /// New, renewal or change.
        kind: ApplicationKind,
        /// Who files.
        applicant: Applicant,
        /// The application date (not in the future).
        applied_on: NaiveDate,
        /// The person's current certification, looked up by the engine.
        current_certification: Option<CurrentCertification>,
        /// The insured person's name and kana (optional; older producers
        /// leave it out).
        #[serde(default)]
        insured_name: Option<InsuredName>,
    },
    /// Schedule the investigation.
    ScheduleInvestigation {
        /// The appointment day.
        scheduled_on: NaiveDate,
    },
    /// Record the investigation sheet.
    CompleteInvestigation {
        /// The investigation sheet.
        investigation_sheet: DocumentRef,
    },
    /// Ask a medical institution for the doctor's opinion.
    RequestOpinion {
        /// The medical institution.
        institution: MedicalInstitutionCode,
    },
    /// Record the doctor's opinion.
    ReceiveOpinion {
        /// The medical institution that wrote it.
        institution: MedicalInstitutionCode,
        /// The opinion.
        opinion: DocumentRef,
    },
    /// Record the primary judgment.
    RecordPrimaryJudgment {
        /// The level judged.
        level: CareLevel,
    },
    /// Record the secondary judgment.
    RecordSecondaryJudgment {
        /// The level judged.
        level: CareLevel,
    },
    /// Decide the certification.
    Decide {
        /// The level decided: must be the secondary judgment's.
        level: CareLevel,
        /// The validity period; computed by the rules when not given,
        /// checked against them when given.
        validity: Option<ValidityPeriod>,
    },
    /// Notify an extension of the decision period.
    NotifyExtension {
        /// Why.
        reason: String,
        /// When the decision is expected.
        expected_decision_on: NaiveDate,
    },
    /// Withdraw the application.
    Withdraw {
        /// Why, when given.
        reason: Option<String>,
    },
    /// Reject the application.
    Reject {
        /// Why.
        reason: String,
    },
    /// Record that the deadline passed (sent by a timer).
    RecordDeadlineReached,
}

/// Where the application stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertificationStatus {
    /// Nothing filed.
    #[default]
    NotFiled,
    /// Filed and not yet closed.
    Open,
    /// Decided.
    Decided,
    /// Withdrawn.
    Withdrawn,
    /// Rejected.
    Rejected,
}

/// The folded state of one application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificationState {
    /// Where it stands.
    pub status: CertificationStatus,
    /// The filing.
    pub application: Option<ApplicationFiled>,
    /// The investigation appointment.
    pub investigation_scheduled_on: Option<NaiveDate>,
    /// The investigation sheet.
    pub investigation_sheet: Option<DocumentRef>,
    /// The medical institutions asked for an opinion.
    pub opinion_requested_from: Vec<MedicalInstitutionCode>,
    /// The doctor's opinion.
    pub opinion: Option<DocumentRef>,
    /// The primary judgment.
    pub primary_judgment: Option<CareLevel>,
    /// The secondary judgment.
    pub secondary_judgment: Option<CareLevel>,
    /// The decision.
    pub decision: Option<CertificationDecided>,
    /// The latest extension notice.
    pub extension: Option<ExtensionNotified>,
    /// The deadline whose passing was last recorded.
    pub deadline_recorded_for: Option<NaiveDate>,
}

/// An open application past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdue {
    /// The deadline that passed.
    pub due_date: NaiveDate,
    /// Days since it passed.
    pub days_overdue: u64,
}

impl CertificationState {
    /// The current decision deadline of an open application: the expected
    /// date of the latest extension, or 30 days after the application.
    pub fn due_date(&self) -> Option<NaiveDate> {
        if self.status != CertificationStatus::Open {
            return None;
        }
        let application = self.application.as_ref()?;
        Some(match &self.extension {
            Some(extension) => extension.expected_decision_on,
            None => application.applied_on + Days::new(DECISION_DEADLINE_DAYS),
        })
    }
}

/// Whether the application is open past its deadline on `today` (used by
/// timers and shown to the insurer and the office).
pub fn overdue(state: &CertificationState, today: NaiveDate) -> Option<Overdue> {
    let due_date = state.due_date()?;
    (today > due_date).then(|| Overdue {
        due_date,
        days_overdue: (today - due_date).num_days().unsigned_abs(),
    })
}

/// The certification application decider.
#[derive(Debug, Clone, Copy)]
pub struct CertificationApplication;

impl Decider for CertificationApplication {
    type State = CertificationState;
    type Command = CertificationCommand;
    type Event = CertificationEvent;

    fn decide(
        state: &CertificationState,
        command: &CertificationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<CertificationEvent>, Rejection> {
        let today = jst_date(now);
        if let CertificationCommand::FileApplication { .. } = command {
            return file(state, command, today);
        }
        let application = open_application(state)?;
        use CertificationCommand as C;
        let event = match command {
            C::FileApplication { .. } => unreachable!("handled above"),
            C::ScheduleInvestigation { .. }
            | C::CompleteInvestigation { .. }
            | C::RequestOpinion { .. }
            | C::ReceiveOpinion { .. } => gather(state, application, command, today)?,
            C::RecordPrimaryJudgment { level } => primary_judgment(state, *level, today)?,
            C::RecordSecondaryJudgment { level } => secondary_judgment(state, *level, today)?,
            C::Decide { level, validity } => {
                decide_certification(state, application, *level, *validity, today)?
            }
            C::NotifyExtension {
                reason,
                expected_decision_on,
            } => notify_extension(state, reason, *expected_decision_on, today)?,
            C::Withdraw { reason } => {
                reason_within_limit(reason.as_deref().unwrap_or_default())?;
                ApplicationWithdrawn {
                    withdrawn_on: today,
                    reason: reason.clone(),
                }
                .into()
            }
            C::Reject { reason } => {
                reason_given(reason, "A rejection", "却下")?;
                ApplicationRejected {
                    rejected_on: today,
                    reason: reason.clone(),
                }
                .into()
            }
            C::RecordDeadlineReached => deadline_reached(state, today)?,
        };
        Ok(vec![event])
    }

    fn evolve(mut state: CertificationState, event: &CertificationEvent) -> CertificationState {
        use CertificationEvent as E;
        match event {
            E::ApplicationFiled(e) => {
                state.status = CertificationStatus::Open;
                state.application = Some(e.clone());
            }
            E::InvestigationScheduled(e) => state.investigation_scheduled_on = Some(e.scheduled_on),
            E::InvestigationCompleted(e) => {
                state.investigation_sheet = Some(e.investigation_sheet.clone())
            }
            E::OpinionRequested(e) => state.opinion_requested_from.push(e.institution.clone()),
            E::OpinionReceived(e) => state.opinion = Some(e.opinion.clone()),
            E::PrimaryJudgmentRecorded(e) => state.primary_judgment = Some(e.level),
            E::SecondaryJudgmentRecorded(e) => state.secondary_judgment = Some(e.level),
            E::CertificationDecided(e) => {
                state.status = CertificationStatus::Decided;
                state.decision = Some(e.clone());
            }
            E::ExtensionNotified(e) => state.extension = Some(e.clone()),
            E::ApplicationWithdrawn(_) => state.status = CertificationStatus::Withdrawn,
            E::ApplicationRejected(_) => state.status = CertificationStatus::Rejected,
            E::DeadlineReached(e) => state.deadline_recorded_for = Some(e.due_date),
        }
        state
    }
}

/// The investigation and the doctor's opinion: any order, repeatable, until
/// the primary judgment.
fn gather(
    state: &CertificationState,
    application: &ApplicationFiled,
    command: &CertificationCommand,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    before_primary_judgment(state)?;
    use CertificationCommand as C;
    Ok(match command {
        C::ScheduleInvestigation { scheduled_on } => {
            plausible(&[*scheduled_on])?;
            reject_if!(
                *scheduled_on < application.applied_on,
                StepOutOfOrder,
                "The investigation cannot be scheduled before the application date.",
                "認定調査を申請日より前に予定することはできません。"
            );
            InvestigationScheduled {
                scheduled_on: *scheduled_on,
            }
            .into()
        }
        C::CompleteInvestigation {
            investigation_sheet,
        } => InvestigationCompleted {
            completed_on: today,
            investigation_sheet: investigation_sheet.clone(),
        }
        .into(),
        C::RequestOpinion { institution } => OpinionRequested {
            institution: institution.clone(),
            requested_on: today,
        }
        .into(),
        C::ReceiveOpinion {
            institution,
            opinion,
        } => OpinionReceived {
            institution: institution.clone(),
            opinion: opinion.clone(),
            received_on: today,
        }
        .into(),
        _ => unreachable!("called for the investigation and opinion steps only"),
    })
}

fn primary_judgment(
    state: &CertificationState,
    level: CareLevel,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    reject_if!(
        state.investigation_sheet.is_none() || state.opinion.is_none(),
        StepOutOfOrder,
        "The primary judgment needs the investigation sheet and the doctor's opinion first.",
        "一次判定には認定調査票と主治医意見書が必要です。"
    );
    reject_if!(
        state.secondary_judgment.is_some(),
        StepOutOfOrder,
        "The secondary judgment is already recorded; the primary judgment cannot change.",
        "二次判定が記録済みのため一次判定は変更できません。"
    );
    Ok(PrimaryJudgmentRecorded {
        level,
        judged_on: today,
    }
    .into())
}

fn secondary_judgment(
    state: &CertificationState,
    level: CareLevel,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    reject_if!(
        state.primary_judgment.is_none(),
        StepOutOfOrder,
        "The secondary judgment needs the primary judgment first.",
        "二次判定の前に一次判定が必要です。"
    );
    reject_if!(
        state.secondary_judgment.is_some(),
        StepOutOfOrder,
        "The secondary judgment is already recorded.",
        "二次判定は記録済みです。"
    );
    Ok(SecondaryJudgmentRecorded {
        level,
        judged_on: today,
    }
    .into())
}

/// An extension is notified on or before the current deadline and moves it
/// to the expected decision date.
fn notify_extension(
    state: &CertificationState,
    reason: &str,
    expected_decision_on: NaiveDate,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    let due = state
        .due_date()
        .expect("an open application has a deadline");
    reason_given(reason, "An extension notice", "延期通知")?;
    plausible(&[expected_decision_on])?;
    reject_if!(
        today > due,
        ExtensionAfterDeadline,
        format!("The extension must be notified by the deadline {due}; it is now {today}."),
        format!("延期通知は期限 {due} までに必要です（本日 {today}）。")
    );
    reject_if!(
        expected_decision_on <= due,
        ExpectedDateTooEarly,
        format!("The expected decision date must be after the current deadline {due}."),
        format!("処理見込期日は現在の期限 {due} より後でなければなりません。")
    );
    Ok(ExtensionNotified {
        reason: reason.to_owned(),
        expected_decision_on,
        notified_on: today,
    }
    .into())
}

/// A timer's record that the deadline passed, once per deadline.
fn deadline_reached(
    state: &CertificationState,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    let overdue = overdue(state, today).ok_or_else(|| {
        rejection!(
            DeadlineNotReached,
            "The decision deadline has not passed yet.",
            "処理期限はまだ過ぎていません。"
        )
    })?;
    reject_if!(
        state.deadline_recorded_for == Some(overdue.due_date),
        DeadlineAlreadyRecorded,
        "The passing of this deadline is already recorded.",
        "この期限の経過は記録済みです。"
    );
    Ok(DeadlineReached {
        due_date: overdue.due_date,
        reached_on: today,
    }
    .into())
}

/// The filing rules: one filing per stream, a date not in the future, and
/// the renewal window and current certification per kind.
fn file(
    state: &CertificationState,
    command: &CertificationCommand,
    today: NaiveDate,
) -> Result<Vec<CertificationEvent>, Rejection> {
    let CertificationCommand::FileApplication {
        insurer,
        insured,
        seq,
        kind,
        applicant,
        applied_on,
        current_certification,
        insured_name,
    } = command
    else {
        unreachable!("called for FileApplication only")
    };
    reject_if!(
        state.application.is_some(),
        ApplicationAlreadyFiled,
        "This application has already been filed.",
        "この申請は受付済みです。"
    );
    not_in_future(*applied_on, today)?;
    if let Some(current) = current_certification {
        plausible(&[current.valid_from, current.valid_until])?;
    }
    let current = current_certification
        .as_ref()
        .filter(|c| c.level != CareLevel::NotEligible);
    check_current_certification(*kind, current, *applied_on)?;
    Ok(vec![
        ApplicationFiled {
            insurer: insurer.clone(),
            insured: insured.clone(),
            seq: *seq,
            kind: *kind,
            applicant: applicant.clone(),
            applied_on: *applied_on,
            current_certification: current_certification.clone(),
            insured_name: insured_name.clone(),
        }
        .into(),
    ])
}

/// New applications need no valid certification; renewals and changes need
/// a current one, and renewals only from 60 days before it ends.
fn check_current_certification(
    kind: ApplicationKind,
    current: Option<&CurrentCertification>,
    applied_on: NaiveDate,
) -> Result<(), Rejection> {
    match (kind, current) {
        (ApplicationKind::New, Some(current)) => reject_if!(
            current.covers(applied_on),
            AlreadyCertified,
            format!(
                "The person is certified until {}; file a renewal or a change instead of a new application.",
                current.valid_until
            ),
            format!(
                "{} まで認定が有効です。新規申請ではなく更新申請または区分変更申請をしてください。",
                current.valid_until
            )
        ),
        (ApplicationKind::New, None) => {}
        (ApplicationKind::Renewal | ApplicationKind::Change, None) => {
            return Err(rejection!(
                CurrentCertificationMissing,
                "A renewal or change application needs the person's current certification.",
                "更新申請・区分変更申請には現在の認定が必要です。"
            ));
        }
        (ApplicationKind::Renewal | ApplicationKind::Change, Some(current)) => {
            reject_if!(
                applied_on > current.valid_until,
                CurrentCertificationExpired,
                format!(
                    "The current certification ended on {}; file a new application.",
                    current.valid_until
                ),
                format!(
                    "現在の認定は {} に終了しています。新規申請をしてください。",
                    current.valid_until
                )
            );
            let window_opens = renewal_window_opens_on(current.valid_until);
            reject_if!(
                kind == ApplicationKind::Renewal && applied_on < window_opens,
                RenewalWindowNotOpen,
                format!(
                    "A renewal can be filed from {window_opens}, 60 days before the validity ends on {}.",
                    current.valid_until
                ),
                format!(
                    "更新申請は有効期間満了日 {} の60日前（{window_opens}）から受け付けます。",
                    current.valid_until
                )
            );
        }
    }
    Ok(())
}

/// The decision rules: after the secondary judgment, at its level, with a
/// validity period that starts, ends and lasts as the rules say.
fn decide_certification(
    state: &CertificationState,
    application: &ApplicationFiled,
    level: CareLevel,
    validity: Option<ValidityPeriod>,
    today: NaiveDate,
) -> Result<CertificationEvent, Rejection> {
    let Some(judged) = state.secondary_judgment else {
        return Err(rejection!(
            StepOutOfOrder,
            "A certification can only be decided after the secondary judgment.",
            "認定は二次判定の後でなければ決定できません。"
        ));
    };
    reject_if!(
        level != judged,
        LevelDiffersFromJudgment,
        format!(
            "The decided level {} differs from the secondary judgment {}.",
            level.japanese_name(),
            judged.japanese_name()
        ),
        format!(
            "決定した区分 {} が二次判定 {} と異なります。",
            level.japanese_name(),
            judged.japanese_name()
        )
    );
    let (validity, months) = if level == CareLevel::NotEligible {
        reject_if!(
            validity.is_some(),
            ValidityNotAllowed,
            "A not-eligible (非該当) decision has no validity period.",
            "非該当の決定に有効期間はありません。"
        );
        (None, None)
    } else {
        let (period, months) = checked_validity(application, level, validity)?;
        (Some(period), Some(months))
    };
    Ok(CertificationDecided {
        level,
        decided_on: today,
        validity,
        validity_months: months,
    }
    .into())
}

/// The start a decision's validity must have: the application date for new
/// and change applications, the day after the current validity for renewals.
pub fn validity_start(application: &ApplicationFiled) -> NaiveDate {
    match (&application.kind, &application.current_certification) {
        (ApplicationKind::Renewal, Some(current)) => current.valid_until + Days::new(1),
        _ => application.applied_on,
    }
}

/// Computes the validity by rule when not given, checks it when given.
fn checked_validity(
    application: &ApplicationFiled,
    level: CareLevel,
    validity: Option<ValidityPeriod>,
) -> Result<(ValidityPeriod, u32), Rejection> {
    let start = validity_start(application);
    let same_level = application.kind == ApplicationKind::Renewal
        && application
            .current_certification
            .as_ref()
            .is_some_and(|current| current.level == level);
    let (min, by_rule, max) = application.kind.validity_months(same_level);
    if let Some(period) = validity {
        plausible(&[period.from, period.until])?;
    }
    let Some(period) = validity else {
        let period = ValidityPeriod {
            from: start,
            until: validity_until(start, by_rule),
        };
        return Ok((period, by_rule));
    };
    reject_if!(
        period.from != start,
        ValidityStartWrong,
        format!("The validity must start on {start}, not {}.", period.from),
        format!(
            "有効期間の開始日は {start} です（{} ではありません）。",
            period.from
        )
    );
    reject_if!(
        !is_month_end(period.until),
        ValidityNotMonthEnd,
        format!(
            "The validity must end on a month end, not {}.",
            period.until
        ),
        format!(
            "有効期間は月末で終わらなければなりません（{}）。",
            period.until
        )
    );
    let months = validity_months(period.from, period.until).unwrap_or(0);
    reject_if!(
        !(min..=max).contains(&months),
        ValidityOutOfRange,
        format!("The validity may be {min} to {max} months for this application; {months} given."),
        format!("この申請の有効期間は {min}〜{max} か月です（{months} か月が指定されました）。")
    );
    Ok((period, months))
}

fn open_application(state: &CertificationState) -> Result<&ApplicationFiled, Rejection> {
    let Some(application) = state.application.as_ref() else {
        return Err(rejection!(
            ApplicationNotFiled,
            "No application has been filed.",
            "申請が受け付けられていません。"
        ));
    };
    reject_if!(
        state.status != CertificationStatus::Open,
        ApplicationClosed,
        "The application is already decided, withdrawn or rejected.",
        "この申請は決定・取下げ・却下済みです。"
    );
    Ok(application)
}

fn before_primary_judgment(state: &CertificationState) -> Result<(), Rejection> {
    reject_if!(
        state.primary_judgment.is_some(),
        StepOutOfOrder,
        "The primary judgment is already recorded; investigation and opinion can no longer change.",
        "一次判定が記録済みのため、認定調査・主治医意見書は変更できません。"
    );
    Ok(())
}
