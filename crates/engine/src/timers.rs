//! Timers (DESIGN.md decision 9): what is due, and recording it when it is.
//!
//! A [`DueList`] follows the store from a position and keeps, per stream,
//! only what the timers need: for each open item the instant it falls due
//! and the command to send then. [`Timers::tick`]`(now)` takes every entry
//! due at or before `now` and executes its command through the [`Engine`]
//! under a **deterministic command id**
//! ([`timer_command_id`]: `<timer kind>:<stream>:<due>` under
//! [`TIMER_NAMESPACE`]) as actor `system:timers`. The engine answers a
//! re-execution of that id with the events recorded the first time, so a
//! restart, a due list rebuilt from an older position, or a second ticker
//! never records anything twice. The decider stays the judge: when the item
//! was closed meanwhile (the application was decided, the consent revoked)
//! the command is rejected and the entry just dropped.
//!
//! | timer | follows | due at | command |
//! | --- | --- | --- | --- |
//! | certification deadline | `certification.filed`, `.extension_notified`; ends on decided / withdrawn / rejected / `deadline_reached` | start (JST) of the day after [`CertificationState::due_date`](kiban_events::domain::certification::CertificationState::due_date) | `RecordDeadlineReached` |
//! | renewal window | `insured.certification_recorded` (the latest); ends on `renewal_window_opened` | start (JST) of validity end − 60 days | `OpenRenewalWindow` |
//! | consent expiry (per office) | `insured.consent_given`; ends on revoked / expired | `expires_at` | `ExpireConsent` |
//! | subsidy notice | `subsidy.applied`; ends on decided / closed / paid / `notice_overdue` | start (JST) of the day after `notice_due_by` | `RecordNoticeOverdue` |
//! | subsidy payment | `subsidy.applied`; ends on closed / paid / `payment_overdue` | start (JST) of the day after `payment_due_by` | `RecordPaymentOverdue` |
//!
//! Time is a value: `tick` takes `now`, and [`Timers::run`] takes a clock.
//! `docs/timers.md` has the sizes at national scale.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, SecondsFormat, Utc};
use futures::StreamExt;
use kiban_events::domain::certification::{
    CertificationApplication, CertificationCommand, CertificationEvent, DECISION_DEADLINE_DAYS,
};
use kiban_events::domain::insured::{
    InsuredCommand, InsuredEvent, InsuredPerson, renewal_window_opens_on,
};
use kiban_events::domain::insurer::InsurerEvent;
use kiban_events::domain::subsidy::{SubsidyApplication, SubsidyCommand, SubsidyEvent};
use kiban_events::domain::{DecodeError, DomainEvent, RejectionCode, jst};
use kiban_events::envelope::{Actor, EventId, Position, RecordedEvent, StreamName};
use kiban_events::ids::OfficeNumber;
use kiban_store::{EventStore, READ_EVENTS_MAX};
use uuid::Uuid;

use crate::engine::{CommandContext, Engine, EngineError, Executed};

/// The token that owns [`Timers::run`]: re-exported so that callers need no
/// dependency of their own to stop the timers.
pub use tokio_util::sync::CancellationToken;

/// The UUID v5 namespace of timer command ids. **Never change it** (nor the
/// name format of [`timer_command_id`]): a timer that already fired would
/// get a new id after an upgrade and fire again.
pub const TIMER_NAMESPACE: Uuid = Uuid::from_u128(0xac32_01ed_8316_4982_8d45_3c0a_2442_b2de);

/// The component name of the timers' actor, `system:timers`.
pub const TIMER_ACTOR_COMPONENT: &str = "timers";

/// How often [`Timers::run`] ticks, in milliseconds. Everything the timers
/// record is about a calendar day (or a consent's expiry, which nobody reads
/// to the second), so a minute late is invisible; a tick with nothing due is
/// a look at the first entry of an ordered set, so ticking more often would
/// cost nothing but would not help either.
pub const TICK_INTERVAL_MS: u64 = 60_000;

/// Which timer of a stream. A stream has at most one of each, except consent
/// expiries: one per office.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A certification application's decision deadline.
    CertificationDeadline,
    /// The renewal window of the person's current certification.
    RenewalWindow,
    /// An office's consent expiry.
    ConsentExpiry(OfficeNumber),
    /// A subsidy application's notice due date.
    SubsidyNotice,
    /// A subsidy application's payment due date.
    SubsidyPayment,
}

