//! One test per rule of the certification workflow (DOMAIN.md), accepted and
//! rejected sides.

mod common;

use common::*;
use kiban_events::domain::CareLevel;
use kiban_events::domain::RejectionCode as R;
use kiban_events::domain::certification::*;
use kiban_events::domain::testing::given;

type C = CertificationApplication;

fn filed(
    kind: ApplicationKind,
    applied_on: chrono::NaiveDate,
    current: Option<CurrentCertification>,
) -> CertificationEvent {
    ApplicationFiled {
        insurer: insurer(),
        insured: insured(),
        seq: 1,
        kind,
        applicant: Applicant::Office { office: office() },
        applied_on,
        current_certification: current,
        insured_name: None,
    }
    .into()
}

fn file(
    kind: ApplicationKind,
    applied_on: chrono::NaiveDate,
    current: Option<CurrentCertification>,
) -> CertificationCommand {
    CertificationCommand::FileApplication {
        insurer: insurer(),
        insured: insured(),
        seq: 1,
        kind,
        applicant: Applicant::Office { office: office() },
        applied_on,
        current_certification: current,
        insured_name: None,
    }
}

fn current(level: CareLevel, until: chrono::NaiveDate) -> CurrentCertification {
    CurrentCertification {
        level,
        valid_from: d(2025, 10, 1),
        valid_until: until,
    }
}

/// The history of an application up to the secondary judgment at `level`.
fn judged(first: CertificationEvent, level: CareLevel) -> Vec<CertificationEvent> {
    vec![
        first,
        InvestigationCompleted {
            completed_on: d(2026, 4, 20),
            investigation_sheet: doc(1),
        }
        .into(),
        OpinionReceived {
            institution: clinic(),
            opinion: doc(2),
            received_on: d(2026, 4, 22),
        }
        .into(),
        PrimaryJudgmentRecorded {
            level,
            judged_on: d(2026, 4, 30),
        }
        .into(),
        SecondaryJudgmentRecorded {
            level,
            judged_on: d(2026, 5, 7),
        }
        .into(),
    ]
}

fn new_on_apr_15() -> CertificationEvent {
    filed(ApplicationKind::New, d(2026, 4, 15), None)
}

fn renewal_until_sep_30(level: CareLevel) -> CertificationEvent {
    filed(
        ApplicationKind::Renewal,
        d(2026, 8, 10),
        Some(current(level, d(2026, 9, 30))),
    )
}

fn decided(
    level: CareLevel,
    on: chrono::NaiveDate,
    from: chrono::NaiveDate,
    until: chrono::NaiveDate,
    months: u32,
) -> CertificationEvent {
    CertificationDecided {
        level,
        decided_on: on,
        validity: Some(ValidityPeriod { from, until }),
        validity_months: Some(months),
    }
    .into()
}

#[test]
fn a_new_application_is_filed_once() {
    let state = given::<C>([])
        .when(
            file(ApplicationKind::New, d(2026, 4, 15), None),
            at(2026, 4, 15),
        )
        .then(vec![new_on_apr_15()]);
    assert_eq!(state.status, CertificationStatus::Open);
    given::<C>([new_on_apr_15()])
        .when(
            file(ApplicationKind::New, d(2026, 4, 15), None),
            at(2026, 4, 16),
        )
        .then_rejected(R::ApplicationAlreadyFiled);
}

#[test]
fn an_application_date_in_the_future_is_rejected() {
    given::<C>([])
        .when(
            file(ApplicationKind::New, d(2026, 4, 16), None),
            at(2026, 4, 15),
        )
        .then_rejected(R::DateInFuture);
}

