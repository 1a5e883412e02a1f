//! The workload: what happens to one simulated person over the horizon,
//! derived from `(seed, person)` alone, so that any person's plan can be
//! generated again without the others (bounded memory, resumable runs).
//!
//! Per person (figures after DOMAIN.md; about 0.9 applications a year on
//! average, 8–11 messages each):
//! - a new application (新規申請) on a random day of the first 300 days, then
//!   a renewal (更新申請) 20–50 days before each validity ends;
//! - each application: investigation scheduled, opinion requested,
//!   investigation completed, opinion received, primary and secondary
//!   judgment, then one of: decided within 30 days (87 %), an extension
//!   notified and decided later (8 %), withdrawn after the visit was
//!   scheduled (3 %), or left open past its deadline (2 %: the timers record
//!   `deadline_reached`); 3 % of decisions are 非該当 (a new application
//!   follows 180 days later);
//! - after the first decision with a level: the care-plan office is filed
//!   (居宅サービス計画作成依頼届出) by the insurer, the person consents to that
//!   office at its card reader, and the office reads the record a few times
//!   a year;
//! - every 8/1: the copayment-ratio certificate (負担割合証); for 15 %, the
//!   cost-limit certificate (負担限度額認定証);
//! - while certified, each year: a home modification (住宅改修, 4 %) and an
//!   equipment purchase (特定福祉用具購入, 8 %).

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use kiban_events::domain::dates::{next_july_31, validity_until};
use serde_json::{Value, json};

/// Deterministic pseudo-random numbers (SplitMix64): a plan depends on its
/// seed only, never on the platform or on what ran before.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut random = Random(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        random.next_u64();
        random
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The population's shape.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub seed: u64,
    pub insurers: u64,
    pub offices: u64,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Population {
    /// Insurer `index` (0-based): prefectures 01–47 in turn.
    pub fn insurer(&self, index: u64) -> String {
        format!("{:02}{:04}", 1 + index % 47, 1000 + index / 47)
    }

    pub fn insurer_of(&self, person: u64) -> String {
        self.insurer(person % self.insurers)
    }

    pub fn insured_of(&self, person: u64) -> String {
        format!("{:010}", 1 + person / self.insurers)
    }

    /// The office that plans the person's care (and files by proxy).
    pub fn office_of(&self, person: u64) -> String {
        let index = Random::new(self.seed ^ 0x0FF1CE, person).next_u64() % self.offices;
        format!("{:02}{:08}", 1 + index % 47, index)
    }

    fn institution_of(&self, person: u64) -> String {
        let index = Random::new(self.seed ^ 0xD0C7, person).next_u64() % 50_000;
        format!("{:02}{:08}", 1 + index % 47, index)
    }
}

/// One thing that happens.
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: DateTime<Utc>,
    pub person: u64,
    /// The action's number within the person's plan (ordering and ids).
    pub index: u32,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// A municipality's status message.
    Ingest {
        kind: &'static str,
        application: Option<u32>,
        body: Value,
    },
    /// The person consents at the office's card reader (an office command).
    Consent { office: String },
    /// The office reads the person's record (the access log).
    View { office: String },
}

/// How an application ends, for the run's invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcomes {
    pub filed: u64,
    pub decided: u64,
    pub extended: u64,
    pub withdrawn: u64,
    pub left_open: u64,
}

impl Outcomes {
    pub fn add(&mut self, other: &Outcomes) {
        self.filed += other.filed;
        self.decided += other.decided;
        self.extended += other.extended;
        self.withdrawn += other.withdrawn;
        self.left_open += other.left_open;
    }
}

const LEVELS: [&str; 7] = [
    "support_1",
    "support_2",
    "care_1",
    "care_2",
    "care_3",
    "care_4",
    "care_5",
];

/// Noon of `date` in Japan.
pub fn at_noon(date: NaiveDate) -> DateTime<Utc> {
    at(date, 12)
}

