//! `insured.moved_house` v1 payloads, written by the build before the v2
//! change (commit 58c6c9b, `tests/fixtures/upcast/insured.moved_house.v1.json`),
//! read back through `from_recorded` and its upcaster chain as v2 events.
//! The store-level version of this test is `tests/tests/shred.rs`.

use std::path::PathBuf;

use chrono::NaiveDate;
use kiban_events::domain::insured::{InsuredEvent, MovedHouse};
use kiban_events::domain::{DecodeError, DomainEvent, SealedValue};
use kiban_events::envelope::Payload;

#[derive(serde::Deserialize)]
struct FixtureRow {
    event_type: String,
    schema_version: u16,
    payload: String,
}

fn fixture() -> Vec<FixtureRow> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/upcast/insured.moved_house.v1.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn v1_moved_house_bytes_read_back_as_the_v2_event() {
    let rows = fixture();
    assert_eq!(rows.len(), 2);
    let events: Vec<InsuredEvent> = rows
        .iter()
        .map(|row| {
            assert_eq!(row.schema_version, 1, "the fixture holds v1 bytes");
            let payload = Payload::from_stored(row.payload.clone());
            InsuredEvent::from_recorded(&row.event_type, row.schema_version, &payload).unwrap()
        })
        .collect();
    assert_eq!(
        events,
        vec![
            InsuredEvent::from(MovedHouse {
                moved_on: NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
                address: Some(SealedValue::parse("v1.k7.AbCdEf0123").unwrap()),
            }),
            InsuredEvent::from(MovedHouse {
                moved_on: NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(),
                address: None,
            }),
        ]
    );
    // Written today it is v2, with the new field name.
    assert_eq!(events[0].schema_version(), 2);
    assert!(events[0].to_payload().as_str().contains("\"address\""));
}

#[test]
fn a_v1_payload_claimed_as_v2_or_a_v3_is_refused() {
    let v1 = Payload::from_stored(fixture().remove(0).payload);
    let as_v2 = InsuredEvent::from_recorded("insured.moved_house", 2, &v1);
    assert!(
        matches!(as_v2, Err(DecodeError::Payload { .. })),
        "{as_v2:?}"
    );
    let v3 = InsuredEvent::from_recorded("insured.moved_house", 3, &v1);
    assert!(
        matches!(
            v3,
            Err(DecodeError::UnsupportedSchemaVersion {
                found: 3,
                current: 2,
                ..
            })
        ),
        "{v3:?}"
    );
}

/// `certification.filed` v1 (before the insured person's name,
/// `tests/fixtures/upcast/certification.filed.v1.json`, in the v1 field
/// order) reads back as v2 without a name; written today it is v2 and
/// carries `insured_name`.
#[test]
fn v1_filed_bytes_read_back_as_the_v2_event_without_a_name() {
    use kiban_events::domain::certification::{CertificationEvent, InsuredName};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/upcast/certification.filed.v1.json");
    let rows: Vec<FixtureRow> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.schema_version, 1, "the fixture holds v1 bytes");
        let payload = Payload::from_stored(row.payload.clone());
        let event =
            CertificationEvent::from_recorded(&row.event_type, row.schema_version, &payload)
                .unwrap();
        let CertificationEvent::ApplicationFiled(mut filed) = event else {
            panic!("not a filing: {event:?}");
        };
        assert_eq!(filed.insured_name, None);
        filed.insured_name = Some(InsuredName {
            name: SealedValue::parse("v1.k7.NaMe").unwrap(),
            kana: None,
        });
        let event = CertificationEvent::from(filed);
        assert_eq!(event.schema_version(), 2);
        assert!(
            event
                .to_payload()
                .as_str()
                .contains(r#""insured_name":{"name":"v1.k7.NaMe""#)
        );
    }
}