/// Issue 16 item 15: an application dated far in the past was accepted, and
/// the timers then recorded its deadline decades out of time order. A date
/// more than two years before the command's day is refused; the day itself
/// two years back is still accepted.
#[test]
fn an_application_date_more_than_two_years_back_is_rejected() {
    for too_old in [d(2024, 4, 14), d(2000, 1, 1), d(1900, 1, 1)] {
        given::<C>([])
            .when(file(ApplicationKind::New, too_old, None), at(2026, 4, 15))
            .then_rejected(R::DateTooFarInPast);
    }
    given::<C>([])
        .when(
            file(ApplicationKind::New, d(2024, 4, 15), None),
            at(2026, 4, 15),
        )
        .then(vec![filed(ApplicationKind::New, d(2024, 4, 15), None)]);
}

#[test]
fn a_new_application_while_certified_is_rejected() {
    given::<C>([])
        .when(
            file(
                ApplicationKind::New,
                d(2026, 4, 15),
                Some(current(CareLevel::Care1, d(2026, 9, 30))),
            ),
            at(2026, 4, 15),
        )
        .then_rejected(R::AlreadyCertified);
    // After the certification ended, a new application is the right one.
    given::<C>([])
        .when(
            file(
                ApplicationKind::New,
                d(2026, 10, 5),
                Some(current(CareLevel::Care1, d(2026, 9, 30))),
            ),
            at(2026, 10, 5),
        )
        .then_accepted();
}

#[test]
fn renewal_opens_sixty_days_before_the_validity_ends() {
    let until = d(2026, 9, 30);
    let opens = d(2026, 8, 1);
    given::<C>([])
        .when(
            file(
                ApplicationKind::Renewal,
                opens,
                Some(current(CareLevel::Care1, until)),
            ),
            at(2026, 8, 1),
        )
        .then_accepted();
    let rejection = given::<C>([])
        .when(
            file(
                ApplicationKind::Renewal,
                d(2026, 7, 31),
                Some(current(CareLevel::Care1, until)),
            ),
            at(2026, 7, 31),
        )
        .then_rejected(R::RenewalWindowNotOpen);
    assert!(rejection.message().contains("2026-08-01"), "{rejection}");
}

#[test]
fn renewal_and_change_need_a_current_certification() {
    for kind in [ApplicationKind::Renewal, ApplicationKind::Change] {
        given::<C>([])
            .when(file(kind, d(2026, 8, 10), None), at(2026, 8, 10))
            .then_rejected(R::CurrentCertificationMissing);
        given::<C>([])
            .when(
                file(
                    kind,
                    d(2026, 10, 1),
                    Some(current(CareLevel::Care1, d(2026, 9, 30))),
                ),
                at(2026, 10, 1),
            )
            .then_rejected(R::CurrentCertificationExpired);
    }
}

#[test]
fn a_change_may_be_filed_any_time_during_validity() {
    given::<C>([])
        .when(
            file(
                ApplicationKind::Change,
                d(2026, 1, 5),
                Some(current(CareLevel::Care1, d(2026, 9, 30))),
            ),
            at(2026, 1, 5),
        )
        .then_accepted();
}

#[test]
fn nothing_happens_before_the_application() {
    given::<C>([])
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care1,
                validity: None,
            },
            at(2026, 5, 1),
        )
        .then_rejected(R::ApplicationNotFiled);
}

#[test]
fn investigation_and_opinion_steps_are_recorded_with_their_documents() {
    let history = vec![new_on_apr_15()];
    given::<C>(history.clone())
        .when(
            CertificationCommand::ScheduleInvestigation {
                scheduled_on: d(2026, 4, 20),
            },
            at(2026, 4, 16),
        )
        .then(vec![
            InvestigationScheduled {
                scheduled_on: d(2026, 4, 20),
            }
            .into(),
        ]);
    given::<C>(history.clone())
        .when(
            CertificationCommand::ScheduleInvestigation {
                scheduled_on: d(2026, 4, 14),
            },
            at(2026, 4, 16),
        )
        .then_rejected(R::StepOutOfOrder);
    given::<C>(history.clone())
        .when(
            CertificationCommand::RequestOpinion {
                institution: clinic(),
            },
            at(2026, 4, 16),
        )
        .then(vec![
            OpinionRequested {
                institution: clinic(),
                requested_on: d(2026, 4, 16),
            }
            .into(),
        ]);
    let state = given::<C>(history)
        .when(
            CertificationCommand::ReceiveOpinion {
                institution: clinic(),
                opinion: doc(2),
            },
            at(2026, 4, 22),
        )
        .then(vec![
            OpinionReceived {
                institution: clinic(),
                opinion: doc(2),
                received_on: d(2026, 4, 22),
            }
            .into(),
        ]);
    assert_eq!(state.opinion, Some(doc(2)));
}

