//! 利用者詳細 (person): eligibility certificates, the certification
//! timeline, documents, benefit ledgers, the care-plan office. Every view
//! is a logged read: `insured.record_viewed` through the engine (the API's
//! rule), with the staff member recorded beside it in `ui_staff_views`.

use axum::extract::{Path, State};
use maud::{Markup, html};

use kiban_engine::CommandContext;
use kiban_events::domain::insured::{
    CarePlanOfficeKind, EQUIPMENT_CAP_PER_FISCAL_YEAR, HOME_MODIFICATION_CAP, InsuredCommand,
};
use kiban_events::domain::{CostLimitStage, jst_date};
use kiban_events::envelope::Actor;
use kiban_projections::{ApplicationView, DocumentView, EligibilityView, LedgersView};

use super::staff::record_staff_view;
use super::web::{Lang, Staff, UiError, care_level, date, step, time, yen};
use crate::auth::{PersonId, execute_on_person, insurer_sharing, new_event_id};
use crate::error::ApiError;
use crate::personal::OpenedName;
use crate::state::AppState;

/// The timeline's stages: the event that completes each.
const STAGES: &[(&str, &str, &str)] = &[
    ("certification.filed", "申請", "Application"),
    (
        "certification.investigation_completed",
        "認定調査",
        "Investigation",
    ),
    (
        "certification.opinion_received",
        "主治医意見書",
        "Doctor's opinion",
    ),
    (
        "certification.primary_judgment_recorded",
        "一次判定",
        "Primary judgment",
    ),
    (
        "certification.secondary_judgment_recorded",
        "二次判定",
        "Secondary judgment",
    ),
    ("certification.decided", "認定", "Decision"),
];

/// A request for a logged read (a person page, a document) that the
/// browser says came from kiban's own pages: `Sec-Fetch-Site` is
/// `same-origin`, or `none` (typed, bookmarked), or absent (not a browser,
/// or one too old to send it). A page on a sibling subdomain (`same-site`)
/// or another site (`cross-site`) cannot make a signed-in staff member's
/// browser append an access-log entry: 403 `forbidden`, nothing recorded.
#[derive(Debug, Clone, Copy)]
pub struct SameOriginRead;

impl axum::extract::FromRequestParts<AppState> for SameOriginRead {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &AppState,
    ) -> Result<Self, UiError> {
        match parts.headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
            None | Some(b"same-origin" | b"none") => Ok(SameOriginRead),
            Some(_) => Err(ApiError::forbidden(
                "A person's record is opened from kiban's own pages only (the request came from another site).",
            )
            .into()),
        }
    }
}

/// Authorises the staff member's terminal to read `person` and logs the
/// read: the engine decides it (live consent or care-plan office, insurer
/// sharing) and appends `insured.record_viewed`; the staff member goes into
/// `ui_staff_views` beside that event's position.
pub async fn logged_read(
    state: &AppState,
    staff: &Staff,
    insurer: &str,
    insured: &str,
) -> Result<PersonId, UiError> {
    let person = PersonId::parse(insurer, insured)?;
    if !insurer_sharing(state, &person.insurer).await? {
        return Err(ApiError::not_found("No such person.").into());
    }
    if let Some(position) = record_read(state, staff, &person).await? {
        // The page reads the read models: let them catch up with the
        // person's latest events first.
        let _ = state.inner.projections.wait_for(position).await;
    }
    Ok(person)
}

/// Logs the staff member's read of `person` (whose insurer shares):
/// `insured.record_viewed` through the engine, refused without a viewing
/// basis, and the staff member beside its position. The position, when
/// recorded.
pub async fn record_read(
    state: &AppState,
    staff: &Staff,
    person: &PersonId,
) -> Result<Option<u64>, UiError> {
    let command = InsuredCommand::RecordView {
        office: staff.at.office.clone(),
        terminal: staff.at.terminal.clone(),
        insurer_sharing_enabled: true,
    };
    let now = state.now();
    let context = CommandContext::new(
        new_event_id(),
        Actor::system("ui").expect("a valid component"),
        now,
    );
    let executed = execute_on_person(state, person, &command, &context)
        .await
        .map_err(ApiError::from)?;
    let position = executed.positions().last().copied();
    if let Some(position) = position {
        record_staff_view(
            state.inner.projections.db(),
            position,
            staff.at.office.as_str(),
            staff.at.terminal.as_str(),
            &staff.user,
            now,
        )
        .await?;
    }
    Ok(position)
}

