//! `kiban serve`: the whole system ([`kiban_system`]) until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kiban_api::TlsFiles;
use kiban_system::config::{self, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use kiban_system::{ApiOptions, BusOptions, Role, System, SystemBuilder, Tls, redact_url};

use crate::args::StoreArgs;

/// `kiban serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which parts this process runs: `all` (everything in one process, the
    /// default), `engine` (the writer: ingest, projections, relay, routing,
    /// timers; start two or more, one writes and the others stand by) or
    /// `api` (HTTPS only, any number; appends go to the writer over NATS).
    /// `engine` and `api` need PostgreSQL and NATS (docs/deploy.md).
    #[arg(long, env = "KIBAN_ROLE", default_value = "all")]
    pub role: Role,
    #[command(flatten)]
    pub store: StoreArgs,
    /// NATS server(s) with JetStream for ingest and the outbox relay,
    /// e.g. `nats://127.0.0.1:4222`. Without it, the in-process bus.
    #[arg(long, env = "KIBAN_NATS_URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Size limit of the KIBAN_EVENTS stream in bytes (must fit the NATS
    /// server's max_file_store).
    #[arg(long, env = "KIBAN_EVENTS_MAX_BYTES", default_value_t = kiban_bus::streams::EVENTS_MAX_BYTES)]
    pub events_max_bytes: i64,
    /// Replicas of the JetStream streams (3 on a three-node cluster).
    #[arg(long, env = "KIBAN_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

/// The HTTPS API of `kiban serve`.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Where the HTTPS API listens.
    #[arg(long, env = "KIBAN_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// The server certificate chain (PEM). With --tls-key and --client-ca;
    /// without all three, development certificates under <data dir>/certs.
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The platform CA that issues client certificates (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
    /// A certificate revocation list of the client CA (PEM or DER); repeat
    /// for several issuing CAs. A revoked insurer, office, medical,
    /// auditor or federation certificate is refused at the TLS handshake.
    /// The file is looked at on every handshake and read again when it
    /// changed (replace it to publish new revocations).
    #[arg(long, requires = "client_ca", value_name = "FILE")]
    pub client_crl: Vec<PathBuf>,
    /// Development certificates and checkpoints live here.
    #[arg(long, env = "KIBAN_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// A JPKI user-authentication CA certificate (利用者証明用CA, PEM or
    /// DER) trusted for My Number card consent; repeat for several. With
    /// --card-crl; without both, `POST /v1/consents/card` answers 503.
    #[arg(long, requires = "card_crl", value_name = "FILE")]
    pub card_ca: Vec<PathBuf>,
    /// The CA's certificate revocation list (DER), read at every check so
    /// that a refreshed file takes effect at once.
    #[arg(long, requires = "card_ca", value_name = "FILE")]
    pub card_crl: Option<PathBuf>,
    /// A load balancer's address or network (`10.0.1.5`, `10.0.1.0/24`)
    /// whose connections begin with a PROXY protocol v2 header giving the
    /// client's address (HAProxy `send-proxy-v2`; docs/deploy.md); repeat,
    /// or separate by commas. A connection from there without the header
    /// is refused; other addresses connect directly, and a header they
    /// send is refused.
    #[arg(
        long,
        env = "KIBAN_PROXY_PROTOCOL_FROM",
        value_name = "NETWORK",
        value_delimiter = ',',
        value_parser = kiban_api::parse_proxy_source
    )]
    pub proxy_protocol_from: Vec<kiban_api::IpNet>,
}

impl ApiArgs {
    fn options(&self) -> anyhow::Result<ApiOptions> {
        let tls = match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(server_cert), Some(server_key), Some(client_ca)) => Tls::Files(TlsFiles {
                client_ca: client_ca.clone(),
                server_cert: server_cert.clone(),
                server_key: server_key.clone(),
                client_crls: self.client_crl.clone(),
            }),
            _ => Tls::Development,
        };
        let card_trust = match &self.card_crl {
            Some(crl) => Some(config::load_card_trust(&self.card_ca, crl)?),
            None => None,
        };
        Ok(ApiOptions {
            listen: self.listen,
            tls,
            card_trust,
        })
    }
}

