//! SCRAM-SHA-256 (`login_scram`, `../shared/protocol-scram.md`) over real
//! sockets: logins, refusals and their `e=` words, replay, re-authentication,
//! throttling shared with classic, the migration of an original database, and
//! the stolen-database guarantee with classic off and verifiers dropped.

use crate::child::run_with_deadline;
use crate::common::*;
use dccn_auth::crypto::{self, FakeCredentials};
use dccn_auth::scram::keys::{salt_bytes, ClientKeys};
use dccn_auth::scram::message::{self, parse_server_first};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PW: &str = "Passw0rd1";
const SERVER_BIN: &str = env!("CARGO_BIN_EXE_run_server");

fn failures(app: &TestApp) -> u64 {
    let stats = app.handle.services().throttle.stats();
    stats.failures.load(Ordering::Relaxed)
}

/// What one exchange showed.
pub(crate) struct Exchange {
    /// The s= salt as 32 hex digits, and i=.
    salt_hex: String,
    iterations: u32,
    client_final: String,
    /// The `__scram_final__:` line's message.
    pub(crate) server_final: String,
    /// The lines after it, up to the next `__type__` (excluded).
    after: Vec<String>,
}

/// Reads `__scram_final__:<msg>`, then the lines up to `__type__`.
fn read_final(c: &mut TestClient) -> (String, Vec<String>) {
    let line = c.line();
    let msg = line
        .strip_prefix("__scram_final__:")
        .unwrap_or_else(|| panic!("expected __scram_final__:, got {line:?}"))
        .to_string();
    (msg, c.expect_prompt("__type__"))
}

/// After `__scram_first__` was asked for: a whole exchange as `name` with
/// `password` and the c-nonce `c_nonce`; checks the server signature on `v=`.
fn exchange_with_nonce(c: &mut TestClient, name: &str, password: &str, c_nonce: &str) -> Exchange {
    let first = message::format_client_first(name, c_nonce);
    c.send(&first);
    let lines = c.until_prompt();
    let challenge = lines.last().unwrap();
    let server_first = challenge
        .strip_prefix("__scram_challenge__:")
        .unwrap_or_else(|| panic!("expected a challenge, got {lines:?}"));
    let sf = parse_server_first(server_first, c_nonce).expect("a valid challenge");
    let keys = ClientKeys::derive(password, &sf.salt, sf.iterations);
    let without_proof = message::format_client_final_without_proof("n,,", sf.nonce);
    let am = message::auth_message(&first[3..], server_first, &without_proof);
    let client_final = message::format_client_final(&without_proof, &keys.proof(&am));
    c.send(&client_final);
    let (server_final, after) = read_final(c);
    if let message::ServerFinal::Signature(sig) = message::parse_server_final(&server_final) {
        assert!(keys.server_signature_matches(&am, &sig), "server signature");
    }
    Exchange {
        salt_hex: hex::encode(sf.salt),
        iterations: sf.iterations,
        client_final,
        server_final,
        after,
    }
}

fn exchange(c: &mut TestClient, name: &str, password: &str) -> Exchange {
    c.expect_prompt("__scram_first__");
    exchange_with_nonce(c, name, password, &message::new_nonce())
}

/// From the main menu's `__type__`: `login_scram` and a whole exchange.
pub(crate) fn scram_login(c: &mut TestClient, name: &str, password: &str) -> Exchange {
    c.send("login_scram");
    exchange(c, name, password)
}

fn assert_granted(x: &Exchange) {
    assert!(x.server_final.starts_with("v="), "{}", x.server_final);
    assert_eq!(
        x.after,
        vec!["Successfully login", "Access granted!", USER_MENU]
    );
}

fn assert_refused(x: &Exchange, menu: &str) {
    assert_eq!(x.server_final, "e=invalid-proof");
    assert_eq!(x.after, vec!["User or password incorrect", menu]);
}

pub(crate) fn scram_logged_in(app: &TestApp, name: &str, password: &str) -> TestClient {
    let mut c = app.client();
    c.expect_greeting();
    assert_granted(&scram_login(&mut c, name, password));
    c
}

#[test]
fn register_then_scram_login_then_whoami() {
    let app = spawn_app();
    app.register("sam", PW);
    let mut c = scram_logged_in(&app, "sam", PW);
    c.send("whoami");
    assert_eq!(c.expect_prompt("__type__"), vec!["You are sam", USER_MENU]);
    // login_scram exists in the main menu only.
    c.send("login_scram");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Unrecognized type", USER_MENU]
    );
    c.quit();
}

