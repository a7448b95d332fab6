//! The shared throttle (`src/store/pg_throttle.rs`) against a throwaway
//! cluster: the policy of the in-memory throttle, pending tries, a race of
//! threads on one pair, and two stores (as two servers) on one database.
//! Skipped (said once) without PostgreSQL.

use crate::pg_cluster::{test_db, TestDb};
use dccn_auth::address::AddressKey;
use dccn_auth::store::postgres::PgUserStore;
use dccn_auth::store::Store;
use dccn_auth::throttle::{Decision, SharedThrottle};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};
use std::thread;

fn throttle(db: &TestDb) -> Arc<dyn SharedThrottle> {
    let store = PgUserStore::open(&db.url()).unwrap_or_else(|e| panic!("{e}"));
    store
        .shared_throttle()
        .expect("PostgreSQL shares its throttle")
}

fn addr(last: u8) -> AddressKey {
    AddressKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

/// One checked failure (begin, then failed).
fn fail(t: &dyn SharedThrottle, user: &str, a: AddressKey) {
    assert_eq!(
        t.begin(user, a).unwrap(),
        Decision::Allowed,
        "{user} from {a} should be checked"
    );
    t.failed(user, a).unwrap();
}

#[test]
fn five_failures_open_a_window_for_the_pair_only() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..5 {
        fail(&*t, "ann", addr(1));
    }
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Refused,
        "refused inside the window"
    );
    assert_eq!(
        t.begin("ann", addr(2)).unwrap(),
        Decision::Allowed,
        "another address is free"
    );
    t.abandoned("ann", addr(2)).unwrap();
    assert_eq!(
        t.begin("bob", addr(1)).unwrap(),
        Decision::Allowed,
        "another name is free"
    );
    t.abandoned("bob", addr(1)).unwrap();
}

#[test]
fn the_window_doubles_with_each_checked_failure_on_the_database_clock() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..5 {
        fail(&*t, "ann", addr(1));
    }
    let left = |c: &mut postgres::Client| -> f64 {
        c.query_one(
            "SELECT extract(epoch FROM blocked_until - clock_timestamp())::float8
             FROM THROTTLE_PAIR WHERE addr = '10.0.0.1'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let mut c = db.connect();
    let first = left(&mut c);
    assert!(first > 0.0 && first <= 1.0, "first window 1 s: {first}");
    // A 6th failure (as if checked past the window) doubles it.
    t.failed("ann", addr(1)).unwrap();
    let second = left(&mut c);
    assert!(second > 1.0 && second <= 2.0, "second window 2 s: {second}");
}

#[test]
fn a_success_resets_the_pair_but_not_the_address() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..4 {
        fail(&*t, "ann", addr(1));
    }
    assert_eq!(t.begin("ann", addr(1)).unwrap(), Decision::Allowed);
    t.succeeded("ann", addr(1)).unwrap();
    for _ in 0..4 {
        fail(&*t, "ann", addr(1));
    }
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Allowed,
        "4 in a row since the success"
    );
    t.abandoned("ann", addr(1)).unwrap();
    // 8 address failures so far; 12 more over other names reach 20.
    for n in 0..12 {
        fail(&*t, &format!("name{n}"), addr(1));
    }
    assert_eq!(
        t.begin("zed", addr(1)).unwrap(),
        Decision::Refused,
        "20 per address: window"
    );
    assert_eq!(t.begin("zed", addr(2)).unwrap(), Decision::Allowed);
    t.abandoned("zed", addr(2)).unwrap();
}

#[test]
fn pending_tries_count_as_failures_to_come_until_settled() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..5 {
        assert_eq!(t.begin("ann", addr(1)).unwrap(), Decision::Allowed);
    }
    // Not refused (no failure yet), not checked (5 failures to come at most):
    // busy, for the tries in flight to decide.
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Busy,
        "5 pending: no 6th check yet"
    );
    t.abandoned("ann", addr(1)).unwrap();
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Allowed,
        "one abandoned: room for one"
    );
}

#[test]
fn racing_stores_on_one_database_check_exactly_as_many_tries_as_allowed() {
    let Some(db) = test_db() else { return };
    // Two stores: two servers' pools on one database.
    let stores = [throttle(&db), throttle(&db)];
    for _ in 0..3 {
        fail(&*stores[0], "ann", addr(1));
    }
    const THREADS: usize = 8;
    let barrier = Arc::new(Barrier::new(THREADS));
    let racers: Vec<_> = (0..THREADS)
        .map(|i| {
            let t = stores[i % 2].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                t.begin("ann", addr(1)).unwrap()
            })
        })
        .collect();
    let decisions: Vec<Decision> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let allowed = decisions
        .iter()
        .filter(|&&d| d == Decision::Allowed)
        .count();
    assert!(
        !decisions.contains(&Decision::Refused),
        "no window is open: the others are busy, not refused: {decisions:?}"
    );
    assert_eq!(allowed, 2, "3 failures + 2 pending = 5: exactly 2 checked");
}

