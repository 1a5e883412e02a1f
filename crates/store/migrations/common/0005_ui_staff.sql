-- Staff accounts, sessions and the staff access log of the office web screen
-- (kiban-api's `ui::staff`, docs/ui.md): beside the event chain, never in it
-- (a password hash is not an event). Times are microseconds since the Unix
-- epoch. One file for both backends: `postgres/` and `sqlite/` link to it.
--
-- IF NOT EXISTS, once: before this migration, the web screen created these
-- tables itself at run time (`CREATE TABLE IF NOT EXISTS` at the first login
-- or `kiban admin staff add`), with exactly these definitions. A database
-- made by that code may already have them, and this migration adopts them as
-- they are; on a new database it creates them.

-- One row per office and user ID (スタッフ ID): the argon2id hash of the
-- password, consecutive failures and the end of a lockout.
CREATE TABLE IF NOT EXISTS ui_staff (
    office TEXT NOT NULL,
    user_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until_us BIGINT,
    PRIMARY KEY (office, user_id));

-- The SHA-256 of each session token (the token itself is only in the
-- browser's cookie), the staff member, the terminal it was opened on, its
-- CSRF token and expiry.
CREATE TABLE IF NOT EXISTS ui_sessions (
    token_sha256 TEXT PRIMARY KEY,
    office TEXT NOT NULL,
    user_id TEXT NOT NULL,
    terminal TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL);

-- Which staff member made each logged read: the position of the
-- `insured.record_viewed` event beside the user ID.
CREATE TABLE IF NOT EXISTS ui_staff_views (
    position BIGINT PRIMARY KEY,
    office TEXT NOT NULL,
    terminal TEXT NOT NULL,
    user_id TEXT NOT NULL,
    viewed_at_us BIGINT NOT NULL);
