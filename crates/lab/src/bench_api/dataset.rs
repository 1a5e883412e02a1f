//! The data set of `kiban bench api`: insurers sharing data, offices with a
//! registered terminal each, and persons with a decided certification, a
//! copayment-ratio certificate, some a cost-limit certificate, a
//! registered care-plan office and for half of them a consent to a second
//! office — so that every office has a caseload.
//!
//! Every event is decided by the real deciders (the same `decide` the engine
//! calls, with the same emitter check), then appended straight to the store,
//! one append per stream and many streams at once (the store's writer
//! groups them into commits). The projections then catch up from the store
//! as they do after any restart. That is the engine's work without its
//! per-command round trips: a fresh stream needs no load.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use kiban_api::Principal;
use kiban_events::domain::certification::{
    Applicant, ApplicationKind, CertificationApplication, CertificationCommand,
    certification_stream,
};
use kiban_events::domain::insured::{
    CarePlanOfficeKind, InsuredCommand, InsuredPerson, insured_stream,
};
use kiban_events::domain::insurer::{Insurer, InsurerCommand, insurer_stream};
use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
use kiban_events::domain::{
    CareLevel, CopaymentRatio, CostLimitStage, Decider, DocumentRef, DomainEvent, LevelGroup,
    ServiceTypeCode, Sha256Digest, TerminalId, jst_date,
};
use kiban_events::envelope::{Actor, EventId, ExpectedVersion, NewEvent, StreamName};
use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};
use kiban_store::Store;
use uuid::Uuid;

/// Persons per insurer: about the average municipality's number of persons
/// with care needs (7 million over 1,571 insurers is ≈ 4,500; half that
/// keeps several insurers in a small run).
pub const PERSONS_PER_INSURER: u64 = 2_000;

/// The terminal every benchmark office has.
pub const TERMINAL: &str = "T-01";

/// Appends in flight while loading (streams appended concurrently).
const APPENDS_IN_FLIGHT: usize = 128;

/// The certified levels, cycled over the persons.
const LEVELS: [CareLevel; 7] = [
    CareLevel::Support1,
    CareLevel::Support2,
    CareLevel::Care1,
    CareLevel::Care2,
    CareLevel::Care3,
    CareLevel::Care4,
    CareLevel::Care5,
];

/// The shape of the data set: who exists and who may see whom. Pure
/// arithmetic on the indexes, so the load generator knows each office's
/// caseload without asking.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub persons: u64,
    pub offices: u64,
    pub insurers: u64,
}

impl Population {
    pub fn new(persons: u64, offices: u64) -> Self {
        Self {
            persons,
            offices,
            insurers: persons.div_ceil(PERSONS_PER_INSURER).max(1),
        }
    }

    pub fn insurer(&self, index: u64) -> InsurerNumber {
        InsurerNumber::parse(&format!("{:02}{:04}", 1 + index % 47, 1000 + index / 47))
            .expect("a valid insurer number")
    }

    pub fn office(&self, index: u64) -> OfficeNumber {
        OfficeNumber::parse(&format!("{:02}{:08}", 1 + index % 47, index))
            .expect("a valid office number")
    }

    /// The person's insurer index.
    pub fn insurer_of(&self, person: u64) -> u64 {
        person % self.insurers
    }

    /// The person's insurer and insured number (the path segments).
    pub fn person(&self, person: u64) -> (InsurerNumber, InsuredNumber) {
        let insured = InsuredNumber::parse(&format!("{:010}", 1 + person / self.insurers))
            .expect("a valid insured number");
        (self.insurer(self.insurer_of(person)), insured)
    }

    /// The registered care-plan office (居宅介護支援事業所 or 地域包括支援センター).
    pub fn care_plan_office_of(&self, person: u64) -> u64 {
        person % self.offices
    }

    /// The second office the person consented to (every other person).
    pub fn consent_office_of(&self, person: u64) -> Option<u64> {
        (person % 2 == 1).then(|| (person / 2 * 7 + 3) % self.offices)
    }

    /// Every person `office` may read: care-plan registrations and consents.
    pub fn caseload(&self, office: u64) -> Vec<u64> {
        (0..self.persons)
            .filter(|&p| {
                self.care_plan_office_of(p) == office || self.consent_office_of(p) == Some(office)
            })
            .collect()
    }

    /// The persons of insurer `index`.
    pub fn persons_of_insurer(&self, index: u64) -> Vec<u64> {
        (index..self.persons)
            .step_by(self.insurers as usize)
            .collect()
    }

