-- The idle timeout of staff sessions of the office web screen (issue 16,
-- item 6; kiban-api's `ui::staff`, docs/ui.md): the end of a session's idle
-- time, in microseconds since the Unix epoch, moved forward each time the
-- session is used. Sessions opened before this migration get 0: they have
-- been idle too long, and their staff log in again. One file for both
-- backends: `postgres/` and `sqlite/` link to it.
ALTER TABLE ui_sessions ADD COLUMN idle_until_us BIGINT NOT NULL DEFAULT 0;
