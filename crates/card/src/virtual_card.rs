//! A virtual JPKI card for tests and demos: the subset of the JPKI application this
//! crate uses, with an RSA-2048 key in memory and a PIN counter.
//!
//! [`VirtualJpkiCard`] answers APDUs in memory (it is a [`Transport`]).
//! [`VpcdConnection`] plugs it into pcscd's vpcd driver over TCP, so that PC/SC sees
//! a real reader holding a card: the vpcd protocol frames every message with a
//! 2-byte big-endian length; a 1-byte message is a control (0 power off, 1 power on,
//! 2 reset, 4 get ATR, answered with the ATR); a longer one is a command APDU,
//! answered with the response APDU.
//!
//! Like the real card, this one has no My Number application at all.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rsa::{Pkcs1v15Sign, RsaPrivateKey};

use crate::apdu::{JPKI_AID, StatusWord};
use crate::jpki::{
    AUTH_PIN_TRIES_MAX, EF_AUTH_CA_CERTIFICATE, EF_AUTH_CERTIFICATE, EF_AUTH_KEY, EF_AUTH_PIN,
};
use crate::pin::PIN_DIGITS;
use crate::{CardError, Transport};

/// The ATR of a My Number card (as listed in OpenSC's `card-jpki.c`).
pub const JPKI_ATR: [u8; 9] = [0x3B, 0xE0, 0x00, 0xFF, 0x81, 0x31, 0xFE, 0x45, 0x14];
/// How long connecting to vpcd may take before we give up.
pub const VPCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// vpcd control message: power off.
const VPCD_POWER_OFF: u8 = 0;
/// vpcd control message: power on.
const VPCD_POWER_ON: u8 = 1;
/// vpcd control message: reset.
const VPCD_RESET: u8 = 2;
/// vpcd control message: send the ATR.
const VPCD_GET_ATR: u8 = 4;
/// Largest RSA input the card pads: k - 11 bytes for a 256-byte modulus (PKCS#1 v1.5).
const SIGNATURE_INPUT_BYTES_MAX: usize = 256 - 11;

/// The signature PIN's file (署名用パスワード). kiban never uses the
/// signature application, but independent clients do look at it: OpenSC's
/// JPKI driver asks this PIN's retry counter when it binds the card, and
/// gives up on a card where the file cannot be selected. The virtual card
/// has no signature key or certificate: it only reports the counter, and
/// refuses to verify the PIN.
const EF_SIGN_PIN: u16 = 0x001B;

/// Tries of the signature PIN on a real card (OpenSC's
/// `JPKI_SIGN_PIN_MAX_TRIES`), which the virtual card reports as untouched.
const SIGN_PIN_TRIES_MAX: u8 = 5;

/// A JPKI card in memory.
pub struct VirtualJpkiCard {
    key: RsaPrivateKey,
    auth_certificate: Vec<u8>,
    auth_ca_certificate: Vec<u8>,
    pin: [u8; PIN_DIGITS],
    pin_tries_left: u8,
    has_jpki: bool,
    jpki_selected: bool,
    selected_file: Option<u16>,
    pin_verified: bool,
}

impl VirtualJpkiCard {
    /// A card holding `key`, its user-authentication certificate and the issuing CA's
    /// certificate (both DER), protected by `pin` (4 ASCII digits).
    ///
    /// # Panics
    /// When `pin` is not 4 ASCII digits: a test set-up bug.
    pub fn new(
        key: RsaPrivateKey,
        auth_certificate: Vec<u8>,
        auth_ca_certificate: Vec<u8>,
        pin: &str,
    ) -> Self {
        assert!(
            crate::Pin::new(pin).is_ok(),
            "virtual card PIN must be 4 ASCII digits"
        );
        let mut pin_digits = [0u8; PIN_DIGITS];
        pin_digits.copy_from_slice(pin.as_bytes());
        VirtualJpkiCard {
            key,
            auth_certificate,
            auth_ca_certificate,
            pin: pin_digits,
            pin_tries_left: AUTH_PIN_TRIES_MAX,
            has_jpki: true,
            jpki_selected: false,
            selected_file: None,
            pin_verified: false,
        }
    }

    /// The same card without the JPKI application: some other smart card.
    pub fn without_jpki(mut self) -> Self {
        self.has_jpki = false;
        self
    }

    /// Wrong PINs the card still accepts.
    pub fn pin_tries_left(&self) -> u8 {
        self.pin_tries_left
    }

