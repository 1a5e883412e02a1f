//! The insured person (被保険者): certification, certificates, care-plan
//! office, consent, the access log and the benefit ledgers (DOMAIN.md
//! "Benefit ledgers", "Care-plan notification and consent").
//!
//! Stream: `insured/<insurer>-<insured>`. The stream name carries the
//! person's identity; payloads carry no personal data except sealed values
//! (a new address on moving house), and never the Individual Number.
//!
//! The access log (`insured.record_viewed`) lives on this stream **[ours]**:
//! a read is allowed or refused by the same state that records it (live
//! consent, registered care-plan office), so one decision checks and logs.
//!
//! Two facts here are a timer's (`kiban-engine`'s timers, emitted by the
//! system): a consent reaching its expiry (`insured.consent_expired`) and
//! the renewal window of the current certification opening 60 days before
//! its validity ends (`insured.renewal_window_opened`, once per
//! certification).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::certification::{CertificationDecided, RENEWAL_WINDOW_DAYS, ValidityPeriod};
use super::dates::{fiscal_year, is_august_first, month_end, month_start, next_july_31};
use super::event::domain_events;
use super::rejection::{reject_if, rejection};
use super::values::LevelGroup;
use super::{
    CareLevel, CopaymentRatio, CostLimitStage, Decider, EquipmentCategory, Rejection, SealedValue,
    TerminalId, Yen, jst_date, not_in_future, plausible, reason_within_limit,
};
use crate::envelope::StreamName;
use crate::ids::{InsuredNumber, InsurerNumber, OfficeNumber};

/// Home-modification cap per person (住宅改修費支給限度基準額) **[law]**.
pub const HOME_MODIFICATION_CAP: Yen = Yen::new(200_000);

/// Equipment-purchase cap per fiscal year (福祉用具購入費支給限度基準額) **[law]**.
pub const EQUIPMENT_CAP_PER_FISCAL_YEAR: Yen = Yen::new(100_000);

/// Steps of rise in care need that reset the home-modification cap once **[law]**.
pub const HOME_MODIFICATION_RISE_STEPS: u8 = 3;

/// Longest consent, in days **[ours]**: a year and a day, so a yearly
/// re-verification with the card never leaves a gap.
pub const CONSENT_DAYS_MAX: u64 = 366;

/// The first day a renewal (更新申請) of a validity ending on `valid_until`
/// can be filed **[law]**: 60 days before the end.
pub fn renewal_window_opens_on(valid_until: NaiveDate) -> NaiveDate {
    valid_until - Days::new(RENEWAL_WINDOW_DAYS)
}

/// The stream of an insured person: `insured/<insurer>-<insured>`.
pub fn insured_stream(insurer: &InsurerNumber, insured: &InsuredNumber) -> StreamName {
    StreamName::new("insured", &format!("{insurer}-{insured}"))
        .expect("numbers make a valid stream id")
}

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

