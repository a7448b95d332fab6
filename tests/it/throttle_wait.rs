//! Tries in flight make a login wait, never refuse it (docs/PROTOCOL.md,
//! "Throttling"): correct logins of one name from one address racing each
//! other all get in, on SQLite (the in-memory throttle) and across two servers
//! on one PostgreSQL database (the shared one), while racing wrong answers are
//! still checked exactly 5 times.
//!
//! "Tries in flight" are made real and long here: the test begins 5 tries of
//! the name from the clients' address in the server's own throttle (or in the
//! database's) and settles them only once the logins have arrived.

use crate::common::{spawn_app, start_server_binary, ChildGuard, TestClient, MAIN_MENU, USER_MENU};
use crate::pg_cluster::test_db;
use dccn_auth::address::AddressKey;
use dccn_auth::store::postgres::PgUserStore;
use dccn_auth::store::Store;
use dccn_auth::throttle::Decision;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";
const WRONG: &str = "Wrong0pass";
const LOGINS: usize = 16;
const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn granted() -> Vec<String> {
    ["Successfully login", "Access granted!", USER_MENU]
        .map(String::from)
        .to_vec()
}

fn refused() -> Vec<String> {
    ["User or password incorrect", MAIN_MENU]
        .map(String::from)
        .to_vec()
}

/// `LOGINS` logins of `name` with `password` from 127.0.0.1, at once (the
/// answers sent together after a barrier), spread over `servers`; each
/// thread returns the lines its login got.
fn racing_logins(
    servers: &[SocketAddr],
    name: &'static str,
    password: &'static str,
) -> Vec<thread::JoinHandle<Vec<String>>> {
    let ready = Arc::new(Barrier::new(LOGINS));
    (0..LOGINS)
        .map(|i| {
            let (server, ready) = (servers[i % servers.len()], ready.clone());
            thread::spawn(move || {
                let mut c = TestClient::connect(server);
                c.expect_greeting();
                ready.wait();
                c.login(name, password)
            })
        })
        .collect()
}

fn outcomes(logins: Vec<thread::JoinHandle<Vec<String>>>) -> Vec<Vec<String>> {
    logins.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sixteen_correct_logins_racing_five_tries_in_flight_all_get_in() {
    let app = spawn_app();
    app.register("amy", PW);
    let throttle = &app.handle.services().throttle;
    // Five tries of amy from 127.0.0.1 in flight: each may still fail, so no
    // further one may be checked yet (refused, before tries waited).
    let held: Vec<_> = (0..5)
        .map(|_| {
            throttle
                .begin("amy", LOCALHOST, Instant::now())
                .expect("checked")
        })
        .collect();
    let logins = racing_logins(&[app.addr], "amy", PW);
    let deadline = Instant::now() + Duration::from_secs(10);
    while throttle.waiting() < LOGINS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(throttle.waiting(), LOGINS, "every login waits");
    for try_in_flight in held {
        try_in_flight.succeeded();
    }
    for out in outcomes(logins) {
        assert_eq!(out, granted());
    }
    let stats = throttle.stats();
    assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.refused_in_flight.load(Ordering::Relaxed), 0);
}

#[test]
fn a_login_whose_tries_in_flight_never_settle_is_refused_after_the_wait_uncounted() {
    let app = spawn_app();
    app.register("bea", PW);
    let throttle = &app.handle.services().throttle;
    let held: Vec<_> = (0..5)
        .map(|_| {
            throttle
                .begin("bea", LOCALHOST, Instant::now())
                .expect("checked")
        })
        .collect();
    let mut c = app.client();
    c.expect_greeting();
    c.login_refused("bea", PW);
    let stats = throttle.stats();
    assert_eq!(stats.refused_in_flight.load(Ordering::Relaxed), 1);
    assert_eq!(stats.failures.load(Ordering::Relaxed), 0, "not counted");
    drop(held);
    c.login_ok("bea", PW);
}

/// Two `run_server`s on the database at `url`, their stderr dropped.
fn two_servers(url: &str) -> [(ChildGuard, SocketAddr); 2] {
    [0, 1].map(|_| {
        let (mut child, addr) = start_server_binary(BIN, Path::new(url), "off");
        drop(child.stderr.take());
        (child, addr)
    })
}

fn register(server: SocketAddr, name: &str) {
    let mut c = TestClient::connect(server);
    c.expect_greeting();
    let out = c.register(name, PW);
    assert!(
        out.contains(&"User successfully registered!".to_string()),
        "{out:?}"
    );
    c.quit();
}

#[test]
fn sixteen_correct_logins_across_two_postgresql_servers_all_get_in() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    register(a, "cid");
    // The tries in flight of a third server, in the shared counters.
    let store = PgUserStore::open(&db.url()).unwrap_or_else(|e| panic!("{e}"));
    let shared = store
        .shared_throttle()
        .expect("PostgreSQL shares its throttle");
    let source = AddressKey::from(LOCALHOST);
    for _ in 0..5 {
        assert_eq!(shared.begin("cid", source).unwrap(), Decision::Allowed);
    }
    let logins = racing_logins(&[a, b], "cid", PW);
    // The servers cannot be asked whether their logins wait; the tries stay
    // in flight long enough for the logins to arrive (and if some arrived
    // later they would still get in: the test then proves less, not wrong).
    thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        shared.succeeded("cid", source).unwrap();
    }
    for out in outcomes(logins) {
        assert_eq!(out, granted());
    }
}

#[test]
fn sixteen_wrong_answers_across_two_postgresql_servers_are_checked_exactly_five_times() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    register(a, "dot");
    for out in outcomes(racing_logins(&[a, b], "dot", WRONG)) {
        assert_eq!(out, refused());
    }
    // Only checked failures are counted, on the pair and on the address.
    let row = db
        .connect()
        .query_one(
            "SELECT p.consecutive_failures, cardinality(a.failures)
             FROM THROTTLE_PAIR p JOIN THROTTLE_ADDR a USING (addr)
             WHERE p.addr = '127.0.0.1'",
            &[],
        )
        .unwrap();
    let (pair, addr): (i32, i32) = (row.get(0), row.get(1));
    assert_eq!((pair, addr), (5, 5), "exactly 5 checked");
}
