//! One test per rule about the insured person: certificates, care-plan
//! office, consent and access log, benefit ledgers.

mod common;

use chrono::{Duration, NaiveDate};
use common::*;
use kiban_events::domain::RejectionCode as R;
use kiban_events::domain::certification::ValidityPeriod;
use kiban_events::domain::insured::*;
use kiban_events::domain::testing::given;
use kiban_events::domain::{
    CareLevel, CopaymentRatio, CostLimitStage, EquipmentCategory, LevelGroup, TerminalId, Yen,
};

type P = InsuredPerson;

fn certified(seq: u32, level: CareLevel, from: NaiveDate, until: NaiveDate) -> InsuredEvent {
    CertificationRecorded {
        application_seq: seq,
        level,
        validity: ValidityPeriod { from, until },
    }
    .into()
}

fn ratio(tenths: u8, from: NaiveDate) -> InsuredEvent {
    CopaymentCertificateIssued {
        ratio: CopaymentRatio::new(tenths).unwrap(),
        valid_from: from,
        valid_until: kiban_events::domain::dates::next_july_31(from),
    }
    .into()
}

/// 要介護1 for FY2026, 1割 until 7/31 and 2割 from 8/1.
fn person() -> Vec<InsuredEvent> {
    vec![
        certified(1, CareLevel::Care1, d(2026, 4, 1), d(2027, 3, 31)),
        ratio(1, d(2026, 4, 1)),
        ratio(2, d(2026, 8, 1)),
    ]
}

fn terminal() -> TerminalId {
    TerminalId::parse("T-01").unwrap()
}

#[test]
fn a_decided_certification_is_recorded_once() {
    given::<P>([])
        .when(
            InsuredCommand::RecordCertification {
                application_seq: 1,
                level: CareLevel::Care1,
                validity: ValidityPeriod {
                    from: d(2026, 4, 1),
                    until: d(2027, 3, 31),
                },
            },
            at(2026, 4, 20),
        )
        .then(vec![certified(
            1,
            CareLevel::Care1,
            d(2026, 4, 1),
            d(2027, 3, 31),
        )]);
    given::<P>(person())
        .when(
            InsuredCommand::RecordCertification {
                application_seq: 1,
                level: CareLevel::Care2,
                validity: ValidityPeriod {
                    from: d(2026, 4, 1),
                    until: d(2027, 3, 31),
                },
            },
            at(2026, 4, 20),
        )
        .then_rejected(R::CertificationAlreadyRecorded);
    given::<P>([])
        .when(
            InsuredCommand::RecordCertification {
                application_seq: 2,
                level: CareLevel::NotEligible,
                validity: ValidityPeriod {
                    from: d(2026, 4, 1),
                    until: d(2026, 9, 30),
                },
            },
            at(2026, 4, 20),
        )
        .then_rejected(R::NotCertified);
}

#[test]
fn a_newly_certified_person_gets_a_copayment_certificate_from_the_certification_to_the_next_july_31()
 {
    let history = vec![certified(
        1,
        CareLevel::Care1,
        d(2026, 4, 15),
        d(2026, 10, 31),
    )];
    let state = given::<P>(history.clone())
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: d(2026, 4, 15),
            },
            at(2026, 4, 20),
        )
        .then(vec![
            CopaymentCertificateIssued {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: d(2026, 4, 15),
                valid_until: d(2026, 7, 31),
            }
            .into(),
        ]);
    assert_eq!(
        state.copayment_ratio_on(d(2026, 7, 31)),
        CopaymentRatio::new(1).ok()
    );
    assert_eq!(state.copayment_ratio_on(d(2026, 8, 1)), None);
    given::<P>(history)
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: d(2026, 5, 3),
            },
            at(2026, 5, 3),
        )
        .then_rejected(R::CopaymentStartInvalid);
}

#[test]
fn the_yearly_copayment_certificate_runs_from_august_1_to_july_31() {
    let history = vec![certified(
        1,
        CareLevel::Care1,
        d(2026, 4, 1),
        d(2027, 9, 30),
    )];
    given::<P>(history)
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(3).unwrap(),
                valid_from: d(2026, 8, 1),
            },
            at(2026, 7, 10),
        )
        .then(vec![
            CopaymentCertificateIssued {
                ratio: CopaymentRatio::new(3).unwrap(),
                valid_from: d(2026, 8, 1),
                valid_until: d(2027, 7, 31),
            }
            .into(),
        ]);
    given::<P>([])
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: d(2026, 8, 1),
            },
            at(2026, 7, 10),
        )
        .then_rejected(R::NotCertified);
}

#[test]
fn a_ratio_change_during_the_certificate_runs_to_the_same_july_31() {
    let state = given::<P>(person())
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(3).unwrap(),
                valid_from: d(2026, 11, 1),
            },
            at(2026, 10, 20),
        )
        .then_accepted()
        .1;
    assert_eq!(
        state.copayment_ratio_on(d(2026, 10, 31)),
        CopaymentRatio::new(2).ok()
    );
    assert_eq!(
        state.copayment_ratio_on(d(2027, 7, 31)),
        CopaymentRatio::new(3).ok()
    );
}

#[test]
fn the_cost_limit_certificate_runs_from_the_first_of_the_application_month_to_the_next_july_31() {
    given::<P>(person())
        .when(
            InsuredCommand::IssueCostLimitCertificate {
                stage: CostLimitStage::Stage2,
                applied_on: d(2026, 9, 17),
                for_coming_period: false,
            },
            at(2026, 9, 20),
        )
        .then(vec![
            CostLimitCertificateIssued {
                stage: CostLimitStage::Stage2,
                applied_on: d(2026, 9, 17),
                valid_from: d(2026, 9, 1),
                valid_until: d(2027, 7, 31),
            }
            .into(),
        ]);
    given::<P>(person())
        .when(
            InsuredCommand::IssueCostLimitCertificate {
                stage: CostLimitStage::Stage2,
                applied_on: d(2026, 9, 21),
                for_coming_period: false,
            },
            at(2026, 9, 20),
        )
        .then_rejected(R::DateInFuture);
    given::<P>([])
        .when(
            InsuredCommand::IssueCostLimitCertificate {
                stage: CostLimitStage::Stage1,
                applied_on: d(2026, 9, 17),
                for_coming_period: false,
            },
            at(2026, 9, 20),
        )
        .then_rejected(R::NotCertified);
}

