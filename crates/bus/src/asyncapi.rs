//! The AsyncAPI 3.0 document of kiban's NATS surface ([`document`]),
//! generated from the types that read and write each message: the body of
//! every municipal message kind is the command variant it becomes
//! (`kiban_engine::ingest::body_schema`), the envelope is [`IngestMessage`]'s,
//! the receipt codes are the transport's ([`codes`]), the engine's
//! ([`kiban_engine::ingest::INGEST_REJECTION_CODES`]) and the workflow
//! rules' ([`RejectionCode`]). `docs/asyncapi.json` is a committed copy (a
//! test keeps it in step), served at `GET /v1/asyncapi.json`.
//!
//! [`check_messages`] validates messages against it offline (`kiban emit
//! --check`), each problem with its JSON pointer.
//!
//! [`IngestMessage`]: crate::ingest::IngestMessage
//! [`codes`]: crate::ingest::codes

use kiban_engine::ingest::{
    EnvelopeNeeds, INGEST_REJECTION_CODES, MUNICIPAL_KINDS, body_schema, envelope_needs,
};
use kiban_events::domain::RejectionCode;
use kiban_events::domain::catalog::spec_of;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::ingest::{INGEST_MESSAGE_BYTES_MAX, MSG_ID_HEADER, TRANSPORT_CODES};
use crate::relay::POSITION_HEADER;
use crate::routing::{MESSAGE_KIND_HEADER, PERSON_SNAPSHOT, SNAPSHOT_BYTES_MAX};
use crate::subjects::{INGEST_PREFIX, NO_INSURER_TOKEN};

/// Where the schemas live in the document; every `$ref` of a payload points
/// here (AsyncAPI resolves references against the whole document).
const SCHEMAS: &str = "/components/schemas";

/// The name of the schema that replaces kiban's `SealedValue` in what a
/// producer sends: plaintext in a one-key object, sealed by kiban.
const PERSONAL_PLAINTEXT: &str = "PersonalPlaintext";