    /// Power cycle: forgets the selection and the verified PIN, keeps the counter.
    pub fn reset(&mut self) {
        self.jpki_selected = false;
        self.selected_file = None;
        self.pin_verified = false;
    }

    /// Answers one command APDU with a response APDU (data and status word).
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some(command) = Command::parse(apdu) else {
            return status(StatusWord::WRONG_LENGTH);
        };
        match (command.cla, command.ins) {
            (0x00, 0xA4) => self.select(&command),
            (0x00, 0xB0) => self.read_binary(&command),
            (0x00, 0x20) => self.verify(&command),
            (0x80, 0x2A) => self.compute_digital_signature(&command),
            (0x00 | 0x80, _) => status(StatusWord::INSTRUCTION_NOT_SUPPORTED),
            _ => status(StatusWord::CLASS_NOT_SUPPORTED),
        }
    }

    /// SELECT by DF name (P1 04) or by file id (P1 02). P2 0C asks for no
    /// response data; P2 00 for the file control information, answered
    /// with the DF name (`6F`/`84`) or the file's size (`62`/`80`).
    fn select(&mut self, command: &Command<'_>) -> Vec<u8> {
        let with_fci = match command.p2 {
            0x0C => false,
            0x00 => true,
            _ => return status(StatusWord::INCORRECT_P1_P2),
        };
        match command.p1 {
            0x04 if self.has_jpki && command.data == JPKI_AID => {
                self.jpki_selected = true;
                self.selected_file = None;
                self.pin_verified = false;
                if with_fci {
                    let name = tlv(0x84, &JPKI_AID);
                    [tlv(0x6F, &name).as_slice(), &[0x90, 0x00]].concat()
                } else {
                    status(StatusWord::SUCCESS)
                }
            }
            0x02 if self.jpki_selected && command.data.len() == 2 => {
                let file = u16::from_be_bytes([command.data[0], command.data[1]]);
                let size = match file {
                    EF_AUTH_CERTIFICATE => self.auth_certificate.len(),
                    EF_AUTH_CA_CERTIFICATE => self.auth_ca_certificate.len(),
                    EF_AUTH_KEY | EF_AUTH_PIN | EF_SIGN_PIN => 0,
                    _ => return status(StatusWord::FILE_NOT_FOUND),
                };
                self.selected_file = Some(file);
                if with_fci {
                    let size = u16::try_from(size).unwrap_or(u16::MAX).to_be_bytes();
                    let fcp = tlv(0x62, &tlv(0x80, &size));
                    [fcp.as_slice(), &[0x90, 0x00]].concat()
                } else {
                    status(StatusWord::SUCCESS)
                }
            }
            0x04 | 0x02 => status(StatusWord::FILE_NOT_FOUND),
            _ => status(StatusWord::INCORRECT_P1_P2),
        }
    }

    fn read_binary(&self, command: &Command<'_>) -> Vec<u8> {
        let contents = match self.selected_file {
            Some(EF_AUTH_CERTIFICATE) => &self.auth_certificate,
            Some(EF_AUTH_CA_CERTIFICATE) => &self.auth_ca_certificate,
            // No EF selected, or one that cannot be read (key, PIN).
            _ => return status(StatusWord(0x6986)),
        };
        let offset = usize::from(u16::from_be_bytes([command.p1, command.p2]));
        let Some(le) = command.le else {
            return status(StatusWord::WRONG_LENGTH);
        };
        if offset >= contents.len() {
            return status(StatusWord(0x6B00));
        }
        let end = (offset + le).min(contents.len());
        [&contents[offset..end], &[0x90, 0x00][..]].concat()
    }

    /// VERIFY. Without data it asks the retry counter (`63 Cx`, also for a
    /// blocked PIN: `63 C0`, as ISO 7816-4 and OpenSC expect) or says the
    /// PIN is verified (`90 00`); with data it tries the PIN.
    fn verify(&mut self, command: &Command<'_>) -> Vec<u8> {
        if self.selected_file == Some(EF_SIGN_PIN) {
            return if command.data.is_empty() {
                status(StatusWord::new(0x63, 0xC0 | SIGN_PIN_TRIES_MAX))
            } else {
                status(StatusWord::REFERENCE_DATA_NOT_USABLE)
            };
        }
        if self.selected_file != Some(EF_AUTH_PIN) {
            return status(StatusWord(0x6986));
        }
        if self.pin_tries_left == 0 {
            return if command.data.is_empty() {
                status(StatusWord::new(0x63, 0xC0))
            } else {
                status(StatusWord::AUTHENTICATION_METHOD_BLOCKED)
            };
        }
        if command.data.is_empty() {
            return if self.pin_verified {
                status(StatusWord::SUCCESS)
            } else {
                status(StatusWord::new(0x63, 0xC0 | self.pin_tries_left))
            };
        }
        if command.data == self.pin {
            self.pin_tries_left = AUTH_PIN_TRIES_MAX;
            self.pin_verified = true;
            return status(StatusWord::SUCCESS);
        }
        self.pin_verified = false;
        self.pin_tries_left -= 1;
        if self.pin_tries_left == 0 {
            status(StatusWord::AUTHENTICATION_METHOD_BLOCKED)
        } else {
            status(StatusWord::new(0x63, 0xC0 | self.pin_tries_left))
        }
    }

    fn compute_digital_signature(&self, command: &Command<'_>) -> Vec<u8> {
        if (command.p1, command.p2) != (0x00, 0x80) {
            return status(StatusWord::INCORRECT_P1_P2);
        }
        if self.selected_file != Some(EF_AUTH_KEY) {
            return status(StatusWord(0x6986));
        }
        if !self.pin_verified {
            return status(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        if command.data.is_empty() || command.data.len() > SIGNATURE_INPUT_BYTES_MAX {
            return status(StatusWord::WRONG_LENGTH);
        }
        // The card pads whatever DigestInfo it is given (PKCS#1 v1.5 type 1) and
        // applies the private key; it does not hash.
        match self.key.sign(Pkcs1v15Sign::new_unprefixed(), command.data) {
            Ok(signature) => [signature.as_slice(), &[0x90, 0x00]].concat(),
            Err(_) => status(StatusWord(0x6F00)),
        }
    }
}

impl Transport for VirtualJpkiCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        Ok(self.process(apdu))
    }
}

