//! A private `nats-server` for `kiban bench ingest` without `--nats-url`:
//! JetStream on a free loopback port, its storage in a temporary directory,
//! killed when dropped.
//!
//! Deliberately not `kiban_bus::testing` (a test harness that production
//! code must not depend on): a benchmark needs only "start one, stop it".
//! The binary is `nats-server` on the PATH, or `KIBAN_NATS_SERVER`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

/// How long the server may take to accept clients.
pub const NATS_START_TIMEOUT_MS: u64 = 10_000;

/// How often readiness is polled while it starts.
const READY_POLL_MS: u64 = 20;

/// The private server's JetStream file storage: the benchmark writes far
/// less, and a small limit fits any machine's disk.
pub const NATS_FILE_STORE_MAX: &str = "1GB";

/// The `KIBAN_EVENTS` byte limit that fits [`NATS_FILE_STORE_MAX`].
pub const PRIVATE_EVENTS_MAX_BYTES: i64 = 256 * 1024 * 1024;

/// A running private nats-server.
pub struct PrivateNatsServer {
    port: u16,
    child: Child,
    _storage: tempfile::TempDir,
}

impl PrivateNatsServer {
    /// Starts one and waits until it accepts clients.
    pub async fn start() -> anyhow::Result<Self> {
        let storage = tempfile::Builder::new()
            .prefix("kiban-bench-nats-")
            .tempdir()?;
        let port = free_port()?;
        let binary = std::env::var("KIBAN_NATS_SERVER")
            .ok()
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| "nats-server".to_owned());
        let config = storage.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n  max_memory_store: 64MB\n  max_file_store: {NATS_FILE_STORE_MAX}\n}}\n",
                storage.path().join("jetstream").display().to_string()
            ),
        )?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {binary} (is nats-server installed?)"))?;
        let mut server = Self {
            port,
            child,
            _storage: storage,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_millis(NATS_START_TIMEOUT_MS);
        while !accepts_clients(self.port) {
            if self.child.try_wait()?.is_some() {
                bail!("nats-server exited at start");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not accept clients within {NATS_START_TIMEOUT_MS} ms");
            }
            tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
        }
        Ok(())
    }
}

impl Drop for PrivateNatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether the port answers with the server's `INFO` line (it opens the
/// client port once JetStream has started).
fn accepts_clients(port: u16) -> bool {
    use std::io::Read;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buffer = [0u8; 4];
    stream.read_exact(&mut buffer).is_ok() && &buffer == b"INFO"
}