fn cost_limit(applied_on: NaiveDate, for_coming_period: bool) -> InsuredCommand {
    InsuredCommand::IssueCostLimitCertificate {
        stage: CostLimitStage::Stage2,
        applied_on,
        for_coming_period,
    }
}

fn cost_limit_issued(applied_on: NaiveDate, from: NaiveDate, until: NaiveDate) -> InsuredEvent {
    CostLimitCertificateIssued {
        stage: CostLimitStage::Stage2,
        applied_on,
        valid_from: from,
        valid_until: until,
    }
    .into()
}

/// Defects 4 and 8: the 負担限度額認定証 applied for in July vs August.
/// Given a certified person, when a first application is made in July, it
/// runs July only; in August, 8/1 to the next 7/31. When the yearly renewal
/// (for the coming period) is applied for in July, it is issued in advance
/// for 8/1–7/31 (today: a July-only certificate); in August, from 8/1.
#[test]
fn a_cost_limit_renewal_applied_for_before_august_runs_from_august_1() {
    let certified_long = vec![certified(
        1,
        CareLevel::Care1,
        d(2026, 4, 1),
        d(2028, 3, 31),
    )];
    given::<P>(certified_long.clone())
        .when(cost_limit(d(2026, 7, 10), false), at(2026, 7, 10))
        .then(vec![cost_limit_issued(
            d(2026, 7, 10),
            d(2026, 7, 1),
            d(2026, 7, 31),
        )]);
    given::<P>(certified_long.clone())
        .when(cost_limit(d(2026, 8, 3), false), at(2026, 8, 3))
        .then(vec![cost_limit_issued(
            d(2026, 8, 3),
            d(2026, 8, 1),
            d(2027, 7, 31),
        )]);
    given::<P>(certified_long.clone())
        .when(cost_limit(d(2026, 7, 10), true), at(2026, 7, 10))
        .then(vec![cost_limit_issued(
            d(2026, 7, 10),
            d(2026, 8, 1),
            d(2027, 7, 31),
        )]);
    given::<P>(certified_long.clone())
        .when(cost_limit(d(2026, 6, 1), true), at(2026, 6, 1))
        .then(vec![cost_limit_issued(
            d(2026, 6, 1),
            d(2026, 8, 1),
            d(2027, 7, 31),
        )]);
    given::<P>(certified_long)
        .when(cost_limit(d(2026, 8, 3), true), at(2026, 8, 3))
        .then(vec![cost_limit_issued(
            d(2026, 8, 3),
            d(2026, 8, 1),
            d(2027, 7, 31),
        )]);
}

fn register(
    office: kiban_events::ids::OfficeNumber,
    kind: CarePlanOfficeKind,
    on: NaiveDate,
) -> InsuredCommand {
    InsuredCommand::RegisterCarePlanOffice {
        office,
        office_kind: kind,
        filed_on: on,
        pending_application_on: None,
    }
}

fn registered_care_office() -> InsuredEvent {
    CarePlanOfficeRegistered {
        office: office(),
        office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
        level_group: LevelGroup::Care,
        filed_on: d(2026, 4, 30),
        billable_from: d(2026, 4, 1),
    }
    .into()
}

/// Defect 5: a filing by the month end covers that month's services
/// (billed to the 国保連 the next month), not only the next month's.
#[test]
fn a_care_plan_office_filed_by_month_end_bills_that_month() {
    given::<P>(person())
        .when(
            register(
                office(),
                CarePlanOfficeKind::HomeCareSupportOffice,
                d(2026, 4, 30),
            ),
            at(2026, 4, 30),
        )
        .then(vec![registered_care_office()]);
}

#[test]
fn care_levels_need_a_home_care_support_office_and_support_levels_a_community_center() {
    given::<P>(person())
        .when(
            register(
                office(),
                CarePlanOfficeKind::CommunityGeneralSupportCenter,
                d(2026, 4, 30),
            ),
            at(2026, 4, 30),
        )
        .then_rejected(R::CarePlanOfficeKindMismatch);
    given::<P>([])
        .when(
            register(
                office(),
                CarePlanOfficeKind::HomeCareSupportOffice,
                d(2026, 4, 30),
            ),
            at(2026, 4, 30),
        )
        .then_rejected(R::NotCertified);
}

#[test]
fn a_change_of_care_plan_office_is_filed_as_a_change() {
    let mut history = person();
    history.push(registered_care_office());
    given::<P>(history.clone())
        .when(
            register(
                office(),
                CarePlanOfficeKind::HomeCareSupportOffice,
                d(2026, 6, 1),
            ),
            at(2026, 6, 1),
        )
        .then_rejected(R::CarePlanOfficeAlreadyRegistered);
    given::<P>(history)
        .when(
            register(
                other_office(),
                CarePlanOfficeKind::HomeCareSupportOffice,
                d(2026, 6, 1),
            ),
            at(2026, 6, 1),
        )
        .then(vec![
            CarePlanOfficeChanged {
                office: other_office(),
                office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
                level_group: LevelGroup::Care,
                previous_office: office(),
                filed_on: d(2026, 6, 1),
                billable_from: d(2026, 6, 1),
            }
            .into(),
        ]);
}

