//! One test suite for every store engine, written once against the `Store`
//! trait and run against SQLite (a temporary file) and PostgreSQL (the
//! throwaway cluster of `pg_cluster`; skipped, said once, without it). What is
//! particular to one engine (SQLite's file modes and page cap, PostgreSQL's
//! pool, lock timeout and NUL bytes) stays in that engine's own tests.

use crate::pg_cluster::test_db;
use dccn_auth::crypto;
use dccn_auth::store::{
    ColumnFault, PgUserStore, Registration, ScramLookup, ScramRow, ScramWrites, Store, UnusableRow,
    UserRecord, UserStore,
};
use std::sync::Arc;
use std::thread;

const SALT: &str = "0123456789abcdef0123456789abcdef";

fn record(name: &str) -> UserRecord {
    UserRecord {
        login: name.into(),
        verifier: Some(crypto::verifier(SALT, name)),
        salt: SALT.into(),
    }
}

fn scram_row(tag: &str) -> ScramRow {
    ScramRow {
        iterations: 4096,
        stored_key: format!("sk-{tag}"),
        server_key: format!("vk-{tag}"),
    }
}

/// Runs each named behaviour on both engines: `<name>::sqlite`, `<name>::postgres`.
macro_rules! on_both_engines {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let store = dccn_auth::store::UserStore::open(&dir.path().join("u.db")).unwrap();
                super::$behaviour(std::sync::Arc::new(store));
            }

            #[test]
            fn postgres() {
                let Some(db) = crate::pg_cluster::test_db() else { return };
                let store = dccn_auth::store::PgUserStore::open(&db.url())
                    .unwrap_or_else(|e| panic!("{e}"));
                super::$behaviour(std::sync::Arc::new(store));
            }
        }
    )*};
}

on_both_engines!(
    register_find_change_delete,
    concurrent_registrations_each_get_their_own_result,
    scram_rows_live_and_die_with_their_users_row,
    put_scram_rows_is_compare_and_set,
);

fn register_find_change_delete(store: Arc<dyn Store>) {
    assert_eq!(store.find("ann").unwrap(), None);
    assert_eq!(store.find_classic("ann").unwrap(), None);
    assert_eq!(
        store.register(record("ann"), None).unwrap(),
        Registration::Registered
    );
    assert_eq!(
        store.register(record("ann"), None).unwrap(),
        Registration::NameTaken
    );
    assert_eq!(store.find("ann").unwrap(), Some(record("ann")));
    let classic = store.find_classic("ann").unwrap().unwrap().classic.unwrap();
    assert_eq!(Some(classic.verifier), record("ann").verifier);
    assert!(store.exists("ann").unwrap());
    assert!(!store.exists("Ann").unwrap(), "names are case-sensitive");
    let v2 = "f".repeat(64);
    assert!(store.change_password("ann", Some(&v2), SALT, None).unwrap());
    assert_eq!(store.find("ann").unwrap().unwrap().verifier, Some(v2));
    assert!(store.delete("ann").unwrap());
    assert!(!store.delete("ann").unwrap());
    assert!(!store
        .change_password("ann", Some("v3"), "s3", None)
        .unwrap());
}

fn concurrent_registrations_each_get_their_own_result(store: Arc<dyn Store>) {
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

fn scram_rows_live_and_die_with_their_users_row(store: Arc<dyn Store>) {
    assert_eq!(store.find_scram("ann").unwrap(), None);
    store.register(record("ann"), Some(scram_row("1"))).unwrap();
    let found = store.find_scram("ann").unwrap().unwrap();
    assert_eq!(found.salt, SALT);
    assert_eq!(found.scram, Some(scram_row("1")));
    // change_password rewrites both; a NULL verifier is fine everywhere.
    assert!(store
        .change_password("ann", None, "s2", Some(&scram_row("2")))
        .unwrap());
    assert_eq!(store.find("ann").unwrap().unwrap().verifier, None);
    assert_eq!(
        store.list().unwrap()[0].classic,
        Err(UnusableRow::Verifier(ColumnFault::Null))
    );
    assert_eq!(
        store.find_scram("ann").unwrap().unwrap(),
        ScramLookup {
            salt: "s2".into(),
            scram: Some(scram_row("2"))
        }
    );
    assert!(store.delete("ann").unwrap());
    assert_eq!(store.find_scram("ann").unwrap(), None);
    // No orphan left behind: a new "ann" without SCRAM has none.
    store.register(record("ann"), None).unwrap();
    assert_eq!(store.find_scram("ann").unwrap().unwrap().scram, None);
    assert_eq!(store.list_with_scram().unwrap().len(), 1);
}

fn put_scram_rows_is_compare_and_set(store: Arc<dyn Store>) {
    store.register(record("ann"), None).unwrap();
    store.register(record("bob"), None).unwrap();
    let ann = store.find("ann").unwrap().unwrap();
    let mut stale_bob = store.find("bob").unwrap().unwrap();
    stale_bob.salt = "changed meanwhile".into();
    let writes = vec![(ann, scram_row("a")), (stale_bob, scram_row("b"))];
    let done = store.put_scram_rows(&writes, &writes).unwrap();
    assert_eq!(
        done,
        ScramWrites {
            written: 1,
            dropped: 1
        }
    );
    assert_eq!(store.find("ann").unwrap().unwrap().verifier, None);
    assert!(store.find("bob").unwrap().unwrap().verifier.is_some());
    assert_eq!(store.find_scram("bob").unwrap().unwrap().scram, None);
    // A drop needs the SCRAM row it was decided on.
    store.register(record("cy"), Some(scram_row("c"))).unwrap();
    let cy = store.find("cy").unwrap().unwrap();
    let done = store
        .put_scram_rows(&[], &[(cy, scram_row("other"))])
        .unwrap();
    assert_eq!(done.dropped, 0);
}

/// The engines are interchangeable behind the trait object the server holds.
#[test]
fn both_engines_are_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(UserStore::open(&dir.path().join("u.db")).unwrap());
    assert_eq!(sqlite.secret().len(), 32);
    if let Some(db) = test_db() {
        let pg: Arc<dyn Store> = Arc::new(PgUserStore::open(&db.url()).unwrap());
        assert_eq!(pg.secret().len(), 32);
    }
}
