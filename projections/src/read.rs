//! [`ReadModels`]: the queries the API asks, and the views they return.
//!
//! Views are computed from the documents at read time with the domain's
//! own helpers (validity on a date, overdue, remaining ledgers), because
//! they depend on "today", which a projection must not read.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use kiban_events::domain::certification::{
    self, Applicant, ApplicationKind, CertificationEvent, CertificationStatus, ValidityPeriod,
};
use kiban_events::domain::dates::fiscal_year;
use kiban_events::domain::insured::{CarePlanOfficeKind, ViewingBasis};
use kiban_events::domain::insurer::{Insurer, InsurerEvent};
use kiban_events::domain::office::{Office, OfficeEvent};
use kiban_events::domain::subsidy::{
    ClosedBecause, SubsidyApplicant, SubsidyApplication, SubsidyEvent, SubsidyStatus,
};
use kiban_events::domain::{
    CareLevel, CopaymentRatio, CostLimitStage, Decider, DocumentRef, DomainEvent, jst_date,
};
use kiban_events::ids::OfficeNumber;

use crate::db::Db;
use crate::error::Result;
use crate::models::access_log::{
    ACCESS_LOG, AccessEntry, VIEWS_BY_OFFICE_INDEX, VIEWS_BY_PERSON_INDEX, VIEWS_INDEX, view_key,
};
use crate::models::card_links::{CARD_LINKS, CardLinkDoc, card_key};
use crate::models::care::{
    APPLICATIONS_INDEX, ApplicationDoc, CARE, CASELOAD_INDEX, OPEN_APPLICATIONS_INDEX,
    OPINION_REQUESTS_INDEX, PersonDoc, person_key,
};
use crate::models::organisations::{
    ALL, AggregateDoc, OFFICES_INDEX, ORGANISATIONS, SUBSIDIES_BY_APPLICANT_INDEX, SUBSIDIES_INDEX,
    insurer_key, office_key,
};

/// The order of an access-log page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogOrder {
    /// Oldest entry first (by position).
    #[default]
    OldestFirst,
    /// Newest entry first: what an auditor looks at first.
    NewestFirst,
}

/// Which page of the access log ([`ReadModels::access_log_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogPage {
    /// Start after the entry at this position (in `order`); the first page
    /// when `None`.
    pub after: Option<u64>,
    /// Most entries (1 to [`PAGE_ITEMS_MAX`]).
    pub limit: usize,
    /// Oldest or newest first.
    pub order: AccessLogOrder,
}

/// Longest page of any list query. A caseload page of 500 persons is a
/// screenful many times over and keeps one response small.
pub const PAGE_ITEMS_MAX: usize = 500;

/// The read side's queries over the served generations.
#[derive(Debug, Clone)]
pub struct ReadModels {
    db: Db,
}

