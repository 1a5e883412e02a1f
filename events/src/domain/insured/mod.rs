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
//!
//! Layout: this module holds the one aggregate — its events, commands,
//! state and the [`Decider`] that dispatches to one module per concern.
//! Each concern owns its part of [`InsuredState`], its rules and how its
//! events change the state:
//!
//! - `certificates`: certifications, the renewal window, the copayment-ratio
//!   and cost-limit certificates;
//! - `care_plan`: the care-plan office filing;
//! - `consents`: consent given, revoked, expired;
//! - `card_link`: My Number card certificates linked to the person;
//! - `access_log`: an office's read, checked and logged;
//! - `moves`: moving house;
//! - `forgetting`: the person's data key destroyed;
//! - `ledgers`: the home-modification and equipment-purchase ledgers.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::certification::{CertificationDecided, ValidityPeriod};
use super::event::domain_events;
use super::values::LevelGroup;
use super::{
    CareLevel, CopaymentRatio, CostLimitStage, Decider, EquipmentCategory, Rejection, SealedValue,
    TerminalId, Yen, jst_date,
};
use crate::envelope::StreamName;
use crate::ids::{InsuredNumber, InsurerNumber, OfficeNumber};

mod access_log;
mod card_link;
mod care_plan;
mod certificates;
mod consents;
mod forgetting;
mod ledgers;
mod moves;

pub use super::certification::{in_renewal_window, renewal_window_opens_on};
pub use access_log::ViewingBasis;
pub use care_plan::{
    CARE_PLAN_SERVICE_TYPES, CarePlanOfficeKind, CarePlanRegistration,
    PROVISIONAL_CARE_PLAN_BASIS_DAYS,
};
pub use consents::{CONSENT_DAYS_MAX, Consent, consent_office};
pub use ledgers::{
    CapResetReason, EQUIPMENT_CAP_PER_FISCAL_YEAR, EquipmentYear, HOME_MODIFICATION_CAP,
    HOME_MODIFICATION_RISE_STEPS, HomeModificationLedger, PriorApplication,
};

/// What a concern's decision returns: the events to record, or why not.
type Decision = Result<Vec<InsuredEvent>, Rejection>;

/// The stream of an insured person: `insured/<insurer>-<insured>`.
pub fn insured_stream(insurer: &InsurerNumber, insured: &InsuredNumber) -> StreamName {
    StreamName::new("insured", &format!("{insurer}-{insured}"))
        .expect("numbers make a valid stream id")
}

