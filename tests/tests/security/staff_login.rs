//! Staff login of the office web screen (issue 16, item 6): parallel wrong
//! guesses each count, argon2 runs off the runtime, an unknown user gets the
//! answer of a locked one, and sessions end on a password reset and after
//! their idle time. Through `staff::login` and `staff::session`, the
//! functions the `/ui/login` handler and every `/ui` page call, with the
//! clock passed in as the API state's clock passes it.

use kiban_api::ui::staff::{self, LoginOutcome};
use kiban_projections::Db;
use kiban_tests::TestDb;

use crate::projections::on_both_backends;
use crate::projections::script::{TERMINAL, day, office};

on_both_backends!(
    parallel_wrong_guesses_each_count_and_lock_the_account,
    an_unknown_user_gets_the_answer_of_a_locked_one,
    a_password_reset_ends_the_sessions,
    a_session_ends_after_its_idle_time,
);

const USER: &str = "sato.care";
const PASSWORD: &str = "correct horse battery staple";
const GUESSES: i64 = 200;

async fn with_account(db: &TestDb) -> Db {
    let db = Db::open(db.url()).await.unwrap();
    staff::add_staff(&db, &office(), USER, PASSWORD)
        .await
        .unwrap();
    db
}

async fn parallel_wrong_guesses_each_count_and_lock_the_account(db: &TestDb) {
    let db = with_account(db).await;
    let now = day(30);
    let guesses: Vec<_> = (0..GUESSES)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                staff::login(&db, &office(), TERMINAL, USER, &format!("guess {n}"), now).await
            })
        })
        .collect();
    for guess in guesses {
        assert_eq!(guess.await.unwrap().unwrap(), LoginOutcome::Refused);
    }
    let until = now + chrono::Duration::from_std(staff::LOCKOUT).unwrap();
    assert_eq!(
        staff::lockout(&db, &office(), USER).await.unwrap(),
        Some((GUESSES, Some(until))),
        "every wrong guess counts, and the account is locked"
    );
    // Locked: even the right password is refused until the lockout ends.
    assert_eq!(
        staff::login(&db, &office(), TERMINAL, USER, PASSWORD, now)
            .await
            .unwrap(),
        LoginOutcome::Refused
    );
    assert!(matches!(
        staff::login(&db, &office(), TERMINAL, USER, PASSWORD, until)
            .await
            .unwrap(),
        LoginOutcome::Opened(_)
    ));
    assert_eq!(
        staff::lockout(&db, &office(), USER).await.unwrap(),
        Some((0, None)),
        "a login after the lockout starts the count afresh"
    );
    db.close().await;
}

async fn an_unknown_user_gets_the_answer_of_a_locked_one(db: &TestDb) {
    let db = with_account(db).await;
    let now = day(30);
    for _ in 0..staff::LOGIN_FAILURES_MAX {
        staff::login(&db, &office(), TERMINAL, USER, "wrong password!", now)
            .await
            .unwrap();
    }
    // The locked account with a wrong and with the right password, and a
    // user ID that does not exist: one answer.
    let locked_wrong = staff::login(&db, &office(), TERMINAL, USER, "wrong again!", now)
        .await
        .unwrap();
    let locked_right = staff::login(&db, &office(), TERMINAL, USER, PASSWORD, now)
        .await
        .unwrap();
    let unknown = staff::login(&db, &office(), TERMINAL, "nobody.here", PASSWORD, now)
        .await
        .unwrap();
    assert_eq!(locked_wrong, unknown);
    assert_eq!(locked_right, unknown);
    assert_eq!(unknown, LoginOutcome::Refused);
    // The account is locked all the same, and each wrong guess counted
    // (the right password during the lockout is no failure).
    let (failures, locked) = staff::lockout(&db, &office(), USER)
        .await
        .unwrap()
        .expect("the account exists");
    assert_eq!(failures, staff::LOGIN_FAILURES_MAX + 1);
    assert!(locked.is_some_and(|until| until > now), "locked");
    // And the unknown user ID was not created by trying it.
    assert_eq!(
        staff::lockout(&db, &office(), "nobody.here").await.unwrap(),
        None
    );
    db.close().await;
}