#[test]
fn primary_judgment_needs_the_investigation_sheet_and_the_opinion() {
    let mut history = judged(new_on_apr_15(), CareLevel::Care2);
    history.truncate(2); // filed + investigation, no opinion
    given::<C>(history.clone())
        .when(
            CertificationCommand::RecordPrimaryJudgment {
                level: CareLevel::Care2,
            },
            at(2026, 4, 30),
        )
        .then_rejected(R::StepOutOfOrder);
    let mut with_opinion = judged(new_on_apr_15(), CareLevel::Care2);
    with_opinion.truncate(3);
    given::<C>(with_opinion)
        .when(
            CertificationCommand::RecordPrimaryJudgment {
                level: CareLevel::Care2,
            },
            at(2026, 4, 30),
        )
        .then(vec![
            PrimaryJudgmentRecorded {
                level: CareLevel::Care2,
                judged_on: d(2026, 4, 30),
            }
            .into(),
        ]);
}

#[test]
fn investigation_cannot_change_after_the_primary_judgment() {
    let mut history = judged(new_on_apr_15(), CareLevel::Care2);
    history.truncate(4);
    given::<C>(history)
        .when(
            CertificationCommand::CompleteInvestigation {
                investigation_sheet: doc(9),
            },
            at(2026, 5, 1),
        )
        .then_rejected(R::StepOutOfOrder);
}

#[test]
fn secondary_judgment_needs_the_primary_and_happens_once() {
    let mut history = judged(new_on_apr_15(), CareLevel::Care2);
    history.truncate(3);
    given::<C>(history)
        .when(
            CertificationCommand::RecordSecondaryJudgment {
                level: CareLevel::Care2,
            },
            at(2026, 5, 7),
        )
        .then_rejected(R::StepOutOfOrder);
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(
            CertificationCommand::RecordSecondaryJudgment {
                level: CareLevel::Care3,
            },
            at(2026, 5, 8),
        )
        .then_rejected(R::StepOutOfOrder);
}

#[test]
fn a_decision_needs_the_secondary_judgment() {
    let mut history = judged(new_on_apr_15(), CareLevel::Care2);
    history.truncate(4);
    given::<C>(history)
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care2,
                validity: None,
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::StepOutOfOrder);
}

#[test]
fn the_decided_level_is_the_secondary_judgment() {
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care3,
                validity: None,
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::LevelDiffersFromJudgment);
}

#[test]
fn a_new_certification_runs_six_months_from_the_application_date_plus_the_rest_of_the_month() {
    let state = given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care2,
                validity: None,
            },
            at(2026, 5, 10),
        )
        .then(vec![decided(
            CareLevel::Care2,
            d(2026, 5, 10),
            d(2026, 4, 15),
            d(2026, 10, 31),
            6,
        )]);
    assert_eq!(state.status, CertificationStatus::Decided);
}

#[test]
fn a_renewal_runs_twelve_months_from_the_day_after_the_previous_validity() {
    given::<C>(judged(
        renewal_until_sep_30(CareLevel::Care1),
        CareLevel::Care2,
    ))
    .when(
        CertificationCommand::Decide {
            level: CareLevel::Care2,
            validity: None,
        },
        at(2026, 9, 10),
    )
    .then(vec![decided(
        CareLevel::Care2,
        d(2026, 9, 10),
        d(2026, 10, 1),
        d(2027, 9, 30),
        12,
    )]);
}

