//! The read models, one module per projection.

pub mod access_log;
pub mod card_links;
pub mod care;
pub mod organisations;

use std::sync::Arc;

use crate::projection::Projection;

/// Every read model kiban serves, for [`crate::Projections::start`].
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(care::CareProjection),
        Arc::new(organisations::OrganisationsProjection),
        Arc::new(access_log::AccessLogProjection),
        Arc::new(card_links::CardLinksProjection),
    ]
}
