//! The card code through real PC/SC: pcscd with the vpcd driver, and the virtual
//! JPKI card connected to vpcd over TCP, so every APDU takes the path it takes with
//! a physical reader.
//!
//! The scenarios share one virtual reader, so they run in sequence from one
//! test function, the only test of this binary (so that cargo-nextest can list
//! it without running it, and nothing else in the process reads the
//! environment while `PCSCLITE_CSOCK_NAME` is set when we start pcscd ourselves).
//!
//! Environment: `PCSCLITE_CSOCK_NAME` (pcscd's socket) and `KIBAN_TEST_VPCD_PORT`
//! (the port vpcd listens on) from `scripts/pcscd.sh start`. When neither is set,
//! the test starts its own pcscd with that script and stops it at the end; when
//! only one is set, it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiban_card::test_pki::{TEST_CARD_SERIAL, TestCards, test_now};
use kiban_card::virtual_card::{VirtualJpkiCard, VpcdConnection};
use kiban_card::{
    CardError, CardProbe, JpkiCard, PcscTransport, Pin, Revocation, VerifiedCardHolder,
    VerifyError, status_report, verify_challenge_signature,
};

/// The virtual card's PIN.
const PIN: &str = "2468";
/// A challenge as the server would issue it.
const CHALLENGE: &[u8] = b"kiban consent challenge: office 1371234567, nonce 7f3a";
/// How long to wait for pcscd to notice a card inserted or removed. pcscd polls vpcd
/// every 400 ms; the margin is for a loaded machine.
const READER_CHANGE_WAIT: Duration = Duration::from_secs(30);

/// One scenario: given the test PKI and the vpcd port, runs with an empty reader
/// and leaves it empty.
type Scenario = fn(&TestCards, u16);

#[test]
fn card_over_pcscd() {
    let pcscd = Pcscd::from_environment();
    let cards = TestCards::generate();
    let scenarios: [(&str, Scenario); 6] = [
        (
            "read, verify PIN, sign, verify signature",
            read_verify_sign_and_verify,
        ),
        (
            "wrong PIN counts down and blocks on the third try",
            wrong_pin_blocks_on_third_try,
        ),
        (
            "card removed during signature",
            card_removed_during_signature,
        ),
        (
            "certificate from an untrusted CA is refused",
            untrusted_card_is_refused,
        ),
        (
            "a card without JPKI is not a My Number card",
            card_without_jpki_is_refused,
        ),
        ("empty reader reports no card", empty_reader_reports_no_card),
    ];
    for (name, scenario) in scenarios {
        println!("card over pcscd: {name} ...");
        scenario(&cards, pcscd.port);
        println!("card over pcscd: {name} ok");
    }
    drop(pcscd);
}

fn read_verify_sign_and_verify(cards: &TestCards, port: u16) {
    let inserted = insert(cards.card(PIN), port);
    let report = status_report();
    assert!(report.ready(), "{report}");
    let ready = Some(CardProbe::Jpki {
        pin_tries_left: Ok(3),
    });
    assert!(
        report.readers.iter().any(|reader| reader.card == ready),
        "{report}"
    );
    let mut card = open(port);
    let ca_certificate = card
        .read_auth_ca_certificate()
        .expect("read CA certificate");
    assert_eq!(ca_certificate, cards.trusted_ca.certificate_der());
    drop(card);

    let (certificate, signature) = read_certificate_and_sign(port);
    assert_eq!(certificate, cards.certificate);
    let holder = verify_with_test_ca(cards, &certificate, &signature).expect("signature verifies");
    assert_eq!(holder.serial_number(), &TEST_CARD_SERIAL.to_be_bytes()[2..]);
    remove(inserted, port);
}

