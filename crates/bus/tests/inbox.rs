//! kiban's own inboxes (issue 16, item 10): the ingest consumer's JetStream
//! pull deliveries (every municipality's status messages) and the writer's
//! append replies arrive under `_INBOX_KIBAN`, where only kiban's users may
//! subscribe, against a real nats-server started with the permissions of
//! docs/nats.md.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bounded, connect_as, init_logging, message, new_id, store_event, violation};
use futures::{FutureExt, StreamExt};
use kiban_bus::append::{NatsForwarder, ping_writer, run_append_service};
use kiban_bus::client::{Bus, Municipality, Outgoing};
use kiban_bus::ingest::{ReceiptStatus, run_ingest};
use kiban_bus::subjects::{KIBAN_INBOX_PREFIX, kiban_inbox_filter};
use kiban_bus::testing::{NatsServer, RecordingHandler, stream_options};
use kiban_events::ids::InsurerNumber;
use kiban_events::{ExpectedVersion, StreamName};
use kiban_store::{Store, StoreOptions, WriterMode};
use tokio_util::sync::CancellationToken;

/// The users and permissions of docs/nats.md ("Accounts, users and
/// permissions"), word for word apart from the passwords: kiban itself,
/// kiban's API processes, one office and two municipalities.
fn documented_config() -> String {
    let municipality = |number: &str| {
        format!(
            r#"{{ user: "insurer-{number}", password: "secret", permissions: {{
          publish:   {{ allow: ["kiban.ingest.{number}.>"] }},
          subscribe: {{ allow: ["kiban.receipts.{number}", "_INBOX.>"],
                       deny:  ["_INBOX_KIBAN.>"] }} }} }}"#
        )
    };
    format!(
        r#"
accounts {{
  KIBAN {{
    jetstream: enabled
    users: [
      {{ user: "kiban", password: "secret" }}
      {{ user: "kiban-api", password: "secret", permissions: {{
          publish:   {{ allow: ["kiban.writer.append"] }},
          subscribe: {{ allow: ["_INBOX_KIBAN.>", "kiban.offices.*.*"] }} }} }}
      {{ user: "office-1312345678", password: "secret", permissions: {{
          publish:   {{ deny: ">" }},
          subscribe: {{ allow: ["kiban.offices.1312345678.updates"],
                       deny:  ["_INBOX_KIBAN.>"] }} }} }}
      {}
      {}
    ]
  }}
}}
"#,
        municipality("131016"),
        municipality("131017"),
    )
}

/// `nats://<user>:secret@127.0.0.1:<port>`: credentials in the URL, as an
/// operator passes them to `kiban serve --nats-url`.
fn url_as(server: &NatsServer, user: &str) -> String {
    format!("nats://{user}:secret@127.0.0.1:{}", server.port())
}

