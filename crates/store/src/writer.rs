//! The single writer with group commit (DESIGN.md decision 3).
//!
//! Every append of a [`crate::Store`] becomes an [`AppendRequest`] on a
//! bounded channel. One task owns the receiving end and the writer
//! connection. It takes what is queued (up to [`BATCH_EVENTS_MAX`]), decides
//! each request against its version cache and one lookup of the batch's event
//! ids, assigns positions, versions, `recorded_at` and the hash chain, writes
//! all accepted events with one statement (one transaction, one fsync), and
//! only then answers the requests and advances the head. Positions are thus
//! gapless and in commit order by construction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiban_events::envelope::to_store_precision;
use kiban_events::{
    EventId, ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamName, Version,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::WriterConnection;
use crate::cache::SharedVersions;
use crate::chain::{chain_hash, truncated_message};
use crate::error::{Error, Result};
use crate::store::{AppendResult, Connector};
use crate::tail::Tail;

/// Most events the writer puts into one transaction. Group commit pays one
/// fsync per batch, so bigger batches are cheaper per event, but a batch is
/// also the unit of latency for everyone in it; 2,000 events of ~300 bytes
/// (~0.6 MB) commit in a few milliseconds. One append is never split, so a
/// batch may exceed this by at most one append's events.
pub const BATCH_EVENTS_MAX: usize = 2000;

/// Most payload bytes in one batch: bounds the writer's memory and the size of
/// one statement when appends carry large payloads (one append is never split).
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How many times in a row the writer yields to the runtime, finding the
/// queue empty, before it commits what it has (see `Writer::gather`). A yield
/// costs microseconds; a few let producers that were just answered enqueue
/// their next append, so one commit (an fsync of milliseconds) serves them all.
pub const BATCH_GATHER_YIELDS_MAX: usize = 4;

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<AppendResult>>,
}

/// What the writer decided for one request of a batch.
enum Outcome {
    /// Answered without writing (conflict, duplicate, re-send).
    Answered(Result<AppendResult>),
    /// Accepted: its events are the next `len` rows of the batch.
    Accepted { len: usize },
}

/// A batch after deciding every request, before writing.
struct Plan {
    outcomes: Vec<Outcome>,
    rows: Vec<RecordedEvent>,
    versions: HashMap<StreamName, Version>,
}

impl Plan {
    fn has_conflict(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Answered(Err(Error::Conflict { .. }))))
    }
}

/// The writer task's state. Owned by the task; nothing else touches it.
pub(crate) struct Writer {
    connector: Connector,
    connection: Option<WriterConnection>,
    /// Whether this task holds the writer role and `head` is loaded.
    ready: bool,
    head: (Position, Hash),
    /// Shared with the [`crate::Store`], which reads it only while this
    /// task holds the writer role (`status` is `true`).
    versions: SharedVersions,
    head_watch: Arc<watch::Sender<Position>>,
    /// What this writer committed last, for in-process subscriptions.
    tail: Arc<Tail>,
    /// `ready`, for whoever must know when this store becomes or stops
    /// being the writer.
    status: watch::Sender<bool>,
    batch_events_max: usize,
    /// With `Some`, the idle writer polls: for the lock while it is not the
    /// writer, for its connection's life while it is.
    poll: Option<Duration>,
}

impl Writer {
    pub fn new(
        connector: Connector,
        head_watch: Arc<watch::Sender<Position>>,
        tail: Arc<Tail>,
        status: watch::Sender<bool>,
        versions: SharedVersions,
        batch_events_max: usize,
        poll: Option<Duration>,
    ) -> Self {
        Self {
            connector,
            connection: None,
            ready: false,
            head: (0, Hash::GENESIS),
            versions,
            head_watch,
            tail,
            status,
            batch_events_max: batch_events_max.max(1),
            poll,
        }
    }

