//! [`Store`]: opening a backend, the append path to the writer, and reads.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kiban_events::envelope::{EVENTS_PER_APPEND_MAX, PAYLOAD_BYTES_MAX};
use kiban_events::{ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamName, Version};
use serde::{Deserialize, Serialize};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{RawEvent, Readers, WriterConnection, postgres, sqlite};
use crate::cache::{STREAM_VERSION_CACHE_CAPACITY, SharedVersions};
use crate::chain::{self, VerifyRange, VerifyReport};
use crate::error::{Error, Result};
use crate::scan::Scan;
use crate::schema;
use crate::tail::{SubscriptionPages, TAIL_EVENTS_DEFAULT, Tail};
use crate::writer::{self, AppendRequest, BATCH_EVENTS_MAX, Writer};

/// Appends that may wait for the writer. Enough for thousands of concurrent
/// producers to have one append queued each; when full, `append` waits
/// (back-pressure) instead of piling up memory.
pub const APPEND_QUEUE_CAPACITY: usize = 4096;

/// Most payload bytes in one append. Each payload is at most
/// [`PAYLOAD_BYTES_MAX`], but a thousand of them would be a gigabyte in one
/// transaction; one decision never needs more than a few megabytes.
pub const APPEND_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most events returned by one read. Callers page with `from`; a bound keeps
/// one read's memory and one query's time small.
pub const READ_EVENTS_MAX: usize = 1000;

/// Events a subscription reads per page while catching up: a few hundred
/// kilobytes, so a subscriber far behind does not hold a huge buffer.
pub const SUBSCRIPTION_PAGE_EVENTS: usize = 500;

/// Default size of the read pool. Reads are short indexed range scans; a
/// few connections serve many subscribers, and PostgreSQL connections are
/// expensive (a process each).
pub const READ_CONNECTIONS_DEFAULT: u32 = 8;

/// How long a read waits for a pooled connection before failing with
/// [`Error::Unavailable`] instead of hanging.
pub const POOL_ACQUIRE_TIMEOUT_MS: u64 = 10_000;

/// How often a PostgreSQL store re-reads the head besides listening for
/// notifications: notifications sent while the listener reconnects are
/// lost, and this bounds how late a subscription can notice new events then.
pub const HEAD_POLL_INTERVAL_MS: u64 = 1_000;

/// How often a SQLite store re-reads the head, which is how its
/// subscriptions notice events committed by another process's writer (SQLite
/// has no notifications). The query is a single index probe; in the writer's
/// own process the writer wakes subscriptions directly and this is moot.
pub const SQLITE_HEAD_POLL_INTERVAL_MS: u64 = 100;

/// How long SQLite waits for a lock held by another connection (a reader
/// checkpointing the WAL) before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// The `application_name` of the PostgreSQL session that holds the writer
/// lock; the read pool and the head listener are `kiban-store`.
pub const WRITER_APPLICATION_NAME: &str = "kiban-store-writer";

/// How often a standby store ([`WriterMode::Standby`]) tries to take the
/// writer lock while it is free, and how often the writer checks that its
/// own connection (which holds the lock) is still alive while idle.
pub const WRITER_POLL_INTERVAL_MS: u64 = 500;

/// A live or catching-up feed of events, in position order.
pub type Subscription = BoxStream<'static, Result<RecordedEvent>>;

/// Where a store that is not the writer sends its appends: to the process
/// that holds the writer lock (over NATS in kiban, see
/// `kiban_bus::append`; the store knows no transport). The answer must be
/// the writer's own [`AppendResult`], given only after the commit, or the
/// writer's refusal ([`Error::Conflict`], ...). When the writer cannot be
/// reached the forwarder answers [`Error::Unavailable`] (the outcome is
/// unknown: the append may be sent again with the same event ids, which is
/// harmless because the store dedupes by event id).
pub trait AppendForwarder: Send + Sync + 'static {
    /// Appends `events` to `stream` on the writer.
    fn forward(
        &self,
        stream: StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<AppendResult>>;
}

