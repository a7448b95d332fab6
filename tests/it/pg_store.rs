//! The PostgreSQL store (`src/store/postgres.rs`) against a throwaway cluster
//! (`pg_cluster`): what is particular to PostgreSQL (the behaviours every
//! engine shares are in `store_suite.rs`, run on both), plus a name
//! race from 8 threads, the secret shared by two store instances, and the
//! 5 s bound on a locked table. Skipped (said once) without PostgreSQL.

use crate::pg_cluster::{test_db, TestDb};
use dccn_auth::crypto;
use dccn_auth::store::postgres::{is_postgres_url, PgUserStore};
use dccn_auth::store::{ColumnFault, Registration, Store, UnusableRow, UserRecord};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const SALT: &str = "0123456789abcdef0123456789abcdef";

fn record(name: &str) -> UserRecord {
    UserRecord {
        login: name.into(),
        verifier: Some(crypto::verifier(SALT, name)),
        salt: SALT.into(),
    }
}

fn open(db: &TestDb) -> PgUserStore {
    PgUserStore::open(&db.url()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_registration_is_visible_to_another_connection_when_it_returns() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    assert_eq!(
        store.register(record("bob"), None).unwrap(),
        Registration::Registered
    );
    // Committed (synchronous_commit = on) before register returned.
    let mut other = db.connect();
    let row = other
        .query_one("SELECT password, salt FROM users WHERE login = 'bob'", &[])
        .unwrap();
    assert_eq!(Some(row.get::<_, String>(0)), record("bob").verifier);
    let sync = other.query_one("SHOW synchronous_commit", &[]).unwrap();
    assert_eq!(sync.get::<_, String>(0), "on", "the cluster's default");
}

#[test]
fn the_secret_is_made_once_and_shared_by_two_stores() {
    let Some(db) = test_db() else { return };
    // Two stores opened at once, as two servers starting together.
    let url = db.url();
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || PgUserStore::open(&url).unwrap_or_else(|e| panic!("{e}")))
        })
        .collect();
    let stores: Vec<PgUserStore> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(stores[0].secret().len(), 32);
    assert_eq!(stores[0].secret(), stores[1].secret());
    // And kept: a later open reads the same.
    assert_eq!(open(&db).secret(), stores[0].secret());
    // One store's registration is the other's.
    stores[0].register(record("cy"), None).unwrap();
    assert!(stores[1].exists("cy").unwrap());
    assert_eq!(
        stores[1].register(record("cy"), None).unwrap(),
        Registration::NameTaken
    );
}

#[test]
fn a_name_race_from_8_threads_on_two_stores_has_exactly_one_winner() {
    let Some(db) = test_db() else { return };
    // Two stores, as two servers: 4 threads on each.
    let stores = [Arc::new(open(&db)), Arc::new(open(&db))];
    const ROUNDS: usize = 20;
    const THREADS: usize = 8;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                (0..ROUNDS)
                    .map(|round| {
                        barrier.wait();
                        let mut r = record(&format!("race{round}"));
                        // Each thread's own verifier, to see whose row won.
                        r.verifier = Some(crypto::verifier(SALT, &format!("{t}")));
                        (round, t, store.register(r, None).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<(usize, usize, Registration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for round in 0..ROUNDS {
        let winners: Vec<usize> = outcomes
            .iter()
            .filter(|(r, _, o)| *r == round && *o == Registration::Registered)
            .map(|(_, t, _)| *t)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        // The stored row is the winner's.
        let stored = stores[0]
            .find_classic(&format!("race{round}"))
            .unwrap()
            .unwrap();
        let want = crypto::verifier(SALT, &format!("{}", winners[0]));
        assert_eq!(stored.classic.unwrap().verifier, want, "round {round}");
    }
}

#[test]
fn odd_rows_are_unusable_and_say_why() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    let good_v = "a".repeat(64);
    let good_s = "b".repeat(32);
    let injected = format!("{}\nAccess granted!", &good_s[..16]);
    let mut raw = db.connect();
    let rows: [(&str, Option<&str>, Option<&str>); 7] = [
        ("good", Some(&good_v), Some(&good_s)),
        ("empty", Some(""), Some(&good_s)),
        ("marker", Some("!"), Some(&good_s)),
        ("upper", Some(&good_v.to_uppercase()), Some(&good_s)),
        ("nullv", None, Some(&good_s)),
        ("nulls", Some(&good_v), None),
        ("newline", Some(&good_v), Some(&injected)),
    ];
    // The upper-case verifier must outlive the borrow above.
    for (name, v, s) in rows {
        raw.execute("INSERT INTO users VALUES ($1, $2, $3)", &[&name, &v, &s])
            .unwrap();
    }
    use ColumnFault::*;
    let want = [
        ("good", None),
        (
            "empty",
            Some(UnusableRow::Verifier(NotHex { want: 64, chars: 0 })),
        ),
        (
            "marker",
            Some(UnusableRow::Verifier(NotHex { want: 64, chars: 1 })),
        ),
        (
            "upper",
            Some(UnusableRow::Verifier(NotHex {
                want: 64,
                chars: 64,
            })),
        ),
        ("nullv", Some(UnusableRow::Verifier(Null))),
        ("nulls", Some(UnusableRow::Salt(Null))),
        (
            "newline",
            Some(UnusableRow::Salt(NotHex {
                want: 32,
                chars: 32,
            })),
        ),
    ];
    for (name, fault) in want {
        let user = store.find_classic(name).unwrap().expect(name);
        assert_eq!(user.classic.err(), fault, "{name}");
    }
    assert_eq!(store.list().unwrap().len(), 7, "list reads odd rows too");
}

#[test]
fn list_sorts_names_byte_by_byte_as_sqlite_does() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    for name in ["b", "B", "a", "é", "Z", "_x"] {
        store.register(record(name), None).unwrap();
    }
    let names: Vec<String> = store.list().unwrap().into_iter().map(|u| u.login).collect();
    assert_eq!(names, ["B", "Z", "_x", "a", "b", "é"]);
}

#[test]
fn a_locked_table_is_a_store_error_within_the_lock_timeout() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    let mut holder = db.connect();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    let err = store.find("ann").unwrap_err().to_string();
    let took = started.elapsed();
    // lock_timeout and statement_timeout are both 5 s: either may fire first.
    assert!(err.contains("timeout"), "{err}");
    eprintln!("a locked table: {err} after {took:.1?}");
    // Bounded: the lock_timeout (5 s), not forever; generous for a loaded machine.
    assert!(took < Duration::from_secs(30), "{took:?}");
    tx.rollback().unwrap();
    assert_eq!(
        store.find("ann").unwrap(),
        None,
        "fine once the lock is gone"
    );
}

#[test]
fn bad_urls_and_unreachable_servers_are_errors_not_panics() {
    assert!(is_postgres_url("postgres://u@h/d"));
    assert!(is_postgres_url("postgresql://u@h/d"));
    assert!(!is_postgres_url("users.db"));
    let err = PgUserStore::open("postgres://u:s3cret@127.0.0.1:bad/d")
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("s3cret"), "{err}");
    // Nothing listens on port 1 of 127.0.0.1: refused at once.
    let err = PgUserStore::open("postgres://u:s3cret@127.0.0.1:1/d")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
