//! The care office and its terminals (DOMAIN.md "Office onboarding and
//! terminals").
//!
//! Stream: `office/<office-number>`. An office is registered with its service
//! types (from its designation notices); each terminal is registered with a
//! reference to its credential — the SHA-256 fingerprint of the client
//! certificate installed on it, never a password or the access code itself.
//! A terminal reported lost or stolen is suspended at once, in the same
//! decision; it is reinstated only with a new credential.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::event::domain_events;
use super::rejection::reject_if;
use super::{
    Decider, Rejection, ServiceTypeCode, Sha256Digest, TerminalId, jst_date, list_within_limit,
};
use crate::envelope::StreamName;
use crate::ids::OfficeNumber;

/// The stream of an office: `office/<office>`.
pub fn office_stream(office: &OfficeNumber) -> StreamName {
    StreamName::new("office", office.as_str()).expect("office numbers are valid stream ids")
}

/// How a terminal went missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Loss {
    /// 紛失.
    Lost,
    /// 盗難.
    Stolen,
}

domain_events! {
    /// What happens to a care office and its terminals.
    pub enum OfficeEvent {
        /// The office was registered on the platform with its service types.
        OfficeRegistered = "office.registered", v 1, by [Federation],
            label "事業所 登録" / "Office registered" {
            /// The office number (介護保険事業所番号).
            office: OfficeNumber,
            /// The service types (サービス種類コード) it is designated for.
            service_types: Vec<ServiceTypeCode>,
            /// The day of registration.
            registered_on: NaiveDate,
        }
        /// A terminal of the office was registered.
        TerminalRegistered = "office.terminal_registered", v 1, by [Office, Federation],
            label "端末 登録" / "Terminal registered" {
            /// The terminal id (アクセスコード／端末固有ID).
            terminal: TerminalId,
            /// SHA-256 fingerprint of the terminal's client certificate.
            credential: Sha256Digest,
            /// The day of registration.
            registered_on: NaiveDate,
        }
        /// The office reported a terminal lost or stolen.
        TerminalReportedLost = "office.terminal_reported_lost", v 1, by [Office, Federation],
            label "端末 紛失届" / "Terminal reported lost" {
            /// The terminal.
            terminal: TerminalId,
            /// Lost or stolen.
            loss: Loss,
            /// The day of the report.
            reported_on: NaiveDate,
        }
        /// The terminal's credentials were suspended: it can no longer sign in
        /// (at once when the office itself reports the terminal lost).
        TerminalSuspended = "office.terminal_suspended", v 1, by [Office, Federation, System],
            label "端末 利用停止" / "Terminal suspended" {
            /// The terminal.
            terminal: TerminalId,
            /// The day of suspension.
            suspended_on: NaiveDate,
        }
        /// A suspended terminal was reinstated with a new credential.
        TerminalReinstated = "office.terminal_reinstated", v 1, by [Federation],
            label "端末 再開" / "Terminal reinstated" {
            /// The terminal.
            terminal: TerminalId,
            /// SHA-256 fingerprint of the new client certificate.
            credential: Sha256Digest,
            /// The day of reinstatement.
            reinstated_on: NaiveDate,
        }
    }
}

/// What may be asked of an office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficeCommand {
    /// Register the office.
    Register {
        /// The office number.
        office: OfficeNumber,
        /// Its service types, at least one, no duplicates.
        service_types: Vec<ServiceTypeCode>,
    },
    /// Register a terminal.
    RegisterTerminal {
        /// The terminal id.
        terminal: TerminalId,
        /// Fingerprint of its client certificate.
        credential: Sha256Digest,
    },
    /// Report a terminal lost or stolen; suspends it at once.
    ReportTerminalLost {
        /// The terminal.
        terminal: TerminalId,
        /// Lost or stolen.
        loss: Loss,
        /// The office terminal that reports (the caller's, put in by
        /// whoever builds the command from its principal), or `None` when
        /// the portal reports as the federation: a terminal may not report
        /// the office's last other active terminal
        /// ([`RejectionCode::LastOtherTerminal`](super::RejectionCode)).
        reported_by: Option<TerminalId>,
    },
    /// Reinstate a suspended terminal with a new credential.
    ReinstateTerminal {
        /// The terminal.
        terminal: TerminalId,
        /// Fingerprint of the new client certificate.
        credential: Sha256Digest,
    },
}

