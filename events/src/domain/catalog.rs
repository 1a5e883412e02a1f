//! The event catalog, rendered from the code into `docs/events.md`.

use chrono::{NaiveDate, TimeZone, Utc};
use serde::Serialize;

use super::certification::{Applicant, ApplicationKind, CurrentCertification, ValidityPeriod};
use super::insured::{CapResetReason, CarePlanOfficeKind, ViewingBasis};
use super::office::Loss;
use super::subsidy::{
    ClosedBecause, DesignationNotice, ReceiptLine, ReceiptPurpose, SubsidyApplicant,
    SubsidyCalculation, SubsidyPolicy, calculate,
};
use super::{
    CareLevel, CopaymentRatio, CostLimitStage, DocumentRef, DomainEvent, EquipmentCategory,
    LevelGroup, RejectionCode, SealedValue, ServiceTypeCode, Sha256Digest, TerminalId, Yen,
    certification, event, insured, insurer, office, subsidy,
};
use crate::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// The catalog of each aggregate, in catalog order.
const CATALOGS: [&[event::EventSpec]; 5] = [
    <certification::CertificationEvent as DomainEvent>::CATALOG,
    <insured::InsuredEvent as DomainEvent>::CATALOG,
    <office::OfficeEvent as DomainEvent>::CATALOG,
    <insurer::InsurerEvent as DomainEvent>::CATALOG,
    <subsidy::SubsidyEvent as DomainEvent>::CATALOG,
];

/// Every event type of every aggregate, in catalog order.
pub fn all_event_types() -> Vec<&'static str> {
    all_specs().iter().map(|spec| spec.event_type).collect()
}

/// The catalog entry of every event type of every aggregate, in order.
pub fn all_specs() -> Vec<&'static event::EventSpec> {
    CATALOGS.into_iter().flatten().collect()
}

/// The catalog entry of `event_type`; `None` for a type that is not ours.
pub fn spec_of(event_type: &str) -> Option<&'static event::EventSpec> {
    CATALOGS
        .into_iter()
        .flatten()
        .find(|spec| spec.event_type == event_type)
}

/// The Japanese label of `event_type` (`certification.decided` → `認定 決定`),
/// the one table every screen and log reads; `None` for a type that is not
/// ours.
pub fn label_ja(event_type: &str) -> Option<&'static str> {
    spec_of(event_type).map(|spec| spec.label_ja)
}

/// The English label of `event_type` (`certification.decided` → `Decided`);
/// `None` for a type that is not ours.
pub fn label_en(event_type: &str) -> Option<&'static str> {
    spec_of(event_type).map(|spec| spec.label_en)
}

