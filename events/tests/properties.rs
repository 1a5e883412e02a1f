//! Properties of the deciders: validity arithmetic, ledgers that never go
//! negative, replay that reproduces the state the decider saw, and events
//! that survive the envelope.

mod common;

use chrono::{Days, NaiveDate};
use common::*;
use kiban_events::domain::certification::*;
use kiban_events::domain::dates::{is_month_end, validity_months, validity_until};
use kiban_events::domain::insured::*;
use kiban_events::domain::subsidy::*;
use kiban_events::domain::testing::assert_round_trips;
use kiban_events::domain::{
    CareLevel, CopaymentRatio, Decider, DomainEvent, EquipmentCategory, RejectionCode, TerminalId,
    Yen,
};
use proptest::prelude::*;

fn date_strategy() -> impl Strategy<Value = NaiveDate> {
    (0u64..(20 * 366)).prop_map(|days| d(2021, 4, 1) + Days::new(days))
}

/// Runs `commands` through the decider one by one, each at its date,
/// keeping the accepted events; after each accepted decision checks that
/// the events round-trip, that `check` holds, and at the end that replaying
/// everything gives the state the decider last saw.
fn run<D: Decider>(
    history: Vec<D::Event>,
    commands: Vec<(NaiveDate, D::Command)>,
    mut check: impl FnMut(&D::State, &[D::Event]),
) -> Vec<D::Event> {
    let mut state = D::replay(&history);
    let mut all = history;
    for (day, command) in commands {
        let now = at(
            chrono::Datelike::year(&day),
            chrono::Datelike::month(&day),
            chrono::Datelike::day(&day),
        );
        if let Ok(events) = D::decide(&state, &command, now) {
            for event in &events {
                assert_round_trips(event);
                state = D::evolve(state, event);
            }
            check(&state, &events);
            all.extend(events);
        }
    }
    assert_eq!(
        D::replay(&all),
        state,
        "replay differs from the state the decider saw"
    );
    all
}

proptest! {
    #[test]
    fn validity_always_ends_on_a_month_end_and_counts_back_to_its_months(
        from in date_strategy(),
        months in 1u32..=48,
    ) {
        let until = validity_until(from, months);
        prop_assert!(is_month_end(until));
        prop_assert!(until > from);
        prop_assert_eq!(validity_months(from, until), Some(months));
    }

    #[test]
    fn decided_validity_stays_within_the_range_of_its_kind(
        applied_on in date_strategy(),
        months in 1u32..=60,
        renewal in any::<bool>(),
        same_level in any::<bool>(),
    ) {
        let level = CareLevel::Care2;
        let previous = if same_level { CareLevel::Care2 } else { CareLevel::Care1 };
        let valid_until = validity_until(applied_on + Days::new(30), 12);
        let (kind, current) = if renewal {
            (ApplicationKind::Renewal, Some(CurrentCertification {
                level: previous,
                valid_from: applied_on - Days::new(300),
                valid_until,
            }))
        } else {
            (ApplicationKind::New, None)
        };
        let filed = ApplicationFiled {
            insurer: insurer(),
            insured: insured(),
            seq: 1,
            kind,
            applicant: Applicant::Person,
            applied_on,
            current_certification: current,
            insured_name: None,
        };
        let start = validity_start(&filed);
        let history: Vec<CertificationEvent> = vec![
            filed.into(),
            InvestigationCompleted { completed_on: applied_on, investigation_sheet: doc(1) }.into(),
            OpinionReceived { institution: clinic(), opinion: doc(2), received_on: applied_on }.into(),
            PrimaryJudgmentRecorded { level, judged_on: applied_on }.into(),
            SecondaryJudgmentRecorded { level, judged_on: applied_on }.into(),
        ];
        let state = CertificationApplication::replay(&history);
        let now = at(2041, 1, 1);
        let (min, by_rule, max) = kind.validity_months(renewal && same_level);
        // By rule: computed, on a month end, within the range.
        let events = CertificationApplication::decide(
            &state,
            &CertificationCommand::Decide { level, validity: None },
            now,
        ).unwrap();
        let CertificationEvent::CertificationDecided(decided) = &events[0] else { panic!() };
        let period = decided.validity.unwrap();
        prop_assert_eq!(period.from, start);
        prop_assert!(is_month_end(period.until));
        prop_assert_eq!(validity_months(period.from, period.until), Some(by_rule));
        // Given: accepted exactly when within the range.
        let given_period = ValidityPeriod { from: start, until: validity_until(start, months) };
        let result = CertificationApplication::decide(
            &state,
            &CertificationCommand::Decide { level, validity: Some(given_period) },
            now,
        );
        if (min..=max).contains(&months) {
            prop_assert!(result.is_ok(), "{months} months refused: {result:?}");
        } else {
            prop_assert_eq!(result.unwrap_err().code(), RejectionCode::ValidityOutOfRange);
        }
    }
}