async fn a_password_reset_ends_the_sessions(db: &TestDb) {
    let db = with_account(db).await;
    let now = day(30);
    let LoginOutcome::Opened(session) = staff::login(&db, &office(), TERMINAL, USER, PASSWORD, now)
        .await
        .unwrap()
    else {
        panic!("the right password opens a session");
    };
    assert!(
        staff::session(&db, &session.token, now)
            .await
            .unwrap()
            .is_some()
    );
    staff::add_staff(&db, &office(), USER, "a brand new long password")
        .await
        .unwrap();
    assert_eq!(
        staff::session(&db, &session.token, now).await.unwrap(),
        None,
        "a password reset ends the sessions opened with the old password"
    );
    // Another member of staff of the office keeps theirs.
    staff::add_staff(&db, &office(), "tanaka.care", PASSWORD)
        .await
        .unwrap();
    let LoginOutcome::Opened(other) =
        staff::login(&db, &office(), TERMINAL, "tanaka.care", PASSWORD, now)
            .await
            .unwrap()
    else {
        panic!("the other account logs in");
    };
    staff::add_staff(&db, &office(), USER, "yet another long password")
        .await
        .unwrap();
    assert!(
        staff::session(&db, &other.token, now)
            .await
            .unwrap()
            .is_some()
    );
    db.close().await;
}

async fn a_session_ends_after_its_idle_time(db: &TestDb) {
    let db = with_account(db).await;
    let now = day(30);
    let LoginOutcome::Opened(session) = staff::login(&db, &office(), TERMINAL, USER, PASSWORD, now)
        .await
        .unwrap()
    else {
        panic!("the right password opens a session");
    };
    let idle = chrono::Duration::from_std(staff::SESSION_IDLE).unwrap();
    let just_before = idle - chrono::Duration::seconds(1);
    // Used just before its idle time runs out, twice: each use restarts it,
    // so the session lives past one idle time from login.
    let first_use = now + just_before;
    assert!(
        staff::session(&db, &session.token, first_use)
            .await
            .unwrap()
            .is_some()
    );
    let second_use = first_use + just_before;
    assert!(second_use > now + idle);
    assert!(
        staff::session(&db, &session.token, second_use)
            .await
            .unwrap()
            .is_some()
    );
    // Left alone for the idle time: ended, long before its lifetime.
    let idle_end = second_use + idle;
    assert!(idle_end < now + chrono::Duration::from_std(staff::SESSION_LIFETIME).unwrap());
    assert_eq!(
        staff::session(&db, &session.token, idle_end).await.unwrap(),
        None
    );
    db.close().await;
}

/// argon2 runs off the runtime: on a single-threaded runtime, another task
/// runs while a login's hash is being computed. (With argon2 on the
/// runtime's thread, the other task could only run before or after it.)
async fn another_task_runs_while_a_login_hashes(db: &TestDb) {
    let db = with_account(db).await;
    let now = day(30);
    let mut seen = false;
    // Each login hashes once; one is enough, a few are tried in case a hash
    // ends before the other task is scheduled.
    for _ in 0..10 {
        let login = {
            let db = db.clone();
            tokio::spawn(async move {
                staff::login(&db, &office(), TERMINAL, USER, "wrong password!", now).await
            })
        };
        while !login.is_finished() {
            if staff::hashes_in_progress() > 0 {
                seen = true;
            }
            tokio::task::yield_now().await;
        }
        login.await.unwrap().unwrap();
        if seen {
            break;
        }
    }
    assert!(seen, "no task ran while a login was hashing");
    db.close().await;
}

mod current_thread {
    #[tokio::test(flavor = "current_thread")]
    async fn postgres_another_task_runs_while_a_login_hashes() {
        let db = kiban_tests::TestDb::new(kiban_tests::Backend::Postgres).await;
        super::another_task_runs_while_a_login_hashes(&db).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_another_task_runs_while_a_login_hashes() {
        let db = kiban_tests::TestDb::new(kiban_tests::Backend::Sqlite).await;
        super::another_task_runs_while_a_login_hashes(&db).await;
    }
}