fn wrong_pin_blocks_on_third_try(cards: &TestCards, port: u16) {
    let inserted = insert(cards.card(PIN), port);
    let mut card = open(port);
    let wrong = Pin::new("1357").unwrap();
    assert_eq!(card.pin_tries_left(), Ok(3));
    assert_eq!(
        card.verify_pin(&wrong),
        Err(CardError::WrongPin { tries_left: 2 })
    );
    assert_eq!(
        card.verify_pin(&wrong),
        Err(CardError::WrongPin { tries_left: 1 })
    );
    assert_eq!(card.verify_pin(&wrong), Err(CardError::PinBlocked));
    assert_eq!(card.pin_tries_left(), Ok(0));
    // Blocked means blocked: the right PIN no longer helps.
    assert_eq!(
        card.verify_pin(&Pin::new(PIN).unwrap()),
        Err(CardError::PinBlocked)
    );
    drop(card);
    assert_eq!(inserted.pin_tries_left(), 0);
    remove(inserted, port);
}

fn card_removed_during_signature(cards: &TestCards, port: u16) {
    let inserted = insert(cards.card(PIN), port);
    let mut card = open(port);
    card.verify_pin(&Pin::new(PIN).unwrap())
        .expect("verify PIN");
    inserted.remove_during_next_signature();
    assert_eq!(card.sign_challenge(CHALLENGE), Err(CardError::CardRemoved));
    drop(card);
    remove(inserted, port);
}

fn untrusted_card_is_refused(cards: &TestCards, port: u16) {
    let inserted = insert(cards.untrusted_card(PIN), port);
    let (certificate, signature) = read_certificate_and_sign(port);
    assert_eq!(certificate, cards.untrusted_certificate);
    let result = verify_with_test_ca(cards, &certificate, &signature);
    assert_eq!(result, Err(VerifyError::UntrustedIssuer));
    remove(inserted, port);
}

fn card_without_jpki_is_refused(cards: &TestCards, port: u16) {
    let inserted = insert(cards.card(PIN).without_jpki(), port);
    let report = status_report();
    assert!(!report.ready(), "{report}");
    assert!(
        report.to_string().contains("JPKI application: not found"),
        "{report}"
    );
    let transport = PcscTransport::connect(None, READER_CHANGE_WAIT).expect("connect");
    assert_eq!(JpkiCard::open(transport).err(), Some(CardError::NotJpki));
    remove(inserted, port);
}

fn empty_reader_reports_no_card(_cards: &TestCards, _port: u16) {
    match PcscTransport::connect(None, Duration::ZERO) {
        Err(error) => assert_eq!(error, CardError::NoCard),
        Ok(transport) => panic!("connected to a card in {}", transport.reader_name()),
    }
    let report = status_report();
    assert!(!report.ready(), "{report}");
    assert!(report.to_string().contains("card: none"), "{report}");
}

/// What the office terminal does: read the certificate, verify the PIN, sign.
fn read_certificate_and_sign(port: u16) -> (Vec<u8>, Vec<u8>) {
    let mut card = open(port);
    let certificate = card.read_auth_certificate().expect("read certificate");
    card.verify_pin(&Pin::new(PIN).unwrap())
        .expect("verify PIN");
    let signature = card.sign_challenge(CHALLENGE).expect("sign");
    (certificate, signature)
}

/// What the server does, trusting only the test CA.
fn verify_with_test_ca(
    cards: &TestCards,
    certificate: &[u8],
    signature: &[u8],
) -> Result<VerifiedCardHolder, VerifyError> {
    let trusted = [cards.trusted_ca.certificate_der()];
    let revocation = Revocation::RevokedSerials(&[]);
    verify_challenge_signature(
        certificate,
        &trusted,
        revocation,
        CHALLENGE,
        signature,
        test_now(),
    )
}

/// Inserts `card` into the vpcd slot on `port` and waits until pcscd sees it.
fn insert(card: VirtualJpkiCard, port: u16) -> VpcdConnection {
    let inserted = VpcdConnection::insert(card, port).expect("connect the virtual card to vpcd");
    wait_for_reader(true);
    inserted
}