/// The fields of the envelope every message has, in the order of
/// docs/integration.md.
fn envelope_schema(kind: &str, body: Value, needs: EnvelopeNeeds) -> Value {
    let mut required = vec!["event_id", "kind", "insurer", "occurred_at"];
    match needs {
        EnvelopeNeeds::Application => required.extend(["insured", "application"]),
        EnvelopeNeeds::Person => required.push("insured"),
        EnvelopeNeeds::Insurer => {}
    }
    required.push("body");
    let mut properties = json!({
        "event_id": {
            "type": "string",
            "format": "uuid",
            "description": "Your id for this fact (UUID v7 recommended, never the nil UUID): the idempotency key; the same value goes into the Nats-Msg-Id header. Never reuse it for another fact."
        },
        "kind": {"const": kind, "description": "The message kind; the last tokens of the subject."},
        "insurer": {"$ref": format!("#{SCHEMAS}/InsurerNumber"), "description": "Your 保険者番号; the subject's insurer token."},
        "occurred_at": {
            "type": "string",
            "format": "date-time",
            "description": "When it happened, by your clock (RFC 3339). The rules are checked as of this time; it may not be more than 5 minutes ahead of the platform's clock (occurred_in_future), nor, outside the insurer's back-fill, more than two years behind it (occurred_too_long_ago)."
        },
        "body": body,
    });
    let properties_map = properties.as_object_mut().expect("an object");
    if needs != EnvelopeNeeds::Insurer {
        properties_map.insert(
            "insured".into(),
            json!({"$ref": format!("#{SCHEMAS}/InsuredNumber"), "description": "被保険者番号 of the person (never the Individual Number / My Number)."}),
        );
    }
    if needs == EnvelopeNeeds::Application {
        properties_map.insert(
            "application".into(),
            json!({"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "The application's sequence number for this person, from 1; the first certification.filed of a number creates the application."}),
        );
    }
    json!({
        "type": "object",
        "description": format!("A `{kind}` status message."),
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// Who may send a kind, and what kiban derives when recording it: the
/// recorded event's fields that are neither in the body nor in the envelope.
fn kind_description(kind: &str, body: &Value, needs: EnvelopeNeeds) -> String {
    let spec = spec_of(kind).expect("a municipal kind is an event type");
    let sent: Vec<&str> = body["properties"]
        .as_object()
        .map(|properties| properties.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let from_envelope: &[&str] = match needs {
        EnvelopeNeeds::Application => &["insurer", "insured", "seq"],
        EnvelopeNeeds::Person => &["insurer", "insured"],
        EnvelopeNeeds::Insurer => &["insurer"],
    };
    let derived: Vec<String> = spec
        .fields
        .iter()
        .filter(|field| !sent.contains(&field.name) && !from_envelope.contains(&field.name))
        .map(|field| format!("`{}`", field.name))
        .collect();
    let derived = if derived.is_empty() {
        "nothing".to_owned()
    } else {
        derived.join(", ")
    };
    let envelope = match needs {
        EnvelopeNeeds::Application => "`insured` and `application` are required",
        EnvelopeNeeds::Person => "`insured` is required",
        EnvelopeNeeds::Insurer => "no `insured` or `application`",
    };
    format!(
        "{} Sent by: the insurer (municipality) whose number is the subject's \
         `{{insurer}}` token, once the federation onboarded it. Envelope: {envelope}. \
         Recorded as the event `{kind}` (docs/events.md); derived by kiban, never sent: \
         {derived}.",
        spec.doc.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

/// Every receipt code with its meaning, in the order: transport, engine,
/// workflow rules.
pub fn receipt_codes() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&str, &str)> = TRANSPORT_CODES.to_vec();
    all.extend(INGEST_REJECTION_CODES.iter().copied());
    for code in RejectionCode::ALL {
        if !all.iter().any(|(known, _)| *known == code.as_str()) {
            all.push((code.as_str(), code.description()));
        }
    }
    all
}

fn receipt_schema() -> Value {
    let codes = receipt_codes();
    let names: Vec<&str> = codes.iter().map(|(code, _)| *code).collect();
    let table: Vec<String> = codes
        .iter()
        .map(|(code, meaning)| format!("- `{code}`: {meaning}"))
        .collect();
    json!({
        "type": "object",
        "description": "The answer to one status message: proof it is durably recorded (accepted), or that nothing was recorded (rejected).",
        "properties": {
            "event_id": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The message's event id; null only when neither the Nats-Msg-Id header nor the body carried a readable one."
            },
            "status": {"type": "string", "enum": ["accepted", "rejected"]},
            "positions": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "description": "Accepted only: the store positions of the recorded events (one message may record several: a decision is also recorded on the person)."
            },
            "code": {
                "type": "string",
                "enum": names,
                "description": format!("Rejected only: the stable rejection code.\n\n{}", table.join("\n")),
            },
            "message": {"type": "string", "description": "Rejected only: what is wrong, in English (at most 1024 bytes)."}
        },
        "required": ["event_id", "status"],
        "additionalProperties": false,
        "x-kiban-codes": codes.iter().map(|(code, meaning)| json!({"code": code, "meaning": meaning})).collect::<Vec<_>>(),
    })
}

fn person_snapshot_schema() -> Value {
    json!({
        "type": "object",
        "description": format!("Sent on kiban.offices.{{office}}.updates when an event makes the office entitled to a person it was not entitled to just before (insured.consent_given, insured.care_plan_office_registered or insured.care_plan_office_changed naming it, the insurer sharing): the notices of the person's events the feed carries, up to that event (no payloads: the office reads the data through the API, where each read is logged). The office's feed goes on with the notices of the events after `position`. At most {SNAPSHOT_BYTES_MAX} bytes."),
        "properties": {
            "kind": {"const": PERSON_SNAPSHOT},
            "insurer": {"$ref": format!("#{SCHEMAS}/InsurerNumber")},
            "insured": {"$ref": format!("#{SCHEMAS}/InsuredNumber")},
            "position": {"type": "integer", "minimum": 1, "description": "The position of the event that made the office entitled."},
            "complete": {"type": "boolean", "description": "False when the oldest events were left out to stay under the size bound; read them through the API (GET /v1/persons/...)."},
            "events": {
                "type": "array",
                "items": reference("components/schemas/UpdateNotice"),
                "description": "Notices, in position order, up to `position`: of the person's applications (certification/<insurer>-<insured>-<n>) and own record (insured/<insurer>-<insured>), without reads, consents or moves."
            }
        },
        "required": ["kind", "insurer", "insured", "position", "complete", "events"],
        "additionalProperties": false,
    })
}

fn update_notice_schema() -> Value {
    json!({
        "type": "object",
        "description": "The notice of a recorded event (kiban_events::UpdateNotice): the same JSON as the `data` of an event of GET /v1/offices/{office}/updates. Never the payload, actor, correlation or hashes: the office reads the data through the API, logged.",
        "properties": {
            "position": {"type": "integer", "minimum": 1, "description": "The event's global position; also the header Kiban-Position."},
            "event_type": {"type": "string", "description": "An event type of docs/events.md."},
            "stream": {"type": "string", "description": "The person's application (certification/<insurer>-<insured>-<n>) or own record (insured/<insurer>-<insured>)."},
            "occurred_at": {"type": "string", "format": "date-time", "description": "The producer's clock."},
            "recorded_at": {"type": "string", "format": "date-time", "description": "The store's clock at commit."}
        },
        "required": ["position", "event_type", "stream", "occurred_at", "recorded_at"],
    })
}

fn recorded_event_schema() -> Value {
    json!({
        "type": "object",
        "description": "A recorded event as the store holds it (docs/store.md, docs/events.md): the envelope and the payload of its event type.",
        "properties": {
            "position": {"type": "integer", "minimum": 1, "description": "Global position: gapless, from 1, in commit order."},
            "stream": {"type": "string", "description": "The stream, `<aggregate>/<id>`."},
            "version": {"type": "integer", "minimum": 1, "description": "Version within the stream, from 1."},
            "event_id": {"type": "string", "format": "uuid"},
            "event_type": {"type": "string", "description": "An event type of docs/events.md."},
            "schema_version": {"type": "integer", "minimum": 1},
            "occurred_at": {"type": "string", "format": "date-time"},
            "recorded_at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "description": "Who caused it: `insurer:<n>`, `office:<n>/<terminal>`, `medical:<code>`, `federation`, `system:<part>`."},
            "correlation_id": {"type": "string", "format": "uuid"},
            "causation_id": {"type": "string", "format": "uuid"},
            "payload": {"type": "object", "description": "The event type's fields (docs/events.md); personal fields only as ciphertext."},
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}
        },
        "required": ["position", "stream", "version", "event_id", "event_type", "schema_version", "occurred_at", "recorded_at", "actor", "correlation_id", "payload", "prev_hash", "hash"],
        "additionalProperties": false,
    })
}

fn personal_plaintext_schema() -> Value {
    json!({
        "type": "object",
        "description": "A personal field, sent as plaintext in a one-key object: kiban seals it with the person's key before anything is recorded (docs/integration.md, \"Personal fields\"). A bare string is refused (personal_field_not_plain).",
        "properties": {"plain": {"type": "string", "minLength": 1, "maxLength": 1024}},
        "required": ["plain"],
        "additionalProperties": false,
    })
}

/// Replaces every reference to kiban's `SealedValue` (the recorded
/// ciphertext) with [`PERSONAL_PLAINTEXT`] (what a producer sends).
fn send_plaintext(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && reference == &format!("#{SCHEMAS}/SealedValue")
            {
                *reference = format!("#{SCHEMAS}/{PERSONAL_PLAINTEXT}");
            }
            map.values_mut().for_each(send_plaintext);
        }
        Value::Array(items) => items.iter_mut().for_each(send_plaintext),
        _ => {}
    }
}

fn reference(path: &str) -> Value {
    json!({"$ref": format!("#/{path}")})
}

/// The AsyncAPI 3.0 document of the NATS surface.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = SCHEMAS.into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let mut schemas = Map::new();
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let insurer_parameter = json!({
        "description": "保険者番号 (6 digits): your own; NATS permissions let a municipality publish only under its number."
    });
    for kind in MUNICIPAL_KINDS {
        let needs = envelope_needs(kind).expect("a municipal kind");
        let mut body = body_schema(kind, &mut generator).expect("a municipal kind");
        send_plaintext(&mut body);
        let description = kind_description(kind, &body, needs);
        schemas.insert(
            format!("{kind}.message"),
            envelope_schema(kind, body, needs),
        );
        let spec = spec_of(kind).expect("an event type");
        messages.insert(
            (*kind).to_owned(),
            json!({
                "name": kind,
                "title": format!("{} / {}", spec.label_ja, spec.label_en),
                "summary": format!("Report `{kind}`."),
                "description": description,
                "contentType": "application/json",
                "headers": reference("components/schemas/IngestHeaders"),
                "payload": reference(&format!("components/schemas/{kind}.message")),
                "x-kiban-sender": "insurer",
            }),
        );
        let channel = format!("ingest.{kind}");
        channels.insert(
            channel.clone(),
            json!({
                "address": format!("{INGEST_PREFIX}{{insurer}}.{kind}"),
                "title": format!("Status messages `{kind}`"),
                "description": "JetStream stream KIBAN_INGEST. Publish with a JetStream publish; the publish ack is not the proof of recording, the receipt is.",
                "parameters": {"insurer": insurer_parameter},
                "messages": {(*kind): reference(&format!("components/messages/{kind}"))},
            }),
        );
        operations.insert(
            format!("receive.{kind}"),
            json!({
                "action": "receive",
                "channel": reference(&format!("channels/{channel}")),
                "title": format!("kiban records `{kind}`"),
                "description": "Sent by: the insurer (municipality), only on its own subject. Answered on kiban.receipts.{insurer}.",
                "messages": [reference(&format!("channels/{channel}/messages/{kind}"))],
                "reply": {
                    "channel": reference("channels/receipts"),
                    "messages": [reference("channels/receipts/messages/receipt")],
                },
                "x-kiban-sender": "insurer",
            }),
        );
    }
    channels.insert(
        "receipts".into(),
        json!({
            "address": "kiban.receipts.{insurer}",
            "title": "Receipts",
            "description": "Core NATS (not stored): subscribe before publishing. One receipt per message, again for a re-sent or redelivered message.",
            "parameters": {"insurer": insurer_parameter},
            "messages": {"receipt": reference("components/messages/receipt")},
        }),
    );
    channels.insert(
        "officeUpdates".into(),
        json!({
            "address": "kiban.offices.{office}.updates",
            "title": "An office's updates",
            "description": "Core NATS: a notice (no payload) of each event of the persons the office may now see (live consent or registered care-plan office, insurer sharing enabled); and, when the office becomes entitled to a person (a consent given, a care-plan office registered or changed), first that person's snapshot (header Kiban-Message: person_snapshot). The office reads the data through the API, where each read is logged. Until 2026-12-07 the messages were whole recorded events; docs/nats.md.",
            "parameters": {"office": {"description": "介護保険事業所番号 (10 digits)."}},
            "messages": {
                "updateNotice": reference("components/messages/updateNotice"),
                "personSnapshot": reference("components/messages/personSnapshot"),
            },
        }),
    );
    channels.insert(
        "events".into(),
        json!({
            "address": "kiban.events.{insurer}.{eventType}.{streamId}",
            "title": "Every recorded event",
            "description": format!("JetStream stream KIBAN_EVENTS (the outbox relay): kiban's own services and auditors, never municipalities or offices. `{{insurer}}` is `{NO_INSURER_TOKEN}` for an event about no insurer; `{{eventType}}` spans several tokens (`certification.decided`); `{{streamId}}` is the stream id with `.` written `~`."),
            "parameters": {
                "insurer": {"description": "保険者番号, or `none`."},
                "eventType": {"description": "An event type of docs/events.md (dotted words)."},
                "streamId": {"description": "The stream id, `.` replaced by `~`."},
            },
            "messages": {"recordedEvent": reference("components/messages/recordedEvent")},
        }),
    );
    operations.insert(
        "send.receipt".into(),
        json!({
            "action": "send",
            "channel": reference("channels/receipts"),
            "title": "kiban answers every status message",
            "messages": [reference("channels/receipts/messages/receipt")],
        }),
    );
    operations.insert(
        "send.officeUpdate".into(),
        json!({
            "action": "send",
            "channel": reference("channels/officeUpdates"),
            "title": "kiban routes what an office may see",
            "messages": [
                reference("channels/officeUpdates/messages/updateNotice"),
                reference("channels/officeUpdates/messages/personSnapshot"),
            ],
        }),
    );
    operations.insert(
        "send.event".into(),
        json!({
            "action": "send",
            "channel": reference("channels/events"),
            "title": "kiban relays every committed event",
            "messages": [reference("channels/events/messages/recordedEvent")],
        }),
    );
    messages.insert(
        "receipt".into(),
        json!({
            "name": "receipt",
            "title": "Receipt",
            "contentType": "application/json",
            "payload": reference("components/schemas/Receipt"),
        }),
    );
    messages.insert(
        "recordedEvent".into(),
        json!({
            "name": "recordedEvent",
            "title": "Recorded event",
            "contentType": "application/json",
            "payload": reference("components/schemas/RecordedEvent"),
        }),
    );
    messages.insert(
        "updateNotice".into(),
        json!({
            "name": "updateNotice",
            "title": "Update notice",
            "summary": "That an event happened on a person's stream the office may see, without its content.",
            "contentType": "application/json",
            "payload": reference("components/schemas/UpdateNotice"),
        }),
    );
    messages.insert(
        "personSnapshot".into(),
        json!({
            "name": "personSnapshot",
            "title": "Person snapshot",
            "summary": "What an office that has just become entitled to a person may now see.",
            "contentType": "application/json",
            "headers": reference("components/schemas/SnapshotHeaders"),
            "payload": reference("components/schemas/PersonSnapshot"),
        }),
    );
    let mut definitions = generator.take_definitions(true);
    definitions.remove("SealedValue");
    for (name, mut schema) in definitions {
        send_plaintext(&mut schema);
        schemas.insert(name, schema);
    }
    schemas.insert(PERSONAL_PLAINTEXT.into(), personal_plaintext_schema());
    schemas.insert("Receipt".into(), receipt_schema());
    schemas.insert("RecordedEvent".into(), recorded_event_schema());
    schemas.insert("PersonSnapshot".into(), person_snapshot_schema());
    schemas.insert("UpdateNotice".into(), update_notice_schema());
    schemas.insert(
        "SnapshotHeaders".into(),
        json!({
            "type": "object",
            "properties": {
                MESSAGE_KIND_HEADER: {"const": PERSON_SNAPSHOT, "description": "Tells a snapshot from a recorded event (which has no such header)."},
                POSITION_HEADER: {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "The snapshot's position."}
            },
            "required": [MESSAGE_KIND_HEADER, POSITION_HEADER],
        }),
    );
    schemas.insert(
        "IngestHeaders".into(),
        json!({
            "type": "object",
            "properties": {
                MSG_ID_HEADER: {"type": "string", "format": "uuid", "description": "The body's event_id; JetStream de-duplicates on it within 5 seconds."}
            },
            "required": [MSG_ID_HEADER],
        }),
    );
    schemas.sort_keys();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "kiban NATS surface",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("What a municipality (保険者) publishes to kiban over NATS JetStream, what it is answered, and what offices and kiban's services receive. Generated from kiban's types (crates/bus/src/asyncapi.rs); docs/integration.md explains it with an example per kind. Every message is UTF-8 JSON of at most {INGEST_MESSAGE_BYTES_MAX} bytes."),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}

