//! Request plumbing of the web screen: language, the certificate and
//! session extractors, CSRF, error pages, the page layout, login and
//! logout, static assets.

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use kiban_events::domain::catalog::spec_of;
use kiban_events::domain::{CareLevel, TerminalId, jst};
use kiban_events::ids::OfficeNumber;

use super::staff::{self, LoginOutcome};
use crate::auth::Caller;
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// The session cookie (a random token; the database keeps its SHA-256).
pub const SESSION_COOKIE: &str = "kiban_ui_session";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "kiban_ui_login";
/// The language cookie (`ja` or `en`).
pub const LANG_COOKIE: &str = "kiban_ui_lang";
/// The hidden field carrying the CSRF token in every form.
pub const CSRF_FIELD: &str = "csrf";

/// The screen's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// The text in this language.
    pub fn t<'a>(self, ja: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }

    /// `ja` or `en`: the page's `lang`.
    pub fn code(self) -> &'static str {
        self.t("ja", "en")
    }

    /// The language a request asks for: `?lang=`, else the cookie, else
    /// Japanese.
    pub fn of(parts: &Parts) -> Lang {
        let query = parts.uri.query().unwrap_or("");
        if query.split('&').any(|pair| pair == "lang=en") {
            return Lang::En;
        }
        if query.split('&').any(|pair| pair == "lang=ja") {
            return Lang::Ja;
        }
        match CookieJar::from_headers(&parts.headers)
            .get(LANG_COOKIE)
            .map(Cookie::value)
        {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }
}

/// The value of cookie `name` in `jar`.
pub fn cookie_value(jar: &CookieJar, name: &str) -> Option<String> {
    jar.get(name).map(|cookie| cookie.value().to_owned())
}

/// A cookie of the screen: sent only under `/ui`, only over TLS, never to
/// scripts, never on a request from another site; gone after
/// `max_age_seconds` (0 removes it).
fn ui_cookie(name: &'static str, value: String, max_age_seconds: u64) -> Cookie<'static> {
    cookie_under("/ui", name, value, max_age_seconds)
}

/// A cookie sent only under `path` (`/ui`, or `/me` for the person's view),
/// only over TLS, never to scripts, never on a request from another site;
/// gone after `max_age_seconds` (0 removes it).
pub fn cookie_under(
    path: &'static str,
    name: &'static str,
    value: String,
    max_age_seconds: u64,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path(path)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age_seconds).unwrap_or(i64::MAX),
        ))
        .build()
}

/// A refusal shown as a page: Japanese and English, never internals.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    kind: ProblemKind,
    detail: String,
    /// Shown on a page of the person's view (`/me`), not the office's.
    person_view: bool,
}

impl UiError {
    /// Whether the request was refused (a 4xx: a rule, a missing basis),
    /// not failed.
    pub fn is_refusal(&self) -> bool {
        self.status.is_client_error()
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.kind.status(),
            kind: error.kind,
            detail: error.detail,
            person_view: false,
        }
    }
}

impl From<sqlx::Error> for UiError {
    fn from(error: sqlx::Error) -> Self {
        tracing::warn!(%error, "staff tables unavailable");
        ApiError::new(
            ProblemKind::Unavailable,
            "The database is unavailable; retry later.",
        )
        .into()
    }
}

impl From<staff::StaffError> for UiError {
    fn from(error: staff::StaffError) -> Self {
        match error {
            staff::StaffError::Database(error) => error.into(),
            other => ApiError::internal(&other).into(),
        }
    }
}

