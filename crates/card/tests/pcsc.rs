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

use std::time::Duration;

use kiban_card::test_pcscd::{READER_CHANGE_WAIT, ReaderClaim, TestPcscd};
use kiban_card::test_pki::{TEST_CARD_SERIAL, TestCards, test_now};
use kiban_card::{
    CardError, CardProbe, JpkiCard, PcscTransport, Pin, Revocation, VerifiedCardHolder,
    VerifyError, status_report, verify_challenge_signature,
};

/// The virtual card's PIN.
const PIN: &str = "2468";
/// A challenge as the server would issue it.
const CHALLENGE: &[u8] = b"kiban consent challenge: office 1371234567, nonce 7f3a";

/// One scenario: given the test PKI and pcscd, runs with an empty reader
/// and leaves it empty.
type Scenario = fn(&TestCards, &TestPcscd);

#[test]
fn card_over_pcscd() {
    let pcscd = TestPcscd::from_environment();
    let cards = TestCards::generate();
    let scenarios: [(&str, Scenario); 8] = [
        (
            "the reader is this test's: another claim on it waits",
            the_reader_is_claimed,
        ),
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
        (
            "OpenSC lists the card and signs with it",
            opensc_lists_and_signs,
        ),
    ];
    for (name, scenario) in scenarios {
        println!("card over pcscd: {name} ...");
        scenario(&cards, &pcscd);
        println!("card over pcscd: {name} ok");
    }
    drop(pcscd);
}

/// Another test (another process, or a thread of this one) asking for the
/// shared reader does not get it while this test holds it, so two tests
/// cannot put cards into one reader however they are scheduled.
fn the_reader_is_claimed(_cards: &TestCards, _pcscd: &TestPcscd) {
    let socket = TestPcscd::socket();
    assert!(
        ReaderClaim::try_now(&socket).is_none(),
        "a second claim on the reader of {socket:?} was granted while this test holds it"
    );
}

fn read_verify_sign_and_verify(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.card(PIN));
    let report = status_report();
    assert!(report.ready(), "{report}");
    let ready = Some(CardProbe::Jpki {
        pin_tries_left: Ok(3),
    });
    assert!(
        report.readers.iter().any(|reader| reader.card == ready),
        "{report}"
    );
    let mut card = open();
    let ca_certificate = card
        .read_auth_ca_certificate()
        .expect("read CA certificate");
    assert_eq!(ca_certificate, cards.trusted_ca.certificate_der());
    drop(card);

    let (certificate, signature) = read_certificate_and_sign();
    assert_eq!(certificate, cards.certificate);
    let holder = verify_with_test_ca(cards, &certificate, &signature).expect("signature verifies");
    assert_eq!(holder.serial_number(), &TEST_CARD_SERIAL.to_be_bytes()[2..]);
    pcscd.remove(inserted);
}

fn wrong_pin_blocks_on_third_try(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.card(PIN));
    let mut card = open();
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
    pcscd.remove(inserted);
}

fn card_removed_during_signature(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.card(PIN));
    let mut card = open();
    card.verify_pin(&Pin::new(PIN).unwrap())
        .expect("verify PIN");
    inserted.remove_during_next_signature();
    assert_eq!(card.sign_challenge(CHALLENGE), Err(CardError::CardRemoved));
    drop(card);
    pcscd.remove(inserted);
}

fn untrusted_card_is_refused(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.untrusted_card(PIN));
    let (certificate, signature) = read_certificate_and_sign();
    assert_eq!(certificate, cards.untrusted_certificate);
    let result = verify_with_test_ca(cards, &certificate, &signature);
    assert_eq!(result, Err(VerifyError::UntrustedIssuer));
    pcscd.remove(inserted);
}

fn card_without_jpki_is_refused(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.card(PIN).without_jpki());
    let report = status_report();
    assert!(!report.ready(), "{report}");
    assert!(
        report.to_string().contains("JPKI application: not found"),
        "{report}"
    );
    let transport = PcscTransport::connect(None, READER_CHANGE_WAIT).expect("connect");
    assert_eq!(JpkiCard::open(transport).err(), Some(CardError::NotJpki));
    pcscd.remove(inserted);
}

