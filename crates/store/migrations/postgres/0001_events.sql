-- The event log. One row per event; the writer assigns position and version
-- itself (no sequence), so positions are gapless and in commit order.
-- The payload is TEXT, not JSONB: JSONB would re-serialise it and change the
-- bytes the hash chain covers.
CREATE TABLE events (
    position        BIGINT      PRIMARY KEY CHECK (position >= 1),
    stream          TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version >= 1),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version BETWEEN 1 AND 65535),
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    actor           TEXT        NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID,
    payload         TEXT        NOT NULL,
    prev_hash       BYTEA       NOT NULL CHECK (length(prev_hash) = 32),
    hash            BYTEA       NOT NULL CHECK (length(hash) = 32)
);

CREATE UNIQUE INDEX events_stream_version ON events (stream, version);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
