-- Compact rows (issue 18 item 3, docs/store.md "Compact rows"): from this
-- version on, `payload` holds either the text appended (TEXT, as before) or
-- a zstd frame of that text compressed with the dictionary shipped in kiban
-- (BLOB), whichever is shorter. A column of SQLite holds either storage
-- class, so the table itself does not change; rows written before keep
-- their text. This migration only records the version, so that both
-- backends have the same migrations and a database opened by this version
-- is never written by an older one unnoticed.
SELECT 1;
