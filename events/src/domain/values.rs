//! Value types of the domain, validated in their constructors.
//!
//! Like the identifiers in [`crate::ids`], a value of these types is always
//! well-formed: fields are private, the constructor is the only way in, and
//! deserialisation goes through the same checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value is not one of the allowed forms; the message says which.
    #[error("{what}: {expected} (got {got:?})")]
    Invalid {
        what: &'static str,
        expected: &'static str,
        got: String,
    },
}

fn invalid(what: &'static str, expected: &'static str, got: impl fmt::Display) -> ValueError {
    ValueError::Invalid {
        what,
        expected,
        got: got.to_string().chars().take(80).collect(),
    }
}

/// 要介護状態区分: the care-need level decided by a certification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CareLevel {
    /// 非該当: not eligible (自立).
    NotEligible,
    /// 要支援1.
    #[serde(rename = "support_1")]
    Support1,
    /// 要支援2.
    #[serde(rename = "support_2")]
    Support2,
    /// 要介護1.
    #[serde(rename = "care_1")]
    Care1,
    /// 要介護2.
    #[serde(rename = "care_2")]
    Care2,
    /// 要介護3.
    #[serde(rename = "care_3")]
    Care3,
    /// 要介護4.
    #[serde(rename = "care_4")]
    Care4,
    /// 要介護5.
    #[serde(rename = "care_5")]
    Care5,
}

/// Which kind of care a certified level gives access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelGroup {
    /// 要支援1–2: preventive care, planned by a 地域包括支援センター.
    Support,
    /// 要介護1–5: care, planned by a 居宅介護支援事業所.
    Care,
}

impl CareLevel {
    /// Every level, from 非該当 to 要介護5.
    pub const ALL: [CareLevel; 8] = [
        Self::NotEligible,
        Self::Support1,
        Self::Support2,
        Self::Care1,
        Self::Care2,
        Self::Care3,
        Self::Care4,
        Self::Care5,
    ];

    /// Parses the code used in payloads (`not_eligible`, `support_1`, `care_3`).
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        Self::ALL
            .into_iter()
            .find(|level| level.code() == value)
            .ok_or_else(|| {
                invalid(
                    "care level (要介護状態区分)",
                    "one of not_eligible, support_1, support_2, care_1 to care_5",
                    value,
                )
            })
    }

    /// The code used in payloads.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotEligible => "not_eligible",
            Self::Support1 => "support_1",
            Self::Support2 => "support_2",
            Self::Care1 => "care_1",
            Self::Care2 => "care_2",
            Self::Care3 => "care_3",
            Self::Care4 => "care_4",
            Self::Care5 => "care_5",
        }
    }

    /// The Japanese name, as printed on the certificate.
    pub fn japanese_name(self) -> &'static str {
        match self {
            Self::NotEligible => "非該当",
            Self::Support1 => "要支援1",
            Self::Support2 => "要支援2",
            Self::Care1 => "要介護1",
            Self::Care2 => "要介護2",
            Self::Care3 => "要介護3",
            Self::Care4 => "要介護4",
            Self::Care5 => "要介護5",
        }
    }

    /// The step of the home-modification three-step rule (DOMAIN.md):
    /// 1 = 要支援1; 2 = 要支援2 or 要介護1; 3 = 要介護2; ... 6 = 要介護5.
    /// 非該当 has no step (no benefits).
    pub fn step(self) -> Option<u8> {
        match self {
            Self::NotEligible => None,
            Self::Support1 => Some(1),
            Self::Support2 | Self::Care1 => Some(2),
            Self::Care2 => Some(3),
            Self::Care3 => Some(4),
            Self::Care4 => Some(5),
            Self::Care5 => Some(6),
        }
    }

    /// 要支援 or 要介護; `None` for 非該当.
    pub fn group(self) -> Option<LevelGroup> {
        match self {
            Self::NotEligible => None,
            Self::Support1 | Self::Support2 => Some(LevelGroup::Support),
            _ => Some(LevelGroup::Care),
        }
    }
}

impl fmt::Display for CareLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// 利用者負担割合: the copayment ratio, 1割, 2割 or 3割.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct CopaymentRatio(u8);

impl CopaymentRatio {
    /// 1割, 2割 or 3割, given as 1, 2 or 3 tenths.
    pub fn new(tenths: u8) -> Result<Self, ValueError> {
        if (1..=3).contains(&tenths) {
            Ok(Self(tenths))
        } else {
            Err(invalid(
                "copayment ratio (負担割合)",
                "1, 2 or 3 (割)",
                tenths,
            ))
        }
    }

