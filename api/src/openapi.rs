//! How the API's own extractors and answers describe themselves in the
//! OpenAPI document ([aide]'s `OperationInput` / `OperationOutput`), so that
//! a route declared in `routes.rs` documents its parameters, body, answers
//! and problems from its handler's types alone.
//!
//! Parts of the document are written as JSON and read into aide's types
//! (`doc`): shorter than building the structs field by field, and checked
//! by the same deserialisation every time the document is built.

use aide::generate::GenContext;
use aide::openapi::{
    MediaType, Operation, Parameter, ReferenceOr, RequestBody, Response, SchemaObject, StatusCode,
};
use aide::operation::{add_parameters, set_body};
use aide::{OperationInput, OperationOutput};
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, json_schema};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{Caller, PersonPath};
use crate::commands::{CommandAccepted, Created};
use crate::documents::{ApplicationPath, DocumentBytes};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{
    Command, CommandKey, DOCUMENT_MEDIA_TYPES, Document, IDEMPOTENCY_KEY, JsonBody,
};
use crate::ops::PrometheusText;
use crate::updates::EventStream;

/// The name of the security scheme every authenticated route requires: a
/// client certificate issued by the platform CA (OpenAPI 3.1 `mutualTLS`).
pub const CLIENT_CERTIFICATE_SCHEME: &str = "clientCertificate";

/// One of aide's document types from its JSON form (a bug when it does not
/// read: the JSON is written in this module).
fn doc<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the OpenAPI fragment matches aide's types")
}

fn media(schema: Schema) -> MediaType {
    MediaType {
        schema: Some(SchemaObject {
            json_schema: schema,
            example: None,
            external_docs: None,
        }),
        ..Default::default()
    }
}

/// A response of `content_type` with `schema`.
fn response(description: &str, content_type: &str, schema: Schema) -> Response {
    Response {
        description: description.to_owned(),
        content: IndexMap::from([(content_type.to_owned(), media(schema))]),
        ..Default::default()
    }
}

/// A JSON response of `T`'s schema.
fn json_response<T: JsonSchema>(ctx: &mut GenContext, description: &str) -> Response {
    response(
        description,
        "application/json",
        ctx.schema.subschema_for::<T>(),
    )
}

impl OperationInput for Caller {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        let requirement = IndexMap::from([(CLIENT_CERTIFICATE_SCHEME.to_owned(), Vec::new())]);
        if !operation.security.contains(&requirement) {
            operation.security.push(requirement);
        }
    }

    /// A caller without a certificate, or whose terminal is suspended, is
    /// answered with a problem before the handler runs.
    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        <ApiError as OperationOutput>::inferred_responses(ctx, operation)
    }
}

/// The name of the security scheme of the person's view: the bearer token
/// of a session opened with the person's My Number card.
pub const PERSON_SESSION_SCHEME: &str = "personSession";

impl OperationInput for crate::me::Me {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        operation.security.push(IndexMap::from([(
            PERSON_SESSION_SCHEME.to_owned(),
            Vec::new(),
        )]));
    }

    /// A request without a live session is answered with a problem before
    /// the handler runs.
    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        <ApiError as OperationOutput>::inferred_responses(ctx, operation)
    }
}

/// The path parameters of a person: `{insurer}` and `{insured}`.
const PERSON_SEGMENTS: [(&str, &str, &str); 2] = [
    ("insurer", "保険者番号 (6 digits)", "^[0-9]{6}$"),
    ("insured", "被保険者番号 (10 digits)", "^[0-9]{10}$"),
];

/// Declares path parameters: (name, description, pattern).
fn path_parameters(
    ctx: &mut GenContext,
    operation: &mut Operation,
    segments: &[(&str, &str, &str)],
) {
    let parameters = segments.iter().map(|(name, description, pattern)| {
        doc::<Parameter>(json!({
            "in": "path", "name": name, "required": true, "description": description,
            "schema": {"type": "string", "pattern": pattern},
        }))
    });
    add_parameters(ctx, operation, parameters);
}

impl OperationInput for PersonPath {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        path_parameters(ctx, operation, &PERSON_SEGMENTS);
    }
}

impl OperationInput for ApplicationPath {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        path_parameters(ctx, operation, &PERSON_SEGMENTS);
        let seq = (
            "seq",
            "The application's sequence number (1, 2, …)",
            "^[1-9][0-9]*$",
        );
        path_parameters(ctx, operation, &[seq]);
    }
}

impl OperationInput for CommandKey {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Caller::operation_input(ctx, operation);
        let key: Parameter = doc(json!({
            "in": "header",
            "name": IDEMPOTENCY_KEY,
            "required": true,
            "description": "The command's id (a UUID, v7 preferred): the first event's id. Re-sending the same key answers 200 with the events recorded the first time.",
            "schema": {"type": "string", "format": "uuid"},
        }));
        add_parameters(ctx, operation, [key]);
    }
}

impl<T: JsonSchema> OperationInput for JsonBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let schema = ctx.schema.subschema_for::<T>();
        let body = RequestBody {
            content: IndexMap::from([("application/json".to_owned(), media(schema))]),
            required: true,
            ..Default::default()
        };
        set_body(ctx, operation, body);
    }
}

