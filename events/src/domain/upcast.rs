//! Upcasters: reading payloads recorded under an older schema version.
//!
//! A stored event keeps the `schema_version` it was written with, forever
//! (the hash covers it). When a payload schema changes, the event's version
//! in the catalog goes up by one and a step is added here that turns a
//! payload of version `from` into one of version `from + 1`, as JSON.
//! [`DomainEvent::from_recorded`](crate::domain::DomainEvent::from_recorded)
//! runs the chain of steps from the stored version to the current one
//! before the typed decoding, so deciders, projections and the API only
//! ever see current events. Nothing is rewritten in the store.
//!
//! A step is a pure function over the JSON object; every step has a test
//! that reads bytes written by the build before the change
//! (`tests/fixtures/upcast/`).

use serde_json::{Map, Value};

use crate::envelope::Payload;

use super::DecodeError;

/// A payload as a JSON object, the form upcasters work on.
pub type JsonObject = Map<String, Value>;

/// One step of an upcaster chain: `event_type` from `from` to `from + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The event type it reads.
    pub event_type: &'static str,
    /// The version it reads; it writes `from + 1`.
    pub from: u16,
    /// What changed, for the catalog (`docs/events.md`).
    pub doc: &'static str,
    /// The conversion of the payload object.
    pub apply: fn(JsonObject) -> Result<JsonObject, String>,
}

/// Every upcaster step, by event type and version.
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: "insured.moved_house",
        from: 1,
        doc: "v1 named the sealed address `new_address`; v2 names it `address`, like every \
          personal field, which producers now send as plaintext (`{\"plain\": ...}`) for kiban \
          to seal. The value is kept as it was (a v1 value sealed elsewhere stays unreadable).",
        apply: moved_house_v1_to_v2,
    },
    Upcaster {
        event_type: "certification.filed",
        from: 1,
        doc: "v2 adds `insured_name`, the insured person's name and kana from the application form, \
          sealed; a v1 filing had none (null).",
        apply: filed_v1_to_v2,
    },
];

/// `certification.filed` v1 → v2: no name was given.
fn filed_v1_to_v2(mut payload: JsonObject) -> Result<JsonObject, String> {
    if payload.contains_key("insured_name") {
        return Err("v1 payload already has `insured_name`".to_owned());
    }
    payload.insert("insured_name".to_owned(), Value::Null);
    Ok(payload)
}

/// `insured.moved_house` v1 → v2: `new_address` becomes `address`.
fn moved_house_v1_to_v2(mut payload: JsonObject) -> Result<JsonObject, String> {
    let address = payload
        .remove("new_address")
        .ok_or("v1 payload has no `new_address`")?;
    payload.insert("address".to_owned(), address);
    Ok(payload)
}

/// The upcaster steps of `event_type`, oldest first.
pub fn steps_of(event_type: &str) -> impl Iterator<Item = &'static Upcaster> + '_ {
    UPCASTERS
        .iter()
        .filter(move |step| step.event_type == event_type)
}

/// Turns `payload`, recorded as `event_type` version `found`, into the
/// `current` version, one step at a time. A version newer than `current`
/// or a missing step is [`DecodeError::UnsupportedSchemaVersion`].
pub fn to_current(
    event_type: &str,
    found: u16,
    current: u16,
    payload: &Payload,
) -> Result<Payload, DecodeError> {
    let unsupported = || DecodeError::UnsupportedSchemaVersion {
        event_type: event_type.to_owned(),
        found,
        current,
    };
    let bad = |reason: String| DecodeError::Payload {
        event_type: event_type.to_owned(),
        reason: format!("upcasting from v{found}: {reason}"),
    };
    if found == 0 || found > current {
        return Err(unsupported());
    }
    let mut object: JsonObject = payload.parse().map_err(|e| bad(e.to_string()))?;
    for version in found..current {
        let step = steps_of(event_type)
            .find(|step| step.from == version)
            .ok_or_else(unsupported)?;
        object = (step.apply)(object).map_err(bad)?;
    }
    Payload::from_value(&object).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_step_or_a_future_version_is_unsupported() {
        let payload = Payload::from_json(r#"{"a":1}"#).unwrap();
        assert!(matches!(
            to_current("insured.card_linked", 1, 2, &payload),
            Err(DecodeError::UnsupportedSchemaVersion { found: 1, .. })
        ));
        assert!(matches!(
            to_current("insured.moved_house", 3, 2, &payload),
            Err(DecodeError::UnsupportedSchemaVersion { found: 3, .. })
        ));
        assert!(matches!(
            to_current("insured.moved_house", 1, 2, &payload),
            Err(DecodeError::Payload { .. })
        ));
    }

    #[test]
    fn every_step_reads_an_older_version_than_the_catalog_has() {
        use crate::domain::DomainEvent;
        let specs = crate::domain::catalog::all_specs();
        for step in UPCASTERS {
            let spec = specs
                .iter()
                .find(|spec| spec.event_type == step.event_type)
                .expect("an upcaster's event type is in the catalog");
            assert!(step.from < spec.schema_version, "{}", step.event_type);
        }
        let _ = <crate::domain::insured::InsuredEvent as DomainEvent>::CATALOG;
    }
}
