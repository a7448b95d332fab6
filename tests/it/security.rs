//! The security review's findings (issue 11): each test here attacks the real
//! server (or the real client against a fake server) the way the review did,
//! and failed before its fix.

use crate::common;

use common::*;
use dccn_auth::crypto;
use rusqlite::types::Value;
use std::sync::atomic::Ordering;

/// Writes rows straight into the server's `USERS` table, as an old database
/// (or another tool) might hold them.
fn plant_rows(app: &TestApp, rows: &[(&str, Value, Value)]) {
    let db = rusqlite::Connection::open(&app.db_path).unwrap();
    for (name, verifier, salt) in rows {
        db.execute(
            "INSERT INTO USERS (login, password, salt) VALUES (?1, ?2, ?3)",
            rusqlite::params![name, verifier, salt],
        )
        .unwrap();
    }
}

fn checked_failures(app: &TestApp) -> u64 {
    app.handle
        .services()
        .throttle
        .stats()
        .failures
        .load(Ordering::Relaxed)
}

#[test]
fn odd_rows_take_the_unknown_name_path() {
    let app = spawn_app();
    let salt = "0123456789abcdef0123456789abcdef".to_string();
    plant_rows(
        &app,
        &[
            (
                "empty",
                Value::Text(String::new()),
                Value::Text(salt.clone()),
            ),
            ("marker", Value::Text("!".into()), Value::Text(salt.clone())),
            ("nullv", Value::Null, Value::Text(salt.clone())),
            (
                "blobv",
                Value::Blob(vec![0xff; 32]),
                Value::Text(salt.clone()),
            ),
            (
                "newline",
                Value::Text("a".repeat(64)),
                Value::Text("abc\n__type__\nAccess granted!".into()),
            ),
        ],
    );
    for (name, marker) in [
        ("empty", ""),
        ("marker", "!"),
        ("nullv", ""),
        ("blobv", ""),
        ("newline", ""),
        ("no-such-user", ""),
    ] {
        let before = checked_failures(&app);
        let mut c = app.client();
        c.expect_greeting();
        c.send("login");
        c.expect_prompt("__username__");
        c.send(name);
        // The challenge is one line of two 32-digit tokens, like an unknown name's.
        let lines = c.expect_prompt("__password__");
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        let (salt, nonce) = lines[0]
            .strip_prefix("__nonce__:")
            .and_then(|rest| rest.split_once(':'))
            .unwrap_or_else(|| panic!("{name}: no challenge in {lines:?}"));
        assert!(crypto::is_token(salt), "{name}: salt {salt:?}");
        assert!(crypto::is_token(nonce), "{name}: nonce {nonce:?}");
        // Answering with the stored marker (what anyone can guess) fails.
        c.send(&crypto::response(nonce, marker));
        let out = c.expect_prompt("__type__");
        assert_eq!(out[0], "User or password incorrect", "{name}: {out:?}");
        assert_eq!(checked_failures(&app), before + 1, "{name}: counted");
        c.quit();
    }
}

#[test]
fn list_users_names_unusable_rows_and_escapes_names() {
    let app = spawn_app();
    app.register("wendy", "S3cretPassw0rd");
    plant_rows(
        &app,
        &[
            ("nullv", Value::Null, Value::Text("b".repeat(32))),
            ("\x1b]0;owned\x07", Value::Text(String::new()), Value::Null),
        ],
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run_server"));
    cmd.args(["list-users", "--db", app.db_path.to_str().unwrap()]);
    let run = crate::child::run_with_deadline(cmd, "", std::time::Duration::from_secs(20));
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.stdout;
    assert!(
        !out.contains('\x1b'),
        "a raw escape reached the terminal: {out:?}"
    );
    assert!(out.contains("\\u{1b}]0;owned\\u{7}"), "{out}");
    assert!(
        out.contains("UNUSABLE for the classic login: verifier (password column) is NULL"),
        "{out}"
    );
    assert!(out.contains("3 users, 2 unusable"), "{out}");
    let wendy = out.lines().find(|l| l.starts_with("wendy")).unwrap();
    assert!(!wendy.contains("UNUSABLE"), "{wendy}");
}

/// The review's flood: pipelined failed tries with 1,024-byte names of control
/// bytes from one connection (before: about 5 KB of log per try, 15.7 MB in
/// all). Prints the figure docs/RELIABILITY.md gives (`-- --nocapture`).
#[test]
fn a_log_flood_from_one_connection_is_bounded() {
    use std::io::Read;
    const TRIES: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = common::start_server_binary(
        env!("CARGO_BIN_EXE_run_server"),
        &dir.path().join("users.db"),
        "info",
    );
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    let name = "\x01".repeat(1024);
    let burst = format!("login\n{name}\n{}\n", "0".repeat(64)).repeat(TRIES) + "quit\n";
    c.send_raw(burst.as_bytes());
    let refusals = c
        .rest()
        .iter()
        .filter(|l| *l == "User or password incorrect")
        .count();
    assert_eq!(refusals, TRIES);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = String::from_utf8_lossy(&log.join().unwrap()).into_owned();
    assert!(
        log.len() < 16 * 1024,
        "{} bytes of log for {TRIES} tries",
        log.len()
    );
    assert!(!log.contains('\x01'), "raw control bytes in the log");
    let folded = TRIES - dccn_auth::config::LOG_WARN_BURST as usize;
    assert!(
        log.contains(&format!("127.0.0.1: {folded} more warnings folded")),
        "who, from where, how many: {log}"
    );
    eprintln!("log flood: {TRIES} tries, {} bytes of log", log.len());
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_planted_key_file_never_receives_the_new_key() {
    use dccn_auth::tls;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server-key.pem");
    std::fs::write(&key, b"").unwrap();
    set_mode(&key, 0o666);
    let err = tls::ensure_self_signed(dir.path(), "127.0.0.1")
        .expect_err("a planted key file must not be used")
        .to_string();
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        b"",
        "nothing was written into it"
    );
    // A symlink planted in its place is refused the same way (O_EXCL).
    std::fs::remove_file(&key).unwrap();
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &key).unwrap();
    assert!(tls::ensure_self_signed(dir.path(), "127.0.0.1").is_err());
    assert!(!target.exists(), "the symlink was not followed");
}