/// Whether and how a store writes.
#[derive(Clone, Default)]
pub enum WriterMode {
    /// Try to take the writer lock at open and before each append (the
    /// embedded default: the one process writes; a second store on the same
    /// database answers [`Error::NotWriter`] until the lock is free).
    #[default]
    Contend,
    /// Contend, and also poll the lock every `poll` while idle, so that a
    /// standby takes over without waiting for an append; once the writer,
    /// check every `poll` that the lock's connection is still alive
    /// (`kiban serve --role engine`). [`Store::writer_status`] tells when.
    Standby {
        /// How often.
        poll: Duration,
    },
    /// Never take the writer lock: every append goes to the forwarder
    /// (`kiban serve --role api`).
    Forward(Arc<dyn AppendForwarder>),
}

impl std::fmt::Debug for WriterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterMode::Contend => f.write_str("Contend"),
            WriterMode::Standby { poll } => f.debug_struct("Standby").field("poll", poll).finish(),
            WriterMode::Forward(_) => f.write_str("Forward"),
        }
    }
}

/// How to open a store. `Default` suits production.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the read pool.
    pub read_connections: u32,
    /// Most events per writer transaction (see [`BATCH_EVENTS_MAX`]); lower
    /// only to measure the effect of group commit.
    pub batch_events_max: usize,
    /// Whether this store may become the writer.
    pub writer: WriterMode,
    /// Most events of the committed tail: the events this store's writer
    /// committed last, which in-process subscriptions take from memory
    /// instead of the database (also bounded by
    /// [`crate::TAIL_PAYLOAD_BYTES_MAX`]). 0 turns it off. The default is
    /// [`TAIL_EVENTS_DEFAULT`], or the environment's `KIBAN_TAIL_EVENTS`
    /// when that is a number (how the benchmarks compare with and without).
    pub tail_events: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            read_connections: READ_CONNECTIONS_DEFAULT,
            batch_events_max: BATCH_EVENTS_MAX,
            writer: WriterMode::Contend,
            tail_events: std::env::var("KIBAN_TAIL_EVENTS")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(TAIL_EVENTS_DEFAULT),
        }
    }
}

/// What a successful append returns. Re-sending the same events returns the
/// same result again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Position of the first event of the append.
    pub first_position: Position,
    /// Position of the last event of the append.
    pub last_position: Position,
    /// The stream's version after the append: pass it as
    /// `ExpectedVersion::Exact` to append next.
    pub next_expected_version: Version,
    /// The events as recorded.
    pub events: Vec<RecordedEvent>,
}

impl AppendResult {
    pub(crate) fn from_events(events: Vec<RecordedEvent>) -> Self {
        let first = events.first().expect("an append has events");
        let last = events.last().expect("an append has events");
        Self {
            first_position: first.position,
            last_position: last.position,
            next_expected_version: last.version,
            events,
        }
    }
}

/// The last event of the store: position 0 and the genesis hash when empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Head {
    pub position: Position,
    pub hash: Hash,
}

