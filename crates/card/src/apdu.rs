//! ISO 7816-4 command and response APDUs, limited to the short forms JPKI needs.
//!
//! Builders return the exact bytes sent to the card; [`Response::parse`] splits a
//! response into data and status word. Nothing here does IO.

use std::fmt;

/// The application identifier (DF name) of the JPKI application (公的個人認証 AP).
pub const JPKI_AID: [u8; 10] = [0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x01];

/// Largest data field (Lc) of a short command APDU.
pub const SHORT_DATA_BYTES_MAX: usize = 255;

/// Largest number of bytes requested by one READ BINARY (Le). 255 rather than 256
/// (Le = 00) keeps every response, with its status word, within the 257 bytes that
/// short-APDU reader drivers are guaranteed to carry.
pub const READ_BINARY_CHUNK_BYTES: u8 = 0xFF;

/// Largest offset READ BINARY can address with P1-P2 (bit 8 of P1 must be 0).
pub const READ_BINARY_OFFSET_MAX: usize = 0x7FFF;

/// A two-byte status word (SW1-SW2) ending every response APDU.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// `90 00`: normal processing.
    pub const SUCCESS: StatusWord = StatusWord(0x9000);
    /// `69 82`: security status not satisfied (the PIN was not verified).
    pub const SECURITY_STATUS_NOT_SATISFIED: StatusWord = StatusWord(0x6982);
    /// `69 83`: authentication method blocked (the PIN is blocked).
    pub const AUTHENTICATION_METHOD_BLOCKED: StatusWord = StatusWord(0x6983);
    /// `69 84`: reference data not usable (some cards report a blocked PIN so).
    pub const REFERENCE_DATA_NOT_USABLE: StatusWord = StatusWord(0x6984);
    /// `6A 82`: file or application not found.
    pub const FILE_NOT_FOUND: StatusWord = StatusWord(0x6A82);
    /// `6A 86`: incorrect P1-P2.
    pub const INCORRECT_P1_P2: StatusWord = StatusWord(0x6A86);
    /// `6D 00`: instruction not supported.
    pub const INSTRUCTION_NOT_SUPPORTED: StatusWord = StatusWord(0x6D00);
    /// `6E 00`: class not supported.
    pub const CLASS_NOT_SUPPORTED: StatusWord = StatusWord(0x6E00);
    /// `67 00`: wrong length.
    pub const WRONG_LENGTH: StatusWord = StatusWord(0x6700);

    /// Builds a status word from SW1 and SW2.
    pub fn new(sw1: u8, sw2: u8) -> StatusWord {
        StatusWord(u16::from_be_bytes([sw1, sw2]))
    }

    /// The first byte.
    pub fn sw1(self) -> u8 {
        self.0.to_be_bytes()[0]
    }

    /// The second byte.
    pub fn sw2(self) -> u8 {
        self.0.to_be_bytes()[1]
    }

    /// `90 00`.
    pub fn is_success(self) -> bool {
        self == StatusWord::SUCCESS
    }

    /// For `63 Cx` (verification failed, x tries left), the number x.
    pub fn verification_tries_left(self) -> Option<u8> {
        (self.sw1() == 0x63 && self.sw2() & 0xF0 == 0xC0).then_some(self.sw2() & 0x0F)
    }

    /// For `61 xx` (xx more bytes available with GET RESPONSE), the number xx
    /// (00 meaning 256).
    pub fn bytes_available(self) -> Option<usize> {
        (self.sw1() == 0x61).then(|| length_from_le(self.sw2()))
    }

    /// For `6C xx` (wrong Le, xx is right), the number xx (00 meaning 256).
    pub fn correct_le(self) -> Option<usize> {
        (self.sw1() == 0x6C).then(|| length_from_le(self.sw2()))
    }
}

fn length_from_le(le: u8) -> usize {
    if le == 0 { 256 } else { usize::from(le) }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({self})")
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02X} {:02X}", self.sw1(), self.sw2())
    }
}

/// A response APDU split into its data field and status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The data field, possibly empty.
    pub data: Vec<u8>,
    /// The status word.
    pub status: StatusWord,
}

impl Response {
    /// Splits raw response bytes; `None` when there are fewer than the two status bytes.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let split = raw.len().checked_sub(2)?;
        let (data, sw) = raw.split_at(split);
        Some(Response {
            data: data.to_vec(),
            status: StatusWord::new(sw[0], sw[1]),
        })
    }
}

/// SELECT by DF name, no response data requested (`00 A4 04 0C Lc <name>`).
pub fn select_df_name(name: &[u8]) -> Vec<u8> {
    case3(0x00, 0xA4, 0x04, 0x0C, name)
}

/// SELECT an elementary file by its identifier, no response data
/// (`00 A4 02 0C 02 <id>`).
pub fn select_ef(file_id: u16) -> Vec<u8> {
    case3(0x00, 0xA4, 0x02, 0x0C, &file_id.to_be_bytes())
}

