//! Subsidy (助成金) commands: the application with its attachments by an
//! office or a medical institution, the federation's decisions (review,
//! deficiency, decision, payment), and the download of an application's
//! attachments.
//!
//! Attachments are uploaded first (`POST /v1/attachments`, which stores the
//! bytes and answers the reference); the application names them by
//! reference, and each must have been uploaded by the applicant itself with
//! the media type and size given (the blobs are shared by digest; the
//! record of who uploaded what is not).

use axum::extract::{Path, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kiban_engine::CommandContext;
use kiban_events::domain::office::{Office, office_stream};
use kiban_events::domain::subsidy::{
    ApplicantRecord, DesignationNotice, EarlierApplication, ReceiptLine, SubsidyApplicant,
    SubsidyApplication, SubsidyCommand, subsidy_stream_for_institution, subsidy_stream_for_office,
};
use kiban_events::domain::{DocumentRef, Yen};
use kiban_events::envelope::{Actor, StreamName};
use kiban_events::ids::{MedicalInstitutionCode, OfficeNumber};

use crate::auth::{Allow, Caller, check_terminal, fold};
use crate::commands::{APPLICATIONS_PER_PERSON_MAX, CommandAccepted, execute, next_stream_seq};
use crate::documents::{DocumentBytes, document_response};
use crate::error::ApiError;
use crate::extract::{Command, uploader_name};
use crate::principal::Principal;
use crate::state::AppState;

/// Body of a subsidy application.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubsidyApplicationBody {
    /// The card readers bought (0 for a medical institution).
    pub reader_count: u32,
    /// The receipt lines, each with its uploaded receipt.
    pub receipt_lines: Vec<ReceiptLine>,
    /// The uploaded passbook or cash-card copy.
    pub passbook: DocumentRef,
    /// An office: one designation notice (指定通知書) per service type.
    #[serde(default)]
    pub designation_notices: Vec<DesignationNotice>,
    /// A medical institution: the document showing bed counts.
    #[serde(default)]
    pub bed_count_document: Option<DocumentRef>,
}

impl SubsidyApplicationBody {
    fn documents(&self) -> impl Iterator<Item = &DocumentRef> {
        self.receipt_lines
            .iter()
            .map(|line| &line.receipt)
            .chain(std::iter::once(&self.passbook))
            .chain(self.designation_notices.iter().map(|n| &n.document))
            .chain(self.bed_count_document.iter())
    }
}

/// `POST /v1/subsidies`: an office (active terminal) or a medical
/// institution applies; the stream is the applicant's next
/// `subsidy/<office>-<seq>` or `subsidy/m<code>-<seq>`.
pub async fn apply(
    State(state): State<AppState>,
    sent: Command<SubsidyApplicationBody>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let (applicant, actor, stream, record) = match &caller.principal {
        Principal::Office { office, terminal } => {
            check_terminal(&state, office, terminal, &caller.fingerprint).await?;
            let seq = next_stream_seq(&state, &command_id, |seq| {
                subsidy_stream_for_office(office, seq)
            })
            .await?;
            let stream = subsidy_stream_for_office(office, seq);
            let record = office_record(&state, office, &stream).await?;
            (
                SubsidyApplicant::CareOffice {
                    office: office.clone(),
                    service_types: request
                        .designation_notices
                        .iter()
                        .map(|n| n.service_type.clone())
                        .collect(),
                    designation_notices: request.designation_notices.clone(),
                },
                caller.actor(),
                stream,
                record,
            )
        }
        Principal::MedicalInstitution(institution) => {
            let seq = next_stream_seq(&state, &command_id, |seq| {
                subsidy_stream_for_institution(institution, seq)
            })
            .await?;
            let stream = subsidy_stream_for_institution(institution, seq);
            let record = ApplicantRecord {
                registered_service_types: Vec::new(),
                earlier: earlier_applications(&state, &stream).await?,
            };
            (
                SubsidyApplicant::MedicalInstitution {
                    institution: institution.clone(),
                    bed_count_document: request.bed_count_document.clone(),
                },
                Actor::MedicalInstitution(institution.clone()),
                stream,
                record,
            )
        }
        _ => {
            return Err(ApiError::forbidden(
                "Only offices and medical institutions apply for the subsidy.",
            ));
        }
    };
    // After the caller is admitted (the authorisation matrix: a principal
    // that may not apply is told 403, not what it uploaded).
    check_own_uploads(&state, &caller.principal, &request).await?;
    let command = SubsidyCommand::Apply {
        applicant,
        reader_count: request.reader_count,
        receipt_lines: request.receipt_lines,
        passbook: request.passbook,
        policy: state.inner.subsidy_policy,
        record,
    };
    let context = CommandContext::new(command_id, actor, state.now());
    execute::<SubsidyApplication>(&state, &stream, &command, context).await
}

