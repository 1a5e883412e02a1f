//! Audit (監査) work behind `kiban audit checkpoint`: signing a checkpoint,
//! exporting them for an outside party, and reading an export back with
//! its key checked against the one the reader trusts (docs/audit.md). The
//! chain verification itself is `kiban_store`'s.

use std::path::Path;

use anyhow::Context;
use kiban_store::{Checkpoint, CheckpointExport, parse_public_key};

use crate::config::signing_key;
use crate::open_store;

/// Verifies up to the head and signs it now with the platform key
/// (`key_file`, or the development key beside an SQLite database); `None`
/// for an empty store.
pub async fn create_checkpoint(
    database_url: &str,
    key_file: Option<&Path>,
) -> anyhow::Result<Option<Checkpoint>> {
    let platform = signing_key(database_url, key_file)?;
    let store = open_store(database_url).await?;
    let created = store.create_checkpoint(&platform).await;
    store.close().await;
    Ok(created?)
}

/// Every checkpoint and the public key, for an outside party.
pub async fn export_checkpoints(
    database_url: &str,
    key_file: Option<&Path>,
) -> anyhow::Result<CheckpointExport> {
    let platform = signing_key(database_url, key_file)?;
    let store = open_store(database_url).await?;
    let export = store.export_checkpoints(&platform.public_key()).await;
    store.close().await;
    Ok(export?)
}

/// Reads an export; when `pinned` (a public key given out of band) is
/// there, the export's own key must equal it.
pub fn read_export(file: &Path, pinned: Option<&str>) -> anyhow::Result<CheckpointExport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let export: CheckpointExport =
        serde_json::from_str(&text).context("not a checkpoint export")?;
    if let Some(pinned) = pinned {
        let pinned = parse_public_key(pinned)?;
        if parse_public_key(&export.public_key)? != pinned {
            anyhow::bail!(
                "the export is signed by {}, not by the public key you trust",
                export.public_key
            );
        }
    }
    Ok(export)
}
