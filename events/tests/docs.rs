//! `docs/events.md` is generated from the code; this test fails when they
//! drift apart and rewrites the file when `UPDATE_DOCS=1`.

use std::path::PathBuf;

use kiban_events::domain::catalog_markdown;

#[test]
fn docs_events_md_matches_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/events.md");
    let rendered = catalog_markdown();
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &rendered).expect("write docs/events.md");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/events.md is out of date: run `UPDATE_DOCS=1 cargo test -p kiban-events --test docs`"
    );
}
