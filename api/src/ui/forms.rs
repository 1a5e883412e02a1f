//! 代行申請 (proxy certification application) and 居宅サービス計画作成依頼
//! 届出 (care-plan notification) with the card-consent step. Fields are
//! checked first, each with a message saying what to fix; then the
//! command goes through the API's own handler or the engine, under the
//! form's idempotency key (a resubmitted form records nothing twice).

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use kiban_events::domain::insured::{CarePlanOfficeKind, InsuredPerson, insured_stream};
use kiban_events::domain::jst_date;
use kiban_events::domain::office::{Office, office_stream};
use kiban_events::envelope::EventId;

use super::person::office_kind;
use super::web::{Lang, Staff, UiError, date, time};
use crate::auth::{PersonId, PersonPath, fold};
use crate::commands::{ProxyApplication, file_application};
use crate::error::ApiError;
use crate::extract::Command;
use crate::state::AppState;

/// Field name → what to fix.
type FieldErrors = BTreeMap<&'static str, String>;

/// A labelled input with its error message (`aria-invalid`,
/// `aria-describedby`).
fn field(label: &str, name: &'static str, errors: &FieldErrors, input: Markup) -> Markup {
    let error = errors.get(name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(name) { (label) }
            (input)
            @if let Some(error) = error {
                p class="field-error" id={ (name) "-error" } role="alert" { (error) }
            }
        }
    }
}

fn described(name: &str, errors: &FieldErrors) -> Option<String> {
    errors.contains_key(name).then(|| format!("{name}-error"))
}

/// A date field's value: required, a date, not after `today`.
fn past_date(
    lang: Lang,
    name: &'static str,
    value: &str,
    today: NaiveDate,
    errors: &mut FieldErrors,
) -> Option<NaiveDate> {
    let value = value.trim();
    if value.is_empty() {
        errors.insert(
            name,
            lang.t("日付を入力してください。", "Enter a date.")
                .to_owned(),
        );
        return None;
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(on) if on > today => {
            errors.insert(
                name,
                format!(
                    "{} ({})",
                    lang.t(
                        "未来の日付は指定できません。本日以前の日付を入力してください",
                        "The date cannot be in the future; enter today or an earlier day",
                    ),
                    date(today)
                ),
            );
            None
        }
        Ok(on) => Some(on),
        Err(_) => {
            errors.insert(
                name,
                lang.t(
                    "日付は YYYY-MM-DD の形式で入力してください。",
                    "Enter the date as YYYY-MM-DD.",
                )
                .to_owned(),
            );
            None
        }
    }
}

fn new_key() -> String {
    Uuid::now_v7().to_string()
}

pub(super) fn form_key(value: &str) -> Result<EventId, UiError> {
    Uuid::parse_str(value.trim())
        .ok()
        .and_then(crate::extract::caller_event_id)
        .ok_or_else(|| UiError::invalid("The form's key is malformed; reload the form."))
}

fn refusal(lang: Lang, error: &ApiError) -> Markup {
    html! {
        div class="error" role="alert" id="form-error" {
            p { strong { (lang.t("受け付けられませんでした。", "Not accepted.")) } }
            p lang="en" { (error.detail) }
            @if let Some(code) = error.code { p { small { code { (code) } } } }
        }
    }
}

fn person_header(lang: Lang, person: &PersonId) -> Markup {
    html! {
        p class="person-id" {
            (lang.t("保険者番号", "Insurer")) " " strong { (person.insurer) } " · "
            (lang.t("被保険者番号", "Insured number")) " " strong { (person.insured) }
        }
    }
}

/// The page after a command was recorded.
fn accepted_page(
    staff: &Staff,
    title: &str,
    message: &str,
    person: &PersonId,
    stream: Option<&str>,
) -> Markup {
    let lang = staff.lang();
    let body = html! {
        div class="success" role="status" id="accepted" {
            p { strong { (message) } }
            @if let Some(stream) = stream { p { (lang.t("記録", "Recorded on")) ": " code { (stream) } } }
        }
        p { a href={ "/ui/persons/" (person.insurer) "/" (person.insured) } { (lang.t("利用者詳細へ", "To the person")) } }
    };
    staff.page(title, body)
}

