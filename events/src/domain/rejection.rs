//! Why a command was refused.
//!
//! A [`Rejection`] carries a [`RejectionCode`]: a snake_case string that
//! municipalities and offices see in their receipts and branch on. **A code
//! never changes meaning and is never renamed**; a new rule gets a new code.
//! Beside it go a message in English that says which rule was broken in a
//! clerk's words, and the same in Japanese.

use std::fmt;

macro_rules! rejection_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// The stable machine code of a rejection. See the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RejectionCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl RejectionCode {
            /// Every code, in declaration order (for the catalog).
            pub const ALL: &'static [RejectionCode] = &[$(RejectionCode::$variant,)*];

            /// The code as it appears in receipts.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RejectionCode::$variant => $code,)*
                }
            }

            /// What the code means, for the catalog.
            pub fn description(self) -> &'static str {
                match self {
                    $(RejectionCode::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

rejection_codes! {
    // Shared.
    /// A date in the command lies after today (Japan time).
    DateInFuture = "date_in_future",
    /// A date lies outside 2000-01-01 to 2099-12-31.
    DateOutOfRange = "date_out_of_range",
    /// A date lies more than two years before the day of the command (the fact's day, or today for a request): history is loaded in a back-fill (docs/integration.md).
    DateTooFarInPast = "date_too_far_in_past",
    /// A required free-text reason is empty.
    ReasonMissing = "reason_missing",
    /// A free-text reason is longer than 500 characters.
    ReasonTooLong = "reason_too_long",
    /// A list in the command has more than 100 items.
    TooManyItems = "too_many_items",
    /// The step cannot happen in the current state of the workflow.
    StepOutOfOrder = "step_out_of_order",

    // Certification application.
    /// The application has already been filed on this stream.
    ApplicationAlreadyFiled = "application_already_filed",
    /// No application has been filed on this stream.
    ApplicationNotFiled = "application_not_filed",
    /// The application was decided, withdrawn or rejected; nothing more may happen.
    ApplicationClosed = "application_closed",
    /// A renewal or change needs the person's current certification.
    CurrentCertificationMissing = "current_certification_missing",
    /// A renewal is filed earlier than 60 days before the current validity ends.
    RenewalWindowNotOpen = "renewal_window_not_open",
    /// A renewal or change is filed after the current validity has ended.
    CurrentCertificationExpired = "current_certification_expired",
    /// A new application is filed while a certification is still valid.
    AlreadyCertified = "already_certified",
    /// The decided level is not the level of the secondary judgment.
    LevelDiffersFromJudgment = "level_differs_from_judgment",
    /// The validity period does not start on the day the rules require.
    ValidityStartWrong = "validity_start_wrong",
    /// The validity period does not end on a month end.
    ValidityNotMonthEnd = "validity_not_month_end",
    /// The validity period is shorter or longer than the rules allow.
    ValidityOutOfRange = "validity_out_of_range",
    /// A validity period was given for a not-eligible (非該当) decision.
    ValidityNotAllowed = "validity_not_allowed",
    /// An extension notice was sent after the decision deadline had passed.
    ExtensionAfterDeadline = "extension_after_deadline",
    /// The expected decision date of an extension is not after the current deadline.
    ExpectedDateTooEarly = "expected_date_too_early",
    /// A timer fired before its date: the decision deadline, the renewal
    /// window's opening or a subsidy's notice or payment due date has not
    /// come yet.
    DeadlineNotReached = "deadline_not_reached",
    /// This date is already recorded as passed: the decision deadline, the
    /// renewal window's opening, or a subsidy's overdue notice or payment.
    DeadlineAlreadyRecorded = "deadline_already_recorded",

    // Insured person.
    /// The person has no valid certification (要支援 or 要介護) on the date concerned.
    NotCertified = "not_certified",
    /// The same certification is already recorded.
    CertificationAlreadyRecorded = "certification_already_recorded",
    /// The copayment-ratio certificate does not start on 8/1, on the certification start, or inside the current certificate.
    CopaymentStartInvalid = "copayment_start_invalid",
    /// No copayment-ratio certificate covers the receipt date.
    NoCopaymentRatio = "no_copayment_ratio",
    /// The kind of care-plan office does not fit the level (居宅介護支援事業所 for 要介護, 地域包括支援センター for 要支援).
    CarePlanOfficeKindMismatch = "care_plan_office_kind_mismatch",
    /// The same care-plan office is already registered for this level group.
    CarePlanOfficeAlreadyRegistered = "care_plan_office_already_registered",
    /// The consent expiry is not after now or too far ahead.
    ConsentExpiryInvalid = "consent_expiry_invalid",
    /// The office has no live consent of the person.
    NoLiveConsent = "no_live_consent",
    /// The consent has not reached its expiry yet.
    ConsentNotExpired = "consent_not_expired",
    /// The office may not read this person's record: no live consent and not the registered care-plan office.
    NoViewingBasis = "no_viewing_basis",
    /// A card link lacks the issuer or has a serial number that is not upper-case hexadecimal.
    CardLinkInvalid = "card_link_invalid",
    /// The card certificate is already linked to the person.
    CardAlreadyLinked = "card_already_linked",
    /// The insurer has not enabled sharing yet, so its people are not visible to offices.
    InsurerNotSharing = "insurer_not_sharing",
    /// Home-modification work recorded without a prior application (事前申請).
    PriorApplicationMissing = "prior_application_missing",
    /// The prior application number is already used.
    PriorApplicationDuplicate = "prior_application_duplicate",
    /// Home-modification work started before its prior application.
    WorkBeforePriorApplication = "work_before_prior_application",
    /// An item of this equipment category was already bought this fiscal year and no replacement reason was given.
    EquipmentCategoryAlreadyPurchased = "equipment_category_already_purchased",
    /// The equipment seller is not a designated seller (指定特定福祉用具販売事業者).
    SellerNotDesignated = "seller_not_designated",
    /// The amount is zero where a cost is required.
    AmountZero = "amount_zero",

    // Care office.
    /// The office is already registered.
    OfficeAlreadyRegistered = "office_already_registered",
    /// The office is not registered.
    OfficeNotRegistered = "office_not_registered",
    /// No service type was given.
    ServiceTypesMissing = "service_types_missing",
    /// A service type is listed twice.
    ServiceTypeDuplicated = "service_type_duplicated",
    /// The terminal is already registered.
    TerminalAlreadyRegistered = "terminal_already_registered",
    /// The terminal is not registered at this office.
    TerminalUnknown = "terminal_unknown",
    /// The terminal is already suspended.
    TerminalAlreadySuspended = "terminal_already_suspended",
    /// The terminal is not suspended.
    TerminalNotSuspended = "terminal_not_suspended",
    /// The reinstated terminal's credential is the one that was reported lost.
    CredentialReused = "credential_reused",
    /// A terminal reported the office's last other active terminal lost: only the portal (the federation) may, or a stolen terminal could keep its office out.
    LastOtherTerminal = "last_other_terminal",

    // Insurer.
    /// The insurer is already onboarded.
    InsurerAlreadyOnboarded = "insurer_already_onboarded",
    /// The insurer is not onboarded.
    InsurerNotOnboarded = "insurer_not_onboarded",
    /// The municipal system standardisation is already recorded.
    StandardisationAlreadyCompleted = "standardisation_already_completed",
    /// Data transmission needs the standardisation completed first.
    StandardisationNotCompleted = "standardisation_not_completed",
    /// The data transmission is already recorded.
    DataTransmissionAlreadyCompleted = "data_transmission_already_completed",
    /// The platform has not started yet (2026-04-01).
    PlatformNotStarted = "platform_not_started",
    /// The insurer's back-fill of its history is already open.
    BackfillAlreadyStarted = "backfill_already_started",
    /// The insurer has no open back-fill to complete.
    BackfillNotStarted = "backfill_not_started",

    // Subsidy application.
    /// The subsidy application has already been made on this stream.
    SubsidyAlreadyApplied = "subsidy_already_applied",
    /// No subsidy application on this stream.
    SubsidyNotApplied = "subsidy_not_applied",
    /// The subsidy application is closed (deficiency) or paid.
    SubsidyClosed = "subsidy_closed",
    /// The application date is outside the application window.
    OutsideApplicationWindow = "outside_application_window",
    /// A service type has no subsidy category in the table.
    ServiceTypeUnknown = "service_type_unknown",
    /// A service type has no designation notice attached.
    DesignationNoticeMissing = "designation_notice_missing",
    /// A medical institution's application has no bed-count document.
    BedCountDocumentMissing = "bed_count_document_missing",
    /// No receipt line was given.
    ReceiptsMissing = "receipts_missing",
    /// The reader count differs from the readers on the receipt lines.
    ReaderCountMismatch = "reader_count_mismatch",
    /// The medical institutions' subsidy amount is not configured for this fiscal year.
    MedicalSubsidyNotConfigured = "medical_subsidy_not_configured",
    /// The review has not started.
    ReviewNotStarted = "review_not_started",
    /// The review has already started.
    ReviewAlreadyStarted = "review_already_started",
    /// The subsidy has not been decided.
    SubsidyNotDecided = "subsidy_not_decided",
    /// The subsidy is already decided.
    SubsidyAlreadyDecided = "subsidy_already_decided",
    /// The paid amount differs from the decided amount.
    AmountDiffersFromDecision = "amount_differs_from_decision",
    /// The decided amount is zero: nothing to pay.
    NothingToPay = "nothing_to_pay",
    /// A declared service type is not among the office's registered service types.
    ServiceTypeNotRegistered = "service_type_not_registered",
    /// A card-reader receipt line states no reader count.
    ReaderLineCountZero = "reader_line_count_zero",
    /// A receipt was already claimed by an earlier application of the same applicant.
    ReceiptAlreadyClaimed = "receipt_already_claimed",
    /// The applicant's earlier applications in the window already used the whole limit.
    SubsidyLimitUsedUp = "subsidy_limit_used_up",
    /// An earlier application of the same applicant in the window is not decided yet.
    EarlierApplicationUndecided = "earlier_application_undecided",
}

impl fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: the rule broken, as a stable code and in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    code: RejectionCode,
    message: String,
    message_ja: String,
}

impl Rejection {
    /// A rejection with its English and Japanese messages.
    pub fn new(
        code: RejectionCode,
        message: impl Into<String>,
        message_ja: impl Into<String>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            message_ja: message_ja.into(),
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> RejectionCode {
        self.code
    }

    /// What rule was broken, in English.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What rule was broken, in Japanese.
    pub fn message_ja(&self) -> &str {
        &self.message_ja
    }
}

/// Returns `Err(rejection)` from the enclosing decider when `condition` holds.
macro_rules! reject_if {
    ($condition:expr, $code:ident, $message:expr, $message_ja:expr $(,)?) => {
        if $condition {
            return Err($crate::domain::Rejection::new(
                $crate::domain::RejectionCode::$code,
                $message,
                $message_ja,
            ));
        }
    };
}
pub(crate) use reject_if;

/// Builds a rejection (for `ok_or_else` and `match` arms).
macro_rules! rejection {
    ($code:ident, $message:expr, $message_ja:expr $(,)?) => {
        $crate::domain::Rejection::new($crate::domain::RejectionCode::$code, $message, $message_ja)
    };
}
pub(crate) use rejection;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_snake_case_and_described() {
        let mut seen = BTreeSet::new();
        for code in RejectionCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text} is not snake_case"
            );
            assert!(!code.description().is_empty(), "{text} has no description");
        }
    }

    #[test]
    fn display_shows_code_and_message() {
        let rejection = Rejection::new(RejectionCode::StepOutOfOrder, "too early", "早すぎます");
        assert_eq!(rejection.to_string(), "step_out_of_order: too early");
        assert_eq!(rejection.code().as_str(), "step_out_of_order");
        assert_eq!(rejection.message_ja(), "早すぎます");
    }
}