#[test]
fn without_a_care_plan_office_services_are_reimbursed_and_a_filing_bills_from_its_month() {
    let before = given::<P>(person());
    assert!(before.state().reimbursement_only(d(2026, 4, 30)));
    let state = before
        .when(
            register(
                office(),
                CarePlanOfficeKind::HomeCareSupportOffice,
                d(2026, 4, 30),
            ),
            at(2026, 4, 30),
        )
        .then(vec![registered_care_office()]);
    assert!(state.reimbursement_only(d(2026, 3, 31)));
    assert!(!state.reimbursement_only(d(2026, 4, 1)));
    assert!(!state.reimbursement_only(d(2026, 4, 30)));
}

/// Defect 5: a provisional plan (暫定ケアプラン) while a new application
/// is pending. Given a person not yet certified, when an office files with
/// the pending application's date, then it is registered for the group the
/// office plans for; without a pending application (or with one made after
/// the filing) it is refused as before; a decision in the other group then
/// requires re-filing.
#[test]
fn a_provisional_care_plan_is_filed_while_a_new_application_is_pending() {
    let provisional = |pending: Option<NaiveDate>| InsuredCommand::RegisterCarePlanOffice {
        office: office(),
        office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
        filed_on: d(2026, 4, 20),
        pending_application_on: pending,
    };
    let state = given::<P>([])
        .when(provisional(Some(d(2026, 4, 15))), at(2026, 4, 20))
        .then(vec![
            CarePlanOfficeRegistered {
                office: office(),
                office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
                level_group: LevelGroup::Care,
                filed_on: d(2026, 4, 20),
                billable_from: d(2026, 4, 1),
            }
            .into(),
        ]);
    assert!(!state.care_plan_refiling_required(d(2026, 4, 20)));
    given::<P>([])
        .when(provisional(None), at(2026, 4, 20))
        .then_rejected(R::NotCertified);
    given::<P>([])
        .when(provisional(Some(d(2026, 4, 21))), at(2026, 4, 21))
        .then_rejected(R::NotCertified);
    // Decided 要支援1 from the application date: the provisional 居宅介護支援
    // filing must be re-filed with a 地域包括支援センター.
    let mut history = vec![
        CarePlanOfficeRegistered {
            office: office(),
            office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
            level_group: LevelGroup::Care,
            filed_on: d(2026, 4, 20),
            billable_from: d(2026, 4, 1),
        }
        .into(),
    ];
    history.push(certified(
        1,
        CareLevel::Support1,
        d(2026, 4, 15),
        d(2026, 10, 31),
    ));
    let decided = given::<P>(history).state().clone();
    assert!(decided.care_plan_refiling_required(d(2026, 5, 20)));
    assert!(decided.reimbursement_only(d(2026, 5, 20)));
}

#[test]
fn a_decided_certification_becomes_the_command_for_the_person_and_not_eligible_does_not() {
    use kiban_events::domain::certification::CertificationDecided;
    let decided = CertificationDecided {
        level: CareLevel::Care2,
        decided_on: d(2026, 5, 10),
        validity: Some(ValidityPeriod {
            from: d(2026, 4, 15),
            until: d(2026, 10, 31),
        }),
        validity_months: Some(6),
    };
    assert_eq!(
        InsuredCommand::record_decision(1, &decided),
        Some(InsuredCommand::RecordCertification {
            application_seq: 1,
            level: CareLevel::Care2,
            validity: ValidityPeriod {
                from: d(2026, 4, 15),
                until: d(2026, 10, 31),
            },
        })
    );
    let not_eligible = CertificationDecided {
        level: CareLevel::NotEligible,
        validity: None,
        validity_months: None,
        ..decided
    };
    assert_eq!(InsuredCommand::record_decision(1, &not_eligible), None);
}

#[test]
fn moving_between_support_and_care_requires_refiling() {
    let mut history = person();
    history.push(registered_care_office());
    // A change application decided 要支援2 from 2026-09-10.
    history.push(certified(
        2,
        CareLevel::Support2,
        d(2026, 9, 10),
        d(2027, 3, 31),
    ));
    let before = given::<P>(history.clone());
    assert!(!before.state().care_plan_refiling_required(d(2026, 9, 9)));
    assert!(before.state().care_plan_refiling_required(d(2026, 9, 10)));
    let state = before
        .when(
            register(
                other_office(),
                CarePlanOfficeKind::CommunityGeneralSupportCenter,
                d(2026, 9, 12),
            ),
            at(2026, 9, 12),
        )
        .then_accepted()
        .1;
    assert!(!state.care_plan_refiling_required(d(2026, 9, 12)));
    // Before the re-filing, services are reimbursed; the re-filing covers
    // its month.
    assert!(before_refiling_reimbursed(&history));
    assert!(!state.reimbursement_only(d(2026, 9, 11)));
}

fn before_refiling_reimbursed(history: &[InsuredEvent]) -> bool {
    let state = given::<P>(history.to_vec()).state().clone();
    state.reimbursement_only(d(2026, 9, 11)) && !state.reimbursement_only(d(2026, 9, 9))
}

#[test]
fn consent_is_given_with_an_expiry_in_the_future_within_a_year() {
    let now = at(2026, 5, 1);
    let expires_at = now + Duration::days(30);
    let state = given::<P>(person())
        .when(
            InsuredCommand::GiveConsent {
                office: office(),
                terminal: terminal(),
                expires_at,
            },
            now,
        )
        .then(vec![
            ConsentGiven {
                office: office(),
                terminal: terminal(),
                given_at: now,
                expires_at,
            }
            .into(),
        ]);
    assert!(state.consent_live(&office(), now));
    assert!(!state.consent_live(&office(), expires_at));
    for bad in [now, now + Duration::days(367)] {
        given::<P>(person())
            .when(
                InsuredCommand::GiveConsent {
                    office: office(),
                    terminal: terminal(),
                    expires_at: bad,
                },
                now,
            )
            .then_rejected(R::ConsentExpiryInvalid);
    }
}