    /// Serves requests until the store is closed or dropped. Stops between
    /// batches, so a batch is always either committed and answered or not
    /// started; requests still queued are dropped, which their callers see
    /// as [`Error::Closed`].
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<AppendRequest>,
        cancel: CancellationToken,
    ) {
        loop {
            let poll = self.poll;
            let idle = async move {
                match poll {
                    Some(poll) => tokio::time::sleep(poll).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                () = idle => {
                    self.poll_role().await;
                    continue;
                }
            };
            let mut batch = vec![first];
            self.gather(&mut batch, &mut requests).await;
            self.process(batch).await;
        }
        if let Some(connection) = self.connection.take() {
            connection.close().await;
        }
    }

    /// Adds to `batch` what is queued, up to the batch limits. When the queue
    /// runs dry it yields to the runtime a few times: producers answered by
    /// the previous commit are typically about to enqueue their next append,
    /// and letting them (microseconds) before committing (milliseconds) keeps
    /// batches full instead of alternating between full and nearly empty.
    /// Yielding is not waiting for time: a lone producer costs no latency.
    async fn gather(
        &self,
        batch: &mut Vec<AppendRequest>,
        requests: &mut mpsc::Receiver<AppendRequest>,
    ) {
        let payload_bytes =
            |r: &AppendRequest| -> usize { r.events.iter().map(|e| e.payload.len()).sum() };
        let mut events: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut bytes: usize = batch.iter().map(payload_bytes).sum();
        let mut yields = 0;
        while events < self.batch_events_max && bytes < BATCH_PAYLOAD_BYTES_MAX {
            match requests.try_recv() {
                Ok(request) => {
                    events += request.events.len();
                    bytes += payload_bytes(&request);
                    batch.push(request);
                    yields = 0;
                }
                Err(_) if yields < BATCH_GATHER_YIELDS_MAX => {
                    yields += 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
    }

    /// While idle in standby mode: takes the lock if it is free; as the
    /// writer, checks that the connection holding the lock is alive and that
    /// nobody else wrote (the database's head is the writer's own), and
    /// gives up the role otherwise, so that [`crate::Store::writer_status`]
    /// says so at once rather than at the next append.
    async fn poll_role(&mut self) {
        if !self.ready {
            match self.ensure_ready().await {
                Ok(()) => tracing::info!(position = self.head.0, "this store took the writer lock"),
                Err(Error::NotWriter(_)) => {}
                Err(error) => tracing::warn!(%error, "cannot try the writer lock"),
            }
            return;
        }
        let connection = self.connection.as_mut().expect("ready implies connected");
        match connection.head().await {
            Ok(head) if head == self.head => {}
            Ok(head) => {
                tracing::error!(
                    ours = self.head.0,
                    database = head.0,
                    "the database's head is not the writer's own: another writer wrote; giving up the writer role"
                );
                self.reset();
            }
            Err(error) => {
                tracing::warn!(%error, "the writer's connection failed; giving up the writer role");
                self.reset();
            }
        }
    }

    /// (Re)connects and takes the writer role if needed.
    pub async fn ensure_ready(&mut self) -> Result<()> {
        if self.connection.is_none() {
            self.connection = Some(self.connector.connect_writer().await?);
        }
        if self.ready {
            return Ok(());
        }
        let connection = self.connection.as_mut().expect("connected above");
        let setup = async {
            if !connection.try_lock_writer().await? {
                return Err(Error::NotWriter(NOT_WRITER_MESSAGE.to_owned()));
            }
            let head = connection.head().await?;
            // A head below a signed checkpoint: events were deleted; appending
            // would reuse their positions and bury the evidence.
            let signed = connection.latest_checkpoint_position().await?;
            if signed > head.0 {
                return Err(Error::NotWriter(truncated_message(head.0, signed)));
            }
            Ok(head)
        };
        match setup.await {
            Ok(head) => {
                self.head = head;
                self.versions.clear();
                // Whatever is in memory predates this role: start afresh
                // from the head just loaded.
                self.tail.clear();
                self.ready = true;
                self.status.send_replace(true);
                self.head_watch.send_if_modified(|h| advance(h, head.0));
                Ok(())
            }
            Err(error @ Error::NotWriter(_)) => Err(error),
            Err(error) => {
                self.reset();
                Err(error)
            }
        }
    }

    /// Forgets the connection, the role and the cache after a failure: the
    /// next batch reconnects and reloads everything from the database.
    fn reset(&mut self) {
        // Dropping the connection closes its socket, which ends the session and
        // releases the advisory lock on PostgreSQL.
        self.connection = None;
        self.ready = false;
        self.status.send_replace(false);
        self.versions.clear();
        self.tail.clear();
    }

    async fn process(&mut self, batch: Vec<AppendRequest>) {
        if let Err(error) = self.ensure_ready().await {
            return answer_all(batch, &error);
        }
        match self.write(&batch).await {
            Ok(plan) => answer(batch, plan),
            Err(error) => {
                tracing::warn!(%error, "the writer's batch failed; reconnecting");
                self.reset();
                answer_all(batch, &error);
            }
        }
    }

    /// Decides and writes a batch, optimistically first: event ids are
    /// usually new, so the first attempt does not look them up and lets the
    /// unique index on `event_id` catch a re-send. The batch is decided
    /// again with every id and version read from the database if the insert
    /// hits a unique index (the failed statement wrote nothing), or if a
    /// request conflicts (a re-send of an old append must get its original
    /// result, not a conflict). The common case thus costs one round trip,
    /// plus one for streams missing from the version cache.
    async fn write(&mut self, batch: &[AppendRequest]) -> Result<Plan> {
        let optimistic = self
            .lookup_and_plan(batch, Lookup::CachedVersionsOnly)
            .await?;
        if !optimistic.has_conflict() {
            match self.insert(&optimistic).await {
                Ok(()) => return Ok(optimistic),
                Err(error) if !is_unique_violation(&error) => return Err(error),
                Err(_) => {}
            }
        }
        let careful = self.lookup_and_plan(batch, Lookup::Everything).await?;
        self.insert(&careful).await?;
        Ok(careful)
    }

    /// Writes the plan's rows (if any) and, once committed, hands them to
    /// the committed tail and moves the head and the version cache forward.
    async fn insert(&mut self, plan: &Plan) -> Result<()> {
        let Some(last) = plan.rows.last() else {
            return Ok(());
        };
        let connection = self.connection.as_mut().expect("ready implies connected");
        let in_flight = self.tail.begin(plan.rows[0].position, last.position);
        connection.insert(&plan.rows).await?;
        // Committed: in-process subscriptions may take the rows from memory.
        // Before the head moves (and before `in_flight` ends), so that a
        // subscription woken by the head finds them there.
        self.tail.push(&plan.rows);
        drop(in_flight);
        self.head = (last.position, last.hash);
        for (stream, version) in &plan.versions {
            self.versions.insert(stream.clone(), *version);
        }
        let position = self.head.0;
        self.head_watch.send_if_modified(|h| advance(h, position));
        Ok(())
    }

    /// Loads what the batch needs from the database and decides each request.
    async fn lookup_and_plan(&mut self, batch: &[AppendRequest], lookup: Lookup) -> Result<Plan> {
        let mut known: HashMap<StreamName, Version> = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        for request in batch {
            if known.contains_key(&request.stream) {
                continue;
            }
            let cached = match lookup {
                Lookup::CachedVersionsOnly => self.versions.get(&request.stream),
                Lookup::Everything => None,
            };
            known.insert(request.stream.clone(), cached.unwrap_or(0));
            if cached.is_none() && !assume_new_stream(request, lookup) {
                missing.push(request.stream.as_str());
            }
        }
        let connection = self.connection.as_mut().expect("ready implies connected");
        if !missing.is_empty() {
            for (stream, version) in connection.stream_versions(&missing).await? {
                let stream = StreamName::parse(&stream).map_err(|_| Error::Corrupted {
                    position: 0,
                    reason: format!("stored stream name {stream:?} does not parse"),
                })?;
                let version = u64::try_from(version).unwrap_or(0);
                self.versions.insert(stream.clone(), version);
                known.insert(stream, version);
            }
        }
        let mut stored = HashMap::new();
        if lookup == Lookup::Everything {
            let ids: Vec<uuid::Uuid> = batch
                .iter()
                .flat_map(|r| r.events.iter().map(|e| *e.event_id.as_uuid()))
                .collect();
            for raw in connection.events_by_id(&ids).await? {
                let event = raw.into_recorded()?;
                stored.insert(event.event_id, event);
            }
        }
        Ok(plan(batch, known, &stored, self.head))
    }
}

/// Whether the writer may skip looking up the version of a stream missing
/// from its cache, assuming it has no events, because the first request for
/// it in the batch says so (`NoStream`, `Exact(0)`: a new aggregate, the most
/// common append for an uncached stream). The assumption is checked by the
/// database, not trusted: every decision that depends on it either inserts
/// that stream's version 1, which the unique `(stream, version)` index
/// refuses if the stream exists, or is a conflict; both make the writer
/// decide the batch again with the version read from the database.
fn assume_new_stream(request: &AppendRequest, lookup: Lookup) -> bool {
    lookup == Lookup::CachedVersionsOnly
        && matches!(
            request.expected,
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0)
        )
}

/// How much of a batch's context the writer reads from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Versions of streams missing from the cache; no event ids.
    CachedVersionsOnly,
    /// Every stream's version and every event id.
    Everything,
}

/// Whether the database refused a write because of a unique index.
fn is_unique_violation(error: &Error) -> bool {
    match error {
        Error::Database(error) => error
            .as_database_error()
            .is_some_and(|e| e.kind() == sqlx::error::ErrorKind::UniqueViolation),
        _ => false,
    }
}

/// What a process that is not the writer answers to appends.
const NOT_WRITER_MESSAGE: &str = "this kiban store is a reader: another kiban process (or \
     another store opened on the same database) holds the writer lock and does all appends. \
     Send the append to the writer (or stop it: this store takes over writing at its next \
     append once the lock is free). Reads and subscriptions work here.";

/// Moves the watched head forward (never back); tells whether it moved.
pub(crate) fn advance(head: &mut Position, to: Position) -> bool {
    if to > *head {
        *head = to;
        true
    } else {
        false
    }
}

fn answer_all(batch: Vec<AppendRequest>, error: &Error) {
    for request in batch {
        let _ = request.reply.send(Err(error.clone()));
    }
}

/// Answers every request of a committed batch, handing each accepted request
/// its rows (they come in request order, so they are taken from the front).
fn answer(batch: Vec<AppendRequest>, plan: Plan) {
    let mut rows = plan.rows.into_iter();
    for (request, outcome) in batch.into_iter().zip(plan.outcomes) {
        let result = match outcome {
            Outcome::Answered(result) => result,
            Outcome::Accepted { len } => {
                Ok(AppendResult::from_events(rows.by_ref().take(len).collect()))
            }
        };
        let _ = request.reply.send(result);
    }
    assert!(rows.next().is_none(), "every row belongs to one request");
}

/// Decides every request of a batch in order: later requests see the
/// versions and ids of earlier accepted ones. Pure: no IO, no await.
fn plan(
    batch: &[AppendRequest],
    mut versions: HashMap<StreamName, Version>,
    stored: &HashMap<EventId, RecordedEvent>,
    head: (Position, Hash),
) -> Plan {
    let recorded_at = to_store_precision(Utc::now());
    let mut rows: Vec<RecordedEvent> = Vec::new();
    let mut in_batch: HashMap<EventId, usize> = HashMap::new();
    let mut changed: HashMap<StreamName, Version> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let (mut last_position, mut prev_hash) = head;
    let mut canonical = Vec::with_capacity(1024);
    for request in batch {
        let find = |id: &EventId| {
            stored
                .get(id)
                .or_else(|| in_batch.get(id).map(|&i| &rows[i]))
        };
        if let Some(answer) = replay(request, find) {
            outcomes.push(Outcome::Answered(answer));
            continue;
        }
        let current = versions[&request.stream];
        if !request.expected.admits(current) {
            outcomes.push(Outcome::Answered(Err(Error::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual: current,
            })));
            continue;
        }
        for (offset, event) in request.events.iter().enumerate() {
            let mut row = record(
                &request.stream,
                event,
                current + 1 + offset as u64,
                recorded_at,
            );
            last_position += 1;
            row.position = last_position;
            row.prev_hash = prev_hash;
            canonical.clear();
            row.write_canonical(&mut canonical);
            row.hash = chain_hash(&prev_hash, &canonical);
            prev_hash = row.hash;
            in_batch.insert(row.event_id, rows.len());
            rows.push(row);
        }
        let version = current + request.events.len() as u64;
        versions.insert(request.stream.clone(), version);
        changed.insert(request.stream.clone(), version);
        outcomes.push(Outcome::Accepted {
            len: request.events.len(),
        });
    }
    assert_gapless(&rows, head.0);
    Plan {
        outcomes,
        rows,
        versions: changed,
    }
}