/// A page of a list, with the cursor of the next page when there may be one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// A person's eligibility certificates (資格情報) as of a date.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EligibilityView {
    pub insurer: String,
    pub insured: String,
    /// The date the view is for (JST).
    pub as_of: NaiveDate,
    /// The certification in force.
    pub certification: Option<CertificationInForce>,
    /// Copayment-ratio certificates (負担割合証), oldest first.
    pub copayment_certificates: Vec<CopaymentView>,
    /// Cost-limit certificates (負担限度額認定証), oldest first.
    pub cost_limit_certificates: Vec<CostLimitView>,
    /// The registered care-plan office.
    pub care_plan_office: Option<CarePlanOfficeView>,
    /// Whether services are paid in full first (償還払い) on `as_of`.
    pub reimbursement_only: bool,
    /// When anything about the person last happened.
    pub last_updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CertificationInForce {
    pub application_seq: u32,
    pub level: CareLevel,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CopaymentView {
    pub ratio: CopaymentRatio,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// Whether it covers `as_of`.
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CostLimitView {
    pub stage: CostLimitStage,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CarePlanOfficeView {
    pub office: String,
    pub office_kind: CarePlanOfficeKind,
    pub billable_from: NaiveDate,
}

/// The benefit ledgers (住宅改修費・福祉用具購入費) as of a date.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LedgersView {
    pub insurer: String,
    pub insured: String,
    pub as_of: NaiveDate,
    /// Cost still covered by the home-modification cap (yen).
    pub home_modification_remaining: u64,
    /// The fiscal year of `as_of`.
    pub fiscal_year: i32,
    /// Cost still covered by this fiscal year's equipment cap (yen).
    pub equipment_remaining: u64,
}

/// A certification application's status and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApplicationView {
    /// `<insurer>-<insured>-<seq>`.
    pub application: String,
    pub insurer: String,
    pub insured: String,
    pub seq: u32,
    pub kind: Option<ApplicationKind>,
    pub applicant: Option<Applicant>,
    pub applied_on: Option<NaiveDate>,
    /// `open`, `decided`, `withdrawn`, `rejected`.
    pub status: &'static str,
    /// The current step: the last event's type.
    pub current_step: Option<String>,
    /// Every step with its time, oldest first.
    pub steps: Vec<StepView>,
    pub decided_level: Option<CareLevel>,
    pub validity: Option<ValidityPeriod>,
    /// The decision deadline of an open application.
    pub due_date: Option<NaiveDate>,
    /// Whether it is open past the deadline on `as_of`.
    pub overdue: bool,
    pub days_overdue: u64,
    pub as_of: NaiveDate,
    /// The medical institutions asked for an opinion.
    pub opinion_requested_from: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StepView {
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub position: u64,
}

/// A document available for an application (investigation sheet, opinion).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DocumentView {
    pub application: String,
    /// `investigation_sheet` or `opinion`.
    pub kind: &'static str,
    pub sha256: String,
    pub media_type: String,
    pub size_bytes: u64,
    pub recorded_at: DateTime<Utc>,
}

/// One person in an office's caseload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CaseloadEntry {
    pub insurer: String,
    pub insured: String,
    /// What lets the office see the person now.
    pub basis: ViewingBasis,
    pub last_updated_at: DateTime<Utc>,
}

/// A terminal of an office.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TerminalView {
    pub office: String,
    pub terminal: String,
    pub suspended: bool,
    /// SHA-256 fingerprint of its client certificate.
    pub credential: String,
}

/// An insurer's rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InsurerView {
    pub insurer: String,
    pub standardised_on: Option<NaiveDate>,
    pub transmitted_on: Option<NaiveDate>,
    pub sharing_enabled_on: Option<NaiveDate>,
    pub sharing_enabled: bool,
}

/// A subsidy application.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SubsidyView {
    /// The stream id.
    pub application: String,
    /// The office number or medical-institution code.
    pub applicant: String,
    /// `applied`, `under_review`, `closed` (deficiency), `decided` (a zero
    /// decision included: it closes with nothing due), `paid`.
    pub status: &'static str,
    pub applied_on: Option<NaiveDate>,
    pub notice_due_by: Option<NaiveDate>,
    pub payment_due_by: Option<NaiveDate>,
    /// The amount decided (yen).
    pub payable: Option<u64>,
    pub notice_overdue: bool,
    pub payment_overdue: bool,
}

impl ReadModels {
    /// Queries over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The person's document, if the person is known.
    pub async fn person(&self, person: &str) -> Result<Option<PersonDoc>> {
        self.db.document(CARE, &person_key(person)).await
    }

    /// The documents of the persons among `persons` (each
    /// `<insurer>-<insured>`) the read models know, in one query.
    pub async fn persons(&self, persons: &[String]) -> Result<Vec<PersonDoc>> {
        let keys: Vec<String> = persons.iter().map(|person| person_key(person)).collect();
        self.documents(CARE, &keys).await
    }

    /// The person (`<insurer>-<insured>` as a pair) the card certificate
    /// with `issuer` and upper-case hex `serial` is linked to, if any (the
    /// one linked last, when several are).
    pub async fn person_of_card(
        &self,
        issuer: &str,
        serial: &str,
    ) -> Result<Option<(String, String)>> {
        let doc: Option<CardLinkDoc> = self
            .db
            .document(CARD_LINKS, &card_key(issuer, serial))
            .await?;
        Ok(doc.map(|doc| (doc.insurer, doc.insured)))
    }

