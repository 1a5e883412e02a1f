//! The outbox relay: committed events from the store to `KIBAN_EVENTS`.
//!
//! [`run_relay`] follows the store from its checkpoint and publishes each
//! event, as its JSON envelope, on
//! `kiban.events.<insurer>.<event type>.<stream id>` with
//! `Nats-Msg-Id = event_id` and [`POSITION_HEADER`] = its store position.
//!
//! **The checkpoint is the stream itself** ([`StreamCheckpoint`]): the
//! position header of the last message in `KIBAN_EVENTS`. It is exact
//! because the relay is the only publisher of the stream and publishes in
//! position order with no gaps, which JetStream enforces: every publish
//! carries `Nats-Expected-Last-Sequence`, so a message whose predecessor did
//! not make it into the stream is refused instead of stored out of order. A
//! crash anywhere therefore restarts exactly after the last stored event:
//! nothing is missed, nothing is stored twice (and the duplicate window
//! catches a re-publish racing a crashed relay's last in-flight messages).
//!
//! Publishes are pipelined (at most [`RELAY_PUBLISHES_IN_FLIGHT_MAX`]
//! unacknowledged); their acks are awaited in order, and any failure
//! restarts the relay from the stream's tail.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishError};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kiban_events::ids::InsurerNumber;
use kiban_events::{Actor, Position, RecordedEvent};
use kiban_store::EventStore;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ingest::MSG_ID_HEADER;
use crate::retry::restart_until_cancelled;
use crate::subjects::{CHECKPOINTS_STREAM, EVENTS_STREAM, checkpoint_subject, event_subject};

/// The header carrying an event's store position on `KIBAN_EVENTS`.
pub const POSITION_HEADER: &str = "Kiban-Position";

/// JetStream's optimistic-concurrency header: the stream's last sequence
/// must be this for the message to be stored.
const EXPECTED_LAST_SEQUENCE_HEADER: &str = "Nats-Expected-Last-Sequence";

/// The relay's checkpoint name.
pub const RELAY_CHECKPOINT: &str = "outbox-relay";

/// Most publishes awaiting their JetStream ack. Pipelining keeps the relay
/// at the server's pace instead of one round trip per event; the bound
/// limits what is re-published after a failure and the memory held.
pub const RELAY_PUBLISHES_IN_FLIGHT_MAX: usize = 256;

/// Where a follower of the store keeps the position it has handled.
pub trait Checkpoints: Send + Sync {
    /// The last position handled under `name`, `None` before the first.
    fn load(&self, name: &str) -> impl Future<Output = Result<Option<Position>>> + Send;

    /// Records that everything up to `position` was handled under `name`.
    fn save(&self, name: &str, position: Position) -> impl Future<Output = Result<()>> + Send;
}

/// The relay's checkpoint, read from `KIBAN_EVENTS` itself (see the module
/// documentation). `save` does nothing: publishing an event moves it.
#[derive(Debug, Clone)]
pub struct StreamCheckpoint {
    context: jetstream::Context,
}

/// The end of `KIBAN_EVENTS`: its last sequence and the store position of
/// the message there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTail {
    /// The stream's last sequence (0 when empty).
    pub last_sequence: u64,
    /// The position header of that message (`None` when empty).
    pub position: Option<Position>,
}

impl StreamCheckpoint {
    /// The checkpoint of the relay publishing through `context`.
    pub fn new(context: jetstream::Context) -> Self {
        Self { context }
    }

    /// Reads the stream's tail.
    pub async fn tail(&self) -> Result<StreamTail> {
        let mut stream = self
            .context
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|error| Error::from_nats("looking up the events stream", error))?;
        let last_sequence = stream
            .info()
            .await
            .map_err(|error| Error::from_nats("reading the events stream", error))?
            .state
            .last_sequence;
        if last_sequence == 0 {
            return Ok(StreamTail {
                last_sequence,
                position: None,
            });
        }
        let message = stream
            .get_raw_message(last_sequence)
            .await
            .map_err(|error| Error::from_nats("reading the last event message", error))?;
        let position = message
            .headers
            .get(POSITION_HEADER)
            .and_then(|value| value.as_str().parse::<Position>().ok())
            .ok_or_else(|| {
                Error::Foreign(format!(
                    "message {last_sequence} of {EVENTS_STREAM} has no {POSITION_HEADER} header: only the relay may publish there"
                ))
            })?;
        Ok(StreamTail {
            last_sequence,
            position: Some(position),
        })
    }
}

