//! 利用者一覧 (caseload): the persons the office may see, with the
//! certification in force, its validity end (highlighted in the renewal
//! window), a certification in progress with its step and deadline
//! (highlighted when overdue), the last update, the person's name (a logged
//! read, `names.rs`); search by insured number or name; live updates over
//! Server-Sent Events.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use maud::{Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::json;

use kiban_events::UpdateNotice;
use kiban_events::domain::TerminalId;
use kiban_events::domain::certification::in_renewal_window;
use kiban_events::domain::insured::ViewingBasis;
use kiban_events::domain::jst_date;
use kiban_events::ids::OfficeNumber;
use kiban_projections::{CaseloadEntry, PAGE_ITEMS_MAX};
use kiban_store::Opened;

use super::names::{self, NAME_READS};
use super::person::{record_read, shown_name};
use super::staff;
use super::web::{Lang, Staff, UiError, care_level, date, step, time};
use crate::auth::{PersonId, insurer_sharing};
use crate::error::ApiError;
use crate::personal::{OpenedName, open_name};
use crate::state::AppState;
use crate::updates::{office_sse_checked, resume_after};

#[derive(Debug, Default, Deserialize)]
pub struct CaseloadQuery {
    /// Part of an insured or insurer number (digits only), or else of a
    /// name or its kana.
    #[serde(default)]
    q: String,
    /// The cursor of the next page.
    #[serde(default)]
    after: String,
}

/// One row's data.
struct Row {
    entry: CaseloadEntry,
    /// The name, once its read is logged (or 忘却済み); none when none was
    /// given or the read was refused.
    name: Option<OpenedName>,
    level: Option<(String, chrono::NaiveDate)>,
    renewal: bool,
    open: Option<OpenApplication>,
}

struct OpenApplication {
    step: String,
    due: Option<chrono::NaiveDate>,
    overdue: bool,
}

async fn load(
    state: &AppState,
    staff: &Staff,
    query: &CaseloadQuery,
) -> Result<(Vec<Row>, Option<String>), UiError> {
    let now = state.now();
    let today = jst_date(now);
    let lang = staff.lang();
    let read = &state.inner.read;
    let mut sharing = HashMap::new();
    let page = read
        .caseload(&staff.at.office, &query.after, PAGE_ITEMS_MAX, now)
        .await
        .map_err(ApiError::from)?;
    let search = Search::of(&query.q);
    let mut rows = Vec::new();
    for entry in page.items {
        if let Search::Number(digits) = &search
            && !entry.insured.contains(digits.as_str())
            && !entry.insurer.contains(digits.as_str())
        {
            continue;
        }
        let key = format!("{}-{}", entry.insurer, entry.insured);
        let person = PersonId::parse(&entry.insurer, &entry.insured)?;
        let Some(name) = row_name(state, staff, &person, &key, &search, &mut sharing).await? else {
            continue;
        };
        let eligibility = read.eligibility(&key, now).await.map_err(ApiError::from)?;
        let level = eligibility
            .and_then(|e| e.certification)
            .map(|c| (care_level(lang, c.level).to_owned(), c.valid_until));
        let renewal = level
            .as_ref()
            .is_some_and(|(_, until)| in_renewal_window(today, *until));
        let open = read
            .applications(&key, now)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .rev()
            .find(|a| a.status == "open")
            .map(|a| OpenApplication {
                step: a
                    .current_step
                    .as_deref()
                    .map(|s| step(lang, s))
                    .unwrap_or_default(),
                due: a.due_date,
                overdue: a.overdue,
            });
        rows.push(Row {
            entry,
            name,
            level,
            renewal,
            open,
        });
    }
    Ok((rows, page.next))
}

/// What the search box asks for.
enum Search {
    /// Nothing: the whole page.
    All,
    /// Part of an insured or insurer number.
    Number(String),
    /// Part of a name or its kana, normalised (`names::normalise`).
    Name(String),
}

impl Search {
    fn of(q: &str) -> Search {
        let q = q.trim();
        if q.is_empty() {
            Search::All
        } else if q.chars().all(|c| c.is_ascii_digit()) {
            Search::Number(q.to_owned())
        } else {
            Search::Name(names::normalise(q))
        }
    }
}

