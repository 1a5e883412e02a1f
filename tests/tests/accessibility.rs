//! Accessibility checks for the browser tests (JIS X 8341-3:2016, i.e.
//! WCAG 2.1 level AA; docs/ui.md): [`assert_accessible`] runs axe-core
//! (vendored, `tests/axe/`) inside the page and fails on any violation;
//! [`assert_keyboard_reaches`] walks a form with the Tab key alone. Shared
//! by every screen's browser test (`/ui`, `/me`).

use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::Value;

/// axe-core 4.14.1 from the npm registry, unchanged (tests/axe/README.md).
const AXE: &str = include_str!("../axe/axe.min.js");

/// The axe-core rules run: every WCAG 2.0/2.1 level A and AA rule and axe's
/// best practices (landmarks, one main heading, ...); nothing is switched
/// off.
const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"];

/// Tab presses before a form's submit button must have been reached.
const TAB_PRESSES_MAX: usize = 80;

/// What axe-core found on a page.
#[derive(Debug)]
pub struct AxeResult {
    /// `<html lang>`.
    pub lang: String,
    /// The violations: rule id, impact, help text, elements.
    pub violations: Vec<Value>,
    /// How many rules passed.
    pub passes: usize,
    /// The rules axe could not decide alone ("needs review").
    pub incomplete: Vec<String>,
}

/// Runs axe-core on the page the browser shows (`AXE_TAGS`).
pub async fn axe(client: &Client, screen: &str) -> AxeResult {
    client
        .execute(AXE, vec![])
        .await
        .unwrap_or_else(|e| panic!("{screen}: axe-core did not load: {e}"));
    let script = r#"
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: arguments[0]}})
          .then(results => done({
            lang: document.documentElement.lang,
            passes: results.passes.length,
            incomplete: results.incomplete.map(r => r.id),
            violations: results.violations.map(v => ({
              id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary),
            })),
          }))
          .catch(error => done({error: String(error)}));
    "#;
    let result = client
        .execute_async(script, vec![serde_json::json!(AXE_TAGS)])
        .await
        .unwrap_or_else(|e| panic!("{screen}: axe-core did not run: {e}"));
    assert_eq!(result["error"], Value::Null, "{screen}: axe-core failed");
    AxeResult {
        lang: result["lang"].as_str().unwrap_or_default().to_owned(),
        violations: result["violations"].as_array().cloned().unwrap_or_default(),
        passes: result["passes"].as_u64().unwrap_or_default() as usize,
        incomplete: result["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect(),
    }
}

/// Runs axe-core on the page the browser shows and fails on any violation,
/// naming `screen`, each rule, its help text and the elements. The page's
/// `<html lang>` must be `ja` or `en`. Prints one line per screen (rules
/// passed, rules needing review) for docs/ui.md.
pub async fn assert_accessible(client: &Client, screen: &str) {
    let result = axe(client, screen).await;
    assert!(
        result.lang == "ja" || result.lang == "en",
        "{screen}: <html lang={:?}>, not ja or en",
        result.lang
    );
    assert!(
        result.violations.is_empty(),
        "{screen}: {} accessibility violation(s):\n{}",
        result.violations.len(),
        serde_json::to_string_pretty(&result.violations).unwrap()
    );
    println!(
        "axe {screen}: lang={}, 0 violations, {} rules passed, needs review: {:?}",
        result.lang, result.passes, result.incomplete
    );
}

/// The check itself can fail: a page with an image without text and no
/// `lang` gives violations of exactly those rules.
pub async fn assert_axe_finds_violations(client: &Client) {
    client
        .goto("data:text/html;charset=utf-8,<!doctype html><html><head><title>t</title></head><body><main><h1>t</h1><img src=\"x.png\"></main></body></html>")
        .await
        .unwrap();
    let result = axe(client, "a page with violations").await;
    let ids: Vec<&str> = result
        .violations
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert!(ids.contains(&"image-alt"), "{ids:?}");
    assert!(ids.contains(&"html-has-lang"), "{ids:?}");
}

/// Presses Tab once.
async fn press_tab(client: &Client) {
    let tab: char = Key::Tab.into();
    let keys = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: tab })
        .then(KeyAction::Up { value: tab });
    client.perform_actions(keys).await.unwrap();
}

/// The id (or, without one, the tag name) of the focused element.
async fn focused(client: &Client) -> String {
    let value = client
        .execute(
            "const e = document.activeElement; return e ? (e.id || e.tagName.toLowerCase()) : '';",
            vec![],
        )
        .await
        .unwrap();
    value.as_str().unwrap_or_default().to_owned()
}

/// From the top of the page, the Tab key alone focuses each of `fields`
/// (element ids) in this order and then `submit`; other focusable elements
/// (skip link, navigation, help links) may come between. Returns the
/// focus order seen, for the failure message of a caller's own checks.
pub async fn assert_keyboard_reaches(
    client: &Client,
    screen: &str,
    fields: &[&str],
    submit: &str,
) -> Vec<String> {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(submit))
        .await
        .unwrap_or_else(|e| panic!("{screen}: #{submit} is not on the page: {e}"));
    // Start where a keyboard user starts: at the top of the page. A blur
    // would not do: the browser continues from the element last focused
    // (an `autofocus` field), so focus a mark before everything instead,
    // which the first Tab leaves and which is removed then.
    client
        .execute(
            "document.body.insertAdjacentHTML('afterbegin', '<span id=\"kiban-tab-start\" tabindex=\"-1\"></span>');\n\
             document.getElementById('kiban-tab-start').focus(); window.scrollTo(0, 0);",
            vec![],
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut next = fields.iter().chain(std::iter::once(&submit)).peekable();
    while next.peek().is_some() {
        assert!(
            seen.len() < TAB_PRESSES_MAX,
            "{screen}: after {TAB_PRESSES_MAX} Tab presses, #{} was never focused; order: {seen:?}",
            next.peek().unwrap()
        );
        press_tab(client).await;
        if seen.is_empty() {
            client
                .execute(
                    "document.getElementById('kiban-tab-start').remove();",
                    vec![],
                )
                .await
                .unwrap();
        }
        let id = focused(client).await;
        if next.peek().is_some_and(|wanted| **wanted == id) {
            next.next();
        } else {
            assert!(
                !fields.contains(&id.as_str()) && id != submit,
                "{screen}: #{id} was focused out of order; order so far: {seen:?}, expected {fields:?} then {submit}"
            );
        }
        seen.push(id);
    }
    // Leave the page as it was found (screenshots follow).
    client
        .execute("document.activeElement.blur();", vec![])
        .await
        .unwrap();
    seen
}
