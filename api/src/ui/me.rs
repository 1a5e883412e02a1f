//! The person's own view as a web page, `/me` (本人の閲覧; docs/ui.md
//! "The person's view"): sign-in with the My Number card, then one page
//! with the person's record and the access log of it, newest first. No
//! client certificate: the session cookie of a sign-in with the card is
//! the only credential, and it names one record.
//!
//! - `GET /me/login`: a sign-in challenge bound to this browser (a random
//!   secret in the `kiban_me_signin` cookie); the page shows its code and
//!   the command that signs it with the card (`kiban card sign-in --code`).
//! - `POST /me/login`: once the card has signed, the session becomes the
//!   `kiban_me_session` cookie.
//! - `GET /me`: the record (a logged read, `insured.own_record_viewed`);
//!   `?after=<position>` pages the access log.
//! - `GET /me/documents/{sha256}`: one of the person's documents (logged).
//! - `POST /me/consents/{office}/revoke`, `POST /me/logout`.

use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use kiban_events::domain::insured::ViewingBasis;
use kiban_events::domain::{Sha256Digest, jst, jst_date};
use kiban_projections::{AccessEntry, AccessLogOrder, AccessLogPage, Reader};

use super::person::{
    applications_list, certificates, document_table, ledger_meters, level_in_force, office_kind,
};
use super::staff::same_secret;
use super::web::{CSRF_FIELD, Lang, UiError, cookie_under, cookie_value, date, frame};
use crate::auth::new_event_id;
use crate::documents::{DocumentBytes, person_document};
use crate::error::ApiError;
use crate::me::sign_in::session;
use crate::me::{
    ConsentView, MyRecord, PersonSession, SIGN_IN_CHALLENGE_TTL_SECONDS, log_own_read, revoke,
};
use crate::state::AppState;

/// The session cookie of the person's view (sent only under `/me`).
pub const PERSON_SESSION_COOKIE: &str = "kiban_me_session";
/// The sign-in cookie: the secret that binds a sign-in challenge to the
/// browser that showed its code.
pub const SIGN_IN_COOKIE: &str = "kiban_me_signin";
/// Entries of the access log per page of `/me`.
pub const ACCESS_LOG_PAGE_ENTRIES: usize = 20;

/// The signed-in person of a `/me` page.
pub struct PersonPage {
    session: PersonSession,
    lang: Lang,
}

/// Where a page without a sign-in goes.
pub struct SignInFirst(Lang);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/me/login?lang={}", self.0.code())).into_response()
    }
}

impl FromRequestParts<AppState> for PersonPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let lang = Lang::of(parts);
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = cookie_value(&jar, PERSON_SESSION_COOKIE) else {
            return Err(SignInFirst(lang).into_response());
        };
        match session(state, &token).await {
            Ok(Some(session)) => Ok(PersonPage { session, lang }),
            Ok(None) => Err(SignInFirst(lang).into_response()),
            Err(error) => Err(UiError::from(error).in_person_view().into_response()),
        }
    }
}

impl PersonPage {
    fn check_csrf(&self, submitted: &str) -> Result<(), UiError> {
        if same_secret(submitted, &self.session.csrf) {
            Ok(())
        } else {
            Err(UiError::from(ApiError::forbidden(
                "The form is stale or was not sent by this page (CSRF token mismatch); reload and try again.",
            ))
            .in_person_view())
        }
    }

    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.session.csrf); }
    }

    /// A page of the person's view: sign-out in the header.
    fn page(&self, title: &str, path: &str, body: Markup) -> Markup {
        let lang = self.lang;
        let header = html! {
            span class="who" { (lang.t("ご本人", "Signed in")) " · " (self.session.person.insured) }
            form method="post" action="/me/logout" class="inline" {
                (self.csrf_field())
                button type="submit" id="sign-out" { (lang.t("サインアウト", "Sign out")) }
            }
        };
        let other = super::web::other_lang(lang).0;
        frame(lang, title, header, &format!("{path}?lang={other}"), body)
    }
}

/// A time as the page's language writes it, in JST: `2026/05/30 10:30`
/// (ja-JP) or `2026-05-30 10:30 JST`.
pub fn when(lang: Lang, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&jst());
    match lang {
        Lang::Ja => local.format("%Y/%m/%d %H:%M").to_string(),
        Lang::En => local.format("%Y-%m-%d %H:%M JST").to_string(),
    }
}

fn person_view(error: ApiError) -> UiError {
    UiError::from(error).in_person_view()
}

/// `?after=` (the access log's page) and `?lang=` (read by [`PersonPage`]).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    after: Option<u64>,
}

