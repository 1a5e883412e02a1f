//! Sealing the personal fields of a municipality's message before it is
//! decided (crypto-shredding, docs/audit.md).
//!
//! A producer sends a personal field as plaintext in a one-key object,
//! `{"plain": "東京都千代田区..."}`; [`seal_body`] replaces each such object
//! with the sealed value (`v1.<key_id>.<...>`) under the person's key, so the
//! decider, the recorded event and the chain only ever see ciphertext. A
//! bare string under a personal key ([`PERSONAL_FIELDS`]) is refused: kiban
//! cannot tell a producer's ciphertext from plaintext, and only values it
//! sealed itself can be forgotten.

use chrono::{DateTime, Utc};
use kiban_events::domain::PERSONAL_FIELDS;
use kiban_events::domain::insured::{InsuredCommand, InsuredPerson, insured_stream};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use kiban_store::{EventStore, PersonKeys, SealError};
use serde_json::{Map, Value};

use crate::engine::{CommandContext, Engine, EngineError, Executed};

/// The key of the plaintext wrapper object.
pub const PLAIN_KEY: &str = "plain";

/// Why a body's personal fields were not sealed: a stable code and a message.
#[derive(Debug)]
pub enum SealFailure {
    /// Final: the message must change (code, message).
    Refused(&'static str, String),
    /// The store failed; the message may be retried.
    Store(kiban_store::Error),
}

/// The JSON pointers of every `{"plain": ...}` object in `value`, and the
/// first bare string under a personal key, if any.
fn scan(value: &Value, path: &str, plains: &mut Vec<String>, bare: &mut Option<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let child_path = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                if is_plain(child) {
                    plains.push(child_path);
                } else if PERSONAL_FIELDS.contains(&key.as_str()) && child.is_string() {
                    bare.get_or_insert(key.clone());
                } else {
                    scan(child, &child_path, plains, bare);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let item_path = format!("{path}/{index}");
                if is_plain(item) {
                    plains.push(item_path);
                } else {
                    scan(item, &item_path, plains, bare);
                }
            }
        }
        _ => {}
    }
}

fn is_plain(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|object| object.len() == 1 && object.contains_key(PLAIN_KEY))
}

/// Seals every `{"plain": ...}` in `body` with the key of the person
/// (`insurer`, `insured`); `context` (the command id) makes a retry seal
/// to the same bytes. Without a person (an insurer's fact) or without keys,
/// plaintext is refused.
pub async fn seal_body(
    keys: Option<&PersonKeys>,
    body: &mut Map<String, Value>,
    insurer: &InsurerNumber,
    insured: Option<&InsuredNumber>,
    context: &str,
) -> Result<(), SealFailure> {
    let mut root = Value::Object(std::mem::take(body));
    let result = seal_value(keys, &mut root, insurer, insured, context).await;
    if let Value::Object(object) = root {
        *body = object;
    }
    result
}

async fn seal_value(
    keys: Option<&PersonKeys>,
    root: &mut Value,
    insurer: &InsurerNumber,
    insured: Option<&InsuredNumber>,
    context: &str,
) -> Result<(), SealFailure> {
    let mut plains = Vec::new();
    let mut bare = None;
    scan(root, "", &mut plains, &mut bare);
    if let Some(key) = bare {
        return Err(SealFailure::Refused(
            "personal_field_not_plain",
            format!(
                "`{key}` is a personal field: send it as {{\"{PLAIN_KEY}\": \"...\"}}; kiban seals it"
            ),
        ));
    }
    if plains.is_empty() {
        return Ok(());
    }
    let Some(insured) = insured else {
        return Err(SealFailure::Refused(
            "invalid_body",
            "personal fields belong to an insured person; this kind has none".to_owned(),
        ));
    };
    let Some(keys) = keys else {
        return Err(SealFailure::Refused(
            "sealing_unavailable",
            "this kiban does not accept personal fields (no key store configured)".to_owned(),
        ));
    };
    for pointer in plains {
        let slot = root.pointer_mut(&pointer).expect("scanned path exists");
        let Some(Value::String(plaintext)) = slot.get(PLAIN_KEY) else {
            return Err(SealFailure::Refused(
                "invalid_body",
                format!("`{pointer}`: {{\"{PLAIN_KEY}\": ...}} must hold a string"),
            ));
        };
        let sealed = keys
            .seal(insurer, insured, plaintext, &format!("{context}{pointer}"))
            .await
            .map_err(|error| match error {
                SealError::Forgotten => SealFailure::Refused("person_forgotten", error.to_string()),
                SealError::Invalid(message) => {
                    SealFailure::Refused("invalid_body", format!("`{pointer}`: {message}"))
                }
                SealError::Store(error) => SealFailure::Store(error),
            })?;
        *slot = Value::String(sealed.into());
    }
    Ok(())
}