impl UiError {
    /// A form field refused before any command: 400 with `detail`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        ApiError::validation(detail).into()
    }

    /// The same refusal shown as a page of the person's view: its own
    /// words for a missing sign-in, a link back to `/me`.
    pub fn in_person_view(mut self) -> Self {
        self.person_view = true;
        self
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (ja, en) = match self.kind {
            ProblemKind::TerminalSuspended => (
                "この端末は紛失・盗難の届出により利用停止されています",
                "This terminal was reported lost or stolen and is suspended",
            ),
            ProblemKind::Unauthenticated if self.person_view => (
                "マイナンバーカードでのサインインが必要です",
                "Sign in with your My Number card",
            ),
            ProblemKind::Unauthenticated => (
                "端末のクライアント証明書が確認できません",
                "No valid terminal client certificate",
            ),
            ProblemKind::Forbidden | ProblemKind::ConsentRequired => {
                ("この操作は許可されていません", "This is not permitted")
            }
            ProblemKind::NotFound => ("見つかりません", "Not found"),
            ProblemKind::Validation
            | ProblemKind::MethodNotAllowed
            | ProblemKind::PayloadTooLarge
            | ProblemKind::UnsupportedMediaType => {
                ("入力内容を確認してください", "Please check the input")
            }
            ProblemKind::Rejected | ProblemKind::Conflict => (
                "申請は受け付けられませんでした",
                "The request was not accepted",
            ),
            ProblemKind::RateLimited
            | ProblemKind::Unavailable
            | ProblemKind::Timeout
            | ProblemKind::Internal => (
                "一時的に利用できません。しばらくしてから再度お試しください",
                "Temporarily unavailable; please try again later",
            ),
        };
        let advice = match self.kind {
            ProblemKind::TerminalSuspended => Some((
                "別の登録済み端末から利用するか、国保中央会に端末の再登録を依頼してください。",
                "Use another registered terminal, or ask the federation to register this one again.",
            )),
            _ => None,
        };
        let body = html! {
            (DOCTYPE)
            html lang="ja" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (ja) " / " (en) }
                    link rel="stylesheet" href="/ui/static/ui.css";
                }
                body {
                    main id="main" class="error-page" data-problem=(self.kind.slug()) {
                        h1 { (ja) }
                        p lang="en" class="en" { (en) }
                        @if let Some((advice_ja, advice_en)) = advice {
                            p { (advice_ja) }
                            p lang="en" class="en" { (advice_en) }
                        }
                        p class="detail" lang="en" { (self.detail) }
                        @if self.person_view {
                            p { a href="/me" { "ご自身の情報へ / Back to your record" } }
                        } @else {
                            p { a href="/ui/caseload" { "利用者一覧へ / Back to the caseload" } }
                        }
                    }
                }
            }
        };
        (self.status, body).into_response()
    }
}

/// The office terminal behind a request (certificate checked with the
/// API's rules: registered, not suspended, the registered credential).
#[derive(Debug, Clone)]
pub struct Terminal {
    pub caller: Caller,
    pub office: OfficeNumber,
    pub terminal: TerminalId,
    pub lang: Lang,
    /// The request path, for the language toggle.
    pub path: String,
}

impl FromRequestParts<AppState> for Terminal {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let (office, terminal) = caller
            .office_terminal(
                state,
                "The web screen is for care-office terminals; other principals use the API.",
            )
            .await?;
        Ok(Terminal {
            office: office.clone(),
            terminal: terminal.clone(),
            lang: Lang::of(parts),
            // Nested under /ui, the router strips the prefix.
            path: format!("/ui{}", parts.uri.path()),
            caller,
        })
    }
}

/// A logged-in member of staff at an active terminal.
#[derive(Debug, Clone)]
pub struct Staff {
    pub at: Terminal,
    pub user: String,
    pub csrf: String,
}

/// What a page needs when the staff member is not logged in.
pub enum StaffRejection {
    Refused(UiError),
    Login(Lang),
}

impl IntoResponse for StaffRejection {
    fn into_response(self) -> Response {
        match self {
            StaffRejection::Refused(error) => error.into_response(),
            StaffRejection::Login(lang) => {
                Redirect::to(&format!("/ui/login?lang={}", lang.code())).into_response()
            }
        }
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = StaffRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, StaffRejection> {
        let at = Terminal::from_request_parts(parts, state)
            .await
            .map_err(StaffRejection::Refused)?;
        let Some(token) = cookie_value(&CookieJar::from_headers(&parts.headers), SESSION_COOKIE)
        else {
            return Err(StaffRejection::Login(at.lang));
        };
        let db = state.inner.projections.db();
        // An error here is an unavailable database: no session.
        let found = staff::session(db, &token, state.now())
            .await
            .unwrap_or_default();
        match found {
            Some(session)
                if session.office == at.office.as_str()
                    && session.terminal == at.terminal.as_str() =>
            {
                Ok(Staff {
                    at,
                    user: session.user,
                    csrf: session.csrf,
                })
            }
            _ => Err(StaffRejection::Login(at.lang)),
        }
    }
}

impl Staff {
    /// The language.
    pub fn lang(&self) -> Lang {
        self.at.lang
    }

    /// Refuses a form whose CSRF token is not the session's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), UiError> {
        if staff::same_secret(submitted, &self.csrf) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "The form is stale or was not sent by this screen (CSRF token mismatch); reload and try again.",
            )
            .into())
        }
    }

    /// A page of the screen for this staff member.
    pub fn page(&self, title: &str, body: Markup) -> Markup {
        layout(self.lang(), title, Some(self), &self.at.path, body)
    }

    /// The hidden CSRF field of a form.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }
}