// --- 代行申請 -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ProxyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    applied_on: String,
}

fn proxy_form(
    staff: &Staff,
    person: &PersonId,
    form: &ProxyForm,
    errors: &FieldErrors,
    refused: Option<&ApiError>,
) -> Markup {
    let lang = staff.lang();
    let kinds = [
        ("new", lang.t("新規", "New")),
        ("renewal", lang.t("更新", "Renewal")),
        ("change", lang.t("区分変更", "Change of level")),
    ];
    let body = html! {
        (person_header(lang, person))
        @if let Some(error) = refused { (refusal(lang, error)) }
        @if !errors.is_empty() {
            p class="error" role="alert" id="form-errors" {
                (lang.t("入力内容に誤りがあります。各項目のメッセージを確認してください。", "Some fields need fixing; see the messages below."))
            }
        }
        form method="post" class="card" novalidate {
            (staff.csrf_field())
            input type="hidden" name="key" value=(form.key);
            (field(lang.t("申請区分", "Application kind"), "kind", errors, html! {
                select id="kind" name="kind" aria-invalid=[errors.contains_key("kind").then_some("true")] aria-describedby=[described("kind", errors)] {
                    option value="" { (lang.t("選択してください", "Choose")) }
                    @for (value, label) in kinds {
                        option value=(value) selected[form.kind == value] { (label) }
                    }
                }
            }))
            (field(lang.t("申請日", "Application date"), "applied_on", errors, html! {
                input id="applied_on" name="applied_on" type="text" inputmode="numeric" placeholder="YYYY-MM-DD"
                    value=(form.applied_on) aria-invalid=[errors.contains_key("applied_on").then_some("true")]
                    aria-describedby=[described("applied_on", errors)];
            }))
            button type="submit" id="submit" { (lang.t("代行申請を送信", "Submit the application")) }
        }
    };
    staff.page(lang.t("代行申請", "Proxy application"), body)
}

/// `GET /ui/persons/{insurer}/{insured}/apply`
pub async fn proxy_page(
    State(state): State<AppState>,
    staff: Staff,
    Path((insurer, insured)): Path<(String, String)>,
) -> Result<Markup, UiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    let form = ProxyForm {
        key: new_key(),
        applied_on: date(jst_date(state.now())),
        ..ProxyForm::default()
    };
    Ok(proxy_form(
        &staff,
        &person,
        &form,
        &FieldErrors::new(),
        None,
    ))
}

/// `POST /ui/persons/{insurer}/{insured}/apply`
pub async fn proxy_submit(
    State(state): State<AppState>,
    staff: Staff,
    Path((insurer, insured)): Path<(String, String)>,
    Form(form): Form<ProxyForm>,
) -> Result<Response, UiError> {
    staff.check_csrf(&form.csrf)?;
    let lang = staff.lang();
    let person = PersonId::parse(&insurer, &insured)?;
    let key = form_key(&form.key)?;
    let mut errors = FieldErrors::new();
    if !["new", "renewal", "change"].contains(&form.kind.as_str()) {
        errors.insert(
            "kind",
            lang.t(
                "申請区分（新規・更新・区分変更）を選択してください。",
                "Choose the kind: new, renewal or change.",
            )
            .to_owned(),
        );
    }
    let applied_on = past_date(
        lang,
        "applied_on",
        &form.applied_on,
        jst_date(state.now()),
        &mut errors,
    );
    let Some(applied_on) = applied_on.filter(|_| errors.is_empty()) else {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            proxy_form(&staff, &person, &form, &errors, None),
        )
            .into_response());
    };
    // The kind was checked above: the API's own body type reads it.
    let body: ProxyApplication =
        serde_json::from_value(json!({"kind": form.kind, "applied_on": applied_on}))
            .map_err(|e| ApiError::internal(&e))?;
    let command = Command {
        key,
        caller: staff.at.caller.clone(),
        body,
    };
    let outcome = file_application(State(state.clone()), PersonPath(person.clone()), command).await;
    match outcome {
        Ok(accepted) => {
            let message = lang.t("代行申請を受け付けました。", "The application was filed.");
            let title = lang.t("代行申請", "Proxy application");
            Ok(
                accepted_page(&staff, title, message, &person, Some(&accepted.stream))
                    .into_response(),
            )
        }
        Err(error) => Ok((
            error.kind.status(),
            proxy_form(&staff, &person, &form, &errors, Some(&error)),
        )
            .into_response()),
    }
}