    /// The copayment in tenths (1, 2 or 3).
    pub fn tenths(self) -> u8 {
        self.0
    }

    /// The share the insurer pays, in percent: 90, 80 or 70.
    pub fn benefit_percent(self) -> u64 {
        100 - 10 * u64::from(self.0)
    }

    /// The benefit paid on `cost`: `cost × benefit_percent / 100`, with
    /// fractions of a yen cut off (円未満切り捨て).
    pub fn benefit_on(self, cost: Yen) -> Yen {
        cost.pro_rata(self.benefit_percent(), 100)
            .expect("a share below 100% of a u64 fits a u64")
    }
}

impl TryFrom<u8> for CopaymentRatio {
    type Error = ValueError;
    fn try_from(tenths: u8) -> Result<Self, ValueError> {
        Self::new(tenths)
    }
}

impl From<CopaymentRatio> for u8 {
    fn from(ratio: CopaymentRatio) -> u8 {
        ratio.0
    }
}

/// An amount of money in yen, never negative.
///
/// Arithmetic is checked: sums that would overflow and differences that
/// would go below zero are refused rather than wrapped, so a ledger built
/// from `Yen` never goes negative.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Yen(u64);

impl Yen {
    /// Zero yen.
    pub const ZERO: Yen = Yen(0);

    /// An amount in yen.
    pub const fn new(yen: u64) -> Self {
        Self(yen)
    }

    /// The amount as a number of yen.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Yen) -> Option<Yen> {
        self.0.checked_add(other.0).map(Yen)
    }

    /// `self - other`, or `None` when it would be negative.
    pub fn checked_sub(self, other: Yen) -> Option<Yen> {
        self.0.checked_sub(other.0).map(Yen)
    }

    /// `self - other`, or zero when it would be negative.
    pub fn saturating_sub(self, other: Yen) -> Yen {
        Yen(self.0.saturating_sub(other.0))
    }

    /// `self × numerator / denominator`, cut off to the yen; `None` when the
    /// denominator is zero or the product overflows.
    pub fn pro_rata(self, numerator: u64, denominator: u64) -> Option<Yen> {
        if denominator == 0 {
            return None;
        }
        let product = u128::from(self.0) * u128::from(numerator) / u128::from(denominator);
        u64::try_from(product).ok().map(Yen)
    }
}

impl fmt::Display for Yen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} yen", self.0)
    }
}

/// 負担限度額認定の段階: the stage of a cost-limit certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum CostLimitStage {
    /// 第1段階.
    #[serde(rename = "stage_1")]
    Stage1,
    /// 第2段階.
    #[serde(rename = "stage_2")]
    Stage2,
    /// 第3段階①.
    #[serde(rename = "stage_3_1")]
    Stage3First,
    /// 第3段階②.
    #[serde(rename = "stage_3_2")]
    Stage3Second,
}

impl CostLimitStage {
    /// The Japanese name, as printed on the certificate.
    pub fn japanese_name(self) -> &'static str {
        match self {
            Self::Stage1 => "第1段階",
            Self::Stage2 => "第2段階",
            Self::Stage3First => "第3段階①",
            Self::Stage3Second => "第3段階②",
        }
    }
}

/// Largest token inside an identifier-like value, in bytes (matches the
/// envelope's actor token limit so a terminal id fits into an actor).
const TOKEN_BYTES_MAX: usize = crate::envelope::ACTOR_TOKEN_BYTES_MAX;

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= TOKEN_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Implements string-form serde through `parse`, plus `Display` and `as_str`.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, ValueError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// アクセスコード（端末固有ID）: the unique id of an office terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TerminalId(String);

impl TerminalId {
    /// 1–64 ASCII letters, digits, `.`, `_` or `-` (it appears in actors).
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        if is_token(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid(
                "terminal id (端末固有ID)",
                "1-64 ASCII letters, digits, '.', '_' or '-'",
                value,
            ))
        }
    }
}
string_value!(TerminalId);

/// A SHA-256 digest as 64 lower-case hex digits.
///
/// Documents are content-addressed by it (DESIGN.md decision 12), and
/// credentials are referenced by the digest of their secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// 64 lower-case hex digits.
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        if value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid("SHA-256 digest", "64 lower-case hex digits", value))
        }
    }
}
string_value!(Sha256Digest);

/// Largest document accepted, in bytes: scanned attachments and PDFs of a
/// few pages are far below it; it bounds the blob store.
pub const DOCUMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Longest media type, in bytes.
const MEDIA_TYPE_BYTES_MAX: usize = 100;

