-- Sessions of the person's own view (kiban-api's `me`, docs/api.md "The
-- person's view", docs/security.md): a person signed in with their My Number
-- card. Beside the event chain, never in it. The SHA-256 of each session
-- token (the token itself is only in the person's cookie or client), the
-- person it was opened for (保険者番号, 被保険者番号: the record the card is
-- linked to, never the Individual Number), the CSRF token of the web page's
-- forms and the session's end, in microseconds since the Unix epoch. One file
-- for both backends: `postgres/` and `sqlite/` link to it.
CREATE TABLE person_sessions (
    token_sha256 TEXT PRIMARY KEY,
    insurer TEXT NOT NULL,
    insured TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL);
CREATE INDEX person_sessions_expiry ON person_sessions (expires_at_us);
