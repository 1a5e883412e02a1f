//! Identifiers of the care-insurance world, validated in their constructors.
//!
//! Each identifier is a fixed-length string of ASCII digits; some carry the
//! prefecture code (都道府県番号, 01–47) in their first two digits. A value of
//! one of these types is always well-formed: the fields are private, parsing is
//! the only constructor, and deserialisation goes through the same parser.
//!
//! Check digits are deliberately not verified: the platform receives numbers
//! that the issuing municipality or prefecture already validated, and a wrong
//! check-digit rule here would reject real people.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused. The message names the identifier in the
/// words a municipality clerk uses, so it can go straight into a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value does not have the required number of ASCII digits.
    #[error("{what} must be exactly {digits} ASCII digits, got {got:?}")]
    Digits {
        what: &'static str,
        digits: usize,
        got: String,
    },
    /// The first two digits are not a prefecture code 01–47.
    #[error("{what} must start with a prefecture code 01-47, got {got:?}")]
    Prefecture { what: &'static str, got: String },
}

/// Checks `value` is `digits` ASCII digits, and when `prefecture` is set that
/// the first two are 01–47. Returns the value unchanged on success.
fn validate_digits(
    what: &'static str,
    value: &str,
    digits: usize,
    prefecture: bool,
) -> Result<(), IdError> {
    if value.len() != digits || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::Digits {
            what,
            digits,
            got: value.chars().take(32).collect(),
        });
    }
    if prefecture {
        let code: u8 = value[..2].parse().expect("two ASCII digits parse");
        if !(1..=47).contains(&code) {
            return Err(IdError::Prefecture {
                what,
                got: value.to_owned(),
            });
        }
    }
    Ok(())
}

macro_rules! digit_identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal, $digits:literal, prefecture = $pref:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// How many digits this identifier has.
            pub const DIGITS: usize = $digits;

            /// Parses and validates the identifier.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                validate_digits($what, value, $digits, $pref)?;
                Ok(Self(value.to_owned()))
            }

            /// The identifier as its digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                validate_digits($what, &value, $digits, $pref)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

digit_identifier!(
    /// 保険者番号: the insurer (municipality or wide-area union) number,
    /// 6 digits, the first two the prefecture code.
    InsurerNumber, "insurer number (保険者番号)", 6, prefecture = true
);

digit_identifier!(
    /// 被保険者番号: the insured person's number, 10 digits, unique within the
    /// insurer. Not the Individual Number (My Number), which kiban never holds.
    InsuredNumber, "insured number (被保険者番号)", 10, prefecture = false
);

digit_identifier!(
    /// 介護保険事業所番号: the care office number, 10 digits, the first two
    /// the prefecture code.
    OfficeNumber, "office number (介護保険事業所番号)", 10, prefecture = true
);

digit_identifier!(
    /// 医療機関コード: the medical institution code, 10 digits.
    MedicalInstitutionCode, "medical institution code (医療機関コード)", 10, prefecture = false
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insurer_number_accepts_six_digits_with_a_prefecture() {
        assert_eq!(InsurerNumber::parse("131016").unwrap().as_str(), "131016");
        assert_eq!(InsurerNumber::parse("470001").unwrap().as_str(), "470001");
    }

    #[test]
    fn insurer_number_rejects_wrong_length_letters_and_prefecture() {
        assert!(matches!(
            InsurerNumber::parse("13101"),
            Err(IdError::Digits { .. })
        ));
        assert!(matches!(
            InsurerNumber::parse("13101a"),
            Err(IdError::Digits { .. })
        ));
        assert!(matches!(
            InsurerNumber::parse("１３１０１６"),
            Err(IdError::Digits { .. })
        ));
        assert!(matches!(
            InsurerNumber::parse("481016"),
            Err(IdError::Prefecture { .. })
        ));
        assert!(matches!(
            InsurerNumber::parse("001016"),
            Err(IdError::Prefecture { .. })
        ));
    }

    #[test]
    fn office_number_checks_prefecture_but_insured_number_does_not() {
        assert!(OfficeNumber::parse("1312345678").is_ok());
        assert!(matches!(
            OfficeNumber::parse("9912345678"),
            Err(IdError::Prefecture { .. })
        ));
        assert!(InsuredNumber::parse("0000012345").is_ok());
        assert!(MedicalInstitutionCode::parse("9912345678").is_ok());
    }

    #[test]
    fn deserialising_goes_through_validation() {
        let ok: InsuredNumber = serde_json::from_str("\"0000012345\"").unwrap();
        assert_eq!(ok.to_string(), "0000012345");
        let err = serde_json::from_str::<InsuredNumber>("\"12345\"").unwrap_err();
        assert!(err.to_string().contains("insured number"), "{err}");
    }
}
