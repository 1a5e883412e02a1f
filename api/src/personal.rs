//! Personal fields (crypto-shredding, docs/audit.md): reading them opened
//! with the person's key, and forgetting a person.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use kiban_events::envelope::Actor;
use kiban_projections::PersonalFields;
use kiban_store::{FORGOTTEN_MARKER, Opened};

use crate::auth::{Allow, Caller, PersonId, PersonPath, authorise_person_read};
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// A person's personal fields, opened for a permitted reader.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PersonalView {
    pub insurer: String,
    pub insured: String,
    /// Whether the person was forgotten (本人情報の消去): every personal
    /// field then reads as [`FORGOTTEN_MARKER`].
    pub forgotten: bool,
    pub forgotten_at: Option<DateTime<Utc>>,
    /// The address of the latest move, opened: `{"state": "plain",
    /// "value": ...}`, `{"state": "forgotten"}` or `{"state": "unreadable"}`;
    /// null when none was given.
    pub address: Option<Opened>,
    /// The address as a screen shows it (the marker once forgotten).
    pub address_display: Option<String>,
    /// The day of the latest move.
    pub moved_on: Option<NaiveDate>,
}

/// The person's latest address, opened with their key: `None` when none
/// was given, `Forgotten` once forgotten. Shared by the route and the
/// office screen.
pub(crate) async fn open_address(
    state: &AppState,
    person: &PersonId,
    fields: &PersonalFields,
) -> Result<Option<Opened>, ApiError> {
    Ok(match (&fields.address, state.inner.engine.person_keys()) {
        _ if fields.forgotten_at.is_some() => Some(Opened::Forgotten),
        (None, _) => None,
        (Some(sealed), Some(keys)) => {
            Some(keys.open(&person.insurer, &person.insured, sealed).await?)
        }
        (Some(_), None) => Some(Opened::Unreadable),
    })
}

/// A person's name and kana, opened with their key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpenedName {
    /// 氏名.
    pub name: Opened,
    /// フリガナ, when given.
    pub kana: Option<Opened>,
}

/// The person's name and kana (from their latest filing that carried one),
/// opened with their key: `None` when none was given, `Forgotten` once the
/// person was forgotten (even when none was given). Shared by the office
/// screen's caseload and person page.
pub(crate) async fn open_name(
    state: &AppState,
    person: &PersonId,
    fields: &PersonalFields,
) -> Result<Option<OpenedName>, ApiError> {
    if fields.forgotten_at.is_some() {
        return Ok(Some(OpenedName {
            name: Opened::Forgotten,
            kana: None,
        }));
    }
    let Some(sealed) = &fields.name else {
        return Ok(None);
    };
    let Some(keys) = state.inner.engine.person_keys() else {
        return Ok(Some(OpenedName {
            name: Opened::Unreadable,
            kana: None,
        }));
    };
    let name = keys
        .open(&person.insurer, &person.insured, &sealed.name)
        .await?;
    let kana = match &sealed.kana {
        Some(kana) => Some(keys.open(&person.insurer, &person.insured, kana).await?),
        None => None,
    };
    Ok(Some(OpenedName { name, kana }))
}

/// `GET /v1/persons/{insurer}/{insured}/personal`: the readers of a
/// person's record (an office's read is logged as for every person read).
pub async fn personal(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<PersonalView>, ApiError> {
    authorise_person_read(&state, &caller, &person).await?;
    let doc = state
        .inner
        .read
        .person(&person.key())
        .await?
        .ok_or_else(|| ApiError::not_found("No such person."))?;
    let fields = doc.personal();
    let forgotten = fields.forgotten_at.is_some();
    let address = open_address(&state, &person, &fields).await?;
    Ok(Json(PersonalView {
        insurer: doc.insurer,
        insured: doc.insured,
        forgotten,
        forgotten_at: fields.forgotten_at,
        address_display: address
            .as_ref()
            .and_then(|a| a.display())
            .map(str::to_owned),
        address,
        moved_on: fields.moved_on,
    }))
}

/// What forgetting answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ForgetAnswer {
    /// Always true: the person is forgotten now.
    pub forgotten: bool,
    /// The destroyed key's id (none when the person never had one).
    pub key_id: Option<String>,
    /// The position of `insured.person_forgotten` (empty when it was
    /// recorded by an earlier call).
    pub positions: Vec<u64>,
    /// What readers now show for every personal field.
    pub marker: &'static str,
}

/// `POST /v1/persons/{insurer}/{insured}/forget`: the person's insurer
/// forgets the person at their request (本人情報の消去). Irreversible and
/// idempotent; no body, no Idempotency-Key (the command id is derived from
/// the person). A person with no recorded events is 404 `not-found`.
pub async fn forget(
    State(state): State<AppState>,
    caller: Caller,
    PersonPath(person): PersonPath,
) -> Result<Json<ForgetAnswer>, ApiError> {
    caller
        .allow(
            &state,
            &[Allow::Insurer(&person.insurer)],
            "Only the person's insurer forgets a person.",
        )
        .await?;
    if state.inner.engine.person_keys().is_none() {
        return Err(ApiError::new(
            ProblemKind::Unavailable,
            "This kiban keeps no person keys.",
        ));
    }
    // Forgetting a number nobody recorded would create the person (a stream
    // holding only `insured.person_forgotten`): 404, as every read says.
    let stream = kiban_events::domain::insured::insured_stream(&person.insurer, &person.insured);
    if state
        .inner
        .store
        .read_stream(&stream, 1, 1)
        .await?
        .is_empty()
    {
        return Err(ApiError::not_found("No such person."));
    }
    let done = state
        .inner
        .engine
        .forget_person(
            &person.insurer,
            &person.insured,
            Actor::Insurer(person.insurer.clone()),
            state.now(),
        )
        .await?;
    Ok(Json(ForgetAnswer {
        forgotten: true,
        key_id: done.key.key_id,
        positions: if done.executed.replayed {
            Vec::new()
        } else {
            done.executed.positions()
        },
        marker: FORGOTTEN_MARKER,
    }))
}
