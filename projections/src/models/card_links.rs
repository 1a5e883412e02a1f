//! The `card_links` projection: which insured person a My Number card's
//! user-authentication certificate (利用者証明用電子証明書) is linked to
//! (`insured.card_linked`), so that the person signs in to their own view
//! with the card alone (the API's `/v1/me` and `/me`).
//!
//! Documents: `card:<serial>:<issuer>` ([`CardLinkDoc`]), the certificate's
//! upper-case hex serial and its issuer's distinguished name — the link
//! itself, never the Individual Number. A card linked to several records
//! (a person who moved to another insurer keeps their card) names the one
//! linked last **[ours]**: the record of the current insurer.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use kiban_events::domain::insured::InsuredEvent;

use crate::db::Tx;
use crate::error::Result;
use crate::projection::{Decoded, Event, Projection, id_parts};

/// The projection's name.
pub const CARD_LINKS: &str = "card_links";

/// The key of a card certificate's document.
pub fn card_key(issuer: &str, serial: &str) -> String {
    format!("card:{serial}:{issuer}")
}

/// The person a card certificate is linked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardLinkDoc {
    /// 保険者番号.
    pub insurer: String,
    /// 被保険者番号.
    pub insured: String,
    /// The position of the `insured.card_linked` event.
    pub position: u64,
}

/// The `card_links` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CardLinksProjection;

impl Projection for CardLinksProjection {
    fn name(&self) -> &'static str {
        CARD_LINKS
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a Event) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let recorded = &event.recorded;
            if recorded.event_type.as_str() != "insured.card_linked" {
                return Ok(());
            }
            let Some(parts) = id_parts(recorded.stream.id(), 2) else {
                return Ok(());
            };
            let Decoded::Insured(InsuredEvent::CardLinked(linked)) = event.decoded()? else {
                return Ok(());
            };
            let doc = CardLinkDoc {
                insurer: parts[0].to_owned(),
                insured: parts[1].to_owned(),
                position: recorded.position,
            };
            tx.put(&card_key(&linked.issuer, &linked.serial), &doc)
                .await
        })
    }
}
