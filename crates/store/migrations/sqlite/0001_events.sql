-- The event log. One row per event; the writer assigns position and version
-- itself, so positions are gapless and in commit order. `position` is the
-- rowid. Times are microseconds since the Unix epoch (the precision the
-- canonical encoding keeps); ids and hashes are raw bytes; the payload is the
-- JSON text exactly as appended.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY CHECK (position >= 1),
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_id        BLOB    NOT NULL CHECK (length(event_id) = 16),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version BETWEEN 1 AND 65535),
    occurred_at     INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    correlation_id  BLOB    NOT NULL CHECK (length(correlation_id) = 16),
    causation_id    BLOB    CHECK (causation_id IS NULL OR length(causation_id) = 16),
    payload         TEXT    NOT NULL,
    prev_hash       BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32)
);

CREATE UNIQUE INDEX events_stream_version ON events (stream, version);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
