//! The two sides a bus has besides kiban: a municipality (保険者) that
//! publishes status messages and waits for their receipts, and an office
//! (事業所) that follows its live updates. Both work over NATS and over the
//! in-process bus, so `kiban emit`, `kiban subscribe` and `kiban demo`
//! share them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use futures::StreamExt;
use kiban_bus::ingest::{MSG_ID_HEADER, Receipt, ReceiptStatus};
use kiban_bus::local::{Filtered, LocalBus};
use kiban_bus::subjects::{ingest_subject, office_updates_subject, receipt_subject};
use kiban_events::ids::{InsurerNumber, OfficeNumber};
use kiban_events::{EventType, RecordedEvent};
use serde_json::Value;
use uuid::Uuid;

use crate::system::Bus;

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
    pub fn from_json(mut value: Value) -> anyhow::Result<Outgoing> {
        let Some(object) = value.as_object_mut() else {
            bail!("a status message must be a JSON object");
        };
        let event_id = match object.get("event_id") {
            None | Some(Value::Null) => {
                let id = Uuid::now_v7();
                object.insert("event_id".to_owned(), Value::String(id.to_string()));
                id
            }
            Some(Value::String(text)) => text
                .parse()
                .with_context(|| format!("event_id {text:?} is not a UUID"))?,
            Some(other) => bail!("event_id must be a UUID string, not {other}"),
        };
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .context("every status message needs a \"kind\" (e.g. certification.filed)")?;
        let kind = EventType::parse(kind).with_context(|| format!("kind {kind:?}"))?;
        Ok(Outgoing {
            event_id,
            kind,
            body: serde_json::to_vec(&value)?,
        })
    }
}

/// Parses `kiban emit`'s input: one JSON object, a JSON array of them, or
/// JSON lines (one object per line).
pub fn parse_messages(text: &str) -> anyhow::Result<Vec<Outgoing>> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('[') {
        serde_json::from_str(text).context("the input is not a JSON array")?
    } else {
        let mut values = Vec::new();
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            values.push(value.context("the input is not JSON (an object, an array, or lines)")?);
        }
        values
    };
    values.into_iter().map(Outgoing::from_json).collect()
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
    pub async fn connect(bus: &Bus, insurer: InsurerNumber) -> anyhow::Result<Municipality> {
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
    pub async fn nats(
        client: async_nats::Client,
        insurer: InsurerNumber,
    ) -> anyhow::Result<Municipality> {
        let receipts = client
            .subscribe(receipt_subject(&insurer))
            .await
            .context("cannot subscribe to the receipts")?;
        // The subscription must be known to the server before the first
        // publish, or an early receipt is missed.
        client.flush().await.context("cannot reach NATS")?;
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
    pub async fn publish(&self, message: &Outgoing) -> anyhow::Result<()> {
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
                    .context("cannot publish to JetStream")?
                    .await
                    .context("JetStream did not acknowledge the publish")?;
            }
        }
        Ok(())
    }

    /// The next receipt for this insurer.
    pub async fn next_receipt(&mut self) -> anyhow::Result<Receipt> {
        match &mut self.side {
            MunicipalitySide::Local { receipts, .. } => Ok(receipts.next().await?),
            MunicipalitySide::Nats { receipts, .. } => {
                let message = receipts
                    .next()
                    .await
                    .context("the receipt subscription ended")?;
                serde_json::from_slice(&message.payload).context("an unreadable receipt")
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
    ) -> anyhow::Result<Vec<(Uuid, Option<Receipt>)>> {
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
    pub async fn send(&mut self, message: &Outgoing, timeout: Duration) -> anyhow::Result<Receipt> {
        let mut answered = self
            .send_all(std::slice::from_ref(message), timeout)
            .await?;
        match answered.pop() {
            Some((_, Some(receipt))) => Ok(receipt),
            _ => bail!(
                "no receipt for {} within {} s",
                message.event_id,
                timeout.as_secs()
            ),
        }
    }
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
    pub async fn connect(bus: &Bus, office: OfficeNumber) -> anyhow::Result<OfficeFeed> {
        match bus {
            Bus::Local(bus) => Ok(OfficeFeed::Local(bus.subscribe_office(office))),
            Bus::Nats { client, .. } => Self::nats(client, &office).await,
        }
    }

    /// Follows `office`'s updates through a NATS client.
    pub async fn nats(client: &async_nats::Client, office: &OfficeNumber) -> anyhow::Result<Self> {
        let subscriber = client
            .subscribe(office_updates_subject(office))
            .await
            .context("cannot subscribe to the office's updates")?;
        client.flush().await.context("cannot reach NATS")?;
        Ok(OfficeFeed::Nats(subscriber))
    }

    /// The next update.
    pub async fn next(&mut self) -> anyhow::Result<RecordedEvent> {
        match self {
            OfficeFeed::Local(updates) => Ok(updates.next().await?.as_ref().clone()),
            OfficeFeed::Nats(subscriber) => {
                let message = subscriber
                    .next()
                    .await
                    .context("the update subscription ended")?;
                serde_json::from_slice(&message.payload).context("an unreadable office update")
            }
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
pub fn pretty_line(event: &RecordedEvent) -> String {
    format!(
        "#{:<6} {}  {:<42} {:<18} {}",
        event.position,
        event.occurred_at.format("%Y-%m-%d %H:%M"),
        event.event_type.as_str(),
        japanese_name(event.event_type.as_str()),
        event.stream.as_str()
    )
}
