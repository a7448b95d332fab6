//! Integration tests: every flow and outcome line of wire protocol v1, against a
//! real server on 127.0.0.1:0 with a temporary SQLite file, over real sockets.

use crate::common;

use common::*;
use dccn_auth::crypto;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

// ---- the happy paths ---------------------------------------------------------

#[test]
fn register_login_and_every_logged_in_command() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    assert_eq!(
        c.register("alice", PW),
        vec!["User successfully registered!", MAIN_MENU]
    );
    c.login_ok("alice", PW);
    c.send("whoami");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["You are alice", USER_MENU]
    );
    c.send("ls");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["root home etc lib media mnt", USER_MENU]
    );
    c.send("logout");
    assert_eq!(c.expect_prompt("__type__"), vec![MAIN_MENU]);
    c.quit();
}

#[test]
fn quit_from_the_logged_in_menu_closes() {
    let app = spawn_app();
    app.register("bob", PW);
    let mut c = logged_in(&app, "bob", PW);
    c.quit();
}

#[test]
fn stored_row_is_salt_and_verifier_never_the_password() {
    let app = spawn_app();
    app.register("carol", PW);
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    let (verifier, salt): (String, String) = db
        .query_row(
            "SELECT password, salt FROM USERS WHERE login = 'carol'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(crypto::is_token(&salt));
    assert_eq!(verifier, crypto::verifier(&salt, PW));
    assert!(!verifier.contains(PW));
}

#[test]
fn command_words_are_trimmed_and_case_sensitive() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    c.send("  LOGIN ");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", MAIN_MENU]
    );
    // Tabs are not spaces: only spaces are trimmed.
    c.send("register\t");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", MAIN_MENU]
    );
    c.send("  register  ");
    c.expect_prompt("__username__");
}

#[test]
fn unrecognized_type_in_both_menus() {
    let app = spawn_app();
    app.register("dave", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("whoami");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", MAIN_MENU]
    );
    c.login_ok("dave", PW);
    c.send("register");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", USER_MENU]
    );
}

// ---- register: names, passwords, retries --------------------------------------

#[test]
fn register_taken_and_invalid_names_retry_up_to_three_tries() {
    let app = spawn_app();
    app.register("erin", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("register");
    c.expect_prompt("__username__");
    c.send("erin");
    assert_eq!(
        c.expect_prompt("__username__"),
        vec!["Username already taken, try something else"]
    );
    c.send("bad name");
    let lines = c.expect_prompt("__username__");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("Username is invalid"), "{lines:?}");
    c.send("__type__");
    let lines = c.expect_prompt("__type__");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("Username is invalid"), "{lines:?}");
    assert_eq!(lines[1..], ["Too many attempts", MAIN_MENU]);
}

#[test]
fn username_rule_at_register() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    for bad in ["", "has space", "a__b", &"x".repeat(33)] {
        c.send("register");
        c.expect_prompt("__username__");
        c.send(bad);
        let lines = c.expect_prompt("__username__");
        assert!(
            lines[0].starts_with("Username is invalid"),
            "{bad:?}: {lines:?}"
        );
        c.send("ok.name-1");
        c.expect_prompt("__password__");
        // Give up at the password prompt: three mismatches.
        for _ in 0..3 {
            c.send("Passw0rd1");
            c.expect_prompt("__password__");
            c.send("Passw0rd2");
            let _ = c.until_prompt();
        }
    }
}

#[test]
fn password_mismatch_is_checked_before_the_rule_and_three_tries_end_it() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    c.send("register");
    c.expect_prompt("__username__");
    c.send("frank");
    c.expect_prompt("__password__");
    // Both weak and different: the mismatch is reported.
    c.send("weak");
    c.expect_prompt("__password__");
    c.send("weaker");
    assert_eq!(
        c.expect_prompt("__password__"),
        vec!["Passwords are not the same, try again"]
    );
    // Same but breaking the rule.
    c.send("password");
    c.expect_prompt("__password__");
    c.send("password");
    let lines = c.expect_prompt("__password__");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("Password is invalid"), "{lines:?}");
    // Third failure: reason, then Too many attempts, then the main menu.
    c.send("Passw0rd1");
    c.expect_prompt("__password__");
    c.send("Passw0rd2");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec![
            "Passwords are not the same, try again",
            "Too many attempts",
            MAIN_MENU
        ]
    );
    // Nothing was stored.
    c.login_refused("frank", "Passw0rd1");
}

