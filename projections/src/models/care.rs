//! The `care` projection: insured persons, their certification
//! applications, and the offices that may see them.
//!
//! Documents (each keeps the aggregate's own events, so the views fold them
//! with the deciders' `evolve` and use the domain's helpers):
//! - `person:<insurer>-<insured>`: [`PersonDoc`];
//! - `application:<insurer>-<insured>-<seq>`: [`ApplicationDoc`].
//!
//! Indexes: `caseload` (office → person), `applications` (person →
//! application), `open_applications` (insurer → open application),
//! `opinion_requests` (medical institution → application).

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use kiban_events::domain::certification::{Applicant, CertificationEvent, InsuredName};
use kiban_events::domain::certification::{CertificationApplication, CertificationStatus};
use kiban_events::domain::insured::{InsuredEvent, InsuredPerson, InsuredState};
use kiban_events::domain::{Decider, SealedValue};

use crate::db::Tx;
use crate::error::Result;
use crate::projection::{Decoded, Event, Projection, Stamped, id_parts};

/// The projection's name.
pub const CARE: &str = "care";

/// Index: office → persons it may see (consent or care-plan office).
pub const CASELOAD_INDEX: &str = "caseload";
/// Index: person (`<insurer>-<insured>`) → applications.
pub const APPLICATIONS_INDEX: &str = "applications";
/// Index: insurer → open applications.
pub const OPEN_APPLICATIONS_INDEX: &str = "open_applications";
/// Index: medical institution → applications whose opinion it was asked for.
pub const OPINION_REQUESTS_INDEX: &str = "opinion_requests";

/// The key of a person's document.
pub fn person_key(person: &str) -> String {
    format!("person:{person}")
}

/// The key of an application's document.
pub fn application_key(application: &str) -> String {
    format!("application:{application}")
}

/// An insured person as the read side keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonDoc {
    /// 保険者番号.
    pub insurer: String,
    /// 被保険者番号.
    pub insured: String,
    /// The person's events, except reads (`insured.record_viewed`,
    /// `insured.own_record_viewed`), which belong to the access log.
    pub events: Vec<Stamped<InsuredEvent>>,
    /// When anything about the person (their stream or an application)
    /// last happened.
    pub last_updated_at: DateTime<Utc>,
    /// The position of that event.
    pub last_position: u64,
    /// The offices currently filed in the caseload index.
    pub offices: BTreeSet<String>,
    /// The insured person's name and kana from their latest filing that
    /// carried one, sealed; none when never given or forgotten.
    #[serde(default)]
    pub name: Option<InsuredName>,
}

impl PersonDoc {
    /// The person's state, folded with the decider's `evolve`.
    pub fn state(&self) -> InsuredState {
        InsuredPerson::replay(self.events.iter().map(|stamped| &stamped.event))
    }

    /// The person's personal fields as the read side keeps them: sealed
    /// (the API opens them with the person's key), and none once forgotten.
    pub fn personal(&self) -> PersonalFields {
        let mut fields = PersonalFields::default();
        for stamped in &self.events {
            match &stamped.event {
                InsuredEvent::MovedHouse(moved) => {
                    fields.moved_on = Some(moved.moved_on);
                    fields.address = moved.address.clone();
                }
                InsuredEvent::PersonForgotten(forgotten) => {
                    fields.forgotten_at = Some(forgotten.forgotten_at);
                }
                _ => {}
            }
        }
        fields.name = self.name.clone();
        if fields.forgotten_at.is_some() {
            fields.address = None;
            fields.name = None;
        }
        fields
    }
}

/// A person's personal fields, sealed (see [`PersonDoc::personal`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PersonalFields {
    /// The address of the latest move (住所), sealed; none when never
    /// given or forgotten.
    pub address: Option<SealedValue>,
    /// The day of the latest move.
    pub moved_on: Option<NaiveDate>,
    /// When the person was forgotten (本人情報の消去), if they were.
    pub forgotten_at: Option<DateTime<Utc>>,
    /// The name and kana of the latest filing that carried them, sealed.
    pub name: Option<InsuredName>,
}

/// A certification application as the read side keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationDoc {
    /// 保険者番号.
    pub insurer: String,
    /// 被保険者番号.
    pub insured: String,
    /// The application's sequence number.
    pub seq: u32,
    /// The application's events.
    pub events: Vec<Stamped<CertificationEvent>>,
}

impl ApplicationDoc {
    /// The application's state, folded with the decider's `evolve`.
    pub fn state(&self) -> kiban_events::domain::certification::CertificationState {
        CertificationApplication::replay(self.events.iter().map(|stamped| &stamped.event))
    }

    /// `<insurer>-<insured>-<seq>`.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.insurer, self.insured, self.seq)
    }
}

/// The `care` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CareProjection;

impl Projection for CareProjection {
    fn name(&self) -> &'static str {
        CARE
    }

    fn schema_version(&self) -> u32 {
        // 2: `insured.moved_house` v2 (`address`) in the stored events, and
        // personal fields removed when a person is forgotten. 3: the
        // person's sealed name (`certification.filed` v2).
        3
    }

    fn prefetch(&self, event: &Event, keys: &mut Vec<String>) {
        let id = event.recorded.stream.id();
        match event.recorded.stream.kind() {
            "insured" if id_parts(id, 2).is_some() => keys.push(person_key(id)),
            "certification" => {
                if let Some(parts) = id_parts(id, 3) {
                    keys.push(application_key(id));
                    keys.push(person_key(&format!("{}-{}", parts[0], parts[1])));
                }
            }
            _ => {}
        }
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match event.recorded.stream.kind() {
                "insured" => apply_insured(tx, event).await,
                "certification" => apply_certification(tx, event).await,
                _ => Ok(()),
            }
        })
    }
}