fn status(status: StatusWord) -> Vec<u8> {
    vec![status.sw1(), status.sw2()]
}

/// A BER-TLV with a one-byte tag and a short length (values under 128
/// bytes: file control information).
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let length = u8::try_from(value.len()).expect("short TLV");
    assert!(length < 0x80, "short TLV");
    [&[tag, length][..], value].concat()
}

/// A short command APDU split into its fields.
struct Command<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    le: Option<usize>,
}

impl<'a> Command<'a> {
    fn parse(apdu: &'a [u8]) -> Option<Command<'a>> {
        let (header, body) = apdu.split_at_checked(4)?;
        let [cla, ins, p1, p2] = header.try_into().ok()?;
        let decode_le = |le: u8| if le == 0 { 256 } else { usize::from(le) };
        let (data, le) = match body {
            [] => (&body[..0], None),
            [le] => (&body[..0], Some(decode_le(*le))),
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc)? {
                    0 => (&rest[..lc], None),
                    1 => (&rest[..lc], Some(decode_le(rest[lc]))),
                    _ => return None,
                }
            }
        };
        Some(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }
}

/// A virtual card inserted into vpcd's reader: a thread serving the vpcd protocol
/// on a TCP connection to `127.0.0.1:<port>`.
pub struct VpcdConnection {
    stream: TcpStream,
    /// A std (blocking) mutex: the serving thread holds it only while the card
    /// processes one message, never while waiting on the socket.
    card: Arc<Mutex<VirtualJpkiCard>>,
    remove_during_signature: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl VpcdConnection {
    /// Connects to vpcd on `port` (inserting the card into that reader slot) and
    /// serves APDUs on a thread until removed.
    pub fn insert(card: VirtualJpkiCard, port: u16) -> io::Result<VpcdConnection> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&address, VPCD_CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let card = Arc::new(Mutex::new(card));
        let remove_during_signature = Arc::new(AtomicBool::new(false));
        let thread = {
            let stream = stream.try_clone()?;
            let card = Arc::clone(&card);
            let remove = Arc::clone(&remove_during_signature);
            std::thread::Builder::new()
                .name(format!("virtual-card-{port}"))
                .spawn(move || serve_vpcd(stream, &card, &remove))?
        };
        Ok(VpcdConnection {
            stream,
            card,
            remove_during_signature,
            thread: Some(thread),
        })
    }

    /// Makes the card vanish when the next COMPUTE DIGITAL SIGNATURE arrives: the
    /// connection closes instead of answering, as when a card is pulled out.
    pub fn remove_during_next_signature(&self) {
        self.remove_during_signature.store(true, Ordering::SeqCst);
    }

    /// Wrong PINs the card still accepts.
    pub fn pin_tries_left(&self) -> u8 {
        self.card
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pin_tries_left()
    }