/// How the writer (re)connects. Kept by the writer task for reconnecting
/// after a failure.
#[derive(Debug, Clone)]
pub(crate) enum Connector {
    Postgres(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl Connector {
    pub async fn connect_writer(&self) -> Result<WriterConnection> {
        Ok(match self {
            Connector::Postgres(options) => {
                // Named so that operators (and the tests) can tell the writer's
                // session, which holds the writer lock, from the readers'.
                let options = options.clone().application_name(WRITER_APPLICATION_NAME);
                WriterConnection::Postgres(options.connect().await?)
            }
            Connector::Sqlite(options) => WriterConnection::Sqlite {
                conn: options.connect().await?,
                lock_path: sqlite::writer_lock_path(options),
                lock: None,
            },
        })
    }
}

/// The event store. Cheap to clone: all clones share one writer, one pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Where this store's appends go.
enum AppendPath {
    /// To this store's writer task.
    Writer(mpsc::Sender<AppendRequest>),
    /// To the writer of another process.
    Forward(Arc<dyn AppendForwarder>),
}

struct Inner {
    readers: Readers,
    appends: AppendPath,
    /// Whether this store's writer task holds the writer lock.
    writer_status: watch::Receiver<bool>,
    head: watch::Receiver<Position>,
    /// Shared by the writer and the head follower, which both advance it.
    head_sender: Arc<watch::Sender<Position>>,
    /// Filled by this store's writer after each commit; empty otherwise.
    tail: Arc<Tail>,
    /// The writer task's stream versions (`None` when appends are
    /// forwarded: no writer task here).
    versions: Option<SharedVersions>,
    cancel: CancellationToken,
    /// The writer and head-follower tasks. A std mutex: it is only taken to
    /// push or move the handles out, never across an await.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tasks own no `Store` (the head follower holds it weakly), so
        // they stop here at their next safe point.
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("readers", &self.inner.readers)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url`:
    /// `sqlite://path/to/kiban.db` (the file is created if missing) or
    /// `postgres://user@host:port/database` (the database must exist).
    /// Runs the embedded migrations, then starts the writer task, which tries
    /// to take the writer lock, and the task that follows the head committed
    /// by whichever store is the writer.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, options).await
        } else if url.starts_with("sqlite:") {
            Self::open_sqlite(url, options).await
        } else {
            Err(Error::Invalid(format!(
                "store url must start with sqlite:// or postgres:// (got {:?})",
                url.chars().take(40).collect::<String>()
            )))
        }
    }

