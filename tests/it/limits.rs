//! Per-address session cap and login grace (docs/PROTOCOL.md, "Rules and
//! limits"): one address cannot hold every session slot, and no session can
//! stay at the main menu forever by replying.

use crate::common::*;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

#[test]
fn one_address_at_its_cap_hears_busy_while_another_gets_in() {
    let app = spawn_app_with(
        |c| {
            c.max_sessions = 20;
            c.max_sessions_per_address = 3;
        },
        |_| {},
    );
    let mut held: Vec<TestClient> = (0..3).map(|_| app.client_from([127, 0, 0, 1])).collect();
    for c in &mut held {
        c.expect_greeting();
    }
    // The fourth from 127.0.0.1 is refused by the accept loop, as for the global cap.
    let mut extra = app.client_from([127, 0, 0, 1]);
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
    // 127.0.0.2 is not affected.
    let mut other = app.client_from([127, 0, 0, 2]);
    other.expect_greeting();
    assert_eq!(app.handle.session_count(), 4);
    // Logged-in sessions count too: log one of the three in, still at the cap.
    let mut registrar = app.client_from([127, 0, 0, 5]);
    registrar.expect_greeting();
    registrar.register("ann", PW);
    registrar.quit();
    held[0].login_ok("ann", PW);
    let mut extra = app.client_from([127, 0, 0, 1]);
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
    // A session that ends gives its address a slot back.
    held.pop().unwrap().quit();
    wait_for_sessions_at_most(&app, 3, Duration::from_secs(5));
    let mut again = app.client_from([127, 0, 0, 1]);
    again.expect_greeting();
    again.quit();
    other.quit();
}

#[test]
fn zero_turns_the_per_address_cap_off() {
    let app = spawn_app_with(
        |c| {
            c.max_sessions = 8;
            c.max_sessions_per_address = 0;
        },
        |_| {},
    );
    let mut held: Vec<TestClient> = (0..8).map(|_| app.client_from([127, 0, 0, 3])).collect();
    for c in &mut held {
        c.expect_greeting();
    }
    // Only the global cap is left.
    let mut extra = app.client_from([127, 0, 0, 4]);
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
}

#[test]
fn a_client_that_keeps_replying_at_the_main_menu_is_cut_at_the_grace() {
    let grace = Duration::from_secs(2);
    let app = spawn_app_with(
        |c| {
            c.login_grace = grace;
            c.login_timeout = Duration::from_secs(30);
        },
        |_| {},
    );
    let mut c = app.client();
    c.expect_greeting();
    let started = Instant::now();
    let mut turns = 0;
    // Each reply comes well inside the 30 s reply deadline; only the grace can end this.
    let lines = loop {
        c.send("x");
        let lines = c.until_prompt();
        turns += 1;
        if lines.iter().any(|l| l.starts_with("Error: ")) || turns > 1000 {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lasted = started.elapsed();
    assert!(
        lines.ends_with(&["Error: timed out".to_string(), "__quit__".to_string()]),
        "{lines:?}"
    );
    assert!(turns > 5, "the client did reply many times ({turns})");
    assert!(
        lasted >= grace - Duration::from_millis(200),
        "cut after {lasted:?}"
    );
    assert!(
        lasted < grace + Duration::from_secs(2),
        "cut after {lasted:?}"
    );
}

#[test]
fn the_grace_stops_at_login_and_starts_again_at_logout() {
    let app = spawn_app_with(|c| c.login_grace = Duration::from_secs(2), |_| {});
    app.register("bea", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.login_ok("bea", PW);
    // Logged in: the grace no longer runs.
    std::thread::sleep(Duration::from_millis(2500));
    c.send("whoami");
    assert_eq!(c.expect_prompt("__type__")[0], "You are bea");
    // Back at the main menu, a new grace: still usable at once, cut after 2 s.
    c.send("logout");
    c.expect_prompt("__type__");
    c.send("x");
    assert!(c
        .expect_prompt("__type__")
        .contains(&"Unrecognized type".to_string()));
    std::thread::sleep(Duration::from_millis(2300));
    c.send("x");
    let rest = c.rest();
    assert!(
        rest.ends_with(&["Error: timed out".to_string(), "__quit__".to_string()]),
        "{rest:?}"
    );
}

/// The accept threads get real-time priority where the process may have it
/// (root here and in CI), at the default log level: the call once sat inside
/// a `log::debug!` and ran only when debug logging was on.
#[test]
fn the_accept_threads_run_at_real_time_priority_where_permitted() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: SCHED_FIFO is not permitted here, nothing to check");
        return;
    }
    let app = spawn_app();
    let deadline = Instant::now() + Duration::from_secs(5);
    let accept_threads = loop {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim().starts_with("accept") {
                let tid: libc::pid_t = task.file_name().to_string_lossy().parse().unwrap();
                // SAFETY: a plain system call on a thread id of this process.
                policies.push(unsafe { libc::sched_getscheduler(tid) });
            }
        }
        let all_fifo = !policies.is_empty() && policies.iter().all(|p| *p == libc::SCHED_FIFO);
        if all_fifo || Instant::now() > deadline {
            break policies;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(accept_threads.len() >= 2, "{accept_threads:?}");
    assert!(
        accept_threads.iter().all(|p| *p == libc::SCHED_FIFO),
        "policies {accept_threads:?}"
    );
    drop(app);
}
