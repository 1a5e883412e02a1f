//! The `access_log` projection: who read which person's record, when, and
//! through which terminal (`insured.record_viewed`).
//!
//! Documents: `view:<position, 20 digits>` ([`AccessEntry`]). Indexes:
//! `views_by_person` (`<insurer>-<insured>` → view), `views_by_office`
//! (office → view), `views` (`all` → view). Keys sort by position.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use kiban_events::domain::insured::{InsuredEvent, ViewingBasis};

use crate::db::Tx;
use crate::error::Result;
use crate::models::organisations::ALL;
use crate::projection::{Decoded, Event, Projection, id_parts};

/// The projection's name.
pub const ACCESS_LOG: &str = "access_log";
/// Index: person → views.
pub const VIEWS_BY_PERSON_INDEX: &str = "views_by_person";
/// Index: office → views.
pub const VIEWS_BY_OFFICE_INDEX: &str = "views_by_office";
/// Index: `all` → views.
pub const VIEWS_INDEX: &str = "views";

/// One read of a person's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccessEntry {
    /// The position of the `insured.record_viewed` event.
    pub position: u64,
    /// 保険者番号 of the person.
    pub insurer: String,
    /// 被保険者番号 of the person.
    pub insured: String,
    /// The office that read.
    pub office: String,
    /// Its terminal.
    pub terminal: String,
    /// What allowed the read.
    pub basis: ViewingBasis,
    /// When.
    pub viewed_at: DateTime<Utc>,
}

/// The key of a view's document: sorts by position.
pub fn view_key(position: u64) -> String {
    format!("view:{position:020}")
}

/// The `access_log` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogProjection;

impl Projection for AccessLogProjection {
    fn name(&self) -> &'static str {
        ACCESS_LOG
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let recorded = &event.recorded;
            if recorded.event_type.as_str() != "insured.record_viewed" {
                return Ok(());
            }
            let Some(parts) = id_parts(recorded.stream.id(), 2) else {
                return Ok(());
            };
            let Decoded::Insured(InsuredEvent::RecordViewed(viewed)) = event.decoded()? else {
                return Ok(());
            };
            let entry = AccessEntry {
                position: recorded.position,
                insurer: parts[0].to_owned(),
                insured: parts[1].to_owned(),
                office: viewed.office.to_string(),
                terminal: viewed.terminal.as_str().to_owned(),
                basis: viewed.basis,
                viewed_at: viewed.viewed_at,
            };
            let key = view_key(recorded.position);
            tx.put(&key, &entry).await?;
            tx.index(VIEWS_BY_PERSON_INDEX, recorded.stream.id(), &key)
                .await?;
            tx.index(VIEWS_BY_OFFICE_INDEX, &entry.office, &key).await?;
            tx.index(VIEWS_INDEX, ALL, &key).await
        })
    }
}
