//! 端末管理 (terminals): the office's registered terminals and their
//! status; reporting one lost or stolen takes a confirmation step, then
//! goes through the API's own handler (the terminal is refused from the
//! next request on — this one included, if it reported itself).

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use kiban_events::domain::office::{Office, office_stream};

use super::forms::form_key;
use super::web::{Staff, UiError};
use crate::auth::{fold, terminal_id};
use crate::commands::{LostReport, report_terminal_lost};
use crate::error::ApiError;
use crate::extract::Command;
use crate::state::AppState;

/// `GET /ui/terminals`
pub async fn page(State(state): State<AppState>, staff: Staff) -> Result<Markup, UiError> {
    let lang = staff.lang();
    // Folded from the store, so a report shows at once.
    let office = fold::<Office>(&state, &office_stream(&staff.at.office)).await?;
    let body = html! {
        table id="terminals" {
            thead { tr {
                th scope="col" { (lang.t("端末", "Terminal")) }
                th scope="col" { (lang.t("状態", "Status")) }
                th scope="col" { (lang.t("証明書（SHA-256 先頭）", "Certificate (SHA-256 prefix)")) }
                th scope="col" { span class="sr-only" { (lang.t("操作", "Action")) } }
            } }
            tbody {
                @for (id, terminal) in &office.terminals {
                    tr id={ "terminal-" (id.as_str()) } {
                        td {
                            (id.as_str())
                            @if id == &staff.at.terminal { " " span class="badge" { (lang.t("この端末", "This terminal")) } }
                        }
                        td class="status" {
                            @if terminal.suspended { span class="warn" { (lang.t("利用停止", "Suspended")) } }
                            @else { (lang.t("利用中", "Active")) }
                        }
                        td { code { (terminal.credential.as_str().get(..16).unwrap_or_default()) "…" } }
                        td {
                            @if !terminal.suspended {
                                a class="button danger" href={ "/ui/terminals/" (id.as_str()) "/lost" } {
                                    (lang.t("紛失・盗難の届出", "Report lost or stolen"))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(staff.page(lang.t("端末管理", "Terminals"), body))
}

/// `GET /ui/terminals/{terminal}/lost`: the confirmation step.
pub async fn confirm(staff: Staff, Path(terminal): Path<String>) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let terminal = terminal_id(&terminal)?;
    let own = terminal == staff.at.terminal;
    let body = html! {
        div class="card warn-card" {
            p { strong { (lang.t("端末", "Terminal")) " " (terminal.as_str()) } }
            p { (lang.t("届出をすると、この端末の証明書による接続は直ちに拒否されます。取り消すには国保中央会への再登録が必要です。",
                        "Once reported, connections with this terminal's certificate are refused at once; only the federation can register it again.")) }
            @if own {
                p class="warn" id="own-terminal" { (lang.t("これは現在お使いの端末です。届出後、この画面は使えなくなります。",
                                       "This is the terminal you are using; the screen stops working here after the report.")) }
            }
            form method="post" {
                (staff.csrf_field())
                input type="hidden" name="key" value=(Uuid::now_v7().to_string());
                fieldset {
                    legend { (lang.t("届出の種類", "What happened")) }
                    div { input type="radio" id="loss-lost" name="loss" value="lost" checked; label for="loss-lost" { (lang.t("紛失", "Lost")) } }
                    div { input type="radio" id="loss-stolen" name="loss" value="stolen"; label for="loss-stolen" { (lang.t("盗難", "Stolen")) } }
                }
                button type="submit" id="confirm-lost" class="danger" { (lang.t("届出を確定する", "Confirm the report")) }
                " "
                a href="/ui/terminals" { (lang.t("取り消し", "Cancel")) }
            }
        }
    };
    Ok(staff.page(
        lang.t(
            "紛失・盗難の届出の確認",
            "Confirm the lost or stolen report",
        ),
        body,
    ))
}

#[derive(Debug, Deserialize)]
pub struct LostForm {
    csrf: String,
    key: String,
    loss: String,
}

/// `POST /ui/terminals/{terminal}/lost`
pub async fn report(
    State(state): State<AppState>,
    staff: Staff,
    Path(terminal): Path<String>,
    Form(form): Form<LostForm>,
) -> Result<Response, UiError> {
    staff.check_csrf(&form.csrf)?;
    if !["lost", "stolen"].contains(&form.loss.as_str()) {
        return Err(UiError::invalid("Choose lost or stolen."));
    }
    let key = form_key(&form.key)?;
    // The loss was checked above: the API's own body type reads it.
    let body: LostReport =
        serde_json::from_value(json!({"loss": form.loss})).map_err(|e| ApiError::internal(&e))?;
    let command = Command {
        key,
        caller: staff.at.caller.clone(),
        body,
    };
    let _accepted = report_terminal_lost(
        State(state),
        Path((staff.at.office.as_str().to_owned(), terminal)),
        command,
    )
    .await?;
    Ok(Redirect::to("/ui/terminals").into_response())
}
