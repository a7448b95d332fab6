//! `run_server copy-db`: SQLite users (NULL verifiers and SCRAM rows included)
//! moved to PostgreSQL, idempotent, conflicts left alone, then a login on a
//! server over the copy; usage errors. Skipped (said once) without PostgreSQL.

use crate::child::{run_with_deadline, Run};
use crate::common::{start_server_binary, TestClient};
use crate::pg_cluster::test_db;
use dccn_auth::crypto;
use dccn_auth::store::postgres::PgUserStore;
use dccn_auth::store::{ScramRow, Store, UserRecord, UserStore, UserWithScram};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const SALT: &str = "0123456789abcdef0123456789abcdef";
const PW: &str = "Passw0rd1";

fn record(name: &str, verifier: Option<String>) -> UserRecord {
    UserRecord {
        login: name.into(),
        verifier,
        salt: SALT.into(),
    }
}

fn scram(tag: &str) -> ScramRow {
    ScramRow {
        iterations: 4096,
        stored_key: format!("{tag}-stored"),
        server_key: format!("{tag}-server"),
    }
}

fn copy_db(from: &Path, to: &str) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(["copy-db", "--from"]).arg(from).args(["--to", to]);
    run_with_deadline(cmd, "", Duration::from_secs(30))
}

fn sorted(mut users: Vec<UserWithScram>) -> Vec<UserWithScram> {
    users.sort_by(|a, b| a.user.login.cmp(&b.user.login));
    users
}

#[test]
fn copy_db_moves_every_user_once_and_leaves_conflicts_alone() {
    let Some(db) = test_db() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.db");
    let sqlite = UserStore::open(&file).unwrap();
    let classic = Some(crypto::verifier(SALT, PW));
    sqlite
        .register(record("ann", classic.clone()), None)
        .unwrap();
    sqlite
        .register(record("bob", classic.clone()), Some(scram("bob")))
        .unwrap();
    sqlite
        .register(record("cyd", None), Some(scram("cyd")))
        .unwrap();
    sqlite
        .register(record("dee", classic.clone()), None)
        .unwrap();
    let pg = PgUserStore::open(&db.url()).unwrap();
    // dee is already in the target with another password.
    let theirs = record("dee", Some(crypto::verifier(SALT, "0ther-pass")));
    pg.register(theirs.clone(), None).unwrap();

    let first = copy_db(&file, &db.url());
    assert_eq!(first.code, 1, "a conflict: {first:?}");
    for name in ["ann", "bob", "cyd"] {
        assert!(
            first.stdout.contains(&format!("copied {name}")),
            "{first:?}"
        );
    }
    assert!(first.stderr.contains("dee is in"), "{first:?}");
    assert!(first
        .stdout
        .contains("3 copied, 0 already there, 1 conflicts"));
    let want: Vec<_> = sorted(sqlite.list_with_scram().unwrap())
        .into_iter()
        .filter(|u| u.user.login != "dee")
        .collect();
    let after_first = sorted(pg.list_with_scram().unwrap());
    assert_eq!(
        &after_first[..3],
        &want[..],
        "rows as they are, NULL included"
    );
    assert_eq!(after_first[3].user, theirs, "the conflict is left alone");

    let again = copy_db(&file, &db.url());
    assert!(
        again
            .stdout
            .contains("0 copied, 3 already there, 1 conflicts"),
        "{again:?}"
    );
    assert_eq!(
        sorted(pg.list_with_scram().unwrap()),
        after_first,
        "a rerun changes nothing"
    );

    // Without the conflict a rerun exits 0.
    assert!(pg.delete("dee").unwrap());
    let third = copy_db(&file, &db.url());
    assert_eq!(third.code, 0, "{third:?}");
    assert!(
        third
            .stdout
            .contains("1 copied, 3 already there, 0 conflicts"),
        "{third:?}"
    );

    // A server on the copy logs ann in with her old password.
    let (mut server, addr) = start_server_binary(BIN, Path::new(&db.url()), "off");
    drop(server.stderr.take());
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    c.login_ok("ann", PW);
    c.quit();
}

#[test]
fn copy_db_says_what_is_wrong_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.db");
    let not_url = copy_db(&file, "/tmp/other.db");
    assert_eq!(not_url.code, 2, "{not_url:?}");
    assert!(
        not_url.stderr.contains("--to must be a postgres://"),
        "{not_url:?}"
    );
    let missing = copy_db(&file, "postgres://nobody@127.0.0.1:1/none");
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("no SQLite database at"),
        "{missing:?}"
    );
    assert!(!file.exists(), "copy-db does not create its source");
    let url_from = copy_db(
        Path::new("postgres://x@127.0.0.1/y"),
        "postgres://x@127.0.0.1/y",
    );
    assert_eq!(url_from.code, 2, "{url_from:?}");
    let mut cmd = Command::new(BIN);
    cmd.args(["copy-db", "--help"]);
    let help = run_with_deadline(cmd, "", Duration::from_secs(10));
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("--from") && help.stdout.contains("Exit status"),
        "{help:?}"
    );
}
