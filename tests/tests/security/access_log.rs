//! Item 5: the access-log routes page through every entry, newest first on
//! request; before the fix they showed only the 500 oldest.

use std::collections::BTreeSet;

use kiban_tests::{TestDb, bounded};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Harness, auditor, federation, other_office};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, PERSON, day};

on_both_backends!(and_pair: later_reads_are_on_the_access_log_pages_newest_first);

/// More reads than one page holds.
const READS: usize = kiban_projections::PAGE_ITEMS_MAX + 20;

/// `GET path` as an auditor: the entries and the `Link: rel="next"` target.
async fn page(h: &Harness, path: &str) -> (Vec<Value>, Option<String>) {
    let response = bounded(
        "access log",
        h.client(Some(&auditor()))
            .get(format!("{}{path}", h.base))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let next = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .and_then(|link| link.strip_prefix('<'))
        .and_then(|link| link.split_once('>'))
        .map(|(target, _)| target.to_owned());
    let entries: Vec<Value> = response.json().await.unwrap();
    (entries, next)
}

fn positions(entries: &[Value]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

async fn later_reads_are_on_the_access_log_pages_newest_first(db: &TestDb) {
    let h = Harness::start(db).await;
    let consent = json!({"office": "1319999999", "terminal": "T-09", "expires_at": day(40)});
    let path = format!("/v1/persons/{INSURER}/{PERSON}/consents");
    let (status, body) = h
        .call(
            Some(&federation()),
            reqwest::Method::POST,
            &path,
            Some(consent),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client = h.client(Some(&other_office()));
    let read = format!("{}/v1/persons/{INSURER}/{PERSON}/eligibility", h.base);
    for _ in 0..READS {
        let response = bounded("read", client.get(&read).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    h.caught_up().await;
    let last_read = h.store.head().await.unwrap().position;

    for route in [
        "/v1/access-log".to_owned(),
        format!("/v1/persons/{INSURER}/{PERSON}/access-log"),
        "/v1/audit/offices/1319999999/access-log".to_owned(),
    ] {
        // Newest first: the last read is on the first page.
        let (first, next) = page(&h, &format!("{route}?order=newest&limit=100")).await;
        assert_eq!(first.len(), 100, "{route}");
        assert_eq!(positions(&first)[0], last_read, "{route}");
        assert!(positions(&first).windows(2).all(|w| w[0] > w[1]), "{route}");
        assert!(next.is_some(), "{route}: a full page names the next");

        // Oldest first, followed to the end: every read once, in order.
        let (mut all, mut next) = (Vec::new(), Some(format!("{route}?limit=200")));
        while let Some(path) = next {
            let (entries, following) = page(&h, &path).await;
            all.extend(positions(&entries));
            next = following;
        }
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{route}");
        assert!(all.len() >= READS, "{route}: {} entries", all.len());
        assert_eq!(all.last(), Some(&last_read), "{route}");
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
    }
    h.stop().await;
}