/// A name as the screens show it: 氏名 with its フリガナ in a `<ruby>`-free
/// second line, 忘却済み once forgotten, "—" when none was given.
pub fn shown_name(lang: Lang, name: Option<&OpenedName>) -> Markup {
    let unreadable = lang.t("読み取れません", "Unreadable");
    html! {
        @match name {
            None => { "—" }
            Some(opened) => {
                span class="name" { (opened.name.display().unwrap_or(unreadable)) }
                @if let Some(kana) = opened.kana.as_ref().and_then(|k| k.display()) {
                    br; small class="kana" lang="ja" { (kana) }
                }
            }
        }
    }
}

fn ratio(lang: Lang, tenths: u8) -> String {
    match lang {
        Lang::Ja => format!("{tenths}割"),
        Lang::En => format!("{}0%", tenths),
    }
}

fn stage(lang: Lang, stage: CostLimitStage) -> &'static str {
    match stage {
        CostLimitStage::Stage1 => lang.t("第1段階", "Stage 1"),
        CostLimitStage::Stage2 => lang.t("第2段階", "Stage 2"),
        CostLimitStage::Stage3First => lang.t("第3段階①", "Stage 3-1"),
        CostLimitStage::Stage3Second => lang.t("第3段階②", "Stage 3-2"),
        #[allow(unreachable_patterns)]
        _ => lang.t("その他", "Other"),
    }
}

/// 居宅介護支援事業所 / 地域包括支援センター.
pub fn office_kind(lang: Lang, kind: CarePlanOfficeKind) -> &'static str {
    match kind {
        CarePlanOfficeKind::HomeCareSupportOffice => {
            lang.t("居宅介護支援事業所", "Home-care support office")
        }
        CarePlanOfficeKind::CommunityGeneralSupportCenter => {
            lang.t("地域包括支援センター", "Community general support centre")
        }
    }
}

fn document_kind(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "investigation_sheet" => lang.t("認定調査票", "Investigation sheet"),
        "opinion" => lang.t("主治医意見書", "Doctor's opinion"),
        _ => lang.t("書類", "Document"),
    }
}

fn timeline(lang: Lang, application: &ApplicationView) -> Markup {
    html! {
        ol class="timeline" aria-label=(lang.t("認定の経過", "Certification progress")) {
            @for (event_type, ja, en) in STAGES {
                @let done = application.steps.iter().find(|s| s.event_type == *event_type);
                li.done[done.is_some()].pending[done.is_none()] {
                    span class="stage" { (lang.t(ja, en)) }
                    span class="when" {
                        @match done {
                            Some(s) => { (time(s.occurred_at)) }
                            None => { (lang.t("未", "pending")) }
                        }
                    }
                }
            }
        }
    }
}

fn meter(lang: Lang, id: &str, label: &str, remaining: u64, cap: u64) -> Markup {
    html! {
        div class="ledger" {
            label for=(id) { (label) }
            meter id=(id) min="0" max=(cap) low=(cap / 5) optimum=(cap) value=(remaining) {
                (yen(lang, remaining))
            }
            span { (lang.t("残り", "Remaining")) " " strong { (yen(lang, remaining)) } " / " (yen(lang, cap)) }
        }
    }
}

