-- Lean rows (issue 18 item 3, docs/store.md "Lean rows"): `prev_hash` is
-- dropped. It is always the `hash` of the row before (genesis, 32 zero
-- bytes, before position 1), so reads select that instead and verification
-- carries it along the walk; the canonical bytes and the hash of every
-- event are unchanged. SQLite rewrites every row to drop the column.
-- (Event types and actors stay text here: SQLite stores a row without
-- padding and its store meets the size goal without a name table.)
ALTER TABLE events DROP COLUMN prev_hash;