fn empty_reader_reports_no_card(_cards: &TestCards, _pcscd: &TestPcscd) {
    match PcscTransport::connect(None, Duration::ZERO) {
        Err(error) => assert_eq!(error, CardError::NoCard),
        Ok(transport) => panic!("connected to a card in {}", transport.reader_name()),
    }
    let report = status_report();
    assert!(!report.ready(), "{report}");
    assert!(report.to_string().contains("card: none"), "{report}");
}

/// An independent client: OpenSC's own JPKI driver (Debian's `opensc`)
/// binds the virtual card through the same pcscd, lists its certificates
/// and PINs, and signs with the user-authentication key through its PKCS#11
/// module; kiban's verifier accepts that signature. `pcscd` is reached
/// through `PCSCLITE_CSOCK_NAME`, which the child processes inherit.
fn opensc_lists_and_signs(cards: &TestCards, pcscd: &TestPcscd) {
    let inserted = pcscd.insert(cards.card(PIN));
    let certificates = opensc("pkcs15-tool", &["--reader", "0", "--list-certificates"]);
    assert!(
        certificates.contains("User Authentication Certificate"),
        "{certificates}"
    );
    let pins = opensc("pkcs15-tool", &["--reader", "0", "--list-pins"]);
    assert!(pins.contains("User Authentication PIN"), "{pins}");
    assert!(pins.contains("Digital Signature PIN"), "{pins}");
    assert!(
        pins.contains("Tries left") || pins.contains("tries left"),
        "{pins}"
    );

    let dir = std::env::temp_dir().join(format!("kiban-opensc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("challenge"), dir.join("signature"));
    std::fs::write(&input, CHALLENGE).unwrap();
    let module = opensc_pkcs11_module();
    let signed = opensc(
        "pkcs11-tool",
        &[
            "--module",
            &module,
            "--slot-index",
            "0",
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--id",
            "01",
            "--mechanism",
            "SHA256-RSA-PKCS",
            "--input-file",
            input.to_str().unwrap(),
            "--output-file",
            output.to_str().unwrap(),
        ],
    );
    let signature = std::fs::read(&output).unwrap_or_else(|e| panic!("{e}: {signed}"));
    std::fs::remove_dir_all(&dir).unwrap();
    let holder = verify_with_test_ca(cards, &cards.certificate, &signature)
        .expect("kiban verifies the signature OpenSC made");
    assert_eq!(holder.serial_number(), &TEST_CARD_SERIAL.to_be_bytes()[2..]);
    assert_eq!(
        inserted.pin_tries_left(),
        3,
        "the right PIN leaves every try"
    );
    pcscd.remove(inserted);
}

/// Runs an OpenSC tool, bounded in time; panics with its output unless it
/// succeeds. Returns stdout and stderr.
fn opensc(tool: &str, args: &[&str]) -> String {
    let mut child = std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install Debian's opensc (scripts/test does)")
        });
    let deadline = std::time::Instant::now() + READER_CHANGE_WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{tool} {args:?} did not finish within {READER_CHANGE_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}\n{text}",
        output.status
    );
    text
}

/// OpenSC's PKCS#11 module, where Debian (any architecture) puts it.
fn opensc_pkcs11_module() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("opensc-pkcs11.so"))
        .chain([std::path::PathBuf::from("/usr/lib/opensc-pkcs11.so")])
        .find(|path| path.exists());
    found
        .unwrap_or_else(|| panic!("no opensc-pkcs11.so under /usr/lib: install Debian's opensc"))
        .display()
        .to_string()
}

/// What the office terminal does: read the certificate, verify the PIN, sign.
fn read_certificate_and_sign() -> (Vec<u8>, Vec<u8>) {
    let mut card = open();
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

fn open() -> JpkiCard<PcscTransport> {
    let transport = PcscTransport::connect(None, READER_CHANGE_WAIT)
        .unwrap_or_else(|error| panic!("connect to the card behind vpcd: {error}"));
    JpkiCard::open(transport).expect("select JPKI")
}