#[test]
fn wrong_password_is_invalid_proof_and_counts() {
    let app = spawn_app();
    app.register("wes", PW);
    let mut c = app.client();
    c.expect_greeting();
    let before = failures(&app);
    assert_refused(&scram_login(&mut c, "wes", "Wrong9999Z"), MAIN_MENU);
    assert_eq!(failures(&app), before + 1);
    assert_granted(&scram_login(&mut c, "wes", PW));
}

#[test]
fn unknown_user_gets_classics_fake_salt_and_the_default_count() {
    let app = spawn_app();
    let mut c = app.client();
    c.expect_greeting();
    let before = failures(&app);
    let x = scram_login(&mut c, "nobody", PW);
    assert_refused(&x, MAIN_MENU);
    assert_eq!(x.iterations, 4096);
    assert_eq!(failures(&app), before + 1);
    // The same salt on every try, and the one classic shows.
    let again = scram_login(&mut c, "nobody", PW);
    assert_eq!(again.salt_hex, x.salt_hex);
    c.send("login");
    c.expect_prompt("__username__");
    c.send("nobody");
    let (classic_salt, _) = c.expect_challenge();
    assert_eq!(classic_salt, x.salt_hex);
    // A registered user's s= is its USERS.salt, the one classic shows.
    app.register("known", PW);
    c.send("x");
    c.expect_prompt("__type__");
    let known = scram_login(&mut c, "known", PW);
    c.send("logout");
    c.expect_prompt("__type__");
    c.send("login");
    c.expect_prompt("__username__");
    c.send("known");
    assert_eq!(c.expect_challenge().0, known.salt_hex);
}

#[test]
fn replayed_client_final_is_other_error_and_does_not_count() {
    let app = spawn_app();
    app.register("rita", PW);
    let c_nonce = message::new_nonce();
    let mut c = app.client();
    c.expect_greeting();
    c.send("login_scram");
    c.expect_prompt("__scram_first__");
    let captured = exchange_with_nonce(&mut c, "rita", PW, &c_nonce);
    assert_granted(&captured);
    // The eavesdropper replays both messages on a new connection.
    let mut thief = app.client_from([127, 0, 0, 31]);
    thief.expect_greeting();
    let before = failures(&app);
    thief.send("login_scram");
    thief.expect_prompt("__scram_first__");
    thief.send(&message::format_client_first("rita", &c_nonce));
    let challenge = thief.until_prompt();
    assert!(challenge
        .last()
        .unwrap()
        .starts_with("__scram_challenge__:r="));
    thief.send(&captured.client_final);
    let (msg, after) = read_final(&mut thief);
    assert_eq!(msg, "e=other-error");
    assert_eq!(after, vec!["User or password incorrect", MAIN_MENU]);
    assert_eq!(failures(&app), before);
}

/// Sends `first`, expects `__scram_final__:e=<want>` right after it.
fn refused_first(c: &mut TestClient, first: &str, want: &str) {
    c.send("login_scram");
    c.expect_prompt("__scram_first__");
    c.send(first);
    let (msg, after) = read_final(c);
    assert_eq!(msg, format!("e={want}"), "client-first {first:?}");
    assert_eq!(
        after,
        vec!["User or password incorrect", MAIN_MENU],
        "{first:?}"
    );
}

#[test]
fn each_malformed_client_first_gets_its_error_before_any_challenge() {
    let app = spawn_app();
    app.register("demo", PW);
    let mut c = app.client();
    c.expect_greeting();
    let before = failures(&app);
    let long_nonce = format!("n,,n=demo,r={}", "x".repeat(256));
    for (first, want) in [
        ("", "invalid-encoding"),
        ("n,,n=demo", "invalid-encoding"),
        (
            "p=tls-server-end-point,,n=demo,r=abc",
            "channel-binding-not-supported",
        ),
        ("N,,n=demo,r=abc", "invalid-encoding"),
        (" n,,n=demo,r=abc", "invalid-encoding"),
        ("n,a=demo,n=demo,r=abc", "other-error"),
        ("n,x,n=demo,r=abc", "invalid-encoding"),
        ("n,,m=x,n=demo,r=abc", "extensions-not-supported"),
        ("n,,r=abc,n=demo", "invalid-encoding"),
        ("n,,n=de=2Cmo,r=abc", "invalid-username-encoding"),
        ("n,,n=de=mo,r=abc", "invalid-username-encoding"),
        ("n,,n=,r=abc", "invalid-username-encoding"),
        ("n,,n=demo,r=", "invalid-encoding"),
        ("n,,n=demo,r=a b", "invalid-encoding"),
        (long_nonce.as_str(), "invalid-encoding"),
        ("n,,n=demo,r=abc,1=x", "invalid-encoding"),
    ] {
        refused_first(&mut c, first, want);
    }
    assert_eq!(failures(&app), before, "rows 1 to 9 do not count");
    // The session is fine afterwards.
    assert_granted(&scram_login(&mut c, "demo", PW));
}