/// The event catalog of every aggregate and the rejection codes, as the
/// Markdown of `docs/events.md` (a test keeps the file in step).
pub fn catalog_markdown() -> String {
    let mut out = String::from(
        "# kiban event catalog\n\n\
         Generated from `kiban-events` by `UPDATE_DOCS=1 cargo test -p kiban-events --test docs`; \
         do not edit by hand.\n\n\
         Every event is recorded in the envelope of DESIGN.md decision 1 with the `event_type` \
         and `schema_version` below; the payload is the JSON object of the fields listed. \
         Dates are Japanese calendar dates (`YYYY-MM-DD`), times are UTC (RFC 3339), amounts \
         are whole yen. \"Recorded under the actor\" is the envelope actor kind allowed to cause \
         the event, not who may send it: a municipality sends exactly the message kinds of \
         `docs/asyncapi.json` (docs/integration.md, \"Message kinds\"); kiban records the others \
         itself (process managers, timers) or from the HTTPS API (docs/api.md). \
         No payload carries the Individual Number (My Number); personal fields appear only as \
         `SealedValue` (encrypted with the person's key by kiban before the event is \
         recorded; producers send them as `{\"plain\": \"...\"}`, docs/integration.md).\n\n",
    );
    out.push_str(&event::render_catalog(
        "Certification application (`certification/<insurer>-<insured>-<seq>`)",
        <certification::CertificationEvent as DomainEvent>::CATALOG,
    ));
    out.push_str(&event::render_catalog(
        "Insured person (`insured/<insurer>-<insured>`)",
        <insured::InsuredEvent as DomainEvent>::CATALOG,
    ));
    out.push_str(&event::render_catalog(
        "Care office (`office/<office>`)",
        <office::OfficeEvent as DomainEvent>::CATALOG,
    ));
    out.push_str(&event::render_catalog(
        "Insurer (`insurer/<insurer>`)",
        <insurer::InsurerEvent as DomainEvent>::CATALOG,
    ));
    out.push_str(&event::render_catalog(
        "Subsidy application (`subsidy/<office>-<seq>`, `subsidy/m<institution>-<seq>`)",
        <subsidy::SubsidyEvent as DomainEvent>::CATALOG,
    ));
    out.push_str(
        "## Rejection codes\n\n\
         A refused command carries one of these stable codes (never renamed, never reused) \
         with a message in English and Japanese.\n\n| code | meaning |\n| --- | --- |\n",
    );
    for code in RejectionCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} |\n",
            code.as_str(),
            code.description()
        ));
    }
    out.push_str(&value_shapes());
    out
}

/// One row of the value-type table: the type, an example, what it means.
type ValueShape = (&'static str, String, &'static str);

/// A value as its payload JSON.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("value types serialise")
}

/// The date every example uses.
fn example_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 15).expect("valid date")
}

/// The office every example uses.
fn example_office() -> OfficeNumber {
    OfficeNumber::parse("1312345678").expect("valid")
}

/// The document every example uses.
fn example_document() -> DocumentRef {
    DocumentRef::new(example_digest(), "application/pdf", 48_213).expect("valid")
}

/// The digest of [`example_document`].
fn example_digest() -> Sha256Digest {
    Sha256Digest::parse(&"3f".repeat(32)).expect("valid digest")
}

/// One example JSON per value type used in payloads.
fn value_shapes() -> String {
    let rows = [
        identifier_and_amount_shapes(),
        document_and_code_shapes(),
        certification_shapes(),
        insured_and_office_shapes(),
        subsidy_shapes(),
    ];
    let mut out = String::from(
        "\n## Value types\n\nHow the field types above look in a payload (examples rendered from the code).\n\n| type | example | meaning |\n| --- | --- | --- |\n",
    );
    for (name, example, meaning) in rows.into_iter().flatten() {
        out.push_str(&format!("| {name} | `{example}` | {meaning} |\n"));
    }
    out
}

/// Dates, identifiers, levels and amounts.
fn identifier_and_amount_shapes() -> Vec<ValueShape> {
    let date = example_date();
    let office = example_office();
    vec![
        ("`NaiveDate`", json(&date), "a Japanese calendar date"),
        (
            "`DateTime<Utc>`",
            json(
                &Utc.with_ymd_and_hms(2026, 4, 15, 1, 0, 0)
                    .single()
                    .expect("valid"),
            ),
            "an instant, UTC",
        ),
        (
            "`InsurerNumber`",
            json(&InsurerNumber::parse("131016").expect("valid")),
            "保険者番号, 6 digits, prefecture 01-47 first",
        ),
        (
            "`InsuredNumber`",
            json(&InsuredNumber::parse("0000012345").expect("valid")),
            "被保険者番号, 10 digits",
        ),
        (
            "`OfficeNumber`",
            json(&office),
            "介護保険事業所番号, 10 digits, prefecture 01-47 first",
        ),
        (
            "`MedicalInstitutionCode`",
            json(&MedicalInstitutionCode::parse("1310000001").expect("valid")),
            "医療機関コード, 10 digits",
        ),
        (
            "`CareLevel`",
            json(&CareLevel::ALL.to_vec()),
            "非該当, 要支援1-2, 要介護1-5",
        ),
        (
            "`LevelGroup`",
            json(&[LevelGroup::Support, LevelGroup::Care]),
            "要支援 or 要介護",
        ),
        (
            "`CopaymentRatio`",
            json(&CopaymentRatio::new(2).expect("valid")),
            "1, 2 or 3 (割)",
        ),
        (
            "`Yen`",
            json(&Yen::new(37_400)),
            "whole yen, never negative",
        ),
        (
            "`CostLimitStage`",
            json(&[
                CostLimitStage::Stage1,
                CostLimitStage::Stage2,
                CostLimitStage::Stage3First,
                CostLimitStage::Stage3Second,
            ]),
            "負担限度額の段階",
        ),
    ]
}