/// The page frame: navigation, who is logged in, the language toggle.
pub fn layout(lang: Lang, title: &str, staff: Option<&Staff>, path: &str, body: Markup) -> Markup {
    let other = other_lang(lang);
    let header = html! {
        @if let Some(staff) = staff {
            nav aria-label=(lang.t("メニュー", "Menu")) {
                a href="/ui/caseload" { (lang.t("利用者一覧", "Caseload")) }
                a href="/ui/care-plan" { (lang.t("計画作成依頼届出", "Care-plan notification")) }
                a href="/ui/subsidy" { (lang.t("助成金申請", "Subsidy")) }
                a href="/ui/terminals" { (lang.t("端末管理", "Terminals")) }
            }
            span class="who" {
                (staff.user) " · " (staff.at.office) " · " (staff.at.terminal.as_str())
            }
            form method="post" action="/ui/logout" class="inline" {
                (staff.csrf_field())
                button type="submit" { (lang.t("ログアウト", "Log out")) }
            }
        }
    };
    let toggle = format!("/ui/lang?to={}&back={path}", other.0);
    frame(lang, title, header, &toggle, body)
}

/// The other language than `lang`: its code and its name in itself.
pub fn other_lang(lang: Lang) -> (&'static str, &'static str) {
    match lang {
        Lang::Ja => ("en", "English"),
        Lang::En => ("ja", "日本語"),
    }
}

/// The frame of every page (the office screen's and the person's view):
/// `lang`, the header with `header` inside and the language toggle to
/// `toggle_href`, the skip link, one `h1` of `title`.
pub fn frame(lang: Lang, title: &str, header: Markup, toggle_href: &str, body: Markup) -> Markup {
    let other = other_lang(lang);
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — kiban" }
                link rel="stylesheet" href="/ui/static/ui.css";
                script src="/ui/static/ui.js" defer {}
            }
            body {
                a class="skip" href="#main" { (lang.t("本文へ移動", "Skip to content")) }
                header {
                    span class="brand" { (lang.t("介護情報基盤", "Care information platform")) }
                    (header)
                    a class="lang" hreflang=(other.0) lang=(other.0) href=(toggle_href) { (other.1) }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// `GET /ui/`
pub async fn home() -> Redirect {
    Redirect::to("/ui/caseload")
}

const CSS: &str = include_str!("../../static/ui.css");
const JS: &str = include_str!("../../static/ui.js");

/// `GET /ui/static/ui.css`
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
}

/// `GET /ui/static/ui.js`
pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
}

/// Strict headers on every screen: scripts and styles from this origin
/// only, no framing, no referrer, no caching of personal pages.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Unknown `/ui` paths.
pub async fn not_found() -> UiError {
    ApiError::not_found("No such screen.").into()
}

#[derive(Debug, Deserialize)]
pub struct SwitchQuery {
    to: String,
    #[serde(default)]
    back: String,
}

/// `GET /ui/lang?to=en&back=/ui/…`: sets the language cookie and goes back.
pub async fn switch_language(jar: CookieJar, Query(query): Query<SwitchQuery>) -> Response {
    let lang = if query.to == "en" { "en" } else { "ja" };
    let safe_back = query.back.starts_with("/ui/")
        && query
            .back
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    let back = if safe_back {
        query.back.as_str()
    } else {
        "/ui/caseload"
    };
    let jar = jar.add(ui_cookie(LANG_COOKIE, lang.to_owned(), 365 * 24 * 3600));
    (jar, Redirect::to(back)).into_response()
}

fn login_form(at: &Terminal, token: &str, message: Option<&str>) -> Markup {
    let lang = at.lang;
    let body = html! {
        p { (lang.t("事業所番号", "Office number")) ": " strong { (at.office) } " · "
            (lang.t("端末", "Terminal")) ": " strong { (at.terminal.as_str()) } }
        @if let Some(message) = message {
            p class="error" role="alert" id="login-error" { (message) }
        }
        form method="post" action="/ui/login" class="card narrow" {
            input type="hidden" name=(CSRF_FIELD) value=(token);
            label for="user" { (lang.t("ユーザーID", "User ID")) }
            input id="user" name="user" type="text" autocomplete="username" required autofocus;
            label for="password" { (lang.t("パスワード", "Password")) }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" id="login" { (lang.t("ログイン", "Log in")) }
        }
    };
    layout(
        lang,
        lang.t("職員ログイン", "Staff login"),
        None,
        &at.path,
        body,
    )
}

/// `GET /ui/login`
pub async fn login_page(at: Terminal, jar: CookieJar) -> Response {
    let token = staff::random_token();
    let page = login_form(&at, &token, None);
    (jar.add(login_cookie(token)), page).into_response()
}

