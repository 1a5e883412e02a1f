//! `docs/events.md` is generated from the code; this test fails when they
//! drift apart and rewrites the file when `UPDATE_DOCS=1`.

use std::path::PathBuf;

use kiban_events::domain::ServiceTypeCode;
use kiban_events::domain::catalog_markdown;
use kiban_events::domain::subsidy::{SERVICE_TYPE_CATEGORIES, service_of};

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

const TABLE_START: &str = "<!-- service-type-table:start -->\n";
const TABLE_END: &str = "<!-- service-type-table:end -->";

fn service_type_table() -> String {
    let mut out = String::from(
        "| code | service (サービス種類) | counts as | category | readers | limit (yen) |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for (code, name, category) in SERVICE_TYPE_CATEGORIES {
        let parsed = ServiceTypeCode::parse(code).expect("valid code");
        let service = service_of(&parsed);
        let counts_as = if service == *code {
            "—".to_owned()
        } else {
            format!("`{service}`")
        };
        out.push_str(&format!(
            "| `{code}` | {name} | {counts_as} | {} | {} | {} |\n",
            category.japanese_name(),
            category.reader_cap(),
            category.limit().get()
        ));
    }
    out
}

#[test]
fn docs_domain_md_lists_the_service_type_table_of_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/domain.md");
    let text = std::fs::read_to_string(&path).expect("docs/domain.md exists");
    let start = text.find(TABLE_START).expect("start marker") + TABLE_START.len();
    let end = text.find(TABLE_END).expect("end marker");
    let table = service_type_table();
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") && text[start..end] != table {
        let updated = format!("{}{}{}", &text[..start], table, &text[end..]);
        std::fs::write(&path, updated).expect("write docs/domain.md");
        return;
    }
    assert!(
        text[start..end] == table,
        "docs/domain.md's table is out of date: run `UPDATE_DOCS=1 cargo test -p kiban-events --test docs`"
    );
}