impl Timer {
    /// The timer kind as it appears in command ids and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CertificationDeadline => "certification_deadline",
            Self::RenewalWindow => "renewal_window",
            Self::ConsentExpiry(_) => "consent_expiry",
            Self::SubsidyNotice => "subsidy_notice_overdue",
            Self::SubsidyPayment => "subsidy_payment_overdue",
        }
    }
}

/// What a timer is due on: a business date (the deadline, the window's
/// first day, the due-by date) or an instant (a consent's expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Due {
    /// A Japanese calendar date.
    Date(NaiveDate),
    /// An instant.
    Instant(DateTime<Utc>),
}

impl fmt::Display for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Date(date) => write!(f, "{date}"),
            Self::Instant(at) => f.write_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

/// The first instant of `date` in Japan.
pub fn start_of_jst_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(NaiveTime::MIN)
        .and_local_timezone(jst())
        .single()
        .expect("a fixed offset maps every local time once")
        .with_timezone(&Utc)
}

/// The command id of `timer` on `stream` for `due`:
/// `EventId::deterministic(TIMER_NAMESPACE, "<timer kind>:<stream>:<due>")`,
/// with `:<office>` appended for a consent expiry.
pub fn timer_command_id(stream: &StreamName, timer: &Timer, due: &Due) -> EventId {
    let mut name = format!("{}:{stream}:{due}", timer.kind());
    if let Timer::ConsentExpiry(office) = timer {
        name.push_str(&format!(":{office}"));
    }
    EventId::deterministic(&TIMER_NAMESPACE, name.as_bytes())
}

/// One entry of the due list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEntry {
    /// The stream the command goes to.
    pub stream: StreamName,
    /// Which timer.
    pub timer: Timer,
    /// What it is due on (part of the command id).
    pub due: Due,
    /// When it fires.
    pub fires_at: DateTime<Utc>,
}

impl DueEntry {
    /// The deterministic command id of this entry.
    pub fn command_id(&self) -> EventId {
        timer_command_id(&self.stream, &self.timer, &self.due)
    }
}

/// A scheduled timer, as the list keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    due: Due,
    fires_at: DateTime<Utc>,
}

type TimerKey = (StreamName, Timer);

/// What is due, built by folding the store's events in position order.
///
/// One entry per open item (an undecided application, a certification whose
/// renewal window has not opened, a live consent, an unfinished subsidy);
/// an entry leaves when it fires or when its item closes. `docs/timers.md`
/// says how big that gets.
#[derive(Debug)]
pub struct DueList {
    /// The entries by stream and timer: what a later event changes.
    entries: HashMap<TimerKey, Scheduled>,
    /// The same entries by firing instant: what a tick takes from. Held
    /// entries are not in it.
    queue: BTreeSet<(DateTime<Utc>, TimerKey)>,
    /// The insurers whose back-fill is open, each with the entries its
    /// streams scheduled meanwhile: held out of the queue until the
    /// back-fill completes (docs/timers.md "Back-filling").
    backfills: HashMap<String, HashSet<TimerKey>>,
    /// The next position to fold: everything before it was folded.
    next_position: Position,
}

impl Default for DueList {
    fn default() -> Self {
        Self::new()
    }
}