/// An insured-person operation for the ledger property.
#[derive(Debug, Clone)]
enum Op {
    Apply {
        prior: u32,
    },
    Work {
        prior: u32,
        cost: u64,
    },
    Buy {
        category: usize,
        cost: u64,
        reason: bool,
    },
    Move,
    Certify {
        level: usize,
    },
    Consent {
        days: u64,
    },
    View,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..6).prop_map(|prior| Op::Apply { prior }),
        (0u32..6, 1u64..250_000).prop_map(|(prior, cost)| Op::Work { prior, cost }),
        (0usize..4, 1u64..80_000, any::<bool>()).prop_map(|(category, cost, reason)| Op::Buy {
            category,
            cost,
            reason
        }),
        Just(Op::Move),
        (1usize..8).prop_map(|level| Op::Certify { level }),
        (0u64..400).prop_map(|days| Op::Consent { days }),
        Just(Op::View),
    ]
}

fn insured_history() -> Vec<InsuredEvent> {
    let mut history: Vec<InsuredEvent> = vec![
        CertificationRecorded {
            application_seq: 0,
            level: CareLevel::Support1,
            validity: ValidityPeriod {
                from: d(2026, 4, 1),
                until: d(2029, 3, 31),
            },
        }
        .into(),
    ];
    for (year, from) in [
        (2025, d(2026, 4, 1)),
        (2026, d(2026, 8, 1)),
        (2027, d(2027, 8, 1)),
        (2028, d(2028, 8, 1)),
    ] {
        history.push(
            CopaymentCertificateIssued {
                ratio: CopaymentRatio::new((year % 3) as u8 + 1).unwrap(),
                valid_from: from,
                valid_until: kiban_events::domain::dates::next_july_31(from),
            }
            .into(),
        );
    }
    history
}

fn insured_command(op: &Op, day: NaiveDate, seq: &mut u32) -> InsuredCommand {
    const CATEGORIES: [EquipmentCategory; 4] = [
        EquipmentCategory::BathingAid,
        EquipmentCategory::CommodeSeat,
        EquipmentCategory::Walker,
        EquipmentCategory::LiftSling,
    ];
    match op {
        Op::Apply { prior } => InsuredCommand::ApplyForHomeModification {
            prior_application: *prior,
            applied_on: day,
            planned_cost: Yen::new(100_000),
        },
        Op::Work { prior, cost } => InsuredCommand::RecordHomeModificationWork {
            prior_application: *prior,
            work_started_on: day,
            receipt_on: day,
            cost: Yen::new(*cost),
        },
        Op::Buy {
            category,
            cost,
            reason,
        } => InsuredCommand::RecordEquipmentPurchase {
            category: CATEGORIES[*category],
            purchased_on: day,
            cost: Yen::new(*cost),
            seller_designated: true,
            replacement_reason: reason.then(|| "破損".to_owned()),
        },
        Op::Move => InsuredCommand::RecordMove {
            moved_on: day,
            address: None,
        },
        Op::Certify { level } => {
            *seq += 1;
            InsuredCommand::RecordCertification {
                application_seq: *seq,
                level: CareLevel::ALL[*level],
                validity: ValidityPeriod {
                    from: day,
                    until: d(2029, 3, 31),
                },
            }
        }
        Op::Consent { days } => InsuredCommand::GiveConsent {
            office: office(),
            terminal: TerminalId::parse("T-01").unwrap(),
            expires_at: at(2026, 4, 1) + chrono::Duration::days(*days as i64 + 1),
        },
        Op::View => InsuredCommand::RecordView {
            office: office(),
            terminal: TerminalId::parse("T-01").unwrap(),
            insurer_sharing_enabled: true,
        },
    }
}