/// `GET /me`: the person's record and its access log (a logged read).
pub async fn page(
    State(state): State<AppState>,
    me: PersonPage,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let lang = me.lang;
    let person = &me.session.person;
    log_own_read(&state, person).await.map_err(person_view)?;
    let now = state.now();
    let record = MyRecord::read(&state.inner.read, person, now)
        .await
        .map_err(person_view)?;
    let log_page = AccessLogPage {
        after: query.after,
        limit: ACCESS_LOG_PAGE_ENTRIES,
        order: AccessLogOrder::NewestFirst,
    };
    let log = state
        .inner
        .read
        .access_log_page(Some(&person.key()), None, &log_page)
        .await
        .map_err(|e| person_view(e.into()))?;
    let eligibility = &record.eligibility;
    let body = html! {
        p class="person-id" {
            (lang.t("保険者番号", "Insurer")) " " strong { (person.insurer) } " · "
            (lang.t("被保険者番号", "Insured number")) " " strong { (person.insured) } " · "
            (lang.t("基準日", "As of")) " " (date(jst_date(now))) " · "
            (lang.t("サインインの有効期限", "Signed in until")) " " (when(lang, me.session.expires_at))
        }
        section aria-labelledby="eligibility" {
            h2 id="eligibility" { (lang.t("資格情報", "Eligibility")) }
            dl {
                dt { (lang.t("要介護度", "Care level")) }
                dd id="care-level" { (level_in_force(lang, eligibility)) }
                dt { (lang.t("ケアプランを作成する事業所", "Care-plan office")) }
                dd id="care-plan-office" {
                    @match &eligibility.care_plan_office {
                        Some(o) => { (o.office) " · " (office_kind(lang, o.office_kind)) }
                        None => { (lang.t("届出なし", "None filed")) }
                    }
                }
            }
            (certificates(lang, eligibility))
        }
        section aria-labelledby="certifications" {
            h2 id="certifications" { (lang.t("要介護認定の状況", "Certification status")) }
            (applications_list(lang, &record.certifications))
        }
        @if let Some(ledgers) = &record.ledgers {
            section aria-labelledby="ledgers" {
                h2 id="ledgers" { (lang.t("給付の残額", "Benefit ledgers")) }
                (ledger_meters(lang, ledgers))
            }
        }
        section aria-labelledby="consents" {
            h2 id="consents" { (lang.t("閲覧の同意", "Consents")) }
            (consent_table(&me, &record.consents))
        }
        section aria-labelledby="documents" {
            h2 id="documents" { (lang.t("書類", "Documents")) }
            (document_table(lang, "/me", &record.documents))
        }
        section aria-labelledby="access-log" {
            h2 id="access-log" { (lang.t("閲覧記録", "Who read your record")) }
            p { (lang.t(
                "あなたの情報を閲覧した事業所・端末・日時と、閲覧の根拠です（新しい順）。ご本人の閲覧も記録されます。",
                "Which office read your record, through which terminal, when and on what basis, newest first. Your own reads are recorded too.",
            )) }
            (access_log_table(lang, &log))
            @if log.len() == ACCESS_LOG_PAGE_ENTRIES {
                @if let Some(last) = log.last() {
                    p { a id="access-log-next" href={ "/me?after=" (last.position) "&lang=" (lang.code()) "#access-log" } {
                        (lang.t("さらに古い記録", "Older entries"))
                    } }
                }
            }
        }
    };
    Ok(me.page(lang.t("ご本人の情報", "Your record"), "/me", body))
}

fn consent_table(me: &PersonPage, consents: &[ConsentView]) -> Markup {
    let lang = me.lang;
    html! {
        table class="consents" {
            thead { tr {
                th scope="col" { (lang.t("事業所", "Office")) }
                th scope="col" { (lang.t("同意した日時", "Given")) }
                th scope="col" { (lang.t("有効期限", "Expires")) }
                th scope="col" { span class="sr-only" { (lang.t("操作", "Action")) } }
            } }
            tbody {
                @for c in consents {
                    tr id={ "consent-" (c.office) } {
                        td { (c.office) }
                        td { (when(lang, c.given_at)) }
                        td { (when(lang, c.expires_at)) }
                        td {
                            form method="post" action={ "/me/consents/" (c.office) "/revoke" } class="inline" {
                                (me.csrf_field())
                                button type="submit" aria-label={ (lang.t("同意を取り消す: 事業所 ", "Revoke the consent of office ")) (c.office) } {
                                    (lang.t("同意を取り消す", "Revoke"))
                                }
                            }
                        }
                    }
                }
                @if consents.is_empty() { tr { td colspan="4" { (lang.t("有効な同意はありません。", "No live consents.")) } } }
            }
        }
    }
}

fn basis(lang: Lang, basis: Option<ViewingBasis>) -> &'static str {
    match basis {
        Some(ViewingBasis::Consent) => lang.t("ご本人の同意", "Your consent"),
        Some(ViewingBasis::CarePlanOffice) => {
            lang.t("ケアプラン作成事業所", "Registered care-plan office")
        }
        None => lang.t("ご本人", "Yourself"),
    }
}

