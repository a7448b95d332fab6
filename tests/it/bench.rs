//! `run_bench` against the real server, started in this process on a free port:
//! a correctness test of the tool (every mode runs without protocol errors and
//! gets successes), not a timed test: no speed is asserted.

use dccn_auth::config::ServerConfig;
use dccn_auth::server::{Server, ServerHandle};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "Passw0rd1";

fn start_server(dir: &std::path::Path) -> ServerHandle {
    Server::bind(&ServerConfig {
        port: 0,
        db_path: dir.join("u.db"),
        // The register mode makes more accounts from 127.0.0.1 than the
        // registration quota (100 per 10 min, protocol.md) allows.
        max_registrations_per_address: 0,
        ..Default::default()
    })
    .unwrap()
    .spawn()
}

/// Runs `run_bench` with the password in the environment.
fn bench(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_run_bench"))
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .env("DCCN_BENCH_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

/// The unsigned integer after `"key":` in a one-line JSON object.
fn field(json: &str, key: &str) -> u64 {
    let tag = format!("\"{key}\":");
    let start = json
        .find(&tag)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + tag.len();
    let digits: String = json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a count in {json}"))
}

/// Checks a `--json` run: success, one line, ok > 0, no errors. Returns the line.
fn assert_clean(out: &Output, mode: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode}: exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert_eq!(stdout.lines().count(), 1, "{mode}: one JSON line: {stdout}");
    assert!(stdout.contains(&format!("\"mode\":\"{mode}\"")), "{stdout}");
    assert!(field(&stdout, "ok") > 0, "{mode}: no success: {stdout}");
    assert_eq!(field(&stdout, "errors"), 0, "{mode}: {stdout}\n{stderr}");
    // Not a terminal: no progress line, and no error was printed.
    assert!(stderr.is_empty(), "{mode}: stderr: {stderr}");
    stdout
}

#[test]
fn register_login_session_and_idle_runs_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let addr = server.addr();

    let out = bench(
        addr,
        &[
            "--mode", "register", "--conns", "2", "--secs", "0.3", "--prefix", "t", "--json",
        ],
    );
    let json = assert_clean(&out, "register");
    assert_eq!(field(&json, "failed"), 0, "fresh names are never taken");

    for mode in ["login", "login-scram", "session"] {
        let out = bench(
            addr,
            &[
                "--mode", mode, "--conns", "2", "--secs", "0.3", "--user", "t0x0", "--json",
            ],
        );
        let json = assert_clean(&out, mode);
        assert_eq!(field(&json, "failed"), 0, "{mode}: the password is right");
    }

    let out = bench(
        addr,
        &[
            "--mode", "idle", "--hold", "20", "--conns", "2", "--secs", "0.3", "--user", "t0x0",
            "--json",
        ],
    );
    let json = assert_clean(&out, "idle");
    assert_eq!(field(&json, "held"), 20);
    assert_eq!(field(&json, "held_open"), 20);
}

#[test]
fn the_same_prefix_twice_gives_failures_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    // Long enough that a loaded machine still starts the worker before the end.
    let args = [
        "--mode", "register", "--conns", "1", "--secs", "0.3", "--prefix", "dup", "--json",
    ];
    let first = assert_clean(&bench(server.addr(), &args), "register");
    let out = bench(server.addr(), &args);
    let second = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(field(&first, "ok") >= 1);
    assert!(field(&second, "failed") >= 1, "{second}");
    assert_eq!(field(&second, "errors"), 0, "{second}");
}

#[test]
fn password_from_stdin_and_human_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_run_bench"))
            .arg("--addr")
            .arg(server.addr().to_string())
            .args(args)
            .arg("--password-stdin")
            .env_remove("DCCN_BENCH_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&[
        "--mode", "register", "--conns", "1", "--secs", "0.01", "--prefix", "s",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&[
        "--mode", "login", "--conns", "1", "--secs", "0.2", "--user", "s0x0",
    ]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for column in [
        "rate/s", "ok", "failed", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
    ] {
        assert!(table.contains(column), "{column} missing from:\n{table}");
    }
}

#[test]
fn a_wrong_password_is_counted_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let reg = bench(
        server.addr(),
        &[
            "--mode", "register", "--conns", "1", "--secs", "0.01", "--prefix", "w", "--json",
        ],
    );
    assert_clean(&reg, "register");
    let out = Command::new(env!("CARGO_BIN_EXE_run_bench"))
        .args(["--addr", &server.addr().to_string(), "--mode", "login"])
        .args(["--conns", "1", "--secs", "0.1", "--user", "w0x0", "--json"])
        .env("DCCN_BENCH_PASSWORD", "Wr0ngPassword")
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "no success: exit 1: {json}");
    assert!(field(&json, "failed") > 0, "{json}");
    assert_eq!(field(&json, "ok"), 0, "{json}");
    assert_eq!(field(&json, "errors"), 0, "{json}");
}

#[test]
fn usage_errors_and_unreachable_servers_exit_2() {
    // No password anywhere.
    let out = Command::new(env!("CARGO_BIN_EXE_run_bench"))
        .args(["--addr", "127.0.0.1:1", "--mode", "login"])
        .env_remove("DCCN_BENCH_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Unknown mode, and a password given as an argument.
    for args in [
        &["--addr", "127.0.0.1:1", "--mode", "fly"][..],
        &["--addr", "127.0.0.1:1", "--password", PASSWORD][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_run_bench"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A port nobody listens on (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = bench(port, &["--mode", "login", "--secs", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    // A prefix that makes invalid names.
    let out = bench(port, &["--mode", "register", "--prefix", "a__b"]);
    assert_eq!(out.status.code(), Some(2));
    // --help works and exits 0.
    let out = Command::new(env!("CARGO_BIN_EXE_run_bench"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--password-stdin"));
}

#[test]
fn connect_mode_needs_no_password_and_counts_bare_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_run_bench"))
        .args(["--addr", &server.addr().to_string()])
        .args([
            "--mode", "connect", "--conns", "2", "--secs", "0.3", "--json",
        ])
        .env_remove("DCCN_BENCH_PASSWORD")
        .output()
        .unwrap();
    let json = assert_clean(&out, "connect");
    assert_eq!(field(&json, "failed"), 0, "{json}");
    // Each cycle was a session of its own, and all of them ended.
    assert!(field(&json, "ok") >= 2, "{json}");
}
