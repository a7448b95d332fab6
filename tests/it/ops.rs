//! Running it as a service (issue 15): the registration quota, closed
//! registration with the offline `add-user`, the metrics endpoint, and the
//! systemd unit. Real server, real sockets, a temporary SQLite file.

use crate::child::run_with_deadline;
use crate::common::{spawn_app_with, wait_for_sessions_at_most, TestApp, MAIN_MENU};
use dccn_auth::config::RegistrationMode;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const PW: &str = "Passw0rdDemo";
const LIMITED: &str = "Too many registrations from your address, try again later";

/// From the main menu: `register`, expecting a refusal before `__username__`.
fn register_refused(c: &mut crate::common::TestClient, line: &str) {
    c.send("register");
    assert_eq!(c.expect_prompt("__type__"), vec![line, MAIN_MENU]);
}

#[test]
fn the_registration_quota_of_one_address_does_not_touch_another() {
    let app = spawn_app_with(|c| c.max_registrations_per_address = 3, |_| {});
    let mut a = app.client_from([127, 0, 0, 2]);
    a.expect_greeting();
    // A registration that gives up (a taken name, 3 tries) is not counted.
    app.register("taken", PW); // from 127.0.0.1: its own quota
    a.send("register");
    for _ in 0..3 {
        a.expect_prompt("__username__");
        a.send("taken");
    }
    let out = a.expect_prompt("__type__");
    assert_eq!(out.last().unwrap(), MAIN_MENU);
    for i in 0..3 {
        let out = a.register(&format!("from2_{i}"), PW);
        assert_eq!(out, vec!["User successfully registered!", MAIN_MENU]);
    }
    register_refused(&mut a, LIMITED);
    // A new connection from the same address is refused too.
    let mut a2 = app.client_from([127, 0, 0, 2]);
    a2.expect_greeting();
    register_refused(&mut a2, LIMITED);
    a2.login_ok("from2_0", PW);
    // Another address registers.
    let mut b = app.client_from([127, 0, 0, 3]);
    b.expect_greeting();
    assert_eq!(b.register("from3", PW)[0], "User successfully registered!");
    a.quit();
    a2.quit();
    b.quit();
}