domain_events! {
    /// What happens to an insured person.
    pub enum InsuredEvent {
        /// A decided certification became the person's (from `certification.decided`).
        CertificationRecorded = "insured.certification_recorded", v 1, by [Insurer, System] {
            /// The application's sequence number (its stream).
            application_seq: u32,
            /// The certified level.
            level: CareLevel,
            /// The validity period.
            validity: ValidityPeriod,
        }
        /// The renewal window of the current certification opened: from today a renewal (更新申請) can be filed, 60 days before the validity ends (a timer's record, once per certification).
        RenewalWindowOpened = "insured.renewal_window_opened", v 1, by [System] {
            /// The application whose certification it is (its sequence number).
            application_seq: u32,
            /// The last day of the certification's validity.
            valid_until: NaiveDate,
            /// The first day a renewal can be filed: 60 days before the validity ends.
            opens_on: NaiveDate,
            /// The day the timer recorded it.
            opened_on: NaiveDate,
        }
        /// A copayment-ratio certificate (負担割合証) was issued or changed.
        CopaymentCertificateIssued = "insured.copayment_certificate_issued", v 1, by [Insurer] {
            /// 1割, 2割 or 3割.
            ratio: CopaymentRatio,
            /// First day (8/1, the certification's start, or a change's date).
            valid_from: NaiveDate,
            /// Last day (the next 7/31).
            valid_until: NaiveDate,
        }
        /// A cost-limit certificate (負担限度額認定証) was issued.
        CostLimitCertificateIssued = "insured.cost_limit_certificate_issued", v 1, by [Insurer] {
            /// The stage (段階).
            stage: CostLimitStage,
            /// The application date.
            applied_on: NaiveDate,
            /// First day: the 1st of the application month.
            valid_from: NaiveDate,
            /// Last day: the next 7/31.
            valid_until: NaiveDate,
        }
        /// A care-plan office was registered for the first time (居宅サービス計画作成依頼届出).
        CarePlanOfficeRegistered = "insured.care_plan_office_registered", v 1, by [Insurer, Office] {
            /// The office.
            office: OfficeNumber,
            /// 居宅介護支援事業所 or 地域包括支援センター.
            office_kind: CarePlanOfficeKind,
            /// The level group it plans for.
            level_group: LevelGroup,
            /// The filing date.
            filed_on: NaiveDate,
            /// The first day the office may bill (the month after the filing).
            billable_from: NaiveDate,
        }
        /// The care-plan office changed, or was re-filed on a move between 要支援 and 要介護 (変更届出).
        CarePlanOfficeChanged = "insured.care_plan_office_changed", v 1, by [Insurer, Office] {
            /// The new office.
            office: OfficeNumber,
            /// 居宅介護支援事業所 or 地域包括支援センター.
            office_kind: CarePlanOfficeKind,
            /// The level group it plans for.
            level_group: LevelGroup,
            /// The office before.
            previous_office: OfficeNumber,
            /// The filing date.
            filed_on: NaiveDate,
            /// The first day the office may bill.
            billable_from: NaiveDate,
        }
        /// The person consented, with the My Number card's JPKI signature, to an office reading the record.
        ConsentGiven = "insured.consent_given", v 1, by [Office, System] {
            /// The office.
            office: OfficeNumber,
            /// The terminal whose card reader verified the card.
            terminal: TerminalId,
            /// When the consent was given.
            given_at: DateTime<Utc>,
            /// When it expires.
            expires_at: DateTime<Utc>,
        }
        /// The person revoked the consent.
        ConsentRevoked = "insured.consent_revoked", v 1, by [Office, Insurer, System] {
            /// The office.
            office: OfficeNumber,
            /// When.
            revoked_at: DateTime<Utc>,
        }
        /// The consent reached its expiry (a timer's record).
        ConsentExpired = "insured.consent_expired", v 1, by [System] {
            /// The office.
            office: OfficeNumber,
            /// The expiry that passed.
            expired_at: DateTime<Utc>,
        }
        /// An office read the person's record (the access log).
        RecordViewed = "insured.record_viewed", v 1, by [System] {
            /// The office.
            office: OfficeNumber,
            /// The terminal.
            terminal: TerminalId,
            /// What allowed the read.
            basis: ViewingBasis,
            /// When.
            viewed_at: DateTime<Utc>,
        }
        /// The person's My Number card user-authentication certificate
        /// (利用者証明用電子証明書) was linked to the record, so that a
        /// consent signed with the card names this person. The link is the
        /// certificate's issuer and serial number — never the Individual
        /// Number, which the certificate does not carry.
        CardLinked = "insured.card_linked", v 1, by [Insurer, Federation] {
            /// The certificate issuer's distinguished name (RFC 4514).
            issuer: String,
            /// The certificate's serial number, upper-case hexadecimal.
            serial: String,
            /// The day of linking.
            linked_on: NaiveDate,
        }
        /// The person moved house.
        MovedHouse = "insured.moved_house", v 2, by [Insurer] {
            /// The day of the move.
            moved_on: NaiveDate,
            /// The new address (住所), sealed with the person's key.
            address: Option<SealedValue>,
        }
        /// The home-modification cap was reset to a fresh 200,000 yen; unused balance does not carry over.
        HomeModificationCapReset = "insured.home_modification_cap_reset", v 1, by [Insurer] {
            /// Why.
            reason: CapResetReason,
            /// The day of the reset.
            reset_on: NaiveDate,
        }
        /// A prior application for home modification (事前申請) was accepted.
        HomeModificationApplied = "insured.home_modification_applied", v 1, by [Insurer, Office] {
            /// The prior application's number for this person.
            prior_application: u32,
            /// The application date.
            applied_on: NaiveDate,
            /// The planned cost.
            planned_cost: Yen,
        }
        /// Home-modification work was paid for (住宅改修費の支給).
        HomeModificationWorkRecorded = "insured.home_modification_work_recorded", v 1, by [Insurer] {
            /// The prior application it belongs to.
            prior_application: u32,
            /// The day the work started.
            work_started_on: NaiveDate,
            /// The receipt date (its copayment ratio applies).
            receipt_on: NaiveDate,
            /// The cost on the receipt.
            cost: Yen,
            /// The part of the cost within the remaining cap.
            counted_cost: Yen,
            /// What the insurer pays: counted cost × 90/80/70%.
            benefit: Yen,
            /// The copayment ratio on the receipt date.
            copayment_ratio: CopaymentRatio,
            /// Whether the cost exceeded the remaining cap (a capped payment).
            capped: bool,
            /// The care-need step at the start of the work.
            step_at_start: u8,
        }
        /// A specified equipment purchase was paid for (特定福祉用具購入費の支給).
        EquipmentPurchaseRecorded = "insured.equipment_purchase_recorded", v 1, by [Insurer] {
            /// The fiscal year (April–March) of the purchase.
            fiscal_year: i32,
            /// The equipment category.
            category: EquipmentCategory,
            /// The receipt date.
            purchased_on: NaiveDate,
            /// The cost on the receipt.
            cost: Yen,
            /// The part of the cost within the year's remaining cap.
            counted_cost: Yen,
            /// What the insurer pays: counted cost × 90/80/70%.
            benefit: Yen,
            /// The copayment ratio on the receipt date.
            copayment_ratio: CopaymentRatio,
            /// Whether the cost exceeded the remaining cap (a capped payment).
            capped: bool,
            /// Why a second item of the category this year (破損, 状態の変化), when it is one.
            replacement_reason: Option<String>,
        }
        /// The person was forgotten (本人情報の消去): the data key of their
        /// personal fields was destroyed, so every sealed value of the person
        /// is unreadable from now on (crypto-shredding); the chain still
        /// verifies, as its hashes cover the ciphertext.
        PersonForgotten = "insured.person_forgotten", v 1, by [Insurer, System] {
            /// When the key was destroyed.
            forgotten_at: DateTime<Utc>,
            /// The id of the destroyed key (random, names nothing); none when
            /// the person never had personal data sealed.
            key_id: Option<String>,
        }
    }
}