    async fn open_postgres(url: &str, options: StoreOptions) -> Result<Store> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Invalid(format!("bad PostgreSQL url: {e}")))?
            .application_name("kiban-store");
        let pool = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
            .connect_with(connect.clone())
            .await?;
        schema::POSTGRES.run(&pool).await?;
        let readers = Readers::Postgres(pool.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(postgres::HEAD_CHANNEL).await?;
        let store = Self::start(readers, Connector::Postgres(connect), options).await?;
        store.spawn_head_follower(Some(listener), HEAD_POLL_INTERVAL_MS);
        Ok(store)
    }

    async fn open_sqlite(url: &str, options: StoreOptions) -> Result<Store> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Invalid(format!("bad SQLite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsynced at every commit, so nothing is
            // acknowledged before it survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            // Deleted content inside b-tree pages is zeroed when that costs
            // no extra I/O (FAST); forgetting a person's key runs with ON
            // (docs/audit.md, crypto-shredding).
            .pragma("secure_delete", "FAST")
            .busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS));
        create_private_file(connect.get_filename())?;
        // The migration runs on its own connection before any pool exists, so
        // the file and its WAL are set up before readers open it.
        let mut setup = connect.connect().await?;
        schema::SQLITE.run(&mut setup).await?;
        sqlx::Connection::close(setup).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
            .connect_with(connect.clone())
            .await?;
        let store = Self::start(Readers::Sqlite(pool), Connector::Sqlite(connect), options).await?;
        store.spawn_head_follower(None, SQLITE_HEAD_POLL_INTERVAL_MS);
        Ok(store)
    }

    /// Starts the task that moves the head watch when another store (another
    /// process, or another `Store::open` of the same database) commits. It
    /// holds the store weakly, so dropping the last clone still stops it.
    fn spawn_head_follower(&self, listener: Option<PgListener>, poll_interval_ms: u64) {
        let task = tokio::spawn(follow_head(
            listener,
            Duration::from_millis(poll_interval_ms),
            Arc::downgrade(&self.inner),
            self.inner.cancel.clone(),
        ));
        self.inner.tasks.lock().expect("not poisoned").push(task);
    }

    /// Starts the writer task. The writer tries to take its role at once, so
    /// that a store learns early whether it is the writer; being a reader is
    /// not an error here (appends will say so).
    async fn start(readers: Readers, connector: Connector, options: StoreOptions) -> Result<Store> {
        let initial = readers.head().await?.map_or(0, |(p, _)| p.max(0) as u64);
        let (head_sender, head) = watch::channel(initial);
        let head_sender = Arc::new(head_sender);
        let (status_sender, writer_status) = watch::channel(false);
        let tail = Arc::new(Tail::new(options.tail_events));
        let cancel = CancellationToken::new();
        let poll = match &options.writer {
            WriterMode::Forward(forwarder) => {
                // No writer task, no writer connection: this store never
                // takes the lock.
                return Ok(Store {
                    inner: Arc::new(Inner {
                        readers,
                        appends: AppendPath::Forward(Arc::clone(forwarder)),
                        writer_status,
                        head,
                        head_sender,
                        tail,
                        versions: None,
                        cancel,
                        tasks: Mutex::new(Vec::new()),
                    }),
                });
            }
            WriterMode::Contend => None,
            WriterMode::Standby { poll } => Some(*poll),
        };
        let versions = SharedVersions::new(STREAM_VERSION_CACHE_CAPACITY);
        let mut writer = Writer::new(
            connector,
            head_sender.clone(),
            tail.clone(),
            status_sender,
            versions.clone(),
            options.batch_events_max,
            poll,
        );
        match writer.ensure_ready().await {
            Ok(()) | Err(Error::NotWriter(_)) => {}
            Err(error) => return Err(error),
        }
        let (appends, requests) = mpsc::channel(APPEND_QUEUE_CAPACITY);
        let writer_task = tokio::spawn(writer.run(requests, cancel.clone()));
        Ok(Store {
            inner: Arc::new(Inner {
                readers,
                appends: AppendPath::Writer(appends),
                writer_status,
                head,
                head_sender,
                tail,
                versions: Some(versions),
                cancel,
                tasks: Mutex::new(vec![writer_task]),
            }),
        })
    }

    /// Whether this store holds the writer lock now, as a watch that
    /// changes when it takes or loses it (always `false` for a store opened
    /// with [`WriterMode::Forward`]). A process that must stop writing the
    /// moment it is no longer the writer (fencing) watches for `false`.
    pub fn writer_status(&self) -> watch::Receiver<bool> {
        self.inner.writer_status.clone()
    }

    /// The version of `stream` as this store's writer knows it, without
    /// reading the database: `Some` only while this store holds the writer
    /// role and its writer remembers the stream (a bounded cache of the
    /// streams it recently wrote or looked up).
    /// While this store is the writer nobody else appends (every other
    /// process sends its appends here), so the answer is the version of
    /// the last commit — what [`Store::read_stream`] would end at. The
    /// engine uses it to skip reading a stream whose cached state is
    /// already at that version (docs/store.md "Stream versions").
    pub fn writer_version(&self, stream: &StreamName) -> Option<Version> {
        let versions = self.inner.versions.as_ref()?;
        if !*self.inner.writer_status.borrow() {
            return None;
        }
        let version = versions.get(stream)?;
        // The role may have been lost (and the cache cleared) between the
        // two reads; only an answer given while still the writer counts.
        (*self.inner.writer_status.borrow()).then_some(version)
    }

    /// Whether this store sends its appends to another process's writer.
    pub fn forwards_appends(&self) -> bool {
        matches!(self.inner.appends, AppendPath::Forward(_))
    }

    /// Stops the writer (after the batch in flight, if any) and the other
    /// tasks, waits for them, and closes every connection. Appends still
    /// queued fail with [`Error::Closed`]; so does every later call.
    pub async fn close(&self) {
        self.inner.cancel.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("not poisoned"));
        for task in tasks {
            let _ = task.await;
        }
        self.inner.readers.close().await;
    }
}

