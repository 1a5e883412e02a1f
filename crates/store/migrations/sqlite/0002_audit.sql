-- Audit: signed checkpoints of the hash chain, and the per-person data keys
-- of crypto-shredding. Both live outside the chain: a checkpoint signs the
-- chain, a key is destroyed when a person is forgotten (docs/audit.md).

-- A signed statement "the chain's event at `position` has hash `hash`",
-- made at `created_at` (µs since the epoch) with the Ed25519 key whose public
-- half is `public_key`. The signature covers the bytes documented in
-- docs/audit.md (domain tag, position, hash, time).
CREATE TABLE audit_checkpoints (
    position    INTEGER PRIMARY KEY CHECK (position >= 1),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    created_at  INTEGER NOT NULL,
    public_key  BLOB NOT NULL CHECK (length(public_key) = 32),
    signature   BLOB NOT NULL CHECK (length(signature) = 64)
);

-- One data key per person (`<insurer>-<insured>`). `key_id` names the key
-- inside sealed values; `data_key` is NULL once the person is forgotten: the
-- key is destroyed and every sealed value of the person is unreadable.
CREATE TABLE person_keys (
    person       TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL UNIQUE,
    data_key     BLOB CHECK (data_key IS NULL OR length(data_key) = 32),
    created_at   INTEGER NOT NULL,
    forgotten_at INTEGER
);
