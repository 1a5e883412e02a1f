//! Which offices may see an event (issue 5 item 4), from the read models:
//! the rule is `kiban_projections::entitlements`, shared with the API's
//! update streams.
//!
//! An office receives, on `kiban.offices.<office>.updates` (or the
//! in-process bus), the updates about a person it has a live consent for or
//! is the registered care-plan office (居宅介護支援事業所) of, and only when
//! the person's insurer has enabled sharing:
//!
//! - certification progress and results (`certification.*`, which includes
//!   document availability: the investigation sheet and the doctor's
//!   opinion (主治医意見書) arrive as digests on their steps);
//! - certificate changes (`insured.certification_recorded`,
//!   `insured.copayment_certificate_issued`, `insured.cost_limit_certificate_issued`,
//!   `insured.renewal_window_opened`), care-plan office registration and
//!   benefit-ledger changes (home modification, equipment purchase).
//!
//! Never routed: the access log (`insured.record_viewed`,
//! `insured.own_record_viewed`), consents
//! (`insured.consent_*`, about the relation rather than the person's care),
//! moves (`insured.moved_house`, an address fact), and everything that is
//! not about a person (offices, insurers, subsidies).
//!
//! An office that becomes entitled to a person (a consent given, a care-plan
//! office registered or changed) also receives the person's snapshot: the
//! notices of the events above of the person's streams up to that moment
//! (`kiban_bus::routing::PersonSnapshot`).
//!
//! The decision is made on the read models once they have applied the
//! event: the person's relation to offices is folded from the person's
//! events up to the routed one (so a consent recorded just before counts,
//! and one recorded just after does not, however far the routing lags);
//! the insurer's sharing is read as it is now (it only ever turns on).

use std::sync::Arc;

use kiban_bus::routing::Entitlements;
use kiban_events::ids::OfficeNumber;
use kiban_events::{RecordedEvent, StreamName};
use kiban_projections::{Projections, ReadModels};

/// [`Entitlements`] over the running projections.
#[derive(Clone)]
pub struct ReadModelEntitlements {
    projections: Projections,
    read: ReadModels,
}

impl ReadModelEntitlements {
    /// Entitlements read from `projections`' database.
    pub fn new(projections: Projections) -> Self {
        let read = ReadModels::new(projections.db().clone());
        Self { projections, read }
    }
}

pub use kiban_projections::entitlements::routed_person;

fn unavailable(error: impl std::fmt::Display) -> kiban_bus::Error {
    kiban_bus::Error::Source(format!("entitlements: {error}"))
}

impl Entitlements for ReadModelEntitlements {
    async fn offices_for(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        if routed_person(event).is_none() {
            return Ok(Vec::new());
        }
        self.projections
            .wait_for(event.position)
            .await
            .map_err(unavailable)?;
        let offices = kiban_projections::entitlements::offices_entitled(&self.read, event)
            .await
            .map_err(unavailable)?;
        Ok(offices.into_iter().collect())
    }

    async fn newly_entitled(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        if event.stream.kind() != "insured" {
            return Ok(Vec::new());
        }
        self.projections
            .wait_for(event.position)
            .await
            .map_err(unavailable)?;
        let offices = kiban_projections::entitlements::newly_entitled(&self.read, event)
            .await
            .map_err(unavailable)?;
        Ok(offices.into_iter().collect())
    }

    async fn entitled_when_sharing_starts(
        &self,
        event: &RecordedEvent,
    ) -> kiban_bus::Result<Vec<(StreamName, Vec<OfficeNumber>)>> {
        if !kiban_projections::entitlements::starts_sharing(event) {
            return Ok(Vec::new());
        }
        self.projections
            .wait_for(event.position)
            .await
            .map_err(unavailable)?;
        let entitled =
            kiban_projections::entitlements::entitled_when_sharing_starts(&self.read, event)
                .await
                .map_err(unavailable)?;
        entitled
            .into_iter()
            .map(|(person, offices)| {
                let stream = StreamName::new("insured", &person)
                    .map_err(|error| kiban_bus::Error::Source(error.to_string()))?;
                Ok((stream, offices.into_iter().collect()))
            })
            .collect()
    }

    fn carries(&self, event: &RecordedEvent) -> bool {
        routed_person(event).is_some()
    }

    /// One wait for the read models (to the last routed event) and two
    /// queries for the whole batch.
    async fn offices_for_each(
        &self,
        events: &[Arc<RecordedEvent>],
    ) -> kiban_bus::Result<Vec<Vec<OfficeNumber>>> {
        let routed = events
            .iter()
            .filter(|event| routed_person(event).is_some())
            .map(|event| event.position)
            .max();
        let Some(last) = routed else {
            return Ok(vec![Vec::new(); events.len()]);
        };
        self.projections.wait_for(last).await.map_err(unavailable)?;
        let offices = kiban_projections::entitlements::offices_entitled_each(&self.read, events)
            .await
            .map_err(unavailable)?;
        Ok(offices
            .into_iter()
            .map(|offices| offices.into_iter().collect())
            .collect())
    }
}
