//! 助成金申請 (subsidy for card readers and connection support): the
//! office's applications with their status and due dates, and the form
//! with the amount computed before submitting (the domain's own
//! [`calculate`], asked by the page as the form is filled in).
//!
//! Attachments (receipts, the passbook, designation notices) are uploaded
//! with the form; the application records each as a `DocumentRef`
//! (SHA-256, media type, size), computed here from the bytes.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use kiban_engine::{CommandContext, EngineError};
use kiban_events::domain::office::{Office, office_stream};
use kiban_events::domain::subsidy::{
    DesignationNotice, ReceiptLine, ReceiptPurpose, SERVICE_TYPE_CATEGORIES, SubsidyApplicant,
    SubsidyApplication, SubsidyCalculation, SubsidyCommand, SubsidyPolicy, calculate,
    subsidy_stream_for_office,
};
use kiban_events::domain::{DocumentRef, RejectionCode, ServiceTypeCode, Sha256Digest, Yen};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::OfficeNumber;

use super::web::{Lang, Staff, UiError, date, yen};
use crate::auth::fold;
use crate::commands::next_stream_seq;
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// Receipt lines on the form.
pub const RECEIPT_LINES_ON_FORM: usize = 3;

/// The fiscal year's rules the screen applies for (the only year the seed
/// configures).
pub const POLICY: SubsidyPolicy = SubsidyPolicy::FY2025;

/// An uploaded file, as the application records it, with its bytes until
/// they are stored as a blob.
#[derive(Debug, Clone)]
struct Upload {
    reference: Result<DocumentRef, String>,
    bytes: axum::body::Bytes,
}

impl Upload {
    fn of(media_type: &str, bytes: axum::body::Bytes) -> Upload {
        let digest = hex::encode(Sha256::digest(&bytes));
        let media_type = crate::extract::document_media_type(media_type);
        let reference = media_type
            .ok_or_else(|| {
                format!(
                    "An attachment must be one of {}.",
                    crate::DOCUMENT_MEDIA_TYPES.join(", ")
                )
            })
            .and_then(|media_type| {
                Sha256Digest::parse(&digest)
                    .map(|sha| (sha, media_type))
                    .map_err(|e| e.to_string())
            })
            .and_then(|(sha, media_type)| {
                DocumentRef::new(sha, media_type, bytes.len() as u64).map_err(|e| e.to_string())
            });
        Upload { reference, bytes }
    }
}