/// Builds a client-final-message from the challenge's nonce.
type MakeFinal = fn(&str) -> String;

#[test]
fn each_malformed_client_final_gets_its_error_and_does_not_count() {
    let app = spawn_app();
    app.register("demo", PW);
    let mut c = app.client();
    c.expect_greeting();
    let before = failures(&app);
    let proof = "IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o=";
    let cases: [(MakeFinal, &str); 7] = [
        (|_| String::new(), "invalid-encoding"),
        (|n| format!("c=biws,r={n}"), "invalid-encoding"),
        (
            |n| format!("r={n},c=biws,p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o="),
            "invalid-encoding",
        ),
        (|n| format!("c=biws,r={n},p=AAAA"), "invalid-encoding"),
        (
            |n| format!("c=eSws,r={n},p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o="),
            "channel-bindings-dont-match",
        ),
        (
            |n| format!("c=biws,r={n}x,p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o="),
            "other-error",
        ),
        (
            |n| format!("c=biws,r={n},p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5p="),
            "invalid-encoding",
        ),
    ];
    for (make, want) in cases {
        c.send("login_scram");
        c.expect_prompt("__scram_first__");
        let c_nonce = message::new_nonce();
        c.send(&message::format_client_first("demo", &c_nonce));
        let lines = c.until_prompt();
        let sf = lines
            .last()
            .unwrap()
            .strip_prefix("__scram_challenge__:")
            .unwrap();
        let nonce = parse_server_first(sf, &c_nonce).unwrap().nonce.to_string();
        let client_final = make(&nonce);
        c.send(&client_final);
        let (msg, after) = read_final(&mut c);
        assert_eq!(msg, format!("e={want}"), "client-final {client_final:?}");
        assert_eq!(after, vec!["User or password incorrect", MAIN_MENU]);
    }
    // A well-formed but wrong proof does count.
    assert_eq!(failures(&app), before);
    c.send("login_scram");
    c.expect_prompt("__scram_first__");
    let c_nonce = message::new_nonce();
    c.send(&message::format_client_first("demo", &c_nonce));
    let lines = c.until_prompt();
    let sf = lines
        .last()
        .unwrap()
        .strip_prefix("__scram_challenge__:")
        .unwrap();
    let nonce = parse_server_first(sf, &c_nonce).unwrap().nonce.to_string();
    c.send(&format!("c=biws,r={nonce},p={proof}"));
    assert_eq!(read_final(&mut c).0, "e=invalid-proof");
    assert_eq!(failures(&app), before + 1);
}

#[test]
fn y_flag_is_accepted_with_its_own_cbind() {
    let app = spawn_app();
    app.register("yan", PW);
    let mut c = app.client();
    c.expect_greeting();
    c.send("login_scram");
    c.expect_prompt("__scram_first__");
    let c_nonce = message::new_nonce();
    let first = format!("y,,n=yan,r={c_nonce},x=ignored");
    c.send(&first);
    let lines = c.until_prompt();
    let server_first = lines
        .last()
        .unwrap()
        .strip_prefix("__scram_challenge__:")
        .unwrap();
    let sf = parse_server_first(server_first, &c_nonce).unwrap();
    let keys = ClientKeys::derive(PW, &sf.salt, sf.iterations);
    let without_proof = format!("c=eSws,r={},z=also", sf.nonce);
    let am = message::auth_message(&first[3..], server_first, &without_proof);
    c.send(&message::format_client_final(
        &without_proof,
        &keys.proof(&am),
    ));
    let (msg, after) = read_final(&mut c);
    assert!(msg.starts_with("v="), "{msg}");
    assert_eq!(
        after,
        vec!["Successfully login", "Access granted!", USER_MENU]
    );
}

#[test]
fn failures_count_across_mechanisms() {
    let app = spawn_app();
    app.register("tom", PW);
    let mut c = app.client();
    c.expect_greeting();
    for _ in 0..5 {
        assert_refused(&scram_login(&mut c, "tom", "Wrong9999Z"), MAIN_MENU);
    }
    // The pair is in its window: classic with the right password is refused
    // unchecked, and so is SCRAM.
    let before = failures(&app);
    c.login_refused("tom", PW);
    assert_refused(&scram_login(&mut c, "tom", PW), MAIN_MENU);
    assert_eq!(failures(&app), before, "throttled tries are not counted");
}