/// Documents, codes, terminals and sealed values.
fn document_and_code_shapes() -> Vec<ValueShape> {
    let digest = example_digest();
    let document = example_document();
    let code = ServiceTypeCode::parse("43").expect("valid");
    vec![
        (
            "`DocumentRef`",
            json(&document),
            "a content-addressed document: SHA-256, media type, size",
        ),
        ("`Sha256Digest`", json(&digest), "64 lower-case hex digits"),
        (
            "`ServiceTypeCode`",
            json(&code),
            "サービス種類コード, 2 characters",
        ),
        (
            "`TerminalId`",
            json(&TerminalId::parse("T-01").expect("valid")),
            "端末固有ID",
        ),
        (
            "`SealedValue`",
            json(
                &SealedValue::parse("v1.9c2f4e61a0b87d35e4c1f0a2.w8Z1qk0X3vY5t7Rb2mJ9cL4nP6sH1dF0gA8eK3uW5yQ7iO2xV9zT4rB6nM1pC3")
                    .expect("valid"),
            ),
            "personal data sealed by kiban: `v1.<key id>.<base64url(nonce ‖ ciphertext)>` \
             (XChaCha20-Poly1305, the person's key; see docs/audit.md). Producers send \
             `{\"plain\": \"...\"}` instead",
        ),
    ]
}

/// The value types of the certification workflow.
fn certification_shapes() -> Vec<ValueShape> {
    let date = example_date();
    let office = example_office();
    vec![
        (
            "`ApplicationKind`",
            json(&[
                ApplicationKind::New,
                ApplicationKind::Renewal,
                ApplicationKind::Change,
            ]),
            "新規, 更新, 区分変更",
        ),
        (
            "`Applicant`",
            json(&vec![
                Applicant::Person,
                Applicant::Family { name: None },
                Applicant::Office {
                    office: office.clone(),
                },
            ]),
            "who filed: the person, family (name sealed), an office by proxy",
        ),
        (
            "`CurrentCertification`",
            json(&CurrentCertification {
                level: CareLevel::Care1,
                valid_from: date,
                valid_until: NaiveDate::from_ymd_opt(2026, 10, 31).expect("valid"),
            }),
            "a certification as looked up",
        ),
        (
            "`ValidityPeriod`",
            json(&ValidityPeriod {
                from: date,
                until: NaiveDate::from_ymd_opt(2026, 10, 31).expect("valid"),
            }),
            "both ends included; `until` is a month end",
        ),
    ]
}

/// The value types of the insured-person and office workflows.
fn insured_and_office_shapes() -> Vec<ValueShape> {
    vec![
        (
            "`EquipmentCategory`",
            json(&[
                EquipmentCategory::CommodeSeat,
                EquipmentCategory::BathingAid,
            ]),
            "特定福祉用具の種目 (see `EquipmentCategory`)",
        ),
        (
            "`CarePlanOfficeKind`",
            json(&[
                CarePlanOfficeKind::HomeCareSupportOffice,
                CarePlanOfficeKind::CommunityGeneralSupportCenter,
            ]),
            "居宅介護支援事業所, 地域包括支援センター",
        ),
        (
            "`ViewingBasis`",
            json(&[ViewingBasis::Consent, ViewingBasis::CarePlanOffice]),
            "what allowed a read",
        ),
        (
            "`CapResetReason`",
            json(&[
                CapResetReason::MovedHouse,
                CapResetReason::CareNeedRose {
                    from_step: 2,
                    to_step: 5,
                },
            ]),
            "why the home-modification cap was reset",
        ),
        ("`Loss`", json(&[Loss::Lost, Loss::Stolen]), "紛失, 盗難"),
    ]
}

