//! The `run_server` binary itself: flags, the offline admin commands, the
//! startup line, signals, and logs that never hold a secret.

use crate::common;

use common::TestClient;
use dccn_auth::crypto;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_run_server");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run run_server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn start_server(db: &std::path::Path) -> (common::ChildGuard, SocketAddr) {
    common::start_server_binary(BIN, db, "debug")
}

/// Sends SIGTERM and waits (bounded) for the exit.
fn stop(child: &mut Child) -> std::process::ExitStatus {
    send_signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send_signal(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
}

#[test]
fn help_lists_every_flag_and_exits_0() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--host",
        "--port",
        "--db",
        "--backlog",
        "--max-sessions",
        "--login-timeout",
        "--session-timeout",
        "DCCN_PORT",
        "list-users",
        "delete-user",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_are_a_usage_error_not_a_panic() {
    for args in [
        &["--port", "99999"][..],
        &["--backlog", "0"],
        &["--max-sessions", "0"],
        &["--bogus"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.db");
    let (code, _, err) = run(&["--port", &port, "--db", db.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.starts_with("run_server: cannot listen on"), "{err}");
}

#[test]
fn serve_register_list_delete_and_logs_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let (mut child, addr) = start_server(&db);

    let password = "S3cretPassw0rd";
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    c.register("wendy", password);
    c.send("login");
    c.expect_prompt("__username__");
    c.send("wendy");
    let (salt, nonce) = c.expect_challenge();
    let verifier = crypto::verifier(&salt, password);
    let response = crypto::response(&nonce, &verifier);
    c.send(&response);
    assert_eq!(c.expect_prompt("__type__")[0], "Successfully login");
    c.quit();

    let status = stop(&mut child);
    assert!(status.success(), "exit status {status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("registered user=wendy"), "{logs}");
    assert!(logs.contains("login ok user=wendy"), "{logs}");
    for secret in [password, &verifier, &response] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }

    let db_arg = db.to_str().unwrap();
    let (code, out, _) = run(&["list-users", "--db", db_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("wendy") && out.contains(&salt), "{out}");
    assert!(!out.contains(&verifier), "no hash unless asked");
    let (_, out, _) = run(&["list-users", "--show-hashes", "--db", db_arg]);
    assert!(out.contains(&verifier));

    let (code, out, _) = run(&["delete-user", "wendy", "--db", db_arg]);
    assert_eq!((code, out.trim()), (0, "deleted user \"wendy\""));
    let (code, _, err) = run(&["delete-user", "wendy", "--db", db_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("no user named"), "{err}");
    let (_, out, _) = run(&["list-users", "--db", db_arg]);
    assert!(out.contains("0 users"), "{out}");
}

#[test]
fn sigint_tells_clients_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let (mut child, addr) = start_server(&db);
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    send_signal(child.id(), "INT");
    assert_eq!(c.rest(), vec!["Error: server shutting down", "__quit__"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    // The same port again, at once: no "address in use".
    let (mut again, _) = {
        let mut child = common::ChildGuard(
            Command::new(BIN)
                .args(["--port", &addr.port().to_string(), "--db"])
                .arg(&db)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("listening on"), "{first:?}");
        (child, ())
    };
    assert!(stop(&mut again).success());
}

#[test]
fn admin_commands_on_a_missing_database_fail_clearly() {
    let (code, _, err) = run(&["list-users", "--db", "/nonexistent/dir/users.db"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("run_server: no database at"), "{err}");
}