/// A reference to a content-addressed document (認定調査票, 主治医意見書,
/// subsidy attachments): digest, media type and size. Events carry this,
/// never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "DocumentRefFields", into = "DocumentRefFields")]
pub struct DocumentRef {
    sha256: Sha256Digest,
    media_type: String,
    size_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct DocumentRefFields {
    sha256: Sha256Digest,
    media_type: String,
    size_bytes: u64,
}

impl DocumentRef {
    /// A reference; the media type must look like `type/subtype` and the
    /// size must be 1 byte to [`DOCUMENT_BYTES_MAX`].
    pub fn new(
        sha256: Sha256Digest,
        media_type: &str,
        size_bytes: u64,
    ) -> Result<Self, ValueError> {
        let media_ok = media_type.len() <= MEDIA_TYPE_BYTES_MAX
            && media_type.split_once('/').is_some_and(|(kind, sub)| {
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes().all(|b| {
                            b.is_ascii_lowercase()
                                || b.is_ascii_digit()
                                || matches!(b, b'.' | b'+' | b'-')
                        })
                };
                ok(kind) && ok(sub)
            });
        if !media_ok {
            return Err(invalid(
                "document media type",
                "a lower-case media type like application/pdf",
                media_type,
            ));
        }
        if size_bytes == 0 || size_bytes > DOCUMENT_BYTES_MAX {
            return Err(invalid("document size", "1 byte to 64 MiB", size_bytes));
        }
        Ok(Self {
            sha256,
            media_type: media_type.to_owned(),
            size_bytes,
        })
    }

    /// The content digest.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    /// The media type.
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// The size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl TryFrom<DocumentRefFields> for DocumentRef {
    type Error = ValueError;
    fn try_from(fields: DocumentRefFields) -> Result<Self, ValueError> {
        Self::new(fields.sha256, &fields.media_type, fields.size_bytes)
    }
}

impl From<DocumentRef> for DocumentRefFields {
    fn from(document: DocumentRef) -> Self {
        Self {
            sha256: document.sha256,
            media_type: document.media_type,
            size_bytes: document.size_bytes,
        }
    }
}

/// サービス種類コード: the two-character service type code (`11` 訪問介護,
/// `43` 居宅介護支援, `2A` 短期入所療養介護（介護医療院）).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceTypeCode(String);

impl ServiceTypeCode {
    /// Two ASCII digits or upper-case letters, the first a digit or letter.
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        if value.len() == 2
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid(
                "service type code (サービス種類コード)",
                "two ASCII digits or upper-case letters",
                value,
            ))
        }
    }
}
string_value!(ServiceTypeCode);

/// The payload keys that hold personal fields ([`SealedValue`]s) wherever
/// they appear: a producer must send them as plaintext (`{"plain": ...}`)
/// for kiban to seal, never as a bare string (docs/integration.md).
pub const PERSONAL_FIELDS: &[&str] = &["address", "name", "kana"];

/// Longest sealed value, in bytes.
pub const SEALED_BYTES_MAX: usize = 4096;

/// Personal data, already encrypted with the person's key (DESIGN.md
/// decision 13): an opaque string that deciders never look inside. Erasing
/// the key forgets the person while the hash chain still verifies.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SealedValue(String);

impl SealedValue {
    /// 1–4096 bytes of printable ASCII (the ciphertext's text encoding).
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        if !value.is_empty()
            && value.len() <= SEALED_BYTES_MAX
            && value.bytes().all(|b| b.is_ascii_graphic())
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(invalid(
                "sealed value",
                "1-4096 bytes of printable ASCII ciphertext",
                "<not shown>",
            ))
        }
    }
}
string_value!(SealedValue);

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedValue({} bytes)", self.0.len())
    }
}

/// 特定福祉用具の種目: the categories of specified equipment for purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EquipmentCategory {
    /// 腰掛便座.
    CommodeSeat,
    /// 自動排泄処理装置の交換可能部品.
    AutomaticExcretionParts,
    /// 排泄予測支援機器.
    ExcretionPredictionDevice,
    /// 入浴補助用具.
    BathingAid,
    /// 簡易浴槽.
    SimpleBathtub,
    /// 移動用リフトのつり具の部分.
    LiftSling,
    /// 固定用スロープ.
    FixedSlope,
    /// 歩行器（歩行車を除く）.
    Walker,
    /// 単点杖（松葉づえを除く）.
    SinglePointCane,
    /// 多点杖.
    MultiPointCane,
}

