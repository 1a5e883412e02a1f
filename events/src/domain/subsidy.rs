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
    Decider, DocumentRef, Rejection, ServiceTypeCode, Sha256Digest, Yen, jst_date,
    list_within_limit, reason_given,
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
    ("A3", "訪問型サービス（独自／定率）", V),
    ("A4", "訪問型サービス（独自／定額）", V),
    ("A5", "通所型サービス（みなし）", V),
    ("A6", "通所型サービス（独自）", V),
    ("A7", "通所型サービス（独自／定率）", V),
    ("A8", "通所型サービス（独自／定額）", V),
    ("AF", "介護予防ケアマネジメント", V),
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

/// Service types that are billing variants or 要支援 counterparts of one
/// service, and the service they count as **[ours]**, documented in
/// `docs/domain.md`: a limit is added once per service, not once per code.
/// 短期利用 codes are the same designation billed for a short stay
/// (認知症対応型共同生活介護's 38/39 with 32, 小規模多機能's 68/69 with 73,
/// 看護小規模多機能's 79 with 77, 特定施設's 27 with 33 and 28 with 36);
/// 介護予防 codes and the 総合事業 (第1号事業) codes are the same kind of
/// service for 要支援 persons, run with the same staff and terminals.
/// 地域密着型通所介護 (78) is 通所介護 for 18 users or fewer.
/// A code not listed here is a service of its own.
pub const SERVICE_GROUPS: &[(&str, &str)] = &[
    // 短期利用 (short-term use) of the same designation.
    ("27", "33"),
    ("28", "36"),
    ("38", "32"),
    ("39", "32"),
    ("68", "73"),
    ("69", "73"),
    ("79", "77"),
    // 介護予防 counterparts.
    ("24", "21"),
    ("25", "22"),
    ("26", "23"),
    ("2B", "2A"),
    ("34", "31"),
    ("35", "33"),
    ("37", "32"),
    ("44", "41"),
    ("46", "43"),
    ("62", "12"),
    ("63", "13"),
    ("64", "14"),
    ("66", "16"),
    ("67", "17"),
    ("74", "72"),
    ("75", "73"),
    // 総合事業: 訪問型 (the former 介護予防訪問介護) and 通所型 (the former
    // 介護予防通所介護) services, 介護予防ケアマネジメント.
    ("A1", "11"),
    ("A2", "11"),
    ("A3", "11"),
    ("A4", "11"),
    ("A5", "15"),
    ("A6", "15"),
    ("A7", "15"),
    ("A8", "15"),
    ("AF", "43"),
    ("78", "15"),
];

/// The service a service type counts as for the limit: the code itself
/// unless [`SERVICE_GROUPS`] names another.
pub fn service_of(code: &ServiceTypeCode) -> &str {
    SERVICE_GROUPS
        .iter()
        .find(|(variant, _)| *variant == code.as_str())
        .map_or(code.as_str(), |(_, service)| service)
}

/// The limit and the reader cap of a set of service types: each distinct
/// service ([`service_of`]) adds its category's limit and readers once.
pub fn limit_of_services(service_types: &[ServiceTypeCode]) -> (Yen, u32) {
    let mut services: Vec<&str> = Vec::new();
    let mut limit = Yen::ZERO;
    let mut cap = 0u32;
    for code in service_types {
        let Some(category) = category_of(code) else {
            continue;
        };
        let service = service_of(code);
        if services.contains(&service) {
            continue;
        }
        services.push(service);
        limit = limit.checked_add(category.limit()).expect("a few limits");
        cap = cap.saturating_add(category.reader_cap());
    }
    (limit, cap)
}

/// Where an earlier application of the same applicant stands, as far as a
/// later one is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "standing", rename_all = "snake_case")]
pub enum EarlierStanding {
    /// Applied or under review: its amount is not known yet.
    Pending,
    /// Closed for a deficiency: it uses nothing and its receipts may be
    /// claimed again (the re-application).
    ClosedForDeficiency,
    /// Decided (paid or not, a zero decision included): it uses its amount
    /// and its readers.
    Decided {
        /// The amount decided.
        payable: Yen,
        /// The readers it pays for.
        readers: u32,
    },
}

