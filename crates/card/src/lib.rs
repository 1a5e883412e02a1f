//! kiban-card: the My Number card (マイナンバーカード) side of the consent check.
//!
//! An office's card reader reads the person's JPKI user-authentication certificate
//! (利用者証明用電子証明書), the person enters the 4-digit PIN, and the card signs a
//! challenge issued by the server; the server checks the signature, the certificate
//! chain, its validity and revocation before it records consent.
//!
//! Layout:
//! - [`apdu`]: command APDU builders and status words (no IO).
//! - [`jpki`]: [`JpkiCard`], the JPKI application over any [`Transport`].
//! - [`transport`]: the [`Transport`] trait; `pcsc` implements it over PC/SC
//!   (feature `pcsc`, off by default so the server builds without libpcsclite) and
//!   provides `status_report()`.
//! - [`verify`]: [`verify_challenge_signature`], the server-side check, pure: the
//!   time is a value, the trusted CAs and the CRL are arguments.
//! - [`status`]: the report behind `kiban card status`.
//! - `virtual_card` and `test_pki` (feature `virtual-card`): a virtual JPKI card, in
//!   memory or connected to pcscd through vpcd, and the test PKI that issues its
//!   certificates. The binary `kiban-virtual-card` serves that card to vpcd.
//!
//! Architecture invariant: the Individual Number (個人番号) is never read. The crate
//! selects only the JPKI application and, inside it, only the user-authentication
//! files; it has no code path to the card's My Number application. Neither PINs nor
//! keys are ever logged; [`Pin`] is wiped on drop and redacted in `Debug`.
//!
//! PC/SC itself has no transmit timeout: a hung card is bounded by the reader
//! driver's own timeouts. Our limits are the named constants next to the code they
//! bound (certificate size, READ BINARY chunk, waits for cards and removals).

pub mod apdu;
mod error;
pub mod jpki;
mod pin;
pub mod status;
pub mod transport;
pub mod verify;

#[cfg(feature = "pcsc")]
pub mod pcsc;
#[cfg(all(feature = "pcsc", feature = "virtual-card"))]
pub mod test_pcscd;
#[cfg(any(test, feature = "virtual-card"))]
pub mod test_pki;
#[cfg(any(test, feature = "virtual-card"))]
pub mod virtual_card;

#[cfg(feature = "pcsc")]
pub use crate::pcsc::{PcscTransport, sign_challenge_with_card, status_report};
pub use error::CardError;
pub use jpki::JpkiCard;
pub use pin::{Pin, PinFormatError};
pub use status::{CardProbe, ReaderReport, StatusReport, probe_card};
pub use transport::Transport;
pub use verify::{
    CheckedCrl, Revocation, VerifiedCardHolder, VerifyError, verify_challenge_signature,
};

/// Shortest challenge the card signs and the server accepts: 128 bits, so that a
/// challenge cannot be guessed and a signature cannot be replayed for another.
pub const CHALLENGE_BYTES_MIN: usize = 16;
/// Longest challenge: it is hashed before signing, so length costs nothing on the
/// card, but an unbounded input costs the server.
pub const CHALLENGE_BYTES_MAX: usize = 1024;
