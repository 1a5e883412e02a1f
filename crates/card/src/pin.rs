//! The user-authentication PIN (利用者証明用パスワード): exactly four ASCII digits.
//!
//! A [`Pin`] is wiped from memory when dropped and never shown: `Debug` is redacted
//! and there is no `Display`.

use std::fmt;

use zeroize::Zeroize;

/// Number of digits of the JPKI user-authentication PIN.
pub const PIN_DIGITS: usize = 4;

/// A validated user-authentication PIN.
#[derive(Clone)]
pub struct Pin([u8; PIN_DIGITS]);

/// The text given as a PIN is not exactly four ASCII digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the PIN must be exactly 4 digits (暗証番号は数字 4 桁です)")]
pub struct PinFormatError;

impl Pin {
    /// Validates `text` as four ASCII digits. The error does not echo the input.
    pub fn new(text: &str) -> Result<Pin, PinFormatError> {
        let bytes = text.as_bytes();
        if bytes.len() != PIN_DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(PinFormatError);
        }
        let mut digits = [0u8; PIN_DIGITS];
        digits.copy_from_slice(bytes);
        Ok(Pin(digits))
    }

    /// The ASCII digits as sent in VERIFY.
    pub(crate) fn as_ascii(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(****)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_four_ascii_digits() {
        assert_eq!(Pin::new("0123").unwrap().as_ascii(), b"0123");
        for bad in ["", "123", "12345", "12a4", "１２３４", " 123", "12 4"] {
            assert_eq!(Pin::new(bad).unwrap_err(), PinFormatError, "{bad:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let pin = Pin::new("9876").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(****)");
        assert!(!format!("{:?}", PinFormatError).contains("9876"));
    }
}