/// The namespace of the command id of forgetting a person (UUID v5 of
/// `<insurer>-<insured>` under it): forgetting twice is one command.
pub const FORGET_NAMESPACE: uuid::Uuid = uuid::uuid!("6b1f3c2e-8d4a-5e70-9c61-2f0a4b7d9e13");

/// What forgetting a person did.
#[derive(Debug)]
pub struct PersonForgetting {
    /// The destroyed key (none when the person never had one).
    pub key: kiban_store::keys::Forgotten,
    /// The `insured.person_forgotten` event (empty when the person was
    /// already forgotten by an earlier command).
    pub executed: Executed,
}

impl<S: EventStore> Engine<S> {
    /// Forgets a person (本人情報の消去): destroys their data key first, then
    /// records `insured.person_forgotten` on their stream, as `actor`. In
    /// that order, so that a failure between the two leaves a forgotten key
    /// and a retry records the event; never an event claiming a key is gone
    /// while it exists. Idempotent.
    pub async fn forget_person(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<PersonForgetting, EngineError> {
        let keys = self.person_keys().ok_or_else(|| {
            EngineError::Store(kiban_store::Error::Invalid(
                "no key store configured: cannot forget".to_owned(),
            ))
        })?;
        let key = keys.forget(insurer, insured, now).await?;
        let person = kiban_store::keys::person_of(insurer, insured);
        let command_id = EventId::deterministic(&FORGET_NAMESPACE, person.as_bytes());
        let command = InsuredCommand::RecordForgotten {
            forgotten_at: now,
            key_id: key.key_id.clone(),
        };
        let executed = self
            .execute::<InsuredPerson>(
                &insured_stream(insurer, insured),
                &command,
                &CommandContext::new(command_id, actor, now),
            )
            .await;
        let executed = match executed {
            Ok(executed) => executed,
            // The same command id with another `forgotten_at` (a retry after
            // a crash between key and event): already recorded.
            Err(EngineError::DuplicateEventId(_)) => Executed {
                events: Vec::new(),
                replayed: true,
            },
            Err(error) => return Err(error),
        };
        Ok(PersonForgetting { key, executed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_plain_objects_at_any_depth_and_bare_personal_strings() {
        let body: Value = serde_json::json!({
            "moved_on": "2026-05-01",
            "address": {"plain": "東京都"},
            "applicant": {"by": "family", "name": {"plain": "山田"}},
            "list": [{"plain": "x"}],
        });
        let (mut plains, mut bare) = (Vec::new(), None);
        scan(&body, "", &mut plains, &mut bare);
        plains.sort();
        assert_eq!(plains, vec!["/address", "/applicant/name", "/list/0"]);
        assert_eq!(bare, None);
        let body = serde_json::json!({"applicant": {"by": "family", "name": "v1.k.x"}});
        scan(&body, "", &mut Vec::new(), &mut bare);
        assert_eq!(bare.as_deref(), Some("name"));
    }
}