#[test]
fn a_given_validity_must_start_on_the_rule_date() {
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care2,
                validity: Some(ValidityPeriod {
                    from: d(2026, 5, 1),
                    until: d(2026, 10, 31),
                }),
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::ValidityStartWrong);
}

#[test]
fn a_given_validity_must_end_on_a_month_end() {
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::Care2,
                validity: Some(ValidityPeriod {
                    from: d(2026, 4, 15),
                    until: d(2026, 10, 14),
                }),
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::ValidityNotMonthEnd);
}

#[test]
fn new_and_change_validity_is_three_to_twelve_months() {
    let decide = |until| CertificationCommand::Decide {
        level: CareLevel::Care2,
        validity: Some(ValidityPeriod {
            from: d(2026, 4, 15),
            until,
        }),
    };
    // 12 months on top of the rest of April: until 2027-04-30.
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(decide(d(2027, 4, 30)), at(2026, 5, 10))
        .then(vec![decided(
            CareLevel::Care2,
            d(2026, 5, 10),
            d(2026, 4, 15),
            d(2027, 4, 30),
            12,
        )]);
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(decide(d(2027, 5, 31)), at(2026, 5, 10))
        .then_rejected(R::ValidityOutOfRange);
    given::<C>(judged(new_on_apr_15(), CareLevel::Care2))
        .when(decide(d(2026, 6, 30)), at(2026, 5, 10))
        .then_rejected(R::ValidityOutOfRange);
    let change = filed(
        ApplicationKind::Change,
        d(2026, 4, 15),
        Some(current(CareLevel::Care1, d(2026, 9, 30))),
    );
    given::<C>(judged(change, CareLevel::Care2))
        .when(decide(d(2026, 7, 31)), at(2026, 5, 10))
        .then_accepted();
}

#[test]
fn renewal_validity_is_three_to_thirty_six_months_or_forty_eight_at_the_same_level() {
    let decide = |level, until| CertificationCommand::Decide {
        level,
        validity: Some(ValidityPeriod {
            from: d(2026, 10, 1),
            until,
        }),
    };
    // A different level: 36 months is the most.
    given::<C>(judged(
        renewal_until_sep_30(CareLevel::Care1),
        CareLevel::Care2,
    ))
    .when(decide(CareLevel::Care2, d(2029, 9, 30)), at(2026, 9, 10))
    .then_accepted();
    given::<C>(judged(
        renewal_until_sep_30(CareLevel::Care1),
        CareLevel::Care2,
    ))
    .when(decide(CareLevel::Care2, d(2030, 9, 30)), at(2026, 9, 10))
    .then_rejected(R::ValidityOutOfRange);
    // The same level as before: 48 months.
    given::<C>(judged(
        renewal_until_sep_30(CareLevel::Care2),
        CareLevel::Care2,
    ))
    .when(decide(CareLevel::Care2, d(2030, 9, 30)), at(2026, 9, 10))
    .then(vec![decided(
        CareLevel::Care2,
        d(2026, 9, 10),
        d(2026, 10, 1),
        d(2030, 9, 30),
        48,
    )]);
    given::<C>(judged(
        renewal_until_sep_30(CareLevel::Care2),
        CareLevel::Care2,
    ))
    .when(decide(CareLevel::Care2, d(2030, 10, 31)), at(2026, 9, 10))
    .then_rejected(R::ValidityOutOfRange);
}