// --- 居宅サービス計画作成依頼届出 ----------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    insurer: Option<String>,
    #[serde(default)]
    insured: Option<String>,
}

/// `GET /ui/care-plan?insurer=&insured=`: whom the notification is for.
pub async fn care_plan_start(
    staff: Staff,
    Query(query): Query<StartQuery>,
) -> Result<Response, UiError> {
    let lang = staff.lang();
    let mut errors = FieldErrors::new();
    if let (Some(insurer), Some(insured)) = (&query.insurer, &query.insured) {
        let insurer_ok = insurer.len() == 6 && insurer.bytes().all(|b| b.is_ascii_digit());
        let insured_ok = insured.len() == 10 && insured.bytes().all(|b| b.is_ascii_digit());
        if !insurer_ok {
            errors.insert(
                "insurer",
                lang.t(
                    "保険者番号は6桁の数字です。",
                    "The insurer number is 6 digits.",
                )
                .to_owned(),
            );
        }
        if !insured_ok {
            errors.insert(
                "insured",
                lang.t(
                    "被保険者番号は10桁の数字です。",
                    "The insured number is 10 digits.",
                )
                .to_owned(),
            );
        }
        if errors.is_empty() {
            return Ok(Redirect::to(&format!("/ui/care-plan/{insurer}/{insured}")).into_response());
        }
    }
    let body = html! {
        p { (lang.t("利用者のマイナンバーカードで同意を得てから届出を行います。対象者を入力してください。",
                    "The notification follows the person's consent with their My Number card. Enter the person.")) }
        form method="get" action="/ui/care-plan" class="card" novalidate {
            (field(lang.t("保険者番号", "Insurer number"), "insurer", &errors, html! {
                input id="insurer" name="insurer" inputmode="numeric" value=(query.insurer.clone().unwrap_or_default())
                    aria-invalid=[errors.contains_key("insurer").then_some("true")] aria-describedby=[described("insurer", &errors)];
            }))
            (field(lang.t("被保険者番号", "Insured number"), "insured", &errors, html! {
                input id="insured" name="insured" inputmode="numeric" value=(query.insured.clone().unwrap_or_default())
                    aria-invalid=[errors.contains_key("insured").then_some("true")] aria-describedby=[described("insured", &errors)];
            }))
            button type="submit" { (lang.t("次へ", "Next")) }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((
        status,
        staff.page(
            lang.t("居宅サービス計画作成依頼届出", "Care-plan notification"),
            body,
        ),
    )
        .into_response())
}

/// The office's consent for the person, as committed (folded from the
/// store, so a consent given a moment ago shows at once).
async fn consent_fragment(
    state: &AppState,
    staff: &Staff,
    person: &PersonId,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let folded =
        fold::<InsuredPerson>(state, &insured_stream(&person.insurer, &person.insured)).await?;
    let consent = folded
        .consents
        .get(&staff.at.office)
        .filter(|c| state.now() < c.expires_at);
    let markup = html! {
        @match consent {
            Some(c) => {
                p class="success" id="consent-given" {
                    "✔ " (lang.t("本人の同意を確認しました", "The person's consent is recorded"))
                    " (" (lang.t("有効期限", "expires")) " " (time(c.expires_at)) ")"
                }
            }
            None => {
                p class="pending" id="consent-pending" {
                    (lang.t("同意待ち：カードリーダーで本人確認を行ってください。", "Waiting for consent: verify the person's card at the reader."))
                }
            }
        }
    };
    Ok(markup)
}

/// `GET /ui/care-plan/{insurer}/{insured}/consent`: the consent status
/// fragment, refreshed live.
pub async fn consent_status(
    State(state): State<AppState>,
    staff: Staff,
    Path((insurer, insured)): Path<(String, String)>,
) -> Result<Markup, UiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    consent_fragment(&state, &staff, &person).await
}

#[derive(Debug, Default, Deserialize)]
pub struct CarePlanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    office_kind: String,
    #[serde(default)]
    filed_on: String,
}