/// A worked example of every municipal kind: one person's whole story
/// (insurer 131016, person 0000012345), as docs/integration.md shows it.
/// `(kind, application, occurred_at, body)`; a test checks that each one
/// matches its schema and that every kind has exactly one.
pub fn examples() -> Vec<Value> {
    let person = "0000012345";
    let rows: [(&str, Option<u32>, &str, Value); 22] = [
        (
            "insurer.standardisation_completed",
            None,
            "2026-03-20T10:00:00+09:00",
            json!({"completed_on": "2026-03-20"}),
        ),
        (
            "insurer.data_transmission_completed",
            None,
            "2026-04-01T10:00:00+09:00",
            json!({"completed_on": "2026-04-01"}),
        ),
        (
            "certification.filed",
            Some(1),
            "2026-05-01T09:00:00+09:00",
            json!({"kind": "new", "applicant": {"by": "family", "name": {"plain": "山田花子"}}, "applied_on": "2026-05-01"}),
        ),
        (
            "certification.investigation_scheduled",
            Some(1),
            "2026-05-02T09:00:00+09:00",
            json!({"scheduled_on": "2026-05-08"}),
        ),
        (
            "certification.investigation_completed",
            Some(1),
            "2026-05-08T16:00:00+09:00",
            json!({"investigation_sheet": {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "media_type": "application/pdf", "size_bytes": 48213}}),
        ),
        (
            "certification.opinion_requested",
            Some(1),
            "2026-05-02T09:30:00+09:00",
            json!({"institution": "1310000001"}),
        ),
        (
            "certification.opinion_received",
            Some(1),
            "2026-05-12T11:00:00+09:00",
            json!({"institution": "1310000001", "opinion": {"sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", "media_type": "application/pdf", "size_bytes": 102400}}),
        ),
        (
            "certification.primary_judgment_recorded",
            Some(1),
            "2026-05-14T10:00:00+09:00",
            json!({"level": "care_2"}),
        ),
        (
            "certification.extension_notified",
            Some(1),
            "2026-05-20T10:00:00+09:00",
            json!({"reason": "The certification board meets on 2026-06-05.", "expected_decision_on": "2026-06-08"}),
        ),
        (
            "certification.secondary_judgment_recorded",
            Some(1),
            "2026-06-05T15:00:00+09:00",
            json!({"level": "care_2"}),
        ),
        (
            "certification.decided",
            Some(1),
            "2026-06-08T10:00:00+09:00",
            json!({"level": "care_2", "validity": null}),
        ),
        (
            "certification.withdrawn",
            Some(2),
            "2026-07-03T10:00:00+09:00",
            json!({"reason": "The person withdrew the change application."}),
        ),
        (
            "certification.rejected",
            Some(3),
            "2026-07-10T10:00:00+09:00",
            json!({"reason": "The applicant is not insured by this municipality."}),
        ),
        (
            "insured.copayment_certificate_issued",
            None,
            "2026-06-10T10:00:00+09:00",
            json!({"ratio": 1, "valid_from": "2026-06-01"}),
        ),
        (
            "insured.cost_limit_certificate_issued",
            None,
            "2026-06-10T10:05:00+09:00",
            json!({"stage": "stage_2", "applied_on": "2026-06-09", "for_coming_period": false}),
        ),
        (
            "insured.care_plan_office_registered",
            None,
            "2026-06-12T10:00:00+09:00",
            json!({"office": "1312345678", "office_kind": "home_care_support_office", "filed_on": "2026-06-12"}),
        ),
        (
            "insured.moved_house",
            None,
            "2026-06-20T10:00:00+09:00",
            json!({"moved_on": "2026-06-19", "address": {"plain": "東京都千代田区霞が関1-2-3"}}),
        ),
        (
            "insured.home_modification_applied",
            None,
            "2026-07-01T10:00:00+09:00",
            json!({"prior_application": 1, "applied_on": "2026-07-01", "planned_cost": 150000}),
        ),
        (
            "insured.home_modification_work_recorded",
            None,
            "2026-07-25T10:00:00+09:00",
            json!({"prior_application": 1, "work_started_on": "2026-07-10", "receipt_on": "2026-07-24", "cost": 148000}),
        ),
        (
            "insured.equipment_purchase_recorded",
            None,
            "2026-08-03T10:00:00+09:00",
            json!({"category": "bathing_aid", "purchased_on": "2026-08-01", "cost": 30000, "seller_designated": true, "replacement_reason": null}),
        ),
        (
            "insurer.backfill_started",
            None,
            "2026-12-07T09:00:00+09:00",
            json!({}),
        ),
        (
            "insurer.backfill_completed",
            None,
            "2026-12-07T17:00:00+09:00",
            json!({}),
        ),
    ];
    rows.into_iter()
        .enumerate()
        .map(|(index, (kind, application, occurred_at, body))| {
            let mut message = json!({
                "event_id": format!("0192b6a0-5c1e-7c3a-9f00-{:012}", index + 1),
                "kind": kind,
                "insurer": "131016",
            });
            if envelope_needs(kind) != Some(EnvelopeNeeds::Insurer) {
                message["insured"] = json!(person);
            }
            if let Some(application) = application {
                message["application"] = json!(application);
            }
            message["occurred_at"] = json!(occurred_at);
            message["body"] = body;
            message
        })
        .collect()
}

