//! The subsidy for card readers and connection support (助成金, DOMAIN.md
//! "Subsidy for card readers and connection support").
//!
//! Stream: `subsidy/<office>-<seq>` for a care office, `subsidy/m<code>-<seq>`
//! for a medical institution **[ours]** (the `m` keeps a medical institution
//! code from ever naming the same stream as an office number with the same
//! digits). One stream per application: a deficiency closes it, and the
//! re-application is a new application on a new stream.
//!
//! The calculator is [`calculate`]; the category table is
//! [`SERVICE_TYPE_CATEGORIES`]; the fiscal year's window and the medical
//! institutions' amount are a [`SubsidyPolicy`] value the engine passes in.
//!
//! When the notice or the payment passes its due date without happening, a
//! timer records it once each (`subsidy.notice_overdue`,
//! `subsidy.payment_overdue`), so the federation's backlog is visible.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::dates::{month_end, month_end_after};
use super::event::domain_events;
use super::rejection::{reject_if, rejection};
use super::{
    Decider, DocumentRef, Rejection, ServiceTypeCode, Yen, jst_date, list_within_limit,
    reason_given,
};
use crate::envelope::StreamName;
use crate::ids::{MedicalInstitutionCode, OfficeNumber};

/// The stream of a care office's subsidy application: `subsidy/<office>-<seq>`.
pub fn subsidy_stream_for_office(office: &OfficeNumber, seq: u32) -> StreamName {
    StreamName::new("subsidy", &format!("{office}-{seq}"))
        .expect("an office number and a sequence make a valid stream id")
}

/// The stream of a medical institution's subsidy application:
/// `subsidy/m<code>-<seq>`.
pub fn subsidy_stream_for_institution(
    institution: &MedicalInstitutionCode,
    seq: u32,
) -> StreamName {
    StreamName::new("subsidy", &format!("m{institution}-{seq}"))
        .expect("a code and a sequence make a valid stream id")
}

/// 介護サービス種別: the subsidy category of a service type **[seed]**.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubsidyCategory {
    /// 訪問・通所・短期滞在系 (居宅介護支援 included): 3 readers, 64,000 yen.
    VisitDayShortStay,
    /// 居住・入所系: 2 readers, 55,000 yen.
    ResidentialAdmission,
    /// その他: 1 reader, 42,000 yen.
    Other,
}

impl SubsidyCategory {
    /// The limit of ① readers + ② connection support, tax included.
    pub fn limit(self) -> Yen {
        match self {
            Self::VisitDayShortStay => Yen::new(64_000),
            Self::ResidentialAdmission => Yen::new(55_000),
            Self::Other => Yen::new(42_000),
        }
    }

    /// The most card readers subsidised.
    pub fn reader_cap(self) -> u32 {
        match self {
            Self::VisitDayShortStay => 3,
            Self::ResidentialAdmission => 2,
            Self::Other => 1,
        }
    }

    /// The Japanese name.
    pub fn japanese_name(self) -> &'static str {
        match self {
            Self::VisitDayShortStay => "訪問・通所・短期滞在系",
            Self::ResidentialAdmission => "居住・入所系",
            Self::Other => "その他",
        }
    }
}

use SubsidyCategory::{Other as O, ResidentialAdmission as R, VisitDayShortStay as V};