/// A person's document before their first event.
fn new_person(insurer: &str, insured: &str, event: &Event) -> PersonDoc {
    PersonDoc {
        insurer: insurer.to_owned(),
        insured: insured.to_owned(),
        events: Vec::new(),
        last_updated_at: event.recorded.occurred_at,
        last_position: event.position(),
        offices: BTreeSet::new(),
        name: None,
    }
}

async fn apply_insured(tx: &mut Tx, event: &Event) -> Result<()> {
    let id = event.recorded.stream.id();
    let Some(parts) = id_parts(id, 2) else {
        return Ok(());
    };
    let Decoded::Insured(insured) = event.decoded()? else {
        return Ok(());
    };
    if matches!(
        insured,
        InsuredEvent::RecordViewed(_) | InsuredEvent::OwnRecordViewed(_)
    ) {
        return Ok(());
    }
    let forgotten = matches!(insured, InsuredEvent::PersonForgotten(_));
    let key = person_key(id);
    let person = tx
        .get_mut(&key, || new_person(parts[0], parts[1], event))
        .await?;
    person.events.push(event.stamp(insured.clone()));
    if forgotten {
        forget_moves(person);
        person.name = None;
    }
    person.last_updated_at = event.recorded.occurred_at;
    person.last_position = event.position();
    let state = person.state();
    let mut offices: BTreeSet<String> = state.consents.keys().map(|o| o.to_string()).collect();
    if let Some(registration) = &state.care_plan_office {
        offices.insert(registration.office.to_string());
    }
    let before = std::mem::replace(&mut person.offices, offices.clone());
    if forgotten {
        forget_applications(tx, id).await?;
    }
    for gone in before.difference(&offices) {
        tx.unindex(CASELOAD_INDEX, gone, &key).await?;
    }
    for new in offices.difference(&before) {
        tx.index(CASELOAD_INDEX, new, &key).await?;
    }
    Ok(())
}

/// Crypto-shredding on the read side: the person's sealed values can no
/// longer be opened, so they are removed from the read models altogether
/// (the moves' addresses here, family applicants' names in
/// [`forget_applications`]); the events stay in the store with their
/// ciphertext.
fn forget_moves(person: &mut PersonDoc) {
    for stamped in &mut person.events {
        if let InsuredEvent::MovedHouse(moved) = &mut stamped.event {
            moved.address = None;
        }
    }
}

/// Removes family applicants' names and the insured person's own name from
/// the applications of `person` (`<insurer>-<insured>`).
async fn forget_applications(tx: &mut Tx, person: &str) -> Result<()> {
    for key in tx.index_keys(APPLICATIONS_INDEX, person).await? {
        let Some(mut application) = tx.get::<ApplicationDoc>(&key).await? else {
            continue;
        };
        let mut changed = false;
        for stamped in &mut application.events {
            let CertificationEvent::ApplicationFiled(filed) = &mut stamped.event else {
                continue;
            };
            if let Applicant::Family { name } = &mut filed.applicant
                && name.is_some()
            {
                *name = None;
                changed = true;
            }
            if filed.insured_name.take().is_some() {
                changed = true;
            }
        }
        if changed {
            tx.put(&key, &application).await?;
        }
    }
    Ok(())
}

async fn apply_certification(tx: &mut Tx, event: &Event) -> Result<()> {
    let id = event.recorded.stream.id();
    let Some(parts) = id_parts(id, 3) else {
        return Ok(());
    };
    let Ok(seq) = parts[2].parse::<u32>() else {
        return Ok(());
    };
    let Decoded::Certification(certification) = event.decoded()? else {
        return Ok(());
    };
    let person = format!("{}-{}", parts[0], parts[1]);
    let key = application_key(id);
    if let CertificationEvent::OpinionRequested(requested) = certification {
        tx.index(OPINION_REQUESTS_INDEX, requested.institution.as_str(), &key)
            .await?;
    }
    let application = tx
        .get_mut(&key, || ApplicationDoc {
            insurer: parts[0].to_owned(),
            insured: parts[1].to_owned(),
            seq,
            events: Vec::new(),
        })
        .await?;
    application.events.push(event.stamp(certification.clone()));
    if application.state().status == CertificationStatus::Open {
        tx.index(OPEN_APPLICATIONS_INDEX, parts[0], &key).await?;
    } else {
        tx.unindex(OPEN_APPLICATIONS_INDEX, parts[0], &key).await?;
    }
    tx.index(APPLICATIONS_INDEX, &person, &key).await?;
    let person_doc = tx
        .get_mut(&person_key(&person), || {
            new_person(parts[0], parts[1], event)
        })
        .await?;
    person_doc.last_updated_at = event.recorded.occurred_at;
    person_doc.last_position = event.position();
    if let CertificationEvent::ApplicationFiled(filed) = certification
        && let Some(name) = &filed.insured_name
    {
        person_doc.name = Some(name.clone());
    }
    Ok(())
}