impl Store {
    /// Appends `events` to `stream` atomically, if the stream's version is
    /// what `expected` says. Idempotent on event ids: re-sending events that
    /// are stored with the same content returns the original result without
    /// writing. See [`Error`] for every refusal.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        validate_append(&events)?;
        let appends = match &self.inner.appends {
            AppendPath::Writer(appends) => appends,
            AppendPath::Forward(forwarder) => {
                if self.inner.cancel.is_cancelled() {
                    return Err(Error::Closed);
                }
                let result = forwarder.forward(stream.clone(), expected, events).await?;
                // What the writer committed is readable here now: move the
                // head so that subscriptions need not wait for the poll.
                let last = result.last_position;
                self.inner
                    .head_sender
                    .send_if_modified(|h| writer::advance(h, last));
                return Ok(result);
            }
        };
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        appends.send(request).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Events of `stream` from version `from` (inclusive; versions start at
    /// 1), at most `max` (capped at [`READ_EVENTS_MAX`]), in version order.
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let from = from.max(1);
        let rows = self
            .inner
            .readers
            .read_stream(stream, from, max.min(READ_EVENTS_MAX))
            .await?;
        let events = parse_rows(rows)?;
        for (i, event) in events.iter().enumerate() {
            if &event.stream != stream || event.version != from + i as u64 {
                return Err(Error::Corrupted {
                    position: event.position,
                    reason: format!(
                        "stream {stream} should have version {} here, found {} of {}",
                        from + i as u64,
                        event.version,
                        event.stream
                    ),
                });
            }
        }
        Ok(events)
    }

    /// Events from position `from` (inclusive; positions start at 1), at most
    /// `max` (capped at [`READ_EVENTS_MAX`]), in position order.
    pub async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        let from = from.max(1);
        let rows = self
            .inner
            .readers
            .read_all(from, max.min(READ_EVENTS_MAX))
            .await?;
        let events = parse_rows(rows)?;
        for (i, event) in events.iter().enumerate() {
            let expected = from + i as u64;
            if event.position != expected {
                return Err(Error::Corrupted {
                    position: expected,
                    reason: format!("position {expected} is missing (found {})", event.position),
                });
            }
        }
        Ok(events)
    }

    /// Every event of positions `from..=to` (`to` at most the head, e.g.
    /// from [`Store::head`]), in batches of a few thousand, in position
    /// order: the bulk read for
    /// replays and exports. It stands on the verification scan (keyset pages
    /// read on their own thread, recycled buffers; see `scan.rs`), so it is
    /// many times faster than paging with [`Store::read_all`], in constant
    /// memory. A missing position ends the stream with [`Error::Corrupted`].
    pub fn read_range(
        &self,
        from: Position,
        to: Position,
    ) -> BoxStream<'static, Result<Vec<RecordedEvent>>> {
        let readers = self.inner.readers.clone();
        let from = from.max(1);
        let scan = (from <= to).then(|| Scan::start(&readers, from, to));
        // Rows do not store the hash of the row before (migration 0010):
        // the first event's comes from the database, every other one is the
        // hash of the event read just before it.
        let state = (scan, from, to, None, readers);
        Box::pin(futures::stream::unfold(
            state,
            |(scan, next, to, prev, readers)| async move {
                let mut scan = scan?;
                let prev = match prev {
                    Some(prev) => Ok(prev),
                    None => readers.hash_before(next).await,
                };
                let batch = match scan.next().await {
                    None if next <= to => Err(Error::Corrupted {
                        position: next,
                        reason: format!("position {next} is missing"),
                    }),
                    None => return None,
                    Some(batch) => batch,
                };
                let parsed = prev.and_then(|mut prev| {
                    let batch = batch?;
                    let mut events: Vec<RecordedEvent> = Vec::with_capacity(batch.rows().len());
                    for row in batch.rows() {
                        let expected = next + events.len() as u64;
                        if row.position() != expected {
                            return Err(Error::Corrupted {
                                position: expected,
                                reason: format!(
                                    "position {expected} is missing (found {})",
                                    row.position()
                                ),
                            });
                        }
                        let event = batch.to_raw(row, prev)?.into_recorded()?;
                        prev = Some(event.hash);
                        events.push(event);
                    }
                    scan.recycle(batch);
                    Ok((events, prev))
                });
                match parsed {
                    Ok((events, prev)) => {
                        let next = next + events.len() as u64;
                        Some((Ok(events), (Some(scan), next, to, Some(prev), readers)))
                    }
                    // The stream ends after its first error.
                    Err(error) => Some((Err(error), (None, next, to, None, readers))),
                }
            },
        ))
    }

    /// The last committed event's position and hash.
    pub async fn head(&self) -> Result<Head> {
        let (position, hash) = crate::backend::head_from_row(self.inner.readers.head().await?)?;
        Ok(Head { position, hash })
    }

    /// Every event from position `from` on: first those already stored, read
    /// in pages, then each new one as it commits, in position order, never
    /// skipping or repeating one. Ends after yielding an error (the store was
    /// closed, or the database failed); resubscribe from the next position.
    pub fn subscribe(&self, from: Position) -> Subscription {
        let state = SubscriptionState {
            store: self.clone(),
            next: from.max(1),
            buffer: VecDeque::new(),
            head: self.inner.head.clone(),
            done: false,
        };
        Box::pin(futures::stream::unfold(
            state,
            SubscriptionState::next_event,
        ))
    }

    /// Where this store's subscriptions took their pages from since it was
    /// opened: the committed tail in memory, or the database.
    pub fn subscription_pages(&self) -> SubscriptionPages {
        self.inner.tail.pages()
    }

    /// Recomputes the hash chain over positions `from..=to` (`to` = the head
    /// when `None`) in constant memory and names the first break.
    pub async fn verify(&self, from: Position, to: Option<Position>) -> Result<VerifyReport> {
        chain::verify(&self.inner.readers, from, to).await
    }

    /// [`Store::verify`] with a trusted anchor and signed hashes to pass
    /// through ([`VerifyRange`]), calling `progress` with the number of
    /// events checked so far after each page.
    pub async fn verify_with(
        &self,
        range: &VerifyRange,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<VerifyReport> {
        chain::verify_with(&self.inner.readers, range, progress).await
    }

    pub(crate) fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Hands a task to the store: stopped and awaited by [`Store::close`].
    pub(crate) fn own_task(&self, task: JoinHandle<()>) {
        self.inner.tasks.lock().expect("not poisoned").push(task);
    }

    /// A reference that does not keep the store open.
    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }
}