/// The type of a schema, for a table: its `$ref`'s name, its enum's
/// values, or its JSON type (and format).
fn type_label(schema: &Value) -> String {
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        return target.rsplit('/').next().unwrap_or(target).to_owned();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    for combined in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(combined).and_then(Value::as_array) {
            return options
                .iter()
                .map(type_label)
                .collect::<Vec<_>>()
                .join(" or ");
        }
    }
    let kind = match schema.get("type") {
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        Some(Value::String(kind)) => kind.clone(),
        _ => "any".to_owned(),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{kind} ({format})"),
        None => kind,
    }
}

/// docs/integration.md's section of message kinds: for each kind who sends
/// it, its envelope, its body fields, what kiban derives, and the worked
/// example of [`examples`] (a test keeps the file in step).
pub fn kinds_markdown() -> String {
    let document = document();
    let examples = examples();
    let mut out = String::new();
    for kind in MUNICIPAL_KINDS {
        let message = &document["components"]["messages"][*kind];
        let schema = &document["components"]["schemas"][format!("{kind}.message")];
        let body = &schema["properties"]["body"];
        out.push_str(&format!(
            "### `{kind}` — {}\n\nSubject `kiban.ingest.<insurer>.{kind}`. {}\n\n",
            message["title"].as_str().unwrap_or_default(),
            message["description"].as_str().unwrap_or_default(),
        ));
        let required: Vec<&str> = body["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match body["properties"].as_object() {
            Some(properties) if !properties.is_empty() => {
                out.push_str(
                    "| body field | type | required | meaning |\n| --- | --- | --- | --- |\n",
                );
                for (name, field) in properties {
                    let meaning = field
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .replace('|', "\\|");
                    out.push_str(&format!(
                        "| `{name}` | {} | {} | {meaning} |\n",
                        type_label(field),
                        if required.contains(&name.as_str()) {
                            "yes"
                        } else {
                            "no"
                        },
                    ));
                }
                out.push('\n');
            }
            _ => out.push_str("The body is `{}`.\n\n"),
        }
        let example = examples
            .iter()
            .find(|example| example["kind"] == *kind)
            .expect("every kind has an example");
        out.push_str(&format!(
            "```json\n{}\n```\n\n",
            serde_json::to_string_pretty(example).expect("JSON")
        ));
    }
    out.push_str("#### Receipt codes\n\n| code | meaning |\n| --- | --- |\n");
    for (code, meaning) in receipt_codes() {
        out.push_str(&format!("| `{code}` | {} |\n", meaning.replace('|', "\\|")));
    }
    out
}