proptest! {
    #[test]
    fn benefit_ledgers_never_go_negative_and_replay_matches(
        steps in proptest::collection::vec((0u64..25, op_strategy()), 1..40),
    ) {
        let mut day = d(2026, 4, 1);
        let mut seq = 0;
        let commands: Vec<(NaiveDate, InsuredCommand)> = steps
            .iter()
            .map(|(gap, op)| {
                day = day + Days::new(*gap);
                (day, insured_command(op, day, &mut seq))
            })
            .collect();
        run::<InsuredPerson>(insured_history(), commands, |state, events| {
            let ledger = &state.home_modification;
            assert!(ledger.used <= HOME_MODIFICATION_CAP, "home modification over the cap");
            assert_eq!(ledger.remaining().checked_add(ledger.used), Some(HOME_MODIFICATION_CAP));
            for year in state.equipment.values() {
                assert!(year.used <= EQUIPMENT_CAP_PER_FISCAL_YEAR, "equipment over the cap");
            }
            for event in events {
                match event {
                    InsuredEvent::HomeModificationWorkRecorded(e) => {
                        assert!(e.counted_cost <= e.cost && e.benefit <= e.counted_cost);
                        assert_eq!(e.capped, e.counted_cost < e.cost);
                    }
                    InsuredEvent::EquipmentPurchaseRecorded(e) => {
                        assert!(e.counted_cost <= e.cost && e.benefit <= e.counted_cost);
                        assert_eq!(e.capped, e.counted_cost < e.cost);
                    }
                    _ => {}
                }
            }
        });
    }
}

fn certification_command(choice: u8, day: NaiveDate) -> CertificationCommand {
    match choice % 12 {
        0 => CertificationCommand::FileApplication {
            insurer: insurer(),
            insured: insured(),
            seq: 1,
            kind: ApplicationKind::New,
            applicant: Applicant::Family { name: None },
            applied_on: day,
            current_certification: None,
            insured_name: None,
        },
        1 => CertificationCommand::ScheduleInvestigation {
            scheduled_on: day + Days::new(3),
        },
        2 => CertificationCommand::CompleteInvestigation {
            investigation_sheet: doc(1),
        },
        3 => CertificationCommand::RequestOpinion {
            institution: clinic(),
        },
        4 => CertificationCommand::ReceiveOpinion {
            institution: clinic(),
            opinion: doc(2),
        },
        5 => CertificationCommand::RecordPrimaryJudgment {
            level: CareLevel::Care1,
        },
        6 => CertificationCommand::RecordSecondaryJudgment {
            level: CareLevel::Care1,
        },
        7 => CertificationCommand::Decide {
            level: CareLevel::Care1,
            validity: None,
        },
        8 => CertificationCommand::NotifyExtension {
            reason: "調査日程の調整".to_owned(),
            expected_decision_on: day + Days::new(40),
        },
        9 => CertificationCommand::RecordDeadlineReached,
        10 => CertificationCommand::Withdraw { reason: None },
        _ => CertificationCommand::Reject {
            reason: "資格なし".to_owned(),
        },
    }
}

