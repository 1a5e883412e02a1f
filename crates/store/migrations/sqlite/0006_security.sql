-- Who uploaded each blob, and the media type they declared (issue 16, item 2).
-- Blobs are content-addressed, so the same bytes may be uploaded by several
-- principals: one row per (blob, uploader, media type). A subsidy application
-- may attach only blobs its applicant uploaded, with the media type recorded
-- here. Blobs stored before this migration have no row: nobody can attach
-- them to a new application until they are uploaded again. `uploaded_at` is
-- microseconds since the Unix epoch, like the events' times.
CREATE TABLE blob_uploads (
    sha256      BLOB    NOT NULL REFERENCES blobs (sha256),
    uploader    TEXT    NOT NULL CHECK (length(uploader) BETWEEN 1 AND 64),
    media_type  TEXT    NOT NULL CHECK (length(media_type) BETWEEN 1 AND 127),
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (sha256, uploader, media_type)
);

-- The digest of the command each API Idempotency-Key was first used for
-- (issue 16, item 12): SHA-256 over the route, the principal and the
-- canonical body. A retry with the same digest gets the first answer; the
-- same key with another digest is refused (409) before anything is decided.
-- Keys used before this migration have no row and are claimed by their next
-- use. `command_id` is the key's 16 bytes; `claimed_at` microseconds since
-- the Unix epoch.
CREATE TABLE command_keys (
    command_id  BLOB    PRIMARY KEY CHECK (length(command_id) = 16),
    digest      BLOB    NOT NULL CHECK (length(digest) = 32),
    claimed_at  INTEGER NOT NULL
);

-- Linked checkpoints (issue 16, item 11): each checkpoint signed from now on
-- also signs the position of the checkpoint before it (0 for the first), so
-- deleting a checkpoint row leaves a later signature naming a row that is not
-- there, which verification reports. NULL for checkpoints signed before.
ALTER TABLE audit_checkpoints ADD COLUMN previous_position BIGINT
    CHECK (previous_position IS NULL OR previous_position >= 0);
