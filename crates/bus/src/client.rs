//! The bus as the rest of kiban holds it ([`Bus`]: in-process or a NATS
//! connection), and the two sides a bus has besides kiban: a municipality
//! (保険者) that publishes status messages and waits for their receipts, and
//! an office (事業所) that follows its live updates. Both work over NATS and
//! over the in-process bus, so `kiban emit`, `kiban subscribe`, the demo, the
//! simulation and the benchmarks share them, and no other crate speaks NATS.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use kiban_events::{EventType, RecordedEvent, UpdateNotice};
use serde_json::Value;
use uuid::Uuid;

use crate::ingest::{MSG_ID_HEADER, Receipt, ReceiptStatus};
use crate::local::{Filtered, LocalBus};
use crate::streams::StreamOptions;
use crate::subjects::{
    KIBAN_INBOX_PREFIX, ingest_subject, office_updates_subject, receipt_subject,
};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The input is not a status message (not JSON, no `kind`, a bad
    /// `event_id`); nothing was published.
    #[error("{0}")]
    Invalid(String),
    /// No receipt came in time; the message may still be recorded (re-send
    /// it: the event id makes that safe).
    #[error("no receipt for {event_id} within {seconds} s")]
    NoReceipt { event_id: Uuid, seconds: u64 },
    /// A receipt or an update could not be read.
    #[error("unreadable {what}: {error}")]
    Unreadable { what: &'static str, error: String },
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] crate::Error),
}

/// The result type of the clients.
pub type ClientResult<T> = std::result::Result<T, ClientError>;

fn invalid(text: impl Into<String>) -> ClientError {
    ClientError::Invalid(text.into())
}

/// The options of every NATS connection kiban makes for itself: inboxes
/// under [`KIBAN_INBOX_PREFIX`] instead of `_INBOX`, so that the JetStream
/// pull deliveries of the ingest consumer (every municipality's status
/// messages) and the writer's append replies arrive where only kiban's users
/// may subscribe (docs/nats.md). Add credentials with the options' own
/// methods, or put them in the URL.
pub fn kiban_connect_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new().custom_inbox_prefix(KIBAN_INBOX_PREFIX)
}

/// The servers of a `--nats-url`: one URL or several separated by commas.
fn parse_servers(url: &str) -> crate::Result<Vec<async_nats::ServerAddr>> {
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(|server| {
            server.parse().map_err(|e| {
                crate::Error::Refused(format!("a NATS server URL is not readable: {e}"))
            })
        })
        .collect::<crate::Result<_>>()?;
    if servers.is_empty() {
        return Err(crate::Error::Refused("no NATS server URL given".to_owned()));
    }
    Ok(servers)
}

