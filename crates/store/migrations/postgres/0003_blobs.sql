-- Content-addressed document bodies (DESIGN.md decision 12): the investigation
-- sheet (認定調査票), the doctor's opinion (主治医意見書), subsidy attachments.
-- Events carry only the digest, media type and size; the bytes live here,
-- keyed by their SHA-256, written once and never changed.
CREATE TABLE blobs (
    sha256      BYTEA       PRIMARY KEY CHECK (length(sha256) = 32),
    size_bytes  BIGINT      NOT NULL CHECK (size_bytes >= 1),
    content     BYTEA       NOT NULL CHECK (length(content) = size_bytes),
    stored_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
