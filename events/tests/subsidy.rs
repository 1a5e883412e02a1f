//! The subsidy rules, with the seed's receipts (15,400 yen for 2 readers,
//! 22,000 yen setting cost) and multi-service offices.

mod common;

use common::*;
use kiban_events::domain::RejectionCode as R;
use kiban_events::domain::subsidy::*;
use kiban_events::domain::testing::given;
use kiban_events::domain::{ServiceTypeCode, Yen};

type S = SubsidyApplication;

fn code(text: &str) -> ServiceTypeCode {
    ServiceTypeCode::parse(text).unwrap()
}

fn care_office(codes: &[&str]) -> SubsidyApplicant {
    SubsidyApplicant::CareOffice {
        office: office(),
        service_types: codes.iter().map(|c| code(c)).collect(),
        designation_notices: codes
            .iter()
            .enumerate()
            .map(|(i, c)| DesignationNotice {
                service_type: code(c),
                document: doc(10 + i as u8),
            })
            .collect(),
    }
}

fn line(purpose: Option<ReceiptPurpose>, amount: u64) -> ReceiptLine {
    ReceiptLine {
        purpose,
        amount: Yen::new(amount),
        receipt: doc(3),
    }
}

/// The seed's two receipts: カードリーダー2台分 15,400 yen and 設定費用 22,000 yen.
fn seed_receipts() -> Vec<ReceiptLine> {
    vec![
        line(Some(ReceiptPurpose::CardReaders { count: 2 }), 15_400),
        line(Some(ReceiptPurpose::ConnectionSupport), 22_000),
    ]
}

/// An application by an office registered with the service types it
/// declares, with no earlier application.
fn apply(applicant: SubsidyApplicant, readers: u32, lines: Vec<ReceiptLine>) -> SubsidyCommand {
    let registered = match &applicant {
        SubsidyApplicant::CareOffice { service_types, .. } => service_types.clone(),
        SubsidyApplicant::MedicalInstitution { .. } => Vec::new(),
    };
    apply_after(applicant, readers, lines, registered, Vec::new())
}

fn apply_after(
    applicant: SubsidyApplicant,
    readers: u32,
    lines: Vec<ReceiptLine>,
    registered: Vec<ServiceTypeCode>,
    earlier: Vec<EarlierApplication>,
) -> SubsidyCommand {
    SubsidyCommand::Apply {
        applicant,
        reader_count: readers,
        receipt_lines: lines,
        passbook: doc(4),
        policy: SubsidyPolicy::FY2025,
        record: ApplicantRecord {
            registered_service_types: registered,
            earlier,
        },
    }
}

/// The decision of a first application.
fn decide() -> SubsidyCommand {
    decide_after(Vec::new())
}

fn decide_after(earlier: Vec<EarlierApplication>) -> SubsidyCommand {
    SubsidyCommand::Decide {
        earlier,
        medical_institution_limit: None,
    }
}

fn applied_on(applicant: SubsidyApplicant, on: chrono::NaiveDate) -> SubsidyEvent {
    let (notice_due_by, payment_due_by) = SubsidyPolicy::FY2025.due_dates(on);
    SubsidyApplied {
        applicant,
        applied_on: on,
        reader_count: 2,
        receipt_lines: seed_receipts(),
        passbook: doc(4),
        policy: SubsidyPolicy::FY2025,
        notice_due_by,
        payment_due_by,
    }
    .into()
}

fn in_review(applicant: SubsidyApplicant) -> Vec<SubsidyEvent> {
    vec![
        applied_on(applicant, d(2025, 11, 20)),
        ReviewStarted {
            started_on: d(2025, 12, 1),
        }
        .into(),
    ]
}