/// `GET /ui/persons/{insurer}/{insured}`
pub async fn page(
    State(state): State<AppState>,
    staff: Staff,
    _: SameOriginRead,
    Path((insurer, insured)): Path<(String, String)>,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let person = logged_read(&state, &staff, &insurer, &insured).await?;
    let now = state.now();
    let key = person.key();
    let read = &state.inner.read;
    let eligibility = read
        .eligibility(&key, now)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("No such person."))?;
    let applications = read.applications(&key, now).await.map_err(ApiError::from)?;
    let documents = read.documents_of(&key).await.map_err(ApiError::from)?;
    let ledgers = read.ledgers(&key, now).await.map_err(ApiError::from)?;
    // Personal fields, opened with the person's key (忘却済み once forgotten).
    let personal = read
        .person(&key)
        .await
        .map_err(ApiError::from)?
        .map(|doc| doc.personal())
        .unwrap_or_default();
    let name = crate::personal::open_name(&state, &person, &personal).await?;
    let address = crate::personal::open_address(&state, &person, &personal).await?;
    let address = match &address {
        None => lang.t("届出なし", "None given"),
        Some(opened) => opened
            .display()
            .unwrap_or_else(|| lang.t("読み取れません", "Unreadable")),
    };
    let base = format!("/ui/persons/{}/{}", person.insurer, person.insured);
    let body = html! {
        p class="person-id" {
            (lang.t("保険者番号", "Insurer")) " " strong { (person.insurer) } " · "
            (lang.t("被保険者番号", "Insured number")) " " strong { (person.insured) } " · "
            (lang.t("基準日", "As of")) " " (date(jst_date(now)))
        }
        p class="actions" {
            a class="button" href={ (base) "/apply" } { (lang.t("代行申請", "Proxy application")) }
            a class="button" href={ "/ui/care-plan/" (person.insurer) "/" (person.insured) } {
                (lang.t("居宅サービス計画作成依頼届出", "Care-plan notification"))
            }
        }
        section aria-labelledby="eligibility" {
            h2 id="eligibility" { (lang.t("資格情報", "Eligibility")) }
            dl {
                dt { (lang.t("要介護度", "Care level")) }
                dd id="care-level" { (level_in_force(lang, &eligibility)) }
                dt { (lang.t("居宅介護支援事業所", "Care-plan office")) }
                dd id="care-plan-office" {
                    @match &eligibility.care_plan_office {
                        Some(o) => { (o.office) " · " (office_kind(lang, o.office_kind)) " · " (lang.t("請求開始", "billable from")) " " (date(o.billable_from)) }
                        None => { (lang.t("届出なし", "None filed")) }
                    }
                }
                dt { (lang.t("氏名", "Name")) }
                dd id="name" { (shown_name(lang, name.as_ref())) }
                dt { (lang.t("住所", "Address")) }
                dd id="address" { (address) }
                @if eligibility.reimbursement_only {
                    dt { (lang.t("給付制限", "Restriction")) }
                    dd class="warn" { (lang.t("償還払い", "Reimbursement only")) }
                }
            }
            (certificates(lang, &eligibility))
        }
        section aria-labelledby="certifications" {
            h2 id="certifications" { (lang.t("要介護認定の状況", "Certification status")) }
            (applications_list(lang, &applications))
        }
        section aria-labelledby="documents" {
            h2 id="documents" { (lang.t("書類", "Documents")) }
            (document_table(lang, &base, &documents))
        }
        @if let Some(ledgers) = &ledgers {
            section aria-labelledby="ledgers" {
                h2 id="ledgers" { (lang.t("給付の残額", "Benefit ledgers")) }
                (ledger_meters(lang, ledgers))
            }
        }
    };
    Ok(staff.page(lang.t("利用者詳細", "Person"), body))
}

/// The care level in force with its validity, or that there is none.
pub(super) fn level_in_force(lang: Lang, eligibility: &EligibilityView) -> Markup {
    html! {
        @match &eligibility.certification {
            Some(c) => { (care_level(lang, c.level)) " (" (date(c.valid_from)) " – " (date(c.valid_until)) ")" }
            None => { (lang.t("認定なし", "No certification in force")) }
        }
    }
}

/// The copayment-ratio and cost-limit certificates (負担割合証,
/// 負担限度額認定証) of `eligibility`, as two tables.
pub(super) fn certificates(lang: Lang, eligibility: &EligibilityView) -> Markup {
    html! {
        h3 { (lang.t("負担割合証", "Copayment-ratio certificates")) }
        table {
            thead { tr { th scope="col" { (lang.t("負担割合", "Ratio")) } th scope="col" { (lang.t("有効期間", "Valid")) } th scope="col" { (lang.t("状態", "State")) } } }
            tbody {
                @for c in &eligibility.copayment_certificates {
                    tr.current[c.current] {
                        td { (ratio(lang, c.ratio.tenths())) }
                        td { (date(c.valid_from)) " – " (date(c.valid_until)) }
                        td { @if c.current { (lang.t("有効", "Current")) } @else { "—" } }
                    }
                }
                @if eligibility.copayment_certificates.is_empty() { tr { td colspan="3" { (lang.t("なし", "None")) } } }
            }
        }
        h3 { (lang.t("負担限度額認定証", "Cost-limit certificates")) }
        table {
            thead { tr { th scope="col" { (lang.t("段階", "Stage")) } th scope="col" { (lang.t("有効期間", "Valid")) } th scope="col" { (lang.t("状態", "State")) } } }
            tbody {
                @for c in &eligibility.cost_limit_certificates {
                    tr.current[c.current] {
                        td { (stage(lang, c.stage)) }
                        td { (date(c.valid_from)) " – " (date(c.valid_until)) }
                        td { @if c.current { (lang.t("有効", "Current")) } @else { "—" } }
                    }
                }
                @if eligibility.cost_limit_certificates.is_empty() { tr { td colspan="3" { (lang.t("なし", "None")) } } }
            }
        }
    }
}