/// Decides a request whose ids are already known (stored, or accepted
/// earlier in this batch): the original result for a re-send, an error for a
/// reused id or a mix. `None` when all its ids are new.
fn replay<'a>(
    request: &AppendRequest,
    find: impl Fn(&EventId) -> Option<&'a RecordedEvent>,
) -> Option<Result<AppendResult>> {
    let mut found = Vec::new();
    for event in &request.events {
        if let Some(original) = find(&event.event_id) {
            if !original.has_same_content(&request.stream, event) {
                return Some(Err(Error::DuplicateEventId {
                    event_id: event.event_id,
                }));
            }
            found.push(original.clone());
        }
    }
    if found.is_empty() {
        return None;
    }
    if found.len() != request.events.len() {
        return Some(Err(Error::MixedBatch {
            stored: found.len(),
            total: request.events.len(),
        }));
    }
    found.sort_by_key(|e| e.position);
    Some(Ok(AppendResult::from_events(found)))
}

/// The recorded form of `event`; position and hashes are filled in by the caller.
fn record(
    stream: &StreamName,
    event: &NewEvent,
    version: Version,
    recorded_at: chrono::DateTime<Utc>,
) -> RecordedEvent {
    RecordedEvent {
        position: 0,
        stream: stream.clone(),
        version,
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: to_store_precision(event.occurred_at),
        recorded_at,
        actor: event.actor.clone(),
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        payload: event.payload.clone(),
        prev_hash: Hash::GENESIS,
        hash: Hash::GENESIS,
    }
}

