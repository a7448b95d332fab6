//! The PROXY protocol front (issue 14): from a `--trusted-proxy` network the
//! first bytes must be a PROXY header, whose client address then counts for
//! the throttle and the per-address cap; from anywhere else a PROXY line is an
//! ordinary reply. The "proxy" here is a test client on 127.0.0.9 writing the
//! header itself, as HAProxy's `send-proxy` does.

use crate::common::*;
use dccn_auth::proxy_protocol::{Cidr, TrustedProxies, V2_SIGNATURE};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";
const PROXY: [u8; 4] = [127, 0, 0, 9];

fn trusting(network: &str, tweak: impl FnOnce(&mut dccn_auth::config::ServerConfig)) -> TestApp {
    let network: Cidr = network.parse().unwrap();
    spawn_app_with(
        |c| {
            c.trusted_proxies = TrustedProxies::new(vec![network]);
            tweak(c);
        },
        |_| {},
    )
}

/// A connection from the proxy carrying `client` (an IPv4 address).
fn via_proxy(app: &TestApp, client: [u8; 4]) -> TestClient {
    let mut c = app.client_from(PROXY);
    let [a, b, d, e] = client;
    c.send_raw(format!("PROXY TCP4 {a}.{b}.{d}.{e} 127.0.0.1 40000 7886\r\n").as_bytes());
    c
}

fn checked_failures(app: &TestApp) -> u64 {
    app.handle
        .services()
        .throttle
        .stats()
        .failures
        .load(Ordering::Relaxed)
}

#[test]
fn a_trusted_proxys_header_is_read_and_the_session_goes_on() {
    let app = trusting("127.0.0.9/32", |_| {});
    app.register("ann", PW);
    let mut c = via_proxy(&app, [192, 0, 2, 7]);
    c.expect_greeting();
    c.login_ok("ann", PW);
    c.quit();
    // v2 (binary), TCP over IPv4, with the first reply in the same packet.
    let mut c = app.client_from(PROXY);
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[
        0x21, 0x11, 0, 12, 192, 0, 2, 8, 127, 0, 0, 1, 0x9c, 0x40, 0x1e, 0xce,
    ]);
    header.extend_from_slice(b"quit\n");
    c.send_raw(&header);
    c.expect_greeting();
    assert_eq!(c.line(), "__quit__");
    // v1 with the first reply in the same packet: the reply is not eaten.
    let mut c = app.client_from(PROXY);
    c.send_raw(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 7886\r\nquit\n");
    c.expect_greeting();
    assert_eq!(c.line(), "__quit__");
    // v1 trickling in, a few bytes at a time.
    let mut c = app.client_from(PROXY);
    for piece in [
        "PRO",
        "XY TCP4 192.0",
        ".2.10 127.0.0.1 4000",
        "0 7886\r",
        "\n",
    ] {
        c.send_raw(piece.as_bytes());
        std::thread::sleep(Duration::from_millis(30));
    }
    c.expect_greeting();
    c.quit();
    // UNKNOWN (a proxy's own health check): served as the proxy itself.
    let mut c = app.client_from(PROXY);
    c.send_raw(b"PROXY UNKNOWN\r\n");
    c.expect_greeting();
    c.quit();
}

#[test]
fn from_an_untrusted_address_a_proxy_line_is_an_ordinary_reply() {
    // Trusted: 10.0.0.0/8 only; the test's loopback peers are not in it.
    let app = trusting("10.0.0.0/8", |c| c.max_sessions_per_address = 1);
    let mut c = app.client_from([127, 0, 0, 1]);
    c.expect_greeting();
    c.send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 7886\r");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", MAIN_MENU]
    );
    // It set no address: 127.0.0.1 is still at its cap of 1.
    let mut second = app.client_from([127, 0, 0, 1]);
    assert_eq!(second.rest(), vec!["Error: server busy", "__quit__"]);
    c.quit();
}

