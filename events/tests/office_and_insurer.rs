//! Rules of the care office (terminals) and the insurer rollout.

mod common;

use common::*;
use kiban_events::domain::RejectionCode as R;
use kiban_events::domain::insurer::*;
use kiban_events::domain::office::*;
use kiban_events::domain::testing::given;
use kiban_events::domain::{ServiceTypeCode, Sha256Digest, TerminalId};

fn code(text: &str) -> ServiceTypeCode {
    ServiceTypeCode::parse(text).unwrap()
}

fn terminal() -> TerminalId {
    TerminalId::parse("T-01").unwrap()
}

fn credential(byte: u8) -> Sha256Digest {
    Sha256Digest::parse(&format!("{byte:02x}").repeat(32)).unwrap()
}

fn registered() -> OfficeEvent {
    OfficeRegistered {
        office: office(),
        service_types: vec![code("11"), code("43")],
        registered_on: d(2026, 4, 1),
    }
    .into()
}

fn terminal_registered() -> OfficeEvent {
    TerminalRegistered {
        terminal: terminal(),
        credential: credential(1),
        registered_on: d(2026, 4, 2),
    }
    .into()
}

fn suspended() -> Vec<OfficeEvent> {
    vec![
        registered(),
        terminal_registered(),
        TerminalReportedLost {
            terminal: terminal(),
            loss: Loss::Stolen,
            reported_on: d(2026, 5, 1),
        }
        .into(),
        TerminalSuspended {
            terminal: terminal(),
            suspended_on: d(2026, 5, 1),
        }
        .into(),
    ]
}

#[test]
fn an_office_is_registered_once_with_distinct_service_types() {
    given::<Office>([])
        .when(
            OfficeCommand::Register {
                office: office(),
                service_types: vec![code("11"), code("43")],
            },
            at(2026, 4, 1),
        )
        .then(vec![registered()]);
    given::<Office>([registered()])
        .when(
            OfficeCommand::Register {
                office: office(),
                service_types: vec![code("11")],
            },
            at(2026, 4, 1),
        )
        .then_rejected(R::OfficeAlreadyRegistered);
    given::<Office>([])
        .when(
            OfficeCommand::Register {
                office: office(),
                service_types: vec![],
            },
            at(2026, 4, 1),
        )
        .then_rejected(R::ServiceTypesMissing);
    given::<Office>([])
        .when(
            OfficeCommand::Register {
                office: office(),
                service_types: vec![code("11"), code("11")],
            },
            at(2026, 4, 1),
        )
        .then_rejected(R::ServiceTypeDuplicated);
}

#[test]
fn terminals_are_registered_at_a_registered_office_once() {
    given::<Office>([])
        .when(
            OfficeCommand::RegisterTerminal {
                terminal: terminal(),
                credential: credential(1),
            },
            at(2026, 4, 2),
        )
        .then_rejected(R::OfficeNotRegistered);
    let state = given::<Office>([registered()])
        .when(
            OfficeCommand::RegisterTerminal {
                terminal: terminal(),
                credential: credential(1),
            },
            at(2026, 4, 2),
        )
        .then(vec![terminal_registered()]);
    assert!(state.terminal_active(&terminal()));
    given::<Office>([registered(), terminal_registered()])
        .when(
            OfficeCommand::RegisterTerminal {
                terminal: terminal(),
                credential: credential(2),
            },
            at(2026, 4, 2),
        )
        .then_rejected(R::TerminalAlreadyRegistered);
}

#[test]
fn a_lost_terminal_is_suspended_at_once() {
    let state = given::<Office>([registered(), terminal_registered()])
        .when(
            OfficeCommand::ReportTerminalLost {
                terminal: terminal(),
                loss: Loss::Stolen,
                reported_by: None,
            },
            at(2026, 5, 1),
        )
        .then(suspended()[2..].to_vec());
    assert!(!state.terminal_active(&terminal()));
    given::<Office>(suspended())
        .when(
            OfficeCommand::ReportTerminalLost {
                terminal: terminal(),
                loss: Loss::Lost,
                reported_by: None,
            },
            at(2026, 5, 2),
        )
        .then_rejected(R::TerminalAlreadySuspended);
    given::<Office>([registered()])
        .when(
            OfficeCommand::ReportTerminalLost {
                terminal: terminal(),
                loss: Loss::Lost,
                reported_by: None,
            },
            at(2026, 5, 2),
        )
        .then_rejected(R::TerminalUnknown);
}