async fn care_plan_form(
    state: &AppState,
    staff: &Staff,
    person: &PersonId,
    form: &CarePlanForm,
    errors: &FieldErrors,
    refused: Option<&ApiError>,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let consent = consent_fragment(state, staff, person).await?;
    let command = format!(
        "kiban card consent --office {} --insurer {} --insured {}",
        staff.at.office, person.insurer, person.insured
    );
    let kinds = [
        (
            "home_care_support_office",
            CarePlanOfficeKind::HomeCareSupportOffice,
        ),
        (
            "community_general_support_center",
            CarePlanOfficeKind::CommunityGeneralSupportCenter,
        ),
    ];
    let body = html! {
        (person_header(lang, person))
        section class="card" aria-labelledby="step-1" {
            h2 id="step-1" { "1. " (lang.t("本人の同意（マイナンバーカード）", "The person's consent (My Number card)")) }
            p { (lang.t("この端末に接続したカードリーダーに利用者のカードを置き、端末で次のコマンドを実行してください（暗証番号は本人が入力します）。",
                        "Put the person's card on this terminal's reader and run this command at the terminal (the person enters their PIN).")) }
            pre class="command" { code id="consent-command" { (command) } }
            div id="consent-status" data-live={ "/ui/care-plan/" (person.insurer) "/" (person.insured) "/consent" } aria-live="polite" { (consent) }
        }
        section class="card" aria-labelledby="step-2" {
            h2 id="step-2" { "2. " (lang.t("届出の内容", "The notification")) }
            @if let Some(error) = refused { (refusal(lang, error)) }
            form method="post" novalidate {
                (staff.csrf_field())
                input type="hidden" name="key" value=(form.key);
                (field(lang.t("事業所の種別", "Office kind"), "office_kind", errors, html! {
                    select id="office_kind" name="office_kind" aria-invalid=[errors.contains_key("office_kind").then_some("true")] aria-describedby=[described("office_kind", errors)] {
                        option value="" { (lang.t("事業所の登録のとおり", "As the office is registered")) }
                        @for (value, kind) in kinds {
                            option value=(value) selected[form.office_kind == value] { (office_kind(lang, kind)) }
                        }
                    }
                }))
                (field(lang.t("届出日", "Filing date"), "filed_on", errors, html! {
                    input id="filed_on" name="filed_on" type="text" inputmode="numeric" placeholder="YYYY-MM-DD" value=(form.filed_on)
                        aria-invalid=[errors.contains_key("filed_on").then_some("true")] aria-describedby=[described("filed_on", errors)];
                }))
                button type="submit" id="submit" { (lang.t("届出を送信", "Submit the notification")) }
            }
        }
    };
    Ok(staff.page(
        lang.t("居宅サービス計画作成依頼届出", "Care-plan notification"),
        body,
    ))
}