/// サービス種類コード → subsidy category **[ours]**, documented in
/// `docs/domain.md`. 居宅介護支援 (43) and 介護予防支援 (46) count as
/// 訪問・通所・短期滞在系 **[seed]**; short-term use of a residential service
/// (27, 28, 38, 39) follows its facility, 居住・入所系.
pub const SERVICE_TYPE_CATEGORIES: &[(&str, &str, SubsidyCategory)] = &[
    ("11", "訪問介護", V),
    ("12", "訪問入浴介護", V),
    ("13", "訪問看護", V),
    ("14", "訪問リハビリテーション", V),
    ("15", "通所介護", V),
    ("16", "通所リハビリテーション", V),
    ("21", "短期入所生活介護", V),
    ("22", "短期入所療養介護（介護老人保健施設）", V),
    ("23", "短期入所療養介護（病院等）", V),
    ("2A", "短期入所療養介護（介護医療院）", V),
    ("24", "介護予防短期入所生活介護", V),
    ("25", "介護予防短期入所療養介護（介護老人保健施設）", V),
    ("26", "介護予防短期入所療養介護（病院等）", V),
    ("2B", "介護予防短期入所療養介護（介護医療院）", V),
    ("43", "居宅介護支援", V),
    ("46", "介護予防支援", V),
    ("62", "介護予防訪問入浴介護", V),
    ("63", "介護予防訪問看護", V),
    ("64", "介護予防訪問リハビリテーション", V),
    ("66", "介護予防通所リハビリテーション", V),
    ("68", "小規模多機能型居宅介護（短期利用）", V),
    ("69", "介護予防小規模多機能型居宅介護（短期利用）", V),
    ("71", "夜間対応型訪問介護", V),
    ("72", "認知症対応型通所介護", V),
    ("73", "小規模多機能型居宅介護", V),
    ("74", "介護予防認知症対応型通所介護", V),
    ("75", "介護予防小規模多機能型居宅介護", V),
    ("76", "定期巡回・随時対応型訪問介護看護", V),
    ("77", "看護小規模多機能型居宅介護", V),
    ("78", "地域密着型通所介護", V),
    ("79", "看護小規模多機能型居宅介護（短期利用）", V),
    ("A1", "訪問型サービス（みなし）", V),
    ("A2", "訪問型サービス（独自）", V),
    ("A5", "通所型サービス（みなし）", V),
    ("A6", "通所型サービス（独自）", V),
    ("27", "特定施設入居者生活介護（短期利用）", R),
    ("28", "地域密着型特定施設入居者生活介護（短期利用）", R),
    ("32", "認知症対応型共同生活介護", R),
    ("33", "特定施設入居者生活介護", R),
    ("35", "介護予防特定施設入居者生活介護", R),
    ("36", "地域密着型特定施設入居者生活介護", R),
    ("37", "介護予防認知症対応型共同生活介護", R),
    ("38", "認知症対応型共同生活介護（短期利用）", R),
    ("39", "介護予防認知症対応型共同生活介護（短期利用）", R),
    ("51", "介護福祉施設サービス", R),
    ("52", "介護保健施設サービス", R),
    ("53", "介護療養施設サービス", R),
    ("54", "地域密着型介護老人福祉施設入所者生活介護", R),
    ("55", "介護医療院サービス", R),
    ("17", "福祉用具貸与", O),
    ("67", "介護予防福祉用具貸与", O),
    ("31", "居宅療養管理指導", O),
    ("34", "介護予防居宅療養管理指導", O),
    ("41", "特定福祉用具販売", O),
    ("44", "特定介護予防福祉用具販売", O),
];

/// The subsidy category of a service type, when the table knows it.
pub fn category_of(code: &ServiceTypeCode) -> Option<SubsidyCategory> {
    SERVICE_TYPE_CATEGORIES
        .iter()
        .find(|(table_code, _, _)| *table_code == code.as_str())
        .map(|(_, _, category)| *category)
}

/// The rules of one fiscal year's subsidy, passed in by the engine so that
/// a later year is configuration, not code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsidyPolicy {
    /// First day applications are accepted.
    pub window_from: NaiveDate,
    /// Last day applications are accepted.
    pub window_until: NaiveDate,
    /// From this day, notice is due by the end of the application month
    /// and payment by the end of the next (the closing month's rule).
    pub closing_month_from: NaiveDate,
    /// The medical institutions' opinion-sending subsidy limit; `None` when
    /// not configured (the seed gives no amount).
    pub medical_institution_limit: Option<Yen>,
}

impl SubsidyPolicy {
    /// FY2025 **[seed]**: 2025-10-17 to 2026-03-13, closing month from
    /// 2026-03-01, no medical amount configured.
    pub const FY2025: SubsidyPolicy = SubsidyPolicy {
        window_from: NaiveDate::from_ymd_opt(2025, 10, 17).unwrap(),
        window_until: NaiveDate::from_ymd_opt(2026, 3, 13).unwrap(),
        closing_month_from: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        medical_institution_limit: None,
    };

    /// When the notice and the payment are due for an application on
    /// `applied_on`: the month after it and the month after that; in the
    /// closing month, the end of that month and the end of the next.
    pub fn due_dates(&self, applied_on: NaiveDate) -> (NaiveDate, NaiveDate) {
        if applied_on >= self.closing_month_from {
            (month_end(applied_on), month_end_after(applied_on, 1))
        } else {
            (
                month_end_after(applied_on, 1),
                month_end_after(applied_on, 2),
            )
        }
    }
}