impl<T: JsonSchema> OperationInput for Command<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        CommandKey::operation_input(ctx, operation);
        JsonBody::<T>::operation_input(ctx, operation);
    }
}

impl OperationInput for Document {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let content = DOCUMENT_MEDIA_TYPES
            .iter()
            .map(|media_type| {
                let schema = json_schema!({"type": "string", "contentMediaType": media_type});
                ((*media_type).to_owned(), media(schema))
            })
            .collect();
        let body = RequestBody {
            description: Some("The document itself; its media type is the Content-Type.".into()),
            content,
            required: true,
            ..Default::default()
        };
        set_body(ctx, operation, body);
    }
}

impl OperationOutput for ApiError {
    type Inner = Problem;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(response(
            "A problem (RFC 9457); `type` names its kind (docs/api.md).",
            PROBLEM_JSON,
            ctx.schema.subschema_for::<Problem>(),
        ))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|problem| (None, problem))
            .into_iter()
            .collect()
    }
}

impl OperationOutput for CommandAccepted {
    type Inner = Self;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<Self>(ctx, "The command's events."))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        vec![
            (
                Some(StatusCode::Code(201)),
                json_response::<Self>(ctx, "Recorded now."),
            ),
            (
                Some(StatusCode::Code(200)),
                json_response::<Self>(
                    ctx,
                    "Recorded before under the same Idempotency-Key (`replayed`).",
                ),
            ),
        ]
    }
}

impl<T: JsonSchema> OperationOutput for Created<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<T>(ctx, "Created."))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with(201, Self::operation_response(ctx, operation))
    }
}

impl OperationOutput for crate::queries::AccessLog {
    type Inner = Vec<kiban_projections::AccessEntry>;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<Vec<kiban_projections::AccessEntry>>(
            ctx,
            "One page of the access log; a full page has `Link: <…>; rel=\"next\"`.",
        ))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with(200, Self::operation_response(ctx, operation))
    }
}

/// The inferred responses of an output that always answers with `status`.
fn answered_with(status: u16, response: Option<Response>) -> Vec<(Option<StatusCode>, Response)> {
    response
        .map(|response| (Some(StatusCode::Code(status)), response))
        .into_iter()
        .collect()
}

/// Implements `OperationOutput` for an answer that is always 200 with one
/// fixed content type and schema.
macro_rules! fixed_output {
    ($type:ty, $description:literal, $content_type:expr, $schema:expr) => {
        impl OperationOutput for $type {
            type Inner = Self;

            fn operation_response(_: &mut GenContext, _: &mut Operation) -> Option<Response> {
                Some(response($description, $content_type, $schema))
            }

            fn inferred_responses(
                ctx: &mut GenContext,
                operation: &mut Operation,
            ) -> Vec<(Option<StatusCode>, Response)> {
                answered_with(200, Self::operation_response(ctx, operation))
            }
        }
    };
}

fixed_output!(
    DocumentBytes,
    "The document's bytes, with the media type it was recorded with.",
    "application/octet-stream",
    json_schema!({"type": "string", "contentMediaType": "application/octet-stream"})
);

fixed_output!(
    PrometheusText,
    "OpenMetrics text exposition (docs/api.md \"Metrics\").",
    crate::ops::OPENMETRICS_TEXT,
    json_schema!({"type": "string"})
);

fixed_output!(
    crate::ops::StatusLine,
    "A plain-text status: `ok` (/healthz); `ready` then `head`, `writer` and `lag_events` lines (/readyz).",
    crate::ops::PLAIN_TEXT,
    json_schema!({"type": "string"})
);

fixed_output!(
    EventStream,
    "Server-Sent Events: `id` = store position, `event` = event type, `data` = {position, event_type, stream, occurred_at}.",
    "text/event-stream",
    json_schema!({"type": "string"})
);

/// Declares each `{name}` of the route templates that no handler type
/// declared as a string path parameter (handlers take their path segments
/// as strings and parse them into identifiers, with the API's own
/// problems), and the client-certificate security scheme.
pub(crate) fn complete(api: &mut aide::openapi::OpenApi) {
    for (path, item) in api.paths.iter_mut().flat_map(|p| p.paths.iter_mut()) {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for name in &names {
                let declared = operation.parameters.iter().any(
                    |p| matches!(p, ReferenceOr::Item(p) if p.parameter_data_ref().name == *name),
                );
                if !declared {
                    operation.parameters.push(ReferenceOr::Item(doc(json!({
                        "in": "path", "name": name, "required": true,
                        "schema": {"type": "string"},
                    }))));
                }
            }
        }
    }
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        CLIENT_CERTIFICATE_SCHEME.to_owned(),
        ReferenceOr::Item(doc(json!({
            "type": "mutualTLS",
            "description": "A client certificate issued by the platform CA whose URI SAN names the principal (docs/api.md).",
        }))),
    );
    components.security_schemes.insert(
        PERSON_SESSION_SCHEME.to_owned(),
        ReferenceOr::Item(doc(json!({
            "type": "http",
            "scheme": "bearer",
            "description": "The token of a person's session, opened with the person's My Number card (POST /v1/me/challenge, POST /v1/me/sessions; docs/api.md \"The person's view\").",
        }))),
    );
}
