//! The insurer's rollout onto the platform (DOMAIN.md "Insurer rollout").
//!
//! Stream: `insurer/<insurer-number>`. An insurer is onboarded, completes the
//! standardisation of its municipal system (deadline 2027-01-01), then
//! completes its data transmission; from that moment sharing is enabled and
//! offices may see its people ([`InsurerState::sharing_enabled`]). Before it,
//! nothing about that insurer's people is visible to offices.

use chrono::{DateTime, NaiveDate, Utc};

use super::event::domain_events;
use super::rejection::reject_if;
use super::{Decider, Rejection, jst_date, not_in_future};
use crate::envelope::StreamName;
use crate::ids::InsurerNumber;

/// The platform's start (介護情報基盤稼働開始日, 2026-04-01) **[seed]**: no data
/// transmission completes before it.
pub const PLATFORM_START: NaiveDate = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();

/// The standardisation deadline (標準化対応の適合基準日, 2027-01-01) **[seed]**:
/// 「令和9年1月1日までに完了」 — the date itself is on time; late is from
/// 2027-01-02.
pub const STANDARDISATION_DEADLINE: NaiveDate = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();

/// Full operation of the platform (本格運用開始日, 2028-04-01) **[seed]**.
pub const FULL_OPERATION: NaiveDate = NaiveDate::from_ymd_opt(2028, 4, 1).unwrap();

/// The stream of an insurer: `insurer/<insurer>`.
pub fn insurer_stream(insurer: &InsurerNumber) -> StreamName {
    StreamName::new("insurer", insurer.as_str()).expect("insurer numbers are valid stream ids")
}

domain_events! {
    /// What happens to an insurer's rollout.
    pub enum InsurerEvent {
        /// The insurer (保険者) joined the platform.
        InsurerOnboarded = "insurer.onboarded", v 1, by [Federation],
            label "保険者 参加" / "Insurer onboarded" {
            /// The insurer number.
            insurer: InsurerNumber,
            /// The day it joined.
            onboarded_on: NaiveDate,
        }
        /// The municipal care-insurance system was standardised (標準化対応).
        StandardisationCompleted = "insurer.standardisation_completed", v 1, by [Insurer, Federation],
            label "標準化 完了" / "Standardisation completed" {
            /// The day it completed.
            completed_on: NaiveDate,
            /// Whether it completed after the deadline of 2027-01-01.
            after_deadline: bool,
        }
        /// The insurer's data transmission to the platform completed.
        DataTransmissionCompleted = "insurer.data_transmission_completed", v 1, by [Insurer, Federation],
            label "データ送信 完了" / "Data transmission completed" {
            /// The day it completed.
            completed_on: NaiveDate,
        }
        /// Sharing of the insurer's people with offices is on.
        SharingEnabled = "insurer.sharing_enabled", v 1, by [Insurer, Federation],
            label "情報共有 開始" / "Sharing enabled" {
            /// The day sharing started.
            enabled_on: NaiveDate,
        }
        /// The insurer started loading its history (過去データの一括移行): until it
        /// completes, its messages may carry facts of any age, and the timers
        /// hold what those facts schedule (docs/integration.md "Back-filling").
        BackfillStarted = "insurer.backfill_started", v 1, by [Insurer],
            label "過去データ移行 開始" / "Back-fill started" {
            /// The day it started.
            started_on: NaiveDate,
        }
        /// The insurer finished loading its history: the timers judge what
        /// the back-fill scheduled against the state as loaded.
        BackfillCompleted = "insurer.backfill_completed", v 1, by [Insurer],
            label "過去データ移行 完了" / "Back-fill completed" {
            /// The day it completed.
            completed_on: NaiveDate,
        }
    }
}

/// What may be asked of an insurer's rollout.
/// Deserialisable so that a municipality's status message can name a command
/// by its snake_case variant name with the variant's fields as a JSON object
/// (`kiban-engine`'s ingest translation; `docs/integration.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InsurerCommand {
    /// Onboard the insurer.
    Onboard {
        /// The insurer number.
        insurer: InsurerNumber,
    },
    /// Record that the municipal system is standardised.
    CompleteStandardisation {
        /// The day it completed.
        completed_on: NaiveDate,
    },
    /// Record that the data transmission completed; this enables sharing.
    CompleteDataTransmission {
        /// The day it completed.
        completed_on: NaiveDate,
    },
    /// Start loading the insurer's history (a back-fill): until it
    /// completes, messages may carry facts older than two years and the
    /// timers hold what they schedule. The body is empty (`{}`).
    StartBackfill {},
    /// Complete the back-fill: the timers judge what it scheduled against
    /// the state as loaded. The body is empty (`{}`).
    CompleteBackfill {},
}

/// The folded state of an insurer's rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InsurerState {
    /// The insurer, once onboarded.
    pub insurer: Option<InsurerNumber>,
    /// When the standardisation completed.
    pub standardised_on: Option<NaiveDate>,
    /// When the data transmission completed.
    pub transmitted_on: Option<NaiveDate>,
    /// When sharing was enabled.
    pub sharing_enabled_on: Option<NaiveDate>,
    /// Whether a back-fill of the insurer's history is open.
    pub backfilling: bool,
}