    /// A person's eligibility certificates at `now`.
    pub async fn eligibility(
        &self,
        person: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<EligibilityView>> {
        Ok(self
            .person(person)
            .await?
            .map(|doc| eligibility_view(&doc, now)))
    }

    /// A person's benefit ledgers at `now`.
    pub async fn ledgers(&self, person: &str, now: DateTime<Utc>) -> Result<Option<LedgersView>> {
        Ok(self.person(person).await?.map(|doc| {
            let state = doc.state();
            let as_of = jst_date(now);
            let year = fiscal_year(as_of);
            LedgersView {
                insurer: doc.insurer.clone(),
                insured: doc.insured.clone(),
                as_of,
                home_modification_remaining: state.home_modification_remaining_on(as_of).get(),
                fiscal_year: year,
                equipment_remaining: state.equipment_remaining(year).get(),
            }
        }))
    }

    /// A person's certification applications, oldest first.
    pub async fn applications(
        &self,
        person: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ApplicationView>> {
        let keys = self
            .db
            .index_page(CARE, APPLICATIONS_INDEX, person, "", PAGE_ITEMS_MAX)
            .await?;
        let docs: Vec<ApplicationDoc> = self.documents(CARE, &keys).await?;
        let mut views: Vec<ApplicationView> =
            docs.iter().map(|doc| application_view(doc, now)).collect();
        views.sort_by_key(|view| view.seq);
        Ok(views)
    }

    /// The documents available for a person's applications.
    pub async fn documents_of(&self, person: &str) -> Result<Vec<DocumentView>> {
        let keys = self
            .db
            .index_page(CARE, APPLICATIONS_INDEX, person, "", PAGE_ITEMS_MAX)
            .await?;
        let docs: Vec<ApplicationDoc> = self.documents(CARE, &keys).await?;
        Ok(docs.iter().flat_map(document_views).collect())
    }

    /// The open applications of `insurer` past their deadline at `now`.
    pub async fn overdue_applications(
        &self,
        insurer: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ApplicationView>> {
        let keys = self
            .db
            .index_page(CARE, OPEN_APPLICATIONS_INDEX, insurer, "", PAGE_ITEMS_MAX)
            .await?;
        let docs: Vec<ApplicationDoc> = self.documents(CARE, &keys).await?;
        Ok(docs
            .iter()
            .map(|doc| application_view(doc, now))
            .filter(|view| view.overdue)
            .collect())
    }

    /// Applications whose opinion was requested from `institution`.
    pub async fn opinion_requests(
        &self,
        institution: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ApplicationView>> {
        let keys = self
            .db
            .index_page(
                CARE,
                OPINION_REQUESTS_INDEX,
                institution,
                "",
                PAGE_ITEMS_MAX,
            )
            .await?;
        let docs: Vec<ApplicationDoc> = self.documents(CARE, &keys).await?;
        Ok(docs.iter().map(|doc| application_view(doc, now)).collect())
    }

    /// A page of the persons `office` may see at `now`, by person key after
    /// `after`. A page can be shorter than `limit` when consents expired
    /// without a recorded expiry; `next` is set whenever more may follow.
    pub async fn caseload(
        &self,
        office: &OfficeNumber,
        after: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Page<CaseloadEntry>> {
        let limit = limit.clamp(1, PAGE_ITEMS_MAX);
        let keys = self
            .db
            .index_page(CARE, CASELOAD_INDEX, office.as_str(), after, limit)
            .await?;
        let next = (keys.len() == limit)
            .then(|| keys.last().cloned())
            .flatten();
        let docs: Vec<PersonDoc> = self.documents(CARE, &keys).await?;
        let items = docs
            .iter()
            .filter_map(|doc| {
                let basis = doc.state().viewing_basis(office, now)?;
                Some(CaseloadEntry {
                    insurer: doc.insurer.clone(),
                    insured: doc.insured.clone(),
                    basis,
                    last_updated_at: doc.last_updated_at,
                })
            })
            .collect();
        Ok(Page { items, next })
    }

    /// A page of the persons of `insurer` in any office's caseload (a
    /// consent or a care-plan office recorded, live or not), by person key
    /// after `after`; `next` is set whenever more may follow.
    pub async fn persons_in_caseloads(
        &self,
        insurer: &str,
        after: &str,
        limit: usize,
    ) -> Result<Page<PersonDoc>> {
        let limit = limit.clamp(1, PAGE_ITEMS_MAX);
        // Person keys `person:<insurer>-<insured>`: from `-` up to the next
        // character, `.`.
        let (from, to) = (
            crate::models::care::person_key(&format!("{insurer}-")),
            crate::models::care::person_key(&format!("{insurer}.")),
        );
        let keys = self
            .db
            .indexed_between(CARE, CASELOAD_INDEX, (&from, &to), after, limit)
            .await?;
        let next = (keys.len() == limit)
            .then(|| keys.last().cloned())
            .flatten();
        Ok(Page {
            items: self.documents(CARE, &keys).await?,
            next,
        })
    }

    /// The terminals of every office, or of one.
    pub async fn terminals(&self, office: Option<&str>) -> Result<Vec<TerminalView>> {
        let keys = match office {
            Some(office) => vec![office_key(office)],
            None => {
                self.db
                    .index_page(ORGANISATIONS, OFFICES_INDEX, ALL, "", PAGE_ITEMS_MAX)
                    .await?
            }
        };
        let docs: Vec<AggregateDoc<OfficeEvent>> = self.documents(ORGANISATIONS, &keys).await?;
        Ok(docs
            .iter()
            .flat_map(|doc| {
                let state = Office::replay(doc.events.iter().map(|s| &s.event));
                state
                    .terminals
                    .into_iter()
                    .map(|(terminal, t)| TerminalView {
                        office: doc.id.clone(),
                        terminal: terminal.as_str().to_owned(),
                        suspended: t.suspended,
                        credential: t.credential.as_str().to_owned(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// An insurer's rollout status.
    pub async fn insurer(&self, insurer: &str) -> Result<Option<InsurerView>> {
        let doc: Option<AggregateDoc<InsurerEvent>> = self
            .db
            .document(ORGANISATIONS, &insurer_key(insurer))
            .await?;
        Ok(doc.as_ref().map(insurer_view))
    }

    /// Since which position each of `insurers` the read models know shares
    /// its people with offices (the position of its
    /// `insurer.sharing_enabled`), for those that do, in one query: what
    /// office routing judges an event by, as of the event.
    pub async fn sharing_since(
        &self,
        insurers: &[String],
    ) -> Result<std::collections::HashMap<String, kiban_events::Position>> {
        let keys: Vec<String> = insurers
            .iter()
            .map(|insurer| insurer_key(insurer))
            .collect();
        let docs: Vec<AggregateDoc<InsurerEvent>> = self.documents(ORGANISATIONS, &keys).await?;
        Ok(docs
            .into_iter()
            .filter_map(|doc| {
                let since = doc
                    .events
                    .iter()
                    .find(|stamped| matches!(stamped.event, InsurerEvent::SharingEnabled { .. }))?
                    .position;
                Some((doc.id, since))
            })
            .collect())
    }

    /// Subsidy applications: all, or one applicant's (its
    /// `models::organisations::applicant_key`: `office:<n>`, `medical:<n>`).
    pub async fn subsidies(
        &self,
        applicant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubsidyView>> {
        let (index, key) = match applicant {
            Some(applicant) => (SUBSIDIES_BY_APPLICANT_INDEX, applicant),
            None => (SUBSIDIES_INDEX, ALL),
        };
        let keys = self
            .db
            .index_page(ORGANISATIONS, index, key, "", PAGE_ITEMS_MAX)
            .await?;
        let docs: Vec<AggregateDoc<SubsidyEvent>> = self.documents(ORGANISATIONS, &keys).await?;
        Ok(docs.iter().map(|doc| subsidy_view(doc, now)).collect())
    }

    /// The access log: of a person, of an office, or all; the first
    /// [`PAGE_ITEMS_MAX`] entries, oldest first (see
    /// [`ReadModels::access_log_page`] for the rest).
    pub async fn access_log(
        &self,
        person: Option<&str>,
        office: Option<&str>,
    ) -> Result<Vec<AccessEntry>> {
        let page = AccessLogPage {
            after: None,
            limit: PAGE_ITEMS_MAX,
            order: AccessLogOrder::OldestFirst,
        };
        self.access_log_page(person, office, &page).await
    }

    /// One page of the access log of a person, of an office, or all: at
    /// most `page.limit` (1 to [`PAGE_ITEMS_MAX`]) entries in `page.order`,
    /// starting after the entry at position `page.after` (in that order).
    /// The next page starts after the last entry's position.
    pub async fn access_log_page(
        &self,
        person: Option<&str>,
        office: Option<&str>,
        page: &AccessLogPage,
    ) -> Result<Vec<AccessEntry>> {
        let (index, key) = match (person, office) {
            (Some(person), _) => (VIEWS_BY_PERSON_INDEX, person),
            (None, Some(office)) => (VIEWS_BY_OFFICE_INDEX, office),
            (None, None) => (VIEWS_INDEX, ALL),
        };
        let limit = page.limit.clamp(1, PAGE_ITEMS_MAX);
        let keys = match page.order {
            AccessLogOrder::OldestFirst => {
                let after = page.after.map(view_key).unwrap_or_default();
                self.db
                    .index_page(ACCESS_LOG, index, key, &after, limit)
                    .await?
            }
            AccessLogOrder::NewestFirst => {
                // Keys sort by position; "before" the largest possible key
                // when starting at the newest.
                let before = page.after.map_or_else(|| "view;".to_owned(), view_key);
                let sql = "SELECT i.doc_key FROM projection_index i
                    JOIN projection_live l ON l.projection = i.projection AND l.generation = i.generation
                    WHERE i.projection = $1 AND i.index_name = $2 AND i.index_key = $3 AND i.doc_key < $4
                    ORDER BY i.doc_key DESC LIMIT $5";
                kiban_store::both!(self.db.pool(), pool => sqlx::query_scalar::<_, String>(sql)
                    .bind(ACCESS_LOG)
                    .bind(index)
                    .bind(key)
                    .bind(&before)
                    .bind(limit as i64)
                    .fetch_all(pool)
                    .await)?
            }
        };
        self.documents(ACCESS_LOG, &keys).await
    }

    async fn documents<T: DeserializeOwned>(
        &self,
        projection: &str,
        keys: &[String],
    ) -> Result<Vec<T>> {
        self.db.documents(projection, keys).await
    }
}

fn insurer_view(doc: &AggregateDoc<InsurerEvent>) -> InsurerView {
    let state = Insurer::replay(doc.events.iter().map(|s| &s.event));
    InsurerView {
        insurer: doc.id.clone(),
        standardised_on: state.standardised_on,
        transmitted_on: state.transmitted_on,
        sharing_enabled_on: state.sharing_enabled_on,
        sharing_enabled: state.sharing_enabled(),
    }
}

fn eligibility_view(doc: &PersonDoc, now: DateTime<Utc>) -> EligibilityView {
    let state = doc.state();
    let as_of = jst_date(now);
    let covers = |from: NaiveDate, until: NaiveDate| from <= as_of && as_of <= until;
    EligibilityView {
        insurer: doc.insurer.clone(),
        insured: doc.insured.clone(),
        as_of,
        certification: state.certification_on(as_of).map(|c| CertificationInForce {
            application_seq: c.application_seq,
            level: c.level,
            valid_from: c.validity.from,
            valid_until: c.validity.until,
        }),
        copayment_certificates: state
            .copayment_certificates
            .iter()
            .map(|c| CopaymentView {
                ratio: c.ratio,
                valid_from: c.valid_from,
                valid_until: c.valid_until,
                current: covers(c.valid_from, c.valid_until),
            })
            .collect(),
        cost_limit_certificates: state
            .cost_limit_certificates
            .iter()
            .map(|c| CostLimitView {
                stage: c.stage,
                valid_from: c.valid_from,
                valid_until: c.valid_until,
                current: covers(c.valid_from, c.valid_until),
            })
            .collect(),
        care_plan_office: state.care_plan_office.as_ref().map(|r| CarePlanOfficeView {
            office: r.office.to_string(),
            office_kind: r.office_kind,
            billable_from: r.billable_from,
        }),
        reimbursement_only: state.reimbursement_only(as_of),
        last_updated_at: doc.last_updated_at,
    }
}

fn status_name(status: CertificationStatus) -> &'static str {
    match status {
        CertificationStatus::NotFiled => "not_filed",
        CertificationStatus::Open => "open",
        CertificationStatus::Decided => "decided",
        CertificationStatus::Withdrawn => "withdrawn",
        CertificationStatus::Rejected => "rejected",
    }
}

fn application_view(doc: &ApplicationDoc, now: DateTime<Utc>) -> ApplicationView {
    let state = doc.state();
    let as_of = jst_date(now);
    let overdue = certification::overdue(&state, as_of);
    ApplicationView {
        application: doc.id(),
        insurer: doc.insurer.clone(),
        insured: doc.insured.clone(),
        seq: doc.seq,
        kind: state.application.as_ref().map(|a| a.kind),
        applicant: state.application.as_ref().map(|a| a.applicant.clone()),
        applied_on: state.application.as_ref().map(|a| a.applied_on),
        status: status_name(state.status),
        current_step: doc.events.last().map(|s| s.event.event_type().to_owned()),
        steps: doc
            .events
            .iter()
            .map(|s| StepView {
                event_type: s.event.event_type().to_owned(),
                occurred_at: s.occurred_at,
                position: s.position,
            })
            .collect(),
        decided_level: state.decision.as_ref().map(|d| d.level),
        validity: state.decision.as_ref().and_then(|d| d.validity),
        due_date: state.due_date(),
        overdue: overdue.is_some(),
        days_overdue: overdue.map_or(0, |o| o.days_overdue),
        as_of,
        opinion_requested_from: state
            .opinion_requested_from
            .iter()
            .map(|code| code.to_string())
            .collect(),
    }
}

fn document_views(doc: &ApplicationDoc) -> Vec<DocumentView> {
    let view = |kind: &'static str, document: &DocumentRef, at: DateTime<Utc>| DocumentView {
        application: doc.id(),
        kind,
        sha256: document.sha256().as_str().to_owned(),
        media_type: document.media_type().to_owned(),
        size_bytes: document.size_bytes(),
        recorded_at: at,
    };
    doc.events
        .iter()
        .filter_map(|s| match &s.event {
            CertificationEvent::InvestigationCompleted(e) => Some(view(
                "investigation_sheet",
                &e.investigation_sheet,
                s.occurred_at,
            )),
            CertificationEvent::OpinionReceived(e) => {
                Some(view("opinion", &e.opinion, s.occurred_at))
            }
            _ => None,
        })
        .collect()
}

fn subsidy_view(doc: &AggregateDoc<SubsidyEvent>, now: DateTime<Utc>) -> SubsidyView {
    let state = SubsidyApplication::replay(doc.events.iter().map(|s| &s.event));
    let today = jst_date(now);
    let application = state.application.as_ref();
    SubsidyView {
        application: doc.id.clone(),
        applicant: application.map_or_else(String::new, |a| match &a.applicant {
            SubsidyApplicant::CareOffice { office, .. } => office.to_string(),
            SubsidyApplicant::MedicalInstitution { institution, .. } => institution.to_string(),
        }),
        status: match state.status {
            SubsidyStatus::NotApplied => "not_applied",
            SubsidyStatus::Applied => "applied",
            SubsidyStatus::UnderReview => "under_review",
            // A zero decision closes the application (nothing is due); it
            // reads as decided at 0 yen, not as a deficiency.
            SubsidyStatus::Closed
                if state.closed_because == Some(ClosedBecause::NothingPayable) =>
            {
                "decided"
            }
            SubsidyStatus::Closed => "closed",
            SubsidyStatus::Decided => "decided",
            SubsidyStatus::Paid => "paid",
        },
        applied_on: application.map(|a| a.applied_on),
        notice_due_by: application.map(|a| a.notice_due_by),
        payment_due_by: application.map(|a| a.payment_due_by),
        payable: state.decision.as_ref().map(|d| d.payable.get()),
        notice_overdue: state.notice_overdue(today),
        payment_overdue: state.payment_overdue(today),
    }
}