impl Checkpoints for StreamCheckpoint {
    async fn load(&self, _name: &str) -> Result<Option<Position>> {
        Ok(self.tail().await?.position)
    }

    async fn save(&self, _name: &str, _position: Position) -> Result<()> {
        Ok(())
    }
}

/// Checkpoints in files, one per name, in a directory; each save replaces
/// the file atomically (write, fsync, rename).
#[derive(Debug, Clone)]
pub struct FileCheckpoints {
    directory: PathBuf,
}

impl FileCheckpoints {
    /// Checkpoints kept in `directory` (created when missing).
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.position"))
    }
}

impl Checkpoints for FileCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>> {
        match tokio::fs::read_to_string(self.path(name)).await {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                Error::Checkpoint(format!(
                    "{} does not hold a position",
                    self.path(name).display()
                ))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Error::Checkpoint(error.to_string())),
        }
    }

    async fn save(&self, name: &str, position: Position) -> Result<()> {
        let io = |error: std::io::Error| Error::Checkpoint(error.to_string());
        tokio::fs::create_dir_all(&self.directory)
            .await
            .map_err(io)?;
        let temporary = self.directory.join(format!("{name}.position.tmp"));
        let mut file = tokio::fs::File::create(&temporary).await.map_err(io)?;
        tokio::io::AsyncWriteExt::write_all(&mut file, position.to_string().as_bytes())
            .await
            .map_err(io)?;
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&temporary, self.path(name))
            .await
            .map_err(io)
    }
}

/// Checkpoints in the JetStream stream [`CHECKPOINTS_STREAM`] (created by
/// [`crate::streams::ensure_streams`]): one subject per name, of which the
/// stream keeps only the last message — a key-value bucket made by hand,
/// because the NATS client's own buckets need nats-server 2.10 and Debian 12
/// ships 2.9. Shared by every engine of a deployment, so that the engine
/// that becomes the writer continues where the old one stopped. A name the
/// stream does not hold yet is read from `fallback` (the file checkpoints
/// of a deployment from before the stream).
#[derive(Debug, Clone)]
pub struct SharedCheckpoints {
    context: jetstream::Context,
    stream: Arc<tokio::sync::OnceCell<jetstream::stream::Stream>>,
    fallback: Option<FileCheckpoints>,
}

impl SharedCheckpoints {
    /// Checkpoints over `client`'s JetStream, falling back to `fallback`
    /// for a name not yet in the stream.
    pub fn new(client: async_nats::Client, fallback: Option<FileCheckpoints>) -> Self {
        Self {
            context: jetstream::new(client),
            stream: Arc::new(tokio::sync::OnceCell::new()),
            fallback,
        }
    }

    async fn stream(&self) -> Result<&jetstream::stream::Stream> {
        self.stream
            .get_or_try_init(|| async {
                self.context
                    .get_stream(CHECKPOINTS_STREAM)
                    .await
                    .map_err(|error| Error::from_nats("looking up the checkpoint stream", error))
            })
            .await
    }
}

impl Checkpoints for SharedCheckpoints {
    async fn load(&self, name: &str) -> Result<Option<Position>> {
        let found = self
            .stream()
            .await?
            .get_last_raw_message_by_subject(&checkpoint_subject(name))
            .await;
        match found {
            Ok(message) => std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(Some)
                .ok_or_else(|| Error::Checkpoint(format!("checkpoint {name} holds no position"))),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {
                match &self.fallback {
                    Some(files) => files.load(name).await,
                    None => Ok(None),
                }
            }
            Err(error) => Err(Error::from_nats("reading a checkpoint", error)),
        }
    }

