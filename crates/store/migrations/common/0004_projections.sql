-- The read models' document store (kiban-projections, docs/projections.md).
-- A projection is rebuilt into a new *generation* beside the served one and
-- swapped in: generations are rows (the `generation` column), not tables, so
-- these four tables are the whole schema and nothing creates tables at run
-- time. JSON is kept as TEXT. One file for both backends: `postgres/` and
-- `sqlite/` link to it.
--
-- IF NOT EXISTS, once: before this migration, kiban-projections created these
-- tables itself when it opened (`CREATE TABLE IF NOT EXISTS` at run time),
-- with exactly these definitions. A database made by that code already has
-- them, and this migration adopts them as they are; on a new database it
-- creates them. Later migrations change them without IF NOT EXISTS.

-- Which generation of each projection is served, and the projection's schema
-- version when that generation was built.
CREATE TABLE IF NOT EXISTS projection_live (
    projection TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    schema_version BIGINT NOT NULL);

-- The last applied position of each generation, written in the same
-- transaction as its documents (a crash never applies an event twice).
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (projection, generation));

-- The documents: one JSON text per key.
CREATE TABLE IF NOT EXISTS projection_documents (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    doc_key TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (projection, generation, doc_key));

-- Secondary lookups (an office's caseload, an insurer's open applications).
CREATE TABLE IF NOT EXISTS projection_index (
    projection TEXT NOT NULL,
    generation BIGINT NOT NULL,
    index_name TEXT NOT NULL,
    index_key TEXT NOT NULL,
    doc_key TEXT NOT NULL,
    PRIMARY KEY (projection, generation, index_name, index_key, doc_key));

CREATE INDEX IF NOT EXISTS projection_index_by_doc
    ON projection_index (projection, generation, index_name, doc_key);