/// What may be asked about an insured person.
/// Deserialisable so that a municipality's status message can name a command
/// by its snake_case variant name with the variant's fields as a JSON object
/// (`kiban-engine`'s ingest translation; `docs/integration.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InsuredCommand {
    /// Record a decided certification.
    RecordCertification {
        /// The application's sequence number.
        application_seq: u32,
        /// The level (not 非該当).
        level: CareLevel,
        /// The validity period.
        validity: ValidityPeriod,
    },
    /// Issue or change the copayment-ratio certificate.
    IssueCopaymentCertificate {
        /// 1割, 2割 or 3割.
        ratio: CopaymentRatio,
        /// First day; it runs to the next 7/31.
        valid_from: NaiveDate,
    },
    /// Issue a cost-limit certificate.
    IssueCostLimitCertificate {
        /// The stage.
        stage: CostLimitStage,
        /// The application date.
        applied_on: NaiveDate,
    },
    /// File the care-plan request notification (first, change or re-filing).
    RegisterCarePlanOffice {
        /// The office chosen by the person.
        office: OfficeNumber,
        /// Its kind.
        office_kind: CarePlanOfficeKind,
        /// The filing date.
        filed_on: NaiveDate,
    },
    /// Record a consent verified with the My Number card.
    GiveConsent {
        /// The office.
        office: OfficeNumber,
        /// The terminal that read the card.
        terminal: TerminalId,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
    /// Link a My Number card certificate (issuer, serial) to the person.
    LinkCard {
        /// The issuer's distinguished name.
        issuer: String,
        /// The serial number, upper-case hexadecimal.
        serial: String,
    },
    /// Revoke an office's consent.
    RevokeConsent {
        /// The office.
        office: OfficeNumber,
    },
    /// Record that a consent expired (sent by a timer).
    ExpireConsent {
        /// The office.
        office: OfficeNumber,
    },
    /// Record that the renewal window of the current certification opened
    /// (sent by a timer).
    OpenRenewalWindow,
    /// Check and log an office's read of the record.
    RecordView {
        /// The office.
        office: OfficeNumber,
        /// The terminal.
        terminal: TerminalId,
        /// Whether the person's insurer shares data yet (looked up).
        insurer_sharing_enabled: bool,
    },
    /// Record a move.
    RecordMove {
        /// The day of the move.
        moved_on: NaiveDate,
        /// The new address, sealed (a producer sends it as plaintext,
        /// `{"plain": ...}`, and the engine seals it before deciding).
        address: Option<SealedValue>,
    },
    /// Record that the person's data key was destroyed (sent by
    /// `kiban admin forget` after destroying it; not a municipal kind).
    RecordForgotten {
        /// When the key was destroyed.
        forgotten_at: DateTime<Utc>,
        /// The destroyed key's id.
        key_id: Option<String>,
    },
    /// Accept a prior application for home modification.
    ApplyForHomeModification {
        /// The prior application's number for this person.
        prior_application: u32,
        /// The application date.
        applied_on: NaiveDate,
        /// The planned cost.
        planned_cost: Yen,
    },
    /// Record home-modification work and pay for it.
    RecordHomeModificationWork {
        /// The prior application.
        prior_application: u32,
        /// The day the work started.
        work_started_on: NaiveDate,
        /// The receipt date.
        receipt_on: NaiveDate,
        /// The cost on the receipt.
        cost: Yen,
    },
    /// Record an equipment purchase and pay for it.
    RecordEquipmentPurchase {
        /// The category.
        category: EquipmentCategory,
        /// The receipt date.
        purchased_on: NaiveDate,
        /// The cost on the receipt.
        cost: Yen,
        /// Whether the seller is designated (looked up).
        seller_designated: bool,
        /// Why a second item of the category this year, when it is one.
        replacement_reason: Option<String>,
    },
}