/// A [`Store`] held weakly by a task it owns, so that dropping the last
/// clone still stops the task.
pub(crate) struct WeakStore(Weak<Inner>);

impl WeakStore {
    pub(crate) fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

fn parse_rows(rows: Vec<RawEvent>) -> Result<Vec<RecordedEvent>> {
    rows.into_iter().map(RawEvent::into_recorded).collect()
}

/// Refuses what the writer must never see: empty or oversized appends and
/// ids repeated within one append.
fn validate_append(events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::Invalid(
            "an append needs at least one event".to_owned(),
        ));
    }
    if events.len() > EVENTS_PER_APPEND_MAX {
        return Err(Error::Invalid(format!(
            "an append has at most {EVENTS_PER_APPEND_MAX} events (got {})",
            events.len()
        )));
    }
    let mut total = 0usize;
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for event in events {
        if event.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(Error::Invalid(format!(
                "event {} has a payload of {} bytes, more than the limit of {PAYLOAD_BYTES_MAX}",
                event.event_id,
                event.payload.len()
            )));
        }
        if event.schema_version == 0 {
            return Err(Error::Invalid(format!(
                "event {} has schema version 0; schema versions start at 1",
                event.event_id
            )));
        }
        if !ids.insert(event.event_id) {
            return Err(Error::Invalid(format!(
                "event id {} appears twice in one append",
                event.event_id
            )));
        }
        total += event.payload.len();
    }
    if total > APPEND_PAYLOAD_BYTES_MAX {
        return Err(Error::Invalid(format!(
            "an append carries at most {APPEND_PAYLOAD_BYTES_MAX} payload bytes (got {total})"
        )));
    }
    Ok(())
}