    /// Principals the benchmark has certificates for: every office's
    /// terminal and every insurer.
    pub fn principals(&self) -> Vec<Principal> {
        let offices = (0..self.offices).map(|o| Principal::Office {
            office: self.office(o),
            terminal: TerminalId::parse(TERMINAL).expect("valid"),
        });
        let insurers = (0..self.insurers).map(|i| Principal::Insurer(self.insurer(i)));
        offices.chain(insurers).collect()
    }
}

/// A stream's events decided one command at a time against its folded
/// state, as the engine would (decide, emitter check, evolve).
struct Script<D: Decider> {
    state: D::State,
    events: Vec<NewEvent>,
}

impl<D: Decider> Script<D> {
    fn new() -> Self {
        Self {
            state: D::State::default(),
            events: Vec::new(),
        }
    }

    fn run(&mut self, command: D::Command, actor: &Actor, at: DateTime<Utc>) -> anyhow::Result<()> {
        let events = D::decide(&self.state, &command, at)
            .map_err(|rejection| anyhow!("the data set was refused: {rejection:?}"))?;
        for event in events {
            if !event.admits_actor(actor) {
                return Err(anyhow!("{actor} may not record {}", event.event_type()));
            }
            let id = EventId::from_uuid(Uuid::now_v7()).expect("v7 ids are not nil");
            self.events
                .push(event.to_new_event(id, at, actor.clone(), *id.as_uuid(), None));
            self.state = D::evolve(std::mem::take(&mut self.state), &event);
        }
        Ok(())
    }
}

/// What loading took.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub events: u64,
    pub append_seconds: f64,
}