/// `host:port` of each server, for messages and banners: never the user or
/// the password of a URL.
fn servers_without_credentials(servers: &[async_nats::ServerAddr]) -> String {
    servers
        .iter()
        .map(|server| format!("{}:{}", server.host(), server.port()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password of `nats://user:password@host:port` (percent-
/// encoded characters decoded), which the NATS client does not send by
/// itself. Several URLs must name the same user (one identity per process).
fn url_credentials(servers: &[async_nats::ServerAddr]) -> crate::Result<Option<(String, String)>> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| crate::Error::Refused("NATS credentials are not UTF-8".to_owned()))
    };
    let mut found: Option<(String, String)> = None;
    for server in servers {
        let Some(user) = server.username() else {
            continue;
        };
        let credentials = (decode(user)?, decode(server.password().unwrap_or(""))?);
        if found.as_ref().is_some_and(|known| *known != credentials) {
            return Err(crate::Error::Refused(
                "the NATS server URLs name different users".to_owned(),
            ));
        }
        found = Some(credentials);
    }
    Ok(found)
}

/// The bus kiban ingests from and routes office updates to, as the
/// system, the lab and the clients hold it.
#[derive(Clone)]
pub enum Bus {
    /// The in-process bus.
    Local(LocalBus),
    /// NATS JetStream (the URL, a connection, and one JetStream context on
    /// it: a context spawns its own task for publish acks, so one per
    /// message would be a task and a channel per message).
    Nats {
        url: String,
        client: async_nats::Client,
        jetstream: Box<async_nats::jetstream::Context>,
    },
}

impl Bus {
    /// Connects kiban itself (a `kiban serve` process, its load generators)
    /// to the NATS server(s) at `url`: one URL, or several separated by
    /// commas (`nats://a:4222,nats://b:4222`). The connection's inboxes are
    /// under [`KIBAN_INBOX_PREFIX`] (see [`kiban_connect_options`]).
    pub async fn connect_nats(url: &str) -> crate::Result<Bus> {
        Self::connect_with(url, kiban_connect_options()).await
    }

    /// Connects a municipality or an office (`kiban emit`, `kiban
    /// subscribe`): NATS's default inbox prefix `_INBOX`, which their
    /// permissions allow and kiban's connections never use.
    pub async fn connect_nats_as_participant(url: &str) -> crate::Result<Bus> {
        Self::connect_with(url, async_nats::ConnectOptions::new()).await
    }

    async fn connect_with(
        url: &str,
        mut options: async_nats::ConnectOptions,
    ) -> crate::Result<Bus> {
        // A comma-separated list names several servers of one cluster: the
        // client connects to one of them and fails over to the others.
        let servers = parse_servers(url)?;
        let shown = servers_without_credentials(&servers);
        if let Some((user, password)) = url_credentials(&servers)? {
            options = options.user_and_password(user, password);
        }
        let client = options.connect(servers).await.map_err(|e| {
            crate::Error::from_nats(&format!("cannot connect to NATS at {shown}"), e)
        })?;
        Ok(Bus::Nats {
            url: url.to_owned(),
            jetstream: Box::new(async_nats::jetstream::new(client.clone())),
            client,
        })
    }

    /// Creates (idempotently) the JetStream streams and the ingest
    /// consumer; nothing to do for the in-process bus.
    pub async fn ensure_streams(&self, options: &StreamOptions) -> crate::Result<()> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Nats { jetstream, .. } => crate::streams::ensure_streams(jetstream, options).await,
        }
    }

    /// The NATS connection, for the ingest consumer, the relay and the
    /// routing sink; `None` for the in-process bus.
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        match self {
            Bus::Local(_) => None,
            Bus::Nats { client, .. } => Some(client),
        }
    }

    /// Publishes a municipality's status message on its ingest subject,
    /// with `Nats-Msg-Id` = its event id. Returns once the message is sent
    /// (over NATS: handed to the server, without waiting for JetStream's
    /// publish ack; a load generator keeps many in flight and counts
    /// receipts instead).
    pub async fn publish_ingest(
        &self,
        insurer: &InsurerNumber,
        message: &Outgoing,
    ) -> crate::Result<()> {
        let subject = ingest_subject(insurer, &message.kind);
        let id = message.event_id.to_string();
        match self {
            Bus::Local(bus) => {
                bus.publish_ingest(&subject, Some(&id), message.body.clone())
                    .await
            }
            Bus::Nats { jetstream, .. } => {
                let mut headers = HeaderMap::new();
                headers.insert(MSG_ID_HEADER, id.as_str());
                jetstream
                    .publish_with_headers(subject, headers, message.body.clone().into())
                    .await
                    .map_err(|e| crate::Error::from_nats("cannot publish to JetStream", e))?;
                Ok(())
            }
        }
    }

    /// Every municipality's receipts from now on (a load generator's view;
    /// a municipality reads its own with [`Municipality`]).
    pub async fn tap_receipts(&self) -> crate::Result<Tap<Receipt>> {
        match self {
            Bus::Local(bus) => Ok(Tap::LocalReceipts(bus.subscribe_all_receipts())),
            Bus::Nats { client, .. } => {
                Tap::nats(client, crate::subjects::all_receipts_filter()).await
            }
        }
    }

    /// Every office's updates from now on (a load generator's view; an
    /// office reads its own with [`OfficeFeed`]).
    pub async fn tap_office_updates(&self) -> crate::Result<Tap<UpdateNotice>> {
        match self {
            Bus::Local(bus) => Ok(Tap::LocalUpdates(bus.subscribe_all_updates())),
            Bus::Nats { client, .. } => {
                Tap::nats(client, crate::subjects::all_office_updates_filter()).await
            }
        }
    }

    /// A publisher that keeps up to `window` JetStream publish acks
    /// outstanding (a load generator's pace); `None` on the in-process bus,
    /// whose publish is already a bounded queue.
    pub fn windowed_publisher(&self, window: usize) -> Option<WindowedPublisher> {
        let client = self.nats_client()?;
        Some(WindowedPublisher {
            context: async_nats::jetstream::new(client.clone()),
            window: FuturesUnordered::new(),
            window_max: window.max(1),
        })
    }

    /// The raw JetStream ceiling for `messages` (insurer and message each):
    /// publishes them, `window` acks outstanding, into a fresh stream
    /// ([`crate::subjects::BENCH_RAW_STREAM`]) that nobody consumes, then
    /// deletes it. Returns messages per second; `None` on the in-process bus.
    pub async fn raw_jetstream_rate(
        &self,
        messages: impl Iterator<Item = (InsurerNumber, Outgoing)>,
        window: usize,
    ) -> crate::Result<Option<f64>> {
        use crate::subjects::{BENCH_RAW_STREAM, BENCH_RAW_SUBJECTS, bench_raw_subject};
        let Some(mut publisher) = self.windowed_publisher(window) else {
            return Ok(None);
        };
        let context = publisher.context.clone();
        let _ = context.delete_stream(BENCH_RAW_STREAM).await;
        context
            .create_stream(async_nats::jetstream::stream::Config {
                name: BENCH_RAW_STREAM.to_owned(),
                subjects: vec![BENCH_RAW_SUBJECTS.to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| crate::Error::from_nats("cannot create the raw benchmark stream", e))?;
        let started = std::time::Instant::now();
        let mut count = 0u64;
        for (insurer, message) in messages {
            publisher
                .publish_to(bench_raw_subject(&insurer, &message.kind), &message)
                .await?;
            count += 1;
        }
        publisher.finish().await?;
        let rate = count as f64 / started.elapsed().as_secs_f64();
        let _ = context.delete_stream(BENCH_RAW_STREAM).await;
        Ok(Some(rate))
    }

    /// A human description for a start banner.
    pub fn describe(&self) -> String {
        match self {
            Bus::Local(_) => "the in-process bus".to_owned(),
            Bus::Nats { url, .. } => {
                let shown = parse_servers(url)
                    .map(|servers| servers_without_credentials(&servers))
                    .unwrap_or_else(|_| "(unreadable URL)".to_owned());
                format!("NATS JetStream at {shown} (ingest, outbox relay, office routing)")
            }
        }
    }
}

/// How long `kiban emit` waits for the receipts by default, in seconds
/// (docs/integration.md tells municipalities to re-send after 30 s).
pub const RECEIPT_TIMEOUT_SECS: u64 = 30;

/// One status message ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its event id (also the `Nats-Msg-Id`).
    pub event_id: Uuid,
    /// Its kind (the subject's tail).
    pub kind: EventType,
    /// The JSON body as published.
    pub body: Vec<u8>,
}

