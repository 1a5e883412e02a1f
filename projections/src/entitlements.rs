//! Which offices may see an event: the one rule of the office feed over
//! NATS (`kiban-system`'s `ReadModelEntitlements`) and of the API's and the
//! web screen's update streams (`GET /v1/offices/{office}/updates`,
//! `/ui/events`), so that an office learns of the same events however it
//! follows them (issue 16 item 4).
//!
//! An event is about a person when it is on a certification stream
//! (`certification.*`) or on the person's own stream, except the access log
//! (`insured.record_viewed`), consents (`insured.consent_*`, about the
//! relation rather than the person's care) and moves (`insured.moved_house`,
//! an address fact). Nothing else (offices, insurers, subsidies) is ever
//! routed. It goes to the offices with a live consent from the person or
//! registered as the person's care-plan office (居宅介護支援事業所) while that
//! registration is in effect on the event's date
//! (`InsuredState::care_plan_office_on`), **as of the event** (the person's
//! events up to it, so a consent recorded just
//! after does not count, however far the reader lags), and only when the
//! person's insurer shares data, also as of the event (its
//! `insurer.sharing_enabled` at or before the event's position: an event
//! recorded before sharing goes to nobody, however late it is routed; the
//! offices entitled then get the person's snapshot when sharing starts,
//! [`entitled_when_sharing_starts`]).
//! Callers wait until the read models have applied the event.
//!
//! The office web screen adds one thing ([`names_office_in_consent`]): the
//! consent events naming its own office (given, revoked, expired), which
//! its care-plan page shows as they happen. The office learns nothing new
//! from them (they record its own relation, and it sees the consent step on
//! its own terminal); they stay off the NATS feed and the API stream.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use kiban_events::domain::insured::InsuredPerson;
use kiban_events::domain::{Decider, jst_date};
use kiban_events::ids::OfficeNumber;
use kiban_events::{Position, RecordedEvent};

use crate::{PersonDoc, ReadModels, Result};

/// The person (`(insurer, insured)`) an event routed to offices is about,
/// or `None` for an event offices never receive.
pub fn routed_person(event: &RecordedEvent) -> Option<(String, String)> {
    let kind = event.stream.kind();
    let parts: Vec<&str> = event.stream.id().split('-').collect();
    let routed = match kind {
        "certification" => parts.len() == 3,
        "insured" => {
            parts.len() == 2
                && !matches!(
                    event.event_type.as_str(),
                    "insured.record_viewed"
                        | "insured.own_record_viewed"
                        | "insured.consent_given"
                        | "insured.consent_revoked"
                        | "insured.consent_expired"
                        | "insured.moved_house"
                )
        }
        _ => false,
    };
    routed.then(|| (parts[0].to_owned(), parts[1].to_owned()))
}

/// The offices entitled to `event` ([`routed_person`], consent or care-plan
/// office as of the event, insurer sharing), read from `read`, which must
/// have applied the event.
pub async fn offices_entitled(
    read: &ReadModels,
    event: &RecordedEvent,
) -> Result<BTreeSet<OfficeNumber>> {
    let Some((insurer, insured)) = routed_person(event) else {
        return Ok(BTreeSet::new());
    };
    let on = jst_date(event.occurred_at);
    person_offices(read, &insurer, &insured, event.position, on).await
}

/// The offices `event` makes entitled to its person that were not entitled
/// just before it: a consent given, a care-plan office registered or
/// changed (each office then receives the person's snapshot on its feed).
/// Read from `read`, which must have applied the event.
pub async fn newly_entitled(
    read: &ReadModels,
    event: &RecordedEvent,
) -> Result<BTreeSet<OfficeNumber>> {
    if !matches!(
        event.event_type.as_str(),
        "insured.consent_given"
            | "insured.care_plan_office_registered"
            | "insured.care_plan_office_changed"
    ) {
        return Ok(BTreeSet::new());
    }
    let Some((insurer, insured)) = event.stream.id().split_once('-') else {
        return Ok(BTreeSet::new());
    };
    let on = jst_date(event.occurred_at);
    let after = person_offices(read, insurer, insured, event.position, on).await?;
    if after.is_empty() {
        return Ok(after);
    }
    let before = person_offices(read, insurer, insured, event.position - 1, on).await?;
    Ok(after.difference(&before).cloned().collect())
}

/// Whether `event` turns its insurer's sharing on (`insurer.sharing_enabled`),
/// the one insurer event [`entitled_when_sharing_starts`] answers for.
pub fn starts_sharing(event: &RecordedEvent) -> bool {
    event.event_type.as_str() == "insurer.sharing_enabled"
}