#[test]
fn password_rule_counts_unicode_characters() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    // 8 characters, 10 bytes, upper/lower/digit: accepted.
    assert_eq!(
        c.register("ulla", "Äbcdef1g"),
        vec!["User successfully registered!", MAIN_MENU]
    );
    c.login_ok("ulla", "Äbcdef1g");
}

// ---- login ---------------------------------------------------------------------

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = spawn_app();
    app.register("gina", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.login_refused("gina", "Wrong0ne!");
    c.login_refused("nobody", PW);
    c.login_refused("not a valid name", PW);
    c.login_ok("gina", PW);
}

#[test]
fn unknown_user_salt_is_stable_across_tries_and_restarts() {
    let mut app = spawn_app();
    let salt_of = |addr| {
        let mut c = TestClient::connect(addr);
        c.expect_greeting();
        c.send("login");
        c.expect_prompt("__username__");
        c.send("ghost");
        let (salt, nonce) = c.expect_challenge();
        c.send("00");
        assert_eq!(
            c.expect_prompt("__type__"),
            vec!["User or password incorrect", MAIN_MENU]
        );
        (salt, nonce)
    };
    let (s1, n1) = salt_of(app.addr);
    let (s2, n2) = salt_of(app.addr);
    assert!(crypto::is_token(&s1));
    assert_eq!(s1, s2, "same salt on every try");
    assert_ne!(n1, n2, "a fresh nonce every time");
    app.handle.shutdown(Duration::from_secs(2));
    let again = start(&config_for(app.db_path.clone()), |_| {});
    assert_eq!(salt_of(again.addr()).0, s1, "same salt after a restart");
}

#[test]
fn a_replayed_response_is_refused() {
    let app = spawn_app();
    app.register("hank", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("login");
    c.expect_prompt("__username__");
    c.send("hank");
    let (salt, nonce) = c.expect_challenge();
    let captured = crypto::response(&nonce, &crypto::verifier(&salt, PW));
    c.send(&captured);
    c.expect_prompt("__type__");
    c.send("logout");
    c.expect_prompt("__type__");
    c.send("login");
    c.expect_prompt("__username__");
    c.send("hank");
    c.expect_challenge();
    c.send(&captured);
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["User or password incorrect", MAIN_MENU]
    );
}

// ---- change_password and delete_account ------------------------------------------

#[test]
fn change_password_behind_a_fresh_challenge() {
    let app = spawn_app();
    app.register("iris", PW);
    let mut c = logged_in(&app, "iris", PW);
    let old_salt = |app: &TestApp| -> String {
        rusqlite::Connection::open(&app.db_path)
            .unwrap()
            .query_row("SELECT salt FROM USERS WHERE login='iris'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let salt_before = old_salt(&app);

    // A wrong answer: refused, still logged in.
    c.send("change_password");
    c.answer_challenge("Wr0ngPassword");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["User or password incorrect", USER_MENU]
    );
    c.send("whoami");
    assert_eq!(c.expect_prompt("__type__")[0], "You are iris");

    // The right answer, then a mismatch, then a good new password.
    c.send("change_password");
    c.answer_challenge(PW);
    c.expect_prompt("__password__");
    c.send("N3wPassword");
    assert_eq!(c.expect_prompt("__password__"), vec!["Repeat password"]);
    c.send("N3wPasswordX");
    assert_eq!(
        c.expect_prompt("__password__"),
        vec!["Passwords are not the same, try again"]
    );
    c.send("N3wPassword");
    c.expect_prompt("__password__");
    c.send("N3wPassword");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Password successfully changed", USER_MENU]
    );
    assert_ne!(
        old_salt(&app),
        salt_before,
        "a new salt with the new password"
    );

    let mut other = app.client();
    other.expect_greeting();
    other.login_refused("iris", PW);
    other.login_ok("iris", "N3wPassword");
}

