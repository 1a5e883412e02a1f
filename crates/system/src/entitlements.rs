//! Which offices may see an event (issue 5 item 4), from the read models.
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
//! The decision is made on the read models once they have applied the
//! event: the person's relation to offices is folded from the person's
//! events up to the routed one (so a consent recorded just before counts,
//! and one recorded just after does not, however far the routing lags);
//! the insurer's sharing is read as it is now (it only ever turns on).

use std::collections::BTreeSet;

use kiban_bus::routing::Entitlements;
use kiban_events::RecordedEvent;
use kiban_events::domain::Decider;
use kiban_events::domain::insured::InsuredPerson;
use kiban_events::ids::OfficeNumber;
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

/// The person (`<insurer>-<insured>`) an event routed to offices is about,
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

fn unavailable(error: impl std::fmt::Display) -> kiban_bus::Error {
    kiban_bus::Error::Source(format!("entitlements: {error}"))
}

impl Entitlements for ReadModelEntitlements {
    async fn offices_for(&self, event: &RecordedEvent) -> kiban_bus::Result<Vec<OfficeNumber>> {
        let Some((insurer, insured)) = routed_person(event) else {
            return Ok(Vec::new());
        };
        self.projections
            .wait_for(event.position)
            .await
            .map_err(unavailable)?;
        let sharing = self
            .read
            .insurer(&insurer)
            .await
            .map_err(unavailable)?
            .is_some_and(|view| view.sharing_enabled);
        if !sharing {
            return Ok(Vec::new());
        }
        let Some(person) = self
            .read
            .person(&format!("{insurer}-{insured}"))
            .await
            .map_err(unavailable)?
        else {
            return Ok(Vec::new());
        };
        // The relation as of this event, not as the read model stands now
        // (which may already include later consents or registrations when
        // the routing is behind): the person's own events up to it.
        let state = InsuredPerson::replay(
            person
                .events
                .iter()
                .filter(|stamped| stamped.position <= event.position)
                .map(|stamped| &stamped.event),
        );
        let mut offices: BTreeSet<OfficeNumber> = state.consents.into_keys().collect();
        offices.extend(
            state
                .care_plan_office
                .map(|registration| registration.office),
        );
        Ok(offices.into_iter().collect())
    }
}
