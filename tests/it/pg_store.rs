//! The PostgreSQL store (`src/store/postgres.rs`) against a throwaway cluster
//! (`pg_cluster`): the behaviours of `src/store.rs`'s unit tests, plus a name
//! race from 8 threads, the secret shared by two store instances, and the
//! 5 s bound on a locked table. Skipped (said once) without PostgreSQL.

use crate::pg_cluster::{test_db, TestDb};
use dccn_auth::crypto;
use dccn_auth::store::postgres::{is_postgres_url, PgUserStore};
use dccn_auth::store::{
    ClassicVerifier, ColumnFault, Registration, ScramRow, Store, UnusableRow, UserRecord,
};
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
fn register_find_change_delete() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    assert_eq!(store.find_classic("ann").unwrap(), None);
    assert_eq!(
        store.register(record("ann"), None).unwrap(),
        Registration::Registered
    );
    assert_eq!(
        store.register(record("ann"), None).unwrap(),
        Registration::NameTaken
    );
    let ann = record("ann");
    let classic = ClassicVerifier {
        verifier: ann.verifier.clone().unwrap(),
        salt: ann.salt.clone(),
    };
    assert_eq!(
        store.find_classic("ann").unwrap().unwrap().classic,
        Ok(classic)
    );
    assert!(store.exists("ann").unwrap());
    assert!(!store.exists("Ann").unwrap(), "names are case-sensitive");
    let v2 = "f".repeat(64);
    assert!(store
        .change_password("ann", Some(&v2), &ann.salt, None)
        .unwrap());
    assert_eq!(
        store
            .find_classic("ann")
            .unwrap()
            .unwrap()
            .classic
            .unwrap()
            .verifier,
        v2
    );
    assert!(store.delete("ann").unwrap());
    assert!(!store.delete("ann").unwrap());
    assert!(!store
        .change_password("ann", Some("v3"), "s3", None)
        .unwrap());
    // A NUL byte cannot be stored by PostgreSQL: such a name is simply absent.
    assert_eq!(store.find_classic("a\0b").unwrap(), None);
    assert!(!store.exists("a\0b").unwrap());
    assert!(!store.delete("a\0b").unwrap());
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
fn concurrent_registrations_each_get_their_own_result() {
    let Some(db) = test_db() else { return };
    let store = Arc::new(open(&db));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        // Every name is registered by two threads: one wins.
                        let name = format!("u{}-{i}", t / 2);
                        store.register(record(&name), None).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<Registration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let won = outcomes
        .iter()
        .filter(|o| **o == Registration::Registered)
        .count();
    assert_eq!(won, 4 * 25);
    assert_eq!(outcomes.len() - won, 4 * 25);
    assert_eq!(store.list().unwrap().len(), 100);
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

#[test]
fn scram_rows_live_and_die_with_their_users_row_and_migrate_by_compare_and_set() {
    let Some(db) = test_db() else { return };
    let store = open(&db);
    let row = |tag: &str| ScramRow {
        iterations: 4096,
        stored_key: format!("stored-{tag}"),
        server_key: format!("server-{tag}"),
    };
    assert_eq!(store.find_scram("ann").unwrap(), None);
    store.register(record("ann"), Some(row("1"))).unwrap();
    assert_eq!(
        store.find_scram("ann").unwrap().unwrap().scram,
        Some(row("1"))
    );
    // change_password rewrites both in one transaction; a NULL verifier is fine.
    assert!(store
        .change_password("ann", None, SALT, Some(&row("2")))
        .unwrap());
    assert_eq!(store.find("ann").unwrap().unwrap().verifier, None);
    assert_eq!(
        store.find_scram("ann").unwrap().unwrap().scram,
        Some(row("2"))
    );
    assert_eq!(
        store.find_classic("ann").unwrap().unwrap().classic,
        Err(UnusableRow::Verifier(ColumnFault::Null))
    );
    // delete removes the SCRAM row with the user.
    assert!(store.delete("ann").unwrap());
    store.register(record("ann"), None).unwrap();
    assert_eq!(store.find_scram("ann").unwrap().unwrap().scram, None);
    // The migration's compare-and-set: a stale USERS row is not written.
    store.register(record("bob"), None).unwrap();
    let ann = store.find("ann").unwrap().unwrap();
    let mut stale_bob = store.find("bob").unwrap().unwrap();
    stale_bob.salt = "changed meanwhile".into();
    let writes = vec![(ann, row("a")), (stale_bob, row("b"))];
    let done = store.put_scram_rows(&writes, &writes).unwrap();
    assert_eq!((done.written, done.dropped), (1, 1));
    assert_eq!(store.find("ann").unwrap().unwrap().verifier, None);
    assert!(store.find("bob").unwrap().unwrap().verifier.is_some());
    assert_eq!(store.list_with_scram().unwrap().len(), 2);
}