/// Appends the whole data set (see the module documentation); `now` is the
/// API's clock, and `fingerprints` the certificate of each office's
/// terminal, by office index.
pub async fn load(
    store: &Store,
    population: Population,
    fingerprints: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<Loaded> {
    let started = std::time::Instant::now();
    let before = store.head().await?.position;
    let mut setup: Vec<(StreamName, Vec<NewEvent>)> = Vec::new();
    let onboarded = now - Duration::days(90);
    for index in 0..population.insurers {
        let insurer = population.insurer(index);
        let mut script = Script::<Insurer>::new();
        script.run(
            InsurerCommand::Onboard {
                insurer: insurer.clone(),
            },
            &Actor::Federation,
            onboarded,
        )?;
        let as_insurer = Actor::Insurer(insurer.clone());
        let day = jst_date(onboarded + Duration::days(1));
        script.run(
            InsurerCommand::CompleteStandardisation { completed_on: day },
            &as_insurer,
            onboarded + Duration::days(1),
        )?;
        script.run(
            InsurerCommand::CompleteDataTransmission { completed_on: day },
            &as_insurer,
            onboarded + Duration::days(1),
        )?;
        setup.push((insurer_stream(&insurer), script.events));
    }
    let service_type = ServiceTypeCode::parse(kiban_system::dev_pki::DEV_OFFICE_SERVICE_TYPE)?;
    for (index, fingerprint) in fingerprints.iter().enumerate() {
        let office = population.office(index as u64);
        let mut script = Script::<Office>::new();
        script.run(
            OfficeCommand::Register {
                office: office.clone(),
                service_types: vec![service_type.clone()],
            },
            &Actor::Federation,
            onboarded,
        )?;
        script.run(
            OfficeCommand::RegisterTerminal {
                terminal: TerminalId::parse(TERMINAL)?,
                credential: Sha256Digest::parse(fingerprint)?,
            },
            &Actor::Federation,
            onboarded,
        )?;
        setup.push((office_stream(&office), script.events));
    }
    append_all(
        store,
        futures::stream::iter(setup.into_iter().map(|stream| Ok(vec![stream]))),
    )
    .await?;
    let persons = futures::stream::iter(0..population.persons)
        .map(move |person| person_streams(population, person, now));
    append_all(store, persons).await?;
    let events = store.head().await?.position - before;
    Ok(Loaded {
        events,
        append_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Appends each stream's events as one append to a new stream, many at once.
async fn append_all(
    store: &Store,
    streams: impl futures::Stream<Item = anyhow::Result<Vec<(StreamName, Vec<NewEvent>)>>> + Unpin,
) -> anyhow::Result<()> {
    let store = Arc::new(store.clone());
    let mut appends = streams
        .map(|streams| {
            let store = store.clone();
            async move {
                for (stream, events) in streams? {
                    store
                        .append(&stream, ExpectedVersion::NoStream, events)
                        .await
                        .with_context(|| format!("cannot append the data set's {stream}"))?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(APPENDS_IN_FLIGHT);
    while let Some(result) = appends.next().await {
        result?;
    }
    Ok(())
}

/// One person's certification (filed by the care-plan office 60 days ago,
/// decided 39 days ago) and person record.
fn person_streams(
    population: Population,
    person: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(StreamName, Vec<NewEvent>)>> {
    let (insurer, insured) = population.person(person);
    let as_insurer = Actor::Insurer(insurer.clone());
    let care_plan_office = population.office(population.care_plan_office_of(person));
    let terminal = TerminalId::parse(TERMINAL)?;
    let as_office = |office: &OfficeNumber| Actor::Office {
        office: office.clone(),
        terminal: Some(TERMINAL.to_owned()),
    };
    let level = LEVELS[(person % LEVELS.len() as u64) as usize];
    let filed = now - Duration::days(60);
    let day = |days: i64| filed + Duration::days(days);
    let document = |fill: char, media_type: &str, size: u64| {
        DocumentRef::new(
            Sha256Digest::parse(&fill.to_string().repeat(64)).expect("valid"),
            media_type,
            size,
        )
        .expect("valid")
    };
    let institution =
        MedicalInstitutionCode::parse(&format!("{:02}{:08}", 1 + person % 47, person % 50_000))?;

    let mut certification = Script::<CertificationApplication>::new();
    use CertificationCommand as C;
    let steps = [
        (
            C::FileApplication {
                insurer: insurer.clone(),
                insured: insured.clone(),
                seq: 1,
                kind: ApplicationKind::New,
                applicant: Applicant::Office {
                    office: care_plan_office.clone(),
                },
                applied_on: jst_date(filed),
                current_certification: None,
                insured_name: None,
            },
            as_office(&care_plan_office),
            day(0),
        ),
        (
            C::ScheduleInvestigation {
                scheduled_on: jst_date(day(7)),
            },
            as_insurer.clone(),
            day(2),
        ),
        (
            C::RequestOpinion {
                institution: institution.clone(),
            },
            as_insurer.clone(),
            day(3),
        ),
        (
            C::CompleteInvestigation {
                investigation_sheet: document('a', "application/pdf", 48_213),
            },
            as_insurer.clone(),
            day(8),
        ),
        (
            C::ReceiveOpinion {
                institution,
                opinion: document('b', "application/pdf", 91_502),
            },
            as_insurer.clone(),
            day(12),
        ),
        (
            C::RecordPrimaryJudgment { level },
            as_insurer.clone(),
            day(15),
        ),
        (
            C::RecordSecondaryJudgment { level },
            as_insurer.clone(),
            day(20),
        ),
        (
            C::Decide {
                level,
                validity: None,
            },
            as_insurer.clone(),
            day(21),
        ),
    ];
    for (command, actor, at) in steps {
        certification.run(command, &actor, at)?;
    }
    let validity = certification
        .state
        .decision
        .as_ref()
        .and_then(|decision| decision.validity)
        .context("a certified level has a validity")?;

    let mut record = Script::<InsuredPerson>::new();
    use InsuredCommand as I;
    record.run(
        I::RecordCertification {
            application_seq: 1,
            level,
            validity,
        },
        &as_insurer,
        day(21),
    )?;
    record.run(
        I::IssueCopaymentCertificate {
            ratio: CopaymentRatio::new(1 + (person % 10 / 8) as u8 + (person % 10 / 9) as u8)?,
            valid_from: validity.from,
        },
        &as_insurer,
        day(22),
    )?;
    if person.is_multiple_of(5) {
        let stage = [
            CostLimitStage::Stage1,
            CostLimitStage::Stage2,
            CostLimitStage::Stage3First,
            CostLimitStage::Stage3Second,
        ][(person / 5 % 4) as usize];
        record.run(
            I::IssueCostLimitCertificate {
                stage,
                applied_on: jst_date(day(25)),
                for_coming_period: false,
            },
            &as_insurer,
            day(25),
        )?;
    }
    let office_kind = match level.group() {
        Some(LevelGroup::Support) => CarePlanOfficeKind::CommunityGeneralSupportCenter,
        _ => CarePlanOfficeKind::HomeCareSupportOffice,
    };
    record.run(
        I::RegisterCarePlanOffice {
            office: care_plan_office.clone(),
            office_kind,
            filed_on: jst_date(day(26)),
            pending_application_on: None,
        },
        &as_office(&care_plan_office),
        day(26),
    )?;
    if let Some(office) = population.consent_office_of(person) {
        let office = population.office(office);
        record.run(
            I::GiveConsent {
                office: office.clone(),
                terminal: terminal.clone(),
                expires_at: day(30) + Duration::days(365),
            },
            &as_office(&office),
            day(30),
        )?;
    }
    Ok(vec![
        (
            certification_stream(&insurer, &insured, 1),
            certification.events,
        ),
        (insured_stream(&insurer, &insured), record.events),
    ])
}
