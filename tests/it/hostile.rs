//! Hostile input, each with the figure it shows (printed; run with
//! `cargo test --release --test hostile -- --nocapture` to see them). These
//! are the bounded versions CI runs; docs/RELIABILITY.md reports the figures.

use crate::common;

use common::*;
use dccn_auth::crypto;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

fn checked_failures(app: &TestApp) -> u64 {
    app.handle
        .services()
        .throttle
        .stats()
        .failures
        .load(Ordering::Relaxed)
}

/// Counts `User or password incorrect` lines until `want` are seen (or EOF).
fn count_refusals(c: &mut TestClient, want: usize) -> usize {
    let mut seen = 0;
    while seen < want {
        match c.try_line() {
            Some(l) if l == "User or password incorrect" => seen += 1,
            Some(_) => {}
            None => break,
        }
    }
    seen
}

#[test]
fn brute_force_is_throttled_without_locking_out_the_real_user() {
    let app = spawn_app();
    app.register("victim", PW);
    let started = Instant::now();
    // Under the per-address session cap (64): every connection gets a session.
    const CONNS: usize = 60;
    const TRIES: usize = 100;
    let attackers: Vec<_> = (0..CONNS)
        .map(|_| {
            let mut c = app.client_from([127, 0, 0, 20]);
            thread::spawn(move || {
                c.expect_greeting();
                // Pipelined: 100 tries in one write; a wrong response each.
                let zeros = "0".repeat(64);
                let burst = format!("login\nvictim\n{zeros}\n").repeat(TRIES);
                c.send_raw(burst.as_bytes());
                count_refusals(&mut c, TRIES)
            })
        })
        .collect();
    let refused: usize = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    let took = started.elapsed();
    let checked = checked_failures(&app);
    eprintln!(
        "brute force: {refused} wrong tries in {took:.2?} from one address over {CONNS} connections; {checked} checked"
    );
    assert_eq!(refused, CONNS * TRIES, "every try answered");
    assert!(took < Duration::from_secs(60));
    assert!(checked <= 20, "{checked} tries were checked");
    // The real user, from another address, gets in at once.
    let t = Instant::now();
    let mut real = app.client_from([127, 0, 0, 21]);
    real.expect_greeting();
    real.login_ok("victim", PW);
    assert!(t.elapsed() < Duration::from_millis(500));
}

/// One full login try; returns (salt, time from sending the response to the outcome).
fn timed_failed_login(c: &mut TestClient, name: &str) -> (String, Duration) {
    c.send("login");
    c.expect_prompt("__username__");
    c.send(name);
    let (salt, nonce) = c.expect_challenge();
    let response = crypto::response(&nonce, &crypto::verifier(&salt, "Wr0ngPassword"));
    let t = Instant::now();
    c.send(&response);
    let lines = c.expect_prompt("__type__");
    let took = t.elapsed();
    assert_eq!(lines, vec!["User or password incorrect", MAIN_MENU]);
    (salt, took)
}

#[test]
fn unknown_and_wrong_password_look_the_same() {
    let app = spawn_app();
    app.register("realuser", PW);
    const TRIES: usize = 1000;
    // 4 tries per name per address stays under every throttle, so each try is checked.
    let mut real = Vec::new();
    let mut unknown = Vec::new();
    let mut salts = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    for a in 0..TRIES / 4 {
        let mut c = app.client_from([127, 0, 1 + (a / 250) as u8, 1 + (a % 250) as u8]);
        c.expect_greeting();
        for _ in 0..4 {
            let (s, t) = timed_failed_login(&mut c, "realuser");
            salts.0.insert(s);
            real.push(t);
            let (s, t) = timed_failed_login(&mut c, "ghostuser");
            salts.1.insert(s);
            unknown.push(t);
        }
    }
    assert_eq!(salts.0.len(), 1, "a real user's salt is stable");
    assert_eq!(salts.1.len(), 1, "an unknown user's salt is stable too");
    assert_eq!(checked_failures(&app), 2 * TRIES as u64, "all were checked");
    real.sort();
    unknown.sort();
    let (m_real, m_unknown) = (percentile(&real, 50), percentile(&unknown, 50));
    let gap = m_real.abs_diff(m_unknown);
    eprintln!(
        "enumeration: median failure latency real {m_real:?}, unknown {m_unknown:?}, gap {gap:?} over {TRIES} tries each"
    );
    assert!(gap < Duration::from_millis(1), "gap {gap:?}");
}