    /// Takes the card out of the reader and returns it (with its PIN counter), e.g.
    /// to insert it again.
    pub fn remove(mut self) -> io::Result<VirtualJpkiCard> {
        self.disconnect()?;
        let card = Arc::clone(&self.card);
        drop(self);
        let card = Arc::try_unwrap(card)
            .ok()
            .expect("the serving thread has ended");
        let mut card = card.into_inner().unwrap_or_else(PoisonError::into_inner);
        card.reset();
        Ok(card)
    }

    fn disconnect(&mut self) -> io::Result<()> {
        // The socket may already be closed by a removal during signing.
        let _ = self.stream.shutdown(Shutdown::Both);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("virtual card thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for VpcdConnection {
    fn drop(&mut self) {
        let _ = self.disconnect();
    }
}

/// Serves the vpcd protocol until the peer or [`VpcdConnection::remove`] closes the
/// connection.
fn serve_vpcd(
    mut stream: TcpStream,
    card: &Mutex<VirtualJpkiCard>,
    remove_during_signature: &AtomicBool,
) -> io::Result<()> {
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let mut length = [0u8; 2];
        match stream.read_exact(&mut length) {
            Ok(()) => {}
            // Closed by vpcd (pcscd stopped) or by remove().
            Err(error) if is_closed(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
        let message = &mut buffer[..usize::from(u16::from_be_bytes(length))];
        match stream.read_exact(message) {
            Ok(()) => {}
            Err(error) if is_closed(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
        let mut card = card.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = match *message {
            [VPCD_POWER_OFF | VPCD_POWER_ON | VPCD_RESET] => {
                card.reset();
                continue;
            }
            [VPCD_GET_ATR] => JPKI_ATR.to_vec(),
            // Unknown controls have no answer.
            [_] | [] => continue,
            [_, 0x2A, ..] if remove_during_signature.load(Ordering::SeqCst) => {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => card.process(message),
        };
        drop(card);
        let reply_length = u16::try_from(reply.len()).expect("responses are short");
        stream.write_all(&[&reply_length.to_be_bytes()[..], &reply].concat())?;
    }
}

fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::test_pki::shared_test_cards;

    /// The vpcd side of the connection: what pcscd's driver sends and reads.
    struct FakeVpcd(TcpStream);

    impl FakeVpcd {
        fn send(&mut self, message: &[u8]) {
            let length = u16::try_from(message.len()).unwrap().to_be_bytes();
            self.0.write_all(&[&length[..], message].concat()).unwrap();
        }

        /// The next message, or `None` when the card closed the connection.
        fn receive(&mut self) -> Option<Vec<u8>> {
            let mut length = [0u8; 2];
            self.0.read_exact(&mut length).ok()?;
            let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
            self.0.read_exact(&mut message).ok()?;
            Some(message)
        }
    }

    fn insert_into_fake_vpcd() -> (VpcdConnection, FakeVpcd) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let inserted = VpcdConnection::insert(shared_test_cards().card("1234"), port).unwrap();
        let (stream, _) = listener.accept().unwrap();
        (inserted, FakeVpcd(stream))
    }

    #[test]
    fn vpcd_controls_and_apdus_are_framed_with_a_length() {
        let (inserted, mut vpcd) = insert_into_fake_vpcd();
        vpcd.send(&[VPCD_GET_ATR]);
        assert_eq!(vpcd.receive().unwrap(), JPKI_ATR);
        // Power on has no answer: the next message answered is the SELECT.
        vpcd.send(&[VPCD_POWER_ON]);
        vpcd.send(&crate::apdu::select_df_name(&JPKI_AID));
        assert_eq!(vpcd.receive().unwrap(), [0x90, 0x00]);
        vpcd.send(&crate::apdu::select_ef(EF_AUTH_PIN));
        assert_eq!(vpcd.receive().unwrap(), [0x90, 0x00]);
        vpcd.send(&crate::apdu::verify(Some(b"0000")));
        assert_eq!(vpcd.receive().unwrap(), [0x63, 0xC2]);
        let card = inserted.remove().unwrap();
        assert_eq!(card.pin_tries_left(), 2);
        assert_eq!(vpcd.receive(), None, "removal closes the connection");
    }

    #[test]
    fn card_set_to_vanish_closes_the_connection_at_the_signature() {
        let (inserted, mut vpcd) = insert_into_fake_vpcd();
        inserted.remove_during_next_signature();
        vpcd.send(&crate::apdu::select_df_name(&JPKI_AID));
        assert_eq!(vpcd.receive().unwrap(), [0x90, 0x00]);
        vpcd.send(&crate::apdu::compute_digital_signature(&[0x30; 51]));
        assert_eq!(vpcd.receive(), None);
        assert!(inserted.remove().is_ok());
    }

    /// What OpenSC's JPKI driver sends when it binds the card (issue 21
    /// item 5): the signature PIN's file must be selectable and answer its
    /// retry counter, without anything being read from it.
    #[test]
    fn the_signature_pin_reports_its_counter_and_is_never_verified() {
        let mut card = shared_test_cards().card("1234");
        assert_eq!(
            card.process(&crate::apdu::select_df_name(&JPKI_AID)),
            [0x90, 0x00]
        );
        assert_eq!(
            card.process(&crate::apdu::select_ef(EF_SIGN_PIN)),
            [0x90, 0x00]
        );
        assert_eq!(card.process(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC5]);
        assert_eq!(
            card.process(&crate::apdu::verify(Some(b"123456"))),
            [0x69, 0x84]
        );
        assert_eq!(card.process(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC5]);
        assert_eq!(card.process(&[0x00, 0xB0, 0x00, 0x00, 0x04]), [0x69, 0x86]);
    }

    /// ISO 7816-4: VERIFY without data on a blocked PIN answers `63 C0`
    /// (OpenSC reads the counter from any `63 Cx`); a PIN sent to it still
    /// answers `69 83`.
    #[test]
    fn a_blocked_pin_reports_zero_tries_left() {
        let mut card = shared_test_cards().card("1234");
        card.process(&crate::apdu::select_df_name(&JPKI_AID));
        card.process(&crate::apdu::select_ef(EF_AUTH_PIN));
        for _ in 0..AUTH_PIN_TRIES_MAX {
            card.process(&crate::apdu::verify(Some(b"0000")));
        }
        assert_eq!(card.process(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC0]);
        assert_eq!(
            card.process(&crate::apdu::verify(Some(b"1234"))),
            [0x69, 0x83]
        );
    }

    /// SELECT with P2 `00` asks for the file control information: the DF
    /// name for the application, the size for a certificate file.
    #[test]
    fn select_with_fci_answers_the_name_or_the_size() {
        let mut card = shared_test_cards().card("1234");
        let select_aid = [
            &[0x00, 0xA4, 0x04, 0x00, JPKI_AID.len() as u8][..],
            &JPKI_AID,
        ]
        .concat();
        let answer = card.process(&select_aid);
        assert_eq!(answer[..2], [0x6F, JPKI_AID.len() as u8 + 2]);
        assert_eq!(answer[2..4], [0x84, JPKI_AID.len() as u8]);
        assert_eq!(answer[4..4 + JPKI_AID.len()], JPKI_AID);
        assert_eq!(answer[answer.len() - 2..], [0x90, 0x00]);
        let size = shared_test_cards().certificate.len() as u16;
        let answer = card.process(&[0x00, 0xA4, 0x02, 0x00, 0x02, 0x00, 0x0A]);
        assert_eq!(
            answer,
            [
                &[0x62, 0x04, 0x80, 0x02][..],
                &size.to_be_bytes(),
                &[0x90, 0x00]
            ]
            .concat()
        );
        assert_eq!(
            card.process(&[0x00, 0xA4, 0x02, 0x04, 0x02, 0x00, 0x0A]),
            [0x6A, 0x86]
        );
    }

    #[test]
    fn command_parse_handles_the_four_cases() {
        let case1 = Command::parse(&[0x00, 0x20, 0x00, 0x80]).unwrap();
        assert!(case1.data.is_empty() && case1.le.is_none());
        let case2 = Command::parse(&[0x00, 0xB0, 0x00, 0x04, 0x00]).unwrap();
        assert_eq!(case2.le, Some(256));
        let case3 = Command::parse(&[0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x0A]).unwrap();
        assert_eq!((case3.data, case3.le), (&[0x00, 0x0A][..], None));
        let case4 = Command::parse(&[0x80, 0x2A, 0x00, 0x80, 0x01, 0xAA, 0x00]).unwrap();
        assert_eq!((case4.data, case4.le), (&[0xAA][..], Some(256)));
        assert!(Command::parse(&[0x00, 0xA4, 0x02]).is_none());
        assert!(Command::parse(&[0x00, 0xA4, 0x02, 0x0C, 0x05, 0x00]).is_none());
    }
}