/// What the subsidy decider needs about an office applying on `stream`:
/// the service types the office is registered with (its office stream) and
/// its earlier applications (the per-office limit, reader cap and receipts
/// are judged across them; DOMAIN.md "Subsidy").
pub(crate) async fn office_record(
    state: &AppState,
    office: &OfficeNumber,
    stream: &StreamName,
) -> Result<ApplicantRecord, ApiError> {
    let registered = fold::<Office>(state, &office_stream(office)).await?;
    Ok(ApplicantRecord {
        registered_service_types: registered.service_types,
        earlier: earlier_applications(state, stream).await?,
    })
}

/// The applicant's applications before `stream` (`subsidy/<who>-<seq>`):
/// `<who>-1` to `<who>-(seq − 1)`, each folded to what a later application
/// needs to know of it.
pub(crate) async fn earlier_applications(
    state: &AppState,
    stream: &StreamName,
) -> Result<Vec<EarlierApplication>, ApiError> {
    let (who, seq) = stream
        .id()
        .rsplit_once('-')
        .and_then(|(who, seq)| Some((who, seq.parse::<u32>().ok()?)))
        .ok_or_else(|| ApiError::validation("The application id is malformed."))?;
    if seq > APPLICATIONS_PER_PERSON_MAX {
        // No such stream is ever made (`next_stream_seq` stops there).
        return Err(ApiError::not_found("No such application."));
    }
    let mut earlier = Vec::new();
    for before in 1..seq {
        let name = StreamName::new("subsidy", &format!("{who}-{before}"))
            .map_err(|_| ApiError::validation("The application id is malformed."))?;
        if let Some(application) = fold::<SubsidyApplication>(state, &name).await?.as_earlier() {
            earlier.push(application);
        }
    }
    Ok(earlier)
}

/// Every attachment of `request` must have been uploaded by the applicant
/// itself, with the media type and size the application names: the blobs
/// are shared by digest, so knowing a document's digest (from a person's
/// documents, read under a consent long expired) must not let an office
/// attach it and read it back as its own.
async fn check_own_uploads(
    state: &AppState,
    applicant: &Principal,
    request: &SubsidyApplicationBody,
) -> Result<(), ApiError> {
    let uploader = uploader_name(applicant);
    // By the clock that stamps uploads (the database's), like the quota.
    let attachable_since =
        chrono::Utc::now() - chrono::Duration::hours(kiban_store::UPLOAD_ATTACHABLE_HOURS);
    for document in request.documents() {
        let uploads = state
            .inner
            .store
            .uploads_of(document.sha256().as_str(), &uploader)
            .await?;
        let Some(upload) = uploads.iter().find(|upload| {
            upload.size_bytes == document.size_bytes() && upload.media_type == document.media_type()
        }) else {
            return Err(ApiError::validation(format!(
                "The attachment {} was not uploaded by this applicant with that media type and \
                 size; upload it to /v1/attachments first.",
                document.sha256()
            )));
        };
        // Older uploads are near their removal (a week after the last
        // upload when no event names them): the day between keeps the
        // sweep from removing bytes this application is being decided with
        // (docs/security.md, "Unattached uploads").
        if upload.uploaded_at < attachable_since {
            return Err(ApiError::validation(format!(
                "The attachment {} was last uploaded more than {} days ago; upload it to \
                 /v1/attachments again (the same bytes keep the same reference).",
                document.sha256(),
                kiban_store::UPLOAD_ATTACHABLE_HOURS / 24
            )));
        }
    }
    Ok(())
}

/// A federation decision on an application.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum SubsidyDecision {
    /// Start the review (審査開始).
    StartReview,
    /// Record a deficiency (不備); closes the application.
    Deficiency {
        /// What is deficient.
        reason: String,
    },
    /// Decide the amount by the rules (交付決定).
    Decide,
    /// Record the payment (支払); must be the decided amount.
    Pay {
        /// The amount paid, in yen.
        amount: u64,
    },
}

/// The stream named by an application id of a path
/// (`<office>-<seq>` or `m<code>-<seq>`).
fn application_stream(application: &str) -> Result<StreamName, ApiError> {
    let well_formed = application.split_once('-').is_some_and(|(who, seq)| {
        let who = who.strip_prefix('m').unwrap_or(who);
        who.len() == 10
            && who.bytes().all(|b| b.is_ascii_digit())
            && !seq.is_empty()
            && seq.len() <= 10
            && seq.bytes().all(|b| b.is_ascii_digit())
    });
    if !well_formed {
        return Err(ApiError::validation(
            "The application id is `<office>-<seq>` or `m<institution>-<seq>`.",
        ));
    }
    StreamName::new("subsidy", application)
        .map_err(|_| ApiError::validation("The application id is malformed."))
}

