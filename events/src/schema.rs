//! JSON Schemas of the values that travel outside events (the API's bodies
//! and answers; later the NATS messages), behind the `schema` feature.
//!
//! Plain enums and structs derive `schemars::JsonSchema` where they are
//! defined (`cfg_attr(feature = "schema", ...)`); the validated newtypes,
//! whose serde form is a string or number checked on the way in, are
//! described here, each by the rule its constructor checks.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::domain::{
    CopaymentRatio, DocumentRef, SealedValue, ServiceTypeCode, Sha256Digest, TerminalId,
};
use crate::envelope::Hash;
use crate::ids::{InsuredNumber, InsurerNumber, MedicalInstitutionCode, OfficeNumber};

/// Implements `JsonSchema` for a newtype serialised as one string that
/// matches `pattern`.
macro_rules! string_schema {
    ($type:ty, $description:literal, $pattern:literal) => {
        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                stringify!($type).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

string_schema!(InsurerNumber, "保険者番号: 6 digits.", "^[0-9]{6}$");
string_schema!(InsuredNumber, "被保険者番号: 10 digits.", "^[0-9]{10}$");
string_schema!(
    OfficeNumber,
    "介護保険事業所番号: 10 digits.",
    "^[0-9]{10}$"
);
string_schema!(
    MedicalInstitutionCode,
    "医療機関コード: 10 digits.",
    "^[0-9]{10}$"
);
string_schema!(
    Sha256Digest,
    "SHA-256: 64 lower-case hex digits.",
    "^[0-9a-f]{64}$"
);
string_schema!(Hash, "A chain hash: 64 hex digits.", "^[0-9a-fA-F]{64}$");
string_schema!(
    ServiceTypeCode,
    "サービス種類コード: 2 digits or letters.",
    "^[0-9A-Z]{2}$"
);
string_schema!(
    TerminalId,
    "アクセスコード (端末固有ID): 1–64 ASCII letters, digits, '.', '_' or '-'.",
    "^[A-Za-z0-9._-]{1,64}$"
);
string_schema!(
    SealedValue,
    "Personal data sealed with the person's key: 1–4096 printable ASCII bytes.",
    "^[ -~]{1,4096}$"
);

impl JsonSchema for CopaymentRatio {
    fn schema_name() -> Cow<'static, str> {
        "CopaymentRatio".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "enum": [1, 2, 3],
            "description": "利用者負担割合: 1割, 2割 or 3割.",
        })
    }
}

impl JsonSchema for DocumentRef {
    fn schema_name() -> Cow<'static, str> {
        "DocumentRef".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A stored document: its digest, media type and size.",
            "properties": {
                "sha256": generator.subschema_for::<Sha256Digest>(),
                "media_type": {"type": "string", "pattern": "^[^/\\s]+/[^/\\s]+$"},
                "size_bytes": {"type": "integer", "minimum": 1, "maximum": crate::domain::values::DOCUMENT_BYTES_MAX},
            },
            "required": ["sha256", "media_type", "size_bytes"],
            "additionalProperties": false,
        })
    }
}
