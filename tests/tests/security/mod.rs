//! Security regressions (issue 16): each test reproduces a defect an outside
//! review or a tamper trial found, and fails on the code before its fix.
//! `docs/security.md` lists which test covers which item.

mod access_log;
mod attachment_quota;
mod attachments;
mod blob_cleanup;
mod card_crl;
mod care_plan;
mod challenges;
mod connections;
mod edges;
mod files;
mod idempotency;
mod ingest_ids;
mod large_bodies;
mod matrix;
mod own_api;
mod revocation;
mod same_origin;
mod sharing;
mod staff_login;
mod stolen_terminal;
mod streams;
mod subsidy_index;
mod tail_deletion;
mod uploads;

/// A web-screen session of a staff member of the main office at terminal
/// T-01, opened at the harness's "now" (day 30).
pub(crate) async fn staff_session(h: &crate::api::Harness) -> kiban_api::ui::staff::NewSession {
    use crate::projections::script::{TERMINAL, day, office};
    use kiban_api::ui::staff::{self, LoginOutcome};
    let db = h.projections.db();
    let password = "a long enough password";
    staff::add_staff(db, &office(), "sato.care", password)
        .await
        .unwrap();
    match staff::login(db, &office(), TERMINAL, "sato.care", password, day(30))
        .await
        .unwrap()
    {
        LoginOutcome::Opened(session) => session,
        LoginOutcome::Refused => panic!("the right password opens a session"),
    }
}