fn consented() -> Vec<InsuredEvent> {
    let mut history = person();
    history.push(
        ConsentGiven {
            office: office(),
            terminal: terminal(),
            given_at: at(2026, 5, 1),
            expires_at: at(2026, 5, 31),
        }
        .into(),
    );
    history
}

#[test]
fn a_live_consent_can_be_revoked() {
    let state = given::<P>(consented())
        .when(
            InsuredCommand::RevokeConsent { office: office() },
            at(2026, 5, 10),
        )
        .then(vec![
            ConsentRevoked {
                office: office(),
                revoked_at: at(2026, 5, 10),
            }
            .into(),
        ]);
    assert!(!state.consent_live(&office(), at(2026, 5, 11)));
    given::<P>(consented())
        .when(
            InsuredCommand::RevokeConsent {
                office: other_office(),
            },
            at(2026, 5, 10),
        )
        .then_rejected(R::NoLiveConsent);
}

#[test]
fn a_consent_expires_only_at_its_expiry() {
    given::<P>(consented())
        .when(
            InsuredCommand::ExpireConsent { office: office() },
            at(2026, 5, 30),
        )
        .then_rejected(R::ConsentNotExpired);
    given::<P>(consented())
        .when(
            InsuredCommand::ExpireConsent { office: office() },
            at(2026, 6, 1),
        )
        .then(vec![
            ConsentExpired {
                office: office(),
                expired_at: at(2026, 5, 31),
            }
            .into(),
        ]);
    given::<P>(person())
        .when(
            InsuredCommand::ExpireConsent { office: office() },
            at(2026, 6, 1),
        )
        .then_rejected(R::NoLiveConsent);
}

fn view(office: kiban_events::ids::OfficeNumber, sharing: bool) -> InsuredCommand {
    InsuredCommand::RecordView {
        office,
        terminal: terminal(),
        insurer_sharing_enabled: sharing,
    }
}

#[test]
fn an_office_reads_with_a_live_consent_or_as_the_care_plan_office_and_every_read_is_logged() {
    let state = given::<P>(consented())
        .when(view(office(), true), at(2026, 5, 10))
        .then(vec![
            RecordViewed {
                office: office(),
                terminal: terminal(),
                basis: ViewingBasis::Consent,
                viewed_at: at(2026, 5, 10),
            }
            .into(),
        ]);
    assert_eq!(state.views_recorded, 1);
    let mut registered = person();
    registered.push(registered_care_office());
    given::<P>(registered)
        .when(view(office(), true), at(2026, 5, 10))
        .then(vec![
            RecordViewed {
                office: office(),
                terminal: terminal(),
                basis: ViewingBasis::CarePlanOffice,
                viewed_at: at(2026, 5, 10),
            }
            .into(),
        ]);
    given::<P>(consented())
        .when(view(other_office(), true), at(2026, 5, 10))
        .then_rejected(R::NoViewingBasis);
    given::<P>(consented())
        .when(view(office(), true), at(2026, 6, 1))
        .then_rejected(R::NoViewingBasis);
}

#[test]
fn the_persons_own_read_is_logged_and_grants_no_office_anything() {
    let state = given::<P>(person())
        .when(InsuredCommand::RecordOwnView, at(2026, 5, 10))
        .then(vec![
            OwnRecordViewed {
                viewed_at: at(2026, 5, 10),
            }
            .into(),
        ]);
    // Not an office's read, and no office may read because of it.
    assert_eq!(state.views_recorded, 0);
    assert_eq!(state.viewing_basis(&office(), at(2026, 5, 10)), None);
}

#[test]
fn nothing_is_visible_before_the_insurer_shares() {
    given::<P>(consented())
        .when(view(office(), false), at(2026, 5, 10))
        .then_rejected(R::InsurerNotSharing);
}

fn applied(n: u32, on: NaiveDate) -> InsuredEvent {
    HomeModificationApplied {
        prior_application: n,
        applied_on: on,
        planned_cost: Yen::new(150_000),
    }
    .into()
}

fn work(n: u32, started: NaiveDate, cost: u64) -> InsuredCommand {
    InsuredCommand::RecordHomeModificationWork {
        prior_application: n,
        work_started_on: started,
        receipt_on: started,
        cost: Yen::new(cost),
    }
}

#[allow(clippy::too_many_arguments)]
fn worked(
    n: u32,
    started: NaiveDate,
    cost: u64,
    counted: u64,
    benefit: u64,
    tenths: u8,
    step: u8,
) -> InsuredEvent {
    HomeModificationWorkRecorded {
        prior_application: n,
        work_started_on: started,
        receipt_on: started,
        cost: Yen::new(cost),
        counted_cost: Yen::new(counted),
        benefit: Yen::new(benefit),
        copayment_ratio: CopaymentRatio::new(tenths).unwrap(),
        capped: counted < cost,
        step_at_start: step,
    }
    .into()
}

#[test]
fn a_prior_application_is_accepted_once_per_number() {
    given::<P>(person())
        .when(
            InsuredCommand::ApplyForHomeModification {
                prior_application: 1,
                applied_on: d(2026, 5, 1),
                planned_cost: Yen::new(150_000),
            },
            at(2026, 5, 1),
        )
        .then(vec![applied(1, d(2026, 5, 1))]);
    let mut history = person();
    history.push(applied(1, d(2026, 5, 1)));
    given::<P>(history)
        .when(
            InsuredCommand::ApplyForHomeModification {
                prior_application: 1,
                applied_on: d(2026, 5, 2),
                planned_cost: Yen::new(10_000),
            },
            at(2026, 5, 2),
        )
        .then_rejected(R::PriorApplicationDuplicate);
    given::<P>(person())
        .when(
            InsuredCommand::ApplyForHomeModification {
                prior_application: 2,
                applied_on: d(2026, 5, 2),
                planned_cost: Yen::ZERO,
            },
            at(2026, 5, 2),
        )
        .then_rejected(R::AmountZero);
}

