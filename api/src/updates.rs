//! `GET /v1/offices/{office}/updates`: Server-Sent Events of what happens
//! to the persons an office may see, resumable with `Last-Event-ID`.
//!
//! Each event's `id` is its store position; a client that reconnects with
//! `Last-Event-ID: n` gets every relevant event after `n`, none twice
//! (the store's subscription is gapless). Without the header the stream
//! starts after the current head; a `Last-Event-ID` ahead of the head, or
//! more than [`RESUME_EVENTS_MAX`] events behind it, is 400 `validation`.
//! Which events: the office feed's rule (`kiban_projections::entitlements`).
//! The data is the event's [`UpdateNotice`] (type, stream, times), never its
//! payload, the same notice the NATS office feed carries: the client reads
//! details through the logged query routes.
//!
//! Where the events come from depends on the process (docs/deploy.md,
//! "Live updates"): with an [`UpdateFeed`] (an API process of a scaled-out
//! deployment), from the office's NATS subject through one subscription per
//! office and process, carrying what the engine's office routing sends the
//! office (docs/nats.md), resumed exactly by a bounded replay from the
//! store; without one (`--role all`), from the process's own store
//! subscription filtered by [`relevant`].

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use kiban_events::domain::TerminalId;
use kiban_events::domain::office::office_stream;
use kiban_events::ids::OfficeNumber;
use kiban_events::{RecordedEvent, UpdateNotice};

use crate::auth::{Allow, Caller, check_terminal, office_number};
use crate::error::ApiError;
use crate::principal::Principal;
use crate::state::{AppState, UpdateFeed};

/// The header a reconnecting SSE client sends.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// `GET /v1/offices/{office}/updates`: the office itself (through an
/// active terminal, checked when the stream opens) and auditors.
pub async fn updates(
    State(state): State<AppState>,
    caller: Caller,
    Path(office): Path<String>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let office = office_number(&office)?;
    caller
        .allow(
            &state,
            &[Allow::Auditors, Allow::Office(&office)],
            "Only the office itself and auditors follow its updates.",
        )
        .await?;
    let after = resume_after(&state, &headers).await?;
    // An office terminal's stream ends when the terminal is suspended (or
    // its credential replaced): re-checked at each event of the office's own
    // stream, which is where such a change is recorded.
    let terminal = match &caller.principal {
        Principal::Office { terminal, .. } => Some((terminal.clone(), caller.fingerprint.clone())),
        _ => None,
    };
    Ok(EventStream(
        office_sse_checked(state, office, after, to_sse, terminal, None).into_response(),
    ))
}

/// How many events behind the head an update stream may resume
/// (`Last-Event-ID`): a resume replays and filters every event after the
/// given position, so an unbounded one (`Last-Event-ID: 0`) would make one
/// request read the whole store. A client further behind reads the
/// caseload (the logged query routes) and follows from the head.
pub const RESUME_EVENTS_MAX: u64 = 10_000;

/// Where a stream starts: after `Last-Event-ID`, or after the head without
/// it. 400 `validation` for a header that is not a position, is ahead of
/// the head (it names no event this stream could have sent), or is more
/// than the state's resume bound ([`RESUME_EVENTS_MAX`]) behind it.
pub(crate) async fn resume_after(state: &AppState, headers: &HeaderMap) -> Result<u64, ApiError> {
    let head = state.inner.store.head().await?.position;
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(head);
    };
    let after = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::validation("Last-Event-ID must be a position (a whole number).")
        })?;
    // Ahead of the head, the stream would silently drop every event until
    // the head passed it: a client's mistake to be told.
    if after > head {
        return Err(ApiError::validation(format!(
            "Last-Event-ID {after} is ahead of the store's head ({head}); resume from \
             an id this stream sent, or without the header to start at the head."
        )));
    }
    let bound = state.inner.resume_events_max;
    if head - after > bound {
        return Err(ApiError::validation(format!(
            "Last-Event-ID {after} is {} events behind the store's head ({head}); a stream \
             resumes at most {bound} events back. Read the caseload again and follow \
             without the header.",
            head - after
        )));
    }
    Ok(after)
}

/// An open stream of Server-Sent Events (the response of [`office_sse`]).
#[derive(Debug)]
pub struct EventStream(Response);

impl IntoResponse for EventStream {
    fn into_response(self) -> Response {
        self.0
    }
}

/// The Server-Sent Events of what happens after position `after` to the
/// persons `office` may see ([`relevant`]), each made by `to_event`. The
/// office API and the office screen (`/ui/events`) both serve it. It ends
/// when the server stops streams or the store's subscription fails; for a
/// `terminal` (its id and the fingerprint of the certificate it presented)
/// at the first event of the office's own stream after which the terminal
/// no longer passes [`check_terminal`] (reported lost, credential
/// replaced); and when `ended` completes (the web screen's session ended).
pub(crate) fn office_sse_checked(
    state: AppState,
    office: OfficeNumber,
    after: u64,
    to_event: fn(&UpdateNotice) -> Event,
    terminal: Option<(TerminalId, String)>,
    ended: Option<futures::future::BoxFuture<'static, ()>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The screen (the stream a session ends) also gets the consents naming
    // its office (`kiban_projections::entitlements`).
    let own_consents = ended.is_some();
    let shutdown = state.inner.streams.clone().cancelled_owned();
    let stop = async move {
        match ended {
            Some(ended) => {
                futures::future::select(Box::pin(shutdown), ended).await;
            }
            None => shutdown.await,
        }
    };
    let events = match state.inner.update_feed.clone() {
        Some(feed) => fed(state, feed, office, after, to_event, terminal, own_consents),
        None => subscribed(state, office, after, to_event, terminal, own_consents),
    };
    Sse::new(events.take_until(stop)).keep_alive(KeepAlive::default())
}