fn at(date: NaiveDate, hour: u32) -> DateTime<Utc> {
    let jst = chrono::FixedOffset::east_opt(9 * 3600).expect("valid offset");
    jst.from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(hour, 0, 0).expect("valid")))
        .single()
        .expect("a fixed offset maps every time once")
        .with_timezone(&Utc)
}

fn document(random: &mut Random) -> Value {
    json!({
        "sha256": format!("{:016x}{:016x}{:016x}{:016x}", random.next_u64(), random.next_u64(), random.next_u64(), random.next_u64()),
        "media_type": "application/pdf",
        "size_bytes": random.between(20_000, 400_000),
    })
}

/// The person's whole plan, in time order, and how its applications end.
pub fn plan_person(population: &Population, person: u64) -> (Vec<Planned>, Outcomes) {
    let mut plan = Plan {
        population,
        person,
        random: Random::new(population.seed, person),
        actions: Vec::new(),
        outcomes: Outcomes::default(),
        stretches: Vec::new(),
    };
    plan.certifications();
    plan.yearly();
    let mut actions = plan.actions;
    actions.sort_by_key(|action| (action.at, action.index));
    (actions, plan.outcomes)
}

struct Plan<'a> {
    population: &'a Population,
    person: u64,
    random: Random,
    actions: Vec<Planned>,
    outcomes: Outcomes,
    stretches: Vec<Stretch>,
}

/// A certification as the plan knows it.
#[derive(Debug, Clone, Copy)]
struct Certified {
    until: NaiveDate,
    care: bool,
}

/// A decided certification with a level: when it was decided and the
/// validity it got.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    decided_on: NaiveDate,
    from: NaiveDate,
    until: NaiveDate,
}