#[test]
fn home_modification_work_needs_a_prior_application_before_it_starts() {
    given::<P>(person())
        .when(work(1, d(2026, 5, 10), 100_000), at(2026, 5, 20))
        .then_rejected(R::PriorApplicationMissing);
    let mut history = person();
    history.push(applied(1, d(2026, 5, 1)));
    given::<P>(history.clone())
        .when(work(1, d(2026, 4, 30), 100_000), at(2026, 5, 20))
        .then_rejected(R::WorkBeforePriorApplication);
    // Paid at 90% under 1割; the prior application is then used up.
    history.push(worked(1, d(2026, 5, 10), 100_000, 100_000, 90_000, 1, 2));
    given::<P>(history)
        .when(work(1, d(2026, 5, 12), 10_000), at(2026, 5, 20))
        .then_rejected(R::PriorApplicationMissing);
}

#[test]
fn the_copayment_ratio_on_the_receipt_date_sets_the_benefit() {
    let mut history = person();
    history.push(applied(1, d(2026, 7, 20)));
    // Work starts in July under 1割, the receipt is dated in August under 2割.
    given::<P>(history)
        .when(
            InsuredCommand::RecordHomeModificationWork {
                prior_application: 1,
                work_started_on: d(2026, 7, 25),
                receipt_on: d(2026, 8, 3),
                cost: Yen::new(100_000),
            },
            at(2026, 8, 5),
        )
        .then(vec![
            HomeModificationWorkRecorded {
                prior_application: 1,
                work_started_on: d(2026, 7, 25),
                receipt_on: d(2026, 8, 3),
                cost: Yen::new(100_000),
                counted_cost: Yen::new(100_000),
                benefit: Yen::new(80_000),
                copayment_ratio: CopaymentRatio::new(2).unwrap(),
                capped: false,
                step_at_start: 2,
            }
            .into(),
        ]);
}

#[test]
fn a_use_beyond_the_remaining_cap_is_a_capped_payment_and_the_ledger_never_goes_negative() {
    let mut history = person();
    history.push(applied(1, d(2026, 5, 1)));
    history.push(worked(1, d(2026, 5, 10), 150_000, 150_000, 135_000, 1, 2));
    history.push(applied(2, d(2026, 6, 1)));
    history.push(applied(3, d(2026, 6, 1)));
    let state = given::<P>(history.clone())
        .when(work(2, d(2026, 6, 10), 80_000), at(2026, 6, 20))
        .then(vec![worked(
            2,
            d(2026, 6, 10),
            80_000,
            50_000,
            45_000,
            1,
            2,
        )]);
    assert_eq!(state.home_modification.remaining(), Yen::ZERO);
    history.push(worked(2, d(2026, 6, 10), 80_000, 50_000, 45_000, 1, 2));
    given::<P>(history)
        .when(work(3, d(2026, 6, 11), 30_000), at(2026, 6, 20))
        .then(vec![worked(3, d(2026, 6, 11), 30_000, 0, 0, 1, 2)]);
}

#[test]
fn moving_house_resets_the_cap_to_a_fresh_200000_without_carrying_the_balance() {
    let mut history = person();
    history.push(applied(1, d(2026, 5, 1)));
    history.push(worked(1, d(2026, 5, 10), 50_000, 50_000, 45_000, 1, 2));
    let state = given::<P>(history)
        .when(
            InsuredCommand::RecordMove {
                moved_on: d(2026, 6, 1),
                address: None,
            },
            at(2026, 6, 2),
        )
        .then(vec![
            MovedHouse {
                moved_on: d(2026, 6, 1),
                address: None,
            }
            .into(),
            HomeModificationCapReset {
                reason: CapResetReason::MovedHouse,
                reset_on: d(2026, 6, 1),
            }
            .into(),
        ]);
    assert_eq!(state.home_modification.remaining(), Yen::new(200_000));
    given::<P>(person())
        .when(
            InsuredCommand::RecordMove {
                moved_on: d(2026, 6, 3),
                address: None,
            },
            at(2026, 6, 2),
        )
        .then_rejected(R::DateInFuture);
}

/// First paid work at 要介護1 (step 2), then the level rises.
fn rising(level: CareLevel) -> Vec<InsuredEvent> {
    let mut history = person();
    history.push(applied(1, d(2026, 5, 1)));
    history.push(worked(1, d(2026, 5, 10), 180_000, 180_000, 162_000, 1, 2));
    history.push(certified(2, level, d(2026, 6, 1), d(2027, 3, 31)));
    history.push(applied(2, d(2026, 6, 5)));
    history
}

#[test]
fn a_rise_of_two_steps_does_not_reset_the_cap() {
    // 要介護3 is step 4: two steps above step 2.
    given::<P>(rising(CareLevel::Care3))
        .when(work(2, d(2026, 6, 10), 50_000), at(2026, 6, 20))
        .then(vec![worked(
            2,
            d(2026, 6, 10),
            50_000,
            20_000,
            18_000,
            1,
            4,
        )]);
}