#[test]
fn a_busy_try_is_decided_by_the_outcome_of_the_tries_in_flight() {
    let Some(db) = test_db() else { return };
    // Two stores: the try in flight on one server, the waiting one on the other.
    let (first, second) = (throttle(&db), throttle(&db));
    for (fails, want) in [(false, Decision::Allowed), (true, Decision::Refused)] {
        for _ in 0..4 {
            fail(&*first, "ann", addr(1));
        }
        assert_eq!(first.begin("ann", addr(1)).unwrap(), Decision::Allowed);
        assert_eq!(second.begin("ann", addr(1)).unwrap(), Decision::Busy);
        let waiter = {
            let second = second.clone();
            thread::spawn(move || second.begin_waiting("ann", addr(1)).unwrap())
        };
        if fails {
            first.failed("ann", addr(1)).unwrap();
        } else {
            first.succeeded("ann", addr(1)).unwrap();
        }
        assert_eq!(waiter.join().unwrap(), want, "in flight failed: {fails}");
        if want == Decision::Allowed {
            // The pair starts afresh for the next round.
            second.succeeded("ann", addr(1)).unwrap();
        }
    }
}

#[test]
fn a_try_busy_past_the_wait_is_left_busy_and_not_counted() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..5 {
        assert_eq!(t.begin("ann", addr(1)).unwrap(), Decision::Allowed);
    }
    // Nothing settles: busy at the end of the wait (the caller refuses it).
    assert_eq!(t.begin_waiting("ann", addr(1)).unwrap(), Decision::Busy);
    let pending: i32 = db
        .connect()
        .query_one("SELECT pending FROM THROTTLE_PAIR", &[])
        .unwrap()
        .get(0);
    assert_eq!(pending, 5, "the busy try was never counted");
}

#[test]
fn a_pair_with_no_failure_for_ten_minutes_starts_afresh() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    for _ in 0..4 {
        fail(&*t, "ann", addr(1));
    }
    // As if the 4 failures were 11 minutes old (the database's clock decides).
    db.connect()
        .execute(
            "UPDATE THROTTLE_PAIR SET last_failure = last_failure - interval '11 minutes'",
            &[],
        )
        .unwrap();
    for _ in 0..4 {
        fail(&*t, "ann", addr(1));
    }
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Allowed,
        "4 recent failures, not 8"
    );
    t.failed("ann", addr(1)).unwrap();
    assert_eq!(
        t.begin("ann", addr(1)).unwrap(),
        Decision::Refused,
        "the 5th recent one closes it"
    );
}

#[test]
fn a_database_failure_is_an_error_not_a_panic() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    db.connect()
        .batch_execute("DROP TABLE THROTTLE_PAIR CASCADE")
        .unwrap();
    assert!(t.begin("ann", addr(1)).is_err());
    assert!(t.failed("ann", addr(1)).is_err());
}

#[test]
fn expired_rows_are_deleted_and_rows_without_failures_are_not_kept() {
    let Some(db) = test_db() else { return };
    let t = throttle(&db);
    let mut c = db.connect();
    let count = |c: &mut postgres::Client, table: &str| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    // A success leaves no row behind; neither does an abandoned try.
    assert_eq!(t.begin("ann", addr(1)).unwrap(), Decision::Allowed);
    t.succeeded("ann", addr(1)).unwrap();
    assert_eq!(t.begin("bob", addr(2)).unwrap(), Decision::Allowed);
    t.abandoned("bob", addr(2)).unwrap();
    assert_eq!(count(&mut c, "THROTTLE_PAIR"), 0);
    assert_eq!(
        count(&mut c, "THROTTLE_ADDR"),
        0,
        "no address row without a failure"
    );
    // Three failed pairs, then aged past the span: the next failure deletes them.
    for n in 0..3 {
        fail(&*t, &format!("old{n}"), addr(3));
    }
    c.batch_execute(
        "UPDATE THROTTLE_PAIR SET last_failure = last_failure - interval '11 minutes';
         UPDATE THROTTLE_ADDR SET last_failure = last_failure - interval '11 minutes'",
    )
    .unwrap();
    fail(&*t, "new", addr(4));
    assert_eq!(count(&mut c, "THROTTLE_PAIR"), 1, "only the new pair");
    let addrs: Vec<String> = c
        .query(
            "SELECT addr FROM THROTTLE_ADDR WHERE last_failure IS NOT NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(addrs, vec!["10.0.0.4".to_string()]);
}

#[test]
fn an_older_servers_boolean_begin_function_is_left_in_place() {
    let Some(db) = test_db() else { return };
    // As an older server leaves it (its tables aside): the same name and
    // arguments, a BOOLEAN result. Servers of both versions may share the
    // database during a rolling upgrade, so it must survive this version's schema.
    db.connect()
        .batch_execute(
            "CREATE FUNCTION dccn_throttle_begin(p_login BYTEA, p_addr TEXT,
                 pair_free INTEGER, addr_free INTEGER, span INTERVAL, stale INTERVAL)
                 RETURNS BOOLEAN LANGUAGE sql AS 'SELECT true'",
        )
        .unwrap();
    let t = throttle(&db);
    assert_eq!(t.begin("ann", addr(1)).unwrap(), Decision::Allowed);
    t.abandoned("ann", addr(1)).unwrap();
    let kept: bool = db
        .connect()
        .query_one(
            "SELECT to_regprocedure(
                 'dccn_throttle_begin(bytea,text,integer,integer,interval,interval)') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(kept, "the older server's function is still there");
}
