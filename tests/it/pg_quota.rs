//! The registration quota shared in PostgreSQL (`src/store/pg_quota.rs`,
//! issue 15's PostgreSQL part) against a throwaway cluster: two stores (as two
//! servers' pools) on one database, a race of threads, a reservation left by a
//! dead server, the table kept bounded, a database failure; then two real
//! `run_server` processes on one database. Skipped (said once) without
//! PostgreSQL, as the other PostgreSQL tests.

use crate::common::{start_server_binary_with, ChildGuard, TestClient, MAIN_MENU};
use crate::pg_cluster::{test_db, TestDb};
use dccn_auth::address::AddressKey;
use dccn_auth::registration_quota::RegistrationQuota;
use dccn_auth::store::postgres::PgUserStore;
use dccn_auth::store::Store;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const PW: &str = "Passw0rd1";
const LIMITED: &str = "Too many registrations from your address, try again later";
const SERVER_ERROR: &str = "Server error, try again later";
/// What the stale time is in these tests unless one says otherwise.
const STALE: Duration = Duration::from_secs(600);

/// A quota of `limit` on its own store (its own pool): one server's view.
fn quota(db: &TestDb, limit: usize, stale: Duration) -> Arc<dyn RegistrationQuota> {
    let store = PgUserStore::open(&db.url()).unwrap_or_else(|e| panic!("{e}"));
    store
        .shared_registration_quota(limit, stale)
        .expect("PostgreSQL shares its registration quota")
}