proptest! {
    #[test]
    fn certification_replay_matches_and_closed_applications_stay_closed(
        steps in proptest::collection::vec((0u64..12, 0u8..12), 1..40),
    ) {
        let mut day = d(2026, 4, 1);
        let commands: Vec<(NaiveDate, CertificationCommand)> = steps
            .iter()
            .map(|(gap, choice)| {
                day = day + Days::new(*gap);
                (day, certification_command(*choice, day))
            })
            .collect();
        let mut closed = false;
        run::<CertificationApplication>(vec![], commands, |state, _| {
            assert!(!closed, "an event was accepted after the application closed");
            closed = !matches!(state.status, CertificationStatus::Open | CertificationStatus::NotFiled);
            if let Some(decision) = &state.decision
                && let Some(validity) = decision.validity
            {
                assert!(is_month_end(validity.until));
            }
        });
    }

    #[test]
    fn subsidy_payable_never_exceeds_the_limit_or_the_receipts(
        codes in proptest::sample::subsequence(vec!["11", "43", "51", "32", "17", "77"], 1..4),
        lines in proptest::collection::vec((0u8..4, 1u32..6, 1u64..200_000), 0..6),
    ) {
        let applicant = SubsidyApplicant::CareOffice {
            office: office(),
            service_types: codes.iter().map(|c| kiban_events::domain::ServiceTypeCode::parse(c).unwrap()).collect(),
            designation_notices: vec![],
        };
        let lines: Vec<ReceiptLine> = lines
            .iter()
            .map(|(purpose, count, amount)| ReceiptLine {
                purpose: match purpose {
                    0 => None,
                    1 => Some(ReceiptPurpose::CardReaders { count: *count }),
                    2 => Some(ReceiptPurpose::ConnectionSupport),
                    _ => Some(ReceiptPurpose::OpinionSending),
                },
                amount: Yen::new(*amount),
                receipt: doc(3),
            })
            .collect();
        let calculation = calculate(&applicant, &lines, &SubsidyPolicy::FY2025);
        let total = lines.iter().fold(Yen::ZERO, |t, l| t.checked_add(l.amount).unwrap());
        prop_assert!(calculation.payable <= calculation.limit);
        prop_assert!(calculation.payable <= total);
        prop_assert_eq!(
            calculation.eligible_readers.checked_add(calculation.eligible_other).unwrap().checked_add(calculation.excluded),
            Some(total)
        );
    }
}