/// Each certification application, newest first, with its progress.
pub(super) fn applications_list(lang: Lang, applications: &[ApplicationView]) -> Markup {
    html! {
        @for application in applications.iter().rev() {
            article class="application" id={ "application-" (application.seq) } {
                h3 {
                    (lang.t("申請", "Application")) " #" (application.seq)
                    @if let Some(on) = application.applied_on { " · " (date(on)) }
                    " · "
                    @match application.status {
                        "open" => { (lang.t("審査中", "In progress")) }
                        "decided" => { (lang.t("認定済", "Decided")) }
                        "withdrawn" => { (lang.t("取下げ", "Withdrawn")) }
                        _ => { (lang.t("却下", "Rejected")) }
                    }
                }
                @if let Some(level) = application.decided_level { p { (lang.t("認定結果", "Decided level")) ": " strong { (care_level(lang, level)) } } }
                @if application.status == "open" {
                    p.overdue[application.overdue] {
                        (lang.t("現在の段階", "Current step")) ": "
                        (application.current_step.as_deref().map(|s| step(lang, s)).unwrap_or_default())
                        @if let Some(due) = application.due_date { " · " (lang.t("処理期限", "Due")) " " (date(due)) }
                        @if application.overdue { " " span class="badge" { (lang.t("期限超過", "Overdue")) } }
                    }
                }
                (timeline(lang, application))
            }
        }
        @if applications.is_empty() { p { (lang.t("申請はありません。", "No applications.")) } }
    }
}

/// The remaining home-modification and equipment-purchase amounts.
pub(super) fn ledger_meters(lang: Lang, ledgers: &LedgersView) -> Markup {
    html! {
        (meter(lang, "home-modification", lang.t("住宅改修費", "Home modification"), ledgers.home_modification_remaining, HOME_MODIFICATION_CAP.get()))
        (meter(lang, "equipment", &format!("{} ({}{})", lang.t("福祉用具購入費", "Equipment purchase"), ledgers.fiscal_year, lang.t("年度", " fiscal year")), ledgers.equipment_remaining, EQUIPMENT_CAP_PER_FISCAL_YEAR.get()))
    }
}

/// The documents, each with a link to `<base>/documents/<sha256>`.
pub(super) fn document_table(lang: Lang, base: &str, documents: &[DocumentView]) -> Markup {
    html! {
        table class="documents" {
            thead { tr {
                th scope="col" { (lang.t("種類", "Kind")) }
                th scope="col" { (lang.t("申請", "Application")) }
                th scope="col" { (lang.t("登録日時", "Recorded")) }
                th scope="col" { (lang.t("サイズ", "Size")) }
                th scope="col" { span class="sr-only" { (lang.t("操作", "Action")) } }
            } }
            tbody {
                @for d in documents {
                    tr {
                        td { (document_kind(lang, d.kind)) }
                        td { (d.application) }
                        td { (time(d.recorded_at)) }
                        td { (d.size_bytes.div_ceil(1024)) " KB" }
                        td { a href={ (base) "/documents/" (d.sha256) } { (lang.t("開く", "Open")) } }
                    }
                }
                @if documents.is_empty() { tr { td colspan="5" { (lang.t("書類はありません。", "No documents.")) } } }
            }
        }
    }
}

/// `GET /ui/persons/{insurer}/{insured}/documents/{sha256}`: one document
/// (a logged read), with its download through the API.
pub async fn document(
    State(state): State<AppState>,
    staff: Staff,
    _: SameOriginRead,
    Path((insurer, insured, sha256)): Path<(String, String, String)>,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let person = logged_read(&state, &staff, &insurer, &insured).await?;
    let documents = state
        .inner
        .read
        .documents_of(&person.key())
        .await
        .map_err(ApiError::from)?;
    let Some(doc) = documents.into_iter().find(|d| d.sha256 == sha256) else {
        return Err(ApiError::not_found("No such document for this person.").into());
    };
    let download = format!(
        "/v1/persons/{}/{}/documents/{}",
        person.insurer, person.insured, doc.sha256
    );
    let body = html! {
        dl class="document" {
            dt { (lang.t("種類", "Kind")) } dd id="document-kind" { (document_kind(lang, doc.kind)) }
            dt { (lang.t("申請", "Application")) } dd { (doc.application) }
            dt { (lang.t("形式", "Media type")) } dd { (doc.media_type) }
            dt { (lang.t("サイズ", "Size")) } dd { (doc.size_bytes) " bytes" }
            dt { (lang.t("登録日時", "Recorded")) } dd { (time(doc.recorded_at)) }
            dt { "SHA-256" } dd { code id="document-sha256" { (doc.sha256) } }
        }
        p {
            a class="button" href=(download) download { (lang.t("ダウンロード", "Download")) }
            " "
            a href={ "/ui/persons/" (person.insurer) "/" (person.insured) } { (lang.t("利用者詳細へ戻る", "Back to the person")) }
        }
    };
    Ok(staff.page(document_kind(lang, doc.kind), body))
}