/// `kiban serve`: the whole system until Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let database_url = args.store.database_url;
    let api = args.api.options()?;
    let card_consent = match &api.card_trust {
        Some(trust) => format!(
            "card consent: on ({} JPKI CA certificate(s), CRL {})",
            trust.ca_certificates_der.len(),
            trust.crl_path.display()
        ),
        None => "card consent: off (start with --card-ca and --card-crl)".to_owned(),
    };
    let bus = match args.nats_url {
        Some(url) => BusOptions::Nats {
            url,
            streams: kiban_bus::streams::StreamOptions {
                replicas: args.stream_replicas,
                events_max_bytes: args.events_max_bytes,
                ..Default::default()
            },
        },
        None => BusOptions::InProcess,
    };
    // Signed checkpoints every KIBAN_CHECKPOINT_EVERY events (docs/audit.md).
    // Checkpoints are signed by the writer only.
    let signing = match args.role {
        Role::Api => None,
        Role::All | Role::Engine => config::checkpoint_signing_from_env(&database_url)?,
    };
    let api = match args.role {
        Role::Engine => None,
        Role::All | Role::Api => Some(api),
    };
    if args.role == Role::Engine {
        println!(
            "kiban engine — store {}: waiting for the writer lock",
            redact_url(&database_url)
        );
    }
    let proxies = args.api.proxy_protocol_from;
    let mut system = SystemBuilder::new(database_url.clone(), args.api.data_dir)
        .role(args.role)
        .bus(bus)
        .api(api)
        .proxy_protocol_from(kiban_api::TrustedProxies::new(proxies.clone()))
        .checkpoint_signing(signing)
        .start()
        .await?;
    print_banner(&system, &database_url, &card_consent, &proxies).await?;
    let outcome = wait_for_ctrl_c(&mut system).await;
    println!("stopping: finishing the work in flight");
    system.shutdown().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn print_banner(
    system: &System,
    database_url: &str,
    card_consent: &str,
    proxy_networks: &[kiban_api::IpNet],
) -> anyhow::Result<()> {
    let head = system.store.head().await?;
    println!(
        "kiban serving — store {} (head position {})",
        redact_url(database_url),
        head.position
    );
    let Some(api) = system.api.as_ref() else {
        println!(
            "engine: the writer (transport: {}); no HTTPS API in this role",
            system.bus.describe()
        );
        println!("Ctrl-C to stop.");
        return Ok(());
    };
    println!(
        "API: https://{} ({}); transport: {}; timers tick every {} s",
        api.addr,
        if api.dev.is_some() {
            "development certificates"
        } else {
            "production certificates"
        },
        system.bus.describe(),
        kiban_engine::TICK_INTERVAL_MS / 1000
    );
    println!("{card_consent}");
    if !proxy_networks.is_empty() {
        let networks: Vec<String> = proxy_networks.iter().map(ToString::to_string).collect();
        println!("PROXY protocol v2 required from {}", networks.join(", "));
    }
    let lines = system.curl_examples();
    if let Some(dev) = api.dev.as_ref().filter(|_| !lines.is_empty()) {
        println!(
            "Development certificates in {} (CA ca.pem; one client certificate per principal):",
            dev.tls
                .client_ca
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        println!("Try:");
        for line in lines {
            println!("  {line}");
        }
        for line in system.ui_login_lines() {
            println!("{line}");
        }
    }
    println!("Ctrl-C to stop.");
    Ok(())
}

/// Returns at Ctrl-C (Ok) or when a part of the system stopped on its own
/// (Err).
async fn wait_for_ctrl_c(system: &mut System) -> anyhow::Result<()> {
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
        (task, error) = system.failed() => {
            tracing::error!(task, %error, "a part of the system stopped on its own; shutting down");
            Err(anyhow::anyhow!("{task} stopped: {error}"))
        }
    }
}