/// An earlier application of the same office (or medical institution),
/// looked up by the caller from its stream ([`SubsidyState::as_earlier`]):
/// the per-office limit, reader cap and receipts are judged against these
/// **[ours, from the seed's 助成限度額 per 同一事業所]**.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlierApplication {
    /// Where it stands.
    pub standing: EarlierStanding,
    /// The first day of its policy's window (the limit is per window).
    pub window_from: NaiveDate,
    /// Its receipts (each document once).
    pub receipts: Vec<Sha256Digest>,
}

impl EarlierApplication {
    /// Whether its receipts are taken: anything but a deficiency closing.
    fn claims_receipts(&self) -> bool {
        self.standing != EarlierStanding::ClosedForDeficiency
    }
}

/// What the caller looks up about the applicant for an application: the
/// office's registered service types (the office aggregate; empty for a
/// medical institution) and its earlier applications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicantRecord {
    /// The service types the office is registered with.
    pub registered_service_types: Vec<ServiceTypeCode>,
    /// The applicant's earlier applications (lower sequence numbers).
    pub earlier: Vec<EarlierApplication>,
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
    /// this applicant, readers beyond the cap, receipts already claimed.
    pub excluded: Yen,
    /// min(limit − earlier, eligible readers + other).
    pub payable: Yen,
    /// The part of the limit the applicant's earlier decided applications
    /// in the same window used (absent in decisions recorded before it was
    /// judged: zero).
    #[serde(default)]
    pub earlier_payable: Yen,
    /// The readers the earlier decided applications paid for.
    #[serde(default)]
    pub earlier_readers: u32,
    /// Cost on receipts an earlier application already claimed (part of
    /// `excluded`).
    #[serde(default)]
    pub already_claimed: Yen,
    /// The readers this decision pays for (absent in decisions recorded
    /// before it was recorded).
    #[serde(default)]
    pub readers_paid: Option<u32>,
}

/// The calculator **[ours]** for a first application: see [`calculate_after`].
pub fn calculate(
    applicant: &SubsidyApplicant,
    lines: &[ReceiptLine],
    policy: &SubsidyPolicy,
) -> SubsidyCalculation {
    calculate_after(applicant, lines, policy, &[])
}

