//! A minimal ingest process for the crash test: runs the ingest consumer
//! with the store-backed test handler against a SQLite file until killed.
//!
//! Usage: `kiban-ingest-probe <nats-url> <sqlite-path>`. Prints `ready` on
//! stdout once the consumer runs. Test tooling, built with feature `testing`.

use std::sync::Arc;

use kiban_bus::ingest::run_ingest;
use kiban_bus::testing::RecordingHandler;
use kiban_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: kiban-ingest-probe <nats-url> <sqlite-path>");
        std::process::exit(2);
    };
    let store = Store::open(&format!("sqlite://{path}"), StoreOptions::default())
        .await
        .expect("the store opens");
    let client = async_nats::connect(url).await.expect("NATS is reachable");
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_ingest(
        client,
        Arc::new(RecordingHandler::new(store.clone())),
        cancel.clone(),
    ));
    println!("ready");
    tokio::signal::ctrl_c().await.expect("signals work");
    cancel.cancel();
    let _ = consumer.await;
    store.close().await;
}
