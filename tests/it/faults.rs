//! Store failures: a full database and a lock held by another process give
//! `Server error, try again later`, never a half-written user, and the server
//! keeps serving what it can.

use crate::common;

use common::*;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

fn count_users(app: &TestApp) -> i64 {
    rusqlite::Connection::open(&app.db_path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM USERS", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_full_database_refuses_registration_cleanly() {
    let app = spawn_app();
    app.register("early", PW);
    let store = &app.sqlite;
    store.set_max_pages(store.page_count().unwrap()).unwrap();

    let mut c = app.client();
    c.expect_greeting();
    let mut refused = None;
    for i in 0..500 {
        let out = c.register(&format!("filler{i}"), PW);
        if out[0] == "Server error, try again later" {
            assert_eq!(out, vec!["Server error, try again later", MAIN_MENU]);
            refused = Some(i);
            break;
        }
        assert_eq!(out[0], "User successfully registered!");
    }
    let i = refused.expect("the page cap must be reached");
    // Nothing half-written: the refused user is not there, the others are.
    assert_eq!(count_users(&app), 1 + i as i64);
    c.login_refused(&format!("filler{i}"), PW);
    // Logins keep working on the same session and on new ones.
    c.login_ok("early", PW);
    let mut other = app.client();
    other.expect_greeting();
    other.login_ok("early", PW);
    // Room again: registration works again.
    store.set_max_pages(1_000_000).unwrap();
    c.send("logout");
    c.expect_prompt("__type__");
    assert_eq!(c.register("later", PW)[0], "User successfully registered!");
}

#[test]
fn a_database_locked_by_another_process_gives_server_error_then_recovers() {
    let app = spawn_app();
    app.register("early", PW);
    // Another program holds the write lock (as sqlite3 in a shell could).
    let other = rusqlite::Connection::open(&app.db_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut c = app.client();
    c.expect_greeting();
    let started = Instant::now();
    assert_eq!(
        c.register("blocked", PW),
        vec!["Server error, try again later", MAIN_MENU]
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "waited {waited:?} for the lock (5 s expected)"
    );
    // Reads still work while the other process holds the write lock (WAL).
    c.login_ok("early", PW);

    other.execute_batch("ROLLBACK").unwrap();
    c.send("logout");
    c.expect_prompt("__type__");
    assert_eq!(
        c.register("blocked", PW)[0],
        "User successfully registered!"
    );
    assert_eq!(count_users(&app), 2);
}
