-- The clean-up of unattached uploads (issue 16, Low; docs/security.md
-- "Unattached uploads"). `blob_references`: every digest a recorded event
-- names, with the position of the first event naming it, found by the sweep
-- reading the log from `blob_sweep.scanned_through` on. A blob named here is
-- never removed (the event is evidence; its bytes must stay readable). A
-- digest may be named without its bytes being stored here.
CREATE TABLE blob_references (
    sha256    BLOB   PRIMARY KEY CHECK (length(sha256) = 32),
    position  INTEGER NOT NULL CHECK (position >= 1)
);

-- How far the sweep has read the log (one row).
CREATE TABLE blob_sweep (
    id               INTEGER  PRIMARY KEY CHECK (id = 1),
    scanned_through  INTEGER  NOT NULL CHECK (scanned_through >= 0)
);
INSERT INTO blob_sweep (id, scanned_through) VALUES (1, 0);

-- The sweep looks for blobs stored before the retention's cutoff.
CREATE INDEX blobs_by_stored_at ON blobs (stored_at, sha256);