impl SubsidyInput {
    /// Stores every well-formed upload as a content-addressed blob (before
    /// the application that references it is recorded), recorded as the
    /// office's upload like those of `POST /v1/attachments`.
    async fn store_uploads(&self, state: &AppState, office: &OfficeNumber) -> Result<(), UiError> {
        let uploader = format!("office:{}", office.as_str());
        let uploads = || {
            self.passbook
                .iter()
                .chain(self.receipts.values())
                .chain(self.notices.values())
                .filter(|upload| upload.reference.is_ok())
        };
        let bytes = uploads().map(|upload| upload.bytes.len() as u64).sum();
        crate::documents::check_attachment_quota(state, &uploader, bytes).await?;
        for upload in uploads() {
            let Ok(reference) = &upload.reference else {
                continue;
            };
            state
                .inner
                .store
                .put_upload(&upload.bytes, &uploader, reference.media_type())
                .await
                .map_err(ApiError::from)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
struct LineInput {
    purpose: String,
    count: String,
    amount: String,
}

/// What the form sent.
#[derive(Debug, Default)]
struct SubsidyInput {
    csrf: String,
    key: String,
    service_types: Vec<String>,
    reader_count: String,
    lines: Vec<LineInput>,
    passbook: Option<Upload>,
    receipts: BTreeMap<usize, Upload>,
    notices: BTreeMap<String, Upload>,
}

impl SubsidyInput {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut input = SubsidyInput {
            lines: vec![LineInput::default(); RECEIPT_LINES_ON_FORM],
            ..SubsidyInput::default()
        };
        for (name, value) in pairs {
            match name.as_str() {
                "csrf" => input.csrf = value,
                "key" => input.key = value,
                "service_type" => input.service_types.push(value),
                "reader_count" => input.reader_count = value,
                other => {
                    let Some((what, index)) = other.rsplit_once('_') else {
                        continue;
                    };
                    let Some(line) = index
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| i.checked_sub(1))
                        .and_then(|i| input.lines.get_mut(i))
                    else {
                        continue;
                    };
                    match what {
                        "line_purpose" => line.purpose = value,
                        "line_count" => line.count = value,
                        "line_amount" => line.amount = value,
                        _ => {}
                    }
                }
            }
        }
        input
    }
}

type FieldErrors = BTreeMap<String, String>;

/// The parsed, checked application (documents may be missing in a
/// preview).
struct Checked {
    service_types: Vec<ServiceTypeCode>,
    reader_count: u32,
    lines: Vec<(usize, Option<ReceiptPurpose>, Yen)>,
}

fn placeholder_document() -> DocumentRef {
    DocumentRef::new(
        Sha256Digest::parse(&"0".repeat(64)).expect("64 hex digits"),
        "application/octet-stream",
        1,
    )
    .expect("a valid reference")
}

fn check(lang: Lang, input: &SubsidyInput, errors: &mut FieldErrors) -> Checked {
    // The rules about service types and the reader count are the
    // decider's: its rejection is shown at the field (`rejected_field`).
    let mut service_types = Vec::new();
    for code in &input.service_types {
        match ServiceTypeCode::parse(code) {
            Ok(code) => service_types.push(code),
            Err(_) => {
                errors.insert(
                    "service_type".into(),
                    lang.t(
                        "助成対象のサービス種類を選択してください。",
                        "Choose service types the subsidy covers.",
                    )
                    .into(),
                );
            }
        }
    }
    let reader_count = match input.reader_count.trim().parse::<u32>() {
        Ok(n) if n <= 100 => n,
        _ => {
            errors.insert(
                "reader_count".into(),
                lang.t(
                    "購入したカードリーダーの台数を0〜100の数字で入力してください。",
                    "Enter the number of card readers bought (0–100).",
                )
                .into(),
            );
            0
        }
    };
    let mut lines = Vec::new();
    for (i, line) in input.lines.iter().enumerate() {
        let n = i + 1;
        let purpose = match line.purpose.as_str() {
            "" => continue,
            "card_readers" => match line.count.trim().parse::<u32>() {
                Ok(count) if count >= 1 => Some(ReceiptPurpose::CardReaders { count }),
                _ => {
                    errors.insert(
                        format!("line_count_{n}"),
                        lang.t(
                            "この領収書のカードリーダーの台数を入力してください。",
                            "Enter how many readers this receipt is for.",
                        )
                        .into(),
                    );
                    None
                }
            },
            "connection_support" => Some(ReceiptPurpose::ConnectionSupport),
            _ => None,
        };
        let amount = match line.amount.trim().replace(',', "").parse::<u64>() {
            Ok(amount) if amount >= 1 => Yen::new(amount),
            _ => {
                errors.insert(
                    format!("line_amount_{n}"),
                    lang.t(
                        "税込金額を円単位の数字で入力してください。",
                        "Enter the amount in yen, tax included.",
                    )
                    .into(),
                );
                Yen::ZERO
            }
        };
        lines.push((n, purpose, amount));
    }
    if lines.is_empty() {
        errors.insert(
            "line_purpose_1".into(),
            lang.t(
                "領収書の明細を一行以上入力してください。",
                "Enter at least one receipt line.",
            )
            .into(),
        );
    }
    Checked {
        service_types,
        reader_count,
        lines,
    }
}

fn applicant(
    staff: &Staff,
    checked: &Checked,
    notices: Vec<DesignationNotice>,
) -> SubsidyApplicant {
    SubsidyApplicant::CareOffice {
        office: staff.at.office.clone(),
        service_types: checked.service_types.clone(),
        designation_notices: notices,
    }
}

fn calculation_of(staff: &Staff, checked: &Checked) -> SubsidyCalculation {
    let lines: Vec<ReceiptLine> = checked
        .lines
        .iter()
        .map(|(_, purpose, amount)| ReceiptLine {
            purpose: *purpose,
            amount: *amount,
            receipt: placeholder_document(),
        })
        .collect();
    calculate(&applicant(staff, checked, Vec::new()), &lines, &POLICY)
}

fn preview(lang: Lang, calculation: &SubsidyCalculation) -> Markup {
    html! {
        table class="calculation" {
            caption { (lang.t("交付見込額（送信前の計算）", "Expected subsidy (computed before submitting)")) }
            tbody {
                tr { th scope="row" { (lang.t("上限額", "Limit")) } td { (yen(lang, calculation.limit.get())) } }
                tr { th scope="row" { (lang.t("補助対象台数の上限", "Readers covered at most")) } td { (calculation.reader_cap) } }
                tr { th scope="row" { (lang.t("領収書の台数", "Readers on receipts")) } td { (calculation.readers_on_receipts) } }
                tr { th scope="row" { (lang.t("対象経費（カードリーダー）", "Eligible: readers")) } td { (yen(lang, calculation.eligible_readers.get())) } }
                tr { th scope="row" { (lang.t("対象経費（接続サポート等）", "Eligible: connection support")) } td { (yen(lang, calculation.eligible_other.get())) } }
                tr { th scope="row" { (lang.t("対象外", "Not covered")) } td { (yen(lang, calculation.excluded.get())) } }
                tr class="total" { th scope="row" { (lang.t("交付見込額", "Expected payment")) } td id="payable" { (yen(lang, calculation.payable.get())) } }
            }
        }
    }
}

fn status_label(lang: Lang, status: &str) -> &'static str {
    match status {
        "applied" => lang.t("受付済", "Received"),
        "under_review" => lang.t("審査中", "Under review"),
        "closed" => lang.t("不備（終了）", "Deficient (closed)"),
        "decided" => lang.t("決定", "Decided"),
        "paid" => lang.t("振込済", "Paid"),
        _ => lang.t("不明", "Unknown"),
    }
}