impl Plan<'_> {
    fn push(&mut self, date: NaiveDate, hour: u32, action: Action) {
        let index = self.actions.len() as u32;
        self.actions.push(Planned {
            at: at(date, hour),
            person: self.person,
            index,
            action,
        });
    }

    fn ingest(&mut self, date: NaiveDate, kind: &'static str, seq: Option<u32>, body: Value) {
        self.push(
            date,
            10,
            Action::Ingest {
                kind,
                application: seq,
                body,
            },
        );
    }

    fn certifications(&mut self) {
        let end = self.population.end;
        let office = self.population.office_of(self.person);
        let institution = self.population.institution_of(self.person);
        let mut filed_on = self.population.start + Days::new(self.random.between(0, 300));
        let mut current: Option<Certified> = None;
        let mut care_plan_filed = false;
        let mut seq = 0u32;
        while filed_on + Days::new(45) <= end {
            seq += 1;
            let renewal = current.is_some_and(|c| c.until >= filed_on);
            let day = |n: u64| filed_on + Days::new(n);
            self.outcomes.filed += 1;
            self.ingest(
                filed_on,
                "certification.filed",
                Some(seq),
                json!({"kind": if renewal { "renewal" } else { "new" },
                       "applicant": {"by": "office", "office": office},
                       "applied_on": filed_on}),
            );
            self.ingest(
                day(2),
                "certification.investigation_scheduled",
                Some(seq),
                json!({"scheduled_on": day(5)}),
            );
            let outcome = self.random.next_u64() % 100;
            if outcome < 3 {
                self.outcomes.withdrawn += 1;
                self.ingest(
                    day(7),
                    "certification.withdrawn",
                    Some(seq),
                    json!({"reason": null}),
                );
                filed_on = match current {
                    Some(c) if c.until >= filed_on => c.until + Days::new(30),
                    _ => day(120),
                };
                current = None;
                continue;
            }
            self.ingest(
                day(3),
                "certification.opinion_requested",
                Some(seq),
                json!({"institution": institution}),
            );
            let sheet = document(&mut self.random);
            let completed = day(self.random.between(8, 12));
            self.ingest(
                completed,
                "certification.investigation_completed",
                Some(seq),
                json!({"investigation_sheet": sheet}),
            );
            let opinion = document(&mut self.random);
            let received = day(self.random.between(10, 16));
            self.ingest(
                received,
                "certification.opinion_received",
                Some(seq),
                json!({"institution": institution, "opinion": opinion}),
            );
            let not_eligible = self.random.percent(3);
            let level = if not_eligible {
                "not_eligible"
            } else {
                LEVELS[(self.random.next_u64() % LEVELS.len() as u64) as usize]
            };
            self.ingest(
                day(17),
                "certification.primary_judgment_recorded",
                Some(seq),
                json!({"level": level}),
            );
            self.ingest(
                day(19),
                "certification.secondary_judgment_recorded",
                Some(seq),
                json!({"level": level}),
            );
            let decided_on = if outcome < 5 {
                self.outcomes.left_open += 1;
                // Left open: nothing more for this person in the horizon.
                return;
            } else if outcome < 13 {
                self.outcomes.extended += 1;
                self.ingest(
                    day(25),
                    "certification.extension_notified",
                    Some(seq),
                    json!({"reason": "主治医意見書の到着待ち (waiting for the opinion)",
                           "expected_decision_on": day(45)}),
                );
                day(40)
            } else {
                day(self.random.between(20, 29))
            };
            self.outcomes.decided += 1;
            self.ingest(
                decided_on,
                "certification.decided",
                Some(seq),
                json!({"level": level, "validity": null}),
            );
            if not_eligible {
                filed_on = decided_on + Days::new(180);
                if !renewal {
                    current = None;
                }
                continue;
            }
            let from = match current {
                Some(c) if renewal => c.until + Days::new(1),
                _ => filed_on,
            };
            let certified = Certified {
                until: validity_until(from, if renewal { 12 } else { 6 }),
                care: level.starts_with("care"),
            };
            self.stretches.push(Stretch {
                decided_on,
                from,
                until: certified.until,
            });
            current = Some(certified);
            if !care_plan_filed && from <= decided_on {
                care_plan_filed = true;
                self.care_plan(decided_on + Days::new(3), certified, &office);
            }
            filed_on = certified.until - Days::new(self.random.between(20, 50));
        }
    }

    /// The care-plan office filing, the consent at its card reader, and the
    /// office's reads of the record.
    fn care_plan(&mut self, filed_on: NaiveDate, certified: Certified, office: &str) {
        if filed_on > self.population.end {
            return;
        }
        let kind = if certified.care {
            "home_care_support_office"
        } else {
            "community_general_support_center"
        };
        self.ingest(
            filed_on,
            "insured.care_plan_office_registered",
            None,
            json!({"office": office, "office_kind": kind, "filed_on": filed_on}),
        );
        self.push(
            filed_on,
            14,
            Action::Consent {
                office: office.to_owned(),
            },
        );
        let mut read_on = filed_on + Days::new(self.random.between(1, 30));
        while read_on <= self.population.end {
            self.push(
                read_on,
                15,
                Action::View {
                    office: office.to_owned(),
                },
            );
            read_on = read_on + Days::new(self.random.between(60, 150));
        }
    }

    /// Certificates and benefit uses, inside the certified stretches.
    fn yearly(&mut self) {
        let end = self.population.end;
        let stretches = std::mem::take(&mut self.stretches);
        let covered = |day: NaiveDate| {
            stretches
                .iter()
                .any(|s| s.from <= day && day <= s.until && s.decided_on < day)
        };
        // Copayment-ratio certificates: from the first certification's
        // start (issued the day after the decision), then every 8/1.
        let mut copayment: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        if let Some(first) = stretches.first() {
            let issued_on = first.decided_on + Days::new(1);
            if issued_on <= end {
                self.copayment_certificate(issued_on, first.from);
                copayment.push((first.from, next_july_31(first.from)));
            }
        }
        for year in self.population.start.year()..=end.year() {
            let august = NaiveDate::from_ymd_opt(year, 8, 1).expect("valid");
            if august < self.population.start || august > end || !covered(august) {
                continue;
            }
            if !copayment.iter().any(|(from, _)| *from == august) {
                self.copayment_certificate(august, august);
                copayment.push((august, next_july_31(august)));
            }
            if self.random.percent(15) {
                let stage = ["stage_1", "stage_2", "stage_3_1", "stage_3_2"]
                    [(self.random.next_u64() % 4) as usize];
                self.ingest(
                    august,
                    "insured.cost_limit_certificate_issued",
                    None,
                    json!({"stage": stage, "applied_on": august}),
                );
            }
        }
        let paid = |day: NaiveDate| {
            covered(day)
                && copayment
                    .iter()
                    .any(|(from, until)| *from <= day && day <= *until)
        };
        // Benefit uses: at most one of each kind per certification.
        let mut prior_applications = 0;
        for (index, stretch) in stretches.iter().enumerate() {
            let first_day = stretch.from.max(stretch.decided_on) + Days::new(2);
            let day = first_day + Days::new(self.random.between(10, 60));
            let receipt_on = day + Days::new(30);
            if self.random.percent(4) && receipt_on <= end && paid(day) && paid(receipt_on) {
                prior_applications += 1;
                let cost = self.random.between(5, 30) * 10_000;
                self.ingest(
                    day,
                    "insured.home_modification_applied",
                    None,
                    json!({"prior_application": prior_applications, "applied_on": day, "planned_cost": cost}),
                );
                self.ingest(
                    receipt_on,
                    "insured.home_modification_work_recorded",
                    None,
                    json!({"prior_application": prior_applications,
                           "work_started_on": day + Days::new(20),
                           "receipt_on": receipt_on, "cost": cost}),
                );
            }
            let day = first_day + Days::new(self.random.between(10, 120));
            if self.random.percent(8) && day <= end && paid(day) {
                let category = ["commode_seat", "bathing_aid"][index % 2];
                let cost = self.random.between(10, 60) * 1_000;
                self.ingest(
                    day,
                    "insured.equipment_purchase_recorded",
                    None,
                    json!({"category": category, "purchased_on": day, "cost": cost,
                           "seller_designated": true, "replacement_reason": null}),
                );
            }
        }
        self.stretches = stretches;
    }

    fn copayment_certificate(&mut self, issued_on: NaiveDate, valid_from: NaiveDate) {
        let ratio = match self.random.next_u64() % 10 {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        self.ingest(
            issued_on,
            "insured.copayment_certificate_issued",
            None,
            json!({"ratio": ratio, "valid_from": valid_from}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn population() -> Population {
        Population {
            seed: 7,
            insurers: 3,
            offices: 10,
            start: NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(),
            end: NaiveDate::from_ymd_opt(2026, 3, 31).unwrap(),
        }
    }

    #[test]
    fn a_plan_depends_on_the_seed_and_the_person_only() {
        let (a, _) = plan_person(&population(), 42);
        let (b, _) = plan_person(&population(), 42);
        let (c, _) = plan_person(&population(), 43);
        let key = |plan: &[Planned]| {
            plan.iter()
                .map(|p| format!("{}{:?}", p.at, p.action))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn plans_are_in_time_order_within_the_horizon_and_outcomes_add_up() {
        let population = population();
        let mut outcomes = Outcomes::default();
        for person in 0..500 {
            let (plan, person_outcomes) = plan_person(&population, person);
            assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(plan.iter().all(|p| p.at.date_naive() <= population.end));
            outcomes.add(&person_outcomes);
        }
        assert_eq!(
            outcomes.filed,
            outcomes.decided + outcomes.withdrawn + outcomes.left_open
        );
        assert!(outcomes.filed > 500, "{outcomes:?}");
        assert!(outcomes.withdrawn > 0 && outcomes.left_open > 0 && outcomes.extended > 0);
    }
}