impl Outgoing {
    /// A message from its JSON object. An absent `event_id` is filled in
    /// with a fresh UUID v7; `kind` must be there (it names the subject).
    pub fn from_json(mut value: Value) -> ClientResult<Outgoing> {
        let Some(object) = value.as_object_mut() else {
            return Err(invalid("a status message must be a JSON object"));
        };
        let event_id = match object.get("event_id") {
            None | Some(Value::Null) => {
                let id = Uuid::now_v7();
                object.insert("event_id".to_owned(), Value::String(id.to_string()));
                id
            }
            Some(Value::String(text)) => text
                .parse()
                .map_err(|e| invalid(format!("event_id {text:?} is not a UUID: {e}")))?,
            Some(other) => {
                return Err(invalid(format!(
                    "event_id must be a UUID string, not {other}"
                )));
            }
        };
        let kind = object.get("kind").and_then(Value::as_str).ok_or_else(|| {
            invalid("every status message needs a \"kind\" (e.g. certification.filed)")
        })?;
        let kind = EventType::parse(kind).map_err(|e| invalid(format!("kind {kind:?}: {e}")))?;
        let body = serde_json::to_vec(&value).map_err(|e| invalid(e.to_string()))?;
        Ok(Outgoing {
            event_id,
            kind,
            body,
        })
    }
}