/// A designation notice (指定通知書) for one service type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DesignationNotice {
    /// The service type it shows.
    pub service_type: ServiceTypeCode,
    /// The scanned notice.
    pub document: DocumentRef,
}

/// Who applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SubsidyApplicant {
    /// A care office (incl. みなし介護事業所): card readers and connection support.
    CareOffice {
        /// The office.
        office: OfficeNumber,
        /// Its service types.
        service_types: Vec<ServiceTypeCode>,
        /// One designation notice per service type.
        designation_notices: Vec<DesignationNotice>,
    },
    /// A medical institution: electronic sending of the doctor's opinion.
    MedicalInstitution {
        /// The institution.
        institution: MedicalInstitutionCode,
        /// The document showing bed counts.
        bed_count_document: Option<DocumentRef>,
    },
}

/// What a receipt line pays for, as stated on the receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ReceiptPurpose {
    /// カードリーダー × count.
    CardReaders {
        /// How many readers.
        count: u32,
    },
    /// 設定費用 / 接続サポート: connection support (client certificate setup, etc.).
    ConnectionSupport,
    /// 主治医意見書の電子的送信機能の追加 (medical institutions).
    OpinionSending,
}

/// One line of a receipt, tax included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReceiptLine {
    /// The stated purpose; `None` when missing or unclear (not paid).
    pub purpose: Option<ReceiptPurpose>,
    /// The amount, tax included.
    pub amount: Yen,
    /// The scanned receipt.
    pub receipt: DocumentRef,
}

/// How the payable amount was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsidyCalculation {
    /// The sum of the limits of the applicant's service types.
    pub limit: Yen,
    /// The most readers paid for.
    pub reader_cap: u32,
    /// The readers on the receipts.
    pub readers_on_receipts: u32,
    /// Reader cost counted (pro-rated by cap / count beyond the cap).
    pub eligible_readers: Yen,
    /// Other eligible cost (connection support, opinion sending).
    pub eligible_other: Yen,
    /// Cost not counted: lines without a purpose, purposes not covered for
    /// this applicant, readers beyond the cap.
    pub excluded: Yen,
    /// min(limit, eligible readers + other).
    pub payable: Yen,
}

/// The calculator **[ours]**: the limit is summed over the applicant's
/// service types; reader lines count at most the reader cap, pro-rated by
/// cap / count (cheapest-first is not assumed); lines without a purpose and
/// purposes the applicant is not subsidised for are excluded.
pub fn calculate(
    applicant: &SubsidyApplicant,
    lines: &[ReceiptLine],
    policy: &SubsidyPolicy,
) -> SubsidyCalculation {
    let (limit, reader_cap) = match applicant {
        SubsidyApplicant::CareOffice { service_types, .. } => service_types
            .iter()
            .filter_map(category_of)
            .fold((Yen::ZERO, 0), |(limit, cap), category| {
                (
                    limit.checked_add(category.limit()).expect("a few limits"),
                    cap + category.reader_cap(),
                )
            }),
        SubsidyApplicant::MedicalInstitution { .. } => {
            (policy.medical_institution_limit.unwrap_or(Yen::ZERO), 0)
        }
    };
    let medical = matches!(applicant, SubsidyApplicant::MedicalInstitution { .. });
    let sum = |keep: &dyn Fn(&ReceiptLine) -> bool| {
        lines
            .iter()
            .filter(|line| keep(line))
            .fold(Yen::ZERO, |total, line| {
                total.checked_add(line.amount).unwrap_or(Yen::new(u64::MAX))
            })
    };
    let readers_on_receipts = readers_on(lines);
    let reader_cost = if medical {
        Yen::ZERO
    } else {
        sum(&|line| matches!(line.purpose, Some(ReceiptPurpose::CardReaders { .. })))
    };
    let eligible_readers = if readers_on_receipts <= reader_cap {
        reader_cost
    } else {
        reader_cost
            .pro_rata(u64::from(reader_cap), u64::from(readers_on_receipts))
            .expect("the count is not zero when above the cap")
    };
    let eligible_other = sum(&|line| match line.purpose {
        Some(ReceiptPurpose::ConnectionSupport) => true,
        Some(ReceiptPurpose::OpinionSending) => medical,
        _ => false,
    });
    let eligible = eligible_readers
        .checked_add(eligible_other)
        .unwrap_or(Yen::new(u64::MAX));
    let total = sum(&|_| true);
    SubsidyCalculation {
        limit,
        reader_cap,
        readers_on_receipts,
        eligible_readers,
        eligible_other,
        excluded: total.saturating_sub(eligible),
        payable: eligible.min(limit),
    }
}