#[test]
fn a_rise_of_three_steps_from_the_first_paid_work_resets_the_cap_once() {
    // 要介護4 is step 5: three steps above step 2.
    let reset: InsuredEvent = HomeModificationCapReset {
        reason: CapResetReason::CareNeedRose {
            from_step: 2,
            to_step: 5,
        },
        reset_on: d(2026, 6, 10),
    }
    .into();
    let paid = worked(2, d(2026, 6, 10), 50_000, 50_000, 45_000, 1, 5);
    let state = given::<P>(rising(CareLevel::Care4))
        .when(work(2, d(2026, 6, 10), 50_000), at(2026, 6, 20))
        .then(vec![reset.clone(), paid.clone()]);
    assert!(state.home_modification.rise_reset_used);
    assert_eq!(state.home_modification.remaining(), Yen::new(150_000));
    // A later rise never resets it again: once per person.
    let mut history = rising(CareLevel::Care4);
    history.push(reset);
    history.push(paid);
    history.push(certified(
        3,
        CareLevel::Care5,
        d(2026, 7, 1),
        d(2027, 3, 31),
    ));
    history.push(applied(3, d(2026, 7, 2)));
    let (events, _) = given::<P>(history)
        .when(work(3, d(2026, 7, 10), 10_000), at(2026, 7, 20))
        .then_accepted();
    assert_eq!(events.len(), 1, "no second reset: {events:?}");
}

fn purchase(
    category: EquipmentCategory,
    on: NaiveDate,
    cost: u64,
    reason: Option<&str>,
) -> InsuredCommand {
    InsuredCommand::RecordEquipmentPurchase {
        category,
        purchased_on: on,
        cost: Yen::new(cost),
        seller_designated: true,
        replacement_reason: reason.map(str::to_owned),
    }
}

#[allow(clippy::too_many_arguments)]
fn purchased(
    category: EquipmentCategory,
    on: NaiveDate,
    cost: u64,
    counted: u64,
    benefit: u64,
    tenths: u8,
    reason: Option<&str>,
) -> InsuredEvent {
    EquipmentPurchaseRecorded {
        fiscal_year: kiban_events::domain::dates::fiscal_year(on),
        category,
        purchased_on: on,
        cost: Yen::new(cost),
        counted_cost: Yen::new(counted),
        benefit: Yen::new(benefit),
        copayment_ratio: CopaymentRatio::new(tenths).unwrap(),
        capped: counted < cost,
        replacement_reason: reason.map(str::to_owned),
    }
    .into()
}

#[test]
fn equipment_is_paid_up_to_100000_a_fiscal_year_and_capped_beyond() {
    let mut history = person();
    history.push(purchased(
        EquipmentCategory::BathingAid,
        d(2026, 5, 1),
        70_000,
        70_000,
        63_000,
        1,
        None,
    ));
    let state = given::<P>(history)
        .when(
            purchase(EquipmentCategory::CommodeSeat, d(2026, 9, 1), 50_000, None),
            at(2026, 9, 2),
        )
        .then(vec![purchased(
            EquipmentCategory::CommodeSeat,
            d(2026, 9, 1),
            50_000,
            30_000,
            24_000,
            2,
            None,
        )]);
    assert_eq!(state.equipment_remaining(2026), Yen::ZERO);
    // The new fiscal year starts on April 1 with a fresh 100,000 yen.
    assert_eq!(state.equipment_remaining(2027), Yen::new(100_000));
}

#[test]
fn one_item_per_category_per_fiscal_year_unless_replaced_for_a_reason() {
    let mut history = person();
    history.push(purchased(
        EquipmentCategory::BathingAid,
        d(2026, 5, 1),
        20_000,
        20_000,
        18_000,
        1,
        None,
    ));
    given::<P>(history.clone())
        .when(
            purchase(EquipmentCategory::BathingAid, d(2026, 6, 1), 20_000, None),
            at(2026, 6, 2),
        )
        .then_rejected(R::EquipmentCategoryAlreadyPurchased);
    given::<P>(history)
        .when(
            purchase(
                EquipmentCategory::BathingAid,
                d(2026, 6, 1),
                20_000,
                Some("破損"),
            ),
            at(2026, 6, 2),
        )
        .then(vec![purchased(
            EquipmentCategory::BathingAid,
            d(2026, 6, 1),
            20_000,
            20_000,
            18_000,
            1,
            Some("破損"),
        )]);
}

#[test]
fn equipment_needs_a_designated_seller_a_certification_and_a_copayment_ratio() {
    given::<P>(person())
        .when(
            InsuredCommand::RecordEquipmentPurchase {
                category: EquipmentCategory::Walker,
                purchased_on: d(2026, 6, 1),
                cost: Yen::new(20_000),
                seller_designated: false,
                replacement_reason: None,
            },
            at(2026, 6, 2),
        )
        .then_rejected(R::SellerNotDesignated);
    given::<P>([certified(
        1,
        CareLevel::Care1,
        d(2026, 4, 1),
        d(2027, 3, 31),
    )])
    .when(
        purchase(EquipmentCategory::Walker, d(2026, 6, 1), 20_000, None),
        at(2026, 6, 2),
    )
    .then_rejected(R::NoCopaymentRatio);
    given::<P>(person())
        .when(
            purchase(EquipmentCategory::Walker, d(2027, 4, 1), 20_000, None),
            at(2027, 4, 2),
        )
        .then_rejected(R::NotCertified);
}

#[test]
fn the_stream_name_is_insurer_insured() {
    assert_eq!(
        insured_stream(&insurer(), &insured()).as_str(),
        "insured/131016-0000012345"
    );
}

#[test]
fn a_replacement_reason_longer_than_the_limit_is_rejected() {
    given::<P>(person())
        .when(
            purchase(
                EquipmentCategory::Walker,
                d(2026, 6, 1),
                20_000,
                Some(&"破".repeat(501)),
            ),
            at(2026, 6, 2),
        )
        .then_rejected(R::ReasonTooLong);
}

#[test]
fn a_copayment_certificate_far_in_the_future_is_rejected() {
    given::<P>(person())
        .when(
            InsuredCommand::IssueCopaymentCertificate {
                ratio: CopaymentRatio::new(1).unwrap(),
                valid_from: d(2100, 8, 1),
            },
            at(2026, 7, 10),
        )
        .then_rejected(R::DateOutOfRange);
}