impl DueList {
    /// An empty list that starts following the store at position 1.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            backfills: HashMap::new(),
            next_position: 1,
        }
    }

    /// The next position the list expects.
    pub fn next_position(&self) -> Position {
        self.next_position
    }

    /// Number of entries held by open back-fills (included in [`Self::len`],
    /// not in [`Self::entries`]).
    pub fn held(&self) -> usize {
        self.backfills.values().map(HashSet::len).sum()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is due, ever.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in firing order.
    pub fn entries(&self) -> Vec<DueEntry> {
        self.queue
            .iter()
            .map(|(fires_at, (stream, timer))| DueEntry {
                stream: stream.clone(),
                timer: timer.clone(),
                due: self.entries[&(stream.clone(), timer.clone())].due,
                fires_at: *fires_at,
            })
            .collect()
    }

    /// Folds one recorded event. Events before [`Self::next_position`] were
    /// folded already and are skipped, so catching up twice is harmless.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), TimerError> {
        if event.position < self.next_position {
            return Ok(());
        }
        // The store yields positions gapless and in order; a gap here is a
        // bug in whoever feeds the list, and would silently lose a timer.
        assert_eq!(
            event.position, self.next_position,
            "the due list must be fed every position in order"
        );
        let stream = &event.stream;
        let at = event.occurred_at;
        match stream.kind() {
            "certification" => self.certification(stream, decode(event)?, at),
            "insured" => self.insured(stream, decode(event)?, at),
            "subsidy" => self.subsidy(stream, decode(event)?, at),
            "insurer" => self.insurer(stream, decode(event)?, at),
            _ => {}
        }
        self.next_position = event.position + 1;
        Ok(())
    }

    fn certification(&mut self, stream: &StreamName, event: CertificationEvent, at: DateTime<Utc>) {
        use CertificationEvent as E;
        let key = (stream.clone(), Timer::CertificationDeadline);
        match event {
            E::ApplicationFiled(e) => {
                self.schedule_day_after(key, e.applied_on + Days::new(DECISION_DEADLINE_DAYS), at)
            }
            E::ExtensionNotified(e) => self.schedule_day_after(key, e.expected_decision_on, at),
            E::CertificationDecided(_) | E::ApplicationWithdrawn(_) | E::ApplicationRejected(_) => {
                self.cancel(&key)
            }
            E::DeadlineReached(e) => self.cancel_if_due(&key, Due::Date(e.due_date)),
            _ => {}
        }
    }

    fn insured(&mut self, stream: &StreamName, event: InsuredEvent, at: DateTime<Utc>) {
        use InsuredEvent as E;
        match event {
            // The latest certification is the current one (as the renewal
            // rule reads it), so it replaces the window of an earlier one.
            E::CertificationRecorded(e) => {
                let opens_on = renewal_window_opens_on(e.validity.until);
                self.schedule(
                    (stream.clone(), Timer::RenewalWindow),
                    Due::Date(opens_on),
                    start_of_jst_day(opens_on),
                    at,
                );
            }
            E::RenewalWindowOpened(e) => self.cancel_if_due(
                &(stream.clone(), Timer::RenewalWindow),
                Due::Date(e.opens_on),
            ),
            E::ConsentGiven(e) => self.schedule(
                (stream.clone(), Timer::ConsentExpiry(e.office)),
                Due::Instant(e.expires_at),
                e.expires_at,
                at,
            ),
            E::ConsentRevoked(e) => self.cancel(&(stream.clone(), Timer::ConsentExpiry(e.office))),
            E::ConsentExpired(e) => self.cancel(&(stream.clone(), Timer::ConsentExpiry(e.office))),
            _ => {}
        }
    }

    fn subsidy(&mut self, stream: &StreamName, event: SubsidyEvent, at: DateTime<Utc>) {
        use SubsidyEvent as E;
        let notice = (stream.clone(), Timer::SubsidyNotice);
        let payment = (stream.clone(), Timer::SubsidyPayment);
        match event {
            E::SubsidyApplied(e) => {
                self.schedule_day_after(notice, e.notice_due_by, at);
                self.schedule_day_after(payment, e.payment_due_by, at);
            }
            E::SubsidyDecided(_) | E::NoticeOverdue(_) => self.cancel(&notice),
            E::PaymentOverdue(_) => self.cancel(&payment),
            E::SubsidyClosed(_) | E::SubsidyPaid(_) => {
                self.cancel(&notice);
                self.cancel(&payment);
            }
            E::ReviewStarted(_) | E::DeficiencyFound(_) => {}
        }
    }

    /// An insurer's back-fill opens (its streams' timers are held from now
    /// on) or completes (what it held joins the queue, firing no earlier
    /// than the completion, and is judged by the decider at the next tick).
    fn insurer(&mut self, stream: &StreamName, event: InsurerEvent, at: DateTime<Utc>) {
        match event {
            InsurerEvent::BackfillStarted(_) => {
                self.backfills.entry(stream.id().to_owned()).or_default();
            }
            InsurerEvent::BackfillCompleted(_) => {
                for key in self.backfills.remove(stream.id()).unwrap_or_default() {
                    let scheduled = self.entries[&key];
                    let fires_at = scheduled.fires_at.max(at);
                    self.queue.insert((fires_at, key.clone()));
                    self.entries.insert(
                        key,
                        Scheduled {
                            fires_at,
                            ..scheduled
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// A deadline `date` passes at the start of the next Japanese day: the
    /// rules call an item overdue when today is after its due date.
    fn schedule_day_after(&mut self, key: TimerKey, date: NaiveDate, at: DateTime<Utc>) {
        let fires_at = start_of_jst_day(date + Days::new(1));
        self.schedule(key, Due::Date(date), fires_at, at);
    }

    /// Schedules `key` for `due`, firing at `fires_at` but never before
    /// `not_before` (the event that scheduled it: a fact reported late is
    /// judged after it, so nothing is recorded out of time order). While
    /// the stream's insurer has an open back-fill the entry is held.
    fn schedule(
        &mut self,
        key: TimerKey,
        due: Due,
        fires_at: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) {
        self.cancel(&key);
        let fires_at = fires_at.max(not_before);
        match self.backfill_of(&key.0) {
            Some(held) => {
                held.insert(key.clone());
            }
            None => {
                self.queue.insert((fires_at, key.clone()));
            }
        }
        self.entries.insert(key, Scheduled { due, fires_at });
    }

    /// The held entries of the open back-fill of `stream`'s insurer, if any
    /// (certification and insured streams are named `<insurer>-…`).
    fn backfill_of(&mut self, stream: &StreamName) -> Option<&mut HashSet<TimerKey>> {
        if self.backfills.is_empty() || !matches!(stream.kind(), "certification" | "insured") {
            return None;
        }
        let insurer = stream.id().split('-').next()?;
        self.backfills.get_mut(insurer)
    }

    fn cancel(&mut self, key: &TimerKey) {
        if let Some(scheduled) = self.entries.remove(key)
            && !self.queue.remove(&(scheduled.fires_at, key.clone()))
            && let Some(held) = self.backfill_of(&key.0)
        {
            held.remove(key);
        }
    }

    /// Cancels only the entry for `due`: a record of an earlier due date
    /// must not cancel a later one.
    fn cancel_if_due(&mut self, key: &TimerKey, due: Due) {
        if self.entries.get(key).is_some_and(|s| s.due == due) {
            self.cancel(key);
        }
    }

    /// Removes and returns every entry due at or before `now`, in firing
    /// order.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<DueEntry> {
        let mut taken = Vec::new();
        while let Some(first) = self.queue.first() {
            if first.0 > now {
                break;
            }
            let (fires_at, key) = self.queue.pop_first().expect("just looked at it");
            let scheduled = self
                .entries
                .remove(&key)
                .expect("the queue and the map hold the same entries");
            let (stream, timer) = key;
            taken.push(DueEntry {
                stream,
                timer,
                due: scheduled.due,
                fires_at,
            });
        }
        taken
    }

    /// Puts back an entry taken by [`Self::take_due`] that could not be
    /// executed, unless a later event replaced it meanwhile.
    fn put_back(&mut self, entry: DueEntry) {
        let key = (entry.stream, entry.timer);
        if !self.entries.contains_key(&key) {
            self.schedule(key, entry.due, entry.fires_at, entry.fires_at);
        }
    }
}

fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<E, TimerError> {
    E::from_recorded(
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    )
    .map_err(|source| TimerError::Corrupted {
        position: event.position,
        source,
    })
}

/// Why following the store or ticking stopped.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// The store failed or was closed. Transient unless closed: catch up or
    /// tick again later; nothing is lost, entries not executed are kept.
    #[error(transparent)]
    Store(#[from] kiban_store::Error),
    /// A recorded event could not be read as a domain event: a bug or a
    /// missing upcaster, never transient.
    #[error("event at position {position} cannot be read: {source}")]
    Corrupted {
        position: u64,
        #[source]
        source: DecodeError,
    },
    /// Executing a due command failed for a reason that may pass (the store,
    /// contention); the entry and every one after it are kept for the next
    /// tick.
    #[error("timer {kind} on {stream} could not be executed: {source}")]
    Engine {
        kind: &'static str,
        stream: StreamName,
        #[source]
        source: EngineError,
    },
}

/// What happened to one entry in a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// The command recorded these events now.
    Recorded(Vec<RecordedEvent>),
    /// The command had been executed before (a restart, another ticker): the
    /// store already holds its events; nothing new was recorded.
    AlreadyRecorded,
    /// The decider refused: the item closed or moved meanwhile. Dropped.
    Dropped(RejectionCode),
    /// A bug, not the world (the actor may not record the event, a stored
    /// event cannot be read): logged and dropped, since retrying at every
    /// tick would not help.
    Failed(String),
}

/// One entry a tick took, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The entry.
    pub entry: DueEntry,
    /// What happened.
    pub outcome: FireOutcome,
}

/// What a tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Every entry taken, in firing order.
    pub fired: Vec<Fired>,
}

impl TickReport {
    /// The events recorded by this tick.
    pub fn recorded(&self) -> Vec<&RecordedEvent> {
        self.fired
            .iter()
            .filter_map(|fired| match &fired.outcome {
                FireOutcome::Recorded(events) => Some(events),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// The due list and the engine that executes what falls due.
pub struct Timers<S> {
    engine: Arc<Engine<S>>,
    due: DueList,
    actor: Actor,
}

impl<S: EventStore + 'static> Timers<S> {
    /// Timers over `engine` with an empty due list; call
    /// [`Self::catch_up`] (or [`Self::run`]) to fill it from the store.
    pub fn new(engine: Arc<Engine<S>>) -> Self {
        Self {
            engine,
            due: DueList::new(),
            actor: Actor::system(TIMER_ACTOR_COMPONENT).expect("a valid component name"),
        }
    }

    /// The due list.
    pub fn due_list(&self) -> &DueList {
        &self.due
    }

    /// Folds every event committed so far into the due list, in pages;
    /// returns the next position expected.
    pub async fn catch_up(&mut self) -> Result<Position, TimerError> {
        loop {
            let page = self
                .engine
                .store()
                .read_all(self.due.next_position(), READ_EVENTS_MAX)
                .await?;
            for event in &page {
                self.due.apply(event)?;
            }
            if page.len() < READ_EVENTS_MAX {
                return Ok(self.due.next_position());
            }
        }
    }

    /// Executes every entry due at or before `now`, in firing order.
    ///
    /// An entry leaves the list whatever the decider says: recorded, already
    /// recorded by an earlier run, or refused because the item closed. On a
    /// transient failure (the store, contention) the failed entry and the
    /// ones not yet tried go back into the list and the error is returned.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, TimerError> {
        let mut report = TickReport::default();
        let mut due = self.due.take_due(now).into_iter();
        while let Some(entry) = due.next() {
            match self.fire(&entry, now).await {
                Ok(outcome) => report.fired.push(Fired { entry, outcome }),
                Err(source) => {
                    let (kind, stream) = (entry.timer.kind(), entry.stream.clone());
                    self.due.put_back(entry);
                    due.for_each(|entry| self.due.put_back(entry));
                    return Err(TimerError::Engine {
                        kind,
                        stream,
                        source,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Executes one entry's command; `Err` only for what may pass.
    async fn fire(&self, entry: &DueEntry, now: DateTime<Utc>) -> Result<FireOutcome, EngineError> {
        let context = CommandContext {
            // The fact happened when the item fell due, whenever the tick
            // that records it runs.
            occurred_at: entry.fires_at,
            ..CommandContext::new(entry.command_id(), self.actor.clone(), now)
        };
        let stream = &entry.stream;
        let engine = &self.engine;
        let executed = match &entry.timer {
            Timer::CertificationDeadline => {
                let command = CertificationCommand::RecordDeadlineReached;
                engine
                    .execute::<CertificationApplication>(stream, &command, &context)
                    .await
            }
            Timer::RenewalWindow => {
                let command = InsuredCommand::OpenRenewalWindow;
                engine
                    .execute::<InsuredPerson>(stream, &command, &context)
                    .await
            }
            Timer::ConsentExpiry(office) => {
                let command = InsuredCommand::ExpireConsent {
                    office: office.clone(),
                };
                engine
                    .execute::<InsuredPerson>(stream, &command, &context)
                    .await
            }
            Timer::SubsidyNotice => {
                let command = SubsidyCommand::RecordNoticeOverdue;
                engine
                    .execute::<SubsidyApplication>(stream, &command, &context)
                    .await
            }
            Timer::SubsidyPayment => {
                let command = SubsidyCommand::RecordPaymentOverdue;
                engine
                    .execute::<SubsidyApplication>(stream, &command, &context)
                    .await
            }
        };
        match executed {
            Ok(Executed { replayed: true, .. }) => Ok(FireOutcome::AlreadyRecorded),
            Ok(Executed { events, .. }) => Ok(FireOutcome::Recorded(events)),
            Err(EngineError::Rejected(rejection)) => {
                tracing::debug!(timer = entry.timer.kind(), %stream, %rejection, "timer dropped");
                Ok(FireOutcome::Dropped(rejection.code()))
            }
            // Only timers use these ids: another ticker recorded the same
            // timer on another day, so with another `recorded_on`.
            Err(EngineError::DuplicateEventId(_)) => Ok(FireOutcome::AlreadyRecorded),
            Err(error @ (EngineError::NotPermitted { .. } | EngineError::Corrupted { .. })) => {
                tracing::error!(timer = entry.timer.kind(), %stream, %error, "timer dropped");
                Ok(FireOutcome::Failed(error.to_string()))
            }
            Err(error) => Err(error),
        }
    }

    /// Catches up, then follows the store live and ticks every `interval`
    /// at `clock()`, until `cancel` is cancelled. A tick in progress
    /// finishes first: cancellation is looked at between ticks and events.
    /// A failed tick keeps its entries and is retried at the next interval;
    /// a failed subscription is resumed from the next position at the next
    /// interval. Returns when cancelled, or on an error that will not pass
    /// (the store closed, an unreadable event).
    pub async fn run(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send,
        interval: Duration,
        cancel: CancellationToken,
    ) -> Result<(), TimerError> {
        self.catch_up().await?;
        let store = Arc::clone(&self.engine);
        let mut events = Some(store.store().subscribe(self.due.next_position()));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                event = next_event(&mut events) => match event {
                    Some(Ok(event)) => self.due.apply(&event)?,
                    Some(Err(kiban_store::Error::Closed)) | None => {
                        return Err(kiban_store::Error::Closed.into());
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "timers: subscription failed; resuming at the next tick");
                        events = None;
                    }
                },
                _ = ticks.tick() => {
                    if events.is_none() {
                        events = Some(store.store().subscribe(self.due.next_position()));
                    }
                    match self.tick(clock()).await {
                        Ok(report) if !report.fired.is_empty() => {
                            tracing::info!(fired = report.fired.len(), "timers ticked");
                        }
                        Ok(_) => {}
                        Err(error @ TimerError::Corrupted { .. }) => return Err(error),
                        Err(error) => tracing::warn!(%error, "timers: tick failed; retrying at the next tick"),
                    }
                }
            }
        }
    }
}

/// The next event of the subscription, or never while there is none (it is
/// resumed at the next tick).
async fn next_event(
    events: &mut Option<kiban_store::Subscription>,
) -> Option<kiban_store::Result<RecordedEvent>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_jst_day_starts_at_fifteen_utc_the_day_before() {
        let date = NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
        assert_eq!(
            start_of_jst_day(date),
            Utc.with_ymd_and_hms(2026, 5, 31, 15, 0, 0).unwrap()
        );
    }

    #[test]
    fn command_ids_never_change() {
        // A changed id would let every timer that already fired fire again
        // after an upgrade: this value is a permanent promise.
        let stream = StreamName::new("certification", "131016-0000012345-1").unwrap();
        let due = Due::Date(NaiveDate::from_ymd_opt(2026, 5, 31).unwrap());
        let id = timer_command_id(&stream, &Timer::CertificationDeadline, &due);
        assert_eq!(
            *id.as_uuid(),
            Uuid::new_v5(
                &TIMER_NAMESPACE,
                b"certification_deadline:certification/131016-0000012345-1:2026-05-31"
            )
        );
        assert_eq!(
            id.as_uuid().to_string(),
            GOLDEN_DEADLINE_ID,
            "the timer namespace or name format changed"
        );
        let office = OfficeNumber::parse("1312345678").unwrap();
        let expiry = Due::Instant(Utc.with_ymd_and_hms(2026, 6, 1, 3, 0, 0).unwrap());
        let consent = StreamName::new("insured", "131016-0000012345").unwrap();
        assert_ne!(
            timer_command_id(&consent, &Timer::ConsentExpiry(office.clone()), &expiry),
            timer_command_id(
                &consent,
                &Timer::ConsentExpiry(OfficeNumber::parse("1398765432").unwrap()),
                &expiry
            ),
            "two offices' consents expiring at once are two timers"
        );
        assert_eq!(expiry.to_string(), "2026-06-01T03:00:00Z");
    }

    const GOLDEN_DEADLINE_ID: &str = "ba915d18-f1db-56ad-9458-d1c1900f2b8b";
}
