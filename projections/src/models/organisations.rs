//! The `organisations` projection: care offices and their terminals,
//! insurers and their rollout, subsidy applications.
//!
//! Documents: `office:<office>`, `insurer:<insurer>`, `subsidy:<id>`, each
//! an [`AggregateDoc`] holding that aggregate's events. Indexes: `offices`
//! (`all` → office), `subsidies` (`all` → subsidy), `subsidies_by_applicant`
//! ([`applicant_key`]: `office:<office number>` or `medical:<institution
//! code>` → subsidy; both numbers are ten digits and may be equal, so the
//! kind is part of the key — issue 16, Low).

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use kiban_events::domain::subsidy::{SubsidyApplicant, SubsidyEvent};

use crate::db::Tx;
use crate::error::Result;
use crate::projection::{Decoded, Event, Projection, Stamped};

/// The projection's name.
pub const ORGANISATIONS: &str = "organisations";
/// Index: `all` → every office.
pub const OFFICES_INDEX: &str = "offices";
/// Index: `all` → every subsidy application.
pub const SUBSIDIES_INDEX: &str = "subsidies";
/// Index: applicant ([`applicant_key`]) → its subsidy applications.
pub const SUBSIDIES_BY_APPLICANT_INDEX: &str = "subsidies_by_applicant";
/// The one key of the `all` indexes.
pub const ALL: &str = "all";

/// The key of an office's document.
pub fn office_key(office: &str) -> String {
    format!("office:{office}")
}

/// The key of an insurer's document.
pub fn insurer_key(insurer: &str) -> String {
    format!("insurer:{insurer}")
}

/// The key of an applicant in [`SUBSIDIES_BY_APPLICANT_INDEX`]: its kind
/// and number, since an office number and a medical-institution code are
/// both ten digits and one number can be both.
pub fn applicant_key(applicant: &SubsidyApplicant) -> String {
    match applicant {
        SubsidyApplicant::CareOffice { office, .. } => office_applicant_key(office.as_str()),
        SubsidyApplicant::MedicalInstitution { institution, .. } => {
            institution_applicant_key(institution.as_str())
        }
    }
}

/// [`applicant_key`] of an office.
pub fn office_applicant_key(office: &str) -> String {
    format!("office:{office}")
}

/// [`applicant_key`] of a medical institution.
pub fn institution_applicant_key(institution: &str) -> String {
    format!("medical:{institution}")
}

/// The key of a subsidy application's document.
pub fn subsidy_key(id: &str) -> String {
    format!("subsidy:{id}")
}

/// One aggregate's events, with its stream id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateDoc<E> {
    /// The stream id (`1312345678`, `131016`, `1312345678-1`).
    pub id: String,
    /// Its events.
    pub events: Vec<Stamped<E>>,
}

/// The `organisations` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrganisationsProjection;

impl Projection for OrganisationsProjection {
    fn name(&self) -> &'static str {
        ORGANISATIONS
    }

    fn schema_version(&self) -> u32 {
        // 2: applicants keyed by kind and number (`applicant_key`).
        2
    }

    fn prefetch(&self, event: &Event, keys: &mut Vec<String>) {
        let id = event.recorded.stream.id();
        match event.recorded.stream.kind() {
            "office" => keys.push(office_key(id)),
            "insurer" => keys.push(insurer_key(id)),
            "subsidy" => keys.push(subsidy_key(id)),
            _ => {}
        }
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !matches!(
                event.recorded.stream.kind(),
                "office" | "insurer" | "subsidy"
            ) {
                return Ok(());
            }
            let id = event.recorded.stream.id();
            match event.decoded()? {
                Decoded::Office(office) => {
                    let key = office_key(id);
                    append(tx, &key, event, office).await?;
                    tx.index(OFFICES_INDEX, ALL, &key).await
                }
                Decoded::Insurer(insurer) => append(tx, &insurer_key(id), event, insurer).await,
                Decoded::Subsidy(subsidy) => {
                    let key = subsidy_key(id);
                    append(tx, &key, event, subsidy).await?;
                    if let SubsidyEvent::SubsidyApplied(applied) = subsidy {
                        let applicant = applicant_key(&applied.applicant);
                        tx.index(SUBSIDIES_BY_APPLICANT_INDEX, &applicant, &key)
                            .await?;
                    }
                    tx.index(SUBSIDIES_INDEX, ALL, &key).await
                }
                _ => Ok(()),
            }
        })
    }
}

/// Appends `decoded` (the event's domain event) to the aggregate's
/// document.
async fn append<E>(tx: &mut Tx, key: &str, event: &Event, decoded: &E) -> Result<()>
where
    E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let doc: &mut AggregateDoc<E> = tx
        .get_mut(key, || AggregateDoc {
            id: event.recorded.stream.id().to_owned(),
            events: Vec::new(),
        })
        .await?;
    doc.events.push(event.stamp(decoded.clone()));
    Ok(())
}
