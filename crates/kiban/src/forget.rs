//! `kiban admin forget --insurer I --insured N`: crypto-shredding of one
//! person (本人情報の消去, docs/audit.md). Destroys the person's data key,
//! then records `insured.person_forgotten` on their stream.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use kiban_engine::Engine;
use kiban_events::envelope::Actor;
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_store::PersonKeys;

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
    let store = kiban_system::open_store(&args.store.database_url).await?;
    let engine = Engine::new(store.clone()).with_person_keys(PersonKeys::new(store.clone()));
    let actor = Actor::system("forget").expect("valid actor");
    let outcome = engine
        .forget_person(&insurer, &insured, actor, chrono::Utc::now())
        .await;
    store.close().await;
    let forgetting = outcome.with_context(|| {
        "the key is destroyed if a key store answered; recording insured.person_forgotten \
         failed (another kiban holds the writer? then use POST \
         /v1/audit/persons/{insurer}/{insured}/forget, or run this again once it stops)"
    })?;
    let key = match (&forgetting.key.key_id, forgetting.key.destroyed_now) {
        (Some(id), true) => format!("key {id} destroyed"),
        (Some(id), false) => format!("key {id} was destroyed before"),
        (None, _) => "no key existed".to_owned(),
    };
    let event = match forgetting.executed.events.first() {
        Some(event) if !forgetting.executed.replayed => {
            format!(
                "insured.person_forgotten recorded at position {}",
                event.position
            )
        }
        _ => "already recorded as forgotten".to_owned(),
    };
    println!("forgot {insurer}-{insured} (本人情報の消去): {key}; {event}");
    Ok(ExitCode::SUCCESS)
}