#[test]
fn the_renewal_window_runs_from_60_days_before_the_end_to_the_last_day() {
    // The rule the decider, the timers and the caseload screen share.
    let valid_until = d(2027, 3, 31);
    assert!(!in_renewal_window(d(2027, 1, 29), valid_until));
    assert!(in_renewal_window(d(2027, 1, 30), valid_until));
    assert!(in_renewal_window(valid_until, valid_until));
    assert!(!in_renewal_window(d(2027, 4, 1), valid_until));
}

#[test]
fn the_renewal_window_opens_60_days_before_the_validity_ends_once() {
    // Valid until 2027-03-31: 60 days before is 2027-01-30.
    let opened = RenewalWindowOpened {
        application_seq: 1,
        valid_until: d(2027, 3, 31),
        opens_on: d(2027, 1, 30),
        opened_on: d(2027, 1, 30),
    };
    assert_eq!(renewal_window_opens_on(d(2027, 3, 31)), d(2027, 1, 30));
    given::<P>(person())
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 1, 29))
        .then_rejected(R::DeadlineNotReached);
    let state = given::<P>(person())
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 1, 30))
        .then(vec![opened.clone().into()]);
    assert!(state.renewal_windows_opened.contains(&1));
    let mut history = person();
    history.push(opened.into());
    given::<P>(history)
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 2, 1))
        .then_rejected(R::DeadlineAlreadyRecorded);
}

#[test]
fn the_renewal_window_follows_the_latest_certification_and_not_an_ended_one() {
    given::<P>([])
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 2, 1))
        .then_rejected(R::NotCertified);
    // Nobody opened the window while the certification ran: once it has
    // ended there is nothing to renew.
    given::<P>(person())
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 4, 1))
        .then_rejected(R::CurrentCertificationExpired);
    // A change decision replaced the certification: its end counts, not the
    // old one's, and the old window is not opened.
    let mut history = person();
    history.push(certified(
        2,
        CareLevel::Care3,
        d(2026, 10, 5),
        d(2027, 4, 30),
    ));
    given::<P>(history.clone())
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 2, 1))
        .then_rejected(R::DeadlineNotReached);
    let (events, _) = given::<P>(history)
        .when(InsuredCommand::OpenRenewalWindow, at(2027, 3, 1))
        .then_accepted();
    assert_eq!(
        events,
        vec![
            RenewalWindowOpened {
                application_seq: 2,
                valid_until: d(2027, 4, 30),
                opens_on: d(2027, 3, 1),
                opened_on: d(2027, 3, 1),
            }
            .into()
        ]
    );
}

/// Defect 8: the three-step rise reset stays used across a move. Given a
/// rise reset (要介護1 → 要介護4), a move (fresh cap), a first paid work at
/// 要介護1 again and a new rise to 要介護4, when work starts, then the cap
/// is not reset a second time.
#[test]
fn the_rise_reset_stays_used_across_a_move() {
    let mut history = rising(CareLevel::Care4);
    history.push(
        HomeModificationCapReset {
            reason: CapResetReason::CareNeedRose {
                from_step: 2,
                to_step: 5,
            },
            reset_on: d(2026, 6, 10),
        }
        .into(),
    );
    history.push(worked(2, d(2026, 6, 10), 50_000, 50_000, 45_000, 1, 5));
    history.push(
        MovedHouse {
            moved_on: d(2026, 7, 1),
            address: None,
        }
        .into(),
    );
    history.push(
        HomeModificationCapReset {
            reason: CapResetReason::MovedHouse,
            reset_on: d(2026, 7, 1),
        }
        .into(),
    );
    history.push(certified(
        3,
        CareLevel::Care1,
        d(2026, 8, 1),
        d(2026, 8, 31),
    ));
    history.push(applied(3, d(2026, 8, 2)));
    history.push(worked(3, d(2026, 8, 10), 50_000, 50_000, 40_000, 2, 2));
    history.push(certified(
        4,
        CareLevel::Care4,
        d(2026, 9, 1),
        d(2027, 3, 31),
    ));
    history.push(applied(4, d(2026, 9, 2)));
    let before = given::<P>(history.clone());
    assert!(before.state().home_modification.rise_reset_used);
    assert_eq!(
        before
            .state()
            .home_modification_remaining_on(d(2026, 9, 10)),
        Yen::new(150_000)
    );
    before
        .when(work(4, d(2026, 9, 10), 10_000), at(2026, 9, 20))
        .then(vec![worked(4, d(2026, 9, 10), 10_000, 10_000, 8_000, 2, 5)]);
}

/// Defect 7: the remaining home-modification amount shown to offices
/// counts a due three-step reset. Given 180,000 yen used at 要介護1 and
/// 要介護4 from 6/1, the amount left for work starting 6/10 is a fresh
/// 200,000 (the next work resets), though the current cap has 20,000 left.
#[test]
fn the_remaining_home_modification_amount_counts_a_due_rise_reset() {
    let state = given::<P>(rising(CareLevel::Care4)).state().clone();
    assert_eq!(state.home_modification.remaining(), Yen::new(20_000));
    assert_eq!(
        state.home_modification_remaining_on(d(2026, 6, 10)),
        Yen::new(200_000)
    );
    // Before the rise (still 要介護1) and for a two-step rise: 20,000.
    assert_eq!(
        state.home_modification_remaining_on(d(2026, 5, 31)),
        Yen::new(20_000)
    );
    let two_steps = given::<P>(rising(CareLevel::Care3)).state().clone();
    assert_eq!(
        two_steps.home_modification_remaining_on(d(2026, 6, 10)),
        Yen::new(20_000)
    );
}