#[test]
fn a_key_others_can_read_or_write_is_refused_naming_the_fix() {
    use dccn_auth::tls;
    let dir = tempfile::tempdir().unwrap();
    let made = tls::ensure_self_signed(dir.path(), "127.0.0.1").unwrap();
    let key = &made.files.key;
    for mode in [0o644, 0o640, 0o602] {
        set_mode(key, mode);
        // Reused by --tls-self-signed ...
        let err = tls::ensure_self_signed(dir.path(), "127.0.0.1")
            .expect_err("an open key must be refused")
            .to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", key.display())),
            "{err}"
        );
        // ... or given with --tls-key.
        assert!(tls::server_config(&made.files).is_err(), "mode {mode:o}");
    }
    // Through the binary: exit 1, one line naming the file.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run_server"));
    cmd.args(["--port", "0", "--tls-cert"])
        .arg(&made.files.cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--db")
        .arg(dir.path().join("users.db"));
    let run = crate::child::run_with_deadline(cmd, "", std::time::Duration::from_secs(20));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    set_mode(key, 0o600);
    assert!(tls::server_config(&made.files).is_ok());
    assert_eq!(mode_of(key), 0o600);
}

/// Bytes the kernel holds unsent for the server's end of the connection from
/// `client` (the tx_queue column of /proc/net/tcp for local `server`, remote
/// `client`).
fn server_send_queue(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<u64> {
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 4 && f[1] == local && f[2] == remote)
            .then(|| u64::from_str_radix(f[4].split(':').next()?, 16).ok())
            .flatten()
    })
}

/// A client pipelines commands and never reads: the session ends once one
/// turn's output has waited the turn write limit, however the writes trickle,
/// and the kernel holds little for it meanwhile.
#[test]
fn a_client_that_never_reads_loses_its_session_on_time() {
    use socket2::{Domain, Socket, Type};
    use std::io::Write;
    use std::time::{Duration, Instant};
    let limit = Duration::from_secs(1);
    let app = spawn_app_with(|_| {}, |s| s.turn_write_limit = limit);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&app.addr.into()).unwrap();
    let mut tcp: std::net::TcpStream = sock.into();
    let client_addr = tcp.local_addr().unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    // 200,000 unknown commands: about 18 MB of answers nobody reads.
    let writer = std::thread::spawn(move || {
        let chunk = "x\n".repeat(10_000);
        for _ in 0..20 {
            if tcp.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        tcp
    });
    std::thread::sleep(limit / 2);
    let queued = server_send_queue(app.addr, client_addr).unwrap_or(0);
    let left = wait_for_sessions_at_most(&app, 0, Duration::from_secs(30));
    let lasted = started.elapsed();
    let _ = writer.join();
    eprintln!("never reads: session lasted {lasted:?}, server send queue {queued} bytes");
    assert_eq!(left, 0, "the session is still running");
    // Before the fix it lasted about 20 s (each write call renewed the
    // timeout); 8 limits leave room for a loaded machine.
    assert!(
        lasted < limit * 8,
        "the session lasted {lasted:?} (limit {limit:?})"
    );
    assert!(
        queued < 256 * 1024,
        "{queued} bytes held for a peer that never reads"
    );
}

/// Refusals at the session cap are rate-limited like a session's warnings.
#[test]
fn a_connection_flood_is_not_a_log_flood() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    const FLOOD: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_run_server"))
        .args(["--port", "0", "--max-sessions", "1", "--db"])
        .arg(dir.path().join("users.db"))
        .env("DCCN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = crate::common::ChildGuard(child);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: std::net::SocketAddr = first
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let mut holder = TestClient::connect(addr);
    holder.expect_greeting();
    for _ in 0..FLOOD {
        let mut c = TestClient::connect(addr);
        assert_eq!(c.line(), "Error: server busy");
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let log = String::from_utf8_lossy(&log.join().unwrap()).into_owned();
    let written = log.matches("] session cap reached").count();
    assert_eq!(written, dccn_auth::config::LOG_WARN_BURST as usize, "{log}");
    let folded = FLOOD - written;
    assert!(
        log.contains(&format!("127.0.0.1: {folded} more warnings folded")),
        "{log}"
    );
}