fn terminal_named(id: &str) -> TerminalId {
    TerminalId::parse(id).unwrap()
}

/// The office with terminals T-01, T-02 and T-03, each registered.
fn three_terminals() -> Vec<OfficeEvent> {
    let mut events = vec![registered()];
    for (byte, id) in [(1, "T-01"), (2, "T-02"), (3, "T-03")] {
        events.push(
            TerminalRegistered {
                terminal: terminal_named(id),
                credential: credential(byte),
                registered_on: d(2026, 4, 2),
            }
            .into(),
        );
    }
    events
}

fn report(lost: &str, reported_by: Option<&str>) -> OfficeCommand {
    OfficeCommand::ReportTerminalLost {
        terminal: terminal_named(lost),
        loss: Loss::Stolen,
        reported_by: reported_by.map(terminal_named),
    }
}

/// Issue 16, Low (stolen terminal): the rule was the API handler's, so any
/// other path to the decider could let a stolen terminal report every other
/// terminal of its office; it is the decider's now.
#[test]
fn a_terminal_cannot_report_the_offices_last_other_active_terminal() {
    // T-01 reports T-02 while T-03 stays active besides it: accepted.
    let state = given::<Office>(three_terminals())
        .when(report("T-02", Some("T-01")), at(2026, 5, 1))
        .then(vec![
            TerminalReportedLost {
                terminal: terminal_named("T-02"),
                loss: Loss::Stolen,
                reported_on: d(2026, 5, 1),
            }
            .into(),
            TerminalSuspended {
                terminal: terminal_named("T-02"),
                suspended_on: d(2026, 5, 1),
            }
            .into(),
        ]);
    assert!(!state.terminal_active(&terminal_named("T-02")));
    let mut after = three_terminals();
    after.push(
        TerminalSuspended {
            terminal: terminal_named("T-02"),
            suspended_on: d(2026, 5, 1),
        }
        .into(),
    );
    // T-03 is now T-01's last other active terminal: refused ...
    given::<Office>(after.clone())
        .when(report("T-03", Some("T-01")), at(2026, 5, 1))
        .then_rejected(R::LastOtherTerminal);
    // ... but the portal (the federation, no reporting terminal) may, and a
    // terminal may always report itself.
    given::<Office>(after.clone())
        .when(report("T-03", None), at(2026, 5, 1))
        .then(vec![
            TerminalReportedLost {
                terminal: terminal_named("T-03"),
                loss: Loss::Stolen,
                reported_on: d(2026, 5, 1),
            }
            .into(),
            TerminalSuspended {
                terminal: terminal_named("T-03"),
                suspended_on: d(2026, 5, 1),
            }
            .into(),
        ]);
    given::<Office>(after)
        .when(report("T-01", Some("T-01")), at(2026, 5, 1))
        .then(vec![
            TerminalReportedLost {
                terminal: terminal_named("T-01"),
                loss: Loss::Stolen,
                reported_on: d(2026, 5, 1),
            }
            .into(),
            TerminalSuspended {
                terminal: terminal_named("T-01"),
                suspended_on: d(2026, 5, 1),
            }
            .into(),
        ]);
}

#[test]
fn a_suspended_terminal_is_reinstated_only_with_a_new_credential() {
    given::<Office>(suspended())
        .when(
            OfficeCommand::ReinstateTerminal {
                terminal: terminal(),
                credential: credential(1),
            },
            at(2026, 5, 3),
        )
        .then_rejected(R::CredentialReused);
    let state = given::<Office>(suspended())
        .when(
            OfficeCommand::ReinstateTerminal {
                terminal: terminal(),
                credential: credential(2),
            },
            at(2026, 5, 3),
        )
        .then(vec![
            TerminalReinstated {
                terminal: terminal(),
                credential: credential(2),
                reinstated_on: d(2026, 5, 3),
            }
            .into(),
        ]);
    assert!(state.terminal_active(&terminal()));
    given::<Office>([registered(), terminal_registered()])
        .when(
            OfficeCommand::ReinstateTerminal {
                terminal: terminal(),
                credential: credential(2),
            },
            at(2026, 5, 3),
        )
        .then_rejected(R::TerminalNotSuspended);
}

fn onboarded() -> InsurerEvent {
    InsurerOnboarded {
        insurer: insurer(),
        onboarded_on: d(2026, 4, 1),
    }
    .into()
}

