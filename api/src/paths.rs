//! The API's paths, built from their parts: the one place outside the
//! router (`routes.rs`, which keeps its own templates) that spells them.
//! The typed client ([`crate::client`]) builds its requests from these;
//! programs that print or measure a request without the client (the
//! demo's log lines, `bench api`'s load generator, the development curl
//! examples) use them too.

use std::fmt::Display;

/// `GET /v1/openapi.json`.
pub const OPENAPI: &str = "/v1/openapi.json";
/// `GET /v1/terminals`.
pub const TERMINALS: &str = "/v1/terminals";
/// `GET /v1/access-log`.
pub const ACCESS_LOG: &str = "/v1/access-log";
/// `GET|POST /v1/subsidies`.
pub const SUBSIDIES: &str = "/v1/subsidies";

/// `/v1/insurers`: the federation onboards an insurer.
pub const INSURERS: &str = "/v1/insurers";
/// `POST /v1/attachments`.
pub const ATTACHMENTS: &str = "/v1/attachments";
/// `GET /v1/audit/verify`.
pub const AUDIT_VERIFY: &str = "/v1/audit/verify";
/// `POST /v1/consents/challenge`.
pub const CONSENT_CHALLENGE: &str = "/v1/consents/challenge";
/// `POST /v1/consents/card`.
pub const CARD_CONSENT: &str = "/v1/consents/card";

/// `GET /v1/me`: the signed-in person's record.
pub const ME: &str = "/v1/me";
/// `POST /v1/me/challenge`.
pub const ME_CHALLENGE: &str = "/v1/me/challenge";
/// `POST /v1/me/sessions`.
pub const ME_SESSIONS: &str = "/v1/me/sessions";
/// `DELETE /v1/me/session`.
pub const ME_SESSION: &str = "/v1/me/session";
/// `GET /v1/me/access-log`.
pub const ME_ACCESS_LOG: &str = "/v1/me/access-log";

/// `/v1/me/documents/{sha256}`.
pub fn me_document(sha256: impl Display) -> String {
    format!("{ME}/documents/{sha256}")
}

/// `/v1/me/consents/{office}`.
pub fn me_consent(office: impl Display) -> String {
    format!("{ME}/consents/{office}")
}

/// `/v1/persons/{insurer}/{insured}<rest>` (`rest` empty or starting with `/`).
pub fn person(insurer: impl Display, insured: impl Display, rest: &str) -> String {
    format!("/v1/persons/{insurer}/{insured}{rest}")
}

/// `/v1/offices/{office}<rest>` (`rest` empty or starting with `/`).
pub fn office(office: impl Display, rest: &str) -> String {
    format!("/v1/offices/{office}{rest}")
}

/// `/v1/offices/{office}/caseload`.
pub fn caseload(office: impl Display) -> String {
    self::office(office, "/caseload")
}

/// `/v1/offices/{office}/terminals/{terminal}/lost`.
pub fn terminal_lost(office: impl Display, terminal: impl Display) -> String {
    self::office(office, &format!("/terminals/{terminal}/lost"))
}

/// `/v1/insurers/{insurer}<rest>` (`rest` empty or starting with `/`).
pub fn insurer(insurer: impl Display, rest: &str) -> String {
    format!("/v1/insurers/{insurer}{rest}")
}

/// `/v1/medical/{institution}/opinion-requests`.
pub fn opinion_requests(institution: impl Display) -> String {
    format!("/v1/medical/{institution}/opinion-requests")
}

/// `/v1/subsidies/{application}<rest>` (`rest` empty or starting with `/`).
pub fn subsidy(application: impl Display, rest: &str) -> String {
    format!("{SUBSIDIES}/{application}{rest}")
}

/// `/v1/audit/persons/{insurer}/{insured}`.
pub fn audit_person(insurer: impl Display, insured: impl Display) -> String {
    format!("/v1/audit/persons/{insurer}/{insured}")
}

/// `/v1/audit/offices/{office}/access-log`.
pub fn audit_office_access_log(office: impl Display) -> String {
    format!("/v1/audit/offices/{office}/access-log")
}
