//! pcscd with the vpcd driver for tests (features `pcsc` and `virtual-card`):
//! the private pcscd of `scripts/pcscd.sh`, and inserting/removing a
//! [`VirtualJpkiCard`] with a wait until pcscd has seen the change.
//!
//! Environment: `PCSCLITE_CSOCK_NAME` (pcscd's socket) and
//! `KIBAN_TEST_VPCD_PORT` (the port vpcd listens on), as `scripts/pcscd.sh
//! start` prints them. With neither set, [`TestPcscd::from_environment`]
//! starts its own pcscd with that script (needs root) and stops it on drop;
//! with only one set, it panics.
//!
//! One reader is shared by everything that uses the same pcscd: tests that
//! insert cards must not run at the same time. A [`TestPcscd`] holds the
//! reader's claim (an exclusive lock on a file beside pcscd's socket) for its
//! whole life, so a second test waits for the first to finish whatever runs
//! it; the workspace's nextest configuration also puts the known card tests in
//! one test group, so that they do not wait holding a test slot. (A test added
//! later that the group's filter missed — `ui::pair::a_person_signs_in_…` —
//! inserted its card while another test's card was in, and pcscd refused both
//! with "other connections outstanding".)

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::virtual_card::{VirtualJpkiCard, VpcdConnection};

/// How long to wait for pcscd to notice a card inserted or removed. pcscd
/// polls vpcd every 400 ms; the margin is for a loaded machine.
pub const READER_CHANGE_WAIT: Duration = Duration::from_secs(30);

/// The pcscd a test talks to: given by the environment, or started here.
#[derive(Debug)]
pub struct TestPcscd {
    /// The port vpcd listens on for the first reader slot.
    pub port: u16,
    /// The directory of a pcscd we started and must stop.
    started_in: Option<PathBuf>,
    /// This test's claim on the reader, released on drop.
    _claim: ReaderClaim,
}

/// The claim on the one reader of a pcscd: an exclusive lock on
/// `reader.lock` in the directory of pcscd's socket. Held while it lives.
#[derive(Debug)]
pub struct ReaderClaim {
    _lock: File,
}

impl ReaderClaim {
    /// Waits until no other claim on the reader of the pcscd listening on
    /// `socket` is held, and takes it.
    pub fn wait(socket: &Path) -> ReaderClaim {
        let file = lock_file(socket);
        file.lock()
            .unwrap_or_else(|error| panic!("lock the reader of {socket:?}: {error}"));
        ReaderClaim { _lock: file }
    }

    /// The claim if nobody holds it now, else `None`.
    pub fn try_now(socket: &Path) -> Option<ReaderClaim> {
        let file = lock_file(socket);
        match file.try_lock() {
            Ok(()) => Some(ReaderClaim { _lock: file }),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Error(error)) => panic!("lock the reader of {socket:?}: {error}"),
        }
    }
}

fn lock_file(socket: &Path) -> File {
    let path = socket
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("reader.lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("open {path:?}: {error}"))
}

impl TestPcscd {
    /// The pcscd of the environment, or a private one started now, with
    /// its reader claimed for this test (waiting for another test's claim
    /// to end: blocks the calling thread).
    ///
    /// Starting one sets `PCSCLITE_CSOCK_NAME` in this process (and so in
    /// its children): call it before the test starts any thread, from the
    /// only test of its binary.
    pub fn from_environment() -> TestPcscd {
        let socket = std::env::var_os("PCSCLITE_CSOCK_NAME");
        let port = std::env::var("KIBAN_TEST_VPCD_PORT").ok();
        match (socket, port) {
            (Some(socket), Some(port)) => {
                let port = port.parse().expect("KIBAN_TEST_VPCD_PORT is a port number");
                assert!(
                    Path::new(&socket).exists(),
                    "PCSCLITE_CSOCK_NAME {socket:?} does not exist"
                );
                TestPcscd {
                    port,
                    started_in: None,
                    _claim: ReaderClaim::wait(Path::new(&socket)),
                }
            }
            (None, None) => TestPcscd::start(),
            _ => panic!(
                "set both PCSCLITE_CSOCK_NAME and KIBAN_TEST_VPCD_PORT (from scripts/pcscd.sh start), \
                 or neither to let the test start pcscd"
            ),
        }
    }

    fn start() -> TestPcscd {
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
        // SAFETY: documented on `from_environment`: called before the test
        // starts any thread of its own, so nothing reads the environment
        // concurrently.
        let socket = directory.join("pcscd.comm");
        unsafe { std::env::set_var("PCSCLITE_CSOCK_NAME", &socket) };
        TestPcscd {
            port,
            _claim: ReaderClaim::wait(&socket),
            started_in: Some(directory),
        }
    }

    /// pcscd's socket, whose directory holds the reader's claim.
    pub fn socket() -> PathBuf {
        std::env::var_os("PCSCLITE_CSOCK_NAME")
            .map(PathBuf::from)
            .expect("PCSCLITE_CSOCK_NAME is set while a TestPcscd lives")
    }

    /// Inserts `card` into the first vpcd slot and waits until pcscd sees it.
    pub fn insert(&self, card: VirtualJpkiCard) -> VpcdConnection {
        let inserted =
            VpcdConnection::insert(card, self.port).expect("connect the virtual card to vpcd");
        wait_for_reader(true);
        inserted
    }

    /// Takes the card out and waits until pcscd sees the reader empty.
    pub fn remove(&self, inserted: VpcdConnection) {
        let port = self.port;
        inserted
            .remove()
            .unwrap_or_else(|error| panic!("remove the virtual card from port {port}: {error}"));
        wait_for_reader(false);
    }
}

impl Drop for TestPcscd {
    fn drop(&mut self) {
        if let Some(directory) = self.started_in.take() {
            let _ = Command::new(script()).arg("stop").arg(&directory).status();
            let _ = std::fs::remove_dir_all(&directory);
        }
    }
}

/// Waits until some reader holds a card (`present`) or none does
/// (`!present`), blocking on pcscd's state changes.
pub fn wait_for_reader(present: bool) {
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