/// The calculator **[ours]**: the limit is summed over the applicant's
/// services ([`limit_of_services`]), less what its earlier decided
/// applications in the same window used; reader lines count at most the
/// reader cap left, pro-rated by cap / count (cheapest-first is not
/// assumed); lines without a purpose, reader lines with no count, purposes
/// the applicant is not subsidised for and receipts an earlier application
/// claimed are excluded.
pub fn calculate_after(
    applicant: &SubsidyApplicant,
    lines: &[ReceiptLine],
    policy: &SubsidyPolicy,
    earlier: &[EarlierApplication],
) -> SubsidyCalculation {
    let (limit, reader_cap) = match applicant {
        SubsidyApplicant::CareOffice { service_types, .. } => limit_of_services(service_types),
        SubsidyApplicant::MedicalInstitution { .. } => {
            (policy.medical_institution_limit.unwrap_or(Yen::ZERO), 0)
        }
    };
    let (earlier_payable, earlier_readers) = earlier
        .iter()
        .filter(|e| e.window_from == policy.window_from)
        .filter_map(|e| match e.standing {
            EarlierStanding::Decided { payable, readers } => Some((payable, readers)),
            _ => None,
        })
        .fold((Yen::ZERO, 0u32), |(paid, readers), (payable, more)| {
            (
                paid.checked_add(payable).unwrap_or(Yen::new(u64::MAX)),
                readers.saturating_add(more),
            )
        });
    let claimed = |line: &ReceiptLine| {
        earlier
            .iter()
            .any(|e| e.claims_receipts() && e.receipts.contains(line.receipt.sha256()))
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
    let counted_reader_line = |line: &ReceiptLine| {
        !medical
            && !claimed(line)
            && matches!(line.purpose, Some(ReceiptPurpose::CardReaders { count }) if count > 0)
    };
    let readers_on_receipts = readers_on(lines);
    let readers_counted = lines
        .iter()
        .filter(|line| counted_reader_line(line))
        .filter_map(|line| match line.purpose {
            Some(ReceiptPurpose::CardReaders { count }) => Some(count),
            _ => None,
        })
        .fold(0, u32::saturating_add);
    let reader_cost = sum(&counted_reader_line);
    let cap_left = reader_cap.saturating_sub(earlier_readers);
    let eligible_readers = if readers_counted <= cap_left {
        reader_cost
    } else {
        reader_cost
            .pro_rata(u64::from(cap_left), u64::from(readers_counted))
            .expect("the count is not zero when above the cap")
    };
    let eligible_other = sum(&|line| {
        !claimed(line)
            && match line.purpose {
                Some(ReceiptPurpose::ConnectionSupport) => true,
                Some(ReceiptPurpose::OpinionSending) => medical,
                _ => false,
            }
    });
    let eligible = eligible_readers
        .checked_add(eligible_other)
        .unwrap_or(Yen::new(u64::MAX));
    let total = sum(&|_| true);
    let payable = eligible.min(limit.saturating_sub(earlier_payable));
    SubsidyCalculation {
        limit,
        reader_cap,
        readers_on_receipts,
        eligible_readers,
        eligible_other,
        excluded: total.saturating_sub(eligible),
        payable,
        earlier_payable,
        earlier_readers,
        already_claimed: sum(&claimed),
        readers_paid: Some(if payable == Yen::ZERO {
            0
        } else {
            readers_counted.min(cap_left)
        }),
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
    /// The decided amount is zero: nothing is due, so the decision closes
    /// the application (no payment, no payment deadline).
    NothingPayable,
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
// `Apply` carries the whole application and is built once per request; a
// box would only move the allocation.
#[allow(clippy::large_enum_variant)]
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
        /// The office's registered service types and the applicant's
        /// earlier applications, looked up.
        record: ApplicantRecord,
    },
    /// Start the review.
    StartReview,
    /// Record a deficiency; closes the application.
    FindDeficiency {
        /// What is deficient.
        reason: String,
    },
    /// Decide the amount by the rules.
    Decide {
        /// The applicant's earlier applications (lower sequence numbers),
        /// looked up: the limit, the reader cap and the receipts are the
        /// office's across them.
        earlier: Vec<EarlierApplication>,
        /// The medical institutions' amount as configured now, for an
        /// application made while none was configured (its recorded policy
        /// has none).
        medical_institution_limit: Option<Yen>,
    },
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
    /// Closed: for a deficiency, or decided at zero yen.
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
    /// Why it was closed, when it was.
    pub closed_because: Option<ClosedBecause>,
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

    /// Whether the payment is overdue on `today`. A zero decision has no
    /// payment due (also one recorded before zero decisions closed the
    /// application).
    pub fn payment_overdue(&self, today: NaiveDate) -> bool {
        let open = !matches!(
            self.status,
            SubsidyStatus::NotApplied | SubsidyStatus::Closed | SubsidyStatus::Paid
        );
        let nothing_due = self
            .decision
            .as_ref()
            .is_some_and(|d| d.payable == Yen::ZERO);
        open && !nothing_due
            && self
                .application
                .as_ref()
                .is_some_and(|a| today > a.payment_due_by)
    }

    /// What a later application of the same applicant needs to know of
    /// this one; `None` when nothing was applied on the stream.
    pub fn as_earlier(&self) -> Option<EarlierApplication> {
        let application = self.application.as_ref()?;
        let standing = match (&self.decision, self.closed_because) {
            (Some(decision), _) => EarlierStanding::Decided {
                payable: decision.payable,
                readers: decision.calculation.readers_paid.unwrap_or_else(|| {
                    if decision.payable == Yen::ZERO {
                        0
                    } else {
                        decision
                            .calculation
                            .readers_on_receipts
                            .min(decision.calculation.reader_cap)
                    }
                }),
            },
            (None, Some(_)) => EarlierStanding::ClosedForDeficiency,
            (None, None) => EarlierStanding::Pending,
        };
        let mut receipts: Vec<Sha256Digest> = Vec::new();
        for line in &application.receipt_lines {
            if !receipts.contains(line.receipt.sha256()) {
                receipts.push(line.receipt.sha256().clone());
            }
        }
        Some(EarlierApplication {
            standing,
            window_from: application.policy.window_from,
            receipts,
        })
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
            SubsidyCommand::Decide {
                earlier,
                medical_institution_limit,
            } => decide(
                state,
                application,
                earlier,
                *medical_institution_limit,
                today,
            ),
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
            SubsidyEvent::SubsidyClosed(e) => {
                state.status = SubsidyStatus::Closed;
                state.closed_because = Some(e.because);
            }
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

/// The decision, judged against the applicant's earlier applications: they
/// are decided in order (an earlier one still pending in the same window
/// is refused), and a zero decision closes the application.
fn decide(
    state: &SubsidyState,
    application: &SubsidyApplied,
    earlier: &[EarlierApplication],
    medical_institution_limit: Option<Yen>,
    today: NaiveDate,
) -> Result<Vec<SubsidyEvent>, Rejection> {
    in_review(state)?;
    let policy = SubsidyPolicy {
        medical_institution_limit: application
            .policy
            .medical_institution_limit
            .or(medical_institution_limit),
        ..application.policy
    };
    reject_if!(
        matches!(
            application.applicant,
            SubsidyApplicant::MedicalInstitution { .. }
        ) && policy.medical_institution_limit.is_none(),
        MedicalSubsidyNotConfigured,
        "The medical institutions' subsidy amount is not configured yet; the application waits for it.",
        "医療機関向けの助成額がまだ設定されていません。設定後に決定してください。"
    );
    list_within_limit(earlier.len(), "earlier applications")?;
    reject_if!(
        earlier
            .iter()
            .any(|e| e.standing == EarlierStanding::Pending
                && e.window_from == application.policy.window_from),
        EarlierApplicationUndecided,
        "An earlier application of this applicant is not decided yet; decide it (or close it) first.",
        "この申請者の先の申請が未決定です。先の申請を先に決定（または終了）してください。"
    );
    let calculation = calculate_after(
        &application.applicant,
        &application.receipt_lines,
        &policy,
        earlier,
    );
    let mut events = vec![
        SubsidyDecided {
            calculation,
            payable: calculation.payable,
            decided_on: today,
            after_notice_due: today > application.notice_due_by,
        }
        .into(),
    ];
    if calculation.payable == Yen::ZERO {
        events.push(
            SubsidyClosed {
                because: ClosedBecause::NothingPayable,
                closed_on: today,
            }
            .into(),
        );
    }
    Ok(events)
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
        record,
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
    list_within_limit(record.earlier.len(), "earlier applications")?;
    check_applicant(applicant, &record.registered_service_types)?;
    reject_if!(
        receipt_lines.is_empty(),
        ReceiptsMissing,
        "At least one receipt is needed.",
        "領収書が必要です。"
    );
    reject_if!(
        receipt_lines
            .iter()
            .any(|line| matches!(line.purpose, Some(ReceiptPurpose::CardReaders { count: 0 }))),
        ReaderLineCountZero,
        "A card-reader receipt line must state how many readers it is for.",
        "カードリーダーの領収書の明細には台数の記載が必要です。"
    );
    if let Some(line) = receipt_lines.iter().find(|line| {
        record
            .earlier
            .iter()
            .any(|e| e.claims_receipts() && e.receipts.contains(line.receipt.sha256()))
    }) {
        return Err(rejection!(
            ReceiptAlreadyClaimed,
            format!(
                "The receipt {} is already claimed by an earlier application; a receipt is paid once.",
                line.receipt.sha256()
            ),
            format!(
                "領収書 {} は先の申請で申請済みです。同じ領収書は一度しか助成されません。",
                line.receipt.sha256()
            )
        ));
    }
    let used = calculate_after(applicant, &[], policy, &record.earlier);
    reject_if!(
        used.earlier_payable > Yen::ZERO && used.earlier_payable >= used.limit,
        SubsidyLimitUsedUp,
        format!(
            "The applicant's earlier applications in this window already used the whole limit of {}.",
            used.limit
        ),
        format!(
            "今年度の先の申請で助成限度額 {} を使い切っています。",
            used.limit
        )
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

fn check_applicant(
    applicant: &SubsidyApplicant,
    registered: &[ServiceTypeCode],
) -> Result<(), Rejection> {
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
                    !registered.contains(code),
                    ServiceTypeNotRegistered,
                    format!("The office is not registered with service type {code}."),
                    format!("サービス種類 {code} は事業所の登録にありません。")
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
                bed_count_document.is_none(),
                BedCountDocumentMissing,
                "A document showing the bed counts is needed.",
                "病床数が確認できる資料が必要です。"
            );
        }
    }
    Ok(())
}