/// The invariants the whole design rests on, checked on every batch: the
/// batch's positions continue the head without a gap and chain to each
/// other, and each stream's versions in the batch are contiguous.
fn assert_gapless(rows: &[RecordedEvent], head: Position) {
    let mut last_versions: HashMap<&StreamName, Version> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.position, head + 1 + i as u64, "positions are gapless");
        if i > 0 {
            assert_eq!(row.prev_hash, rows[i - 1].hash, "the chain links");
        }
        if let Some(last) = last_versions.insert(&row.stream, row.version) {
            assert_eq!(row.version, last + 1, "versions are contiguous");
        }
    }
}

#[cfg(test)]
mod tests {
    use kiban_events::{Actor, EventType, Payload};
    use uuid::Uuid;

    use super::*;

    fn new_event(id: u128, payload: &str) -> NewEvent {
        NewEvent {
            event_id: EventId::from_uuid(Uuid::from_u128(id)).unwrap(),
            event_type: EventType::parse("test.happened").unwrap(),
            schema_version: 1,
            occurred_at: Utc::now(),
            actor: Actor::system("tests").unwrap(),
            correlation_id: Uuid::from_u128(7),
            causation_id: None,
            payload: Payload::from_json(payload).unwrap(),
        }
    }

    fn request(
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> AppendRequest {
        AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply: oneshot::channel().0,
        }
    }