fn field_error(errors: &FieldErrors, name: &str) -> Markup {
    html! {
        @if let Some(error) = errors.get(name) {
            p class="field-error" id={ (name) "-error" } role="alert" { (error) }
        }
    }
}

async fn render(
    state: &AppState,
    staff: &Staff,
    input: &SubsidyInput,
    errors: &FieldErrors,
    refused: Option<&ApiError>,
    applied: Option<&str>,
) -> Result<Markup, UiError> {
    let lang = staff.lang();
    let now = state.now();
    let applications = state
        .inner
        .read
        .subsidies(
            Some(
                &kiban_projections::models::organisations::office_applicant_key(
                    staff.at.office.as_str(),
                ),
            ),
            now,
        )
        .await
        .map_err(ApiError::from)?;
    let office = fold::<Office>(state, &office_stream(&staff.at.office)).await?;
    let mut offered: Vec<(String, &str)> = office
        .service_types
        .iter()
        .map(|code| {
            let name = SERVICE_TYPE_CATEGORIES
                .iter()
                .find(|(c, _, _)| *c == code.as_str())
                .map_or("", |(_, name, _)| *name);
            (code.as_str().to_owned(), name)
        })
        .collect();
    offered.dedup();
    let mut scratch = FieldErrors::new();
    let checked = check(lang, input, &mut scratch);
    let calculation = calculation_of(staff, &checked);
    let purposes = [
        ("", lang.t("（なし）", "(none)")),
        ("card_readers", lang.t("カードリーダー", "Card readers")),
        (
            "connection_support",
            lang.t("接続サポート・設定費用", "Connection support"),
        ),
    ];
    let body = html! {
        @if let Some(stream) = applied {
            div class="success" role="status" id="applied" {
                p { strong { (lang.t("助成金申請を受け付けました。", "The subsidy application was received.")) } " " code { (stream) } }
            }
        }
        section aria-labelledby="applications" {
            h2 id="applications" { (lang.t("申請状況", "Applications")) }
            table id="subsidy-applications" {
                thead { tr {
                    th scope="col" { (lang.t("申請", "Application")) }
                    th scope="col" { (lang.t("申請日", "Applied")) }
                    th scope="col" { (lang.t("状況", "Status")) }
                    th scope="col" { (lang.t("決定通知の期限", "Notice due")) }
                    th scope="col" { (lang.t("振込の期限", "Payment due")) }
                    th scope="col" { (lang.t("決定額", "Amount")) }
                } }
                tbody {
                    @for a in &applications {
                        tr {
                            td { (a.application) }
                            td { (a.applied_on.map(date).unwrap_or_default()) }
                            td class="status" { (status_label(lang, a.status)) }
                            td.overdue[a.notice_overdue] { (a.notice_due_by.map(|d| d.format("%Y-%m").to_string()).unwrap_or_default()) }
                            td.overdue[a.payment_overdue] { (a.payment_due_by.map(|d| d.format("%Y-%m").to_string()).unwrap_or_default()) }
                            td { (a.payable.map(|p| yen(lang, p)).unwrap_or_else(|| "—".into())) }
                        }
                    }
                    @if applications.is_empty() { tr { td colspan="6" { (lang.t("申請はありません。", "No applications.")) } } }
                }
            }
        }
        section aria-labelledby="new-application" {
            h2 id="new-application" { (lang.t("新規申請", "New application")) }
            p { (lang.t("申請期間", "Application window")) ": " (date(POLICY.window_from)) " – " (date(POLICY.window_until)) }
            @if let Some(error) = refused {
                div class="error" role="alert" id="form-error" {
                    p { strong { (lang.t("受け付けられませんでした。", "Not accepted.")) } }
                    p lang="en" { (error.detail) }
                    @if let Some(code) = error.code { p { small { code { (code) } } } }
                }
            }
            @if !errors.is_empty() {
                p class="error" role="alert" id="form-errors" {
                    (lang.t("入力内容に誤りがあります。各項目のメッセージを確認し、添付ファイルを選び直してください。",
                            "Some fields need fixing; see the messages, and attach the files again."))
                }
            }
            form id="subsidy-form" method="post" action="/ui/subsidy" enctype="multipart/form-data" class="card" novalidate {
                (staff.csrf_field())
                input type="hidden" name="key" value=(input.key);
                fieldset {
                    legend { (lang.t("サービス種類と指定通知書", "Service types and designation notices")) }
                    (field_error(errors, "service_type"))
                    @for (code, name) in &offered {
                        div class="service-type" {
                            input type="checkbox" id={ "st-" (code) } name="service_type" value=(code) checked[input.service_types.contains(code)];
                            label for={ "st-" (code) } { (code) " " (name) }
                            label for={ "notice_" (code) } class="file" { (lang.t("指定通知書", "Designation notice")) }
                            input type="file" id={ "notice_" (code) } name={ "notice_" (code) } accept="application/pdf,image/*";
                            (field_error(errors, &format!("notice_{code}")))
                        }
                    }
                }
                div class="field" {
                    label for="reader_count" { (lang.t("購入したカードリーダーの台数", "Card readers bought")) }
                    input id="reader_count" name="reader_count" inputmode="numeric" value=(input.reader_count);
                    (field_error(errors, "reader_count"))
                }
                fieldset {
                    legend { (lang.t("領収書の明細（税込）", "Receipt lines (tax included)")) }
                    @for (i, line) in input.lines.iter().enumerate() {
                        @let n = i + 1;
                        div class="receipt-line" {
                            label for={ "line_purpose_" (n) } { (lang.t("用途", "Purpose")) " " (n) }
                            select id={ "line_purpose_" (n) } name={ "line_purpose_" (n) } {
                                @for (value, label) in purposes {
                                    option value=(value) selected[line.purpose == value] { (label) }
                                }
                            }
                            label for={ "line_count_" (n) } { (lang.t("台数", "Readers")) }
                            input id={ "line_count_" (n) } name={ "line_count_" (n) } inputmode="numeric" size="3" value=(line.count);
                            label for={ "line_amount_" (n) } { (lang.t("金額（円）", "Amount (yen)")) }
                            input id={ "line_amount_" (n) } name={ "line_amount_" (n) } inputmode="numeric" value=(line.amount);
                            label for={ "line_receipt_" (n) } class="file" { (lang.t("領収書", "Receipt")) }
                            input type="file" id={ "line_receipt_" (n) } name={ "line_receipt_" (n) } accept="application/pdf,image/*";
                            (field_error(errors, &format!("line_purpose_{n}")))
                            (field_error(errors, &format!("line_count_{n}")))
                            (field_error(errors, &format!("line_amount_{n}")))
                            (field_error(errors, &format!("line_receipt_{n}")))
                        }
                    }
                }
                div class="field" {
                    label for="passbook" { (lang.t("通帳またはキャッシュカードの写し", "Bank passbook or cash card copy")) }
                    input type="file" id="passbook" name="passbook" accept="application/pdf,image/*";
                    (field_error(errors, "passbook"))
                }
                div id="subsidy-preview" aria-live="polite" { (preview(lang, &calculation)) }
                button type="submit" id="submit" { (lang.t("申請を送信", "Submit the application")) }
            }
        }
    };
    Ok(staff.page(lang.t("助成金申請", "Subsidy application"), body))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    applied: Option<String>,
}

