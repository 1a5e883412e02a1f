//! Item 4 (first part): an office's update stream ends when its terminal
//! is reported lost, instead of outliving the suspension.

use futures::StreamExt;
use kiban_tests::{TestDb, bounded};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::api::{Harness, federation, office_t01};
use crate::projections::on_both_backends;
use crate::projections::script::{OFFICE, TERMINAL};

on_both_backends!(an_update_stream_ends_when_its_terminal_is_reported_lost);

async fn an_update_stream_ends_when_its_terminal_is_reported_lost(db: &TestDb) {
    let h = Harness::start(db).await;
    let response = bounded(
        "updates",
        h.client(Some(&office_t01()))
            .get(format!("{}/v1/offices/{OFFICE}/updates", h.base))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let lost = format!("/v1/offices/{OFFICE}/terminals/{TERMINAL}/lost");
    let (status, body) = h
        .call(
            Some(&federation()),
            Method::POST,
            &lost,
            Some(json!({"loss": "stolen"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Only the server can end the stream; before the fix it stayed open.
    let mut stream = response.bytes_stream();
    bounded("the stream of a suspended terminal ends", async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    h.stop().await;
}