impl InsurerState {
    /// Whether offices may see this insurer's people.
    pub fn sharing_enabled(&self) -> bool {
        self.sharing_enabled_on.is_some()
    }

    /// Whether the standardisation deadline has passed without it (the
    /// deadline day itself is still on time).
    pub fn standardisation_overdue(&self, today: NaiveDate) -> bool {
        self.insurer.is_some() && self.standardised_on.is_none() && today > STANDARDISATION_DEADLINE
    }

    /// Whether the platform's full operation (本格運用開始日, 2028-04-01)
    /// has begun without this insurer's data transmission: from that day
    /// every onboarded insurer is expected to share **[ours, from the seed's
    /// schedule]**.
    pub fn transmission_missing_at_full_operation(&self, today: NaiveDate) -> bool {
        self.insurer.is_some() && self.transmitted_on.is_none() && today >= FULL_OPERATION
    }
}

/// The insurer decider.
#[derive(Debug, Clone, Copy)]
pub struct Insurer;

impl Decider for Insurer {
    type State = InsurerState;
    type Command = InsurerCommand;
    type Event = InsurerEvent;

    fn decide(
        state: &InsurerState,
        command: &InsurerCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<InsurerEvent>, Rejection> {
        let today = jst_date(now);
        if let InsurerCommand::Onboard { insurer } = command {
            reject_if!(
                state.insurer.is_some(),
                InsurerAlreadyOnboarded,
                "This insurer is already onboarded.",
                "この保険者は登録済みです。"
            );
            return Ok(vec![
                InsurerOnboarded {
                    insurer: insurer.clone(),
                    onboarded_on: today,
                }
                .into(),
            ]);
        }
        reject_if!(
            state.insurer.is_none(),
            InsurerNotOnboarded,
            "This insurer is not onboarded on the platform.",
            "この保険者は介護情報基盤に登録されていません。"
        );
        match command {
            InsurerCommand::Onboard { .. } => unreachable!("handled above"),
            InsurerCommand::CompleteStandardisation { completed_on } => {
                not_in_future(*completed_on, today)?;
                reject_if!(
                    state.standardised_on.is_some(),
                    StandardisationAlreadyCompleted,
                    "The standardisation of this insurer's system is already recorded.",
                    "標準化対応の完了は記録済みです。"
                );
                Ok(vec![
                    StandardisationCompleted {
                        completed_on: *completed_on,
                        after_deadline: *completed_on > STANDARDISATION_DEADLINE,
                    }
                    .into(),
                ])
            }
            InsurerCommand::CompleteDataTransmission { completed_on } => {
                complete_data_transmission(state, *completed_on, today)
            }
            InsurerCommand::StartBackfill {} => {
                reject_if!(
                    state.backfilling,
                    BackfillAlreadyStarted,
                    "A back-fill of this insurer's history is already open.",
                    "過去データの一括移行はすでに開始されています。"
                );
                Ok(vec![BackfillStarted { started_on: today }.into()])
            }
            InsurerCommand::CompleteBackfill {} => {
                reject_if!(
                    !state.backfilling,
                    BackfillNotStarted,
                    "This insurer has no open back-fill to complete.",
                    "開始された過去データの一括移行がありません。"
                );
                Ok(vec![
                    BackfillCompleted {
                        completed_on: today,
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut state: InsurerState, event: &InsurerEvent) -> InsurerState {
        match event {
            InsurerEvent::InsurerOnboarded(e) => state.insurer = Some(e.insurer.clone()),
            InsurerEvent::StandardisationCompleted(e) => {
                state.standardised_on = Some(e.completed_on)
            }
            InsurerEvent::DataTransmissionCompleted(e) => {
                state.transmitted_on = Some(e.completed_on)
            }
            InsurerEvent::SharingEnabled(e) => state.sharing_enabled_on = Some(e.enabled_on),
            InsurerEvent::BackfillStarted(_) => state.backfilling = true,
            InsurerEvent::BackfillCompleted(_) => state.backfilling = false,
        }
        state
    }
}

/// Data transmission follows the standardisation, not before the platform
/// starts, and turns sharing on in the same decision.
fn complete_data_transmission(
    state: &InsurerState,
    completed_on: NaiveDate,
    today: NaiveDate,
) -> Result<Vec<InsurerEvent>, Rejection> {
    not_in_future(completed_on, today)?;
    reject_if!(
        state.standardised_on.is_none(),
        StandardisationNotCompleted,
        "Data transmission can only complete after the system standardisation.",
        "データ送信は標準化対応の完了後に行います。"
    );
    reject_if!(
        state.transmitted_on.is_some(),
        DataTransmissionAlreadyCompleted,
        "The data transmission of this insurer is already recorded.",
        "データ送信の完了は記録済みです。"
    );
    reject_if!(
        completed_on < PLATFORM_START,
        PlatformNotStarted,
        "Data transmission cannot complete before the platform starts on 2026-04-01.",
        "介護情報基盤の稼働開始日（2026年4月1日）より前にデータ送信は完了できません。"
    );
    Ok(vec![
        DataTransmissionCompleted { completed_on }.into(),
        SharingEnabled {
            enabled_on: completed_on,
        }
        .into(),
    ])
}