fn addr(last: u8) -> AddressKey {
    AddressKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

/// Reserves and acknowledges one registration, which must be allowed.
fn register(q: &dyn RegistrationQuota, a: AddressKey) {
    q.reserve(a)
        .unwrap()
        .unwrap_or_else(|| panic!("{a} should have room"))
        .acknowledged();
}

fn rows(db: &TestDb, table: &str) -> i64 {
    db.connect()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn two_stores_share_one_count_per_address() {
    let Some(db) = test_db() else { return };
    let (a, b) = (quota(&db, 3, STALE), quota(&db, 3, STALE));
    register(&*a, addr(2));
    register(&*a, addr(2));
    register(&*b, addr(2));
    assert!(a.reserve(addr(2)).unwrap().is_none(), "3 used, on A");
    assert!(b.reserve(addr(2)).unwrap().is_none(), "3 used, on B");
    register(&*b, addr(3));
}

#[test]
fn a_released_reservation_does_not_count_and_one_in_progress_does() {
    let Some(db) = test_db() else { return };
    let (a, b) = (quota(&db, 2, STALE), quota(&db, 2, STALE));
    // Given up (dropped): released.
    drop(a.reserve(addr(1)).unwrap().expect("room"));
    register(&*a, addr(1));
    let in_progress = b.reserve(addr(1)).unwrap().expect("room for a second");
    assert!(
        a.reserve(addr(1)).unwrap().is_none(),
        "1 done + 1 in progress"
    );
    drop(in_progress);
    register(&*a, addr(1));
    assert!(b.reserve(addr(1)).unwrap().is_none(), "2 done");
}

#[test]
fn racing_threads_on_two_stores_acknowledge_exactly_the_limit() {
    let Some(db) = test_db() else { return };
    let stores = [quota(&db, 5, STALE), quota(&db, 5, STALE)];
    const THREADS: usize = 8;
    const TRIES: usize = 4;
    let barrier = Arc::new(Barrier::new(THREADS));
    let racers: Vec<_> = (0..THREADS)
        .map(|i| {
            let q = stores[i % 2].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut acknowledged = 0;
                for _ in 0..TRIES {
                    if let Some(r) = q.reserve(addr(7)).unwrap() {
                        r.acknowledged();
                        acknowledged += 1;
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: usize = racers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(acknowledged, 5, "{THREADS} x {TRIES} tries, quota 5");
}

#[test]
fn a_reservation_left_by_a_dead_server_stops_counting_once_stale() {
    let Some(db) = test_db() else { return };
    let stale = Duration::from_secs(1);
    let (dead, alive) = (quota(&db, 1, stale), quota(&db, 1, stale));
    // A server that dies mid-registration never settles its reservation.
    std::mem::forget(dead.reserve(addr(4)).unwrap().expect("room"));
    let taken_at = Instant::now();
    assert!(
        alive.reserve(addr(4)).unwrap().is_none(),
        "held while fresh"
    );
    thread::sleep(stale.saturating_sub(taken_at.elapsed()) + Duration::from_millis(300));
    register(&*alive, addr(4));
    assert!(alive.reserve(addr(4)).unwrap().is_none(), "1 done");
}

#[test]
fn rows_holding_nothing_are_deleted_and_expired_ones_pruned() {
    let Some(db) = test_db() else { return };
    let q = quota(&db, 3, STALE);
    drop(q.reserve(addr(1)).unwrap().expect("room"));
    assert_eq!(
        rows(&db, "REGISTRATION_QUOTA"),
        0,
        "a released reservation leaves no row"
    );
    for n in 10..40 {
        register(&*q, addr(n));
    }
    register(&*q, addr(10));
    assert_eq!(rows(&db, "REGISTRATION_QUOTA"), 30);
    assert_eq!(rows(&db, "REGISTRATION_QUOTA_ACK"), 31);
    // As if those registrations were 11 minutes old (the database's clock decides).
    db.connect()
        .batch_execute(
            "UPDATE REGISTRATION_QUOTA_ACK SET at = at - interval '11 minutes';
             UPDATE REGISTRATION_QUOTA SET expires = expires - interval '11 minutes'",
        )
        .unwrap();
    // Each reservation deletes up to 16 expired rows of other addresses.
    register(&*q, addr(1));
    register(&*q, addr(2));
    assert_eq!(
        rows(&db, "REGISTRATION_QUOTA"),
        2,
        "30 expired rows pruned by two reservations"
    );
    assert_eq!(rows(&db, "REGISTRATION_QUOTA_ACK"), 2);
    // An expired count no longer holds its address, nor its row's leftovers.
    register(&*q, addr(1));
    register(&*q, addr(1));
    assert!(q.reserve(addr(1)).unwrap().is_none(), "3 recent ones");
}

#[test]
fn old_acknowledgements_of_an_address_stop_counting_and_are_dropped() {
    let Some(db) = test_db() else { return };
    let q = quota(&db, 2, STALE);
    register(&*q, addr(5));
    register(&*q, addr(5));
    assert!(q.reserve(addr(5)).unwrap().is_none());
    // One of the two 11 minutes old: one unit free again.
    db.connect()
        .batch_execute(
            "UPDATE REGISTRATION_QUOTA_ACK SET at = at - interval '11 minutes'
             WHERE at = (SELECT min(at) FROM REGISTRATION_QUOTA_ACK)",
        )
        .unwrap();
    register(&*q, addr(5));
    assert!(q.reserve(addr(5)).unwrap().is_none());
    assert_eq!(
        rows(&db, "REGISTRATION_QUOTA_ACK"),
        2,
        "the old one dropped"
    );
}

#[test]
fn a_database_failure_is_an_error_not_a_registration() {
    let Some(db) = test_db() else { return };
    let q = quota(&db, 3, STALE);
    db.connect()
        .batch_execute("DROP TABLE REGISTRATION_QUOTA CASCADE")
        .unwrap();
    assert!(q.reserve(addr(1)).is_err());
}

/// Two servers with a registration quota of `limit` on the database at `url`.
fn two_servers(url: &str, limit: usize) -> [(ChildGuard, SocketAddr); 2] {
    let limit = limit.to_string();
    [0, 1].map(|_| {
        let (mut child, addr) = start_server_binary_with(
            BIN,
            Path::new(url),
            "off",
            &[("DCCN_MAX_REGISTRATIONS_PER_ADDRESS", &limit)],
        );
        drop(child.stderr.take());
        (child, addr)
    })
}

/// A client of the server at `addr` connecting from `source` (127.0.0.0/8).
fn client_from(addr: SocketAddr, source: [u8; 4]) -> TestClient {
    let mut c = TestClient::connect_from(addr, IpAddr::from(source));
    c.expect_greeting();
    c
}

/// From the main menu: `register`, refused with `line` before `__username__`.
fn register_refused(c: &mut TestClient, line: &str) {
    c.send("register");
    assert_eq!(c.expect_prompt("__type__"), vec![line, MAIN_MENU]);
}

#[test]
fn two_servers_share_the_quota_of_an_address() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url(), 3);
    const SOURCE: [u8; 4] = [127, 0, 0, 2];
    let mut on_a = client_from(a, SOURCE);
    for name in ["quota_a1", "quota_a2"] {
        assert_eq!(
            on_a.register(name, PW),
            vec!["User successfully registered!", MAIN_MENU]
        );
    }
    let mut on_b = client_from(b, SOURCE);
    assert_eq!(
        on_b.register("quota_b1", PW)[0],
        "User successfully registered!"
    );
    register_refused(&mut on_a, LIMITED);
    register_refused(&mut on_b, LIMITED);
    // Another address is not touched, on either server.
    let mut other = client_from(a, [127, 0, 0, 3]);
    assert_eq!(
        other.register("quota_c1", PW)[0],
        "User successfully registered!"
    );
    on_a.quit();
    on_b.quit();
    other.quit();
}

#[test]
fn a_race_of_registrations_from_one_address_across_two_servers_acknowledges_exactly_the_quota() {
    let Some(db) = test_db() else { return };
    let servers = two_servers(&db.url(), 3);
    const SOURCE: [u8; 4] = [127, 0, 0, 4];
    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let server = servers[i % 2].1;
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = client_from(server, SOURCE);
                barrier.wait();
                let ok = c.register_unless_limited(&format!("racer{i}"), PW);
                c.quit();
                ok
            })
        })
        .collect();
    let registered = racers
        .into_iter()
        .map(|r| r.join().unwrap())
        .filter(|&ok| ok)
        .count();
    assert_eq!(registered, 3);
    for (_, server) in &servers {
        register_refused(&mut client_from(*server, SOURCE), LIMITED);
    }
}

#[test]
fn a_database_failure_while_reserving_says_server_error_and_registers_nothing() {
    let Some(db) = test_db() else { return };
    let [(_a, a), _] = two_servers(&db.url(), 3);
    db.connect()
        .batch_execute("DROP FUNCTION dccn_quota_reserve")
        .unwrap();
    let mut c = client_from(a, [127, 0, 0, 5]);
    register_refused(&mut c, SERVER_ERROR);
    // The session goes on at the main menu.
    register_refused(&mut c, SERVER_ERROR);
    c.quit();
    let users: i64 = db
        .connect()
        .query_one("SELECT count(*) FROM USERS", &[])
        .unwrap()
        .get(0);
    assert_eq!(users, 0);
}
