//! The PC/SC transport (feature `pcsc`): a card in a reader managed by pcscd (Linux,
//! macOS) or WinSCard (Windows), through the `pcsc` crate.
//!
//! The client library finds pcscd's socket at `PCSCLITE_CSOCK_NAME` when that is set
//! (the tests use a private pcscd, see `scripts/pcscd.sh`).

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};

use crate::status::{CardProbe, ReaderReport, StatusReport, probe_card};
use crate::{CardError, Transport};

/// How long [`PcscTransport::connect`] waits for a card by default: long enough for
/// a person to take the card out of a wallet and put it on the reader.
pub const CARD_WAIT_DEFAULT: Duration = Duration::from_secs(30);
/// After a failed transmit, how long to wait for pcscd to report the card gone
/// before calling the failure a reader error rather than a removal. pcscd polls
/// readers without hot-plug events every 400 ms.
pub const REMOVAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest single wait on reader state changes, so that a deadline is checked
/// regularly even when PC/SC returns early.
const STATUS_CHANGE_SLICE: Duration = Duration::from_millis(500);
/// Most readers considered; pcsc-lite itself supports 16.
pub const READERS_MAX: usize = 16;

/// A connection to the card in one reader.
pub struct PcscTransport {
    context: Context,
    card: pcsc::Card,
    reader: CString,
    receive_buffer: Vec<u8>,
}

impl PcscTransport {
    /// Connects to the card in `reader` (by exact name), or in the first reader that
    /// holds a card when `reader` is `None`, waiting up to `wait` for one to be
    /// inserted.
    pub fn connect(reader: Option<&str>, wait: Duration) -> Result<PcscTransport, CardError> {
        let context = establish()?;
        let readers = list_readers(&context)?;
        let candidates: Vec<CString> = match reader {
            None => readers,
            Some(name) => readers
                .into_iter()
                .filter(|candidate| candidate.to_bytes() == name.as_bytes())
                .collect(),
        };
        if candidates.is_empty() {
            return Err(CardError::NoReader);
        }
        let reader = wait_for_card(&context, &candidates, wait)?;
        // Exclusive: between VERIFY and COMPUTE DIGITAL SIGNATURE no other program
        // may select another file or application on the card.
        let card = context
            .connect(&reader, ShareMode::Exclusive, Protocols::ANY)
            .map_err(map_error)?;
        Ok(PcscTransport::new(context, card, reader))
    }

    fn new(context: Context, card: pcsc::Card, reader: CString) -> PcscTransport {
        PcscTransport {
            context,
            card,
            reader,
            receive_buffer: vec![0; pcsc::MAX_BUFFER_SIZE],
        }
    }

    /// The name of the reader holding the card.
    pub fn reader_name(&self) -> String {
        self.reader.to_string_lossy().into_owned()
    }

    /// Whether the failure of a transmit was the card leaving the reader: waits up to
    /// [`REMOVAL_SETTLE_TIMEOUT`] for pcscd to say so.
    fn card_left(&self) -> bool {
        let deadline = Instant::now() + REMOVAL_SETTLE_TIMEOUT;
        let mut states = [ReaderState::new(self.reader.clone(), State::UNAWARE)];
        let mut timeout = Duration::ZERO;
        loop {
            match self.context.get_status_change(timeout, &mut states) {
                // A timeout just means nothing changed yet.
                Ok(()) | Err(pcsc::Error::Timeout) => {}
                Err(_) => return false,
            }
            let state = states[0].event_state();
            if state.contains(State::EMPTY) || !state.contains(State::PRESENT) {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            timeout = remaining.min(STATUS_CHANGE_SLICE);
            states[0].sync_current_state();
        }
    }
}

impl Transport for PcscTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        match self.card.transmit(apdu, &mut self.receive_buffer) {
            // A response without a status word is no answer from the card: some
            // drivers (vpcd among them) report a vanished card so.
            Ok(response) if response.len() < 2 => {
                if self.card_left() {
                    Err(CardError::CardRemoved)
                } else {
                    Err(CardError::Reader {
                        detail: "the reader returned no status word".to_owned(),
                    })
                }
            }
            Ok(response) => Ok(response.to_vec()),
            Err(error) => {
                let mapped = map_error(error);
                if matches!(mapped, CardError::Reader { .. }) && self.card_left() {
                    return Err(CardError::CardRemoved);
                }
                Err(mapped)
            }
        }
    }
}

