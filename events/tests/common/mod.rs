//! Fixtures shared by the decider tests.
#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use kiban_events::domain::{DocumentRef, Sha256Digest};
use kiban_events::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// A calendar date.
pub fn d(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

/// Ten in the morning, Japan time, on that date.
pub fn at(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 1, 0, 0).unwrap()
}

/// A document reference whose digest is `byte` repeated.
pub fn doc(byte: u8) -> DocumentRef {
    let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
    DocumentRef::new(Sha256Digest::parse(&hex).unwrap(), "application/pdf", 1024).unwrap()
}

pub fn insurer() -> InsurerNumber {
    InsurerNumber::parse("131016").unwrap()
}

pub fn insured() -> InsuredNumber {
    InsuredNumber::parse("0000012345").unwrap()
}

pub fn office() -> OfficeNumber {
    OfficeNumber::parse("1312345678").unwrap()
}

pub fn other_office() -> OfficeNumber {
    OfficeNumber::parse("1398765432").unwrap()
}

pub fn clinic() -> MedicalInstitutionCode {
    MedicalInstitutionCode::parse("1310000001").unwrap()
}