/// The readers on the receipt lines (saturating: a count beyond `u32` is
/// refused as a mismatch or pro-rated to nothing, never wrapped).
fn readers_on(lines: &[ReceiptLine]) -> u32 {
    lines
        .iter()
        .filter_map(|line| match line.purpose {
            Some(ReceiptPurpose::CardReaders { count }) => Some(count),
            _ => None,
        })
        .fold(0, u32::saturating_add)
}

/// Why an application was closed without payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBecause {
    /// A deficiency was found; the office must apply again.
    Deficiency,
}

domain_events! {
    /// What happens to a subsidy application.
    pub enum SubsidyEvent {
        /// The subsidy was applied for (助成金申請).
        SubsidyApplied = "subsidy.applied", v 1, by [Office, MedicalInstitution],
            label "補助金 申請" / "Subsidy applied for" {
            /// Who applies, with service types and designation notices, or bed-count document.
            applicant: SubsidyApplicant,
            /// The application date.
            applied_on: NaiveDate,
            /// The card readers bought.
            reader_count: u32,
            /// The receipt lines, tax included.
            receipt_lines: Vec<ReceiptLine>,
            /// The bank passbook or cash card copy.
            passbook: DocumentRef,
            /// The fiscal year's rules the application falls under.
            policy: SubsidyPolicy,
            /// When the review and notice are due.
            notice_due_by: NaiveDate,
            /// When the payment is due.
            payment_due_by: NaiveDate,
        }
        /// The federation started the review (審査).
        ReviewStarted = "subsidy.review_started", v 1, by [Federation],
            label "補助金 審査開始" / "Subsidy review started" {
            /// The day it started.
            started_on: NaiveDate,
        }
        /// The review found a deficiency (不備).
        DeficiencyFound = "subsidy.deficiency_found", v 1, by [Federation],
            label "補助金 不備" / "Subsidy deficiency found" {
            /// What is deficient.
            reason: String,
            /// The day it was found.
            found_on: NaiveDate,
        }
        /// The application was closed without payment; a re-application is a new application.
        SubsidyClosed = "subsidy.closed", v 1, by [Federation],
            label "補助金 終了" / "Subsidy closed" {
            /// Why.
            because: ClosedBecause,
            /// The day it closed.
            closed_on: NaiveDate,
        }
        /// The subsidy was decided and notified (決定通知).
        SubsidyDecided = "subsidy.decided", v 1, by [Federation],
            label "補助金 交付決定" / "Subsidy decided" {
            /// How the amount was reached.
            calculation: SubsidyCalculation,
            /// The amount to pay.
            payable: Yen,
            /// The day of the decision.
            decided_on: NaiveDate,
            /// Whether it came after the notice was due.
            after_notice_due: bool,
        }
        /// The subsidy was paid (振込).
        SubsidyPaid = "subsidy.paid", v 1, by [Federation],
            label "補助金 支払" / "Subsidy paid" {
            /// The amount paid.
            amount: Yen,
            /// The day of payment.
            paid_on: NaiveDate,
            /// Whether it came after the payment was due.
            after_payment_due: bool,
        }
        /// The notice was due and neither a decision nor a closing came by then (a timer's record, once).
        NoticeOverdue = "subsidy.notice_overdue", v 1, by [System],
            label "補助金 通知遅延" / "Subsidy notice overdue" {
            /// The due date that passed.
            notice_due_by: NaiveDate,
            /// The day the timer recorded it.
            recorded_on: NaiveDate,
        }
        /// The payment was due and did not come by then (a timer's record, once).
        PaymentOverdue = "subsidy.payment_overdue", v 1, by [System],
            label "補助金 支払遅延" / "Subsidy payment overdue" {
            /// The due date that passed.
            payment_due_by: NaiveDate,
            /// The day the timer recorded it.
            recorded_on: NaiveDate,
        }
    }
}

