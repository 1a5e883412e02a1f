-- Compact rows (issue 18 item 3, docs/store.md "Compact rows"): a payload is
-- stored either as the text appended (`payload`, as before) or as a zstd
-- frame of that text compressed with the dictionary shipped in kiban
-- (`payload_z`), whichever is shorter. The canonical bytes and the hash of
-- every event are unchanged: reading a row gives back exactly the text.
-- Rows written before this migration keep their text; nothing is rewritten,
-- so the migration takes no time on a large store. The constraint is only
-- checked for new rows (NOT VALID): every older row has its text.
ALTER TABLE events ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE events ADD COLUMN payload_z BYTEA;
ALTER TABLE events ADD CONSTRAINT events_payload_stored
    CHECK (payload IS NOT NULL OR payload_z IS NOT NULL) NOT VALID;