/// `GET /ui/subsidy`
pub async fn page(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<PageQuery>,
) -> Result<Markup, UiError> {
    let input = SubsidyInput {
        key: Uuid::now_v7().to_string(),
        lines: vec![LineInput::default(); RECEIPT_LINES_ON_FORM],
        ..SubsidyInput::default()
    };
    let applied = query.applied.filter(|a| {
        a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-".contains(&b))
    });
    render(
        &state,
        &staff,
        &input,
        &FieldErrors::new(),
        None,
        applied.as_deref(),
    )
    .await
}

/// `POST /ui/subsidy/calculate`: the expected amount for the form as
/// filled in so far (no files, nothing recorded).
pub async fn calculate_preview(
    staff: Staff,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Markup, UiError> {
    let input = SubsidyInput::from_pairs(pairs);
    staff.check_csrf(&input.csrf)?;
    let mut errors = FieldErrors::new();
    let checked = check(staff.lang(), &input, &mut errors);
    Ok(preview(staff.lang(), &calculation_of(&staff, &checked)))
}

async fn read_multipart(mut multipart: Multipart) -> Result<SubsidyInput, UiError> {
    let mut pairs = Vec::new();
    let mut files: Vec<(String, Upload)> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                let kind = if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ProblemKind::PayloadTooLarge
                } else {
                    ProblemKind::Validation
                };
                return Err(ApiError::new(
                    kind,
                    "The form could not be read (too large or malformed).",
                )
                .into());
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if field.file_name().is_some() {
            let media_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|_| UiError::invalid("An attachment could not be read."))?;
            if !bytes.is_empty() {
                files.push((name, Upload::of(&media_type, bytes)));
            }
        } else {
            let text = field
                .text()
                .await
                .map_err(|_| UiError::invalid("A field could not be read."))?;
            pairs.push((name, text));
        }
    }
    let mut input = SubsidyInput::from_pairs(pairs);
    for (name, upload) in files {
        if name == "passbook" {
            input.passbook = Some(upload);
        } else if let Some(code) = name.strip_prefix("notice_") {
            input.notices.insert(code.to_owned(), upload);
        } else if let Some(n) = name
            .strip_prefix("line_receipt_")
            .and_then(|n| n.parse().ok())
        {
            input.receipts.insert(n, upload);
        }
    }
    Ok(input)
}