#[test]
fn a_not_eligible_decision_has_no_validity() {
    given::<C>(judged(new_on_apr_15(), CareLevel::NotEligible))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::NotEligible,
                validity: None,
            },
            at(2026, 5, 10),
        )
        .then(vec![
            CertificationDecided {
                level: CareLevel::NotEligible,
                decided_on: d(2026, 5, 10),
                validity: None,
                validity_months: None,
            }
            .into(),
        ]);
    given::<C>(judged(new_on_apr_15(), CareLevel::NotEligible))
        .when(
            CertificationCommand::Decide {
                level: CareLevel::NotEligible,
                validity: Some(ValidityPeriod {
                    from: d(2026, 4, 15),
                    until: d(2026, 10, 31),
                }),
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::ValidityNotAllowed);
}

#[test]
fn an_application_past_thirty_days_without_extension_is_overdue() {
    let state = given::<C>([new_on_apr_15()]).state().clone();
    assert_eq!(state.due_date(), Some(d(2026, 5, 15)));
    assert_eq!(overdue(&state, d(2026, 5, 15)), None);
    assert_eq!(
        overdue(&state, d(2026, 5, 18)),
        Some(Overdue {
            due_date: d(2026, 5, 15),
            days_overdue: 3
        })
    );
}

#[test]
fn an_extension_is_notified_before_the_deadline_and_moves_it() {
    let extension = CertificationCommand::NotifyExtension {
        reason: "主治医意見書の到着遅延".to_owned(),
        expected_decision_on: d(2026, 6, 10),
    };
    let state = given::<C>([new_on_apr_15()])
        .when(extension.clone(), at(2026, 5, 15))
        .then(vec![
            ExtensionNotified {
                reason: "主治医意見書の到着遅延".to_owned(),
                expected_decision_on: d(2026, 6, 10),
                notified_on: d(2026, 5, 15),
            }
            .into(),
        ]);
    assert_eq!(overdue(&state, d(2026, 5, 20)), None);
    assert!(overdue(&state, d(2026, 6, 11)).is_some());
    given::<C>([new_on_apr_15()])
        .when(extension, at(2026, 5, 16))
        .then_rejected(R::ExtensionAfterDeadline);
}

#[test]
fn an_extension_needs_a_reason_and_a_later_date() {
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::NotifyExtension {
                reason: " ".to_owned(),
                expected_decision_on: d(2026, 6, 10),
            },
            at(2026, 5, 1),
        )
        .then_rejected(R::ReasonMissing);
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::NotifyExtension {
                reason: "調査日程の調整".to_owned(),
                expected_decision_on: d(2026, 5, 15),
            },
            at(2026, 5, 1),
        )
        .then_rejected(R::ExpectedDateTooEarly);
}

#[test]
fn a_timer_records_the_deadline_once_when_overdue() {
    given::<C>([new_on_apr_15()])
        .when(CertificationCommand::RecordDeadlineReached, at(2026, 5, 15))
        .then_rejected(R::DeadlineNotReached);
    let reached: CertificationEvent = DeadlineReached {
        due_date: d(2026, 5, 15),
        reached_on: d(2026, 5, 16),
    }
    .into();
    given::<C>([new_on_apr_15()])
        .when(CertificationCommand::RecordDeadlineReached, at(2026, 5, 16))
        .then(vec![reached.clone()]);
    given::<C>([new_on_apr_15(), reached])
        .when(CertificationCommand::RecordDeadlineReached, at(2026, 5, 17))
        .then_rejected(R::DeadlineAlreadyRecorded);
}

#[test]
fn a_closed_application_accepts_nothing_more() {
    let withdrawn = given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::Withdraw { reason: None },
            at(2026, 4, 20),
        )
        .then(vec![
            ApplicationWithdrawn {
                withdrawn_on: d(2026, 4, 20),
                reason: None,
            }
            .into(),
        ]);
    assert_eq!(withdrawn.status, CertificationStatus::Withdrawn);
    assert_eq!(overdue(&withdrawn, d(2026, 12, 1)), None);
    let history = vec![
        new_on_apr_15(),
        ApplicationWithdrawn {
            withdrawn_on: d(2026, 4, 20),
            reason: None,
        }
        .into(),
    ];
    given::<C>(history)
        .when(
            CertificationCommand::RequestOpinion {
                institution: clinic(),
            },
            at(2026, 4, 21),
        )
        .then_rejected(R::ApplicationClosed);
}

