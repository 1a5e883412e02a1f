//! `kiban serve`, `kiban emit`, `kiban subscribe` and `kiban demo`: argument
//! handling and printing around the library's [`kiban::system`],
//! [`kiban::clients`] and [`kiban::demo`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiban::clients::{Municipality, OfficeFeed, all_accepted, parse_messages, pretty_line};
use kiban::system::{System, SystemOptions, redact_url};
use kiban_api::TlsFiles;
use kiban_events::ids::{InsurerNumber, OfficeNumber};

use crate::cli::{ApiArgs, Command};

/// Where `kiban emit` and `kiban subscribe` find NATS by default.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Exit code of `kiban emit` when a message was rejected or got no receipt.
pub const EXIT_NOT_RECORDED: u8 = 5;

/// `kiban serve`: the whole system until Ctrl-C.
pub async fn serve(
    database_url: &str,
    nats_url: Option<String>,
    streams: kiban_bus::streams::StreamOptions,
    api: ApiArgs,
) -> anyhow::Result<ExitCode> {
    let mut options = SystemOptions::new(database_url.to_owned(), api.listen, api.data_dir);
    options.nats_url = nats_url;
    options.streams = streams;
    if let (Some(server_cert), Some(server_key), Some(client_ca)) =
        (api.tls_cert, api.tls_key, api.client_ca)
    {
        options.tls = Some(TlsFiles {
            client_ca,
            server_cert,
            server_key,
        });
    }
    if let Some(crl) = &api.card_crl {
        options.card_trust = Some(kiban::system::load_card_trust(&api.card_ca, crl)?);
    }
    let card_consent = match &options.card_trust {
        Some(trust) => format!(
            "card consent: on ({} JPKI CA certificate(s), CRL {})",
            trust.ca_certificates_der.len(),
            trust.crl_path.display()
        ),
        None => "card consent: off (start with --card-ca and --card-crl)".to_owned(),
    };
    let mut system = System::start(options).await?;
    // Signed checkpoints every KIBAN_CHECKPOINT_EVERY events (docs/audit.md).
    crate::audit::start_checkpointer(&system.store, database_url)?;
    let head = system.store.head().await?;
    println!(
        "kiban serving — store {} (head position {})",
        redact_url(database_url),
        head.position
    );
    println!(
        "API: {} ({}); transport: {}; timers tick every {} s",
        system.base_url(),
        if system.dev.is_some() {
            "development certificates"
        } else {
            "production certificates"
        },
        system.bus.describe(),
        kiban_engine::TICK_INTERVAL_MS / 1000
    );
    println!("{card_consent}");
    print_curl(&system);
    println!("Ctrl-C to stop.");
    let outcome = wait_for_ctrl_c(&mut system).await;
    println!("stopping: finishing the work in flight");
    system.stop().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Prints the curl commands of the development certificates.
pub fn print_curl(system: &System) {
    let lines = system.curl_examples();
    if lines.is_empty() {
        return;
    }
    if let Some(dev) = &system.dev {
        println!(
            "Development certificates in {} (CA ca.pem; one client certificate per principal):",
            dev.tls
                .client_ca
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    println!("Try:");
    for line in lines {
        println!("  {line}");
    }
}

/// Returns at Ctrl-C (Ok) or when a part of the system stopped on its own
/// (Err).
pub async fn wait_for_ctrl_c(system: &mut System) -> anyhow::Result<()> {
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot listen for Ctrl-C"),
        (task, error) = system.failed() => {
            tracing::error!(task, %error, "a part of the system stopped on its own; shutting down");
            Err(anyhow::anyhow!("{task} stopped: {error}"))
        }
    }
}

/// The other commands of this module.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Emit {
            insurer,
            nats_url,
            timeout,
            input,
        } => emit(&insurer, &nats_url, timeout, &input).await,
        Command::Subscribe {
            office,
            nats_url,
            pretty,
            max,
        } => subscribe(&office, &nats_url, pretty, max).await,
        Command::Demo {
            script,
            fast,
            nats_url,
            database_url,
            listen,
            data_dir,
        } => {
            kiban::demo::run(kiban::demo::DemoOptions {
                script,
                fast,
                nats_url,
                database_url,
                listen,
                data_dir,
            })
            .await
        }
        _ => unreachable!("dispatched here only for emit, subscribe and demo"),
    }
}

async fn connect(nats_url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))
}

async fn emit(
    insurer: &str,
    nats_url: &str,
    timeout: u64,
    input: &PathBuf,
) -> anyhow::Result<ExitCode> {
    let insurer = InsurerNumber::parse(insurer)
        .map_err(|e| anyhow::anyhow!("--insurer must be a 6-digit insurer number: {e}"))?;
    let text = crate::commands::read_input(input)?;
    let messages = parse_messages(&text)?;
    let mut municipality = Municipality::nats(connect(nats_url).await?, insurer).await?;
    let receipts = municipality
        .send_all(&messages, Duration::from_secs(timeout))
        .await?;
    for (event_id, receipt) in &receipts {
        match receipt {
            Some(receipt) => println!("{}", serde_json::to_string(receipt)?),
            None => println!(
                "{}",
                serde_json::json!({"event_id": event_id, "status": "no_receipt"})
            ),
        }
    }
    if all_accepted(&receipts) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_NOT_RECORDED))
    }
}

async fn subscribe(
    office: &str,
    nats_url: &str,
    pretty: bool,
    max: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let office = OfficeNumber::parse(office)
        .map_err(|e| anyhow::anyhow!("--office must be a 10-digit office number: {e}"))?;
    let client = connect(nats_url).await?;
    let mut feed = OfficeFeed::nats(&client, &office).await?;
    // A line on stderr once the subscription is in place, so that a script
    // (or a test) knows when publishing may start.
    eprintln!("subscribed to the updates of office {office}");
    let mut printed = 0u64;
    while max.is_none_or(|max| printed < max) {
        let event = tokio::select! {
            event = feed.next() => event?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if pretty {
            println!("{}", pretty_line(&event));
        } else {
            println!("{}", serde_json::to_string(&event)?);
        }
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}