#[test]
fn change_password_and_delete_account_with_scram_reauthentication() {
    let app = spawn_app();
    app.register("cara", PW);
    let mut c = scram_logged_in(&app, "cara", PW);
    // Re-authentication must name the session's user.
    c.send("change_password");
    c.expect_prompt("__scram_first__");
    c.send(&message::format_client_first(
        "other",
        &message::new_nonce(),
    ));
    let (msg, after) = read_final(&mut c);
    assert_eq!(msg, "e=other-error");
    assert_eq!(after, vec!["User or password incorrect", USER_MENU]);
    // A wrong password: still logged in.
    c.send("change_password");
    assert_refused(&exchange(&mut c, "cara", "Wrong9999Z"), USER_MENU);
    // Right: then the new password, twice.
    c.send("change_password");
    c.expect_prompt("__scram_first__");
    let x = exchange_with_nonce_until_password(&mut c, "cara", PW);
    assert!(x.starts_with("v="), "{x}");
    c.send("N3wPassw0rd");
    assert_eq!(c.expect_prompt("__password__"), vec!["Repeat password"]);
    c.send("N3wPassw0rd");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Password successfully changed", USER_MENU]
    );
    c.quit();
    // Both mechanisms take the new password, neither the old one.
    let mut c = app.client();
    c.expect_greeting();
    assert_refused(&scram_login(&mut c, "cara", PW), MAIN_MENU);
    c.login_ok("cara", "N3wPassw0rd");
    c.send("logout");
    c.expect_prompt("__type__");
    assert_granted(&scram_login(&mut c, "cara", "N3wPassw0rd"));
    c.send("delete_account");
    let x = exchange(&mut c, "cara", "N3wPassw0rd");
    assert!(x.server_final.starts_with("v="));
    assert_eq!(
        x.after,
        vec!["Your account was removed from system", MAIN_MENU]
    );
    assert_refused(&scram_login(&mut c, "cara", "N3wPassw0rd"), MAIN_MENU);
    c.login_refused("cara", "N3wPassw0rd");
}

/// Exchange for a re-authentication before `__password__`: returns the server-final.
fn exchange_with_nonce_until_password(c: &mut TestClient, name: &str, password: &str) -> String {
    let c_nonce = message::new_nonce();
    let first = message::format_client_first(name, &c_nonce);
    c.send(&first);
    let lines = c.until_prompt();
    let server_first = lines
        .last()
        .unwrap()
        .strip_prefix("__scram_challenge__:")
        .unwrap();
    let sf = parse_server_first(server_first, &c_nonce).unwrap();
    let keys = ClientKeys::derive(password, &sf.salt, sf.iterations);
    let without_proof = message::format_client_final_without_proof("n,,", sf.nonce);
    let am = message::auth_message(&first[3..], server_first, &without_proof);
    c.send(&message::format_client_final(
        &without_proof,
        &keys.proof(&am),
    ));
    let line = c.line();
    let msg = line.strip_prefix("__scram_final__:").unwrap().to_string();
    if let message::ServerFinal::Signature(sig) = message::parse_server_final(&msg) {
        assert!(keys.server_signature_matches(&am, &sig));
    }
    assert_eq!(c.expect_prompt("__password__"), ["Choose a new password"]);
    msg
}

#[test]
fn classic_session_reauthenticates_with_classic_and_its_change_rotates_scram() {
    let app = spawn_app();
    app.register("cleo", PW);
    let mut c = logged_in(&app, "cleo", PW);
    c.send("change_password");
    c.answer_challenge(PW);
    assert_eq!(
        c.expect_prompt("__password__"),
        vec!["Choose a new password"]
    );
    c.send("N3wPassw0rd");
    c.expect_prompt("__password__");
    c.send("N3wPassw0rd");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Password successfully changed", USER_MENU]
    );
    c.send("logout");
    c.expect_prompt("__type__");
    assert_granted(&scram_login(&mut c, "cleo", "N3wPassw0rd"));
    c.send("logout");
    c.expect_prompt("__type__");
    c.login_ok("cleo", "N3wPassw0rd");
    c.send("delete_account");
    c.answer_challenge("N3wPassw0rd");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Your account was removed from system", MAIN_MENU]
    );
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM SCRAM_SHA_256", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "delete_account removes the SCRAM row");
}