    async fn save(&self, name: &str, position: Position) -> Result<()> {
        self.context
            .publish(checkpoint_subject(name), position.to_string().into())
            .await
            .map_err(|error| Error::from_nats("saving a checkpoint", error))?
            .await
            .map_err(|error| Error::from_nats("saving a checkpoint (ack)", error))?;
        Ok(())
    }
}

/// The insurer an event concerns: its payload's `insurer` field, else the
/// actor's insurer.
pub fn insurer_of(event: &RecordedEvent) -> Option<InsurerNumber> {
    #[derive(Deserialize)]
    struct InsurerField {
        insurer: Option<InsurerNumber>,
    }
    let from_payload = event
        .payload
        .parse::<InsurerField>()
        .ok()
        .and_then(|field| field.insurer);
    from_payload.or_else(|| match &event.actor {
        Actor::Insurer(insurer) => Some(insurer.clone()),
        _ => None,
    })
}

/// Runs the relay until `cancel` fires, restarting from the stream's tail
/// after any failure of NATS or the store (after a pause that grows while
/// the failure lasts, [`crate::retry`]). Returns `Err` only when the
/// stream holds something the relay did not publish ([`Error::Foreign`]).
pub async fn run_relay<S: EventStore>(
    client: async_nats::Client,
    store: S,
    cancel: CancellationToken,
) -> Result<()> {
    let context = jetstream::new(client);
    let checkpoint = StreamCheckpoint::new(context.clone());
    restart_until_cancelled(
        "outbox relay",
        &cancel,
        |error| matches!(error, Error::Foreign(_)),
        || relay_from_tail(&context, &checkpoint, &store, &cancel),
    )
    .await
}

/// One run: from the tail until cancelled (`Ok`) or a failure (`Err`).
async fn relay_from_tail<S: EventStore>(
    context: &jetstream::Context,
    checkpoint: &StreamCheckpoint,
    store: &S,
    cancel: &CancellationToken,
) -> Result<()> {
    let tail = checkpoint.tail().await?;
    let mut last_sequence = tail.last_sequence;
    let mut events = store.subscribe(tail.position.map_or(1, |position| position + 1));
    let mut acks = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Let what is in flight land, so a clean stop leaves nothing
                // to re-publish.
                while let Some(ack) = acks.next().await {
                    settle(ack)?;
                }
                return Ok(());
            }
            Some(ack) = acks.next(), if !acks.is_empty() => settle(ack)?,
            event = events.next(), if acks.len() < RELAY_PUBLISHES_IN_FLIGHT_MAX => {
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => return Err(Error::Source(error.to_string())),
                    None => return Err(Error::Source("the store subscription ended".to_owned())),
                };
                let ack = publish(context, &event, last_sequence).await?;
                last_sequence += 1;
                acks.push_back(async move { (event.position, ack.await) });
            }
        }
    }
}

fn settle(
    (position, ack): (
        Position,
        std::result::Result<jetstream::publish::PublishAck, PublishError>,
    ),
) -> Result<()> {
    let ack = ack.map_err(|error| {
        Error::from_nats(
            &format!("publishing the event at position {position}"),
            error,
        )
    })?;
    if ack.duplicate {
        // The stream did not grow, so the expected sequences of the
        // publishes behind this one are off: restart from the tail.
        return Err(Error::Unavailable(format!(
            "the event at position {position} was already in {EVENTS_STREAM}"
        )));
    }
    Ok(())
}

async fn publish(
    context: &jetstream::Context,
    event: &RecordedEvent,
    expected_last_sequence: u64,
) -> Result<PublishAckFuture> {
    let subject = event_subject(insurer_of(event).as_ref(), &event.event_type, &event.stream);
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, event.event_id.to_string().as_str());
    headers.insert(POSITION_HEADER, event.position.to_string().as_str());
    headers.insert(
        EXPECTED_LAST_SEQUENCE_HEADER,
        expected_last_sequence.to_string().as_str(),
    );
    let body = serde_json::to_vec(event).expect("a recorded event serialises");
    context
        .publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|error| Error::from_nats("publishing an event", error))
}
