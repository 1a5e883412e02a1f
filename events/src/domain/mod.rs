//! The care workflows as pure deciders (DESIGN.md decision 5).
//!
//! Every aggregate has the same shape, the [`Decider`] trait:
//! `decide(&State, &Command, now) -> Result<Vec<Event>, Rejection>` and
//! `evolve(State, &Event) -> State`. Nothing here does IO or reads a clock:
//! `now`, and whatever a decision needs to look up elsewhere (the current
//! certification of a renewal, whether a seller is designated), come in as
//! values. Business dates are Japanese calendar dates: [`jst_date`] turns
//! `now` into one with a fixed +09:00 offset.
//!
//! Layout:
//!
//! - [`values`]: validated value types ([`CareLevel`], [`CopaymentRatio`],
//!   [`Yen`], [`DocumentRef`], [`ServiceTypeCode`], [`SealedValue`], ...).
//! - [`dates`]: the calendar arithmetic of the rules (validity periods that
//!   end on a month end, fiscal years, 7/31 certificates).
//! - [`rejection`]: [`Rejection`] and its stable [`RejectionCode`]s.
//! - [`event`]: the [`DomainEvent`] trait, the envelope conversion
//!   (`to_payload` / `from_recorded`) and the event catalog.
//! - one module per aggregate: [`certification`], [`insured`], [`office`],
//!   [`insurer`], [`subsidy`].
//! - [`upcast`]: the upcaster chain that reads older payload versions.
//! - [`catalog`]: renders `docs/events.md` from the code.
//! - [`testing`]: the given / when / then helper every decider test uses.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

pub mod catalog;
pub mod certification;
pub mod dates;
pub mod event;
pub mod insured;
pub mod insurer;
pub mod office;
pub mod rejection;
pub mod subsidy;
pub mod testing;
pub mod upcast;
pub mod values;

pub use catalog::catalog_markdown;
pub use event::{DecodeError, DomainEvent, Emitter, EventSpec, FieldSpec};
pub use rejection::{Rejection, RejectionCode};
pub use values::{
    CareLevel, CopaymentRatio, CostLimitStage, DocumentRef, EquipmentCategory, LevelGroup,
    PERSONAL_FIELDS, SealedValue, ServiceTypeCode, Sha256Digest, TerminalId, ValueError, Yen,
};

/// One aggregate's workflow: what it decides and how its state follows its
/// events.
///
/// Implemented by a unit struct per aggregate (`CertificationApplication`,
/// `InsuredPerson`, ...). The engine loads the stream, folds it with
/// [`Decider::evolve`] from `State::default()`, calls [`Decider::decide`]
/// and appends what it returns.
pub trait Decider {
    /// The state folded from the stream; `Default` is the empty stream.
    type State: Default + Clone + PartialEq + std::fmt::Debug;
    /// What may be asked of the aggregate.
    type Command: std::fmt::Debug;
    /// What the aggregate records.
    type Event: DomainEvent;

    /// Checks `command` against `state` and the rules; returns the events to
    /// record, or why not. `now` is the time of the decision.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// Applies one recorded event. Never fails: a recorded event is a fact.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds a whole stream from the empty state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |state, event| {
                Self::evolve(state, event)
            })
    }
}

/// Japan Standard Time: a fixed +09:00 offset (Japan has no daylight saving).
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset")
}

/// The Japanese calendar date at `now`.
pub fn jst_date(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&jst()).date_naive()
}

/// How far back a date of the world (an application date, a move, a
/// receipt) may lie before the command's day, in months **[ours]**: two
/// years, the limitation of benefit claims (介護保険法第200条, 消滅時効 2年),
/// so nothing older can still be reported as it happens. Older facts are
/// history, loaded in the insurer's back-fill with their own `occurred_at`
/// (docs/integration.md "Back-filling"), where the command's day is the
/// fact's own.
pub const REPORT_AGE_MAX_MONTHS: u32 = 24;

/// The earliest date a command on `today` may carry
/// ([`REPORT_AGE_MAX_MONTHS`] before it).
pub fn earliest_reportable(today: NaiveDate) -> NaiveDate {
    today
        .checked_sub_months(chrono::Months::new(REPORT_AGE_MAX_MONTHS))
        .unwrap_or(NaiveDate::MIN)
}