/// An original (Python) database: only the USERS table, with v1's vector rows.
fn original_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT);
         INSERT INTO USERS VALUES ('demo',
           '4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029',
           '6d5da35ec7a5497e9b96ce8e88562747');
         INSERT INTO USERS VALUES ('orig_user',
           'e3bc9e94b23a0c8dfb7501d461d994480daf2e4e6866e36b0a23a3069288d207',
           '00112233445566778899aabbccddeeff');
         INSERT INTO USERS VALUES ('legacy user', 'x', 'y');
         INSERT INTO USERS VALUES ('legacy_salt',
           '4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029', 'SALT');",
    )
    .unwrap();
}

fn migrate(db: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(SERVER_BIN);
    cmd.arg("migrate-scram").arg("--db").arg(db).args(extra);
    let run = run_with_deadline(cmd, "", Duration::from_secs(60));
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

fn start_on(db: &Path, classic_login: bool) -> dccn_auth::server::ServerHandle {
    let mut config = config_for(db.to_path_buf());
    config.classic_login = classic_login;
    start(&config, |s| s.classic_login = classic_login)
}

#[test]
fn original_database_is_migrated_without_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    original_database(&db);
    {
        // Before the migration: SCRAM fails even with the right password, classic works.
        let handle = start_on(&db, true);
        let mut c = TestClient::connect(handle.addr());
        c.expect_greeting();
        assert_refused(&scram_login(&mut c, "demo", "Passw0rdDemo"), MAIN_MENU);
        c.login_ok("demo", "Passw0rdDemo");
    }
    let out = migrate(&db, &[]);
    assert!(
        out.starts_with("migrate-scram: 4 users: 2 derived"),
        "{out}"
    );
    assert!(out.contains("2 skipped"), "{out}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let row: (String, i64, String, String) = conn
        .query_row(
            "SELECT * FROM SCRAM_SHA_256 WHERE login = 'demo'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "demo".into(),
            4096,
            "e4B7Cx7dSagxfLPK4vkQOwAGI5gmzbp+Vb8PS1e+2pk=".into(),
            "JTEFvXjJ50BnezRtydFHVBHjtIPgE2bh5QWL9p64w0c=".into()
        )
    );
    let again = migrate(&db, &[]);
    assert!(
        again.contains("2 already current") && again.contains("0 rows written"),
        "{again}"
    );
    let handle = start_on(&db, true);
    let mut c = TestClient::connect(handle.addr());
    c.expect_greeting();
    let x = scram_login(&mut c, "orig_user", "Pässwört9X");
    assert_eq!(x.salt_hex, "00112233445566778899aabbccddeeff");
    assert_granted(&x);
    c.send("logout");
    c.expect_prompt("__type__");
    // A legacy salt cannot use SCRAM: the fake salt, the default count, refused.
    let legacy = scram_login(&mut c, "legacy_salt", "Passw0rdDemo");
    assert_refused(&legacy, MAIN_MENU);
    let fake = FakeCredentials::new(handle.services().store.secret()).salt("legacy_salt");
    assert_eq!((legacy.salt_hex, legacy.iterations), (fake, 4096));
}