    /// One batch exercising every decision: later requests see the versions
    /// and ids of earlier accepted ones, refusals leave the rest untouched.
    #[test]
    fn a_batch_is_decided_in_order_and_refusals_do_not_disturb_it() {
        let s = StreamName::parse("test/one").unwrap();
        let t = StreamName::parse("test/two").unwrap();
        let a = vec![new_event(1, "{}"), new_event(2, "{}")];
        let four = new_event(4, "{}");
        let batch = vec![
            request(&s, ExpectedVersion::NoStream, a.clone()),
            request(&s, ExpectedVersion::NoStream, vec![new_event(3, "{}")]),
            request(&s, ExpectedVersion::Exact(2), vec![four.clone()]),
            request(&s, ExpectedVersion::Any, a.clone()),
            request(
                &t,
                ExpectedVersion::Any,
                vec![new_event(1, r#"{"other":1}"#)],
            ),
            request(&t, ExpectedVersion::Exact(5), vec![new_event(5, "{}")]),
            request(&s, ExpectedVersion::Any, vec![four, new_event(8, "{}")]),
        ];
        let versions = HashMap::from([(s.clone(), 0), (t.clone(), 5)]);
        let head = (10, Hash([9; 32]));
        let plan = plan(&batch, versions, &HashMap::new(), head);
        let accepted: Vec<usize> = plan
            .outcomes
            .iter()
            .map(|o| match o {
                Outcome::Accepted { len } => *len,
                Outcome::Answered(_) => 0,
            })
            .collect();
        assert_eq!(accepted, [2, 0, 1, 0, 0, 1, 0]);
        let answered = |i: usize| match &plan.outcomes[i] {
            Outcome::Answered(result) => result.clone(),
            Outcome::Accepted { .. } => panic!("request {i} was accepted"),
        };
        assert!(matches!(
            answered(1),
            Err(Error::Conflict { actual: 2, .. })
        ));
        let replayed = answered(3).expect("a re-send in the same batch");
        assert_eq!((replayed.first_position, replayed.last_position), (11, 12));
        assert!(matches!(answered(4), Err(Error::DuplicateEventId { .. })));
        assert!(matches!(
            answered(6),
            Err(Error::MixedBatch {
                stored: 1,
                total: 2
            })
        ));
        let positions: Vec<_> = plan.rows.iter().map(|r| (r.position, r.version)).collect();
        assert_eq!(positions, [(11, 1), (12, 2), (13, 3), (14, 6)]);
        assert_eq!(plan.rows[0].prev_hash, head.1);
        assert_eq!(plan.versions, HashMap::from([(s, 3), (t, 6)]));
    }
}