/// One problem [`check_messages`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which message of the input (from 0).
    pub index: usize,
    /// Where in that message, as a JSON pointer (`""`: the whole message).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Validates `messages` against the schema of their `kind` in
/// [`document`], offline; every problem with its JSON pointer. A message
/// whose `kind` is not a municipal kind is one problem at `/kind`.
pub fn check_messages(messages: &[Value]) -> Vec<Problem> {
    let document = document();
    let mut problems = Vec::new();
    let mut validators = std::collections::HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let kind = message.get("kind").and_then(Value::as_str).unwrap_or("");
        if !MUNICIPAL_KINDS.contains(&kind) {
            problems.push(Problem {
                index,
                pointer: "/kind".into(),
                message: format!(
                    "{kind:?} is not a kind a municipality sends (unknown_kind); the kinds: {}",
                    MUNICIPAL_KINDS.join(", ")
                ),
            });
            continue;
        }
        let validator = validators.entry(kind).or_insert_with(|| {
            let schema = json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "components": document["components"],
                "$ref": format!("#{SCHEMAS}/{kind}.message"),
            });
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .should_validate_formats(true)
                .build(&schema)
                .expect("the generated schemas compile")
        });
        for error in validator.iter_errors(message) {
            problems.push(Problem {
                index,
                pointer: error.instance_path().as_str().to_owned(),
                message: error.to_string(),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn repo_file(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    /// `docs/asyncapi.json` is the generated document; `UPDATE_DOCS=1`
    /// rewrites it.
    #[test]
    fn docs_asyncapi_json_is_the_generated_document() {
        let path = repo_file("docs/asyncapi.json");
        let rendered = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/asyncapi.json is out of date: run `UPDATE_DOCS=1 cargo nextest run ... -E 'test(/asyncapi/)'`"
        );
    }

    #[test]
    fn the_document_validates_against_the_official_asyncapi_3_0_schema() {
        let official: Value = serde_json::from_str(
            &std::fs::read_to_string(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/asyncapi-3.0.0.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(&official)
            .expect("the official schema compiles offline");
        let document = document();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|error| format!("{}: {error}", error.instance_path().as_str()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // The validator does fail on a broken document.
        let mut broken = document.clone();
        broken["operations"]["send.receipt"]["action"] = json!("publish");
        assert!(!validator.is_valid(&broken));
    }

    #[test]
    fn every_municipal_kind_has_its_channel_and_nothing_else_is_ingested() {
        let document = document();
        let mut ingest: Vec<&str> = document["channels"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|name| name.strip_prefix("ingest."))
            .collect();
        ingest.sort_unstable();
        let mut expected = MUNICIPAL_KINDS.to_vec();
        expected.sort_unstable();
        assert_eq!(ingest, expected);
        // Every schema reference resolves in the document.
        fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    for (key, inner) in map {
                        match (key.as_str(), inner) {
                            ("$ref", Value::String(target)) => found.push(target),
                            _ => refs(inner, found),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&document, &mut found);
        for target in found {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{target} dangles");
        }
    }

    #[test]
    fn fields_kiban_derives_are_documented_as_derived_and_refused_in_the_body() {
        let document = document();
        let filed = &document["components"]["messages"]["certification.filed"]["description"];
        assert!(
            filed.as_str().unwrap().contains("never sent: `filed_on`")
                || filed.as_str().unwrap().contains("`current_certification`"),
            "{filed}"
        );
        let body =
            &document["components"]["schemas"]["certification.filed.message"]["properties"]["body"];
        for supplied in ["insurer", "insured", "seq", "current_certification"] {
            assert!(body["properties"].get(supplied).is_none(), "{supplied}");
        }
        let decided = document["components"]["messages"]["certification.decided"]["description"]
            .as_str()
            .unwrap();
        assert!(decided.contains("`decided_on`"), "{decided}");
        // A body field of a derived name is a problem with its pointer.
        let message = json!({
            "event_id": "0192b6a0-5c1e-7c3a-9f00-000000000001",
            "kind": "certification.decided",
            "insurer": "131016", "insured": "0000012345", "application": 1,
            "occurred_at": "2026-04-28T15:30:00+09:00",
            "body": {"level": "care_2", "validity": null, "decided_on": "2026-04-28"}
        });
        let problems = check_messages(&[message]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].pointer, "/body");
        assert!(problems[0].message.contains("decided_on"), "{problems:?}");
    }

    #[test]
    fn check_messages_points_at_each_problem() {
        let good = json!({
            "event_id": "0192b6a0-5c1e-7c3a-9f00-000000000001",
            "kind": "certification.filed",
            "insurer": "131016", "insured": "0000012345", "application": 1,
            "occurred_at": "2026-04-01T09:00:00+09:00",
            "body": {"kind": "new", "applicant": {"by": "person"}, "applied_on": "2026-04-01"}
        });
        assert_eq!(check_messages(std::slice::from_ref(&good)), vec![]);
        let mut bad = good.clone();
        bad["body"]["applied_on"] = json!("April 1st");
        bad["insured"] = json!("12345");
        bad.as_object_mut().unwrap().remove("application");
        let unknown = json!({"kind": "certification.teleported"});
        let problems = check_messages(&[good, bad, unknown]);
        let pointers: Vec<(usize, &str)> = problems
            .iter()
            .map(|problem| (problem.index, problem.pointer.as_str()))
            .collect();
        assert!(pointers.contains(&(1, "/body/applied_on")), "{problems:#?}");
        assert!(pointers.contains(&(1, "/insured")), "{problems:#?}");
        assert!(pointers.contains(&(1, "")), "{problems:#?}");
        assert!(pointers.contains(&(2, "/kind")), "{problems:#?}");
        assert!(problems.iter().all(|problem| problem.index != 0));
    }

    const KINDS_START: &str = "<!-- message-kinds:start -->\n";
    const KINDS_END: &str = "<!-- message-kinds:end -->";

    /// docs/integration.md's section of message kinds is
    /// [`kinds_markdown`]; `UPDATE_DOCS=1` rewrites it.
    #[test]
    fn docs_integration_md_lists_every_kind_with_its_schema_and_example() {
        let path = repo_file("docs/integration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find(KINDS_START).expect("start marker") + KINDS_START.len();
        let end = text.find(KINDS_END).expect("end marker");
        let rendered = kinds_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") && text[start..end] != rendered
        {
            let updated = format!("{}{}{}", &text[..start], rendered, &text[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert!(
            text[start..end] == rendered,
            "docs/integration.md's message kinds are out of date: run with UPDATE_DOCS=1"
        );
    }

    #[test]
    fn every_kind_has_one_example_and_each_matches_its_schema() {
        let examples = examples();
        let mut kinds: Vec<&str> = examples
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        kinds.sort_unstable();
        let mut expected = MUNICIPAL_KINDS.to_vec();
        expected.sort_unstable();
        assert_eq!(kinds, expected);
        assert_eq!(check_messages(&examples), vec![]);
    }

    #[test]
    fn receipt_codes_are_unique_and_each_has_a_meaning() {
        let codes = receipt_codes();
        let mut names: Vec<&str> = codes.iter().map(|(code, _)| *code).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a code is listed twice");
        assert!(codes.iter().all(|(_, meaning)| !meaning.is_empty()));
        assert!(names.contains(&"insurer_not_onboarded"));
        assert!(names.contains(&"application_not_filed"));
    }

    /// The string literals the engine's ingest passes as a rejection code:
    /// the first argument of `reject(`, `IngestRejection::new(` and
    /// `SealFailure::Refused(` in its source.
    fn engine_code_literals(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for call in ["reject(", "IngestRejection::new(", "Refused("] {
            for (at, _) in source.match_indices(call) {
                let rest = source[at + call.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"') {
                    let code = &literal[..literal.find('"').expect("a closed literal")];
                    found.push(code.to_owned());
                }
            }
        }
        found
    }

    /// Noticed in the last session: the engine's codes were literals that
    /// nothing checked against the documented table, so a new one could
    /// reach receipts without being in docs/asyncapi.json.
    #[test]
    fn every_code_the_engine_can_emit_is_a_documented_receipt_code() {
        let documented: Vec<&str> = receipt_codes().iter().map(|(code, _)| *code).collect();
        let mut seen = Vec::new();
        for file in [
            "crates/engine/src/ingest.rs",
            "crates/engine/src/personal.rs",
        ] {
            let source = std::fs::read_to_string(repo_file(file)).expect("engine source");
            for code in engine_code_literals(&source) {
                assert!(
                    documented.contains(&code.as_str()),
                    "{file} can answer `{code}`, which is not a receipt code of docs/asyncapi.json"
                );
                seen.push(code);
            }
        }
        // The scan finds the codes it must (a changed call shape would
        // otherwise let it find nothing and pass).
        for expected in [
            "insurer_mismatch",
            "occurred_in_future",
            "occurred_too_long_ago",
            "missing_field",
            "invalid_body",
            "personal_field_not_plain",
            "person_forgotten",
            "sealing_unavailable",
        ] {
            assert!(
                seen.iter().any(|code| code == expected),
                "{expected} not found"
            );
        }
        assert!(engine_code_literals(r#"reject("not_a_code", x)"#) == ["not_a_code"]);
    }
}