fn standardised() -> InsurerEvent {
    StandardisationCompleted {
        completed_on: d(2026, 10, 1),
        after_deadline: false,
    }
    .into()
}

#[test]
fn a_back_fill_is_started_and_completed_by_an_onboarded_insurer_one_at_a_time() {
    given::<Insurer>([])
        .when(InsurerCommand::StartBackfill {}, at(2026, 12, 7))
        .then_rejected(R::InsurerNotOnboarded);
    given::<Insurer>([onboarded()])
        .when(InsurerCommand::CompleteBackfill {}, at(2026, 12, 7))
        .then_rejected(R::BackfillNotStarted);
    let started: InsurerEvent = BackfillStarted {
        started_on: d(2026, 12, 7),
    }
    .into();
    let state = given::<Insurer>([onboarded()])
        .when(InsurerCommand::StartBackfill {}, at(2026, 12, 7))
        .then(vec![started.clone()]);
    assert!(state.backfilling);
    given::<Insurer>([onboarded(), started.clone()])
        .when(InsurerCommand::StartBackfill {}, at(2026, 12, 7))
        .then_rejected(R::BackfillAlreadyStarted);
    let completed: InsurerEvent = BackfillCompleted {
        completed_on: d(2026, 12, 8),
    }
    .into();
    let state = given::<Insurer>([onboarded(), started.clone()])
        .when(InsurerCommand::CompleteBackfill {}, at(2026, 12, 8))
        .then(vec![completed.clone()]);
    assert!(!state.backfilling);
    // Another back-fill may follow a completed one.
    given::<Insurer>([onboarded(), started, completed])
        .when(InsurerCommand::StartBackfill {}, at(2026, 12, 9))
        .then(vec![
            BackfillStarted {
                started_on: d(2026, 12, 9),
            }
            .into(),
        ]);
}

#[test]
fn an_insurer_is_onboarded_once() {
    given::<Insurer>([])
        .when(
            InsurerCommand::Onboard { insurer: insurer() },
            at(2026, 4, 1),
        )
        .then(vec![onboarded()]);
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::Onboard { insurer: insurer() },
            at(2026, 4, 2),
        )
        .then_rejected(R::InsurerAlreadyOnboarded);
}

#[test]
fn standardisation_is_recorded_once_and_flags_a_late_one() {
    given::<Insurer>([])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2026, 10, 1),
            },
            at(2026, 10, 1),
        )
        .then_rejected(R::InsurerNotOnboarded);
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2026, 10, 1),
            },
            at(2026, 10, 1),
        )
        .then(vec![standardised()]);
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2027, 2, 1),
            },
            at(2027, 2, 1),
        )
        .then(vec![
            StandardisationCompleted {
                completed_on: d(2027, 2, 1),
                after_deadline: true,
            }
            .into(),
        ]);
    given::<Insurer>([onboarded(), standardised()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2026, 10, 2),
            },
            at(2026, 10, 2),
        )
        .then_rejected(R::StandardisationAlreadyCompleted);
    let state = given::<Insurer>([onboarded()]).state().clone();
    assert!(!state.standardisation_overdue(d(2026, 12, 31)));
    assert!(state.standardisation_overdue(d(2027, 1, 2)));
}

/// Defect 6: 「令和9年1月1日までに完了」 includes the day itself.
#[test]
fn a_standardisation_on_the_deadline_day_is_on_time() {
    // Given an onboarded insurer, when it completes on 2027-01-01, then it is on time.
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2027, 1, 1),
            },
            at(2027, 1, 1),
        )
        .then(vec![
            StandardisationCompleted {
                completed_on: d(2027, 1, 1),
                after_deadline: false,
            }
            .into(),
        ]);
    // On 2027-01-02 it is late.
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2027, 1, 2),
            },
            at(2027, 1, 2),
        )
        .then(vec![
            StandardisationCompleted {
                completed_on: d(2027, 1, 2),
                after_deadline: true,
            }
            .into(),
        ]);
    let state = given::<Insurer>([onboarded()]).state().clone();
    assert!(!state.standardisation_overdue(d(2027, 1, 1)));
    assert!(state.standardisation_overdue(d(2027, 1, 2)));
}