#[test]
fn change_password_gives_up_after_three_bad_new_passwords() {
    let app = spawn_app();
    app.register("jack", PW);
    let mut c = logged_in(&app, "jack", PW);
    c.send("change_password");
    c.answer_challenge(PW);
    // Three times a password that breaks the rule (7 characters); each reason
    // arrives with the next prompt.
    for _ in 0..3 {
        c.expect_prompt("__password__");
        c.send("short1A");
        c.expect_prompt("__password__");
        c.send("short1A");
    }
    let lines = c.expect_prompt("__type__");
    assert!(lines[0].starts_with("Password is invalid"), "{lines:?}");
    assert_eq!(lines[1..], ["Too many attempts", USER_MENU]);
    let mut other = app.client();
    other.expect_greeting();
    other.login_ok("jack", PW);
}

#[test]
fn delete_account_behind_a_fresh_challenge() {
    let app = spawn_app();
    app.register("kate", PW);
    let mut c = logged_in(&app, "kate", PW);
    c.send("delete_account");
    c.answer_challenge("Wr0ngPassword");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["User or password incorrect", USER_MENU]
    );
    c.send("delete_account");
    c.answer_challenge(PW);
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Your account was removed from system", MAIN_MENU]
    );
    c.login_refused("kate", PW);
    // The name is free again.
    assert_eq!(
        c.register("kate", PW),
        vec!["User successfully registered!", MAIN_MENU]
    );
}

// ---- persistence and the database ---------------------------------------------

#[test]
fn users_survive_a_restart() {
    let mut app = spawn_app();
    app.register("liam", PW);
    app.handle.shutdown(Duration::from_secs(2));
    let again = start(&config_for(app.db_path.clone()), |_| {});
    let mut c = TestClient::connect(again.addr());
    c.expect_greeting();
    c.login_ok("liam", PW);
}

