//! `kiban emit` (a municipality's sender) and `kiban subscribe` (an
//! office's live feed), over NATS through [`kiban_bus::client`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiban_bus::client::{
    Bus, Municipality, OfficeFeed, all_accepted, parse_json_values, parse_messages, pretty_line,
};
use kiban_events::ids::{InsurerNumber, OfficeNumber};

use crate::args::{DEFAULT_NATS_URL, EXIT_INVALID_MESSAGES, EXIT_NOT_RECORDED, read_input};

/// `kiban emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// The municipality's insurer number (保険者番号, 6 digits).
    #[arg(long, required_unless_present = "check")]
    pub insurer: Option<String>,
    /// Validate the messages against their schemas (docs/asyncapi.json)
    /// offline, without NATS or a store; print each problem with its JSON
    /// pointer; exit 7 when there is one.
    #[arg(long)]
    pub check: bool,
    /// The NATS server kiban ingests from.
    #[arg(long, env = "KIBAN_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// Seconds to wait for the receipts after the last publish.
    #[arg(long, default_value_t = kiban_bus::client::RECEIPT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// A JSON file, or `-` for standard input.
    pub input: PathBuf,
}

/// `kiban subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The office number (介護保険事業所番号, 10 digits).
    #[arg(long)]
    pub office: String,
    /// The NATS server kiban routes office updates to.
    #[arg(long, env = "KIBAN_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// One readable line per update instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    /// Stop after this many updates (default: until Ctrl-C).
    #[arg(long)]
    pub max: Option<u64>,
}

/// `kiban emit`: publishes, waits for the receipts, prints them.
pub async fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    let insurer = args
        .insurer
        .as_deref()
        .map(InsurerNumber::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--insurer must be a 6-digit insurer number: {e}"))?;
    let text = read_input(&args.input)?;
    if args.check {
        return check(&text, insurer.as_ref());
    }
    let insurer = insurer.expect("clap requires --insurer without --check");
    let messages = parse_messages(&text)?;
    let bus = Bus::connect_nats_as_participant(&args.nats_url).await?;
    let mut municipality = Municipality::connect(&bus, insurer).await?;
    let receipts = municipality
        .send_all(&messages, Duration::from_secs(args.timeout))
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

/// `kiban emit --check`: every problem of every message, one line each:
/// `message <n> <JSON pointer>: <what>` (`n` from 1; the pointer is empty
/// for the message as a whole). With `--insurer`, a message for another
/// insurer is a problem at `/insurer` (kiban would answer `insurer_mismatch`).
fn check(text: &str, insurer: Option<&InsurerNumber>) -> anyhow::Result<ExitCode> {
    let messages = parse_json_values(text)?;
    let mut problems = kiban_bus::asyncapi::check_messages(&messages);
    if let Some(insurer) = insurer {
        for (index, message) in messages.iter().enumerate() {
            if message
                .get("insurer")
                .is_some_and(|sent| sent != insurer.as_str())
            {
                problems.push(kiban_bus::asyncapi::Problem {
                    index,
                    pointer: "/insurer".into(),
                    message: format!("not --insurer {insurer} (insurer_mismatch)"),
                });
            }
        }
        problems.sort_by_key(|problem| problem.index);
    }
    for problem in &problems {
        println!(
            "message {} {}: {}",
            problem.index + 1,
            problem.pointer,
            problem.message
        );
    }
    if problems.is_empty() {
        eprintln!("{} messages match their schemas", messages.len());
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_INVALID_MESSAGES))
    }
}

/// `kiban subscribe`: prints an office's updates until Ctrl-C or `--max`.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let office = OfficeNumber::parse(&args.office)
        .map_err(|e| anyhow::anyhow!("--office must be a 10-digit office number: {e}"))?;
    let bus = Bus::connect_nats_as_participant(&args.nats_url).await?;
    let mut feed = OfficeFeed::connect(&bus, office.clone()).await?;
    // A line on stderr once the subscription is in place, so that a script
    // (or a test) knows when publishing may start.
    eprintln!("subscribed to the updates of office {office}");
    let mut printed = 0u64;
    while args.max.is_none_or(|max| printed < max) {
        let event = tokio::select! {
            event = feed.next() => event?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if args.pretty {
            println!("{}", pretty_line(&event));
        } else {
            println!("{}", serde_json::to_string(&event)?);
        }
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}