impl InsuredCommand {
    /// The command a process manager sends to the person's stream when a
    /// certification is decided; `None` for 非該当, which certifies nothing.
    pub fn record_decision(application_seq: u32, decided: &CertificationDecided) -> Option<Self> {
        Some(Self::RecordCertification {
            application_seq,
            level: decided.level,
            validity: decided.validity?,
        })
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

/// A consent on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// When it was given.
    pub given_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
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

/// The folded state of an insured person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InsuredState {
    /// Recorded certifications, oldest first.
    pub certifications: Vec<CertificationRecorded>,
    /// Copayment-ratio certificates, oldest first.
    pub copayment_certificates: Vec<CopaymentCertificateIssued>,
    /// Cost-limit certificates, oldest first.
    pub cost_limit_certificates: Vec<CostLimitCertificateIssued>,
    /// The registered care-plan office.
    pub care_plan_office: Option<CarePlanRegistration>,
    /// Consents by office (revoked and expired ones removed).
    pub consents: BTreeMap<OfficeNumber, Consent>,
    /// The home-modification ledger.
    pub home_modification: HomeModificationLedger,
    /// The equipment-purchase ledger by fiscal year.
    pub equipment: BTreeMap<i32, EquipmentYear>,
    /// Reads recorded in the access log.
    pub views_recorded: u64,
    /// The certifications (by application sequence number) whose renewal
    /// window opening is recorded.
    pub renewal_windows_opened: BTreeSet<u32>,
    /// Linked card certificates: (issuer, serial in upper-case hex).
    pub card_links: BTreeSet<(String, String)>,
    /// When the person was forgotten (their data key destroyed), if ever.
    pub forgotten_at: Option<DateTime<Utc>>,
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

    /// The copayment ratio on `date`: the latest certificate covering it.
    pub fn copayment_ratio_on(&self, date: NaiveDate) -> Option<CopaymentRatio> {
        self.copayment_certificates
            .iter()
            .rev()
            .find(|c| c.valid_from <= date && date <= c.valid_until)
            .map(|c| c.ratio)
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

    /// Whether `office` holds a consent that is live at `now`.
    pub fn consent_live(&self, office: &OfficeNumber, now: DateTime<Utc>) -> bool {
        self.consents
            .get(office)
            .is_some_and(|consent| now < consent.expires_at)
    }

    /// What lets `office` read the record at `now`, if anything.
    pub fn viewing_basis(&self, office: &OfficeNumber, now: DateTime<Utc>) -> Option<ViewingBasis> {
        if self.consent_live(office, now) {
            Some(ViewingBasis::Consent)
        } else if self
            .care_plan_office
            .as_ref()
            .is_some_and(|registration| &registration.office == office)
        {
            Some(ViewingBasis::CarePlanOffice)
        } else {
            None
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

    fn certified_level(&self, date: NaiveDate) -> Result<CareLevel, Rejection> {
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

    fn ratio_on(&self, date: NaiveDate) -> Result<CopaymentRatio, Rejection> {
        self.copayment_ratio_on(date).ok_or_else(|| {
            rejection!(
                NoCopaymentRatio,
                format!("No copayment-ratio certificate covers the receipt date {date}."),
                format!("領収日 {date} に有効な負担割合証がありません。")
            )
        })
    }
}

/// The insured-person decider.
#[derive(Debug, Clone, Copy)]
pub struct InsuredPerson;

impl Decider for InsuredPerson {
    type State = InsuredState;
    type Command = InsuredCommand;
    type Event = InsuredEvent;

    fn decide(
        state: &InsuredState,
        command: &InsuredCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<InsuredEvent>, Rejection> {
        let today = jst_date(now);
        use InsuredCommand as C;
        match command {
            C::RecordCertification {
                application_seq,
                level,
                validity,
            } => record_certification(state, *application_seq, *level, *validity),
            C::IssueCopaymentCertificate { ratio, valid_from } => {
                issue_copayment(state, *ratio, *valid_from)
            }
            C::IssueCostLimitCertificate { stage, applied_on } => {
                issue_cost_limit(state, *stage, *applied_on, today)
            }
            C::RegisterCarePlanOffice {
                office,
                office_kind,
                filed_on,
            } => register_care_plan_office(state, office, *office_kind, *filed_on, today),
            C::GiveConsent { .. } | C::RevokeConsent { .. } | C::ExpireConsent { .. } => {
                consent(state, command, now)
            }
            C::OpenRenewalWindow => open_renewal_window(state, today),
            C::LinkCard { issuer, serial } => link_card(state, issuer, serial, today),
            C::RecordView {
                office,
                terminal,
                insurer_sharing_enabled,
            } => record_view(state, office, terminal, *insurer_sharing_enabled, now),
            C::RecordMove { moved_on, address } => record_move(*moved_on, address, today),
            C::RecordForgotten {
                forgotten_at,
                key_id,
            } => Ok(if state.forgotten_at.is_some() {
                Vec::new()
            } else {
                vec![
                    PersonForgotten {
                        forgotten_at: *forgotten_at,
                        key_id: key_id.clone(),
                    }
                    .into(),
                ]
            }),
            C::ApplyForHomeModification {
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
            C::RecordHomeModificationWork {
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
            C::RecordEquipmentPurchase {
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
        }
    }

    fn evolve(mut state: InsuredState, event: &InsuredEvent) -> InsuredState {
        use InsuredEvent as E;
        match event {
            E::CertificationRecorded(e) => state.certifications.push(e.clone()),
            E::RenewalWindowOpened(e) => {
                state.renewal_windows_opened.insert(e.application_seq);
            }
            E::CopaymentCertificateIssued(e) => state.copayment_certificates.push(e.clone()),
            E::CardLinked(e) => {
                state
                    .card_links
                    .insert((e.issuer.clone(), e.serial.clone()));
            }
            E::CostLimitCertificateIssued(e) => state.cost_limit_certificates.push(e.clone()),
            E::CarePlanOfficeRegistered(e) => {
                state.care_plan_office = Some(CarePlanRegistration {
                    office: e.office.clone(),
                    office_kind: e.office_kind,
                    level_group: e.level_group,
                    filed_on: e.filed_on,
                    billable_from: e.billable_from,
                })
            }
            E::CarePlanOfficeChanged(e) => {
                let registered = CarePlanOfficeRegistered {
                    office: e.office.clone(),
                    office_kind: e.office_kind,
                    level_group: e.level_group,
                    filed_on: e.filed_on,
                    billable_from: e.billable_from,
                };
                return Self::evolve(state, &registered.into());
            }
            E::ConsentGiven(e) => {
                state.consents.insert(
                    e.office.clone(),
                    Consent {
                        given_at: e.given_at,
                        expires_at: e.expires_at,
                    },
                );
            }
            E::ConsentRevoked(e) => {
                state.consents.remove(&e.office);
            }
            E::ConsentExpired(e) => {
                state.consents.remove(&e.office);
            }
            E::RecordViewed(_) => state.views_recorded += 1,
            E::MovedHouse(_) => {}
            E::PersonForgotten(e) => state.forgotten_at = Some(e.forgotten_at),
            E::HomeModificationCapReset(e) => {
                let ledger = &mut state.home_modification;
                ledger.used = Yen::ZERO;
                ledger.base_step = None;
                if let CapResetReason::CareNeedRose { .. } = e.reason {
                    ledger.rise_reset_used = true;
                }
            }
            E::HomeModificationApplied(e) => {
                state.home_modification.prior_applications.insert(
                    e.prior_application,
                    PriorApplication {
                        applied_on: e.applied_on,
                        used: false,
                    },
                );
            }
            E::HomeModificationWorkRecorded(e) => {
                let ledger = &mut state.home_modification;
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
            E::EquipmentPurchaseRecorded(e) => {
                let year = state.equipment.entry(e.fiscal_year).or_default();
                year.used = year
                    .used
                    .checked_add(e.counted_cost)
                    .expect("counted cost stays within the cap");
                year.categories.insert(e.category);
            }
        }
        state
    }
}

fn issue_cost_limit(
    state: &InsuredState,
    stage: CostLimitStage,
    applied_on: NaiveDate,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(applied_on, today)?;
    state.certified_level(applied_on)?;
    let valid_from = month_start(applied_on);
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

/// Consent given (with an expiry within [`CONSENT_DAYS_MAX`]), revoked
/// while live, or expired by a timer at its expiry.
/// Longest issuer name accepted in a card link, in bytes.
const CARD_ISSUER_BYTES_MAX: usize = 512;
/// Longest serial number accepted in a card link, in hex digits (RFC 5280
/// allows 20 bytes).
const CARD_SERIAL_HEX_MAX: usize = 40;

fn link_card(
    state: &InsuredState,
    issuer: &str,
    serial: &str,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    reject_if!(
        issuer.trim().is_empty()
            || issuer.len() > CARD_ISSUER_BYTES_MAX
            || serial.is_empty()
            || serial.len() > CARD_SERIAL_HEX_MAX
            || !serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        CardLinkInvalid,
        "A card link needs the issuer's name and the serial number in upper-case hexadecimal.",
        "カードの紐付けには発行者名と16進数（大文字）のシリアル番号が必要です。"
    );
    reject_if!(
        state
            .card_links
            .contains(&(issuer.to_owned(), serial.to_owned())),
        CardAlreadyLinked,
        "This card certificate is already linked to the person.",
        "このカードの証明書は既に紐付けられています。"
    );
    Ok(vec![
        CardLinked {
            issuer: issuer.to_owned(),
            serial: serial.to_owned(),
            linked_on: today,
        }
        .into(),
    ])
}

fn consent(
    state: &InsuredState,
    command: &InsuredCommand,
    now: DateTime<Utc>,
) -> Result<Vec<InsuredEvent>, Rejection> {
    let event: InsuredEvent = match command {
        InsuredCommand::GiveConsent {
            office,
            terminal,
            expires_at,
        } => {
            let latest = now + Days::new(CONSENT_DAYS_MAX);
            reject_if!(
                *expires_at <= now || *expires_at > latest,
                ConsentExpiryInvalid,
                format!("A consent must expire after now and within {CONSENT_DAYS_MAX} days."),
                format!(
                    "同意の有効期限は現在より後、{CONSENT_DAYS_MAX} 日以内でなければなりません。"
                )
            );
            ConsentGiven {
                office: office.clone(),
                terminal: terminal.clone(),
                given_at: now,
                expires_at: *expires_at,
            }
            .into()
        }
        InsuredCommand::RevokeConsent { office } => {
            reject_if!(
                !state.consent_live(office, now),
                NoLiveConsent,
                format!("Office {office} holds no live consent of this person."),
                format!("事業所 {office} は本人の有効な同意を得ていません。")
            );
            ConsentRevoked {
                office: office.clone(),
                revoked_at: now,
            }
            .into()
        }
        InsuredCommand::ExpireConsent { office } => {
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
            ConsentExpired {
                office: office.clone(),
                expired_at: consent.expires_at,
            }
            .into()
        }
        _ => unreachable!("called for consent commands only"),
    };
    Ok(vec![event])
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

/// A read is allowed by a live consent or the care-plan registration, and
/// only once the insurer shares; the same decision logs it.
fn record_view(
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

/// A move resets the home-modification cap to a fresh 200,000 yen.
fn record_move(
    moved_on: NaiveDate,
    address: &Option<SealedValue>,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(moved_on, today)?;
    Ok(vec![
        MovedHouse {
            moved_on,
            address: address.clone(),
        }
        .into(),
        HomeModificationCapReset {
            reason: CapResetReason::MovedHouse,
            reset_on: moved_on,
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

fn register_care_plan_office(
    state: &InsuredState,
    office: &OfficeNumber,
    office_kind: CarePlanOfficeKind,
    filed_on: NaiveDate,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(filed_on, today)?;
    let level = state.certified_level(filed_on)?;
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
    let billable_from = month_end(filed_on) + Days::new(1);
    let Some(current) = &state.care_plan_office else {
        return Ok(vec![
            CarePlanOfficeRegistered {
                office: office.clone(),
                office_kind,
                level_group: group,
                filed_on,
                billable_from,
            }
            .into(),
        ]);
    };
    reject_if!(
        &current.office == office && current.level_group == group,
        CarePlanOfficeAlreadyRegistered,
        format!("Office {office} is already the registered care-plan office."),
        format!("事業所 {office} は既に届出済みです。")
    );
    Ok(vec![
        CarePlanOfficeChanged {
            office: office.clone(),
            office_kind,
            level_group: group,
            previous_office: current.office.clone(),
            filed_on,
            billable_from,
        }
        .into(),
    ])
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
    if let Some(base) = ledger.base_step
        && !ledger.rise_reset_used
        && step >= base + HOME_MODIFICATION_RISE_STEPS
    {
        events.push(
            HomeModificationCapReset {
                reason: CapResetReason::CareNeedRose {
                    from_step: base,
                    to_step: step,
                },
                reset_on: work_started_on,
            }
            .into(),
        );
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
