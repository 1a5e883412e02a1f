//! The JPKI application (公的個人認証 AP) of the My Number card, user-authentication
//! side only: its certificate, its CA certificate, its PIN and its key.
//!
//! Deliberately absent: the card's other applications. We never select the My Number
//! (券面事項入力補助 / 個人番号) application nor read any of its files, so the Individual
//! Number never passes through this code. Nor do we touch the signature key and PIN
//! (署名用電子証明書, EF `001A`/`001B`), whose certificate carries name and address.
//!
//! The facts below follow OpenSC's `card-jpki.c` / `pkcs15-jpki.c`.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::apdu::{self, Response, StatusWord};
use crate::{CardError, Pin, Transport};

/// EF of the user-authentication certificate (利用者証明用電子証明書).
pub const EF_AUTH_CERTIFICATE: u16 = 0x000A;
/// EF of the certificate of the CA that issued the user-authentication certificate.
pub const EF_AUTH_CA_CERTIFICATE: u16 = 0x000B;
/// EF of the user-authentication private key (selected before signing).
pub const EF_AUTH_KEY: u16 = 0x0017;
/// EF of the user-authentication PIN (4 digits).
pub const EF_AUTH_PIN: u16 = 0x0018;
/// Wrong PINs the card accepts before it blocks the user-authentication PIN.
pub const AUTH_PIN_TRIES_MAX: u8 = 3;

/// Largest certificate we read from the card. JPKI certificates are about 1.5 KB;
/// the bound stops a broken or hostile card from making us read the whole EF space.
pub const CERTIFICATE_BYTES_MAX: usize = 8 * 1024;
/// Bytes read first to learn a certificate's length from its DER header
/// (`30 82 LL LL`).
const CERTIFICATE_HEADER_BYTES: usize = 4;
/// Length of an RSA-2048 signature.
pub const SIGNATURE_BYTES: usize = 256;
/// GET RESPONSE rounds allowed after `61 xx`; two carry a 256-byte signature, the
/// rest is margin for cards that hand out smaller pieces.
const GET_RESPONSE_ROUNDS_MAX: usize = 8;

/// The DER prefix of a SHA-256 DigestInfo (RFC 8017, section 9.2, note 1); the
/// 32-byte hash follows it.
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// Length of a SHA-256 DigestInfo.
pub const SHA256_DIGEST_INFO_BYTES: usize = SHA256_DIGEST_INFO_PREFIX.len() + 32;

/// The DER DigestInfo of SHA-256(`message`): what the card pads (PKCS#1 v1.5) and
/// signs with its RSA key.
pub fn sha256_digest_info(message: &[u8]) -> [u8; SHA256_DIGEST_INFO_BYTES] {
    let mut digest_info = [0u8; SHA256_DIGEST_INFO_BYTES];
    digest_info[..SHA256_DIGEST_INFO_PREFIX.len()].copy_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    digest_info[SHA256_DIGEST_INFO_PREFIX.len()..].copy_from_slice(&Sha256::digest(message));
    digest_info
}

/// A card whose JPKI application is selected.
pub struct JpkiCard<T: Transport> {
    transport: T,
}

impl<T: Transport> JpkiCard<T> {
    /// Selects the JPKI application; [`CardError::NotJpki`] when the card has none.
    pub fn open(mut transport: T) -> Result<JpkiCard<T>, CardError> {
        let response = exchange(&mut transport, &apdu::select_df_name(&apdu::JPKI_AID))?;
        match response.status {
            status if status.is_success() => Ok(JpkiCard { transport }),
            // Not found, wrong parameters, instruction or class unknown: a card
            // without the application.
            status if matches!(status.sw1(), 0x6A | 0x6D | 0x6E) => Err(CardError::NotJpki),
            status => Err(CardError::UnexpectedStatus {
                command: "SELECT (JPKI AP)",
                status,
            }),
        }
    }

    /// Gives the transport back, e.g. to disconnect the reader.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Reads the user-authentication certificate (DER).
    pub fn read_auth_certificate(&mut self) -> Result<Vec<u8>, CardError> {
        self.read_certificate(EF_AUTH_CERTIFICATE)
    }