domain_events! {
    /// What happens to an insured person.
    pub enum InsuredEvent {
        /// A decided certification became the person's (from `certification.decided`).
        CertificationRecorded = "insured.certification_recorded", v 1, by [Insurer, System],
            label "認定結果 記録" / "Certification recorded" {
            /// The application's sequence number (its stream).
            application_seq: u32,
            /// The certified level.
            level: CareLevel,
            /// The validity period.
            validity: ValidityPeriod,
        }
        /// The renewal window of the current certification opened: from today a renewal (更新申請) can be filed, 60 days before the validity ends (a timer's record, once per certification).
        RenewalWindowOpened = "insured.renewal_window_opened", v 1, by [System],
            label "更新申請 受付開始" / "Renewal window opened" {
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
        CopaymentCertificateIssued = "insured.copayment_certificate_issued", v 1, by [Insurer],
            label "負担割合証 交付" / "Copayment-ratio certificate issued" {
            /// 1割, 2割 or 3割.
            ratio: CopaymentRatio,
            /// First day (8/1, the certification's start, or a change's date).
            valid_from: NaiveDate,
            /// Last day (the next 7/31).
            valid_until: NaiveDate,
        }
        /// A cost-limit certificate (負担限度額認定証) was issued.
        CostLimitCertificateIssued = "insured.cost_limit_certificate_issued", v 1, by [Insurer],
            label "負担限度額認定証 交付" / "Cost-limit certificate issued" {
            /// The stage (段階).
            stage: CostLimitStage,
            /// The application date.
            applied_on: NaiveDate,
            /// First day: the 1st of the application month, or the coming 8/1 for a renewal made before it.
            valid_from: NaiveDate,
            /// Last day: the next 7/31.
            valid_until: NaiveDate,
        }
        /// A care-plan office was registered for the first time (居宅サービス計画作成依頼届出).
        CarePlanOfficeRegistered = "insured.care_plan_office_registered", v 1, by [Insurer, Office],
            label "居宅サービス計画作成依頼 届出" / "Care-plan office registered" {
            /// The office.
            office: OfficeNumber,
            /// 居宅介護支援事業所 or 地域包括支援センター.
            office_kind: CarePlanOfficeKind,
            /// The level group it plans for.
            level_group: LevelGroup,
            /// The filing date.
            filed_on: NaiveDate,
            /// The first day whose services the office may bill (the 1st of the filing month; events recorded before this rule say the month after).
            billable_from: NaiveDate,
        }
        /// The care-plan office changed, or was re-filed on a move between 要支援 and 要介護 (変更届出).
        CarePlanOfficeChanged = "insured.care_plan_office_changed", v 1, by [Insurer, Office],
            label "居宅サービス計画作成依頼 変更届出" / "Care-plan office changed" {
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
        ConsentGiven = "insured.consent_given", v 1, by [Office, System],
            label "閲覧同意" / "Consent given" {
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
        ConsentRevoked = "insured.consent_revoked", v 1, by [Office, Insurer, System],
            label "閲覧同意 撤回" / "Consent revoked" {
            /// The office.
            office: OfficeNumber,
            /// When.
            revoked_at: DateTime<Utc>,
        }
        /// The consent reached its expiry (a timer's record).
        ConsentExpired = "insured.consent_expired", v 1, by [System],
            label "閲覧同意 期限切れ" / "Consent expired" {
            /// The office.
            office: OfficeNumber,
            /// The expiry that passed.
            expired_at: DateTime<Utc>,
        }
        /// An office read the person's record (the access log).
        RecordViewed = "insured.record_viewed", v 1, by [System],
            label "閲覧記録" / "Record viewed" {
            /// The office.
            office: OfficeNumber,
            /// The terminal.
            terminal: TerminalId,
            /// What allowed the read.
            basis: ViewingBasis,
            /// When.
            viewed_at: DateTime<Utc>,
        }
        /// The person read their own record in the person's view (`/me`,
        /// `/v1/me`), signed in with their My Number card: the person's own
        /// reads are in the access log too.
        OwnRecordViewed = "insured.own_record_viewed", v 1, by [System],
            label "本人による閲覧" / "Viewed by the person" {
            /// When.
            viewed_at: DateTime<Utc>,
        }
        /// The person's My Number card user-authentication certificate
        /// (利用者証明用電子証明書) was linked to the record, so that a
        /// consent signed with the card names this person. The link is the
        /// certificate's issuer and serial number — never the Individual
        /// Number, which the certificate does not carry.
        CardLinked = "insured.card_linked", v 1, by [Insurer, Federation],
            label "マイナンバーカード 紐付け" / "My Number card linked" {
            /// The certificate issuer's distinguished name (RFC 4514).
            issuer: String,
            /// The certificate's serial number, upper-case hexadecimal.
            serial: String,
            /// The day of linking.
            linked_on: NaiveDate,
        }
        /// The person moved house.
        MovedHouse = "insured.moved_house", v 2, by [Insurer],
            label "転居" / "Moved house" {
            /// The day of the move.
            moved_on: NaiveDate,
            /// The new address (住所), sealed with the person's key.
            address: Option<SealedValue>,
        }
        /// The home-modification cap was reset to a fresh 200,000 yen; unused balance does not carry over.
        HomeModificationCapReset = "insured.home_modification_cap_reset", v 1, by [Insurer],
            label "住宅改修 限度額リセット" / "Home-modification cap reset" {
            /// Why.
            reason: CapResetReason,
            /// The day of the reset.
            reset_on: NaiveDate,
        }
        /// A prior application for home modification (事前申請) was accepted.
        HomeModificationApplied = "insured.home_modification_applied", v 1, by [Insurer, Office],
            label "住宅改修 事前申請" / "Home modification applied for" {
            /// The prior application's number for this person.
            prior_application: u32,
            /// The application date.
            applied_on: NaiveDate,
            /// The planned cost.
            planned_cost: Yen,
        }
        /// Home-modification work was paid for (住宅改修費の支給).
        HomeModificationWorkRecorded = "insured.home_modification_work_recorded", v 1, by [Insurer],
            label "住宅改修 完了" / "Home-modification work paid" {
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
        EquipmentPurchaseRecorded = "insured.equipment_purchase_recorded", v 1, by [Insurer],
            label "福祉用具 購入" / "Equipment purchase paid" {
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
        PersonForgotten = "insured.person_forgotten", v 1, by [Insurer, System],
            label "本人情報 消去" / "Person forgotten" {
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
        /// Whether the application is for the coming period from 8/1 (the
        /// yearly renewal, 更新申請): made before 8/1, the certificate runs
        /// from that 8/1. Absent means no.
        #[serde(default)]
        for_coming_period: bool,
    },
    /// File the care-plan request notification (first, change or re-filing).
    RegisterCarePlanOffice {
        /// The office chosen by the person.
        office: OfficeNumber,
        /// Its kind.
        office_kind: CarePlanOfficeKind,
        /// The filing date.
        filed_on: NaiveDate,
        /// The application date of the person's pending new certification
        /// application, looked up, when there is one: a person not yet
        /// certified may then be filed for with a provisional plan
        /// (暫定ケアプラン). Absent means none.
        #[serde(default)]
        pending_application_on: Option<NaiveDate>,
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
    /// Log the person's own read of the record (the person's view, signed
    /// in with their card; the API authenticates, so nothing is refused).
    RecordOwnView,
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

/// The folded state of an insured person.
///
/// Each field is the part of one concern and is changed only by that
/// concern's module: `certificates` (certifications, certificates, renewal
/// windows), `care_plan`, `consents`, `ledgers` (home modification,
/// equipment), `access_log` (views), `card_link`, `forgetting`.
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
            C::RecordCertification { .. }
            | C::OpenRenewalWindow
            | C::IssueCopaymentCertificate { .. }
            | C::IssueCostLimitCertificate { .. } => certificates::decide(state, command, today),
            C::RegisterCarePlanOffice { .. } => care_plan::decide(state, command, today),
            C::GiveConsent { .. } | C::RevokeConsent { .. } | C::ExpireConsent { .. } => {
                consents::decide(state, command, now)
            }
            C::LinkCard { issuer, serial } => card_link::link_card(state, issuer, serial, today),
            C::RecordView {
                office,
                terminal,
                insurer_sharing_enabled,
            } => access_log::record_view(state, office, terminal, *insurer_sharing_enabled, now),
            C::RecordOwnView => Ok(access_log::record_own_view(now)),
            C::RecordMove { moved_on, address } => moves::record_move(*moved_on, address, today),
            C::RecordForgotten {
                forgotten_at,
                key_id,
            } => Ok(forgetting::record_forgotten(
                state,
                *forgotten_at,
                key_id.as_deref(),
            )),
            C::ApplyForHomeModification { .. }
            | C::RecordHomeModificationWork { .. }
            | C::RecordEquipmentPurchase { .. } => ledgers::decide(state, command, today),
        }
    }

    fn evolve(mut state: InsuredState, event: &InsuredEvent) -> InsuredState {
        use InsuredEvent as E;
        match event {
            E::CertificationRecorded(_)
            | E::RenewalWindowOpened(_)
            | E::CopaymentCertificateIssued(_)
            | E::CostLimitCertificateIssued(_) => certificates::evolve(&mut state, event),
            E::CarePlanOfficeRegistered(_) | E::CarePlanOfficeChanged(_) => {
                care_plan::evolve(&mut state.care_plan_office, event)
            }
            E::ConsentGiven(_) | E::ConsentRevoked(_) | E::ConsentExpired(_) => {
                consents::evolve(&mut state.consents, event)
            }
            E::CardLinked(e) => card_link::evolve(&mut state.card_links, e),
            E::RecordViewed(_) => state.views_recorded += 1,
            // The person's own reads change nothing any rule looks at.
            E::OwnRecordViewed(_) => {}
            // A move changes no state of its own: the cap reset recorded
            // with it is the ledger's.
            E::MovedHouse(_) => {}
            E::PersonForgotten(e) => state.forgotten_at = Some(e.forgotten_at),
            E::HomeModificationCapReset(_)
            | E::HomeModificationApplied(_)
            | E::HomeModificationWorkRecorded(_) => {
                ledgers::evolve_home_modification(&mut state.home_modification, event)
            }
            E::EquipmentPurchaseRecorded(e) => ledgers::evolve_equipment(&mut state.equipment, e),
        }
        state
    }
}