/// When `event` turns its insurer's sharing on (`insurer.sharing_enabled`):
/// each person of that insurer (`<insurer>-<insured>`) whom offices were
/// entitled to as of the event — a consent or a care-plan office recorded
/// before sharing — with those offices (each then receives the person's
/// snapshot on its feed, as an office newly entitled does). Read from
/// `read`, which must have applied the event. Reads the insurer's persons
/// in caseloads page by page: once per insurer, when it joins.
pub async fn entitled_when_sharing_starts(
    read: &ReadModels,
    event: &RecordedEvent,
) -> Result<Vec<(String, BTreeSet<OfficeNumber>)>> {
    if !starts_sharing(event) {
        return Ok(Vec::new());
    }
    let insurer = event.stream.id();
    let on = jst_date(event.occurred_at);
    let mut entitled = Vec::new();
    let mut after = String::new();
    loop {
        let page = read
            .persons_in_caseloads(insurer, &after, crate::PAGE_ITEMS_MAX)
            .await?;
        for person in &page.items {
            let offices = offices_as_of(person, event.position, on);
            if !offices.is_empty() {
                entitled.push((format!("{}-{}", person.insurer, person.insured), offices));
            }
        }
        match page.next {
            Some(next) => after = next,
            None => return Ok(entitled),
        }
    }
}

/// The offices entitled to the person on the day `on` after their events up
/// to `position` (consent or care-plan office), when the insurer shares.
async fn person_offices(
    read: &ReadModels,
    insurer: &str,
    insured: &str,
    position: Position,
    on: NaiveDate,
) -> Result<BTreeSet<OfficeNumber>> {
    let sharing = read.sharing_since(&[insurer.to_owned()]).await?;
    if sharing.get(insurer).is_none_or(|&since| since > position) {
        return Ok(BTreeSet::new());
    }
    let Some(person) = read.person(&format!("{insurer}-{insured}")).await? else {
        return Ok(BTreeSet::new());
    };
    Ok(offices_as_of(&person, position, on))
}

/// [`offices_entitled`] for each of `events`, in order, in two queries
/// (the insurers, then the persons the events are about) instead of two
/// per event: what office routing asks for each batch it routes. `read`
/// must have applied every one of them.
pub async fn offices_entitled_each<E: Borrow<RecordedEvent>>(
    read: &ReadModels,
    events: &[E],
) -> Result<Vec<BTreeSet<OfficeNumber>>> {
    let persons: Vec<Option<(String, String)>> = events
        .iter()
        .map(|event| routed_person(event.borrow()))
        .collect();
    let insurers: BTreeSet<String> = persons
        .iter()
        .flatten()
        .map(|(insurer, _)| insurer.clone())
        .collect();
    let insurers: Vec<String> = insurers.into_iter().collect();
    // Since when each insurer shares: an event before that is routed to
    // nobody, however late it is routed.
    let sharing = read.sharing_since(&insurers).await?;
    let wanted: BTreeSet<String> = persons
        .iter()
        .flatten()
        .filter(|(insurer, _)| sharing.contains_key(insurer))
        .map(|(insurer, insured)| format!("{insurer}-{insured}"))
        .collect();
    let wanted: Vec<String> = wanted.into_iter().collect();
    let docs: HashMap<(String, String), PersonDoc> = read
        .persons(&wanted)
        .await?
        .into_iter()
        .map(|doc| ((doc.insurer.clone(), doc.insured.clone()), doc))
        .collect();
    Ok(events
        .iter()
        .zip(persons)
        .map(|(event, person)| {
            let event = event.borrow();
            person
                .filter(|(insurer, _)| {
                    sharing
                        .get(insurer)
                        .is_some_and(|&since| since <= event.position)
                })
                .and_then(|person| docs.get(&person))
                .map_or_else(BTreeSet::new, |doc| {
                    offices_as_of(doc, event.position, jst_date(event.occurred_at))
                })
        })
        .collect())
}

/// The offices with a live consent from the person of `doc`, or their
/// care-plan office on the day `on`, after the person's events up to
/// `position`.
fn offices_as_of(doc: &PersonDoc, position: Position, on: NaiveDate) -> BTreeSet<OfficeNumber> {
    let state = InsuredPerson::replay(
        doc.events
            .iter()
            .filter(|stamped| stamped.position <= position)
            .map(|stamped| &stamped.event),
    );
    let care_plan_office = state.care_plan_office_on(on).cloned();
    let mut offices: BTreeSet<OfficeNumber> = state.consents.into_keys().collect();
    offices.extend(care_plan_office);
    offices
}

/// Whether `event` is a consent event (`insured.consent_given`,
/// `insured.consent_revoked`, `insured.consent_expired`) naming `office`.
pub fn names_office_in_consent(event: &RecordedEvent, office: &OfficeNumber) -> bool {
    kiban_events::domain::insured::consent_office(event).as_ref() == Some(office)
}