/// The state of one subscription between two events it yields.
struct SubscriptionState {
    store: Store,
    /// The next position to yield: everything before it was yielded.
    next: Position,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<Position>,
    done: bool,
}

impl SubscriptionState {
    async fn next_event(mut self) -> Option<(Result<RecordedEvent>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            if let Err(error) = self.refill().await {
                self.done = true;
                return Some((Err(error), self));
            }
        }
    }

    /// Waits until the head reaches `next`, then takes the next page from the
    /// committed tail if `next` is in it, or reads it from the database. The
    /// head only moves after a commit, and positions are gapless and assigned
    /// in commit order, so whatever is at or below the head is readable; the
    /// tail holds only committed events, exactly as the writer wrote them.
    async fn refill(&mut self) -> Result<()> {
        let next = self.next;
        let cancel = self.store.inner.cancel.clone();
        tokio::select! {
            () = cancel.cancelled() => return Err(Error::Closed),
            moved = self.head.wait_for(|&head| head >= next) => {
                moved.map_err(|_| Error::Closed)?;
            }
        }
        let tail = &self.store.inner.tail;
        let mut from_memory = tail.read(next, SUBSCRIPTION_PAGE_EVENTS);
        if from_memory.is_none() {
            // Woken by the database's head before this store's writer got
            // its commit back: wait for the writer, not the database.
            tokio::select! {
                () = cancel.cancelled() => return Err(Error::Closed),
                () = tail.settle(next) => {}
            }
            from_memory = tail.read(next, SUBSCRIPTION_PAGE_EVENTS);
        }
        let events = match from_memory {
            Some(events) => {
                tail.count(true);
                events
            }
            None => {
                tail.count(false);
                self.store.read_all(next, SUBSCRIPTION_PAGE_EVENTS).await?
            }
        };
        let Some(last) = events.last() else {
            return Err(Error::Corrupted {
                position: next,
                reason: format!(
                    "the head is at {} but position {next} cannot be read",
                    *self.head.borrow()
                ),
            });
        };
        self.next = last.position + 1;
        self.buffer.extend(events);
        Ok(())
    }
}

/// Follows the head committed by any process on the database: woken by the
/// writer's notification on PostgreSQL, and polling every `poll_interval` as
/// the only way on SQLite and as a safety net for notifications lost while
/// the PostgreSQL listener reconnects.
async fn follow_head(
    mut listener: Option<PgListener>,
    poll_interval: Duration,
    store: Weak<Inner>,
    cancel: CancellationToken,
) {
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await.map(Some),
                None => std::future::pending().await,
            }
        };
        let position = tokio::select! {
            () = cancel.cancelled() => break,
            notification = notified => match notification {
                Ok(notification) => notification.and_then(|n| n.payload().parse::<Position>().ok()),
                Err(error) => {
                    // The listener reconnects on the next `recv`; wait for
                    // the poll so a database that is down is not hammered.
                    tracing::warn!(%error, "head listener failed; retrying");
                    None
                }
            },
            _ = poll.tick() => {
                let Some(inner) = store.upgrade() else { break };
                let head = inner.readers.head().await;
                head.ok().flatten().map(|(position, _)| u64::try_from(position).unwrap_or(0))
            }
        };
        let Some(inner) = store.upgrade() else { break };
        if let Some(position) = position {
            inner
                .head_sender
                .send_if_modified(|h| writer::advance(h, position));
        }
    }
}

/// Creates a new SQLite database file readable and writable by its owner
/// only (0600); SQLite gives its `-wal` and `-shm` files the database
/// file's permissions. An existing file keeps its permissions (the
/// operator's choice); `:memory:` has no file.
fn create_private_file(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.as_os_str().is_empty() || path == std::path::Path::new(":memory:") || path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(Error::Invalid(format!(
            "cannot create the SQLite database {}: {error}",
            path.display()
        ))),
    }
}