#[test]
fn replayed_responses_are_all_refused() {
    let app = spawn_app();
    app.register("replayed", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("login");
    c.expect_prompt("__username__");
    c.send("replayed");
    let (salt, nonce) = c.expect_challenge();
    let captured = crypto::response(&nonce, &crypto::verifier(&salt, PW));
    c.send(&captured);
    assert_eq!(c.expect_prompt("__type__")[0], "Successfully login");

    const REPLAYS: usize = 1000;
    let mut refused = 0;
    for a in 0..REPLAYS / 4 {
        let mut r = app.client_from([127, 0, 3 + (a / 250) as u8, 1 + (a % 250) as u8]);
        r.expect_greeting();
        let burst = format!("login\nreplayed\n{captured}\n").repeat(4);
        r.send_raw(burst.as_bytes());
        refused += count_refusals(&mut r, 4);
    }
    eprintln!("replay: {refused} of {REPLAYS} replays refused, all checked");
    assert_eq!(refused, REPLAYS);
    assert_eq!(checked_failures(&app), REPLAYS as u64);
}

#[test]
fn a_connection_flood_is_capped_and_answered_at_once() {
    const CAP: usize = 200;
    const ATTEMPTS: usize = 5000;
    // The global cap is under test: every connection comes from 127.0.0.1, so
    // the per-address cap (tests/it/limits.rs) is turned off here.
    let app = spawn_app_with(
        |c| {
            c.max_sessions = CAP;
            c.max_sessions_per_address = 0;
        },
        |_| {},
    );
    app.register("patient", PW);
    let rss_before = rss_kib();
    let watching = Arc::new(AtomicBool::new(true));
    // Samples the server's own session count while the flood runs.
    let watcher = {
        let (gauge, watching) = (app.handle.session_gauge(), watching.clone());
        thread::spawn(move || {
            let mut max_seen = 0;
            while watching.load(Ordering::Relaxed) {
                max_seen = max_seen.max(gauge.get());
                thread::sleep(Duration::from_millis(1));
            }
            max_seen
        })
    };
    let started = Instant::now();
    let mut held = Vec::new();
    let mut busy = 0;
    let mut busy_latency = Vec::new();
    for _ in 0..ATTEMPTS {
        let t = Instant::now();
        let s = TcpStream::connect(app.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s);
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        match first.as_str() {
            "Connected to server\n" => held.push(r),
            "Error: server busy\n" => {
                busy += 1;
                busy_latency.push(t.elapsed());
            }
            other => panic!("unexpected first line {other:?}"),
        }
    }
    let took = started.elapsed();
    let rss_peak = rss_kib();
    watching.store(false, Ordering::Relaxed);
    let max_sessions = watcher.join().unwrap();
    busy_latency.sort();
    eprintln!(
        "flood: {ATTEMPTS} connections in {took:.2?}: {} sessions (cap {CAP}), {busy} told busy (p99 {:?}), max sessions seen {max_sessions}, RSS {rss_before} -> {rss_peak} KiB",
        held.len(),
        percentile(&busy_latency, 99)
    );
    assert!(took < Duration::from_secs(10));
    assert_eq!(held.len(), CAP);
    assert_eq!(busy, ATTEMPTS - CAP);
    assert!(max_sessions <= CAP);
    assert!(percentile(&busy_latency, 99) < Duration::from_millis(100));
    assert!(rss_peak < rss_before + 64 * 1024, "memory stays bounded");
    // Once the flood lets go, a well-behaved client logs in.
    drop(held);
    wait_for_sessions_at_most(&app, 0, Duration::from_secs(5));
    let mut c = app.client();
    c.expect_greeting();
    c.login_ok("patient", PW);
}

#[test]
fn a_100_mb_line_is_refused_after_about_a_kilobyte() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    let rss_before = rss_kib();
    let mut w = c.tcp.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let feeder = thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 100 << 20 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let out = c.read_to_close();
    let sent = feeder.join().unwrap();
    let rss_after = rss_kib();
    eprintln!(
        "oversized: the server closed after the client had sent {} KiB of a 100 MiB line; RSS {rss_before} -> {rss_after} KiB",
        sent / 1024
    );
    assert_eq!(out, b"Error: line too long\n__quit__\n");
    assert!(sent < 100 << 20, "the server stopped reading early");
    assert!(rss_after < rss_before + 1024, "memory growth under 1 MiB");
}