#[test]
fn a_database_made_by_the_original_schema_works_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    {
        // What the original Python server creates, with a user it registered.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT);")
            .unwrap();
        let salt = "6d5da35ec7a5497e9b96ce8e88562747";
        db.execute(
            "INSERT INTO USERS VALUES ('legacy', ?1, ?2)",
            [crypto::verifier(salt, "Passw0rdDemo"), salt.to_string()],
        )
        .unwrap();
    }
    let handle = start(&config_for(path.clone()), |_| {});
    let mut c = TestClient::connect(handle.addr());
    c.expect_greeting();
    c.login_ok("legacy", "Passw0rdDemo");
    c.send("logout");
    c.expect_prompt("__type__");
    assert_eq!(
        c.register("newbie", PW),
        vec!["User successfully registered!", MAIN_MENU]
    );
    let db = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM USERS", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn two_clients_racing_for_one_name_exactly_one_wins() {
    let app = spawn_app();
    // Both pass the "is it free?" check before either commits.
    let mut a = app.client();
    let mut b = app.client();
    for c in [&mut a, &mut b] {
        c.expect_greeting();
        c.send("register");
        c.expect_prompt("__username__");
        c.send("mia");
        c.expect_prompt("__password__");
        c.send(PW);
        c.expect_prompt("__password__");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = [a, b]
        .into_iter()
        .map(|mut c| {
            let tx = tx.clone();
            thread::spawn(move || {
                c.send(PW);
                tx.send(c.expect_prompt("__type__")).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut outcomes: Vec<Vec<String>> = rx.try_iter().collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            vec![
                "User successfully registered!".to_string(),
                MAIN_MENU.into()
            ],
            vec![
                "Username already taken, try something else".to_string(),
                MAIN_MENU.into()
            ],
        ]
    );
}

#[test]
fn many_concurrent_registrations_are_all_stored() {
    let app = spawn_app();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = app.addr;
            thread::spawn(move || {
                for i in 0..10 {
                    let mut c = TestClient::connect(addr);
                    c.expect_greeting();
                    assert_eq!(
                        c.register(&format!("user{t}x{i}"), PW)[0],
                        "User successfully registered!"
                    );
                    c.quit();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM USERS", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 80);
}

// ---- throttling -------------------------------------------------------------------

#[test]
fn five_failures_close_the_pair_but_not_other_addresses() {
    let app = spawn_app();
    app.register("nina", PW);
    let mut attacker = app.client_from([127, 0, 0, 2]);
    attacker.expect_greeting();
    for _ in 0..5 {
        attacker.login_refused("nina", "Guess1234");
    }
    // Now even the right password is refused from this address, at once.
    let t = Instant::now();
    attacker.login_refused("nina", PW);
    assert!(t.elapsed() < Duration::from_millis(500), "answered at once");
    // The real user elsewhere is not locked out.
    let mut real = app.client_from([127, 0, 0, 3]);
    real.expect_greeting();
    real.login_ok("nina", PW);
    // After the 1 s window the attacker's address may try again.
    thread::sleep(Duration::from_millis(1100));
    attacker.login_ok("nina", PW);
}

#[test]
fn challenges_held_open_on_many_connections_cannot_dodge_the_throttle() {
    let app = spawn_app();
    app.register("zoe", PW);
    // Six connections from one address all get a challenge first...
    let mut conns: Vec<TestClient> = (0..6)
        .map(|_| {
            let mut c = app.client_from([127, 0, 0, 8]);
            c.expect_greeting();
            c.send("login");
            c.expect_prompt("__username__");
            c.send("zoe");
            c
        })
        .collect();
    // ...five answer wrong, which opens the window...
    for c in &mut conns[..5] {
        c.answer_challenge("Guess1234");
        assert_eq!(c.expect_prompt("__type__")[0], "User or password incorrect");
    }
    // ...so the sixth, answering right inside it, is not checked.
    let last = &mut conns[5];
    last.answer_challenge(PW);
    assert_eq!(
        last.expect_prompt("__type__")[0],
        "User or password incorrect"
    );
}

#[test]
fn a_success_resets_the_pair() {
    let app = spawn_app();
    app.register("olga", PW);
    let mut c = app.client_from([127, 0, 0, 4]);
    c.expect_greeting();
    for _ in 0..4 {
        c.login_refused("olga", "Guess1234");
    }
    c.login_ok("olga", PW);
    c.send("logout");
    c.expect_prompt("__type__");
    for _ in 0..4 {
        c.login_refused("olga", "Guess1234");
    }
    c.login_ok("olga", PW);
}

#[test]
fn twenty_failures_from_one_address_close_it_for_every_name() {
    let app = spawn_app();
    app.register("pete", PW);
    let mut c = app.client_from([127, 0, 0, 5]);
    c.expect_greeting();
    // Unknown names count exactly like wrong passwords.
    for i in 0..20 {
        c.login_refused(&format!("nobody{i}"), "Guess1234");
    }
    c.login_refused("pete", PW);
    let mut elsewhere = app.client_from([127, 0, 0, 6]);
    elsewhere.expect_greeting();
    elsewhere.login_ok("pete", PW);
}

#[test]
fn reauthentication_failures_count_for_throttling() {
    let app = spawn_app();
    app.register("quinn", PW);
    let mut c = app.client_from([127, 0, 0, 7]);
    c.expect_greeting();
    c.login_ok("quinn", PW);
    for _ in 0..5 {
        c.send("delete_account");
        c.answer_challenge("Guess1234");
        assert_eq!(
            c.expect_prompt("__type__"),
            vec!["User or password incorrect", USER_MENU]
        );
    }
    c.send("delete_account");
    c.answer_challenge(PW);
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["User or password incorrect", USER_MENU],
        "throttled: even the right password is not checked"
    );
}

// ---- framing and hostile input ------------------------------------------------------

#[test]
fn a_huge_line_without_newline_is_cut_off() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    let writer = c.tcp.try_clone().unwrap();
    // The server closes early; the writer may see a reset: that is fine.
    let feeder = thread::spawn(move || {
        let mut w = writer;
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..16 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let out = String::from_utf8_lossy(&c.read_to_close()).to_string();
    assert_eq!(out, "Error: line too long\n__quit__\n");
    feeder.join().unwrap();
}

#[test]
fn a_line_of_exactly_1024_bytes_is_accepted_and_1025_is_not() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    c.send(&"x".repeat(1024));
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", MAIN_MENU]
    );
    c.send(&"x".repeat(1025));
    assert_eq!(c.rest(), vec!["Error: line too long", "__quit__"]);
}

#[test]
fn invalid_utf8_ends_the_session() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    c.send_raw(b"log\xffin\n");
    assert_eq!(c.rest(), vec!["Error: invalid UTF-8", "__quit__"]);
}

#[test]
fn crlf_line_endings_are_accepted() {
    let app = spawn_app();
    app.register("rita", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send_raw(b"login\r\n");
    c.expect_prompt("__username__");
    c.send_raw(b"rita\r\n");
    let (salt, nonce) = c.expect_challenge();
    let r = crypto::response(&nonce, &crypto::verifier(&salt, PW));
    c.send_raw(format!("{r}\r\n").as_bytes());
    assert_eq!(c.expect_prompt("__type__")[0], "Successfully login");
}

#[test]
fn a_slow_trickle_is_cut_off_at_the_reply_deadline() {
    let app = spawn_app_with(|c| c.login_timeout = Duration::from_secs(1), |_| {});
    let mut c = app.client();
    c.expect_greeting();
    let started = Instant::now();
    let mut w = c.tcp.try_clone().unwrap();
    // One byte every 200 ms, never a newline: bytes do not extend the deadline.
    let trickle = thread::spawn(move || {
        for _ in 0..15 {
            if w.write_all(b"l").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    assert_eq!(c.rest(), vec!["Error: timed out", "__quit__"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut off after {took:?}"
    );
    trickle.join().unwrap();
}

#[test]
fn logged_in_sessions_use_the_session_timeout() {
    let app = spawn_app_with(
        |c| {
            c.login_timeout = Duration::from_secs(1);
            c.session_timeout = Duration::from_secs(3);
        },
        |_| {},
    );
    app.register("sam", PW);
    let mut c = logged_in(&app, "sam", PW);
    thread::sleep(Duration::from_millis(1500));
    c.send("whoami");
    assert_eq!(c.expect_prompt("__type__")[0], "You are sam");
    let t = Instant::now();
    assert_eq!(c.rest(), vec!["Error: timed out", "__quit__"]);
    assert!(t.elapsed() >= Duration::from_millis(2500));
}

#[test]
fn pipelined_replies_are_all_answered_in_order() {
    let app = spawn_app();
    let mut c = app.client();
    // Everything at once, before reading a single prompt.
    c.send_raw(b"register\ntina\nPassw0rd1\nPassw0rd1\nbogus\nquit\n");
    let all = c.rest();
    assert_eq!(
        all,
        vec![
            "Connected to server",
            MAIN_MENU,
            "__type__",
            "__username__",
            "__password__",
            "Repeat password",
            "__password__",
            "User successfully registered!",
            MAIN_MENU,
            "__type__",
            "Unrecognized type",
            MAIN_MENU,
            "__type__",
            "__quit__",
        ]
    );
}

#[test]
fn the_session_cap_answers_busy_without_a_session() {
    let app = spawn_app_with(|c| c.max_sessions = 2, |_| {});
    let mut a = app.client();
    a.expect_greeting();
    let mut b = app.client();
    b.expect_greeting();
    let mut extra = app.client();
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
    assert_eq!(app.handle.session_count(), 2);
    a.quit();
    // The slot is released when the session thread ends.
    wait_for_sessions_at_most(&app, 1, Duration::from_secs(5));
    let mut again = app.client();
    again.expect_greeting();
    b.quit();
    again.quit();
}

#[test]
fn a_panicking_session_does_not_hurt_the_others() {
    let app = spawn_app_with(|_| {}, |s| s.panic_word = Some("boom".into()));
    app.register("uma", PW);
    let mut bystander = logged_in(&app, "uma", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("boom");
    assert_eq!(
        c.rest(),
        Vec::<String>::new(),
        "the panicking session just ends"
    );
    bystander.send("whoami");
    assert_eq!(bystander.expect_prompt("__type__")[0], "You are uma");
    // The store is still usable for new sessions.
    app.register("vera", PW);
    wait_for_sessions_at_most(&app, 1, Duration::from_secs(5));
    assert_eq!(app.handle.session_count(), 1, "the panicked slot was freed");
}

#[test]
fn shutdown_tells_connected_clients() {
    let mut app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    let left = app.handle.shutdown(Duration::from_secs(2));
    assert_eq!(left, 0);
    assert_eq!(c.rest(), vec!["Error: server shutting down", "__quit__"]);
}