#[test]
fn a_rejection_states_its_reason() {
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::Reject {
                reason: String::new(),
            },
            at(2026, 4, 20),
        )
        .then_rejected(R::ReasonMissing);
    let state = given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::Reject {
                reason: "被保険者資格なし".to_owned(),
            },
            at(2026, 4, 20),
        )
        .then_accepted()
        .1;
    assert_eq!(state.status, CertificationStatus::Rejected);
}

#[test]
fn the_stream_name_is_insurer_insured_seq() {
    assert_eq!(
        certification_stream(&insurer(), &insured(), 3).as_str(),
        "certification/131016-0000012345-3"
    );
}

#[test]
fn a_reason_longer_than_the_limit_is_rejected() {
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::Withdraw {
                reason: Some("理".repeat(501)),
            },
            at(2026, 4, 20),
        )
        .then_rejected(R::ReasonTooLong);
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::NotifyExtension {
                reason: "x".repeat(501),
                expected_decision_on: d(2026, 6, 10),
            },
            at(2026, 5, 1),
        )
        .then_rejected(R::ReasonTooLong);
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::Withdraw {
                reason: Some("理".repeat(500)),
            },
            at(2026, 4, 20),
        )
        .then_accepted();
}

#[test]
fn dates_far_outside_any_real_certification_are_rejected() {
    let far = CurrentCertification {
        level: CareLevel::Care1,
        valid_from: d(2025, 10, 1),
        valid_until: d(2100, 1, 31),
    };
    given::<C>([])
        .when(
            file(ApplicationKind::Change, d(2026, 4, 15), Some(far)),
            at(2026, 4, 15),
        )
        .then_rejected(R::DateOutOfRange);
    given::<C>([new_on_apr_15()])
        .when(
            CertificationCommand::ScheduleInvestigation {
                scheduled_on: d(2100, 1, 1),
            },
            at(2026, 4, 16),
        )
        .then_rejected(R::DateOutOfRange);
}

/// Defect 8: the 30-day deadline across a month end (and February). Given
/// a new application on 2027-01-31, when is it due? On 2027-03-02 (30 days
/// later), overdue from 2027-03-03; one on 2028-01-31 (leap year) is due on
/// 2028-03-01.
#[test]
fn the_decision_deadline_crosses_month_ends_by_counting_days() {
    for (applied_on, due, first_overdue) in [
        (d(2027, 1, 31), d(2027, 3, 2), d(2027, 3, 3)),
        (d(2028, 1, 31), d(2028, 3, 1), d(2028, 3, 2)),
        (d(2026, 12, 15), d(2027, 1, 14), d(2027, 1, 15)),
    ] {
        let state = given::<C>([filed(ApplicationKind::New, applied_on, None)])
            .state()
            .clone();
        assert_eq!(state.due_date(), Some(due), "{applied_on}");
        assert_eq!(overdue(&state, due), None, "{applied_on}");
        assert_eq!(
            overdue(&state, first_overdue),
            Some(Overdue {
                due_date: due,
                days_overdue: 1
            }),
            "{applied_on}"
        );
    }
    // The timer's record comes on the day after the due date, not before.
    let filed_jan_31 = filed(ApplicationKind::New, d(2027, 1, 31), None);
    given::<C>([filed_jan_31.clone()])
        .when(CertificationCommand::RecordDeadlineReached, at(2027, 3, 2))
        .then_rejected(R::DeadlineNotReached);
    given::<C>([filed_jan_31])
        .when(CertificationCommand::RecordDeadlineReached, at(2027, 3, 3))
        .then(vec![
            DeadlineReached {
                due_date: d(2027, 3, 2),
                reached_on: d(2027, 3, 3),
            }
            .into(),
        ]);
}