/// Defect 8: the fiscal year of equipment purchases turns on 4/1 at the
/// decider. Given 90,000 yen and a bath aid bought in FY2026, a 50,000 yen
/// purchase on 2027-03-31 is capped at 10,000 and a second bath aid is
/// refused, while on 2027-04-01 (FY2027) both are paid in full.
#[test]
fn equipment_on_march_31_counts_in_the_old_fiscal_year_and_on_april_1_in_the_new() {
    let history = vec![
        certified(1, CareLevel::Care1, d(2026, 4, 1), d(2028, 3, 31)),
        ratio(1, d(2026, 4, 1)),
        ratio(1, d(2026, 8, 1)),
        ratio(1, d(2027, 8, 1)),
        purchased(
            EquipmentCategory::BathingAid,
            d(2026, 10, 1),
            90_000,
            90_000,
            81_000,
            1,
            None,
        ),
    ];
    given::<P>(history.clone())
        .when(
            purchase(EquipmentCategory::CommodeSeat, d(2027, 3, 31), 50_000, None),
            at(2027, 3, 31),
        )
        .then(vec![purchased(
            EquipmentCategory::CommodeSeat,
            d(2027, 3, 31),
            50_000,
            10_000,
            9_000,
            1,
            None,
        )]);
    given::<P>(history.clone())
        .when(
            purchase(EquipmentCategory::CommodeSeat, d(2027, 4, 1), 50_000, None),
            at(2027, 4, 1),
        )
        .then(vec![purchased(
            EquipmentCategory::CommodeSeat,
            d(2027, 4, 1),
            50_000,
            50_000,
            45_000,
            1,
            None,
        )]);
    given::<P>(history.clone())
        .when(
            purchase(EquipmentCategory::BathingAid, d(2027, 3, 31), 5_000, None),
            at(2027, 3, 31),
        )
        .then_rejected(R::EquipmentCategoryAlreadyPurchased);
    given::<P>(history)
        .when(
            purchase(EquipmentCategory::BathingAid, d(2027, 4, 1), 5_000, None),
            at(2027, 4, 1),
        )
        .then_accepted();
}

/// Defect 7: one lookup of the current certification for the API and the
/// ingest. Given a certification to 2026-09-30 and its renewal already
/// decided from 2026-10-01, an application on 2026-09-15 sees the one in
/// force (not the later one, which `certifications.last()` returned); on
/// 2027-10-05, after both ended, the latest ended one (so a late renewal is
/// told it expired); before any, none.
#[test]
fn the_current_certification_is_the_one_in_force_on_the_application_date() {
    let state = given::<P>([
        certified(1, CareLevel::Care1, d(2026, 4, 1), d(2026, 9, 30)),
        certified(2, CareLevel::Care2, d(2026, 10, 1), d(2027, 9, 30)),
    ])
    .state()
    .clone();
    let current = state.current_certification(d(2026, 9, 15)).unwrap();
    assert_eq!(current.level, CareLevel::Care1);
    assert_eq!(current.valid_until, d(2026, 9, 30));
    let later = state.current_certification(d(2027, 10, 5)).unwrap();
    assert_eq!(later.valid_until, d(2027, 9, 30));
    assert_eq!(state.current_certification(d(2026, 3, 31)), None);
}

/// Issue 16 item 7: the care-plan basis (what lets the registered office
/// read the record) holds only while the filing is in effect: the person
/// certified in the group it was filed for, or, for a provisional filing,
/// up to `PROVISIONAL_CARE_PLAN_BASIS_DAYS` while no certification is in
/// force. It ends with the certification, on a move between 要支援 and
/// 要介護, and returns with a renewal.
#[test]
fn the_care_plan_basis_holds_while_the_filing_is_in_effect() {
    let office = office();
    let mut history = person();
    history.push(registered_care_office());
    let state = given::<P>(history.clone()).state().clone();
    assert_eq!(
        state.care_plan_office_on(d(2026, 4, 29)),
        None,
        "before the filing"
    );
    assert_eq!(state.care_plan_office_on(d(2026, 4, 30)), Some(&office));
    assert_eq!(state.care_plan_office_on(d(2027, 3, 31)), Some(&office));
    assert_eq!(
        state.care_plan_office_on(d(2027, 4, 1)),
        None,
        "the certification ended"
    );
    // A renewal in force brings it back.
    history.push(certified(
        2,
        CareLevel::Care2,
        d(2027, 4, 1),
        d(2028, 3, 31),
    ));
    let renewed = given::<P>(history.clone()).state().clone();
    assert_eq!(renewed.care_plan_office_on(d(2027, 4, 1)), Some(&office));
    // A change decision to 要支援 from 2027-06-01: the filing is for 要介護.
    history.push(certified(
        3,
        CareLevel::Support2,
        d(2027, 6, 1),
        d(2027, 11, 30),
    ));
    let moved = given::<P>(history).state().clone();
    assert_eq!(moved.care_plan_office_on(d(2027, 5, 31)), Some(&office));
    assert_eq!(moved.care_plan_office_on(d(2027, 6, 1)), None);
    // A provisional filing: 60 days without a certification, then none.
    let provisional = CarePlanOfficeRegistered {
        office: office.clone(),
        office_kind: CarePlanOfficeKind::HomeCareSupportOffice,
        level_group: LevelGroup::Care,
        filed_on: d(2026, 4, 20),
        billable_from: d(2026, 4, 1),
    };
    let pending = given::<P>([provisional.clone().into()]).state().clone();
    let last = d(2026, 4, 20) + Duration::days(PROVISIONAL_CARE_PLAN_BASIS_DAYS as i64);
    assert_eq!(pending.care_plan_office_on(last), Some(&office));
    assert_eq!(pending.care_plan_office_on(last + Duration::days(1)), None);
    // Decided 要介護1 from the application date: the certification decides.
    let decided = given::<P>([
        provisional.into(),
        certified(1, CareLevel::Care1, d(2026, 4, 15), d(2026, 10, 31)),
    ])
    .state()
    .clone();
    assert_eq!(decided.care_plan_office_on(d(2026, 9, 1)), Some(&office));
    assert_eq!(decided.care_plan_office_on(d(2026, 11, 1)), None);
}
