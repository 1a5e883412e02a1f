//! Security regressions (issue 16): each test reproduces a defect an outside
//! review or a tamper trial found, and fails on the code before its fix.
//! `docs/security.md` lists which test covers which item.

mod access_log;
mod attachments;
mod connections;
mod edges;
mod files;
mod idempotency;
mod ingest_ids;
mod large_bodies;
mod revocation;
mod sharing;
mod staff_login;
mod streams;
mod tail_deletion;