/// `GET /ui/care-plan/{insurer}/{insured}`
pub async fn care_plan_page(
    State(state): State<AppState>,
    staff: Staff,
    Path((insurer, insured)): Path<(String, String)>,
) -> Result<Markup, UiError> {
    let person = PersonId::parse(&insurer, &insured)?;
    let form = CarePlanForm {
        key: new_key(),
        filed_on: date(jst_date(state.now())),
        ..CarePlanForm::default()
    };
    care_plan_form(&state, &staff, &person, &form, &FieldErrors::new(), None).await
}

/// `POST /ui/care-plan/{insurer}/{insured}`
pub async fn care_plan_submit(
    State(state): State<AppState>,
    staff: Staff,
    Path((insurer, insured)): Path<(String, String)>,
    Form(form): Form<CarePlanForm>,
) -> Result<Response, UiError> {
    staff.check_csrf(&form.csrf)?;
    let lang = staff.lang();
    let person = PersonId::parse(&insurer, &insured)?;
    form_key(&form.key)?;
    let now = state.now();
    let mut errors = FieldErrors::new();
    let kind = match form.office_kind.as_str() {
        "" => Ok(None),
        "home_care_support_office" => Ok(Some(CarePlanOfficeKind::HomeCareSupportOffice)),
        "community_general_support_center" => {
            Ok(Some(CarePlanOfficeKind::CommunityGeneralSupportCenter))
        }
        _ => {
            errors.insert(
                "office_kind",
                lang.t(
                    "事業所の種別を選択してください。",
                    "Choose the kind of office.",
                )
                .to_owned(),
            );
            Err(())
        }
    };
    let filed_on = past_date(lang, "filed_on", &form.filed_on, jst_date(now), &mut errors);
    let (Ok(kind), Some(filed_on)) = (kind, filed_on) else {
        let page = care_plan_form(&state, &staff, &person, &form, &errors, None).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    };
    crate::auth::require_sharing(&state, &person.insurer).await?;
    let registered = fold::<Office>(&state, &office_stream(&staff.at.office)).await?;
    let folded =
        fold::<InsuredPerson>(&state, &insured_stream(&person.insurer, &person.insured)).await?;
    match crate::care_plan::care_plan_kind(&registered, &folded, kind, filed_on) {
        // The notification is filed by the card step (issue 16 item 7): the
        // person's card signs a challenge naming it, which the browser
        // cannot reach; the terminal's `kiban card consent
        // --care-plan-filed-on` asks for the challenge, has the card sign
        // it and files the notification.
        Ok(kind) => {
            let command = format!(
                "kiban card consent --office {} --insurer {} --insured {} --care-plan-filed-on {filed_on} --office-kind {}",
                staff.at.office,
                person.insurer,
                person.insured,
                match kind {
                    CarePlanOfficeKind::HomeCareSupportOffice => "home_care_support_office",
                    CarePlanOfficeKind::CommunityGeneralSupportCenter =>
                        "community_general_support_center",
                },
            );
            let body = html! {
                (person_header(lang, &person))
                section class="card" aria-labelledby="card-step" {
                    h2 id="card-step" { "3. " (lang.t("本人の署名（マイナンバーカード）", "The person's signature (My Number card)")) }
                    p { (lang.t("届出は本人のカードの署名で行います。カードリーダーに利用者のカードを置き、端末で次のコマンドを実行してください（暗証番号は本人が入力します）。",
                                "The notification is filed with the person's card signature. Put the person's card on this terminal's reader and run this command at the terminal (the person enters their PIN).")) }
                    pre class="command" { code id="care-plan-command" { (command) } }
                }
            };
            Ok(staff
                .page(
                    lang.t("居宅サービス計画作成依頼届出", "Care-plan notification"),
                    body,
                )
                .into_response())
        }
        Err(error) => {
            let page =
                care_plan_form(&state, &staff, &person, &form, &errors, Some(&error)).await?;
            Ok((error.kind.status(), page).into_response())
        }
    }
}