/// Parses `kiban emit`'s input: one JSON object, a JSON array of them, or
/// JSON lines (one object per line).
pub fn parse_messages(text: &str) -> ClientResult<Vec<Outgoing>> {
    parse_json_values(text)?
        .into_iter()
        .map(Outgoing::from_json)
        .collect()
}

/// The JSON values of `kiban emit`'s input: one value, a JSON array of
/// them, or JSON lines.
pub fn parse_json_values(text: &str) -> ClientResult<Vec<Value>> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| invalid(format!("the input is not a JSON array: {e}")))?
    } else {
        let mut values = Vec::new();
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            values.push(value.map_err(|e| {
                invalid(format!(
                    "the input is not JSON (an object, an array, or lines): {e}"
                ))
            })?);
        }
        values
    };
    Ok(values)
}

/// A municipality: publishes on its own ingest subjects and reads its own
/// receipts (subscribed before the first publish).
pub struct Municipality {
    insurer: InsurerNumber,
    side: MunicipalitySide,
}

enum MunicipalitySide {
    Local {
        bus: LocalBus,
        receipts: Filtered<InsurerNumber, Receipt>,
    },
    Nats {
        jetstream: async_nats::jetstream::Context,
        receipts: async_nats::Subscriber,
    },
}

impl Municipality {
    /// Connects as `insurer` over `bus`.
    pub async fn connect(bus: &Bus, insurer: InsurerNumber) -> ClientResult<Municipality> {
        match bus {
            Bus::Local(bus) => Ok(Municipality {
                side: MunicipalitySide::Local {
                    receipts: bus.subscribe_receipts(insurer.clone()),
                    bus: bus.clone(),
                },
                insurer,
            }),
            Bus::Nats { client, .. } => Self::nats(client.clone(), insurer).await,
        }
    }

    /// Connects as `insurer` through a NATS client.
    async fn nats(
        client: async_nats::Client,
        insurer: InsurerNumber,
    ) -> ClientResult<Municipality> {
        let receipts = subscribe_known(&client, receipt_subject(&insurer), "the receipts").await?;
        Ok(Municipality {
            side: MunicipalitySide::Nats {
                jetstream: async_nats::jetstream::new(client),
                receipts,
            },
            insurer,
        })
    }

    /// Publishes `message` with `Nats-Msg-Id` = its event id (over NATS,
    /// waiting for JetStream's publish ack — which is not the receipt).
    pub async fn publish(&self, message: &Outgoing) -> ClientResult<()> {
        let subject = ingest_subject(&self.insurer, &message.kind);
        let id = message.event_id.to_string();
        match &self.side {
            MunicipalitySide::Local { bus, .. } => {
                bus.publish_ingest(&subject, Some(&id), message.body.clone())
                    .await?;
            }
            MunicipalitySide::Nats { jetstream, .. } => {
                let mut headers = HeaderMap::new();
                headers.insert(MSG_ID_HEADER, id.as_str());
                jetstream
                    .publish_with_headers(subject, headers, message.body.clone().into())
                    .await
                    .map_err(|e| crate::Error::from_nats("cannot publish to JetStream", e))?
                    .await
                    .map_err(|e| {
                        crate::Error::from_nats("JetStream did not acknowledge the publish", e)
                    })?;
            }
        }
        Ok(())
    }

    /// The next receipt for this insurer.
    pub async fn next_receipt(&mut self) -> ClientResult<Receipt> {
        match &mut self.side {
            MunicipalitySide::Local { receipts, .. } => Ok(receipts.next().await?),
            MunicipalitySide::Nats { receipts, .. } => {
                let message = receipts.next().await.ok_or(crate::Error::Closed)?;
                read_json("receipt", &message.payload)
            }
        }
    }