/// Defect 8: full operation (本格運用開始日) starts on 2028-04-01.
#[test]
fn an_insurer_without_data_transmission_is_flagged_from_full_operation() {
    let state = given::<Insurer>([onboarded(), standardised()])
        .state()
        .clone();
    assert!(!state.transmission_missing_at_full_operation(d(2028, 3, 31)));
    assert!(state.transmission_missing_at_full_operation(d(2028, 4, 1)));
    let transmitted = given::<Insurer>([
        onboarded(),
        standardised(),
        DataTransmissionCompleted {
            completed_on: d(2026, 11, 1),
        }
        .into(),
        SharingEnabled {
            enabled_on: d(2026, 11, 1),
        }
        .into(),
    ])
    .state()
    .clone();
    assert!(!transmitted.transmission_missing_at_full_operation(d(2028, 4, 1)));
    assert_eq!(FULL_OPERATION, d(2028, 4, 1));
}

#[test]
fn sharing_is_enabled_only_when_the_data_transmission_completes() {
    let before = given::<Insurer>([onboarded(), standardised()]);
    assert!(!before.state().sharing_enabled());
    let state = before
        .when(
            InsurerCommand::CompleteDataTransmission {
                completed_on: d(2026, 11, 1),
            },
            at(2026, 11, 1),
        )
        .then(vec![
            DataTransmissionCompleted {
                completed_on: d(2026, 11, 1),
            }
            .into(),
            SharingEnabled {
                enabled_on: d(2026, 11, 1),
            }
            .into(),
        ]);
    assert!(state.sharing_enabled());
}

#[test]
fn data_transmission_needs_standardisation_and_the_platform_start() {
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteDataTransmission {
                completed_on: d(2026, 11, 1),
            },
            at(2026, 11, 1),
        )
        .then_rejected(R::StandardisationNotCompleted);
    let early = StandardisationCompleted {
        completed_on: d(2026, 1, 10),
        after_deadline: false,
    };
    given::<Insurer>([onboarded(), early.into()])
        .when(
            InsurerCommand::CompleteDataTransmission {
                completed_on: d(2026, 3, 31),
            },
            at(2026, 3, 31),
        )
        .then_rejected(R::PlatformNotStarted);
    let transmitted: Vec<InsurerEvent> = vec![
        onboarded(),
        standardised(),
        DataTransmissionCompleted {
            completed_on: d(2026, 11, 1),
        }
        .into(),
        SharingEnabled {
            enabled_on: d(2026, 11, 1),
        }
        .into(),
    ];
    given::<Insurer>(transmitted)
        .when(
            InsurerCommand::CompleteDataTransmission {
                completed_on: d(2026, 11, 2),
            },
            at(2026, 11, 2),
        )
        .then_rejected(R::DataTransmissionAlreadyCompleted);
}

#[test]
fn a_completion_date_in_the_future_is_rejected() {
    given::<Insurer>([onboarded()])
        .when(
            InsurerCommand::CompleteStandardisation {
                completed_on: d(2026, 10, 2),
            },
            at(2026, 10, 1),
        )
        .then_rejected(R::DateInFuture);
}

#[test]
fn stream_names_follow_the_scheme() {
    assert_eq!(office_stream(&office()).as_str(), "office/1312345678");
    assert_eq!(insurer_stream(&insurer()).as_str(), "insurer/131016");
}

#[test]
fn only_the_listed_emitters_may_cause_an_event() {
    use kiban_events::Actor;
    use kiban_events::domain::DomainEvent;
    let history = suspended();
    let suspension = &history[3];
    assert!(suspension.admits_actor(&Actor::Federation));
    assert!(suspension.admits_actor(&Actor::parse("system:timers").unwrap()));
    // The office suspends its own terminal when it reports it lost.
    assert!(suspension.admits_actor(&Actor::parse("office:1312345678/T-01").unwrap()));
    assert!(!suspension.admits_actor(&Actor::Insurer(insurer())));
    let lost = &history[2];
    assert!(lost.admits_actor(&Actor::parse("office:1312345678/T-01").unwrap()));
    assert!(!onboarded().admits_actor(&Actor::Insurer(insurer())));
}

#[test]
fn an_office_with_more_service_types_than_the_limit_is_rejected() {
    let many: Vec<ServiceTypeCode> = (0..101)
        .map(|i| code(&format!("{}{}", (b'A' + (i / 10) as u8) as char, i % 10)))
        .collect();
    given::<Office>([])
        .when(
            OfficeCommand::Register {
                office: office(),
                service_types: many,
            },
            at(2026, 4, 1),
        )
        .then_rejected(R::TooManyItems);
}
