//! Administration (管理): crypto-shredding one person (本人情報の消去,
//! docs/audit.md), adding a staff account of the office web screen
//! (職員アカウント, docs/ui.md), sweeping unattached uploads
//! (docs/security.md) and rebuilding the read models (docs/projections.md).
//! `kiban admin` parses the arguments and prints what these return.

use anyhow::Context;
use kiban_engine::Engine;
use kiban_events::envelope::Actor;
use kiban_events::ids::{InsuredNumber, InsurerNumber, OfficeNumber};
use kiban_store::PersonKeys;

use crate::open_store;

/// Destroys the person's data key, then records `insured.person_forgotten`
/// on their stream; returns a line saying what happened.
pub async fn forget_person(
    database_url: &str,
    insurer: &InsurerNumber,
    insured: &InsuredNumber,
) -> anyhow::Result<String> {
    let store = open_store(database_url).await?;
    let engine = Engine::new(store.clone()).with_person_keys(PersonKeys::new(store.clone()));
    let actor = Actor::system("forget").expect("valid actor");
    let outcome = engine
        .forget_person(insurer, insured, actor, chrono::Utc::now())
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
    Ok(format!(
        "forgot {insurer}-{insured} (本人情報の消去): {key}; {event}"
    ))
}

/// Sweeps unattached uploads now (what the writing process does every
/// hour; docs/security.md "Unattached uploads"); returns a line saying
/// what it did. Safe beside a running kiban: the sweep writes no event and
/// its deletions are row by row.
pub async fn sweep_blobs(database_url: &str) -> anyhow::Result<String> {
    let store = open_store(database_url).await?;
    let swept = store.sweep_blobs(chrono::Utc::now()).await;
    store.close().await;
    let swept = swept.context("sweeping unattached uploads")?;
    Ok(format!(
        "blob sweep: the log read through position {}, {} new references; {} unattached \
         uploads older than {} days removed ({} bytes)",
        swept.scanned_through,
        swept.references_recorded,
        swept.blobs_removed,
        kiban_store::UNREFERENCED_BLOB_RETENTION_HOURS / 24,
        swept.bytes_removed
    ))
}

/// Rebuilds every read model from the whole store now (what `serve` does
/// when a read model's schema changed; docs/projections.md "Rebuild"),
/// beside a running kiban or not; returns a line saying what it did. The
/// served read models keep answering until each new one is swapped in.
pub async fn rebuild_read_models(database_url: &str) -> anyhow::Result<String> {
    let store = open_store(database_url).await?;
    let started = std::time::Instant::now();
    let rebuilt = async {
        let db = crate::open_read_db(database_url).await?;
        let projections = kiban_projections::models::all();
        let position = kiban_projections::rebuild_apart(&db, &store, &projections)
            .await
            .context("rebuilding the read models")?;
        let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
        anyhow::Ok((names.join(", "), position))
    }
    .await;
    store.close().await;
    let (names, position) = rebuilt?;
    Ok(format!(
        "read models rebuilt (読み取りモデルの再構築): {names} from the whole log through position \
         {position} in {:.1} s; they are served from now on",
        started.elapsed().as_secs_f64()
    ))
}

/// Reads a staff password from `KIBAN_STAFF_PASSWORD`, else from one line
/// of standard input after a prompt on standard error naming `user` (never
/// from the command line, which other users of the machine can see).
pub fn staff_password(user: &str) -> anyhow::Result<String> {
    use std::io::BufRead;
    if let Ok(password) = std::env::var("KIBAN_STAFF_PASSWORD") {
        return Ok(password);
    }
    eprintln!("password for {user} (one line on standard input):");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Adds (or replaces the password of) a staff account of `office`.
pub async fn add_staff(
    database_url: &str,
    office: &OfficeNumber,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    // Opening the store first creates an SQLite file's directory and schema.
    let events = open_store(database_url).await?;
    let db = kiban_projections::Db::open(database_url)
        .await
        .context("opening the database")?;
    let added = kiban_api::ui::staff::add_staff(&db, office, user, password).await;
    db.close().await;
    events.close().await;
    Ok(added?)
}