    /// Reads the certificate of the CA that issued the user-authentication
    /// certificate (DER).
    pub fn read_auth_ca_certificate(&mut self) -> Result<Vec<u8>, CardError> {
        self.read_certificate(EF_AUTH_CA_CERTIFICATE)
    }

    /// The number of wrong PINs the card still accepts (0 when blocked), asked with
    /// VERIFY without data, which does not count as a try.
    pub fn pin_tries_left(&mut self) -> Result<u8, CardError> {
        self.select_ef(EF_AUTH_PIN)?;
        let response = exchange(&mut self.transport, &apdu::verify(None))?;
        match response.status {
            status if status.is_success() => Ok(AUTH_PIN_TRIES_MAX),
            status if is_blocked(status) => Ok(0),
            status => status
                .verification_tries_left()
                .ok_or(CardError::UnexpectedStatus {
                    command: "VERIFY",
                    status,
                }),
        }
    }

    /// Verifies the user-authentication PIN. A wrong PIN costs a try:
    /// [`CardError::WrongPin`] says how many are left, [`CardError::PinBlocked`]
    /// that none are.
    pub fn verify_pin(&mut self, pin: &Pin) -> Result<(), CardError> {
        self.select_ef(EF_AUTH_PIN)?;
        let command = Zeroizing::new(apdu::verify(Some(pin.as_ascii())));
        let response = exchange(&mut self.transport, &command)?;
        match response.status {
            status if status.is_success() => Ok(()),
            status if is_blocked(status) => Err(CardError::PinBlocked),
            status => match status.verification_tries_left() {
                Some(0) => Err(CardError::PinBlocked),
                Some(tries_left) => Err(CardError::WrongPin { tries_left }),
                None => Err(CardError::UnexpectedStatus {
                    command: "VERIFY",
                    status,
                }),
            },
        }
    }

    /// Signs SHA-256(`challenge`) with the user-authentication key (RSA-2048,
    /// PKCS#1 v1.5). The PIN must have been verified on this connection.
    pub fn sign_challenge(&mut self, challenge: &[u8]) -> Result<Vec<u8>, CardError> {
        if !(crate::CHALLENGE_BYTES_MIN..=crate::CHALLENGE_BYTES_MAX).contains(&challenge.len()) {
            return Err(CardError::InvalidChallenge);
        }
        let digest_info = sha256_digest_info(challenge);
        self.select_ef(EF_AUTH_KEY)?;
        let response = exchange(
            &mut self.transport,
            &apdu::compute_digital_signature(&digest_info),
        )?;
        if !response.status.is_success() {
            return Err(status_error("COMPUTE DIGITAL SIGNATURE", response.status));
        }
        if response.data.len() != SIGNATURE_BYTES {
            return Err(CardError::InvalidResponse {
                command: "COMPUTE DIGITAL SIGNATURE",
                reason: "the signature is not 256 bytes long",
            });
        }
        Ok(response.data)
    }

    fn select_ef(&mut self, file_id: u16) -> Result<(), CardError> {
        let response = exchange(&mut self.transport, &apdu::select_ef(file_id))?;
        if !response.status.is_success() {
            return Err(status_error("SELECT (EF)", response.status));
        }
        Ok(())
    }

    fn read_certificate(&mut self, file_id: u16) -> Result<Vec<u8>, CardError> {
        self.select_ef(file_id)?;
        let header = self.read_binary(0, CERTIFICATE_HEADER_BYTES)?;
        let total = der_sequence_length(&header)?;
        let mut certificate = Vec::with_capacity(total);
        certificate.extend_from_slice(&header);
        while certificate.len() < total {
            let wanted =
                (total - certificate.len()).min(usize::from(apdu::READ_BINARY_CHUNK_BYTES));
            let chunk = self.read_binary(certificate.len(), wanted)?;
            certificate.extend_from_slice(&chunk);
        }
        Ok(certificate)
    }

