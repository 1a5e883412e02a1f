//! Writes the v1 fixture of `insured.moved_house` from the build before its
//! v2 change (`WRITE_FIXTURES=1 cargo test -p kiban-events --test upcast`).
//! Replaced by the upcast test once the payload changes; the fixture stays.

use std::path::PathBuf;

use chrono::NaiveDate;
use kiban_events::domain::insured::{InsuredEvent, MovedHouse};
use kiban_events::domain::{DomainEvent, SealedValue};

#[test]
fn write_the_v1_fixture_of_moved_house() {
    let events = [
        InsuredEvent::from(MovedHouse {
            moved_on: NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
            new_address: Some(SealedValue::parse("v1.k7.AbCdEf0123").unwrap()),
        }),
        InsuredEvent::from(MovedHouse {
            moved_on: NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(),
            new_address: None,
        }),
    ];
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|event| {
            serde_json::json!({
                "event_type": event.event_type(),
                "schema_version": event.schema_version(),
                "payload": event.to_payload().as_str(),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&rows).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/upcast/insured.moved_house.v1.json");
    if std::env::var_os("WRITE_FIXTURES").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}