fn access_log_table(lang: Lang, log: &[AccessEntry]) -> Markup {
    html! {
        table class="access-log" {
            thead { tr {
                th scope="col" { (lang.t("日時", "When")) }
                th scope="col" { (lang.t("閲覧者", "Reader")) }
                th scope="col" { (lang.t("端末", "Terminal")) }
                th scope="col" { (lang.t("根拠", "Basis")) }
            } }
            tbody {
                @for entry in log {
                    tr id={ "view-" (entry.position) } class={ "reader-" @match entry.reader { Reader::Office => "office", Reader::Person => "person" } } {
                        td { (when(lang, entry.viewed_at)) }
                        td class="reader" {
                            @match (&entry.reader, &entry.office) {
                                (Reader::Office, Some(office)) => { (lang.t("事業所 ", "Office ")) (office) }
                                _ => { (lang.t("ご本人", "You")) }
                            }
                        }
                        td class="terminal" { (entry.terminal.as_deref().unwrap_or("—")) }
                        td class="basis" { (basis(lang, entry.basis)) }
                    }
                }
                @if log.is_empty() { tr { td colspan="4" { (lang.t("記録はありません。", "No entries.")) } } }
            }
        }
    }
}

/// `GET /me/documents/{sha256}`: the document's bytes (a logged read).
pub async fn document(
    State(state): State<AppState>,
    me: PersonPage,
    Path(sha256): Path<String>,
) -> Result<DocumentBytes, UiError> {
    Sha256Digest::parse(&sha256).map_err(|_| {
        person_view(ApiError::validation(
            "The digest must be 64 lower-case hex digits.",
        ))
    })?;
    log_own_read(&state, &me.session.person)
        .await
        .map_err(person_view)?;
    person_document(&state, &me.session.person, &sha256)
        .await
        .map_err(person_view)
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /me/consents/{office}/revoke`
pub async fn revoke_consent(
    State(state): State<AppState>,
    me: PersonPage,
    Path(office): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Redirect, UiError> {
    me.check_csrf(&form.csrf)?;
    revoke(&state, &me.session.person, &office, new_event_id())
        .await
        .map_err(person_view)?;
    Ok(Redirect::to(&format!(
        "/me?lang={}#consents",
        me.lang.code()
    )))
}

/// `POST /me/logout`
pub async fn logout(
    State(state): State<AppState>,
    me: PersonPage,
    jar: CookieJar,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, UiError> {
    me.check_csrf(&form.csrf)?;
    if let Some(token) = cookie_value(&jar, PERSON_SESSION_COOKIE) {
        crate::me::sign_in::sign_out(&state, &token)
            .await
            .map_err(person_view)?;
    }
    let jar = jar.add(cookie_under("/me", PERSON_SESSION_COOKIE, String::new(), 0));
    Ok((
        jar,
        Redirect::to(&format!("/me/login?lang={}", me.lang.code())),
    )
        .into_response())
}

/// The sign-in page of challenge `nonce`, with `message` when there is one.
fn sign_in_page(lang: Lang, server: &str, nonce: &str, message: Option<&str>) -> Markup {
    let command = format!("kiban card sign-in --server {server} --code {nonce}");
    let minutes = SIGN_IN_CHALLENGE_TTL_SECONDS / 60;
    let body = html! {
        p { (lang.t(
            "ご自身のマイナンバーカード（利用者証明用電子証明書）でサインインすると、ご自身の要介護認定の状況、証明書、給付の残額、同意、書類と、あなたの情報を誰がいつ閲覧したかを確認できます。",
            "Sign in with your own My Number card (its user-authentication certificate) to see your certification progress, certificates, benefit ledgers, consents, documents, and who read your record and when.",
        )) }
        @if let Some(message) = message {
            p id="sign-in-message" class="error" role="alert" { (message) }
        }
        h2 { (lang.t("サインインの手順", "How to sign in")) }
        ol {
            li { (lang.t("カードをカードリーダーに置きます。", "Put your card on the card reader.")) }
            li {
                (lang.t("このコンピュータで次のコマンドを実行し、利用者証明用電子証明書の暗証番号（数字4桁）を入力します。", "Run this command on this computer and enter the PIN of the user-authentication certificate (4 digits)."))
                pre { code id="sign-in-command" { (command) } }
            }
            li { (lang.t("署名が終わったら「サインインを完了」を押します。", "When the card has signed, press “Complete sign-in”.")) }
        }
        p {
            (lang.t("確認コード", "Code")) ": " strong id="sign-in-code" { (nonce) }
            " (" (lang.t("有効期限", "valid for")) " " (minutes) (lang.t("分", " minutes")) ")"
        }
        p { (lang.t(
            "このコードは、この画面に表示されたものだけを署名してください。他人から伝えられたコードに署名すると、その人があなたとしてサインインできてしまいます。",
            "Sign only the code shown on this screen. Signing a code someone else gave you would let them sign in as you.",
        )) }
        form method="post" action="/me/login" {
            input type="hidden" name="nonce" value=(nonce);
            input type="hidden" name="lang" value=(lang.code());
            button type="submit" id="complete-sign-in" { (lang.t("サインインを完了", "Complete sign-in")) }
        }
    };
    let other = super::web::other_lang(lang).0;
    frame(
        lang,
        lang.t(
            "マイナンバーカードでサインイン",
            "Sign in with your My Number card",
        ),
        html! {},
        &format!("/me/login?lang={other}"),
        body,
    )
}

/// The server as the browser reached it, for the command the page shows.
fn server_of(parts: &axum::http::HeaderMap) -> String {
    let host = parts
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("127.0.0.1:8443");
    format!("https://{host}")
}

/// A new challenge for this browser: the page and its sign-in cookie.
fn new_sign_in(
    state: &AppState,
    lang: Lang,
    (headers, client): (&axum::http::HeaderMap, Option<std::net::IpAddr>),
    jar: CookieJar,
    message: Option<&str>,
) -> Result<Response, UiError> {
    let secret = super::staff::random_token();
    let (nonce, _) = state
        .inner
        .sign_ins
        .issue(state.now(), Some(&secret), client)
        .map_err(person_view)?;
    let ttl = u64::try_from(SIGN_IN_CHALLENGE_TTL_SECONDS).unwrap_or(300);
    let jar = jar.add(cookie_under("/me", SIGN_IN_COOKIE, secret, ttl));
    let page = sign_in_page(lang, &server_of(headers), &nonce, message);
    Ok((jar, page).into_response())
}

/// `GET /me/login`
pub async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    client: Option<axum::Extension<crate::ClientAddress>>,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
) -> Result<Response, UiError> {
    let client = client.map(|axum::Extension(crate::ClientAddress(address))| address.ip());
    let lang = lang_named(query.lang.as_deref());
    if let Some(token) = cookie_value(&jar, PERSON_SESSION_COOKIE)
        && session(&state, &token)
            .await
            .map_err(person_view)?
            .is_some()
    {
        return Ok(Redirect::to(&format!("/me?lang={}", lang.code())).into_response());
    }
    new_sign_in(&state, lang, (&headers, client), jar, None)
}

/// The language a sign-in request names (`en`; Japanese otherwise).
fn lang_named(code: Option<&str>) -> Lang {
    match code {
        Some("en") => Lang::En,
        _ => Lang::Ja,
    }
}

#[derive(Debug, Deserialize)]
pub struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    nonce: String,
    #[serde(default)]
    lang: Option<String>,
}

/// `POST /me/login`: collects the session once the card has signed.
pub async fn login_submit(
    State(state): State<AppState>,
    client: Option<axum::Extension<crate::ClientAddress>>,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<SignInForm>,
) -> Result<Response, UiError> {
    let client = client.map(|axum::Extension(crate::ClientAddress(address))| address.ip());
    let lang = lang_named(form.lang.as_deref());
    let secret = cookie_value(&jar, SIGN_IN_COOKIE).unwrap_or_default();
    match state
        .inner
        .sign_ins
        .collect(&form.nonce, &secret, state.now())
    {
        Ok(Some(opened)) => {
            let max_age = (opened.expires_at - state.now()).num_seconds().max(0);
            let jar = jar
                .add(cookie_under(
                    "/me",
                    PERSON_SESSION_COOKIE,
                    opened.token,
                    u64::try_from(max_age).unwrap_or(0),
                ))
                .add(cookie_under("/me", SIGN_IN_COOKIE, String::new(), 0));
            Ok((jar, Redirect::to(&format!("/me?lang={}", lang.code()))).into_response())
        }
        Ok(None) => {
            let message = lang.t(
                "まだカードの署名を確認できません。コマンドが「サインインしました」と表示してから、もう一度押してください。",
                "The card's signature has not arrived yet. Press again once the command says it signed you in.",
            );
            Ok(
                sign_in_page(lang, &server_of(&headers), &form.nonce, Some(message))
                    .into_response(),
            )
        }
        Err(_) => {
            let message = lang.t(
                "サインインの有効期限が切れたか、このブラウザのものではありません。新しいコードでもう一度お試しください。",
                "The sign-in expired or belongs to another browser. Try again with the new code.",
            );
            new_sign_in(&state, lang, (&headers, client), jar, Some(message))
        }
    }
}

/// Unknown `/me` paths.
pub async fn not_found() -> UiError {
    person_view(ApiError::not_found("No such page."))
}
