//! Moving house (転居): the new address is sealed, and a move resets the
//! home-modification cap.
//!
//! State part: none of its own; the cap reset it records is the
//! home-modification ledger's (`ledgers`).

use chrono::NaiveDate;

use super::{CapResetReason, HomeModificationCapReset, InsuredEvent, MovedHouse};
use crate::domain::{Rejection, SealedValue, not_in_future};

/// A move resets the home-modification cap to a fresh 200,000 yen.
pub(super) fn record_move(
    moved_on: NaiveDate,
    address: &Option<SealedValue>,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    not_in_future(moved_on, today)?;
    Ok(vec![
        MovedHouse {
            moved_on,
            address: address.clone(),
        }
        .into(),
        HomeModificationCapReset {
            reason: CapResetReason::MovedHouse,
            reset_on: moved_on,
        }
        .into(),
    ])
}