#[tokio::test]
async fn a_municipality_cannot_read_kibans_ingest_deliveries_and_kiban_still_ingests_and_appends_with_the_documented_permissions()
 {
    init_logging();
    let server = NatsServer::start_with_config(&documented_config())
        .await
        .unwrap();
    assert_eq!(kiban_inbox_filter(), format!("{KIBAN_INBOX_PREFIX}.>"));

    // kiban's engine connection, as `kiban serve` makes it; it creates the
    // streams, runs the ingest consumer (a JetStream pull consumer) and
    // answers appends on the writer subject.
    let engine = Bus::connect_nats(&url_as(&server, "kiban")).await.unwrap();
    engine.ensure_streams(&stream_options(1)).await.unwrap();
    let engine_client = engine.nats_client().unwrap().clone();
    let directory = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", directory.path().join("kiban.db").display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let stop = CancellationToken::new();
    let ingest = tokio::spawn(run_ingest(
        engine_client.clone(),
        Arc::new(RecordingHandler::new(store.clone())),
        stop.clone(),
    ));
    let writer = tokio::spawn(run_append_service(
        engine_client.clone(),
        store.clone(),
        stop.clone(),
    ));

    // Municipality 131017 listens where it may: `_INBOX.>`, for its own
    // publish acks (subscribed first: a subscription made after a refused
    // one may receive nothing). kiban's inbox prefix is refused.
    let (spy, mut spy_errors) = connect_as(&server, "insurer-131017").await;
    let mut default_inboxes = spy.subscribe("_INBOX.>").await.unwrap();
    spy.flush().await.unwrap();
    let _kiban_inboxes = spy.subscribe(kiban_inbox_filter()).await.unwrap();
    let error = violation(&mut spy_errors, KIBAN_INBOX_PREFIX).await;
    assert!(error.to_lowercase().contains("subscription"), "{error}");
    // So is an office.
    let (office, mut office_errors) = connect_as(&server, "office-1312345678").await;
    let _office_spy = office.subscribe(kiban_inbox_filter()).await.unwrap();
    violation(&mut office_errors, KIBAN_INBOX_PREFIX).await;

    // Municipality 131016 sends status messages the way `kiban emit` does
    // (default inbox for its publish acks) and gets an accepted receipt for
    // each: kiban's pull consumer works under the documented permissions.
    let insurer = InsurerNumber::parse("131016").unwrap();
    let participant = Bus::connect_nats_as_participant(&url_as(&server, "insurer-131016"))
        .await
        .unwrap();
    let mut municipality = Municipality::connect(&participant, insurer).await.unwrap();
    let messages: Vec<Outgoing> = ["certification.filed", "certification.decided"]
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| {
            let body = message(new_id(), "131016", kind, u32::try_from(seq).unwrap() + 1);
            Outgoing::from_json(serde_json::from_str(&body).unwrap()).unwrap()
        })
        .collect();
    let receipts = bounded(
        "the receipts",
        municipality.send_all(&messages, Duration::from_secs(50)),
    )
    .await
    .unwrap();
    for (event_id, receipt) in &receipts {
        let receipt = receipt.as_ref().unwrap_or_else(|| panic!("{event_id}"));
        assert_eq!(receipt.status, ReceiptStatus::Accepted, "{receipt:?}");
    }
    assert_eq!(store.head().await.unwrap().position, 2);

    // Each message was delivered to kiban's inbox before kiban recorded it
    // and sent its receipt; the spy's subscription was in place before
    // that, and a flush returns after everything the server routed to the
    // spy earlier. So had any delivery gone to `_INBOX.…`, it would be
    // waiting here now.
    spy.flush().await.unwrap();
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_slice()).collect();
    while let Some(Some(seen)) = default_inboxes.next().now_or_never() {
        assert!(
            !bodies.contains(&&seen.payload[..]),
            "municipality 131017 read a status message of 131016 (delivered as {}) \
             on its `_INBOX.>` subscription",
            seen.subject
        );
    }

    // kiban's API user (subscribe only to `_INBOX_KIBAN.>`) forwards an
    // append and gets the writer's reply; a ping is a request too.
    let api = Bus::connect_nats(&url_as(&server, "kiban-api"))
        .await
        .unwrap();
    let api_client = api.nats_client().unwrap().clone();
    bounded("the writer answering pings", async {
        while ping_writer(&api_client, Duration::from_millis(500))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let forwarding = Store::open(
        &url,
        StoreOptions {
            writer: WriterMode::Forward(Arc::new(NatsForwarder::new(api_client))),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let appended = forwarding
        .append(
            &StreamName::parse("test/one").unwrap(),
            ExpectedVersion::NoStream,
            vec![store_event(1, r#"{"n":1}"#)],
        )
        .await
        .unwrap();
    assert_eq!(appended.last_position, 3);
    assert_eq!(store.head().await.unwrap().position, 3);

    // It follows an office's updates (the SSE fan-out of an API process):
    // what kiban publishes there reaches it.
    let mut updates = api
        .nats_client()
        .unwrap()
        .subscribe("kiban.offices.1312345678.updates")
        .await
        .unwrap();
    api.nats_client().unwrap().flush().await.unwrap();
    let kiban_client = engine.nats_client().unwrap().clone();
    let update = bounded("an office update reaching kiban-api", async {
        loop {
            kiban_client
                .publish("kiban.offices.1312345678.updates", "update".into())
                .await
                .unwrap();
            kiban_client.flush().await.unwrap();
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(200), updates.next()).await
            {
                return message;
            }
        }
    })
    .await;
    assert_eq!(&update.payload[..], b"update");

    stop.cancel();
    bounded("the ingest consumer to stop", ingest)
        .await
        .unwrap()
        .unwrap();
    bounded("the writer to stop", writer)
        .await
        .unwrap()
        .unwrap();
    forwarding.close().await;
    store.close().await;
}