#[test]
fn a_malformed_header_from_a_trusted_proxy_closes_the_connection() {
    let app = trusting("127.0.0.9/32", |_| {});
    for bad in [
        &b"PROXY TCP4 192.0.2.7 127.0.0.1 040000 7886\r\n"[..],
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 7886\n",
        b"PROXY TCP6 192.0.2.7 127.0.0.1 40000 7886\r\n",
        b"PROXY TCP4 192.0.2.7  127.0.0.1 40000 7886\r\n",
        &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
        &[&V2_SIGNATURE[..], &[0x21, 0x11, 0, 4, 1, 2, 3, 4]].concat(),
        &[&V2_SIGNATURE[..], &[0x21, 0x11, 0xff, 0xff]].concat(),
    ] {
        let mut c = app.client_from(PROXY);
        c.send_raw(bad);
        assert_eq!(
            c.read_to_close(),
            b"",
            "{:?}: no greeting, closed",
            String::from_utf8_lossy(bad)
        );
    }
    // The server is fine afterwards.
    let mut c = via_proxy(&app, [192, 0, 2, 7]);
    c.expect_greeting();
    c.quit();
}

#[test]
fn an_absent_header_from_a_trusted_proxy_closes_the_connection() {
    let app = trusting("127.0.0.9/32", |c| c.login_timeout = Duration::from_secs(1));
    // Protocol words instead of a header.
    let mut c = app.client_from(PROXY);
    c.send_raw(b"login\n");
    assert_eq!(c.read_to_close(), b"");
    // Nothing at all: closed at the login timeout, without a greeting.
    let started = Instant::now();
    let mut c = app.client_from(PROXY);
    assert_eq!(c.read_to_close(), b"");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // Other addresses are served as before.
    let mut c = app.client_from([127, 0, 0, 1]);
    c.expect_greeting();
    c.quit();
}

#[test]
fn the_per_address_cap_counts_the_clients_behind_the_proxy() {
    let app = trusting("127.0.0.9/32", |c| {
        c.max_sessions = 20;
        c.max_sessions_per_address = 2;
    });
    // Three clients behind one proxy address: more than the cap of 2 sessions.
    let mut held = Vec::new();
    for client in [[192, 0, 2, 7], [192, 0, 2, 7], [192, 0, 2, 8]] {
        let mut c = via_proxy(&app, client);
        c.expect_greeting();
        held.push(c);
    }
    // A third from 192.0.2.7 is over its cap.
    let mut extra = via_proxy(&app, [192, 0, 2, 7]);
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
    // Its slot is given back: one ends, the next gets in.
    held.remove(0).quit();
    wait_for_sessions_at_most(&app, 2, Duration::from_secs(5));
    let mut again = via_proxy(&app, [192, 0, 2, 7]);
    again.expect_greeting();
    again.quit();
    for mut c in held {
        c.quit();
    }
}

#[test]
fn the_throttle_counts_the_clients_behind_the_proxy() {
    let app = trusting("127.0.0.9/32", |_| {});
    app.register("ann", PW);
    // 192.0.2.7 brute-forces ann: 60 wrong tries, pipelined.
    let mut attacker = via_proxy(&app, [192, 0, 2, 7]);
    attacker.expect_greeting();
    let zeros = "0".repeat(64);
    attacker.send_raw(format!("login\nann\n{zeros}\n").repeat(60).as_bytes());
    let mut refused = 0;
    while refused < 60 {
        match attacker.try_line() {
            Some(l) if l == "User or password incorrect" => refused += 1,
            Some(_) => {}
            None => panic!("closed after {refused} refusals"),
        }
    }
    let checked = checked_failures(&app);
    assert!(
        checked < 30,
        "{checked} of 60 checked: the throttle did not bite"
    );
    // 192.0.2.8, through the same proxy, is another source: its tries are
    // checked, each one, and the right password lets it in.
    let mut other = via_proxy(&app, [192, 0, 2, 8]);
    other.expect_greeting();
    for _ in 0..4 {
        other.login_refused("ann", "Wr0ngPassword");
    }
    assert_eq!(checked_failures(&app), checked + 4);
    other.login_ok("ann", PW);
    other.quit();
}

#[test]
fn a_bad_trusted_proxy_is_a_usage_error_from_the_flag_and_the_environment() {
    let bin = env!("CARGO_BIN_EXE_run_server");
    let out = std::process::Command::new(bin)
        .args(["--trusted-proxy", "10.0.0.0/33", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"10.0.0.0/33\" is not an address or network"),
        "{err}"
    );
    // The environment variable is a comma-separated list; one bad item fails it.
    let out = std::process::Command::new(bin)
        .env("DCCN_TRUSTED_PROXY", "10.0.0.0/8,fd00::/8,nonsense")
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nonsense\""), "{err}");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--trusted-proxy <CIDR>") && help.contains("DCCN_TRUSTED_PROXY"));
}
