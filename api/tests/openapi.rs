//! The OpenAPI document generated from the route declarations: it reads as
//! OpenAPI 3.1, its schemas are valid JSON Schema 2020-12 and every
//! reference resolves, every route has its request and response schemas,
//! and docs/api.md's route table lists exactly its routes.

use std::collections::BTreeSet;

use serde_json::Value;

/// Routes answered without a client certificate.
const ANONYMOUS_ROUTES: &[&str] = &["/healthz", "/readyz"];

/// The one command route that takes no body (idempotent per person).
const BODYLESS_POSTS: &[&str] = &["/v1/persons/{insurer}/{insured}/forget"];

fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            found.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    found
}

/// Every `$ref` in `value`.
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => found.push(reference),
                    _ => references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// The schema of every media type of `content` (a request body or a
/// response); fails when one has none.
fn content_schemas<'a>(content: &'a Value, what: &str) -> Vec<&'a Value> {
    let content = content
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no content"));
    assert!(!content.is_empty(), "{what}: no content");
    content
        .iter()
        .map(|(media_type, media)| {
            media
                .get("schema")
                .unwrap_or_else(|| panic!("{what} {media_type}: no schema"))
        })
        .collect()
}

#[test]
fn the_document_is_openapi_3_1_with_valid_schemas() {
    let document = kiban_api::openapi_document();
    assert_eq!(document["openapi"], "3.1.0");
    let text = serde_json::to_string(&document).unwrap();
    let spec = oas3::from_json(&text).expect("the document reads as OpenAPI 3.1");
    assert_eq!(
        spec.paths.map(|paths| paths.len()),
        document["paths"].as_object().map(|paths| paths.len())
    );
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas are shared through components");
    for (name, schema) in schemas {
        assert!(
            jsonschema::draft202012::meta::is_valid(schema),
            "{name} is not a JSON Schema 2020-12: {schema}"
        );
    }
    let mut found = Vec::new();
    references(&document, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} points outside the schemas"));
        assert!(schemas.contains_key(name), "{reference} does not resolve");
    }
}

#[test]
fn every_route_has_its_request_and_response_schemas() {
    let document = kiban_api::openapi_document();
    let routes = operations(&document);
    assert!(routes.len() > 30, "{} routes", routes.len());
    for (method, path, operation) in routes {
        let what = format!("{method} {path}");
        assert!(operation["summary"].is_string(), "{what}: no summary");
        let responses = operation["responses"].as_object().expect(&what);
        let successes: Vec<_> = responses
            .iter()
            .filter(|(status, _)| status.starts_with('2'))
            .collect();
        assert!(!successes.is_empty(), "{what}: no success response");
        for (status, response) in successes {
            content_schemas(&response["content"], &format!("{what} {status}"));
        }
        if !ANONYMOUS_ROUTES.contains(&path.as_str()) {
            let problem = &responses.get("default").expect(&what)["content"];
            let schema = &problem[kiban_api::PROBLEM_JSON]["schema"];
            assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{what}");
            assert!(operation["security"].is_array(), "{what}: no security");
        }
        if method == "POST" && !BODYLESS_POSTS.contains(&path.as_str()) {
            let body = &operation["requestBody"];
            assert_eq!(body["required"], true, "{what}: no request body");
            content_schemas(&body["content"], &format!("{what} request"));
        }
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "path" && p["name"] == name));
            assert!(declared, "{what}: path parameter {name} undeclared");
        }
    }
}

#[test]
fn commands_declare_their_idempotency_key() {
    let document = kiban_api::openapi_document();
    let (_, _, operation) = operations(&document)
        .into_iter()
        .find(|(method, path, _)| method == "POST" && path == "/v1/subsidies")
        .expect("POST /v1/subsidies");
    let key = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == kiban_api::IDEMPOTENCY_KEY)
        .expect("the Idempotency-Key header");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], true);
    let created = &operation["responses"]["201"]["content"]["application/json"]["schema"];
    assert_eq!(created["$ref"], "#/components/schemas/CommandAccepted");
}

/// The `(method, path)` pairs of docs/api.md's "Routes" table.
fn documented_in_markdown() -> BTreeSet<(String, String)> {
    let markdown = include_str!("../../docs/api.md");
    let table = markdown
        .split("## Routes")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").nth(1))
        .expect("docs/api.md has a Routes table");
    let mut routes = BTreeSet::new();
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (method, paths) = (cells[1], cells[2]);
        for path in paths.split(", ") {
            let path = path.trim_matches('`');
            let path = path.split('?').next().unwrap();
            routes.insert((method.to_owned(), path.to_owned()));
        }
    }
    routes
}

#[test]
fn the_route_table_in_docs_lists_exactly_the_routes() {
    let document = kiban_api::openapi_document();
    let routes: BTreeSet<(String, String)> = operations(&document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    assert_eq!(documented_in_markdown(), routes);
}