fn document(
    lang: Lang,
    upload: Option<&Upload>,
    name: String,
    errors: &mut FieldErrors,
) -> Option<DocumentRef> {
    match upload.map(|u| &u.reference) {
        Some(Ok(reference)) => Some(reference.clone()),
        Some(Err(why)) => {
            errors.insert(
                name,
                format!(
                    "{}: {why}",
                    lang.t("添付ファイルを確認してください", "Check the attachment")
                ),
            );
            None
        }
        None => {
            errors.insert(
                name,
                lang.t("ファイルを添付してください。", "Attach the file.")
                    .into(),
            );
            None
        }
    }
}

/// The stream of the office's next application, or of the one this key
/// already made (so a resubmitted form lands on the same stream).
async fn next_stream(
    state: &AppState,
    staff: &Staff,
    key: &EventId,
) -> Result<kiban_events::StreamName, UiError> {
    let office = &staff.at.office;
    let seq = next_stream_seq(state, key, |seq| subsidy_stream_for_office(office, seq)).await?;
    Ok(subsidy_stream_for_office(office, seq))
}

/// The form field a rejection of the subsidy decider is about, if any:
/// the screen shows the decider's own words there rather than restating
/// its rules.
fn rejected_field(code: RejectionCode) -> Option<&'static str> {
    match code {
        RejectionCode::ServiceTypesMissing
        | RejectionCode::ServiceTypeDuplicated
        | RejectionCode::ServiceTypeUnknown
        | RejectionCode::ServiceTypeNotRegistered
        | RejectionCode::DesignationNoticeMissing => Some("service_type"),
        RejectionCode::ReaderCountMismatch => Some("reader_count"),
        _ => None,
    }
}