/// READ BINARY of `length` bytes (1..=256) from `offset` of the selected EF
/// (`00 B0 P1 P2 Le`).
///
/// # Panics
/// When `offset` exceeds [`READ_BINARY_OFFSET_MAX`] or `length` is not in 1..=256:
/// callers compute both from bounded values, so either is a bug.
pub fn read_binary(offset: usize, length: usize) -> Vec<u8> {
    assert!(
        offset <= READ_BINARY_OFFSET_MAX,
        "READ BINARY offset {offset} out of range"
    );
    assert!(
        (1..=256).contains(&length),
        "READ BINARY length {length} out of range"
    );
    let [p1, p2] = u16::try_from(offset)
        .expect("offset checked above")
        .to_be_bytes();
    // Le = 00 encodes 256, so truncating 256 to a byte is the encoding itself.
    vec![0x00, 0xB0, p1, p2, (length % 256) as u8]
}

/// VERIFY against the PIN of the selected PIN EF (`00 20 00 80 Lc <pin>`).
/// Without a PIN the command asks for the number of tries left (`00 20 00 80`).
pub fn verify(pin: Option<&[u8]>) -> Vec<u8> {
    match pin {
        Some(pin) => case3(0x00, 0x20, 0x00, 0x80, pin),
        None => vec![0x00, 0x20, 0x00, 0x80],
    }
}

/// JPKI COMPUTE DIGITAL SIGNATURE with the selected key EF
/// (`80 2A 00 80 Lc <DigestInfo> 00`).
pub fn compute_digital_signature(digest_info: &[u8]) -> Vec<u8> {
    let mut apdu = case3(0x80, 0x2A, 0x00, 0x80, digest_info);
    apdu.push(0x00);
    apdu
}

/// GET RESPONSE for `length` (1..=256) bytes (`00 C0 00 00 Le`), used after `61 xx`.
pub fn get_response(length: usize) -> Vec<u8> {
    assert!(
        (1..=256).contains(&length),
        "GET RESPONSE length {length} out of range"
    );
    vec![0x00, 0xC0, 0x00, 0x00, (length % 256) as u8]
}

fn case3(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    assert!(
        !data.is_empty() && data.len() <= SHORT_DATA_BYTES_MAX,
        "short APDU data field of {} bytes",
        data.len()
    );
    let mut apdu = Vec::with_capacity(5 + data.len() + 1);
    apdu.extend_from_slice(&[cla, ins, p1, p2, data.len() as u8]);
    apdu.extend_from_slice(data);
    apdu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_jpki_application_by_df_name() {
        assert_eq!(
            select_df_name(&JPKI_AID),
            [
                0x00, 0xA4, 0x04, 0x0C, 0x0A, 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00,
                0x01
            ]
        );
    }

    #[test]
    fn select_elementary_file_by_identifier() {
        assert_eq!(
            select_ef(0x000A),
            [0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x0A]
        );
        assert_eq!(
            select_ef(0x0018),
            [0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x18]
        );
    }

    #[test]
    fn read_binary_encodes_offset_and_length() {
        assert_eq!(read_binary(0, 4), [0x00, 0xB0, 0x00, 0x00, 0x04]);
        assert_eq!(read_binary(0x0103, 255), [0x00, 0xB0, 0x01, 0x03, 0xFF]);
        assert_eq!(read_binary(0x7FFF, 256), [0x00, 0xB0, 0x7F, 0xFF, 0x00]);
    }

    #[test]
    fn verify_with_and_without_pin() {
        assert_eq!(
            verify(Some(b"1234")),
            [0x00, 0x20, 0x00, 0x80, 0x04, 0x31, 0x32, 0x33, 0x34]
        );
        assert_eq!(verify(None), [0x00, 0x20, 0x00, 0x80]);
    }

    #[test]
    fn compute_digital_signature_is_case_4_with_le_zero() {
        let apdu = compute_digital_signature(&[0xAA; 51]);
        assert_eq!(apdu[..5], [0x80, 0x2A, 0x00, 0x80, 0x33]);
        assert_eq!(apdu.len(), 5 + 51 + 1);
        assert_eq!(apdu[apdu.len() - 1], 0x00);
    }

    #[test]
    fn response_parse_splits_status_word() {
        let response = Response::parse(&[0x01, 0x02, 0x90, 0x00]).unwrap();
        assert_eq!(response.data, [0x01, 0x02]);
        assert!(response.status.is_success());
        assert_eq!(
            Response::parse(&[0x6A, 0x82]).unwrap().status,
            StatusWord::FILE_NOT_FOUND
        );
        assert_eq!(Response::parse(&[0x90]), None);
        assert_eq!(Response::parse(&[]), None);
    }

    #[test]
    fn status_word_decodes_tries_left_and_lengths() {
        assert_eq!(StatusWord(0x63C2).verification_tries_left(), Some(2));
        assert_eq!(StatusWord(0x63C0).verification_tries_left(), Some(0));
        assert_eq!(StatusWord(0x6300).verification_tries_left(), None);
        assert_eq!(StatusWord(0x6983).verification_tries_left(), None);
        assert_eq!(StatusWord(0x6110).bytes_available(), Some(16));
        assert_eq!(StatusWord(0x6100).bytes_available(), Some(256));
        assert_eq!(StatusWord(0x6C20).correct_le(), Some(32));
        assert_eq!(StatusWord(0x6A82).to_string(), "6A 82");
    }
}