    /// Publishes every message, then waits (at most `timeout` after the
    /// last publish) for each one's receipt. Returns each message's event
    /// id with its receipt, `None` when none came in time.
    pub async fn send_all(
        &mut self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> ClientResult<Vec<(Uuid, Option<Receipt>)>> {
        let mut waiting: BTreeMap<Uuid, Option<Receipt>> =
            messages.iter().map(|m| (m.event_id, None)).collect();
        for message in messages {
            self.publish(message).await?;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut open = waiting.len();
        while open > 0 {
            let receipt = tokio::select! {
                receipt = self.next_receipt() => receipt?,
                () = tokio::time::sleep_until(deadline) => break,
            };
            let Some(id) = receipt.event_id.map(|id| *id.as_uuid()) else {
                continue;
            };
            if let Some(slot) = waiting.get_mut(&id).filter(|slot| slot.is_none()) {
                *slot = Some(receipt);
                open -= 1;
            }
        }
        Ok(messages
            .iter()
            .map(|m| (m.event_id, waiting.get(&m.event_id).cloned().flatten()))
            .collect())
    }

    /// Publishes one message and waits for its receipt.
    pub async fn send(&mut self, message: &Outgoing, timeout: Duration) -> ClientResult<Receipt> {
        let mut answered = self
            .send_all(std::slice::from_ref(message), timeout)
            .await?;
        match answered.pop() {
            Some((_, Some(receipt))) => Ok(receipt),
            _ => Err(ClientError::NoReceipt {
                event_id: message.event_id,
                seconds: timeout.as_secs(),
            }),
        }
    }
}

/// Publishes status messages to JetStream with a window of outstanding
/// publish acks (see [`Bus::windowed_publisher`]).
pub struct WindowedPublisher {
    context: async_nats::jetstream::Context,
    window: FuturesUnordered<
        futures::future::BoxFuture<
            'static,
            std::result::Result<
                async_nats::jetstream::publish::PublishAck,
                async_nats::jetstream::context::PublishError,
            >,
        >,
    >,
    window_max: usize,
}

impl WindowedPublisher {
    /// Publishes `message` as `insurer` on its ingest subject, waiting first
    /// while the window is full.
    pub async fn publish(
        &mut self,
        insurer: &InsurerNumber,
        message: &Outgoing,
    ) -> crate::Result<()> {
        self.publish_to(ingest_subject(insurer, &message.kind), message)
            .await
    }

    async fn publish_to(&mut self, subject: String, message: &Outgoing) -> crate::Result<()> {
        while self.window.len() >= self.window_max {
            self.settle_one().await?;
        }
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, message.event_id.to_string().as_str());
        let ack = self
            .context
            .publish_with_headers(subject, headers, message.body.clone().into())
            .await
            .map_err(|e| crate::Error::from_nats("JetStream publish", e))?;
        self.window.push(Box::pin(ack.into_future()));
        Ok(())
    }

    /// Waits for every outstanding publish ack.
    pub async fn finish(&mut self) -> crate::Result<()> {
        while !self.window.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> crate::Result<()> {
        match self.window.next().await {
            Some(ack) => ack
                .map(|_| ())
                .map_err(|e| crate::Error::from_nats("JetStream publish ack", e)),
            None => Ok(()),
        }
    }
}

/// What a [`Tap`] yields.
#[derive(Debug)]
pub enum Tapped<T> {
    /// The next item.
    Item(T),
    /// The tap fell behind and lost items (the in-process bus's bounded
    /// broadcast): counts from here on are incomplete.
    Missed,
    /// The bus closed.
    Ended,
}

/// Every receipt or every office update on a bus, for load generators.
pub enum Tap<T> {
    /// The in-process bus's receipts.
    LocalReceipts(tokio::sync::broadcast::Receiver<(InsurerNumber, Receipt)>),
    /// The in-process bus's office updates.
    LocalUpdates(tokio::sync::broadcast::Receiver<(OfficeNumber, std::sync::Arc<RecordedEvent>)>),
    /// A NATS subscription of JSON messages.
    Nats(async_nats::Subscriber, std::marker::PhantomData<fn() -> T>),
}

impl<T> Tap<T> {
    async fn nats(client: &async_nats::Client, filter: String) -> crate::Result<Tap<T>> {
        let subscriber = subscribe_known(client, filter, "the tap").await?;
        Ok(Tap::Nats(subscriber, std::marker::PhantomData))
    }
}

impl Tap<Receipt> {
    /// The next receipt; an unreadable NATS message is skipped.
    pub async fn next(&mut self) -> Tapped<Receipt> {
        match self {
            Tap::LocalReceipts(receiver) => from_broadcast(receiver.recv().await),
            Tap::Nats(subscriber, _) => next_json(subscriber).await,
            Tap::LocalUpdates(_) => unreachable!("a receipt tap holds receipts"),
        }
    }
}

impl Tap<UpdateNotice> {
    /// The next office update; an unreadable NATS message (a person
    /// snapshot) is skipped.
    pub async fn next(&mut self) -> Tapped<UpdateNotice> {
        match self {
            Tap::LocalUpdates(receiver) => match from_broadcast(receiver.recv().await) {
                Tapped::Item(event) => Tapped::Item(UpdateNotice::from(event.as_ref())),
                Tapped::Missed => Tapped::Missed,
                Tapped::Ended => Tapped::Ended,
            },
            Tap::Nats(subscriber, _) => next_json(subscriber).await,
            Tap::LocalReceipts(_) => unreachable!("an update tap holds updates"),
        }
    }
}

fn from_broadcast<K, T>(
    received: std::result::Result<(K, T), tokio::sync::broadcast::error::RecvError>,
) -> Tapped<T> {
    use tokio::sync::broadcast::error::RecvError;
    match received {
        Ok((_, item)) => Tapped::Item(item),
        Err(RecvError::Lagged(_)) => Tapped::Missed,
        Err(RecvError::Closed) => Tapped::Ended,
    }
}

async fn next_json<T: serde::de::DeserializeOwned>(
    subscriber: &mut async_nats::Subscriber,
) -> Tapped<T> {
    while let Some(message) = subscriber.next().await {
        if let Ok(item) = serde_json::from_slice(&message.payload) {
            return Tapped::Item(item);
        }
    }
    Tapped::Ended
}

/// Subscribes to `subject` and returns once the server knows the
/// subscription: anything published after that (an early receipt, say)
/// reaches it.
async fn subscribe_known(
    client: &async_nats::Client,
    subject: String,
    what: &str,
) -> crate::Result<async_nats::Subscriber> {
    let subscriber = client
        .subscribe(subject)
        .await
        .map_err(|e| crate::Error::from_nats(&format!("cannot subscribe to {what}"), e))?;
    client
        .flush()
        .await
        .map_err(|e| crate::Error::from_nats("cannot reach NATS", e))?;
    Ok(subscriber)
}

fn read_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> ClientResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Unreadable {
        what,
        error: e.to_string(),
    })
}