/// Every event type in every catalog is produced by some decision in these
/// scripted runs, and every produced event round-trips (inside `run`).
#[test]
fn every_catalogued_event_is_emitted_by_a_decider_and_round_trips() {
    use kiban_events::domain::insurer::{Insurer, InsurerCommand};
    use kiban_events::domain::office::{Loss, Office, OfficeCommand};
    use std::collections::BTreeSet;

    fn types<E: DomainEvent>(events: &[E]) -> BTreeSet<&'static str> {
        events.iter().map(|e| e.event_type()).collect()
    }
    fn catalog<E: DomainEvent>() -> BTreeSet<&'static str> {
        E::CATALOG.iter().map(|s| s.event_type).collect()
    }
    fn no_check<S, E>(_: &S, _: &[E]) {}

    // Certification: one application decided, one withdrawn, one rejected,
    // one overdue.
    let main = vec![
        (d(2026, 4, 1), certification_command(0, d(2026, 4, 1))),
        (d(2026, 4, 2), certification_command(1, d(2026, 4, 2))),
        (d(2026, 4, 5), certification_command(2, d(2026, 4, 5))),
        (d(2026, 4, 5), certification_command(3, d(2026, 4, 5))),
        (d(2026, 4, 9), certification_command(4, d(2026, 4, 9))),
        (d(2026, 4, 10), certification_command(8, d(2026, 4, 10))),
        (d(2026, 4, 20), certification_command(5, d(2026, 4, 20))),
        (d(2026, 4, 27), certification_command(6, d(2026, 4, 27))),
        (d(2026, 4, 28), certification_command(7, d(2026, 4, 28))),
    ];
    let mut certification = run::<CertificationApplication>(vec![], main, no_check);
    for script in [
        vec![
            (d(2026, 4, 1), certification_command(0, d(2026, 4, 1))),
            (d(2026, 5, 2), certification_command(9, d(2026, 5, 2))),
            (d(2026, 5, 3), certification_command(10, d(2026, 5, 3))),
        ],
        vec![
            (d(2026, 4, 1), certification_command(0, d(2026, 4, 1))),
            (d(2026, 4, 3), certification_command(11, d(2026, 4, 3))),
        ],
    ] {
        certification.extend(run::<CertificationApplication>(vec![], script, no_check));
    }
    assert_eq!(types(&certification), catalog::<CertificationEvent>());

    // Insured person.
    let mut seq = 0;
    let mut insured_commands: Vec<(NaiveDate, InsuredCommand)> = [
        Op::Certify { level: 3 },
        Op::Apply { prior: 1 },
        Op::Work {
            prior: 1,
            cost: 50_000,
        },
        Op::Buy {
            category: 0,
            cost: 10_000,
            reason: false,
        },
        Op::Move,
        Op::Consent { days: 100 },
        Op::View,
    ]
    .iter()
    .map(|op| {
        (
            d(2026, 4, 10),
            insured_command(op, d(2026, 4, 10), &mut seq),
        )
    })
    .collect();
    insured_commands.extend([
        (
            d(2026, 4, 10),
            InsuredCommand::IssueCostLimitCertificate {
                stage: kiban_events::domain::CostLimitStage::Stage1,
                applied_on: d(2026, 4, 10),
                for_coming_period: false,
            },
        ),
        (
            d(2026, 4, 10),
            InsuredCommand::RegisterCarePlanOffice {
                office: office(),
                office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
                filed_on: d(2026, 4, 10),
                pending_application_on: None,
            },
        ),
        (
            d(2026, 4, 11),
            InsuredCommand::RegisterCarePlanOffice {
                office: other_office(),
                office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
                filed_on: d(2026, 4, 11),
                pending_application_on: None,
            },
        ),
        (
            d(2026, 4, 11),
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(2).unwrap(),
                valid_from: d(2026, 4, 11),
            },
        ),
        (
            d(2026, 4, 12),
            InsuredCommand::RevokeConsent { office: office() },
        ),
        (
            d(2026, 4, 12),
            InsuredCommand::GiveConsent {
                office: other_office(),
                terminal: TerminalId::parse("T-02").unwrap(),
                expires_at: at(2026, 4, 13),
            },
        ),
        (
            d(2026, 4, 14),
            InsuredCommand::ExpireConsent {
                office: other_office(),
            },
        ),
        (d(2029, 2, 1), InsuredCommand::OpenRenewalWindow),
        (d(2029, 2, 1), InsuredCommand::RecordOwnView),
        (
            d(2029, 2, 2),
            InsuredCommand::LinkCard {
                issuer: "CN=kiban test JPKI user authentication CA".to_owned(),
                serial: "1001".to_owned(),
            },
        ),
        (
            d(2029, 2, 3),
            InsuredCommand::RecordForgotten {
                forgotten_at: common::at(2029, 2, 3),
                key_id: Some("9c2f4e61a0b87d35e4c1f0a2".to_owned()),
            },
        ),
    ]);
    let insured_events = run::<InsuredPerson>(insured_history(), insured_commands, no_check);
    assert_eq!(types(&insured_events), catalog::<InsuredEvent>());

    // Office.
    let terminal = TerminalId::parse("T-01").unwrap();
    let credential =
        |b: u8| kiban_events::domain::Sha256Digest::parse(&format!("{b:02x}").repeat(32)).unwrap();
    let office_events = run::<Office>(
        vec![],
        vec![
            (
                d(2026, 4, 1),
                OfficeCommand::Register {
                    office: office(),
                    service_types: vec![
                        kiban_events::domain::ServiceTypeCode::parse("43").unwrap(),
                    ],
                },
            ),
            (
                d(2026, 4, 1),
                OfficeCommand::RegisterTerminal {
                    terminal: terminal.clone(),
                    credential: credential(1),
                },
            ),
            (
                d(2026, 4, 2),
                OfficeCommand::ReportTerminalLost {
                    terminal: terminal.clone(),
                    loss: Loss::Lost,
                    reported_by: None,
                },
            ),
            (
                d(2026, 4, 3),
                OfficeCommand::ReinstateTerminal {
                    terminal,
                    credential: credential(2),
                },
            ),
        ],
        no_check,
    );
    assert_eq!(
        types(&office_events),
        catalog::<kiban_events::domain::office::OfficeEvent>()
    );

    // Insurer.
    let insurer_events = run::<Insurer>(
        vec![],
        vec![
            (
                d(2026, 4, 1),
                InsurerCommand::Onboard { insurer: insurer() },
            ),
            (
                d(2026, 9, 1),
                InsurerCommand::CompleteStandardisation {
                    completed_on: d(2026, 9, 1),
                },
            ),
            (
                d(2026, 10, 1),
                InsurerCommand::CompleteDataTransmission {
                    completed_on: d(2026, 10, 1),
                },
            ),
            (d(2026, 12, 7), InsurerCommand::StartBackfill {}),
            (d(2026, 12, 8), InsurerCommand::CompleteBackfill {}),
        ],
        no_check,
    );
    assert_eq!(
        types(&insurer_events),
        catalog::<kiban_events::domain::insurer::InsurerEvent>()
    );

    // Subsidy: one paid, one overdue, one closed for a deficiency.
    let apply = SubsidyCommand::Apply {
        applicant: SubsidyApplicant::CareOffice {
            office: office(),
            service_types: vec![kiban_events::domain::ServiceTypeCode::parse("11").unwrap()],
            designation_notices: vec![DesignationNotice {
                service_type: kiban_events::domain::ServiceTypeCode::parse("11").unwrap(),
                document: doc(9),
            }],
        },
        reader_count: 2,
        receipt_lines: vec![
            ReceiptLine {
                purpose: Some(ReceiptPurpose::CardReaders { count: 2 }),
                amount: Yen::new(15_400),
                receipt: doc(3),
            },
            ReceiptLine {
                purpose: Some(ReceiptPurpose::ConnectionSupport),
                amount: Yen::new(22_000),
                receipt: doc(3),
            },
        ],
        passbook: doc(4),
        policy: SubsidyPolicy::FY2025,
        record: ApplicantRecord {
            registered_service_types: vec![
                kiban_events::domain::ServiceTypeCode::parse("11").unwrap(),
            ],
            earlier: Vec::new(),
        },
    };
    let mut subsidy = run::<SubsidyApplication>(
        vec![],
        vec![
            (d(2025, 11, 1), apply.clone()),
            (d(2025, 12, 1), SubsidyCommand::StartReview),
            (
                d(2025, 12, 2),
                SubsidyCommand::Decide {
                    earlier: Vec::new(),
                    medical_institution_limit: None,
                },
            ),
            (
                d(2026, 1, 5),
                SubsidyCommand::Pay {
                    amount: Yen::new(37_400),
                },
            ),
        ],
        no_check,
    );
    // And one left undecided and unpaid past its due dates.
    subsidy.extend(run::<SubsidyApplication>(
        vec![],
        vec![
            (d(2025, 11, 1), apply.clone()),
            (d(2026, 1, 2), SubsidyCommand::RecordNoticeOverdue),
            (d(2026, 2, 2), SubsidyCommand::RecordPaymentOverdue),
        ],
        no_check,
    ));
    subsidy.extend(run::<SubsidyApplication>(
        vec![],
        vec![
            (d(2025, 11, 1), apply),
            (d(2025, 12, 1), SubsidyCommand::StartReview),
            (
                d(2025, 12, 2),
                SubsidyCommand::FindDeficiency {
                    reason: "通帳の写しが不鮮明".to_owned(),
                },
            ),
        ],
        no_check,
    ));
    assert_eq!(types(&subsidy), catalog::<SubsidyEvent>());
}

