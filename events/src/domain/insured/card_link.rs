//! Card links: the person's My Number card user-authentication certificate
//! (利用者証明用電子証明書) linked to the record by its issuer and serial
//! number, so that a consent signed with the card names this person.
//!
//! State part: `card_links` of [`InsuredState`].

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::{CardLinked, InsuredEvent, InsuredState};
use crate::domain::Rejection;
use crate::domain::rejection::reject_if;

/// Longest issuer name accepted in a card link, in bytes **[ours]**: far
/// above any real distinguished name, and it bounds the payload.
const CARD_ISSUER_BYTES_MAX: usize = 512;
/// Longest serial number accepted in a card link, in hex digits (RFC 5280
/// allows 20 bytes).
const CARD_SERIAL_HEX_MAX: usize = 40;

/// Applies a card link.
pub(super) fn evolve(card_links: &mut BTreeSet<(String, String)>, event: &CardLinked) {
    card_links.insert((event.issuer.clone(), event.serial.clone()));
}

/// Links a certificate given by its issuer and upper-case hex serial, once.
pub(super) fn link_card(
    state: &InsuredState,
    issuer: &str,
    serial: &str,
    today: NaiveDate,
) -> Result<Vec<InsuredEvent>, Rejection> {
    reject_if!(
        issuer.trim().is_empty()
            || issuer.len() > CARD_ISSUER_BYTES_MAX
            || serial.is_empty()
            || serial.len() > CARD_SERIAL_HEX_MAX
            || !serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        CardLinkInvalid,
        "A card link needs the issuer's name and the serial number in upper-case hexadecimal.",
        "カードの紐付けには発行者名と16進数（大文字）のシリアル番号が必要です。"
    );
    reject_if!(
        state
            .card_links
            .contains(&(issuer.to_owned(), serial.to_owned())),
        CardAlreadyLinked,
        "This card certificate is already linked to the person.",
        "このカードの証明書は既に紐付けられています。"
    );
    Ok(vec![
        CardLinked {
            issuer: issuer.to_owned(),
            serial: serial.to_owned(),
            linked_on: today,
        }
        .into(),
    ])
}
