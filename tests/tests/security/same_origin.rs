//! Low item: a logged read on the web screen (the person page, a document)
//! needs a same-origin request. Before the fix a page on a sibling
//! subdomain could make a signed-in staff member's browser open a person's
//! page (an `<img>` or a link) and so append an access-log entry.

use kiban_api::ui::SESSION_COOKIE;
use kiban_tests::{TestDb, bounded};
use reqwest::StatusCode;

use crate::api::{Harness, office_t01};
use crate::projections::on_both_backends;
use crate::projections::script::{INSURER, PERSON};

on_both_backends!(and_pair: a_logged_read_from_another_site_is_refused_and_not_logged);

async fn a_logged_read_from_another_site_is_refused_and_not_logged(db: &TestDb) {
    let h = Harness::start(db).await;
    let session = super::staff_session(&h).await;
    let page = format!("{}/ui/persons/{INSURER}/{PERSON}", h.base);
    let open = |site: Option<&'static str>| {
        let mut request = h
            .client(Some(&office_t01()))
            .get(&page)
            .header("cookie", format!("{SESSION_COOKIE}={}", session.token));
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        bounded("person page", request.send())
    };
    let head = h.store.head().await.unwrap().position;
    for site in ["same-site", "cross-site"] {
        let response = open(Some(site)).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{site}");
    }
    assert_eq!(
        h.store.head().await.unwrap().position,
        head,
        "no access-log entry for a refused read"
    );
    for site in [Some("same-origin"), Some("none"), None] {
        let response = open(site).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{site:?}");
    }
    assert_eq!(
        h.store.head().await.unwrap().position,
        head + 3,
        "each read is logged"
    );
    h.stop().await;
}