impl EquipmentCategory {
    /// The Japanese name.
    pub fn japanese_name(self) -> &'static str {
        match self {
            Self::CommodeSeat => "腰掛便座",
            Self::AutomaticExcretionParts => "自動排泄処理装置の交換可能部品",
            Self::ExcretionPredictionDevice => "排泄予測支援機器",
            Self::BathingAid => "入浴補助用具",
            Self::SimpleBathtub => "簡易浴槽",
            Self::LiftSling => "移動用リフトのつり具の部分",
            Self::FixedSlope => "固定用スロープ",
            Self::Walker => "歩行器",
            Self::SinglePointCane => "単点杖",
            Self::MultiPointCane => "多点杖",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn care_level_steps_follow_the_three_step_rule_table() {
        let steps: Vec<Option<u8>> = CareLevel::ALL.iter().map(|l| l.step()).collect();
        assert_eq!(
            steps,
            vec![
                None,
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(4),
                Some(5),
                Some(6)
            ]
        );
        assert_eq!(CareLevel::Care3.japanese_name(), "要介護3");
        assert_eq!(CareLevel::parse("care_2").unwrap(), CareLevel::Care2);
        assert!(CareLevel::parse("care_6").is_err());
        assert_eq!(
            serde_json::to_string(&CareLevel::Support1).unwrap(),
            "\"support_1\""
        );
        assert!(serde_json::from_str::<CareLevel>("\"care_6\"").is_err());
    }

    #[test]
    fn copayment_ratio_is_one_two_or_three_and_pays_ninety_eighty_seventy() {
        assert!(CopaymentRatio::new(0).is_err());
        assert!(CopaymentRatio::new(4).is_err());
        let percents: Vec<u64> = (1..=3)
            .map(|t| CopaymentRatio::new(t).unwrap().benefit_percent())
            .collect();
        assert_eq!(percents, vec![90, 80, 70]);
        let one = CopaymentRatio::new(1).unwrap();
        assert_eq!(one.benefit_on(Yen::new(12_345)), Yen::new(11_110));
        assert_eq!(
            CopaymentRatio::new(3)
                .unwrap()
                .benefit_on(Yen::new(u64::MAX)),
            Yen::new((u128::from(u64::MAX) * 70 / 100) as u64)
        );
        assert!(serde_json::from_str::<CopaymentRatio>("4").is_err());
    }

    #[test]
    fn yen_arithmetic_is_checked() {
        assert_eq!(Yen::new(5).checked_sub(Yen::new(6)), None);
        assert_eq!(Yen::new(u64::MAX).checked_add(Yen::new(1)), None);
        assert_eq!(Yen::new(5).saturating_sub(Yen::new(6)), Yen::ZERO);
        assert_eq!(Yen::new(15_400).pro_rata(1, 2), Some(Yen::new(7_700)));
        assert_eq!(Yen::new(1).pro_rata(1, 0), None);
    }

    #[test]
    fn document_ref_validates_digest_media_type_and_size() {
        let digest = Sha256Digest::parse(&"ab".repeat(32)).unwrap();
        assert!(Sha256Digest::parse(&"AB".repeat(32)).is_err());
        assert!(DocumentRef::new(digest.clone(), "application/pdf", 10).is_ok());
        assert!(DocumentRef::new(digest.clone(), "pdf", 10).is_err());
        assert!(DocumentRef::new(digest.clone(), "application/pdf", 0).is_err());
        assert!(DocumentRef::new(digest, "application/pdf", DOCUMENT_BYTES_MAX + 1).is_err());
        let bad = r#"{"sha256":"abab","media_type":"application/pdf","size_bytes":1}"#;
        assert!(serde_json::from_str::<DocumentRef>(bad).is_err());
    }

    #[test]
    fn service_type_code_terminal_id_and_sealed_value_are_validated() {
        assert!(ServiceTypeCode::parse("43").is_ok());
        assert!(ServiceTypeCode::parse("2A").is_ok());
        assert!(ServiceTypeCode::parse("4").is_err());
        assert!(ServiceTypeCode::parse("ab").is_err());
        assert!(TerminalId::parse("T-01").is_ok());
        assert!(TerminalId::parse("T 01").is_err());
        assert!(SealedValue::parse("").is_err());
        let sealed = SealedValue::parse("v1.abcdef").unwrap();
        assert_eq!(format!("{sealed:?}"), "SealedValue(9 bytes)");
    }
}
