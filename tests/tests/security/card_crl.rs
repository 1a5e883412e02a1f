//! Low item: every card verification (a consent, a person's sign-in) read
//! and parsed the JPKI CRL file — up to 64 MiB — on a runtime thread. Now
//! the checked CRL is kept while the file is unchanged (size, modification
//! time, inode) and parsed again, on the blocking pool, only when it
//! changes; the RSA checks run on the blocking pool too.
//!
//! Observable over HTTPS: bytes overwritten in place with the file's size
//! and modification time kept are not read again (the list parsed before
//! still decides), while a list replaced the usual way takes effect at the
//! next sign-in.

use std::time::Duration;

use kiban_card::test_pki::{TEST_CARD_SERIAL, test_not_before};
use kiban_tests::TestDb;
use reqwest::StatusCode;

use super::own_api::Prepared;
use crate::api::{federation, own_insurer, test_cards};
use crate::person_view::card;
use crate::projections::on_both_backends;
use crate::projections::script::{PERSON, history};

on_both_backends!(the_card_crl_is_parsed_once_per_version_of_its_file);

/// Writes `bytes` to `path` the way an operator replaces a CRL: a new file
/// renamed into place.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn the_card_crl_is_parsed_once_per_version_of_its_file(db: &TestDb) {
    let prepared = Prepared::new(db, &[own_insurer(), federation()]).await;
    let last = history(&prepared.engine, &"c".repeat(64)).await;
    let h = prepared.serve(db, last).await;
    h.link_card(PERSON, card("first")).await;
    let path = h.card_crl_path();
    let (status, body) = h.try_sign_in(card("first")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Overwritten in place with zeros, size and modification time kept:
    // the list checked before still decides (it is not parsed again).
    let original = std::fs::read(&path).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, vec![0u8; original.len()]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let (status, body) = h.try_sign_in(card("first")).await;
    assert_eq!(status, StatusCode::CREATED, "the kept list: {body}");

    // Replaced by a list revoking the card: refused at once.
    let ca = &test_cards().trusted_ca;
    let three_years = Duration::from_secs(3 * 365 * 24 * 3600);
    let revoking = ca.issue_crl(&[TEST_CARD_SERIAL], test_not_before(), three_years);
    replace(&path, &revoking);
    let (status, body) = h.try_sign_in(card("first")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("card_revoked")),
        "{body}"
    );
    // Replaced by a broken file: unavailable (never a sign-in).
    replace(&path, b"not a CRL");
    let (status, body) = h.try_sign_in(card("first")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // And by a clean list again.
    replace(&path, &ca.issue_crl(&[], test_not_before(), three_years));
    let (status, body) = h.try_sign_in(card("first")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    h.served.stop().await;
}