/// The stream of a process without an [`UpdateFeed`] (`--role all` on the
/// in-process bus): its own store subscription, filtered by [`relevant`]
/// (and, with `own_consents`, the consents naming the office).
fn subscribed(
    state: AppState,
    office: OfficeNumber,
    after: u64,
    to_event: fn(&UpdateNotice) -> Event,
    terminal: Option<(TerminalId, String)>,
    own_consents: bool,
) -> BoxStream<'static, Result<Event, Infallible>> {
    let relevant_state = state.clone();
    let check_state = state.clone();
    let own_stream = office_stream(&office);
    let check_office = office.clone();
    state
        .inner
        .store
        .subscribe(after + 1)
        .take_while(|item| futures::future::ready(item.is_ok()))
        .take_while(move |item| match (item, &terminal) {
            (Ok(event), Some((terminal, fingerprint))) if event.stream == own_stream => {
                let (state, office) = (check_state.clone(), check_office.clone());
                let (terminal, fingerprint) = (terminal.clone(), fingerprint.clone());
                futures::future::Either::Left(async move {
                    check_terminal(&state, &office, &terminal, &fingerprint)
                        .await
                        .is_ok()
                })
            }
            _ => futures::future::Either::Right(futures::future::ready(true)),
        })
        .filter_map(move |item| {
            let state = relevant_state.clone();
            let office = office.clone();
            async move {
                let event = item.ok()?;
                let shown = (own_consents
                    && kiban_projections::entitlements::names_office_in_consent(&event, &office))
                    || relevant(&state, &office, &event).await;
                shown.then(|| Ok(to_event(&UpdateNotice::from(&event))))
            }
        })
        .boxed()
}

/// How often a fed stream of an office terminal re-checks the terminal
/// while no update comes (it is also checked before every update sent),
/// unless [`AppState::with_terminal_recheck`] says otherwise.
pub const TERMINAL_RECHECK_SECS: u64 = 30;

/// What a fed stream waits for: an update, or the time to re-check the
/// terminal.
enum Fed {
    Update(Result<UpdateNotice, String>),
    Recheck,
}

/// The stream of a process with an [`UpdateFeed`] (an API process): the
/// office's updates as the feed gives them (what the routing sends the
/// office, docs/deploy.md; with `own_consents`, the screen's, also the
/// consent events naming the office). An office terminal is checked before each
/// update and at the state's re-check interval ([`TERMINAL_RECHECK_SECS`]
/// by default); the stream ends once it no
/// longer passes [`check_terminal`], or when the feed fails (the client
/// resumes with `Last-Event-ID`).
fn fed(
    state: AppState,
    feed: UpdateFeed,
    office: OfficeNumber,
    after: u64,
    to_event: fn(&UpdateNotice) -> Event,
    terminal: Option<(TerminalId, String)>,
    own_consents: bool,
) -> BoxStream<'static, Result<Event, Infallible>> {
    let interval = state.inner.terminal_recheck;
    let rechecks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(interval).await;
        Some((Fed::Recheck, ()))
    });
    let updates = feed(office.clone(), after, own_consents).map(Fed::Update);
    let terminal = Arc::new(terminal);
    futures::stream::select(updates, rechecks)
        .take_while(move |item| {
            let (state, office, terminal) = (state.clone(), office.clone(), Arc::clone(&terminal));
            let failed = match item {
                Fed::Update(Err(error)) => {
                    tracing::info!(%error, "an office update stream ends");
                    true
                }
                _ => false,
            };
            async move {
                if failed {
                    return false;
                }
                match terminal.as_ref() {
                    Some((terminal, fingerprint)) => {
                        check_terminal(&state, &office, terminal, fingerprint)
                            .await
                            .is_ok()
                    }
                    None => true,
                }
            }
        })
        .filter_map(move |item| {
            futures::future::ready(match item {
                Fed::Update(Ok(notice)) => Some(Ok(to_event(&notice))),
                _ => None,
            })
        })
        .boxed()
}

/// Whether `office` may see `event`, once the read models have applied it:
/// the rule of the office feed over NATS
/// (`kiban_projections::entitlements`: the person's consents and care-plan
/// office as of the event, insurer sharing, never access-log, consent or
/// move events).
pub(crate) async fn relevant(
    state: &AppState,
    office: &OfficeNumber,
    event: &RecordedEvent,
) -> bool {
    if kiban_projections::entitlements::routed_person(event).is_none() {
        return false;
    }
    if state
        .inner
        .projections
        .wait_for(event.position)
        .await
        .is_err()
    {
        return false;
    }
    kiban_projections::entitlements::offices_entitled(&state.inner.read, event)
        .await
        .is_ok_and(|offices| offices.contains(office))
}

fn to_sse(notice: &UpdateNotice) -> Event {
    Event::default()
        .id(notice.position.to_string())
        .event(notice.event_type.as_str())
        .data(serde_json::to_string(notice).expect("a notice serialises"))
}
