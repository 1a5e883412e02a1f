//! `kiban admin forget --insurer I --insured N`: crypto-shredding of one
//! person (本人情報の消去, docs/audit.md). Destroys the person's data key,
//! then records `insured.person_forgotten` on their stream.

use std::process::ExitCode;

use clap::Args;
use kiban_events::ids::{InsuredNumber, InsurerNumber};

use crate::args::StoreArgs;

/// `kiban admin forget …`
#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The insurer (保険者番号, 6 digits).
    #[arg(long)]
    pub insurer: String,
    /// The insured person (被保険者番号, 10 digits).
    #[arg(long)]
    pub insured: String,
}

/// Runs `kiban admin forget`.
pub async fn run(args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let insurer = InsurerNumber::parse(&args.insurer)
        .map_err(|_| anyhow::anyhow!("the insurer number (保険者番号) must be 6 digits"))?;
    let insured = InsuredNumber::parse(&args.insured)
        .map_err(|_| anyhow::anyhow!("the insured number (被保険者番号) must be 10 digits"))?;
    let line =
        kiban_system::admin::forget_person(&args.store.database_url, &insurer, &insured).await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}