#[test]
fn reading_back_refuses_unknown_types_versions_and_payloads() {
    use kiban_events::Payload;
    use kiban_events::domain::DecodeError;
    let payload = Payload::from_json(r#"{"scheduled_on":"2026-04-20"}"#).unwrap();
    assert!(
        CertificationEvent::from_recorded("certification.investigation_scheduled", 1, &payload)
            .is_ok()
    );
    assert!(matches!(
        CertificationEvent::from_recorded("certification.unheard_of", 1, &payload),
        Err(DecodeError::UnknownEventType(_))
    ));
    assert!(matches!(
        CertificationEvent::from_recorded("certification.investigation_scheduled", 2, &payload),
        Err(DecodeError::UnsupportedSchemaVersion {
            found: 2,
            current: 1,
            ..
        })
    ));
    let bad = Payload::from_json(r#"{"scheduled_on":"2026-02-30"}"#).unwrap();
    assert!(matches!(
        CertificationEvent::from_recorded("certification.investigation_scheduled", 1, &bad),
        Err(DecodeError::Payload { .. })
    ));
    // A level outside the list never reads back.
    let level = Payload::from_json(r#"{"level":"care_6","judged_on":"2026-04-20"}"#).unwrap();
    assert!(
        CertificationEvent::from_recorded("certification.primary_judgment_recorded", 1, &level)
            .is_err()
    );
}

#[test]
fn old_bytes_of_version_one_still_read() {
    // Stored bytes are a permanent promise (STYLE.md): this literal is what
    // version 1 of `certification.decided` looks like on disk.
    let stored = kiban_events::Payload::from_json(
        r#"{"level":"care_2","decided_on":"2026-05-10","validity":{"from":"2026-04-15","until":"2026-10-31"},"validity_months":6}"#,
    )
    .unwrap();
    let event = CertificationEvent::from_recorded("certification.decided", 1, &stored).unwrap();
    assert_eq!(
        event,
        CertificationDecided {
            level: CareLevel::Care2,
            decided_on: d(2026, 5, 10),
            validity: Some(ValidityPeriod {
                from: d(2026, 4, 15),
                until: d(2026, 10, 31)
            }),
            validity_months: Some(6),
        }
        .into()
    );
    assert_eq!(event.to_payload().as_str(), stored.as_str());
}

/// Any date a JSON payload could reasonably carry (years 1 to 9999).
fn any_date() -> impl Strategy<Value = NaiveDate> {
    (1i32..=9999, 1u32..=12, 1u32..=31).prop_map(|(y, m, day)| {
        NaiveDate::from_ymd_opt(y, m, day.min(28)).expect("day 28 exists in every month")
    })
}

fn any_level() -> impl Strategy<Value = CareLevel> {
    (0usize..8).prop_map(|i| CareLevel::ALL[i])
}

proptest! {
    /// Whatever a producer sends, a decider answers with events or a
    /// rejection: it never panics (assertions are for bugs, `Result` for the
    /// world), and what it accepts survives the envelope.
    #[test]
    fn deciders_never_panic_on_wild_commands(
        dates in proptest::collection::vec(any_date(), 6),
        level in any_level(),
        previous in any_level(),
        cost in any::<u64>(),
        count in any::<u32>(),
        now_days in 0i64..(130 * 366),
        kind in 0usize..3,
    ) {
        let now = at(1970, 1, 1) + chrono::Duration::days(now_days);
        let kind = [ApplicationKind::New, ApplicationKind::Renewal, ApplicationKind::Change][kind];
        let current = CurrentCertification { level: previous, valid_from: dates[0], valid_until: dates[1] };
        let filed = ApplicationFiled {
            insurer: insurer(), insured: insured(), seq: 1, kind,
            applicant: Applicant::Person, applied_on: dates[2],
            current_certification: Some(current.clone()),
            insured_name: None,
        };
        let judged = CertificationApplication::replay(&[
            filed.into(),
            InvestigationCompleted { completed_on: dates[2], investigation_sheet: doc(1) }.into(),
            OpinionReceived { institution: clinic(), opinion: doc(2), received_on: dates[2] }.into(),
            PrimaryJudgmentRecorded { level, judged_on: dates[2] }.into(),
            SecondaryJudgmentRecorded { level, judged_on: dates[2] }.into(),
        ]);
        let certification_commands = [
            CertificationCommand::FileApplication {
                insurer: insurer(), insured: insured(), seq: 1, kind,
                applicant: Applicant::Person, applied_on: dates[2],
                current_certification: Some(current),
                insured_name: None,
            },
            CertificationCommand::Decide { level, validity: Some(ValidityPeriod { from: dates[3], until: dates[4] }) },
            CertificationCommand::Decide { level, validity: None },
            CertificationCommand::NotifyExtension { reason: "r".to_owned(), expected_decision_on: dates[5] },
            CertificationCommand::RecordDeadlineReached,
        ];
        for command in &certification_commands {
            for state in [&CertificationState::default(), &judged] {
                if let Ok(events) = CertificationApplication::decide(state, command, now) {
                    events.iter().for_each(assert_round_trips);
                }
            }
        }
        let person = InsuredPerson::replay(&insured_history());
        let insured_commands = [
            InsuredCommand::RecordCertification { application_seq: 9, level, validity: ValidityPeriod { from: dates[0], until: dates[1] } },
            InsuredCommand::IssueCopaymentCertificate { ratio: CopaymentRatio::new(1).unwrap(), valid_from: dates[0] },
            InsuredCommand::IssueCostLimitCertificate { stage: kiban_events::domain::CostLimitStage::Stage1, applied_on: dates[1], for_coming_period: false },
            InsuredCommand::RegisterCarePlanOffice { office: office(), office_kind: CarePlanOfficeKind::HomeCareSupportOffice, filed_on: dates[2], pending_application_on: None },
            InsuredCommand::ApplyForHomeModification { prior_application: 1, applied_on: dates[3], planned_cost: Yen::new(cost) },
            InsuredCommand::RecordMove { moved_on: dates[4], address: None },
            InsuredCommand::RecordEquipmentPurchase { category: EquipmentCategory::Walker, purchased_on: dates[5], cost: Yen::new(cost), seller_designated: true, replacement_reason: None },
        ];
        for command in &insured_commands {
            if let Ok(events) = InsuredPerson::decide(&person, command, now) {
                events.iter().for_each(assert_round_trips);
            }
        }
        let with_prior = InsuredPerson::replay(&[
            insured_history(),
            vec![HomeModificationApplied { prior_application: 1, applied_on: d(2026, 4, 1), planned_cost: Yen::new(1) }.into()],
        ].concat());
        let work = InsuredCommand::RecordHomeModificationWork {
            prior_application: 1, work_started_on: dates[0], receipt_on: dates[1], cost: Yen::new(cost),
        };
        if let Ok(events) = InsuredPerson::decide(&with_prior, &work, now) {
            events.iter().for_each(assert_round_trips);
        }
        let lines = vec![ReceiptLine {
            purpose: Some(ReceiptPurpose::CardReaders { count }),
            amount: Yen::new(cost),
            receipt: doc(3),
        }];
        let apply = SubsidyCommand::Apply {
            applicant: SubsidyApplicant::CareOffice {
                office: office(),
                service_types: vec![kiban_events::domain::ServiceTypeCode::parse("11").unwrap()],
                designation_notices: vec![DesignationNotice { service_type: kiban_events::domain::ServiceTypeCode::parse("11").unwrap(), document: doc(9) }],
            },
            reader_count: count,
            receipt_lines: lines,
            passbook: doc(4),
            policy: SubsidyPolicy { window_from: dates[0], window_until: dates[1], closing_month_from: dates[2], medical_institution_limit: None },
            record: ApplicantRecord {
                registered_service_types: vec![kiban_events::domain::ServiceTypeCode::parse("11").unwrap()],
                earlier: Vec::new(),
            },
        };
        if let Ok(events) = SubsidyApplication::decide(&SubsidyState::default(), &apply, now) {
            events.iter().for_each(assert_round_trips);
            let state = SubsidyApplication::replay(&events);
            let reviewed = SubsidyApplication::evolve(state, &ReviewStarted { started_on: dates[3] }.into());
            let decided = SubsidyApplication::decide(&reviewed, &SubsidyCommand::Decide { earlier: Vec::new(), medical_institution_limit: None }, now).unwrap();
            decided.iter().for_each(assert_round_trips);
        }
    }
}

#[test]
fn the_serde_form_of_an_event_is_tagged_with_its_event_type() {
    let event: CertificationEvent = InvestigationScheduled {
        scheduled_on: d(2026, 4, 20),
    }
    .into();
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(
        json,
        r#"{"event_type":"certification.investigation_scheduled","payload":{"scheduled_on":"2026-04-20"}}"#
    );
    assert_eq!(
        serde_json::from_str::<CertificationEvent>(&json).unwrap(),
        event
    );
    // The payload inside is exactly what the envelope carries.
    assert_eq!(
        event.to_payload().as_str(),
        r#"{"scheduled_on":"2026-04-20"}"#
    );
}