/// What may be asked of a subsidy application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubsidyCommand {
    /// Apply; the application date is today.
    Apply {
        /// Who applies.
        applicant: SubsidyApplicant,
        /// The card readers bought.
        reader_count: u32,
        /// The receipt lines.
        receipt_lines: Vec<ReceiptLine>,
        /// The bank passbook or cash card copy.
        passbook: DocumentRef,
        /// The fiscal year's rules.
        policy: SubsidyPolicy,
    },
    /// Start the review.
    StartReview,
    /// Record a deficiency; closes the application.
    FindDeficiency {
        /// What is deficient.
        reason: String,
    },
    /// Decide the amount by the rules.
    Decide,
    /// Record the payment.
    Pay {
        /// The amount paid; must be the decided one.
        amount: Yen,
    },
    /// Record that the notice is overdue (sent by a timer).
    RecordNoticeOverdue,
    /// Record that the payment is overdue (sent by a timer).
    RecordPaymentOverdue,
}

/// Where the application stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubsidyStatus {
    /// Nothing applied.
    #[default]
    NotApplied,
    /// Applied, not yet in review.
    Applied,
    /// In review.
    UnderReview,
    /// Closed for a deficiency.
    Closed,
    /// Decided, not yet paid.
    Decided,
    /// Paid.
    Paid,
}

/// The folded state of one subsidy application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubsidyState {
    /// Where it stands.
    pub status: SubsidyStatus,
    /// The application.
    pub application: Option<SubsidyApplied>,
    /// The decision.
    pub decision: Option<SubsidyDecided>,
    /// Whether the notice's passing its due date is recorded.
    pub notice_overdue_recorded: bool,
    /// Whether the payment's passing its due date is recorded.
    pub payment_overdue_recorded: bool,
}

impl SubsidyState {
    /// Whether the notice is overdue on `today`.
    pub fn notice_overdue(&self, today: NaiveDate) -> bool {
        matches!(
            self.status,
            SubsidyStatus::Applied | SubsidyStatus::UnderReview
        ) && self
            .application
            .as_ref()
            .is_some_and(|a| today > a.notice_due_by)
    }

    /// Whether the payment is overdue on `today`.
    pub fn payment_overdue(&self, today: NaiveDate) -> bool {
        !matches!(
            self.status,
            SubsidyStatus::NotApplied | SubsidyStatus::Closed | SubsidyStatus::Paid
        ) && self
            .application
            .as_ref()
            .is_some_and(|a| today > a.payment_due_by)
    }
}

/// The subsidy application decider.
#[derive(Debug, Clone, Copy)]
pub struct SubsidyApplication;

impl Decider for SubsidyApplication {
    type State = SubsidyState;
    type Command = SubsidyCommand;
    type Event = SubsidyEvent;

