//! What can go wrong talking to a card, in words an office clerk understands.
//!
//! `Display` gives the English message; [`CardError::message_ja`] the Japanese one.
//! Neither ever contains a PIN or card data.

use crate::apdu::StatusWord;

/// An error while talking to the card reader or the card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The PC/SC service (pcscd) is not running or cannot be reached.
    #[error("the card reader service is not available: {detail}")]
    ServiceUnavailable {
        /// What the PC/SC layer said, for the operator.
        detail: String,
    },
    /// No card reader is connected.
    #[error("no card reader is connected")]
    NoReader,
    /// A reader is connected but holds no card.
    #[error("no card is in the card reader")]
    NoCard,
    /// The card was taken out (or lost power) while it was being used.
    #[error("the card was removed during the operation; insert it again and retry")]
    CardRemoved,
    /// The card does not hold the JPKI application, so it is not a My Number card.
    #[error("the card is not a My Number card (no JPKI application)")]
    NotJpki,
    /// The PIN was wrong; the card counts down the tries left.
    #[error("wrong PIN: {tries_left} tries left before the PIN is blocked")]
    WrongPin {
        /// Tries left before the PIN is blocked.
        tries_left: u8,
    },
    /// The user-authentication PIN is blocked; the municipality must reset it.
    #[error("the PIN is blocked; it can be reset at the municipal office")]
    PinBlocked,
    /// Signing was attempted before the PIN was verified.
    #[error("the PIN has not been verified")]
    PinNotVerified,
    /// Waiting for a reader or card took longer than allowed.
    #[error("the card did not respond in time")]
    Timeout,
    /// The card answered a command with a status word we do not expect.
    #[error("the card answered {command} with unexpected status {status}")]
    UnexpectedStatus {
        /// The command, e.g. `READ BINARY`.
        command: &'static str,
        /// The status word.
        status: StatusWord,
    },
    /// The card answered with data that is malformed or out of bounds.
    #[error("the card answered {command} with invalid data: {reason}")]
    InvalidResponse {
        /// The command, e.g. `READ BINARY`.
        command: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The challenge to sign is empty or larger than allowed.
    #[error("the challenge must be {min} to {max} bytes long", min = crate::CHALLENGE_BYTES_MIN, max = crate::CHALLENGE_BYTES_MAX)]
    InvalidChallenge,
    /// Another failure of the reader or its driver.
    #[error("card reader error: {detail}")]
    Reader {
        /// What the PC/SC layer said, for the operator.
        detail: String,
    },
}

impl CardError {
    /// The message in Japanese, for the office's screen.
    pub fn message_ja(&self) -> String {
        match self {
            CardError::ServiceUnavailable { .. } => {
                "カードリーダーのサービス（PC/SC）が利用できません。".to_owned()
            }
            CardError::NoReader => "カードリーダーが接続されていません。".to_owned(),
            CardError::NoCard => "カードリーダーにカードがありません。".to_owned(),
            CardError::CardRemoved => {
                "処理中にカードが取り外されました。カードを置き直して、もう一度お試しください。"
                    .to_owned()
            }
            CardError::NotJpki => {
                "マイナンバーカードではありません（公的個人認証 AP がありません）。".to_owned()
            }
            CardError::WrongPin { tries_left } => {
                format!("暗証番号が違います。あと {tries_left} 回間違えるとロックされます。")
            }
            CardError::PinBlocked => {
                "暗証番号がロックされています。市区町村の窓口で初期化してください。".to_owned()
            }
            CardError::PinNotVerified => "暗証番号が確認されていません。".to_owned(),
            CardError::Timeout => "カードの応答がありませんでした。".to_owned(),
            CardError::UnexpectedStatus { command, status } => {
                format!("カードが {command} に想定外の応答（{status}）を返しました。")
            }
            CardError::InvalidResponse { command, reason } => {
                format!("カードが {command} に不正なデータを返しました（{reason}）。")
            }
            CardError::InvalidChallenge => format!(
                "署名するチャレンジは {} から {} バイトでなければなりません。",
                crate::CHALLENGE_BYTES_MIN,
                crate::CHALLENGE_BYTES_MAX
            ),
            CardError::Reader { .. } => "カードリーダーでエラーが発生しました。".to_owned(),
        }
    }

    /// The message in English (the same as `Display`).
    pub fn message_en(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_pin_names_the_tries_left_in_both_languages() {
        let error = CardError::WrongPin { tries_left: 2 };
        assert_eq!(
            error.to_string(),
            "wrong PIN: 2 tries left before the PIN is blocked"
        );
        assert!(error.message_ja().contains("あと 2 回"));
    }

    #[test]
    fn unexpected_status_shows_the_status_word() {
        let error = CardError::UnexpectedStatus {
            command: "READ BINARY",
            status: StatusWord(0x6F00),
        };
        assert_eq!(
            error.to_string(),
            "the card answered READ BINARY with unexpected status 6F 00"
        );
        assert!(error.message_ja().contains("6F 00"));
    }
}
