//! The `access_log` projection: who read which person's record, when, and
//! through which terminal (`insured.record_viewed`), and the person's own
//! reads in the person's view (`insured.own_record_viewed`).
//!
//! Documents: `view:<position, 20 digits>` ([`AccessEntry`]). Indexes:
//! `views_by_person` (`<insurer>-<insured>` → view), `views_by_office`
//! (office → view; offices' reads only), `views` (`all` → view). Keys sort
//! by position.

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

/// Who read a person's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Reader {
    /// An office, through one of its terminals.
    #[default]
    Office,
    /// The person themself, signed in with their My Number card (本人).
    Person,
}

/// One read of a person's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccessEntry {
    /// The position of the `insured.record_viewed` (or
    /// `insured.own_record_viewed`) event.
    pub position: u64,
    /// 保険者番号 of the person.
    pub insurer: String,
    /// 被保険者番号 of the person.
    pub insured: String,
    /// Who read: an office, or the person themself.
    #[serde(default)]
    pub reader: Reader,
    /// The office that read (absent when the person read).
    pub office: Option<String>,
    /// Its terminal (absent when the person read).
    pub terminal: Option<String>,
    /// What allowed an office's read (absent when the person read).
    pub basis: Option<ViewingBasis>,
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
        // 2: the person's own reads (`reader`; office, terminal and basis
        // optional).
        2
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let recorded = &event.recorded;
            if !matches!(
                recorded.event_type.as_str(),
                "insured.record_viewed" | "insured.own_record_viewed"
            ) {
                return Ok(());
            }
            let Some(parts) = id_parts(recorded.stream.id(), 2) else {
                return Ok(());
            };
            let mut entry = AccessEntry {
                position: recorded.position,
                insurer: parts[0].to_owned(),
                insured: parts[1].to_owned(),
                reader: Reader::Person,
                office: None,
                terminal: None,
                basis: None,
                viewed_at: recorded.occurred_at,
            };
            match event.decoded()? {
                Decoded::Insured(InsuredEvent::RecordViewed(viewed)) => {
                    entry.reader = Reader::Office;
                    entry.office = Some(viewed.office.to_string());
                    entry.terminal = Some(viewed.terminal.as_str().to_owned());
                    entry.basis = Some(viewed.basis);
                    entry.viewed_at = viewed.viewed_at;
                }
                Decoded::Insured(InsuredEvent::OwnRecordViewed(viewed)) => {
                    entry.viewed_at = viewed.viewed_at;
                }
                _ => return Ok(()),
            }
            let key = view_key(recorded.position);
            tx.put(&key, &entry).await?;
            tx.index(VIEWS_BY_PERSON_INDEX, recorded.stream.id(), &key)
                .await?;
            if let Some(office) = &entry.office {
                tx.index(VIEWS_BY_OFFICE_INDEX, office, &key).await?;
            }
            tx.index(VIEWS_INDEX, ALL, &key).await
        })
    }
}