/// Takes the card out and waits until pcscd sees the reader empty.
fn remove(inserted: VpcdConnection, port: u16) {
    inserted
        .remove()
        .unwrap_or_else(|error| panic!("remove the virtual card from port {port}: {error}"));
    wait_for_reader(false);
}

fn open(port: u16) -> JpkiCard<PcscTransport> {
    let transport = PcscTransport::connect(None, READER_CHANGE_WAIT)
        .unwrap_or_else(|error| panic!("connect to the card behind vpcd port {port}: {error}"));
    JpkiCard::open(transport).expect("select JPKI")
}

/// Waits until some reader holds a card (`present`) or none does (`!present`),
/// blocking on pcscd's state changes.
fn wait_for_reader(present: bool) {
    let context = pcsc::Context::establish(pcsc::Scope::User).expect("pcscd reachable");
    let readers = context.list_readers_owned().expect("list readers");
    let mut states: Vec<pcsc::ReaderState> = readers
        .into_iter()
        .map(|name| pcsc::ReaderState::new(name, pcsc::State::UNAWARE))
        .collect();
    let deadline = Instant::now() + READER_CHANGE_WAIT;
    let mut timeout = Duration::ZERO;
    loop {
        match context.get_status_change(timeout, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(error) => panic!("reader states: {error}"),
        }
        let any_present = states
            .iter()
            .any(|state| state.event_state().contains(pcsc::State::PRESENT));
        if any_present == present {
            return;
        }
        timeout = deadline.saturating_duration_since(Instant::now());
        assert!(
            !timeout.is_zero(),
            "pcscd did not see the card {} within {READER_CHANGE_WAIT:?}",
            if present { "inserted" } else { "removed" }
        );
        states
            .iter_mut()
            .for_each(pcsc::ReaderState::sync_current_state);
    }
}

/// The pcscd the test talks to: given by the environment, or started here.
struct Pcscd {
    port: u16,
    /// The directory of a pcscd we started and must stop.
    started_in: Option<PathBuf>,
}

impl Pcscd {
    fn from_environment() -> Pcscd {
        let socket = std::env::var_os("PCSCLITE_CSOCK_NAME");
        let port = std::env::var("KIBAN_TEST_VPCD_PORT").ok();
        match (socket, port) {
            (Some(socket), Some(port)) => {
                let port = port.parse().expect("KIBAN_TEST_VPCD_PORT is a port number");
                assert!(
                    Path::new(&socket).exists(),
                    "PCSCLITE_CSOCK_NAME {socket:?} does not exist"
                );
                Pcscd {
                    port,
                    started_in: None,
                }
            }
            (None, None) => Pcscd::start(),
            _ => panic!(
                "set both PCSCLITE_CSOCK_NAME and KIBAN_TEST_VPCD_PORT (from scripts/pcscd.sh start), \
                 or neither to let the test start pcscd"
            ),
        }
    }

    fn start() -> Pcscd {
        let directory =
            std::env::temp_dir().join(format!("kiban-card-test-{}", std::process::id()));
        let port = free_port_pair();
        let output = Command::new(script())
            .args([
                "start".as_ref(),
                directory.as_os_str(),
                port.to_string().as_ref(),
            ])
            .output()
            .expect("run scripts/pcscd.sh");
        assert!(
            output.status.success(),
            "scripts/pcscd.sh start failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // SAFETY: this is the only test of the binary and it sets the variable
        // before it starts any thread of its own, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PCSCLITE_CSOCK_NAME", directory.join("pcscd.comm")) };
        Pcscd {
            port,
            started_in: Some(directory),
        }
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        if let Some(directory) = self.started_in.take() {
            let _ = Command::new(script()).arg("stop").arg(&directory).status();
            let _ = std::fs::remove_dir_all(&directory);
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pcscd.sh")
}

/// A port whose successor is free too (vpcd listens on both, one per reader slot).
fn free_port_pair() -> u16 {
    for _ in 0..32 {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if port < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two adjacent free ports found")
}
