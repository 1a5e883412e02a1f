//! The nats-server harness itself: start, restart on the same port and
//! storage, cluster.

use async_nats::jetstream;
use kiban_bus::streams::{ensure_streams, ingest_consumer};
use kiban_bus::subjects::{EVENTS_STREAM, INGEST_STREAM};
use kiban_bus::testing::{NatsCluster, NatsServer, stream_options};

#[tokio::test]
async fn a_server_starts_restarts_on_the_same_port_and_keeps_its_streams() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client);
    ensure_streams(&context, &stream_options(1)).await.unwrap();
    // Idempotent: a second call changes nothing and does not fail.
    ensure_streams(&context, &stream_options(1)).await.unwrap();
    ingest_consumer(&context).await.unwrap();
    context
        .publish("kiban.ingest.131016.certification.filed", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client);
    let mut stream = context.get_stream(INGEST_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    context.get_stream(EVENTS_STREAM).await.unwrap();
}

#[tokio::test]
async fn a_three_node_cluster_holds_r3_streams() {
    let cluster = NatsCluster::start().await.unwrap();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    cluster.wait_for_jetstream(&client).await.unwrap();
    let context = jetstream::new(client);
    ensure_streams(&context, &stream_options(3)).await.unwrap();
    let mut stream = context.get_stream(INGEST_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.cluster.as_ref().map(|c| c.replicas.len()), Some(2));
}