    fn decide(
        state: &SubsidyState,
        command: &SubsidyCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubsidyEvent>, Rejection> {
        let today = jst_date(now);
        if let SubsidyCommand::Apply { .. } = command {
            return apply(state, command, today);
        }
        let application = state.application.as_ref().ok_or_else(|| {
            rejection!(
                SubsidyNotApplied,
                "No subsidy application on record.",
                "助成金の申請がありません。"
            )
        })?;
        reject_if!(
            matches!(state.status, SubsidyStatus::Closed | SubsidyStatus::Paid),
            SubsidyClosed,
            "The application is closed or paid; a re-application is a new application.",
            "この申請は終了または支払済みです。再申請は新しい申請として行ってください。"
        );
        use SubsidyStatus as S;
        match command {
            SubsidyCommand::Apply { .. } => unreachable!("handled above"),
            SubsidyCommand::StartReview => {
                reject_if!(
                    state.status != S::Applied,
                    ReviewAlreadyStarted,
                    "The review has already started.",
                    "審査は既に開始されています。"
                );
                Ok(vec![ReviewStarted { started_on: today }.into()])
            }
            SubsidyCommand::FindDeficiency { reason } => {
                in_review(state)?;
                reason_given(reason, "A deficiency", "不備")?;
                Ok(vec![
                    DeficiencyFound {
                        reason: reason.clone(),
                        found_on: today,
                    }
                    .into(),
                    SubsidyClosed {
                        because: ClosedBecause::Deficiency,
                        closed_on: today,
                    }
                    .into(),
                ])
            }
            SubsidyCommand::Decide => {
                in_review(state)?;
                let calculation = calculate(
                    &application.applicant,
                    &application.receipt_lines,
                    &application.policy,
                );
                Ok(vec![
                    SubsidyDecided {
                        calculation,
                        payable: calculation.payable,
                        decided_on: today,
                        after_notice_due: today > application.notice_due_by,
                    }
                    .into(),
                ])
            }
            SubsidyCommand::Pay { amount } => pay(state, application, *amount, today),
            SubsidyCommand::RecordNoticeOverdue | SubsidyCommand::RecordPaymentOverdue => {
                overdue(state, application, command, today)
            }
        }
    }

    fn evolve(mut state: SubsidyState, event: &SubsidyEvent) -> SubsidyState {
        match event {
            SubsidyEvent::SubsidyApplied(e) => {
                state.status = SubsidyStatus::Applied;
                state.application = Some(e.clone());
            }
            SubsidyEvent::ReviewStarted(_) => state.status = SubsidyStatus::UnderReview,
            SubsidyEvent::DeficiencyFound(_) => {}
            SubsidyEvent::SubsidyClosed(_) => state.status = SubsidyStatus::Closed,
            SubsidyEvent::SubsidyDecided(e) => {
                state.status = SubsidyStatus::Decided;
                state.decision = Some(e.clone());
            }
            SubsidyEvent::SubsidyPaid(_) => state.status = SubsidyStatus::Paid,
            SubsidyEvent::NoticeOverdue(_) => state.notice_overdue_recorded = true,
            SubsidyEvent::PaymentOverdue(_) => state.payment_overdue_recorded = true,
        }
        state
    }
}

/// A timer's record that the notice or the payment passed its due date
/// without happening, once each. A closed or paid application was already
/// refused above.
fn overdue(
    state: &SubsidyState,
    application: &SubsidyApplied,
    command: &SubsidyCommand,
    today: NaiveDate,
) -> Result<Vec<SubsidyEvent>, Rejection> {
    let (what, what_ja, due_by, recorded, passed) = match command {
        SubsidyCommand::RecordNoticeOverdue => {
            reject_if!(
                state.decision.is_some(),
                SubsidyAlreadyDecided,
                "The subsidy is already decided; its notice is not overdue.",
                "助成金は既に決定されているため、通知の遅延はありません。"
            );
            (
                "notice",
                "決定通知",
                application.notice_due_by,
                state.notice_overdue_recorded,
                state.notice_overdue(today),
            )
        }
        SubsidyCommand::RecordPaymentOverdue => (
            "payment",
            "支払",
            application.payment_due_by,
            state.payment_overdue_recorded,
            state.payment_overdue(today),
        ),
        _ => unreachable!("called for the overdue records only"),
    };
    reject_if!(
        recorded,
        DeadlineAlreadyRecorded,
        format!("The {what} being overdue since {due_by} is already recorded."),
        format!("{what_ja}の期限 {due_by} の経過は記録済みです。")
    );
    reject_if!(
        !passed,
        DeadlineNotReached,
        format!("The {what} is due by {due_by}; that day has not passed yet (today is {today})."),
        format!("{what_ja}の期限 {due_by} はまだ過ぎていません（本日 {today}）。")
    );
    Ok(vec![match command {
        SubsidyCommand::RecordNoticeOverdue => NoticeOverdue {
            notice_due_by: due_by,
            recorded_on: today,
        }
        .into(),
        _ => PaymentOverdue {
            payment_due_by: due_by,
            recorded_on: today,
        }
        .into(),
    }])
}

/// The payment is exactly the decided amount, once.
fn pay(
    state: &SubsidyState,
    application: &SubsidyApplied,
    amount: Yen,
    today: NaiveDate,
) -> Result<Vec<SubsidyEvent>, Rejection> {
    let decision = state.decision.as_ref().ok_or_else(|| {
        rejection!(
            SubsidyNotDecided,
            "The subsidy can be paid only after it is decided.",
            "助成金は交付決定の後に支払われます。"
        )
    })?;
    reject_if!(
        decision.payable == Yen::ZERO,
        NothingToPay,
        "The decided amount is zero yen; there is nothing to pay.",
        "決定額が0円のため支払はありません。"
    );
    reject_if!(
        amount != decision.payable,
        AmountDiffersFromDecision,
        format!(
            "The amount paid must be the decided {}, not {amount}.",
            decision.payable
        ),
        format!(
            "支払額は決定額 {} でなければなりません（{amount}）。",
            decision.payable
        )
    );
    Ok(vec![
        SubsidyPaid {
            amount,
            paid_on: today,
            after_payment_due: today > application.payment_due_by,
        }
        .into(),
    ])
}

fn in_review(state: &SubsidyState) -> Result<(), Rejection> {
    reject_if!(
        state.status == SubsidyStatus::Decided,
        SubsidyAlreadyDecided,
        "The subsidy is already decided.",
        "助成金は既に決定されています。"
    );
    reject_if!(
        state.status != SubsidyStatus::UnderReview,
        ReviewNotStarted,
        "The review has not started.",
        "審査が開始されていません。"
    );
    Ok(())
}

fn apply(
    state: &SubsidyState,
    command: &SubsidyCommand,
    today: NaiveDate,
) -> Result<Vec<SubsidyEvent>, Rejection> {
    let SubsidyCommand::Apply {
        applicant,
        reader_count,
        receipt_lines,
        passbook,
        policy,
    } = command
    else {
        unreachable!("called for Apply only")
    };
    reject_if!(
        state.status != SubsidyStatus::NotApplied,
        SubsidyAlreadyApplied,
        "This subsidy application has already been made.",
        "この助成金申請は受付済みです。"
    );
    reject_if!(
        today < policy.window_from || today > policy.window_until,
        OutsideApplicationWindow,
        format!(
            "Applications are accepted from {} to {}; today is {today}.",
            policy.window_from, policy.window_until
        ),
        format!(
            "申請受付期間は {} から {} までです（本日 {today}）。",
            policy.window_from, policy.window_until
        )
    );
    list_within_limit(receipt_lines.len(), "receipt lines")?;
    check_applicant(applicant, policy)?;
    reject_if!(
        receipt_lines.is_empty(),
        ReceiptsMissing,
        "At least one receipt is needed.",
        "領収書が必要です。"
    );
    let readers = readers_on(receipt_lines);
    reject_if!(
        readers != *reader_count,
        ReaderCountMismatch,
        format!("{reader_count} readers were declared but the receipts show {readers}."),
        format!("申請台数 {reader_count} 台と領収書の台数 {readers} 台が一致しません。")
    );
    let (notice_due_by, payment_due_by) = policy.due_dates(today);
    Ok(vec![
        SubsidyApplied {
            applicant: applicant.clone(),
            applied_on: today,
            reader_count: *reader_count,
            receipt_lines: receipt_lines.clone(),
            passbook: passbook.clone(),
            policy: *policy,
            notice_due_by,
            payment_due_by,
        }
        .into(),
    ])
}

fn check_applicant(applicant: &SubsidyApplicant, policy: &SubsidyPolicy) -> Result<(), Rejection> {
    match applicant {
        SubsidyApplicant::CareOffice {
            service_types,
            designation_notices,
            ..
        } => {
            reject_if!(
                service_types.is_empty(),
                ServiceTypesMissing,
                "At least one service type is needed.",
                "サービス種類が少なくとも一つ必要です。"
            );
            list_within_limit(service_types.len(), "service types")?;
            list_within_limit(designation_notices.len(), "designation notices")?;
            for (i, code) in service_types.iter().enumerate() {
                reject_if!(
                    service_types[..i].contains(code),
                    ServiceTypeDuplicated,
                    format!("Service type {code} is listed twice."),
                    format!("サービス種類 {code} が重複しています。")
                );
                reject_if!(
                    category_of(code).is_none(),
                    ServiceTypeUnknown,
                    format!("Service type {code} has no subsidy category."),
                    format!("サービス種類 {code} は助成対象の種別に該当しません。")
                );
                reject_if!(
                    !designation_notices.iter().any(|n| &n.service_type == code),
                    DesignationNoticeMissing,
                    format!("A designation notice showing service type {code} is needed."),
                    format!("サービス種類 {code} が確認できる指定通知書等が必要です。")
                );
            }
        }
        SubsidyApplicant::MedicalInstitution {
            bed_count_document, ..
        } => {
            reject_if!(
                policy.medical_institution_limit.is_none(),
                MedicalSubsidyNotConfigured,
                "The medical institutions' subsidy amount is not configured for this fiscal year.",
                "今年度の医療機関向け助成額が設定されていません。"
            );
            reject_if!(
                bed_count_document.is_none(),
                BedCountDocumentMissing,
                "A document showing the bed counts is needed.",
                "病床数が確認できる資料が必要です。"
            );
        }
    }
    Ok(())
}