/// Rejects a date of the world the platform cannot take on `today`: after
/// today (`date_in_future`), or more than [`REPORT_AGE_MAX_MONTHS`] before
/// it (`date_too_far_in_past`).
pub(crate) fn not_in_future(date: NaiveDate, today: NaiveDate) -> Result<(), Rejection> {
    rejection::reject_if!(
        date > today,
        DateInFuture,
        format!("The date {date} is in the future (today is {today})."),
        format!("日付 {date} が未来です（本日は {today}）。")
    );
    let earliest = earliest_reportable(today);
    rejection::reject_if!(
        date < earliest,
        DateTooFarInPast,
        format!(
            "The date {date} lies more than two years before {today} (the earliest is {earliest}); \
             load history in a back-fill with each fact's own occurred_at."
        ),
        format!(
            "日付 {date} は {today} の2年以上前です（{earliest} 以降）。過去の記録は一括移行（バックフィル）で登録してください。"
        )
    );
    Ok(())
}

/// The first and last dates a command may carry **[ours]**: far around any
/// real certification, and it keeps date arithmetic away from chrono's limits
/// whatever a producer sends.
pub const DATES_ACCEPTED: std::ops::RangeInclusive<NaiveDate> =
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap()..=NaiveDate::from_ymd_opt(2099, 12, 31).unwrap();

/// Rejects dates outside [`DATES_ACCEPTED`].
pub(crate) fn plausible(dates: &[NaiveDate]) -> Result<(), Rejection> {
    for date in dates {
        rejection::reject_if!(
            !DATES_ACCEPTED.contains(date),
            DateOutOfRange,
            format!("The date {date} lies outside 2000-01-01 to 2099-12-31."),
            format!("日付 {date} は2000年1月1日から2099年12月31日の範囲外です。")
        );
    }
    Ok(())
}

/// Longest free-text reason, in characters: a sentence or two in a clerk's
/// words. Bounds the payload, which must stay far below the envelope's limit.
pub const REASON_CHARS_MAX: usize = 500;

/// Most items in one list of a command (service types, designation notices,
/// receipt lines): far above any real office, and it bounds the payload.
pub const LIST_ITEMS_MAX: usize = 100;

/// Rejects an empty or over-long reason.
pub(crate) fn reason_given(reason: &str, what: &str, what_ja: &str) -> Result<(), Rejection> {
    rejection::reject_if!(
        reason.trim().is_empty(),
        ReasonMissing,
        format!("{what} must state the reason."),
        format!("{what_ja}には理由が必要です。")
    );
    reason_within_limit(reason)
}

/// Rejects a reason longer than [`REASON_CHARS_MAX`].
pub(crate) fn reason_within_limit(reason: &str) -> Result<(), Rejection> {
    let chars = reason.chars().count();
    rejection::reject_if!(
        chars > REASON_CHARS_MAX,
        ReasonTooLong,
        format!("The reason is {chars} characters; at most {REASON_CHARS_MAX} are accepted."),
        format!("理由が {chars} 文字です。{REASON_CHARS_MAX} 文字以内にしてください。")
    );
    Ok(())
}

/// Rejects a list longer than [`LIST_ITEMS_MAX`].
pub(crate) fn list_within_limit(len: usize, what: &str) -> Result<(), Rejection> {
    rejection::reject_if!(
        len > LIST_ITEMS_MAX,
        TooManyItems,
        format!("{len} {what} were given; at most {LIST_ITEMS_MAX} are accepted."),
        format!("{what} が {len} 件あります。{LIST_ITEMS_MAX} 件以内にしてください。")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn jst_date_turns_over_at_fifteen_utc() {
        let before = Utc.with_ymd_and_hms(2026, 3, 31, 14, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 31, 15, 0, 0).unwrap();
        assert_eq!(
            jst_date(before),
            NaiveDate::from_ymd_opt(2026, 3, 31).unwrap()
        );
        assert_eq!(
            jst_date(after),
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()
        );
    }
}