/// A terminal's folded state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// Fingerprint of its current client certificate.
    pub credential: Sha256Digest,
    /// Whether its credentials are suspended.
    pub suspended: bool,
}

/// The folded state of an office.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OfficeState {
    /// The office number, once registered.
    pub office: Option<OfficeNumber>,
    /// Its service types.
    pub service_types: Vec<ServiceTypeCode>,
    /// Its terminals.
    pub terminals: BTreeMap<TerminalId, Terminal>,
}

impl OfficeState {
    /// Whether `terminal` is registered and not suspended: the API lets only
    /// such terminals in.
    pub fn terminal_active(&self, terminal: &TerminalId) -> bool {
        self.terminals.get(terminal).is_some_and(|t| !t.suspended)
    }
}

/// The office decider.
#[derive(Debug, Clone, Copy)]
pub struct Office;

impl Decider for Office {
    type State = OfficeState;
    type Command = OfficeCommand;
    type Event = OfficeEvent;

    fn decide(
        state: &OfficeState,
        command: &OfficeCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<OfficeEvent>, Rejection> {
        let today = jst_date(now);
        if let OfficeCommand::Register {
            office,
            service_types,
        } = command
        {
            return register(state, office, service_types, today);
        }
        reject_if!(
            state.office.is_none(),
            OfficeNotRegistered,
            "This office is not registered on the platform.",
            "この事業所は介護情報基盤に登録されていません。"
        );
        match command {
            OfficeCommand::Register { .. } => unreachable!("handled above"),
            OfficeCommand::RegisterTerminal {
                terminal,
                credential,
            } => {
                reject_if!(
                    state.terminals.contains_key(terminal),
                    TerminalAlreadyRegistered,
                    format!("Terminal {terminal} is already registered."),
                    format!("端末 {terminal} は登録済みです。")
                );
                Ok(vec![
                    TerminalRegistered {
                        terminal: terminal.clone(),
                        credential: credential.clone(),
                        registered_on: today,
                    }
                    .into(),
                ])
            }
            OfficeCommand::ReportTerminalLost {
                terminal,
                loss,
                reported_by,
            } => report_lost(state, terminal, *loss, reported_by.as_ref(), today),
            OfficeCommand::ReinstateTerminal {
                terminal,
                credential,
            } => reinstate(state, terminal, credential, today),
        }
    }

    fn evolve(mut state: OfficeState, event: &OfficeEvent) -> OfficeState {
        match event {
            OfficeEvent::OfficeRegistered(e) => {
                state.office = Some(e.office.clone());
                state.service_types = e.service_types.clone();
            }
            OfficeEvent::TerminalRegistered(e) => {
                state.terminals.insert(
                    e.terminal.clone(),
                    Terminal {
                        credential: e.credential.clone(),
                        suspended: false,
                    },
                );
            }
            OfficeEvent::TerminalReportedLost(_) => {}
            OfficeEvent::TerminalSuspended(e) => {
                if let Some(terminal) = state.terminals.get_mut(&e.terminal) {
                    terminal.suspended = true;
                }
            }
            OfficeEvent::TerminalReinstated(e) => {
                state.terminals.insert(
                    e.terminal.clone(),
                    Terminal {
                        credential: e.credential.clone(),
                        suspended: false,
                    },
                );
            }
        }
        state
    }
}

fn register(
    state: &OfficeState,
    office: &OfficeNumber,
    service_types: &[ServiceTypeCode],
    today: NaiveDate,
) -> Result<Vec<OfficeEvent>, Rejection> {
    reject_if!(
        state.office.is_some(),
        OfficeAlreadyRegistered,
        "This office is already registered.",
        "この事業所は登録済みです。"
    );
    reject_if!(
        service_types.is_empty(),
        ServiceTypesMissing,
        "An office needs at least one service type from its designation notice.",
        "指定通知書のサービス種類が少なくとも一つ必要です。"
    );
    list_within_limit(service_types.len(), "service types")?;
    let mut seen = std::collections::BTreeSet::new();
    for code in service_types {
        reject_if!(
            !seen.insert(code),
            ServiceTypeDuplicated,
            format!("Service type {code} is listed twice."),
            format!("サービス種類 {code} が重複しています。")
        );
    }
    Ok(vec![
        OfficeRegistered {
            office: office.clone(),
            service_types: service_types.to_vec(),
            registered_on: today,
        }
        .into(),
    ])
}

/// A loss report suspends the terminal in the same decision. A terminal may
/// report itself, and another terminal of its office while the office keeps
/// an active terminal besides the two; the office's last other active
/// terminal only the portal (the federation) suspends, so that one stolen
/// terminal cannot report every other one and keep the office out while it
/// stays active itself (issue 16, Low; docs/security.md "A stolen terminal").
fn report_lost(
    state: &OfficeState,
    terminal: &TerminalId,
    loss: Loss,
    reported_by: Option<&TerminalId>,
    today: NaiveDate,
) -> Result<Vec<OfficeEvent>, Rejection> {
    let known = known_terminal(state, terminal)?;
    reject_if!(
        known.suspended,
        TerminalAlreadySuspended,
        format!("Terminal {terminal} is already suspended."),
        format!("端末 {terminal} は既に停止されています。")
    );
    if let Some(reporter) = reported_by {
        let another_stays_active = state
            .terminals
            .keys()
            .any(|other| other != reporter && other != terminal && state.terminal_active(other));
        reject_if!(
            reporter != terminal && !another_stays_active,
            LastOtherTerminal,
            "A terminal may not report the office's last other active terminal: that is what a \
             stolen terminal would do to keep the office out. Report it through the portal \
             (介護情報基盤ポータル, by telephone or form), which suspends it through the \
             federation at once (docs/security.md, \"A stolen terminal\").",
            "事業所の他の最後の有効な端末は、端末からは紛失届を出せません（盗難端末が事業所を\
             締め出すのを防ぐため）。介護情報基盤ポータル（電話またはフォーム）に連絡してください。\
             国保中央会が直ちに停止します。"
        );
    }
    Ok(vec![
        TerminalReportedLost {
            terminal: terminal.clone(),
            loss,
            reported_on: today,
        }
        .into(),
        TerminalSuspended {
            terminal: terminal.clone(),
            suspended_on: today,
        }
        .into(),
    ])
}

/// A suspended terminal comes back only with a new credential.
fn reinstate(
    state: &OfficeState,
    terminal: &TerminalId,
    credential: &Sha256Digest,
    today: NaiveDate,
) -> Result<Vec<OfficeEvent>, Rejection> {
    let known = known_terminal(state, terminal)?;
    reject_if!(
        !known.suspended,
        TerminalNotSuspended,
        format!("Terminal {terminal} is not suspended."),
        format!("端末 {terminal} は停止されていません。")
    );
    reject_if!(
        known.credential == *credential,
        CredentialReused,
        "A reinstated terminal needs a new client certificate, not the one that went missing.",
        "再開には新しいクライアント証明書が必要です（紛失・盗難時の証明書は使えません）。"
    );
    Ok(vec![
        TerminalReinstated {
            terminal: terminal.clone(),
            credential: credential.clone(),
            reinstated_on: today,
        }
        .into(),
    ])
}

fn known_terminal<'a>(
    state: &'a OfficeState,
    terminal: &TerminalId,
) -> Result<&'a Terminal, Rejection> {
    state.terminals.get(terminal).ok_or_else(|| {
        super::rejection::rejection!(
            TerminalUnknown,
            format!("Terminal {terminal} is not registered at this office."),
            format!("端末 {terminal} はこの事業所に登録されていません。")
        )
    })
}