/// Whether every message got an accepted receipt.
pub fn all_accepted(receipts: &[(Uuid, Option<Receipt>)]) -> bool {
    receipts.iter().all(|(_, r)| {
        r.as_ref()
            .is_some_and(|r| r.status == ReceiptStatus::Accepted)
    })
}

/// An office's live updates.
pub enum OfficeFeed {
    /// From the in-process bus.
    Local(Filtered<OfficeNumber, std::sync::Arc<RecordedEvent>>),
    /// From `kiban.offices.<office>.updates`.
    Nats(async_nats::Subscriber),
}

impl OfficeFeed {
    /// Follows `office`'s updates on `bus` from now on.
    pub async fn connect(bus: &Bus, office: OfficeNumber) -> ClientResult<OfficeFeed> {
        match bus {
            Bus::Local(bus) => Ok(OfficeFeed::Local(bus.subscribe_office(office))),
            Bus::Nats { client, .. } => Self::nats(client, &office).await,
        }
    }

    /// Follows `office`'s updates through a NATS client.
    async fn nats(client: &async_nats::Client, office: &OfficeNumber) -> ClientResult<Self> {
        let subscriber = subscribe_known(
            client,
            office_updates_subject(office),
            "the office's updates",
        )
        .await?;
        Ok(OfficeFeed::Nats(subscriber))
    }

    /// The next update: the notice of an event (docs/nats.md "Office
    /// updates").
    pub async fn next(&mut self) -> ClientResult<UpdateNotice> {
        match self {
            OfficeFeed::Local(updates) => Ok(UpdateNotice::from(updates.next().await?.as_ref())),
            OfficeFeed::Nats(subscriber) => loop {
                let message = subscriber.next().await.ok_or(crate::Error::Closed)?;
                // Person snapshots (docs/nats.md) are not single notices:
                // this feed yields the notices of single events only.
                if !crate::routing::is_snapshot(&message) {
                    return read_json("office update", &message.payload);
                }
            },
        }
    }
}

