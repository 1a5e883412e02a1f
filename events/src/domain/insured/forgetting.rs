//! Forgetting (本人情報の消去): `kiban admin forget` destroys the person's
//! data key and then records it here, once.
//!
//! State part: `forgotten_at` of [`InsuredState`].

use chrono::{DateTime, Utc};

use super::{InsuredEvent, InsuredState, PersonForgotten};

/// Records that the person's data key was destroyed; a second record of
/// the same fact records nothing, so the command can be retried.
pub(super) fn record_forgotten(
    state: &InsuredState,
    forgotten_at: DateTime<Utc>,
    key_id: Option<&str>,
) -> Vec<InsuredEvent> {
    if state.forgotten_at.is_some() {
        return Vec::new();
    }
    vec![
        PersonForgotten {
            forgotten_at,
            key_id: key_id.map(str::to_owned),
        }
        .into(),
    ]
}
