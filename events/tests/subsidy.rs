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

fn apply(applicant: SubsidyApplicant, readers: u32, lines: Vec<ReceiptLine>) -> SubsidyCommand {
    SubsidyCommand::Apply {
        applicant,
        reader_count: readers,
        receipt_lines: lines,
        passbook: doc(4),
        policy: SubsidyPolicy::FY2025,
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
fn medical_institutions_need_a_configured_amount_and_a_bed_count_document() {
    let lines = vec![
        line(Some(ReceiptPurpose::OpinionSending), 300_000),
        line(Some(ReceiptPurpose::CardReaders { count: 1 }), 7_700),
    ];
    given::<S>([])
        .when(apply(medical(true), 1, lines.clone()), at(2025, 11, 20))
        .then_rejected(R::MedicalSubsidyNotConfigured);
    let policy = SubsidyPolicy {
        medical_institution_limit: Some(Yen::new(250_000)),
        ..SubsidyPolicy::FY2025
    };
    let with_policy = |applicant| SubsidyCommand::Apply {
        applicant,
        reader_count: 1,
        receipt_lines: lines.clone(),
        passbook: doc(4),
        policy,
    };
    given::<S>([])
        .when(with_policy(medical(false)), at(2025, 11, 20))
        .then_rejected(R::BedCountDocumentMissing);
    given::<S>([])
        .when(with_policy(medical(true)), at(2025, 11, 20))
        .then_accepted();
    let calculation = calculate(&medical(true), &lines, &policy);
    assert_eq!(calculation.eligible_other, Yen::new(300_000));
    assert_eq!(calculation.eligible_readers, Yen::ZERO);
    assert_eq!(calculation.payable, Yen::new(250_000));
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
        .when(SubsidyCommand::Decide, at(2025, 12, 6))
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
        .when(SubsidyCommand::Decide, at(2025, 12, 10))
        .then_rejected(R::ReviewNotStarted);
    given::<S>(in_review(care_office(&["11"])))
        .when(SubsidyCommand::Decide, at(2025, 12, 10))
        .then(vec![decided(37_400, d(2025, 12, 10), false)]);
    // Notified after the end of the month after the application: flagged.
    given::<S>(in_review(care_office(&["11"])))
        .when(SubsidyCommand::Decide, at(2026, 1, 5))
        .then(vec![decided(37_400, d(2026, 1, 5), true)]);
    let mut history = in_review(care_office(&["11"]));
    history.push(decided(37_400, d(2025, 12, 10), false));
    given::<S>(history)
        .when(SubsidyCommand::Decide, at(2025, 12, 11))
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

#[test]
fn a_zero_decision_has_nothing_to_pay() {
    let lines = vec![line(None, 15_400)];
    let applied: SubsidyEvent = SubsidyApplied {
        applicant: care_office(&["11"]),
        applied_on: d(2025, 11, 20),
        reader_count: 0,
        receipt_lines: lines.clone(),
        passbook: doc(4),
        policy: SubsidyPolicy::FY2025,
        notice_due_by: d(2025, 12, 31),
        payment_due_by: d(2026, 1, 31),
    }
    .into();
    let calculation = calculate(&care_office(&["11"]), &lines, &SubsidyPolicy::FY2025);
    assert_eq!(calculation.payable, Yen::ZERO);
    let history = vec![
        applied,
        ReviewStarted {
            started_on: d(2025, 12, 1),
        }
        .into(),
        SubsidyDecided {
            calculation,
            payable: Yen::ZERO,
            decided_on: d(2025, 12, 10),
            after_notice_due: false,
        }
        .into(),
    ];
    given::<S>(history)
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
        .when(SubsidyCommand::Decide, at(2025, 12, 10))
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
        .when(SubsidyCommand::Decide, at(2025, 12, 10))
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