#[test]
fn the_seed_receipts_are_paid_in_full_for_a_visit_office() {
    let calculation = calculate(
        &care_office(&["11"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.limit, Yen::new(64_000));
    assert_eq!(calculation.reader_cap, 3);
    assert_eq!(calculation.eligible_readers, Yen::new(15_400));
    assert_eq!(calculation.eligible_other, Yen::new(22_000));
    assert_eq!(calculation.payable, Yen::new(37_400));
    assert_eq!(calculation.excluded, Yen::ZERO);
}

#[test]
fn readers_beyond_the_cap_are_pro_rated_not_cheapest_first() {
    // その他 (福祉用具貸与): one reader, 42,000 yen.
    let calculation = calculate(
        &care_office(&["17"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.reader_cap, 1);
    assert_eq!(calculation.eligible_readers, Yen::new(7_700));
    assert_eq!(calculation.excluded, Yen::new(7_700));
    assert_eq!(calculation.payable, Yen::new(29_700));
}

#[test]
fn a_care_plan_office_counts_as_visit_day_short_stay() {
    assert_eq!(
        category_of(&code("43")),
        Some(SubsidyCategory::VisitDayShortStay)
    );
    let calculation = calculate(
        &care_office(&["43"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.limit, Yen::new(64_000));
}

#[test]
fn a_multi_service_office_sums_the_limits_of_its_services() {
    // 訪問介護 + 介護福祉施設サービス: 64,000 + 55,000 yen, 3 + 2 readers.
    let lines = vec![
        line(Some(ReceiptPurpose::CardReaders { count: 5 }), 38_500),
        line(Some(ReceiptPurpose::ConnectionSupport), 88_000),
    ];
    let calculation = calculate(&care_office(&["11", "51"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.limit, Yen::new(119_000));
    assert_eq!(calculation.reader_cap, 5);
    assert_eq!(calculation.eligible_readers, Yen::new(38_500));
    assert_eq!(calculation.payable, Yen::new(119_000));
    // The seed's receipts at a 居住・入所系 office with その他 added: 55,000 + 42,000.
    let calculation = calculate(
        &care_office(&["32", "31"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.limit, Yen::new(97_000));
    assert_eq!(calculation.payable, Yen::new(37_400));
}

#[test]
fn two_services_of_the_same_category_each_add_their_limit() {
    // [seed] 介護サービス種別に応じた助成限度額の合計: per service provided,
    // so 訪問介護 + 通所介護 is 64,000 × 2 with 3 × 2 readers.
    let lines = vec![
        line(Some(ReceiptPurpose::CardReaders { count: 7 }), 53_900),
        line(Some(ReceiptPurpose::ConnectionSupport), 44_000),
    ];
    let calculation = calculate(&care_office(&["11", "15"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.limit, Yen::new(128_000));
    assert_eq!(calculation.reader_cap, 6);
    assert_eq!(calculation.eligible_readers, Yen::new(46_200));
    assert_eq!(calculation.payable, Yen::new(90_200));
}

#[test]
fn lines_without_a_stated_purpose_are_not_paid() {
    let mut lines = seed_receipts();
    lines.push(line(None, 11_000));
    let calculation = calculate(&care_office(&["11"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.excluded, Yen::new(11_000));
    assert_eq!(calculation.payable, Yen::new(37_400));
}

#[test]
fn applications_are_accepted_only_in_the_window() {
    for (now, accepted) in [
        (at(2025, 10, 16), false),
        (at(2025, 10, 17), true),
        (at(2026, 3, 13), true),
        (at(2026, 3, 14), false),
    ] {
        let when = given::<S>([]).when(apply(care_office(&["11"]), 2, seed_receipts()), now);
        if accepted {
            when.then_accepted();
        } else {
            when.then_rejected(R::OutsideApplicationWindow);
        }
    }
}

#[test]
fn notice_is_due_the_month_after_and_payment_the_month_after_that() {
    given::<S>([])
        .when(
            apply(care_office(&["11"]), 2, seed_receipts()),
            at(2025, 11, 20),
        )
        .then(vec![applied_on(care_office(&["11"]), d(2025, 11, 20))]);
    assert_eq!(
        SubsidyPolicy::FY2025.due_dates(d(2025, 11, 20)),
        (d(2025, 12, 31), d(2026, 1, 31))
    );
    assert_eq!(
        SubsidyPolicy::FY2025.due_dates(d(2026, 2, 28)),
        (d(2026, 3, 31), d(2026, 4, 30))
    );
}

#[test]
fn applications_in_the_closing_month_are_notified_by_march_and_paid_by_april() {
    assert_eq!(
        SubsidyPolicy::FY2025.due_dates(d(2026, 3, 1)),
        (d(2026, 3, 31), d(2026, 4, 30))
    );
    let (events, state) = given::<S>([])
        .when(
            apply(care_office(&["11"]), 2, seed_receipts()),
            at(2026, 3, 13),
        )
        .then_accepted();
    assert_eq!(events.len(), 1);
    let application = state.application.unwrap();
    assert_eq!(application.notice_due_by, d(2026, 3, 31));
    assert_eq!(application.payment_due_by, d(2026, 4, 30));
}

#[test]
fn every_service_type_needs_a_category_and_a_designation_notice() {
    given::<S>([])
        .when(
            apply(care_office(&["99"]), 2, seed_receipts()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ServiceTypeUnknown);
    let without_notice = SubsidyApplicant::CareOffice {
        office: office(),
        service_types: vec![code("11"), code("15")],
        designation_notices: vec![DesignationNotice {
            service_type: code("11"),
            document: doc(10),
        }],
    };
    given::<S>([])
        .when(apply(without_notice, 2, seed_receipts()), at(2025, 11, 20))
        .then_rejected(R::DesignationNoticeMissing);
    given::<S>([])
        .when(
            apply(care_office(&[]), 2, seed_receipts()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ServiceTypesMissing);
    given::<S>([])
        .when(
            apply(care_office(&["11", "11"]), 2, seed_receipts()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ServiceTypeDuplicated);
}

#[test]
fn receipts_are_needed_and_must_match_the_declared_readers() {
    given::<S>([])
        .when(apply(care_office(&["11"]), 0, vec![]), at(2025, 11, 20))
        .then_rejected(R::ReceiptsMissing);
    given::<S>([])
        .when(
            apply(care_office(&["11"]), 3, seed_receipts()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ReaderCountMismatch);
}

#[test]
fn an_application_is_made_once_per_stream() {
    given::<S>([applied_on(care_office(&["11"]), d(2025, 11, 20))])
        .when(
            apply(care_office(&["11"]), 2, seed_receipts()),
            at(2025, 11, 21),
        )
        .then_rejected(R::SubsidyAlreadyApplied);
}

fn medical(bed_count: bool) -> SubsidyApplicant {
    SubsidyApplicant::MedicalInstitution {
        institution: clinic(),
        bed_count_document: bed_count.then(|| doc(5)),
    }
}

#[test]
fn medical_institutions_need_a_bed_count_document() {
    let lines = vec![
        line(Some(ReceiptPurpose::OpinionSending), 300_000),
        line(Some(ReceiptPurpose::CardReaders { count: 1 }), 7_700),
    ];
    given::<S>([])
        .when(apply(medical(false), 1, lines.clone()), at(2025, 11, 20))
        .then_rejected(R::BedCountDocumentMissing);
    let policy = SubsidyPolicy {
        medical_institution_limit: Some(Yen::new(250_000)),
        ..SubsidyPolicy::FY2025
    };
    let calculation = calculate(&medical(true), &lines, &policy);
    assert_eq!(calculation.eligible_other, Yen::new(300_000));
    assert_eq!(calculation.eligible_readers, Yen::ZERO);
    assert_eq!(calculation.payable, Yen::new(250_000));
}

/// Defect 7: with the shipped FY2025 policy (no medical amount: the seed
/// gives none) every medical institution's application was refused, though
/// the seed's window is theirs too. Given the shipped policy, when an
/// institution applies, then the application is recorded; it is decided
/// once an amount is configured.
#[test]
fn a_medical_institution_applies_under_the_shipped_policy_and_is_decided_once_configured() {
    let lines = vec![line(Some(ReceiptPurpose::OpinionSending), 300_000)];
    let (events, _) = given::<S>([])
        .when(apply(medical(true), 0, lines), at(2025, 11, 20))
        .then_accepted();
    let mut history = events;
    history.push(
        ReviewStarted {
            started_on: d(2025, 12, 1),
        }
        .into(),
    );
    given::<S>(history.clone())
        .when(decide(), at(2025, 12, 10))
        .then_rejected(R::MedicalSubsidyNotConfigured);
    let (events, state) = given::<S>(history)
        .when(
            SubsidyCommand::Decide {
                earlier: Vec::new(),
                medical_institution_limit: Some(Yen::new(250_000)),
            },
            at(2025, 12, 10),
        )
        .then_accepted();
    assert_eq!(events.len(), 1);
    assert_eq!(state.decision.unwrap().payable, Yen::new(250_000));
}

#[test]
fn the_review_starts_once_after_the_application() {
    given::<S>([])
        .when(SubsidyCommand::StartReview, at(2025, 12, 1))
        .then_rejected(R::SubsidyNotApplied);
    given::<S>([applied_on(care_office(&["11"]), d(2025, 11, 20))])
        .when(SubsidyCommand::StartReview, at(2025, 12, 1))
        .then(vec![
            ReviewStarted {
                started_on: d(2025, 12, 1),
            }
            .into(),
        ]);
    given::<S>(in_review(care_office(&["11"])))
        .when(SubsidyCommand::StartReview, at(2025, 12, 2))
        .then_rejected(R::ReviewAlreadyStarted);
}

#[test]
fn a_deficiency_closes_the_application_and_a_re_application_is_a_new_one() {
    let state = given::<S>(in_review(care_office(&["11"])))
        .when(
            SubsidyCommand::FindDeficiency {
                reason: "領収書に用途の記載なし".to_owned(),
            },
            at(2025, 12, 5),
        )
        .then(vec![
            DeficiencyFound {
                reason: "領収書に用途の記載なし".to_owned(),
                found_on: d(2025, 12, 5),
            }
            .into(),
            SubsidyClosed {
                because: ClosedBecause::Deficiency,
                closed_on: d(2025, 12, 5),
            }
            .into(),
        ]);
    assert_eq!(state.status, SubsidyStatus::Closed);
    let mut history = in_review(care_office(&["11"]));
    history.push(
        SubsidyClosed {
            because: ClosedBecause::Deficiency,
            closed_on: d(2025, 12, 5),
        }
        .into(),
    );
    given::<S>(history)
        .when(decide(), at(2025, 12, 6))
        .then_rejected(R::SubsidyClosed);
    given::<S>(in_review(care_office(&["11"])))
        .when(
            SubsidyCommand::FindDeficiency {
                reason: String::new(),
            },
            at(2025, 12, 5),
        )
        .then_rejected(R::ReasonMissing);
    given::<S>([applied_on(care_office(&["11"]), d(2025, 11, 20))])
        .when(
            SubsidyCommand::FindDeficiency {
                reason: "x".to_owned(),
            },
            at(2025, 12, 5),
        )
        .then_rejected(R::ReviewNotStarted);
}

fn decided(payable: u64, on: chrono::NaiveDate, late: bool) -> SubsidyEvent {
    let calculation = calculate(
        &care_office(&["11"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.payable, Yen::new(payable));
    SubsidyDecided {
        calculation,
        payable: Yen::new(payable),
        decided_on: on,
        after_notice_due: late,
    }
    .into()
}

#[test]
fn the_decision_computes_the_payable_amount_after_the_review_starts() {
    given::<S>([applied_on(care_office(&["11"]), d(2025, 11, 20))])
        .when(decide(), at(2025, 12, 10))
        .then_rejected(R::ReviewNotStarted);
    given::<S>(in_review(care_office(&["11"])))
        .when(decide(), at(2025, 12, 10))
        .then(vec![decided(37_400, d(2025, 12, 10), false)]);
    // Notified after the end of the month after the application: flagged.
    given::<S>(in_review(care_office(&["11"])))
        .when(decide(), at(2026, 1, 5))
        .then(vec![decided(37_400, d(2026, 1, 5), true)]);
    let mut history = in_review(care_office(&["11"]));
    history.push(decided(37_400, d(2025, 12, 10), false));
    given::<S>(history)
        .when(decide(), at(2025, 12, 11))
        .then_rejected(R::SubsidyAlreadyDecided);
}

#[test]
fn the_payment_is_the_decided_amount_once() {
    given::<S>(in_review(care_office(&["11"])))
        .when(
            SubsidyCommand::Pay {
                amount: Yen::new(37_400),
            },
            at(2026, 1, 10),
        )
        .then_rejected(R::SubsidyNotDecided);
    let mut history = in_review(care_office(&["11"]));
    history.push(decided(37_400, d(2025, 12, 10), false));
    given::<S>(history.clone())
        .when(
            SubsidyCommand::Pay {
                amount: Yen::new(37_000),
            },
            at(2026, 1, 10),
        )
        .then_rejected(R::AmountDiffersFromDecision);
    let state = given::<S>(history.clone())
        .when(
            SubsidyCommand::Pay {
                amount: Yen::new(37_400),
            },
            at(2026, 1, 10),
        )
        .then(vec![
            SubsidyPaid {
                amount: Yen::new(37_400),
                paid_on: d(2026, 1, 10),
                after_payment_due: false,
            }
            .into(),
        ]);
    assert_eq!(state.status, SubsidyStatus::Paid);
    history.push(
        SubsidyPaid {
            amount: Yen::new(37_400),
            paid_on: d(2026, 1, 10),
            after_payment_due: false,
        }
        .into(),
    );
    given::<S>(history)
        .when(
            SubsidyCommand::Pay {
                amount: Yen::new(37_400),
            },
            at(2026, 1, 11),
        )
        .then_rejected(R::SubsidyClosed);
}

fn zero_yen_history() -> Vec<SubsidyEvent> {
    let lines = vec![line(None, 15_400)];
    vec![
        SubsidyApplied {
            applicant: care_office(&["11"]),
            applied_on: d(2025, 11, 20),
            reader_count: 0,
            receipt_lines: lines,
            passbook: doc(4),
            policy: SubsidyPolicy::FY2025,
            notice_due_by: d(2025, 12, 31),
            payment_due_by: d(2026, 1, 31),
        }
        .into(),
        ReviewStarted {
            started_on: d(2025, 12, 1),
        }
        .into(),
    ]
}

/// Defect 3: a zero-yen decision was stuck (`Pay` refused, never closed,
/// `payment_overdue` recorded). Given a review of receipts with no stated
/// purpose, when it is decided, then the zero decision closes the
/// application and no payment is ever due.
#[test]
fn a_zero_decision_closes_the_application_with_no_payment_due() {
    let (events, state) = given::<S>(zero_yen_history())
        .when(decide(), at(2025, 12, 10))
        .then_accepted();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1],
        SubsidyClosed {
            because: ClosedBecause::NothingPayable,
            closed_on: d(2025, 12, 10),
        }
        .into()
    );
    assert_eq!(state.status, SubsidyStatus::Closed);
    assert!(!state.payment_overdue(d(2026, 2, 1)));
    let mut closed = zero_yen_history();
    closed.extend(events);
    given::<S>(closed.clone())
        .when(SubsidyCommand::RecordPaymentOverdue, at(2026, 2, 1))
        .then_rejected(R::SubsidyClosed);
    given::<S>(closed)
        .when(SubsidyCommand::Pay { amount: Yen::ZERO }, at(2026, 1, 10))
        .then_rejected(R::SubsidyClosed);
    // A zero decision recorded before this rule (no closing) is not
    // payment-overdue either.
    let calculation = calculate(
        &care_office(&["11"]),
        &[line(None, 15_400)],
        &SubsidyPolicy::FY2025,
    );
    let mut old = zero_yen_history();
    old.push(
        SubsidyDecided {
            calculation,
            payable: Yen::ZERO,
            decided_on: d(2025, 12, 10),
            after_notice_due: false,
        }
        .into(),
    );
    let state = given::<S>(old.clone()).state().clone();
    assert!(!state.payment_overdue(d(2026, 2, 1)));
    given::<S>(old)
        .when(SubsidyCommand::Pay { amount: Yen::ZERO }, at(2026, 1, 10))
        .then_rejected(R::NothingToPay);
}

#[test]
fn overdue_notice_and_payment_are_derived() {
    let state = given::<S>(in_review(care_office(&["11"]))).state().clone();
    assert!(!state.notice_overdue(d(2025, 12, 31)));
    assert!(state.notice_overdue(d(2026, 1, 1)));
    assert!(!state.payment_overdue(d(2026, 1, 31)));
    assert!(state.payment_overdue(d(2026, 2, 1)));
}

#[test]
fn stream_names_keep_offices_and_medical_institutions_apart() {
    assert_eq!(
        subsidy_stream_for_office(&office(), 1).as_str(),
        "subsidy/1312345678-1"
    );
    assert_eq!(
        subsidy_stream_for_institution(&clinic(), 1).as_str(),
        "subsidy/m1310000001-1"
    );
}

#[test]
fn every_code_in_the_table_is_valid_and_listed_once() {
    let mut seen = std::collections::BTreeSet::new();
    for (code_text, name, _) in SERVICE_TYPE_CATEGORIES {
        assert!(ServiceTypeCode::parse(code_text).is_ok(), "{code_text}");
        assert!(seen.insert(*code_text), "{code_text} twice");
        assert!(!name.is_empty());
    }
}

#[test]
fn lists_longer_than_the_limit_are_rejected() {
    let lines = vec![line(Some(ReceiptPurpose::ConnectionSupport), 100); 101];
    given::<S>([])
        .when(apply(care_office(&["11"]), 0, lines), at(2025, 11, 20))
        .then_rejected(R::TooManyItems);
    let lines = vec![line(Some(ReceiptPurpose::ConnectionSupport), 100); 100];
    given::<S>([])
        .when(apply(care_office(&["11"]), 0, lines), at(2025, 11, 20))
        .then_accepted();
}

#[test]
fn absurd_reader_counts_are_a_mismatch_not_an_overflow() {
    let lines = vec![
        line(
            Some(ReceiptPurpose::CardReaders { count: u32::MAX }),
            15_400,
        ),
        line(
            Some(ReceiptPurpose::CardReaders { count: u32::MAX }),
            15_400,
        ),
    ];
    given::<S>([])
        .when(
            apply(care_office(&["11"]), 2, lines.clone()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ReaderCountMismatch);
    let calculation = calculate(&care_office(&["11"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.readers_on_receipts, u32::MAX);
    assert!(calculation.payable <= Yen::new(64_000));
}

#[test]
fn an_undecided_notice_is_recorded_overdue_once_after_its_due_date() {
    // Applied 2025-11-20: the notice is due by 2025-12-31.
    let history = in_review(care_office(&["11"]));
    given::<S>(history.clone())
        .when(SubsidyCommand::RecordNoticeOverdue, at(2025, 12, 31))
        .then_rejected(R::DeadlineNotReached);
    let state = given::<S>(history.clone())
        .when(SubsidyCommand::RecordNoticeOverdue, at(2026, 1, 1))
        .then(vec![
            NoticeOverdue {
                notice_due_by: d(2025, 12, 31),
                recorded_on: d(2026, 1, 1),
            }
            .into(),
        ]);
    assert!(state.notice_overdue_recorded);
    let mut recorded = history.clone();
    recorded.push(
        NoticeOverdue {
            notice_due_by: d(2025, 12, 31),
            recorded_on: d(2026, 1, 1),
        }
        .into(),
    );
    given::<S>(recorded)
        .when(SubsidyCommand::RecordNoticeOverdue, at(2026, 1, 2))
        .then_rejected(R::DeadlineAlreadyRecorded);
    given::<S>([])
        .when(SubsidyCommand::RecordNoticeOverdue, at(2026, 1, 2))
        .then_rejected(R::SubsidyNotApplied);
}

#[test]
fn a_decided_or_closed_application_is_never_notice_overdue() {
    let mut decided = in_review(care_office(&["11"]));
    let (events, _) = given::<S>(decided.clone())
        .when(decide(), at(2025, 12, 10))
        .then_accepted();
    decided.extend(events);
    given::<S>(decided)
        .when(SubsidyCommand::RecordNoticeOverdue, at(2026, 1, 5))
        .then_rejected(R::SubsidyAlreadyDecided);
    let mut closed = in_review(care_office(&["11"]));
    let (events, _) = given::<S>(closed.clone())
        .when(
            SubsidyCommand::FindDeficiency {
                reason: "通帳の写しが不鮮明".to_owned(),
            },
            at(2025, 12, 10),
        )
        .then_accepted();
    closed.extend(events);
    given::<S>(closed)
        .when(SubsidyCommand::RecordNoticeOverdue, at(2026, 1, 5))
        .then_rejected(R::SubsidyClosed);
}

#[test]
fn an_unpaid_subsidy_is_recorded_payment_overdue_once_and_a_paid_one_never() {
    // Applied 2025-11-20: the payment is due by 2026-01-31.
    let mut decided = in_review(care_office(&["11"]));
    let (events, _) = given::<S>(decided.clone())
        .when(decide(), at(2025, 12, 10))
        .then_accepted();
    decided.extend(events);
    given::<S>(decided.clone())
        .when(SubsidyCommand::RecordPaymentOverdue, at(2026, 1, 31))
        .then_rejected(R::DeadlineNotReached);
    let overdue: SubsidyEvent = PaymentOverdue {
        payment_due_by: d(2026, 1, 31),
        recorded_on: d(2026, 2, 1),
    }
    .into();
    let state = given::<S>(decided.clone())
        .when(SubsidyCommand::RecordPaymentOverdue, at(2026, 2, 1))
        .then(vec![overdue.clone()]);
    assert!(state.payment_overdue_recorded);
    let mut recorded = decided.clone();
    recorded.push(overdue);
    given::<S>(recorded)
        .when(SubsidyCommand::RecordPaymentOverdue, at(2026, 2, 2))
        .then_rejected(R::DeadlineAlreadyRecorded);
    let mut paid = decided;
    paid.push(
        SubsidyPaid {
            amount: Yen::new(37_400),
            paid_on: d(2026, 1, 20),
            after_payment_due: false,
        }
        .into(),
    );
    given::<S>(paid)
        .when(SubsidyCommand::RecordPaymentOverdue, at(2026, 2, 2))
        .then_rejected(R::SubsidyClosed);
}

/// An earlier application of the same office, decided for `payable` yen and
/// `readers` readers, whose receipts were `receipts`.
fn earlier_decided(payable: u64, readers: u32, receipts: &[u8]) -> EarlierApplication {
    EarlierApplication {
        standing: EarlierStanding::Decided {
            payable: Yen::new(payable),
            readers,
        },
        window_from: SubsidyPolicy::FY2025.window_from,
        receipts: receipts.iter().map(|b| doc(*b).sha256().clone()).collect(),
    }
}

fn receipts_on(reader_doc: u8, support_doc: u8) -> Vec<ReceiptLine> {
    vec![
        ReceiptLine {
            purpose: Some(ReceiptPurpose::CardReaders { count: 2 }),
            amount: Yen::new(15_400),
            receipt: doc(reader_doc),
        },
        ReceiptLine {
            purpose: Some(ReceiptPurpose::ConnectionSupport),
            amount: Yen::new(22_000),
            receipt: doc(support_doc),
        },
    ]
}

fn applied_with(lines: Vec<ReceiptLine>) -> Vec<SubsidyEvent> {
    let (notice_due_by, payment_due_by) = SubsidyPolicy::FY2025.due_dates(d(2026, 1, 20));
    vec![
        SubsidyApplied {
            applicant: care_office(&["11"]),
            applied_on: d(2026, 1, 20),
            reader_count: 2,
            receipt_lines: lines,
            passbook: doc(4),
            policy: SubsidyPolicy::FY2025,
            notice_due_by,
            payment_due_by,
        }
        .into(),
        ReviewStarted {
            started_on: d(2026, 2, 1),
        }
        .into(),
    ]
}

/// Defect 1: the limit belongs to the office. Given an office paid 37,400
/// yen for 2 readers, when its second application (new receipts: 2 readers
/// 15,400 + support 22,000) is decided, then only the reader left under the
/// cap of 3 and the 26,600 yen left of the 64,000 limit are paid.
#[test]
fn a_second_application_gets_only_what_the_office_limit_left() {
    let earlier = vec![earlier_decided(37_400, 2, &[3])];
    let (events, _) = given::<S>(applied_with(receipts_on(20, 21)))
        .when(decide_after(earlier), at(2026, 2, 10))
        .then_accepted();
    let SubsidyEvent::SubsidyDecided(decided) = &events[0] else {
        panic!("expected a decision: {events:?}")
    };
    assert_eq!(decided.calculation.earlier_payable, Yen::new(37_400));
    assert_eq!(decided.calculation.earlier_readers, 2);
    // One reader of two left under the cap: 7,700 of 15,400.
    assert_eq!(decided.calculation.eligible_readers, Yen::new(7_700));
    assert_eq!(decided.payable, Yen::new(26_600));
    // The same application as the office's first is paid in full.
    let (events, _) = given::<S>(applied_with(receipts_on(20, 21)))
        .when(decide(), at(2026, 2, 10))
        .then_accepted();
    let SubsidyEvent::SubsidyDecided(first) = &events[0] else {
        panic!("expected a decision")
    };
    assert_eq!(first.payable, Yen::new(37_400));
}

/// Defect 1: a receipt is paid once. Given an office paid on receipt 3,
/// when it applies again with the same receipt, then it is refused; after
/// a deficiency closing the same receipt may be claimed again (the
/// re-application); and a receipt that slipped in anyway counts nothing.
#[test]
fn a_receipt_already_claimed_cannot_be_claimed_again() {
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11")],
                vec![earlier_decided(37_400, 2, &[3])],
            ),
            at(2026, 1, 20),
        )
        .then_rejected(R::ReceiptAlreadyClaimed);
    let pending = EarlierApplication {
        standing: EarlierStanding::Pending,
        ..earlier_decided(0, 0, &[3])
    };
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11")],
                vec![pending],
            ),
            at(2026, 1, 20),
        )
        .then_rejected(R::ReceiptAlreadyClaimed);
    let deficient = EarlierApplication {
        standing: EarlierStanding::ClosedForDeficiency,
        ..earlier_decided(0, 0, &[3])
    };
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11")],
                vec![deficient],
            ),
            at(2026, 1, 20),
        )
        .then_accepted();
    // Receipt 3 (readers) was paid by a first application that used 10,000
    // yen and no readers; the connection support on receipt 21 is new.
    let (events, _) = given::<S>(applied_with(receipts_on(3, 21)))
        .when(
            decide_after(vec![earlier_decided(10_000, 0, &[3])]),
            at(2026, 2, 10),
        )
        .then_accepted();
    let SubsidyEvent::SubsidyDecided(decided) = &events[0] else {
        panic!("expected a decision")
    };
    assert_eq!(decided.calculation.already_claimed, Yen::new(15_400));
    assert_eq!(decided.calculation.eligible_readers, Yen::ZERO);
    assert_eq!(decided.payable, Yen::new(22_000));
}

/// Defect 1: an office whose earlier applications used the whole limit
/// cannot apply again in the window; one from another window can.
#[test]
fn an_office_whose_limit_is_used_up_cannot_apply_again() {
    let used = earlier_decided(64_000, 3, &[30]);
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11")],
                vec![used.clone()],
            ),
            at(2026, 1, 20),
        )
        .then_rejected(R::SubsidyLimitUsedUp);
    let last_year = EarlierApplication {
        window_from: d(2024, 10, 17),
        ..used
    };
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11")],
                vec![last_year],
            ),
            at(2026, 1, 20),
        )
        .then_accepted();
}

/// Defect 1: applications are decided in order, so each is judged against
/// known amounts: an earlier one still pending blocks the decision.
#[test]
fn a_later_application_is_decided_after_the_earlier_one() {
    let pending = EarlierApplication {
        standing: EarlierStanding::Pending,
        ..earlier_decided(0, 0, &[30])
    };
    given::<S>(applied_with(receipts_on(20, 21)))
        .when(decide_after(vec![pending]), at(2026, 2, 10))
        .then_rejected(R::EarlierApplicationUndecided);
    let deficient = EarlierApplication {
        standing: EarlierStanding::ClosedForDeficiency,
        ..earlier_decided(0, 0, &[30])
    };
    let (events, _) = given::<S>(applied_with(receipts_on(20, 21)))
        .when(decide_after(vec![deficient]), at(2026, 2, 10))
        .then_accepted();
    let SubsidyEvent::SubsidyDecided(decided) = &events[0] else {
        panic!("expected a decision")
    };
    assert_eq!(decided.payable, Yen::new(37_400));
}

/// What a later application learns of a stream: pending, closed for a
/// deficiency, or decided with its amount and the readers it paid for.
#[test]
fn a_stream_summarises_itself_for_later_applications() {
    let state = given::<S>(in_review(care_office(&["11"]))).state().clone();
    let summary = state.as_earlier().unwrap();
    assert_eq!(summary.standing, EarlierStanding::Pending);
    assert_eq!(summary.receipts, vec![doc(3).sha256().clone()]);
    let (_, decided) = given::<S>(in_review(care_office(&["11"])))
        .when(decide(), at(2025, 12, 10))
        .then_accepted();
    assert_eq!(
        decided.as_earlier().unwrap().standing,
        EarlierStanding::Decided {
            payable: Yen::new(37_400),
            readers: 2
        }
    );
    let (_, closed) = given::<S>(in_review(care_office(&["11"])))
        .when(
            SubsidyCommand::FindDeficiency {
                reason: "通帳の写しが不鮮明".to_owned(),
            },
            at(2025, 12, 10),
        )
        .then_accepted();
    assert_eq!(
        closed.as_earlier().unwrap().standing,
        EarlierStanding::ClosedForDeficiency
    );
    assert!(SubsidyState::default().as_earlier().is_none());
}

/// Defect 2: billing variants of one service add one limit. A group home
/// declaring 32, 37, 38 and 39 (認知症対応型共同生活介護, its 介護予防
/// counterpart and both short-stay codes) is one 居住・入所系 service:
/// 55,000 yen and 2 readers, not 220,000 and 8.
#[test]
fn billing_variants_of_one_service_add_its_limit_once() {
    let calculation = calculate(
        &care_office(&["32", "37", "38", "39"]),
        &seed_receipts(),
        &SubsidyPolicy::FY2025,
    );
    assert_eq!(calculation.limit, Yen::new(55_000));
    assert_eq!(calculation.reader_cap, 2);
    for (codes, limit, cap) in [
        (&["73", "68", "75", "69"][..], 64_000, 3),
        (&["77", "79"][..], 64_000, 3),
        (&["33", "27", "35"][..], 55_000, 2),
        (&["11", "A1", "A2", "A3", "A4"][..], 64_000, 3),
        (&["15", "78", "A5", "A6", "A7", "A8"][..], 64_000, 3),
        (&["43", "46", "AF"][..], 64_000, 3),
        (&["11", "15"][..], 128_000, 6),
        (&["11", "51"][..], 119_000, 5),
    ] {
        let calculation = calculate(&care_office(codes), &[], &SubsidyPolicy::FY2025);
        assert_eq!(calculation.limit, Yen::new(limit), "{codes:?}");
        assert_eq!(calculation.reader_cap, cap, "{codes:?}");
    }
}

/// Every code of a group and the service it counts as are in the table,
/// in the same category.
#[test]
fn every_service_group_stays_within_one_category() {
    for (variant, service) in SERVICE_GROUPS {
        let variant_category = category_of(&code(variant));
        assert!(variant_category.is_some(), "{variant} not in the table");
        assert_eq!(
            variant_category,
            category_of(&code(service)),
            "{variant} → {service}"
        );
        assert_eq!(
            service_of(&code(service)),
            *service,
            "{service} is itself grouped"
        );
    }
}

/// Defect 2: the declared service types are judged against the office's
/// registered ones.
#[test]
fn a_service_type_the_office_is_not_registered_with_is_refused() {
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11", "51"]),
                2,
                seed_receipts(),
                vec![code("11")],
                Vec::new(),
            ),
            at(2025, 11, 20),
        )
        .then_rejected(R::ServiceTypeNotRegistered);
    given::<S>([])
        .when(
            apply_after(
                care_office(&["11"]),
                2,
                seed_receipts(),
                vec![code("11"), code("51")],
                Vec::new(),
            ),
            at(2025, 11, 20),
        )
        .then_accepted();
}

/// Defect 7: a reader line with `count: 0` was paid in full.
#[test]
fn a_reader_line_without_a_count_is_refused_and_never_paid() {
    let lines = vec![
        line(Some(ReceiptPurpose::CardReaders { count: 0 }), 15_400),
        line(Some(ReceiptPurpose::ConnectionSupport), 22_000),
    ];
    given::<S>([])
        .when(
            apply(care_office(&["11"]), 0, lines.clone()),
            at(2025, 11, 20),
        )
        .then_rejected(R::ReaderLineCountZero);
    let calculation = calculate(&care_office(&["11"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.eligible_readers, Yen::ZERO);
    assert_eq!(calculation.excluded, Yen::new(15_400));
    assert_eq!(calculation.payable, Yen::new(22_000));
}

/// Defect 7: real service codes of the 総合事業 were refused as unknown.
#[test]
fn the_comprehensive_programme_codes_are_known() {
    for text in ["A3", "A4", "A7", "A8", "AF"] {
        assert_eq!(
            category_of(&code(text)),
            Some(SubsidyCategory::VisitDayShortStay),
            "{text}"
        );
        given::<S>([])
            .when(
                apply(care_office(&[text]), 2, seed_receipts()),
                at(2025, 11, 20),
            )
            .then_accepted();
    }
}

/// Defect 8: the window is in Japan time. 2026-03-13 23:59 JST is
/// 14:59 UTC (in); 2026-03-14 00:00 JST is 2026-03-13 15:00 UTC (out).
#[test]
fn the_window_opens_and_closes_at_midnight_japan_time() {
    use chrono::{TimeZone, Utc};
    for (now, accepted) in [
        (
            Utc.with_ymd_and_hms(2025, 10, 16, 14, 59, 59).unwrap(),
            false,
        ),
        (Utc.with_ymd_and_hms(2025, 10, 16, 15, 0, 0).unwrap(), true),
        (Utc.with_ymd_and_hms(2026, 3, 13, 14, 59, 59).unwrap(), true),
        (Utc.with_ymd_and_hms(2026, 3, 13, 15, 0, 0).unwrap(), false),
    ] {
        let when = given::<S>([]).when(apply(care_office(&["11"]), 2, seed_receipts()), now);
        if accepted {
            let (_, state) = when.then_accepted();
            assert!(state.application.is_some(), "{now}");
        } else {
            when.then_rejected(R::OutsideApplicationWindow);
        }
    }
}