/// The value types of the subsidy workflow.
fn subsidy_shapes() -> Vec<ValueShape> {
    let document = example_document();
    let office = example_office();
    let code = ServiceTypeCode::parse("43").expect("valid");
    let receipt_lines = vec![
        ReceiptLine {
            purpose: Some(ReceiptPurpose::CardReaders { count: 2 }),
            amount: Yen::new(15_400),
            receipt: document.clone(),
        },
        ReceiptLine {
            purpose: Some(ReceiptPurpose::ConnectionSupport),
            amount: Yen::new(22_000),
            receipt: document.clone(),
        },
    ];
    let care_office = SubsidyApplicant::CareOffice {
        office: office.clone(),
        service_types: vec![code.clone()],
        designation_notices: vec![DesignationNotice {
            service_type: code.clone(),
            document: document.clone(),
        }],
    };
    let calculation: SubsidyCalculation =
        calculate(&care_office, &receipt_lines, &SubsidyPolicy::FY2025);
    vec![
        (
            "`SubsidyApplicant`",
            json(&vec![
                care_office,
                SubsidyApplicant::MedicalInstitution {
                    institution: MedicalInstitutionCode::parse("1310000001").expect("valid"),
                    bed_count_document: Some(document.clone()),
                },
            ]),
            "a care office or a medical institution",
        ),
        (
            "`ReceiptLine`",
            json(&receipt_lines),
            "a receipt line, tax included; `purpose` null when missing or unclear",
        ),
        (
            "`ReceiptPurpose`",
            json(&[
                ReceiptPurpose::CardReaders { count: 2 },
                ReceiptPurpose::ConnectionSupport,
                ReceiptPurpose::OpinionSending,
            ]),
            "カードリーダー, 設定費用, 主治医意見書の電子的送信",
        ),
        (
            "`SubsidyPolicy`",
            json(&SubsidyPolicy::FY2025),
            "the fiscal year's subsidy rules (FY2025 shown)",
        ),
        (
            "`SubsidyCalculation`",
            json(&calculation),
            "how the payable amount was reached (the seed's receipts at a 43 office)",
        ),
        (
            "`ClosedBecause`",
            json(&[ClosedBecause::Deficiency]),
            "why a subsidy application closed",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_event_type_has_a_label_of_its_own_in_both_languages() {
        let specs = all_specs();
        for spec in &specs {
            assert!(!spec.label_ja.trim().is_empty(), "{}", spec.event_type);
            assert!(!spec.label_en.trim().is_empty(), "{}", spec.event_type);
            assert_eq!(label_ja(spec.event_type), Some(spec.label_ja));
            assert_eq!(label_en(spec.event_type), Some(spec.label_en));
        }
        // A timeline tells its events apart by their labels.
        let ja: BTreeSet<_> = specs.iter().map(|spec| spec.label_ja).collect();
        let en: BTreeSet<_> = specs.iter().map(|spec| spec.label_en).collect();
        assert_eq!(
            ja.len(),
            specs.len(),
            "two event types share a Japanese label"
        );
        assert_eq!(
            en.len(),
            specs.len(),
            "two event types share an English label"
        );
    }

    #[test]
    fn an_unknown_event_type_has_no_label() {
        assert_eq!(label_ja("certification.decided"), Some("認定 決定"));
        assert_eq!(label_ja("certification.unknown"), None);
        assert_eq!(label_en(""), None);
    }
}