/// `POST /v1/subsidies/{application}/decisions`: the federation reviews,
/// finds a deficiency, decides or records the payment.
pub async fn decide(
    State(state): State<AppState>,
    Path(application): Path<String>,
    sent: Command<SubsidyDecision>,
) -> Result<CommandAccepted, ApiError> {
    let (command_id, caller, request) = sent.into_parts();
    let stream = application_stream(&application)?;
    caller
        .allow(
            &state,
            &[Allow::Federation],
            "Only the federation decides on subsidy applications.",
        )
        .await?;
    let command = match request {
        SubsidyDecision::StartReview => SubsidyCommand::StartReview,
        SubsidyDecision::Deficiency { reason } => SubsidyCommand::FindDeficiency { reason },
        SubsidyDecision::Decide => SubsidyCommand::Decide {
            earlier: earlier_applications(&state, &stream).await?,
            medical_institution_limit: state.inner.subsidy_policy.medical_institution_limit,
        },
        SubsidyDecision::Pay { amount } => SubsidyCommand::Pay {
            amount: Yen::new(amount),
        },
    };
    let context = CommandContext::new(command_id, Actor::Federation, state.now());
    execute::<SubsidyApplication>(&state, &stream, &command, context).await
}

/// `GET /v1/subsidies/{application}/attachments/{sha256}`: an attachment of
/// an application, for the federation, auditors and the applicant.
pub async fn download_attachment(
    State(state): State<AppState>,
    caller: Caller,
    Path((application, sha256)): Path<(String, String)>,
) -> Result<DocumentBytes, ApiError> {
    let stream = application_stream(&application)?;
    // The id names its applicant (`<office>-<seq>`, `m<code>-<seq>`): who
    // may read is decided before anything is looked up, so that another
    // principal learns nothing, not even whether the application exists.
    let who = application.split_once('-').map_or("", |(who, _)| who);
    let (office, institution);
    let named = match who.strip_prefix('m') {
        Some(code) => {
            institution = MedicalInstitutionCode::parse(code)
                .map_err(|e| ApiError::validation(e.to_string()))?;
            Allow::Institution(&institution)
        }
        None => {
            office = OfficeNumber::parse(who).map_err(|e| ApiError::validation(e.to_string()))?;
            Allow::Office(&office)
        }
    };
    caller
        .allow(
            &state,
            &[Allow::Federation, Allow::Auditors, named],
            "Only the federation, auditors and the applicant read the attachments.",
        )
        .await?;
    let folded = fold::<SubsidyApplication>(&state, &stream).await?;
    let Some(applied) = folded.application else {
        return Err(ApiError::not_found("No such application."));
    };
    let applicant = match &applied.applicant {
        SubsidyApplicant::CareOffice { office, .. } => Allow::Office(office),
        SubsidyApplicant::MedicalInstitution { institution, .. } => Allow::Institution(institution),
    };
    caller
        .allow(
            &state,
            &[Allow::Federation, Allow::Auditors, applicant],
            "Only the federation, auditors and the applicant read the attachments.",
        )
        .await?;
    let designation = match &applied.applicant {
        SubsidyApplicant::CareOffice {
            designation_notices,
            ..
        } => designation_notices.iter().map(|n| &n.document).collect(),
        SubsidyApplicant::MedicalInstitution {
            bed_count_document, ..
        } => bed_count_document.iter().collect::<Vec<_>>(),
    };
    let document = applied
        .receipt_lines
        .iter()
        .map(|line| &line.receipt)
        .chain(std::iter::once(&applied.passbook))
        .chain(designation)
        .find(|d| d.sha256().as_str() == sha256)
        .ok_or_else(|| ApiError::not_found("The application has no such attachment."))?;
    // An application recorded before uploads were recorded may name bytes
    // the applicant never uploaded: the applicant reads back only its own.
    if matches!(
        caller.principal,
        Principal::Office { .. } | Principal::MedicalInstitution(_)
    ) {
        let uploads = state
            .inner
            .store
            .uploads_of(&sha256, &uploader_name(&caller.principal))
            .await?;
        if uploads.is_empty() {
            return Err(ApiError::not_found(
                "The application has no such attachment.",
            ));
        }
    }
    document_response(&state, &sha256, document.media_type()).await
}