/// The Japanese name of an event type, for readable output.
pub fn japanese_name(event_type: &str) -> &'static str {
    match event_type {
        "certification.filed" => "要介護認定 申請",
        "certification.investigation_scheduled" => "認定調査 日程決定",
        "certification.investigation_completed" => "認定調査 完了（調査票）",
        "certification.opinion_requested" => "主治医意見書 依頼",
        "certification.opinion_received" => "主治医意見書 受領",
        "certification.primary_judgment_recorded" => "一次判定",
        "certification.secondary_judgment_recorded" => "二次判定（認定審査会）",
        "certification.decided" => "認定 決定",
        "certification.extension_notified" => "処理延期通知",
        "certification.withdrawn" => "申請 取下げ",
        "certification.rejected" => "申請 却下",
        "certification.deadline_reached" => "処理期限（30日）到来",
        "insured.certification_recorded" => "認定結果 記録",
        "insured.renewal_window_opened" => "更新申請 受付開始",
        "insured.copayment_certificate_issued" => "負担割合証 交付",
        "insured.cost_limit_certificate_issued" => "負担限度額認定証 交付",
        "insured.care_plan_office_registered" => "居宅サービス計画作成依頼 届出",
        "insured.care_plan_office_changed" => "居宅介護支援事業所 変更",
        "insured.consent_given" => "閲覧同意",
        "insured.consent_revoked" => "閲覧同意 撤回",
        "insured.consent_expired" => "閲覧同意 期限切れ",
        "insured.record_viewed" => "閲覧記録",
        "insured.own_record_viewed" => "本人による閲覧",
        "insured.moved_house" => "転居",
        "insured.home_modification_cap_reset" => "住宅改修 限度額リセット",
        "insured.home_modification_applied" => "住宅改修 事前申請",
        "insured.home_modification_work_recorded" => "住宅改修 完了",
        "insured.equipment_purchase_recorded" => "福祉用具 購入",
        "office.registered" => "事業所 登録",
        "office.terminal_registered" => "端末 登録",
        "office.terminal_reported_lost" => "端末 紛失届",
        "office.terminal_suspended" => "端末 利用停止",
        "office.terminal_reinstated" => "端末 再開",
        "insurer.onboarded" => "保険者 参加",
        "insurer.standardisation_completed" => "標準化 完了",
        "insurer.data_transmission_completed" => "データ送信 完了",
        "insurer.sharing_enabled" => "情報共有 開始",
        "subsidy.applied" => "補助金 申請",
        "subsidy.review_started" => "補助金 審査開始",
        "subsidy.deficiency_found" => "補助金 不備",
        "subsidy.closed" => "補助金 終了",
        "subsidy.decided" => "補助金 交付決定",
        "subsidy.paid" => "補助金 支払",
        "subsidy.notice_overdue" => "補助金 通知遅延",
        "subsidy.payment_overdue" => "補助金 支払遅延",
        _ => "",
    }
}

/// One readable line for an update: position, time, type (and its
/// Japanese name), stream.
pub fn pretty_line(event: &UpdateNotice) -> String {
    format!(
        "#{:<6} {}  {:<42} {:<18} {}",
        event.position,
        event.occurred_at.format("%Y-%m-%d %H:%M"),
        event.event_type.as_str(),
        japanese_name(event.event_type.as_str()),
        event.stream.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_url_and_never_appear_in_messages() {
        let servers =
            parse_servers("nats://kiban:p%40ss@127.0.0.1:4222, nats://kiban:p%40ss@10.0.0.2:4223")
                .unwrap();
        assert_eq!(
            url_credentials(&servers).unwrap(),
            Some(("kiban".to_owned(), "p@ss".to_owned()))
        );
        let shown = servers_without_credentials(&servers);
        assert_eq!(shown, "127.0.0.1:4222,10.0.0.2:4223");
        assert!(!shown.contains("p%40ss") && !shown.contains("kiban"));

        let plain = parse_servers("nats://127.0.0.1:4222").unwrap();
        assert_eq!(url_credentials(&plain).unwrap(), None);
        let mixed = parse_servers("nats://a:x@127.0.0.1:4222,nats://b:y@127.0.0.1:4223").unwrap();
        assert!(url_credentials(&mixed).is_err());
        assert!(parse_servers(" , ").is_err());
    }
}