    /// Reads up to `length` bytes; fewer only when the card sends fewer, never none.
    fn read_binary(&mut self, offset: usize, length: usize) -> Result<Vec<u8>, CardError> {
        const COMMAND: &str = "READ BINARY";
        let response = exchange(&mut self.transport, &apdu::read_binary(offset, length))?;
        if !response.status.is_success() {
            return Err(status_error(COMMAND, response.status));
        }
        if response.data.is_empty() || response.data.len() > length {
            return Err(CardError::InvalidResponse {
                command: COMMAND,
                reason: "wrong length",
            });
        }
        Ok(response.data)
    }
}

/// The total length (header included) of the DER SEQUENCE whose first bytes are
/// `header`, bounded by [`CERTIFICATE_BYTES_MAX`].
fn der_sequence_length(header: &[u8]) -> Result<usize, CardError> {
    let invalid = |reason| CardError::InvalidResponse {
        command: "READ BINARY",
        reason,
    };
    if header.len() < CERTIFICATE_HEADER_BYTES || header[0] != 0x30 {
        return Err(invalid("the file does not hold a DER certificate"));
    }
    let total = match header[1] {
        length @ 0x00..=0x7F => 2 + usize::from(length),
        0x81 => 3 + usize::from(header[2]),
        0x82 => 4 + usize::from(u16::from_be_bytes([header[2], header[3]])),
        _ => return Err(invalid("the certificate is larger than allowed")),
    };
    if total > CERTIFICATE_BYTES_MAX {
        return Err(invalid("the certificate is larger than allowed"));
    }
    if total < CERTIFICATE_HEADER_BYTES {
        return Err(invalid("the file does not hold a DER certificate"));
    }
    Ok(total)
}

fn is_blocked(status: StatusWord) -> bool {
    status == StatusWord::AUTHENTICATION_METHOD_BLOCKED
        || status == StatusWord::REFERENCE_DATA_NOT_USABLE
}

/// The error for a non-success status word of a command other than VERIFY.
fn status_error(command: &'static str, status: StatusWord) -> CardError {
    if status == StatusWord::SECURITY_STATUS_NOT_SATISFIED {
        CardError::PinNotVerified
    } else if is_blocked(status) {
        CardError::PinBlocked
    } else {
        CardError::UnexpectedStatus { command, status }
    }
}

/// Sends `command` and parses the response, collecting data announced by `61 xx`
/// with GET RESPONSE (cards on T=0 answer so).
fn exchange<T: Transport + ?Sized>(
    transport: &mut T,
    command: &[u8],
) -> Result<Response, CardError> {
    let mut response = parse(transport.transmit(command)?)?;
    let mut rounds = 0;
    while let Some(available) = response.status.bytes_available() {
        rounds += 1;
        if rounds > GET_RESPONSE_ROUNDS_MAX {
            return Err(CardError::InvalidResponse {
                command: "GET RESPONSE",
                reason: "the card keeps announcing more data",
            });
        }
        let next = parse(transport.transmit(&apdu::get_response(available))?)?;
        response.data.extend_from_slice(&next.data);
        response.status = next.status;
    }
    Ok(response)
}