/// Reads the user-authentication certificate from the card in `reader`
/// (the first reader with a card when `None`, waiting up to `wait`),
/// verifies `pin` and has the card sign `challenge`: the certificate (DER)
/// and the signature. What an office terminal does for a consent and a
/// person for a sign-in (`kiban card consent`, `kiban card sign-in`).
pub fn sign_challenge_with_card(
    reader: Option<&str>,
    wait: Duration,
    pin: &crate::Pin,
    challenge: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CardError> {
    let transport = PcscTransport::connect(reader, wait)?;
    let mut card = crate::JpkiCard::open(transport)?;
    let certificate = card.read_auth_certificate()?;
    card.verify_pin(pin)?;
    let signature = card.sign_challenge(challenge)?;
    Ok((certificate, signature))
}

/// Readers, cards and JPKI state as `kiban card status` shows them. Never verifies
/// a PIN; connects to each card only to select JPKI and ask the tries left.
pub fn status_report() -> StatusReport {
    let context = match establish() {
        Ok(context) => context,
        Err(error) => {
            return StatusReport {
                service: Err(error),
                readers: Vec::new(),
            };
        }
    };
    let names = match list_readers(&context) {
        Ok(names) => names,
        Err(CardError::NoReader) => Vec::new(),
        Err(error) => {
            return StatusReport {
                service: Err(error),
                readers: Vec::new(),
            };
        }
    };
    let readers = names
        .into_iter()
        .map(|name| ReaderReport {
            name: name.to_string_lossy().into_owned(),
            card: probe_reader(&context, name),
        })
        .collect();
    StatusReport {
        service: Ok(()),
        readers,
    }
}

/// What the card in `reader` is, `None` when the reader is empty.
fn probe_reader(context: &Context, reader: CString) -> Option<CardProbe> {
    if !reader_has_card(context, &reader) {
        return None;
    }
    // Shared: probing must not lock out a program that is using the card.
    match context.connect(&reader, ShareMode::Shared, Protocols::ANY) {
        Ok(card) => Some(probe_card(PcscTransport::new(
            context.clone(),
            card,
            reader,
        ))),
        Err(error) => Some(CardProbe::Failed(map_error(error))),
    }
}

fn establish() -> Result<Context, CardError> {
    Context::establish(Scope::User).map_err(map_error)
}

fn list_readers(context: &Context) -> Result<Vec<CString>, CardError> {
    let mut readers = context.list_readers_owned().map_err(map_error)?;
    readers.truncate(READERS_MAX);
    if readers.is_empty() {
        return Err(CardError::NoReader);
    }
    Ok(readers)
}

fn reader_has_card(context: &Context, reader: &CStr) -> bool {
    let mut states = [ReaderState::new(reader.to_owned(), State::UNAWARE)];
    context
        .get_status_change(Duration::ZERO, &mut states)
        .is_ok()
        && present(states[0].event_state())
}

fn present(state: State) -> bool {
    state.contains(State::PRESENT) && !state.contains(State::MUTE)
}

/// The first of `readers` holding a card, waiting up to `wait` for one.
fn wait_for_card(
    context: &Context,
    readers: &[CString],
    wait: Duration,
) -> Result<CString, CardError> {
    let deadline = Instant::now() + wait;
    let mut states: Vec<ReaderState> = readers
        .iter()
        .map(|name| ReaderState::new(name.clone(), State::UNAWARE))
        .collect();
    context
        .get_status_change(Duration::ZERO, &mut states)
        .map_err(map_error)?;
    loop {
        if let Some(state) = states.iter().find(|state| present(state.event_state())) {
            return Ok(state.name().to_owned());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CardError::NoCard);
        }
        states.iter_mut().for_each(ReaderState::sync_current_state);
        match context.get_status_change(remaining.min(STATUS_CHANGE_SLICE), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(error) => return Err(map_error(error)),
        }
    }
}

/// Our error for a PC/SC error. `Reader` is the catch-all for failures whose cause
/// PC/SC does not name.
fn map_error(error: pcsc::Error) -> CardError {
    use pcsc::Error as E;
    match error {
        E::NoService | E::ServiceStopped => CardError::ServiceUnavailable {
            detail: error.to_string(),
        },
        E::NoReadersAvailable | E::UnknownReader | E::ReaderUnavailable => CardError::NoReader,
        E::NoSmartcard => CardError::NoCard,
        E::RemovedCard => CardError::CardRemoved,
        E::Timeout => CardError::Timeout,
        _ => CardError::Reader {
            detail: error.to_string(),
        },
    }
}