/// `POST /ui/subsidy` (multipart)
pub async fn submit(
    State(state): State<AppState>,
    staff: Staff,
    multipart: Multipart,
) -> Result<Response, UiError> {
    let input = read_multipart(multipart).await?;
    staff.check_csrf(&input.csrf)?;
    input.store_uploads(&state, &staff.at.office).await?;
    let lang = staff.lang();
    let key = Uuid::parse_str(input.key.trim())
        .ok()
        .and_then(crate::extract::caller_event_id)
        .ok_or_else(|| UiError::invalid("The form's key is malformed; reload the form."))?;
    let mut errors = FieldErrors::new();
    let checked = check(lang, &input, &mut errors);
    let mut notices = Vec::new();
    for code in &checked.service_types {
        if let Some(document) = document(
            lang,
            input.notices.get(code.as_str()),
            format!("notice_{}", code.as_str()),
            &mut errors,
        ) {
            notices.push(DesignationNotice {
                service_type: code.clone(),
                document,
            });
        }
    }
    let mut lines = Vec::new();
    for (n, purpose, amount) in &checked.lines {
        if let Some(receipt) = document(
            lang,
            input.receipts.get(n),
            format!("line_receipt_{n}"),
            &mut errors,
        ) {
            lines.push(ReceiptLine {
                purpose: *purpose,
                amount: *amount,
                receipt,
            });
        }
    }
    let passbook = document(
        lang,
        input.passbook.as_ref(),
        "passbook".into(),
        &mut errors,
    );
    let Some(passbook) = passbook.filter(|_| errors.is_empty()) else {
        let page = render(&state, &staff, &input, &errors, None, None).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    };
    let stream = next_stream(&state, &staff, &key).await?;
    let record = crate::subsidies::office_record(&state, &staff.at.office, &stream).await?;
    let command = SubsidyCommand::Apply {
        applicant: applicant(&staff, &checked, notices),
        reader_count: checked.reader_count,
        receipt_lines: lines,
        passbook,
        policy: POLICY,
        record,
    };
    let actor = Actor::Office {
        office: staff.at.office.clone(),
        terminal: Some(staff.at.terminal.as_str().to_owned()),
    };
    let outcome = state
        .inner
        .engine
        .execute::<SubsidyApplication>(
            &stream,
            &command,
            &CommandContext::new(key, actor, state.now()),
        )
        .await;
    if let Err(EngineError::Rejected(rejection)) = &outcome
        && let Some(field) = rejected_field(rejection.code())
    {
        let message = lang.t(rejection.message_ja(), rejection.message());
        errors.insert(field.into(), message.to_owned());
        let page = render(&state, &staff, &input, &errors, None, None).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    match outcome.map_err(ApiError::from) {
        Ok(executed) => {
            if let Some(position) = executed.positions().last() {
                let _ = state.inner.projections.wait_for(*position).await;
            }
            Ok(Redirect::to(&format!("/ui/subsidy?applied={stream}")).into_response())
        }
        Err(error) => {
            let page = render(&state, &staff, &input, &errors, Some(&error), None).await?;
            Ok((error.kind.status(), page).into_response())
        }
    }
}