/// The name for `person`'s row, or `None` when a name search leaves the
/// row out. Names are opened only for persons whose insurer shares data
/// (the person page's rule), so a search never matches, nor reveals, a
/// name the office could not be shown.
async fn row_name(
    state: &AppState,
    staff: &Staff,
    person: &PersonId,
    key: &str,
    search: &Search,
    sharing: &mut HashMap<String, bool>,
) -> Result<Option<Option<OpenedName>>, UiError> {
    let insurer = person.insurer.to_string();
    let shares = match sharing.get(&insurer) {
        Some(shares) => *shares,
        None => {
            let shares = insurer_sharing(state, &person.insurer).await?;
            sharing.insert(insurer, shares);
            shares
        }
    };
    let name = if shares {
        let personal = state
            .inner
            .read
            .person(key)
            .await
            .map_err(ApiError::from)?
            .map(|doc| doc.personal())
            .unwrap_or_default();
        open_name(state, person, &personal).await?
    } else {
        None
    };
    if let Search::Name(needle) = search {
        let texts = name.iter().flat_map(|n| {
            [Some(&n.name), n.kana.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|opened| match opened {
                    Opened::Plain { value } => Some(value.as_str()),
                    _ => None,
                })
        });
        if !names::matches(needle, texts) {
            return Ok(None);
        }
    }
    Ok(Some(logged_name(state, staff, person, key, name).await?))
}

/// The name to show for `person`: a plain name only once its read is
/// logged for this staff session (`names.rs`); a refused read (no viewing
/// basis any more) shows none. 忘却済み and "none given" show no personal
/// data and are not logged.
async fn logged_name(
    state: &AppState,
    staff: &Staff,
    person: &PersonId,
    key: &str,
    name: Option<OpenedName>,
) -> Result<Option<OpenedName>, UiError> {
    let Some(name) = name else {
        return Ok(None);
    };
    if !matches!(name.name, Opened::Plain { .. }) || NAME_READS.logged(&staff.csrf, key) {
        return Ok(Some(name));
    }
    match record_read(state, staff, person).await {
        Ok(_) => {
            NAME_READS.remember(&staff.csrf, key, state.now());
            Ok(Some(name))
        }
        // The store failing fails the page.
        Err(error) if error.is_refusal() => Ok(None),
        Err(error) => Err(error),
    }
}

fn table_rows(lang: Lang, rows: &[Row]) -> Markup {
    html! {
        @if rows.is_empty() {
            tr { td colspan="8" { (lang.t("該当する利用者はいません。", "No persons.")) } }
        }
        @for row in rows {
            tr id={ "person-" (row.entry.insurer) "-" (row.entry.insured) } {
                td {
                    a href={ "/ui/persons/" (row.entry.insurer) "/" (row.entry.insured) } { (row.entry.insured) }
                }
                td class="name" { (shown_name(lang, row.name.as_ref())) }
                td { (row.entry.insurer) }
                td class="level" {
                    @match &row.level {
                        Some((level, _)) => { (level) }
                        None => { "—" }
                    }
                }
                td.validity.renewal[row.renewal] {
                    @if let Some((_, until)) = &row.level {
                        (date(*until))
                        @if row.renewal { " " span class="badge" { (lang.t("更新時期", "Renewal due")) } }
                    } @else { "—" }
                }
                td.progress.overdue[row.open.as_ref().is_some_and(|o| o.overdue)] {
                    @if let Some(open) = &row.open {
                        (open.step)
                        @if let Some(due) = open.due {
                            br; small { (lang.t("期限", "Due")) " " (date(due)) }
                        }
                        @if open.overdue { " " span class="badge" { (lang.t("期限超過", "Overdue")) } }
                    } @else { "—" }
                }
                td {
                    @match row.entry.basis {
                        ViewingBasis::Consent => { (lang.t("同意", "Consent")) }
                        ViewingBasis::CarePlanOffice => { (lang.t("居宅介護支援", "Care-plan office")) }
                    }
                }
                td { (time(row.entry.last_updated_at)) }
            }
        }
    }
}