#[test]
fn the_quota_is_exact_when_one_address_registers_on_many_connections_at_once() {
    let app = spawn_app_with(|c| c.max_registrations_per_address = 4, |_| {});
    let registered = std::thread::scope(|s| {
        let runs: Vec<_> = (0..10)
            .map(|i| {
                let app = &app;
                s.spawn(move || {
                    let mut c = app.client_from([127, 0, 0, 4]);
                    c.expect_greeting();
                    let ok = c.register_unless_limited(&format!("many{i}"), PW);
                    c.quit();
                    ok
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(registered, 4);
}

#[test]
fn a_quota_of_zero_is_off() {
    let app = spawn_app_with(|c| c.max_registrations_per_address = 0, |_| {});
    let mut c = app.client_from([127, 0, 0, 5]);
    c.expect_greeting();
    for i in 0..5 {
        assert_eq!(
            c.register(&format!("free{i}"), PW)[0],
            "User successfully registered!"
        );
    }
    c.quit();
}

fn add_user(db: &std::path::Path, args: &[&str], stdin: &str) -> crate::child::Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("add-user").args(args).arg("--db").arg(db);
    run_with_deadline(cmd, stdin, Duration::from_secs(20))
}

#[test]
fn closed_registration_refuses_and_add_user_makes_an_account_that_logs_in() {
    let app = spawn_app_with(|c| c.registration = RegistrationMode::Closed, |_| {});
    let mut c = app.client();
    c.expect_greeting();
    register_refused(&mut c, "Registration is closed");

    let run = add_user(
        &app.db_path,
        &["alice", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("added user \"alice\""), "{run:?}");
    assert!(!run.stdout.contains(PW) && !run.stderr.contains(PW));
    c.login_ok("alice", PW);
    c.quit();

    // The same rules as a registration, and clear failures.
    let taken = add_user(
        &app.db_path,
        &["alice", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert_eq!(taken.code, 1, "{taken:?}");
    assert!(taken.stderr.contains("already exists"), "{taken:?}");
    let bad_name = add_user(
        &app.db_path,
        &["a__b", "--password-stdin"],
        &format!("{PW}\n"),
    );
    assert_eq!(bad_name.code, 2, "{bad_name:?}");
    assert!(
        bad_name.stderr.contains("username is invalid"),
        "{bad_name:?}"
    );
    let weak = add_user(&app.db_path, &["bob", "--password-stdin"], "password\n");
    assert_eq!(weak.code, 2, "{weak:?}");
    assert!(weak.stderr.contains("password is invalid"), "{weak:?}");
    let no_tty = add_user(&app.db_path, &["bob"], "");
    assert_eq!(no_tty.code, 2, "{no_tty:?}");
    assert!(no_tty.stderr.contains("--password-stdin"), "{no_tty:?}");
    let empty = add_user(&app.db_path, &["bob", "--password-stdin"], "");
    assert_eq!(empty.code, 2, "{empty:?}");
    let help = run_with_deadline(
        {
            let mut cmd = Command::new(BIN);
            cmd.args(["add-user", "--help"]);
            cmd
        },
        "",
        Duration::from_secs(20),
    );
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--password-stdin"), "{help:?}");
    let top = run_with_deadline(
        {
            let mut cmd = Command::new(BIN);
            cmd.arg("--help");
            cmd
        },
        "",
        Duration::from_secs(20),
    );
    for flag in [
        "--registration",
        "DCCN_REGISTRATION",
        "--max-registrations-per-address",
        "DCCN_MAX_REGISTRATIONS_PER_ADDRESS",
        "--metrics",
        "DCCN_METRICS",
        "add-user",
    ] {
        assert!(top.stdout.contains(flag), "--help lacks {flag}");
    }
    let wrong = run_with_deadline(
        {
            let mut cmd = Command::new(BIN);
            cmd.args(["--registration", "maybe"]);
            cmd
        },
        "",
        Duration::from_secs(20),
    );
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(
        wrong.stderr.contains("expected open or closed"),
        "{wrong:?}"
    );
}

#[test]
fn add_user_writes_what_a_registration_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let run = add_user(&db, &["carol", "--password-stdin"], &format!("{PW}\r\n"));
    assert_eq!(run.code, 0, "{run:?}");
    use dccn_auth::store::Store;
    let store = dccn_auth::store::UserStore::open(&db).unwrap();
    let user = store.find_classic("carol").unwrap().expect("the row");
    let classic = user.classic.expect("a classic row");
    assert!(dccn_auth::crypto::is_token(&classic.salt));
    assert_eq!(
        classic.verifier,
        dccn_auth::crypto::verifier(&classic.salt, PW)
    );
    // And the SCRAM row a registration writes beside it.
    let scram = store.find_scram("carol").unwrap().expect("the row");
    assert!(scram.scram.is_some(), "a SCRAM row: {scram:?}");
}

/// One HTTP exchange with the metrics port: (status code, whole answer).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (code, text)
}

/// Every series of a scrape: name with labels -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (code, text) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4"),
        "{text}"
    );
    let body = text.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The series that moved from `before` to `after`, by how much.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    assert_eq!(before.len(), after.len(), "the same series in every scrape");
    after
        .iter()
        .filter(|(k, v)| before[*k] != **v && k.as_str() != "dccn_login_seconds_sum")
        .map(|(k, v)| (k.clone(), v - before[k]))
        .collect()
}

fn metrics_app(tweak: impl FnOnce(&mut dccn_auth::config::ServerConfig)) -> (TestApp, SocketAddr) {
    let app = spawn_app_with(
        |c| {
            c.metrics = Some("127.0.0.1:0".into());
            tweak(c);
        },
        |_| {},
    );
    let addr = app.handle.metrics_addr().expect("metrics on");
    (app, addr)
}

fn no_sessions(app: &TestApp) {
    assert_eq!(wait_for_sessions_at_most(app, 0, Duration::from_secs(5)), 0);
}

#[test]
fn each_metric_moves_by_exactly_what_was_done() {
    let (app, addr) = metrics_app(|c| {
        c.max_registrations_per_address = 1;
        c.max_sessions_per_address = 2;
    });
    let start = scrape(addr);
    for name in [
        "dccn_sessions",
        "dccn_connections_total",
        "dccn_busy_total{cap=\"global\"}",
        "dccn_busy_total{cap=\"files\"}",
        "dccn_logins_total{mechanism=\"scram\",outcome=\"ok\"}",
        "dccn_registrations_total{outcome=\"closed\"}",
        "dccn_store_errors_total",
        "dccn_chat_members",
        "dccn_login_seconds_count",
    ] {
        assert_eq!(start.get(name), Some(&0.0), "{name} in {start:?}");
    }

    // One registration, then one refused by the quota, on one connection.
    let mut c = app.client();
    c.expect_greeting();
    assert_eq!(
        c.register("metered", PW)[0],
        "User successfully registered!"
    );
    register_refused(&mut c, LIMITED);
    let during = scrape(addr);
    c.quit();
    no_sessions(&app);
    let want = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        moved(&start, &during),
        want(&[
            ("dccn_sessions", 1.0),
            ("dccn_connections_total", 1.0),
            ("dccn_registrations_total{outcome=\"ok\"}", 1.0),
            ("dccn_registrations_total{outcome=\"limited\"}", 1.0),
        ])
    );

    // Scrape, log in once, scrape again: exactly one more ok classic login.
    let before = scrape(addr);
    let mut c = app.client();
    c.expect_greeting();
    c.login_ok("metered", PW);
    let after = scrape(addr);
    let diff = moved(&before, &after);
    let bucket_moves: Vec<_> = diff
        .keys()
        .filter(|k| k.starts_with("dccn_login_seconds_bucket"))
        .collect();
    assert!(bucket_moves.iter().any(|k| k.contains("+Inf")), "{diff:?}");
    assert!(bucket_moves.iter().all(|k| diff[*k] == 1.0), "{diff:?}");
    let rest: BTreeMap<_, _> = diff
        .into_iter()
        .filter(|(k, _)| !k.starts_with("dccn_login_seconds_bucket"))
        .collect();
    assert_eq!(
        rest,
        want(&[
            ("dccn_sessions", 1.0),
            ("dccn_connections_total", 1.0),
            (
                "dccn_logins_total{mechanism=\"classic\",outcome=\"ok\"}",
                1.0
            ),
            ("dccn_login_seconds_count", 1.0),
        ])
    );
    c.send("logout");
    c.expect_prompt("__type__");
    // A wrong password: one failed login. A re-authentication is not a login.
    let before = scrape(addr);
    c.login_refused("metered", "Wr0ngPassword");
    let after = scrape(addr);
    let failed = moved(&before, &after);
    assert_eq!(
        failed.get("dccn_logins_total{mechanism=\"classic\",outcome=\"failed\"}"),
        Some(&1.0)
    );
    assert_eq!(
        failed.get("dccn_logins_total{mechanism=\"classic\",outcome=\"ok\"}"),
        None
    );
    assert_eq!(failed.get("dccn_login_seconds_count"), Some(&1.0));

    // The per-address cap (2): a third connection is turned away as busy.
    let mut second = app.client();
    second.expect_greeting();
    let before = scrape(addr);
    let mut third = app.client();
    let refused = third.rest();
    assert_eq!(refused, vec!["Error: server busy", "__quit__"]);
    let after = scrape(addr);
    assert_eq!(
        moved(&before, &after),
        want(&[
            ("dccn_connections_total", 1.0),
            ("dccn_busy_total{cap=\"address\"}", 1.0),
        ])
    );
    c.quit();
    second.quit();
    no_sessions(&app);
    assert_eq!(scrape(addr)["dccn_sessions"], 0.0);
}

#[test]
fn closed_registration_and_store_errors_are_counted() {
    let (app, addr) = metrics_app(|c| c.registration = RegistrationMode::Closed);
    let before = scrape(addr);
    let mut c = app.client();
    c.expect_greeting();
    register_refused(&mut c, "Registration is closed");
    c.quit();
    no_sessions(&app);
    let after = scrape(addr);
    let diff = moved(&before, &after);
    assert_eq!(
        diff.get("dccn_registrations_total{outcome=\"closed\"}"),
        Some(&1.0)
    );
    assert_eq!(diff.get("dccn_store_errors_total"), None);

    let (app, addr) = metrics_app(|_| {});
    let store = &app.sqlite;
    store.set_max_pages(store.page_count().unwrap()).unwrap();
    let before = scrape(addr);
    let mut c = app.client();
    c.expect_greeting();
    let mut errors = 0.0;
    for i in 0..500 {
        let out = c.register(&format!("filler{i}"), PW);
        if out[0] == "Server error, try again later" {
            errors = 1.0;
            break;
        }
    }
    c.quit();
    let diff = moved(&before, &scrape(addr));
    assert_eq!(errors, 1.0, "the page cap must be reached");
    assert_eq!(diff.get("dccn_store_errors_total"), Some(&1.0), "{diff:?}");
}

#[test]
fn the_metrics_port_answers_only_get_metrics_and_is_bounded() {
    let (_app, addr) = metrics_app(|_| {});
    let (code, text) = http(addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 404, "{text}");
    let (code, text) = http(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(code, 405, "{text}");
    assert!(text.contains("Allow: GET, HEAD"), "{text}");
    let (code, text) = http(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text}");
    let (code, text) = http(addr, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert_eq!(code, 400, "{text}");
    // A head larger than the cap: refused, not read forever.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&huge);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );

    // Connections that send nothing hold every slot: the next hears 503 at once.
    let idle: Vec<TcpStream> = (0..dccn_auth::config::METRICS_MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Each idle connection has its slot once the endpoint accepted it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let (code, text) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        if code == 503 || Instant::now() > deadline {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(busy.0, 503, "{}", busy.1);
    // An idle connection is closed after the request timeout.
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() <= dccn_auth::config::METRICS_REQUEST_TIMEOUT + Duration::from_secs(2)
    );
    // Every slot is free again (the others timed out too, or soon will).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/dccn-auth.service");
    let text = std::fs::read_to_string(unit).expect("contrib/dccn-auth.service");
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/dccn-auth",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "LimitNOFILE=",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("dccn-auth.service");
    let exec = text
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart")
        .to_string();
    let program = exec["ExecStart=".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&copy, text.replace(&program, BIN)).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]).arg(&copy);
    let run = run_with_deadline(cmd, "", Duration::from_secs(60));
    // Complaints about this unit are failures; the host's own units are not ours.
    let ours: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("dccn-auth.service"))
        .collect();
    assert!(run.code == 0 && ours.is_empty(), "{run:?}");
}

#[test]
fn scram_logins_and_chat_members_are_counted() {
    let (app, addr) = metrics_app(|_| {});
    app.register("sam", PW);
    no_sessions(&app);
    let before = scrape(addr);
    let mut sam = crate::scram::scram_logged_in(&app, "sam", PW);
    let mut wrong = app.client();
    wrong.expect_greeting();
    let refused = crate::scram::scram_login(&mut wrong, "sam", "Wr0ngPassword");
    assert_eq!(refused.server_final, "e=invalid-proof");
    crate::chat::enter(&mut sam);
    let during = scrape(addr);
    let change = moved(&before, &during);
    assert_eq!(
        change.get("dccn_logins_total{mechanism=\"scram\",outcome=\"ok\"}"),
        Some(&1.0),
        "{change:?}"
    );
    assert_eq!(
        change.get("dccn_logins_total{mechanism=\"scram\",outcome=\"failed\"}"),
        Some(&1.0),
        "{change:?}"
    );
    assert_eq!(change.get("dccn_login_seconds_count"), Some(&2.0));
    assert_eq!(change.get("dccn_chat_members"), Some(&1.0), "{change:?}");
    assert_eq!(
        change.get("dccn_logins_total{mechanism=\"classic\",outcome=\"ok\"}"),
        None
    );
    // Leaving the room, however, counts the member out.
    drop(sam);
    drop(wrong);
    no_sessions(&app);
    let after = scrape(addr);
    assert_eq!(after["dccn_chat_members"], before["dccn_chat_members"]);
}