fn parse(raw: Vec<u8>) -> Result<Response, CardError> {
    Response::parse(&raw).ok_or(CardError::InvalidResponse {
        command: "APDU",
        reason: "the response has no status word",
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A transport that checks every command against a script of exact bytes and
    /// answers with the scripted response.
    pub(crate) struct ScriptedTransport {
        script: VecDeque<(Vec<u8>, Vec<u8>)>,
    }

    impl ScriptedTransport {
        pub(crate) fn new(script: Vec<(Vec<u8>, Vec<u8>)>) -> ScriptedTransport {
            ScriptedTransport {
                script: script.into(),
            }
        }

        pub(crate) fn assert_done(&self) {
            assert!(
                self.script.is_empty(),
                "commands not sent: {:02X?}",
                self.script
            );
        }
    }

    impl Transport for ScriptedTransport {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            let (expected, response) = self.script.pop_front().expect("unexpected extra command");
            assert_eq!(apdu, expected, "command APDU");
            Ok(response)
        }
    }

    const OK: [u8; 2] = [0x90, 0x00];
    const SELECT_AP: [u8; 15] = [
        0x00, 0xA4, 0x04, 0x0C, 0x0A, 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01,
    ];

    fn with_sw(data: &[u8], sw: [u8; 2]) -> Vec<u8> {
        [data, &sw].concat()
    }

    fn opened(script: Vec<(Vec<u8>, Vec<u8>)>) -> JpkiCard<ScriptedTransport> {
        let mut full = vec![(SELECT_AP.to_vec(), OK.to_vec())];
        full.extend(script);
        JpkiCard::open(ScriptedTransport::new(full)).unwrap()
    }

    #[test]
    fn open_selects_the_jpki_application() {
        let card = opened(vec![]);
        card.into_transport().assert_done();
    }

    #[test]
    fn open_on_a_card_without_jpki_is_not_jpki() {
        let transport = ScriptedTransport::new(vec![(SELECT_AP.to_vec(), vec![0x6A, 0x82])]);
        assert_eq!(JpkiCard::open(transport).err(), Some(CardError::NotJpki));
        let transport = ScriptedTransport::new(vec![(SELECT_AP.to_vec(), vec![0x6F, 0x00])]);
        assert_eq!(
            JpkiCard::open(transport).err(),
            Some(CardError::UnexpectedStatus {
                command: "SELECT (JPKI AP)",
                status: StatusWord(0x6F00)
            })
        );
    }

    #[test]
    fn read_auth_certificate_reads_the_header_then_chunks() {
        // A 600-byte SEQUENCE: header 30 82 02 54 (596 content bytes).
        let certificate: Vec<u8> = [0x30, 0x82, 0x02, 0x54]
            .into_iter()
            .chain((0..596).map(|i| i as u8))
            .collect();
        let mut card = opened(vec![
            (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x0A], OK.to_vec()),
            (
                vec![0x00, 0xB0, 0x00, 0x00, 0x04],
                with_sw(&certificate[..4], OK),
            ),
            (
                vec![0x00, 0xB0, 0x00, 0x04, 0xFF],
                with_sw(&certificate[4..259], OK),
            ),
            (
                vec![0x00, 0xB0, 0x01, 0x03, 0xFF],
                with_sw(&certificate[259..514], OK),
            ),
            (
                vec![0x00, 0xB0, 0x02, 0x02, 0x56],
                with_sw(&certificate[514..], OK),
            ),
        ]);
        assert_eq!(card.read_auth_certificate().unwrap(), certificate);
        card.into_transport().assert_done();
    }

    #[test]
    fn read_auth_ca_certificate_selects_ef_000b() {
        let certificate = [0x30, 0x03, 0x02, 0x01, 0x05];
        let mut card = opened(vec![
            (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x0B], OK.to_vec()),
            (
                vec![0x00, 0xB0, 0x00, 0x00, 0x04],
                with_sw(&certificate[..4], OK),
            ),
            (
                vec![0x00, 0xB0, 0x00, 0x04, 0x01],
                with_sw(&certificate[4..], OK),
            ),
        ]);
        assert_eq!(card.read_auth_ca_certificate().unwrap(), certificate);
        card.into_transport().assert_done();
    }

    #[test]
    fn oversized_or_non_der_certificate_is_refused() {
        for header in [
            [0x30, 0x82, 0x20, 0x01],
            [0x04, 0x82, 0x01, 0x00],
            [0x30, 0x84, 0x00, 0x00],
        ] {
            let mut card = opened(vec![
                (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x0A], OK.to_vec()),
                (vec![0x00, 0xB0, 0x00, 0x00, 0x04], with_sw(&header, OK)),
            ]);
            assert!(matches!(
                card.read_auth_certificate(),
                Err(CardError::InvalidResponse {
                    command: "READ BINARY",
                    ..
                })
            ));
        }
    }

    #[test]
    fn pin_tries_left_asks_verify_without_data() {
        let select_pin = vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x18];
        let verify_empty = vec![0x00, 0x20, 0x00, 0x80];
        let mut card = opened(vec![
            (select_pin.clone(), OK.to_vec()),
            (verify_empty.clone(), vec![0x63, 0xC2]),
            (select_pin.clone(), OK.to_vec()),
            (verify_empty.clone(), vec![0x69, 0x83]),
            (select_pin, OK.to_vec()),
            (verify_empty, vec![0x6F, 0x00]),
        ]);
        assert_eq!(card.pin_tries_left(), Ok(2));
        assert_eq!(card.pin_tries_left(), Ok(0));
        assert!(matches!(
            card.pin_tries_left(),
            Err(CardError::UnexpectedStatus { .. })
        ));
        card.into_transport().assert_done();
    }

    #[test]
    fn verify_pin_maps_status_words() {
        let select_pin = vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x18];
        let verify_1234 = vec![0x00, 0x20, 0x00, 0x80, 0x04, b'1', b'2', b'3', b'4'];
        let mut card = opened(vec![
            (select_pin.clone(), OK.to_vec()),
            (verify_1234.clone(), vec![0x63, 0xC1]),
            (select_pin.clone(), OK.to_vec()),
            (verify_1234.clone(), vec![0x63, 0xC0]),
            (select_pin.clone(), OK.to_vec()),
            (verify_1234.clone(), vec![0x69, 0x83]),
            (select_pin, OK.to_vec()),
            (verify_1234, OK.to_vec()),
        ]);
        let pin = Pin::new("1234").unwrap();
        assert_eq!(
            card.verify_pin(&pin),
            Err(CardError::WrongPin { tries_left: 1 })
        );
        assert_eq!(card.verify_pin(&pin), Err(CardError::PinBlocked));
        assert_eq!(card.verify_pin(&pin), Err(CardError::PinBlocked));
        assert_eq!(card.verify_pin(&pin), Ok(()));
        card.into_transport().assert_done();
    }

    #[test]
    fn sign_challenge_selects_the_key_and_sends_the_digest_info() {
        let challenge = [0x5A; 32];
        let digest_info = sha256_digest_info(&challenge);
        let mut compute = vec![0x80, 0x2A, 0x00, 0x80, 0x33];
        compute.extend_from_slice(&digest_info);
        compute.push(0x00);
        let signature = vec![0xC3; SIGNATURE_BYTES];
        let mut card = opened(vec![
            (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x17], OK.to_vec()),
            (compute, with_sw(&signature, OK)),
        ]);
        assert_eq!(card.sign_challenge(&challenge).unwrap(), signature);
        card.into_transport().assert_done();
    }

    #[test]
    fn sign_challenge_collects_get_response_pieces() {
        let challenge = [0x01; 16];
        let mut compute = vec![0x80, 0x2A, 0x00, 0x80, 0x33];
        compute.extend_from_slice(&sha256_digest_info(&challenge));
        compute.push(0x00);
        let signature: Vec<u8> = (0..SIGNATURE_BYTES).map(|i| i as u8).collect();
        let mut card = opened(vec![
            (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x17], OK.to_vec()),
            (compute, vec![0x61, 0x00]),
            (vec![0x00, 0xC0, 0x00, 0x00, 0x00], with_sw(&signature, OK)),
        ]);
        assert_eq!(card.sign_challenge(&challenge).unwrap(), signature);
        card.into_transport().assert_done();
    }

    #[test]
    fn sign_challenge_without_verified_pin_is_refused() {
        let challenge = [0x02; 16];
        let mut compute = vec![0x80, 0x2A, 0x00, 0x80, 0x33];
        compute.extend_from_slice(&sha256_digest_info(&challenge));
        compute.push(0x00);
        let mut card = opened(vec![
            (vec![0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x17], OK.to_vec()),
            (compute, vec![0x69, 0x82]),
        ]);
        assert_eq!(
            card.sign_challenge(&challenge),
            Err(CardError::PinNotVerified)
        );
        assert_eq!(card.sign_challenge(&[]), Err(CardError::InvalidChallenge));
        card.into_transport().assert_done();
    }

    #[test]
    fn digest_info_is_the_rfc_8017_sha256_encoding() {
        let digest_info = sha256_digest_info(b"abc");
        assert_eq!(digest_info.len(), 51);
        assert_eq!(digest_info[..19], SHA256_DIGEST_INFO_PREFIX);
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(digest_info[19..23], [0xBA, 0x78, 0x16, 0xBF]);
    }
}