#[test]
fn with_classic_off_and_verifiers_dropped_a_stolen_database_logs_nobody_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    original_database(&db);
    let out = migrate(&db, &["--drop-classic"]);
    assert!(out.contains("2 classic verifiers dropped"), "{out}");
    let handle = start_on(&db, false);

    // The thief's copy of the file: everything the database holds.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (verifier, salt): (Option<String>, String) = conn
        .query_row(
            "SELECT password, salt FROM USERS WHERE login = 'demo'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(verifier, None, "the classic verifier is gone");
    let (stored_key, server_key): (String, String) = conn
        .query_row(
            "SELECT stored_key, server_key FROM SCRAM_SHA_256 WHERE login = 'demo'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let secret: Vec<u8> = conn
        .query_row("SELECT secret FROM SERVER_SECRET", [], |r| r.get(0))
        .unwrap();
    let fakes = FakeCredentials::new(&secret);
    let stored = dccn_auth::scram::keys::decode_key(&stored_key).unwrap();
    let server = dccn_auth::scram::keys::decode_key(&server_key).unwrap();

    let mut thief = TestClient::connect(handle.addr());
    thief.expect_greeting();
    // Classic: with the mock verifier (computable from the secret), with the keys.
    for guess in [
        fakes.verifier("demo"),
        hex::encode(stored),
        hex::encode(server),
        String::new(),
    ] {
        thief.send("login");
        thief.expect_prompt("__username__");
        thief.send("demo");
        let (_, nonce) = thief.expect_challenge();
        thief.send(&crypto::response(&nonce, &guess));
        assert_eq!(
            thief.expect_prompt("__type__"),
            vec!["User or password incorrect", MAIN_MENU]
        );
    }
    // SCRAM: StoredKey or ServerKey in place of ClientKey; the salt as P.
    for client_key in [stored, server] {
        thief.send("login_scram");
        thief.expect_prompt("__scram_first__");
        let c_nonce = message::new_nonce();
        let first = message::format_client_first("demo", &c_nonce);
        thief.send(&first);
        let lines = thief.until_prompt();
        let sf_text = lines
            .last()
            .unwrap()
            .strip_prefix("__scram_challenge__:")
            .unwrap();
        let sf = parse_server_first(sf_text, &c_nonce).unwrap();
        let without_proof = message::format_client_final_without_proof("n,,", sf.nonce);
        let am = message::auth_message(&first[3..], sf_text, &without_proof);
        let sig = dccn_auth::scram::keys::hmac(&stored, am.as_bytes());
        let proof = dccn_auth::scram::keys::xor(&client_key, &sig);
        thief.send(&message::format_client_final(&without_proof, &proof));
        assert_eq!(read_final(&mut thief).0, "e=invalid-proof");
    }
    let x = scram_login(&mut thief, "demo", &salt);
    assert_eq!(x.server_final, "e=invalid-proof");

    // The real user still logs in with SCRAM; classic is off even for them.
    let mut user = TestClient::connect_from(handle.addr(), "127.0.0.2".parse().unwrap());
    user.expect_greeting();
    user.login_refused("demo", "Passw0rdDemo");
    assert_granted(&scram_login(&mut user, "demo", "Passw0rdDemo"));
    // change_password with classic off writes no verifier.
    user.send("change_password");
    user.expect_prompt("__scram_first__");
    exchange_with_nonce_until_password(&mut user, "demo", "Passw0rdDemo");
    user.send("N3wPassw0rd");
    user.expect_prompt("__password__");
    user.send("N3wPassw0rd");
    user.expect_prompt("__type__");
    let verifier: Option<String> = conn
        .query_row("SELECT password FROM USERS WHERE login = 'demo'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(verifier, None);
    assert!(salt_bytes(&salt).is_some());
}

#[test]
fn register_with_classic_off_stores_no_verifier_and_scram_works() {
    let app = spawn_app_with(|c| c.classic_login = false, |s| s.classic_login = false);
    app.register("nova", PW);
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let verifier: Option<String> = conn
        .query_row("SELECT password FROM USERS WHERE login = 'nova'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(verifier, None);
    let mut c = app.client();
    c.expect_greeting();
    c.login_refused("nova", PW);
    assert_granted(&scram_login(&mut c, "nova", PW));
}

// ---- run_client --scram, against the real server and fake ones ----------------

const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_run_client");

/// `run_client --host 127.0.0.1 --port <port> <args...>` with `stdin`.
fn run_client(port: u16, args: &[&str], stdin: &str) -> crate::child::Run {
    let mut cmd = Command::new(CLIENT_BIN);
    cmd.env_remove("DCCN_HOST").env_remove("DCCN_PORT");
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args);
    run_with_deadline(cmd, stdin, Duration::from_secs(30))
}

#[test]
fn run_client_scram_login_change_and_delete_against_the_real_server() {
    let app = spawn_app();
    app.register("carl", PW);
    let port = app.addr.port();
    let login = |pw: &str| {
        run_client(
            port,
            &["login", "--scram", "--user", "carl", "--password-stdin"],
            &format!("{pw}\n"),
        )
    };
    let ok = login(PW);
    assert_eq!(
        (ok.code, ok.stdout.as_str()),
        (0, "Successfully login\nAccess granted!\n"),
        "{ok:#?}"
    );
    let wrong = login("Wrong9999Z");
    assert_eq!(
        (wrong.code, wrong.stdout.as_str()),
        (1, "User or password incorrect\n"),
        "{wrong:#?}"
    );
    let changed = run_client(
        port,
        &[
            "change-password",
            "--scram",
            "--user",
            "carl",
            "--password-stdin",
        ],
        &format!("{PW}\nN3wPassw0rd\n"),
    );
    assert_eq!(
        (changed.code, changed.stdout.as_str()),
        (0, "Password successfully changed\n"),
        "{changed:#?}"
    );
    assert_eq!(login("N3wPassw0rd").code, 0);
    let deleted = run_client(
        port,
        &[
            "delete-account",
            "--scram",
            "--user",
            "carl",
            "--password-stdin",
        ],
        "N3wPassw0rd\n",
    );
    assert_eq!(
        (deleted.code, deleted.stdout.as_str()),
        (0, "Your account was removed from system\n"),
        "{deleted:#?}"
    );
    assert_eq!(login("N3wPassw0rd").code, 1);
    let register = run_client(
        port,
        &["register", "--scram", "--user", "x", "--password-stdin"],
        "a\n",
    );
    assert_eq!(register.code, 2, "{register:#?}");
}

#[test]
fn run_client_scram_trace_shows_messages_and_key_names_never_secrets() {
    let app = spawn_app();
    app.register("tina", PW);
    let run = run_client(
        app.addr.port(),
        &[
            "--trace",
            "login",
            "--scram",
            "--user",
            "tina",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let trace = &run.stderr;
    for shown in [
        "C> login_scram",
        "S> __scram_first__",
        "C> n,,n=tina,r=",
        "S> __scram_challenge__:r=",
        "C> c=biws,r=",
        "S> __scram_final__:v=",
        "SaltedPassword",
        "ClientKey",
        "AuthMessage",
        "ServerSignature matches",
    ] {
        assert!(trace.contains(shown), "{shown:?} missing in {trace}");
    }
    // The secrets, computed here from the stored salt: none may appear.
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    let salt_hex: String = conn
        .query_row("SELECT salt FROM USERS WHERE login = 'tina'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let salt = salt_bytes(&salt_hex).unwrap();
    let p = crypto::verifier(&salt_hex, PW);
    let salted = dccn_auth::scram::keys::salted_password(p.as_bytes(), &salt, 4096);
    let client_key = dccn_auth::scram::keys::client_key(&salted);
    use base64::Engine;
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    for secret in [
        PW.to_string(),
        p,
        hex::encode(salted),
        b64(&salted),
        hex::encode(client_key),
        b64(&client_key),
    ] {
        assert!(!trace.contains(&secret), "the trace shows a secret");
    }
}

/// What a fake server does after the client-final (or instead of a sane challenge).
#[derive(Clone, Copy)]
enum Fake {
    WrongSignature,
    NoFinal,
    Iterations(u64),
}

/// A fake server on 127.0.0.1 that runs one SCRAM exchange its own way; its
/// thread returns what it read after the challenge (None: the client closed).
fn fake_server(kind: Fake) -> (u16, std::thread::JoinHandle<Option<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        let mut line = String::new();
        let mut read = |r: &mut BufReader<std::net::TcpStream>| {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line.trim_end().to_string()),
            }
        };
        write!(w, "Connected to server\n{MAIN_MENU}\n__type__\n").unwrap();
        assert_eq!(read(&mut r).as_deref(), Some("login_scram"));
        writeln!(w, "__scram_first__").unwrap();
        let first = read(&mut r).unwrap();
        let c_nonce = first.split(",r=").nth(1).unwrap().to_string();
        let i = match kind {
            Fake::Iterations(i) => i,
            _ => 4096,
        };
        writeln!(w, "__scram_challenge__:r={c_nonce}c2VydmVyLW5vbmNlLWRlbW8x,s=bV2jXselSX6bls6OiFYnRw==,i={i}").unwrap();
        let answer = read(&mut r);
        if answer.is_some() {
            let ok = "Successfully login\nAccess granted!\n";
            // The client may already have closed (that is what is tested).
            let _ = match kind {
                Fake::WrongSignature => write!(
                    w,
                    "__scram_final__:v=rLeeLTzSXh5lPwmSs3AUi0mFO3UOKAu8F+9h3QBvun4=\n{ok}{USER_MENU}\n__type__\n"
                ),
                _ => write!(w, "{ok}{USER_MENU}\n__type__\n"),
            };
            let _ = read(&mut r);
        }
        answer
    });
    (port, t)
}

fn client_against(kind: Fake) -> (crate::child::Run, Option<String>) {
    let (port, server) = fake_server(kind);
    let run = run_client(
        port,
        &["login", "--scram", "--user", "demo", "--password-stdin"],
        "Passw0rdDemo\n",
    );
    (run, server.join().unwrap())
}

#[test]
fn run_client_refuses_a_server_that_signs_wrongly_or_not_at_all() {
    for kind in [Fake::WrongSignature, Fake::NoFinal] {
        let (run, _) = client_against(kind);
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(!run.stdout.contains("Access granted!"), "{run:#?}");
        assert!(
            run.stderr.contains("server signature is wrong: the server does not know your credentials (possible impostor)"),
            "{run:#?}"
        );
    }
}

#[test]
fn run_client_refuses_iteration_counts_out_of_range_without_replying() {
    for (i, why) in [
        (4095, "below the minimum of 4096"),
        (10_000_001, "above the maximum of 10000000"),
    ] {
        let (run, answer) = client_against(Fake::Iterations(i));
        assert_eq!(run.code, 2, "{run:#?}");
        assert!(run.stderr.contains(why), "{run:#?}");
        assert_eq!(answer, None, "the client closed without a client-final");
    }
    // The bounds themselves are fine: 10,000,000 is refused by nobody (not run
    // here: it costs seconds of PBKDF2), 4096 is the spec's vector.
}

/// A person at a terminal, typing from a list; what was shown is kept.
struct Typist {
    answers: Vec<&'static str>,
    shown: Vec<String>,
    prompts: Vec<String>,
}

impl dccn_auth::client::Terminal for Typist {
    fn show(&mut self, line: &str) {
        self.shown.push(line.to_string());
    }
    fn read_line(
        &mut self,
        prompt: &str,
    ) -> Result<Option<String>, dccn_auth::client::ClientError> {
        self.prompts.push(prompt.to_string());
        Ok((!self.answers.is_empty()).then(|| self.answers.remove(0).to_string()))
    }
    fn read_hidden(
        &mut self,
        prompt: &str,
    ) -> Result<Option<String>, dccn_auth::client::ClientError> {
        self.read_line(&format!("(hidden) {prompt}"))
    }
}

#[test]
fn interactive_login_scram_and_reauthentication_without_asking_the_name_again() {
    use dccn_auth::client::{Client, ClientConfig, Ended, Trace};
    let app = spawn_app();
    app.register("ivy", PW);
    let mut term = Typist {
        answers: vec![
            "login_scram",
            "ivy",
            PW,
            "change_password",
            PW,
            "N3wPassw0rd",
            "N3wPassw0rd",
            "quit",
        ],
        shown: Vec::new(),
        prompts: Vec::new(),
    };
    let config = ClientConfig::new("127.0.0.1", app.addr.port());
    let ended = Client::connect(&config, Trace::off())
        .unwrap()
        .interact(&mut term)
        .unwrap();
    assert_eq!(ended, Ended::Quit);
    assert!(
        term.shown.contains(&"Access granted!".to_string()),
        "{:?}",
        term.shown
    );
    assert!(
        term.shown
            .contains(&"Password successfully changed".to_string()),
        "{:?}",
        term.shown
    );
    assert_eq!(
        term.prompts,
        [
            ">> ",
            "Username: ",
            "(hidden) Password: ",
            ">> ",
            "(hidden) Password: ",
            "(hidden) Password: ",
            "(hidden) Password: ",
            ">> "
        ]
    );
    let mut c = app.client();
    c.expect_greeting();
    assert_granted(&scram_login(&mut c, "ivy", "N3wPassw0rd"));
}

#[test]
fn run_server_refuses_iteration_counts_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    for bad in ["4095", "10000001", "many"] {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.args(["--port", "0", "--scram-iterations", bad, "--db"])
            .arg(&db);
        let run = run_with_deadline(cmd, "", Duration::from_secs(30));
        assert_eq!(run.code, 2, "{bad}: {run:#?}");
        assert!(run.stderr.contains("--scram-iterations"), "{run:#?}");
    }
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(["--classic-login", "maybe", "--db"]).arg(&db);
    let run = run_with_deadline(cmd, "", Duration::from_secs(30));
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(!db.exists(), "nothing was started");
}

#[test]
fn a_store_failure_at_the_lookup_is_other_error_then_server_error() {
    let app = spawn_app();
    app.register("sue", PW);
    // Another process breaks the database under the running server.
    rusqlite::Connection::open(&app.db_path)
        .unwrap()
        .execute_batch("DROP TABLE SCRAM_SHA_256")
        .unwrap();
    let mut c = app.client();
    c.expect_greeting();
    let before = failures(&app);
    c.send("login_scram");
    c.expect_prompt("__scram_first__");
    c.send(&message::format_client_first("sue", &message::new_nonce()));
    let (msg, after) = read_final(&mut c);
    assert_eq!(msg, "e=other-error");
    assert_eq!(after, vec!["Server error, try again later", MAIN_MENU]);
    assert_eq!(failures(&app), before, "a store failure does not count");
}