/// `GET /ui/caseload?q=`
pub async fn page(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<CaseloadQuery>,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let (rows, next) = load(&state, &staff, &query).await?;
    let live = format!(
        "/ui/caseload/rows?q={}&after={}",
        utf8_percent_encode(&query.q, NON_ALPHANUMERIC),
        utf8_percent_encode(&query.after, NON_ALPHANUMERIC)
    );
    let body = html! {
        form method="get" action="/ui/caseload" class="search" role="search" {
            label for="q" { (lang.t("被保険者番号・氏名・フリガナで検索", "Search by insured number, name or kana")) }
            input id="q" name="q" type="search" value=(query.q);
            button type="submit" id="search" { (lang.t("検索", "Search")) }
        }
        p id="live-status" class="live-status" aria-live="polite" {}
        table class="caseload" {
            caption { (lang.t("閲覧できる利用者", "Persons this office may see")) }
            thead {
                tr {
                    th scope="col" { (lang.t("被保険者番号", "Insured number")) }
                    th scope="col" { (lang.t("氏名", "Name")) }
                    th scope="col" { (lang.t("保険者番号", "Insurer")) }
                    th scope="col" { (lang.t("要介護度", "Care level")) }
                    th scope="col" { (lang.t("有効期間満了日", "Valid until")) }
                    th scope="col" { (lang.t("認定申請の状況", "Certification in progress")) }
                    th scope="col" { (lang.t("閲覧根拠", "Basis")) }
                    th scope="col" { (lang.t("最終更新", "Last update")) }
                }
            }
            tbody id="caseload-rows" data-live=(live) { (table_rows(lang, &rows)) }
        }
        @if let Some(next) = next {
            p { a href={ "/ui/caseload?after=" (next) } { (lang.t("次のページ", "Next page")) } }
        }
    };
    Ok(staff.page(lang.t("利用者一覧", "Caseload"), body))
}

/// `GET /ui/caseload/rows?q=`: the table body alone, fetched by the page
/// when an update arrives.
pub async fn rows(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<CaseloadQuery>,
) -> Result<Markup, UiError> {
    let (rows, _) = load(&state, &staff, &query).await?;
    Ok(table_rows(staff.lang(), &rows))
}

/// `GET /ui/events`: Server-Sent Events of what happens to the persons the
/// office may see (the API's relevance rule), unnamed so that the page's
/// `onmessage` gets them all; `Last-Event-ID` resumes.
pub async fn events(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let office = staff.at.office.clone();
    let after = resume_after(&state, &headers).await?;
    let token = axum_extra::extract::cookie::CookieJar::from_headers(&headers)
        .get(super::SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .unwrap_or_default();
    let terminal = (
        staff.at.terminal.clone(),
        staff.at.caller.fingerprint.clone(),
    );
    let ended = Box::pin(session_ended(
        state.clone(),
        token,
        office.clone(),
        terminal.clone(),
    ));
    Ok(office_sse_checked(
        state,
        office,
        after,
        screen_event,
        Some(terminal),
        Some(ended),
    ))
}

/// How often an open `/ui/events` stream checks that its session is still
/// live and its terminal still active, in milliseconds: a logout, an idle
/// or expired session, a password reset or a terminal reported lost ends
/// the stream within this time.
pub const SESSION_RECHECK_MS: u64 = 2_000;

/// Completes when the session of `token` has ended (without renewing its
/// idle time: an open page is not activity) or the terminal no longer
/// passes the terminal check.
async fn session_ended(
    state: AppState,
    token: String,
    office: OfficeNumber,
    terminal: (TerminalId, String),
) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(SESSION_RECHECK_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let db = state.inner.projections.db();
        let live = staff::session_live(db, &token, state.now())
            .await
            .unwrap_or(false);
        let active = live
            && crate::auth::check_terminal(&state, &office, &terminal.0, &terminal.1)
                .await
                .is_ok();
        if !active {
            return;
        }
    }
}

/// An unnamed event (the page's `onmessage` gets them all) naming the
/// position and the event type.
fn screen_event(event: &UpdateNotice) -> Event {
    Event::default().id(event.position.to_string()).data(
        json!({
            "position": event.position,
            "event_type": event.event_type.as_str(),
        })
        .to_string(),
    )
}