/// The login form's CSRF cookie: valid for an hour of typing.
fn login_cookie(token: String) -> Cookie<'static> {
    ui_cookie(LOGIN_COOKIE, token, LOGIN_FORM_SECONDS)
}

/// How long a login form may be left open before it is stale, in seconds.
const LOGIN_FORM_SECONDS: u64 = 3600;

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    user: String,
    password: String,
}

/// `POST /ui/login`
pub async fn login_submit(
    State(state): State<AppState>,
    at: Terminal,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    let lang = at.lang;
    let expected = cookie_value(&jar, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !staff::same_secret(&form.csrf, &expected) {
        return Err(ApiError::forbidden(
            "The login form is stale (CSRF token mismatch); reload the login page.",
        )
        .into());
    }
    let now = state.now();
    let outcome = staff::login(
        state.inner.projections.db(),
        &at.office,
        at.terminal.as_str(),
        form.user.trim(),
        &form.password,
        now,
    )
    .await?;
    let message = match outcome {
        LoginOutcome::Opened(session) => {
            let seconds = staff::SESSION_LIFETIME.as_secs();
            let jar = jar
                .add(ui_cookie(SESSION_COOKIE, session.token, seconds))
                .add(ui_cookie(LOGIN_COOKIE, String::new(), 0));
            return Ok((jar, Redirect::to("/ui/caseload")).into_response());
        }
        // One answer for an unknown user, a wrong password and a locked
        // account, so that it does not tell which user IDs exist.
        LoginOutcome::Refused => format!(
            "{} {}",
            lang.t(
                "ユーザーIDまたはパスワードが正しくありません。",
                "The user ID or password is wrong.",
            ),
            lang.t(
                "失敗が続くとアカウントは15分間ロックされます。",
                "After repeated failures an account is locked for 15 minutes.",
            )
        ),
    };
    let token = staff::random_token();
    let page = login_form(&at, &token, Some(&message));
    Ok((StatusCode::UNAUTHORIZED, jar.add(login_cookie(token)), page).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /ui/logout`
pub async fn logout(
    State(state): State<AppState>,
    staff_member: Staff,
    jar: CookieJar,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, UiError> {
    staff_member.check_csrf(&form.csrf)?;
    if let Some(token) = cookie_value(&jar, SESSION_COOKIE) {
        staff::logout(state.inner.projections.db(), &token, state.now()).await?;
    }
    let jar = jar.add(ui_cookie(SESSION_COOKIE, String::new(), 0));
    Ok((jar, Redirect::to("/ui/login")).into_response())
}

// --- Formatting -------------------------------------------------------------

/// A time in JST, to the minute.
pub fn time(at: DateTime<Utc>) -> String {
    at.with_timezone(&jst())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// A date.
pub fn date(on: NaiveDate) -> String {
    on.format("%Y-%m-%d").to_string()
}

/// Yen with thousands separators: `64,000円` / `¥64,000`.
pub fn yen(lang: Lang, amount: u64) -> String {
    let digits = amount.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match lang {
        Lang::Ja => format!("{grouped}円"),
        Lang::En => format!("¥{grouped}"),
    }
}

/// 要介護2 / Care level 2.
pub fn care_level(lang: Lang, level: CareLevel) -> &'static str {
    match level {
        CareLevel::NotEligible => lang.t("非該当", "Not eligible"),
        CareLevel::Support1 => lang.t("要支援1", "Support level 1"),
        CareLevel::Support2 => lang.t("要支援2", "Support level 2"),
        CareLevel::Care1 => lang.t("要介護1", "Care level 1"),
        CareLevel::Care2 => lang.t("要介護2", "Care level 2"),
        CareLevel::Care3 => lang.t("要介護3", "Care level 3"),
        CareLevel::Care4 => lang.t("要介護4", "Care level 4"),
        CareLevel::Care5 => lang.t("要介護5", "Care level 5"),
    }
}

/// The certification step an event type stands for, in the screen's
/// language: the event's label from the one table in `kiban-events`
/// ([`kiban_events::domain::catalog::spec_of`]); a type that is not in the
/// catalog shows as its own name.
pub fn step(lang: Lang, event_type: &str) -> String {
    match spec_of(event_type) {
        Some(spec) => lang.t(spec.label_ja, spec.label_en).to_owned(),
        None => event_type
            .strip_prefix("certification.")
            .unwrap_or(event_type)
            .replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yen_is_grouped() {
        assert_eq!(yen(Lang::Ja, 64_000), "64,000円");
        assert_eq!(yen(Lang::En, 1_234_567), "¥1,234,567");
        assert_eq!(yen(Lang::Ja, 0), "0円");
        assert_eq!(yen(Lang::Ja, 999), "999円");
    }
}
