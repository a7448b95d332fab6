//! `run_client` over TLS end to end: the real `run_server` binary with
//! `--tls-self-signed` (its certificate found by parsing what it prints), and the
//! real `run_client` binary with `--tls --ca`. Every flow, the self-signed setup,
//! verification failures (wrong CA, wrong name, empty system store), and the two
//! mismatches (TLS client on a plain port, plain client on a TLS port).
//!
//! Every child process runs under a deadline and every server is killed when its
//! test ends (by [`ServerProc`]'s `Drop`); everything talks to 127.0.0.1 only.
//! A stalled handshake is tested on the server side, in `tests/tls.rs`.

use crate::child;

use child::{run_with_deadline, Run};
use dccn_auth::tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_run_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_run_client");
/// No process in these tests should come near this.
const DEADLINE: Duration = Duration::from_secs(30);
const GOOD: &str = "Passw0rdDemo";
const NEW: &str = "N3wPassword";

// ---- the server --------------------------------------------------------------

/// A `run_server` child process, killed when dropped.
struct ServerProc {
    child: Child,
    port: u16,
    /// The self-signed certificate and its fingerprint, as printed (TLS only).
    cert: Option<(PathBuf, String)>,
    /// The certificate line: `TLS certificate <path> (new|reused): <fingerprint>`.
    cert_line: Option<String>,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// Starts `run_server --port 0 --db <dir>/users.db [--tls-self-signed] <extra>`
    /// and waits (at most [`DEADLINE`]) for its `listening on` line.
    fn start(dir: &Path, tls: bool, extra: &[&str]) -> ServerProc {
        let mut cmd = Command::new(SERVER);
        for var in [
            "DCCN_HOST",
            "DCCN_PORT",
            "DCCN_DB",
            "DCCN_TLS_CERT",
            "DCCN_TLS_KEY",
            "DCCN_TLS_SELF_SIGNED",
            "DCCN_MAX_SESSIONS",
        ] {
            cmd.env_remove(var);
        }
        let db = dir.join("users.db");
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(&db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if tls {
            cmd.arg("--tls-self-signed");
        }
        let mut child = cmd.spawn().expect("spawn run_server");
        let stdout = child.stdout.take().expect("stdout");
        // The reader keeps draining stdout for the server's whole life, so the
        // server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = ServerProc {
            child,
            port: 0,
            cert: None,
            cert_line: None,
        };
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("run_server printed no `listening on` line in time");
            if let Some(rest) = line.strip_prefix("TLS certificate ") {
                // `<path> (new): <fingerprint>`
                let (path, rest) = rest.rsplit_once(" (").expect("cert line");
                let (_, fingerprint) = rest.split_once("): ").expect("cert line");
                server.cert = Some((PathBuf::from(path), fingerprint.to_string()));
                server.cert_line = Some(line.clone());
            }
            if let Some(rest) = line.strip_prefix("run_server listening on ") {
                let addr = rest.split_whitespace().next().expect("address");
                let port = addr.rsplit(':').next().expect("port");
                server.port = port.parse().expect("port number");
                assert_eq!(tls, rest.contains("with TLS"), "{line}");
                return server;
            }
        }
    }

    /// The certificate file the server made.
    fn cert(&self) -> PathBuf {
        self.cert.clone().expect("a TLS server").0
    }
}

/// A TLS server on a fresh database, and the folder that holds it.
fn tls_server() -> (ServerProc, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (ServerProc::start(dir.path(), true, &[]), dir)
}

// ---- the client --------------------------------------------------------------

/// `run_client --host 127.0.0.1 --port <port> <args...>` with `stdin` and
/// `env`, none of the client's variables inherited, killed after [`DEADLINE`].
fn run_client(port: u16, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(CLIENT);
    for var in [
        "DCCN_HOST",
        "DCCN_PORT",
        "DCCN_TLS",
        "DCCN_TLS_CA",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args);
    run_with_deadline(cmd, stdin, DEADLINE)
}

/// A scripted action over TLS trusting `ca`, with `--password-stdin`.
fn tls_act(port: u16, ca: &Path, action: &str, user: &str, stdin: &str) -> Run {
    let ca = ca.to_str().expect("utf-8 path");
    run_client(
        port,
        &[
            "--tls",
            "--ca",
            ca,
            action,
            "--user",
            user,
            "--password-stdin",
        ],
        &format!("{stdin}\n"),
        &[],
    )
}

fn assert_run(run: &Run, code: i32, stdout: &str) {
    assert_eq!(run.code, code, "{run:#?}");
    assert_eq!(run.stdout, stdout, "{run:#?}");
}

/// Exit 2, nothing on stdout, and exactly one line on stderr, containing `needle`.
fn assert_one_line_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.starts_with("run_client: "), "{run:#?}");
    assert!(run.stderr.contains(needle), "{run:#?}");
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
}

// ---- the tests ---------------------------------------------------------------

#[test]
fn every_main_flow_over_tls() {
    let (s, _dir) = tls_server();
    let ca = s.cert();
    assert_run(
        &tls_act(s.port, &ca, "register", "alice", GOOD),
        0,
        "User successfully registered!\n",
    );
    assert_run(
        &tls_act(s.port, &ca, "register", "alice", GOOD),
        1,
        "Username already taken, try something else\n",
    );
    assert_run(
        &tls_act(s.port, &ca, "login", "alice", GOOD),
        0,
        "Successfully login\nAccess granted!\n",
    );
    assert_run(
        &tls_act(s.port, &ca, "login", "alice", "Wr0ngPassword"),
        1,
        "User or password incorrect\n",
    );
    assert_run(
        &tls_act(
            s.port,
            &ca,
            "change-password",
            "alice",
            &format!("{GOOD}\n{NEW}"),
        ),
        0,
        "Password successfully changed\n",
    );
    assert_run(
        &tls_act(s.port, &ca, "login", "alice", NEW),
        0,
        "Successfully login\nAccess granted!\n",
    );
    assert_eq!(tls_act(s.port, &ca, "login", "alice", GOOD).code, 1);
    assert_run(
        &tls_act(s.port, &ca, "delete-account", "alice", NEW),
        0,
        "Your account was removed from system\n",
    );
}

#[test]
fn self_signed_setup_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = ServerProc::start(dir.path(), true, &[]);
    let (cert, fingerprint) = first.cert.clone().expect("certificate line");
    // Made beside the database, announced as new, with the file's real fingerprint.
    assert_eq!(cert, dir.path().join("server-cert.pem"));
    assert!(dir.path().join("server-key.pem").exists());
    assert!(
        first.cert_line.as_deref().unwrap_or("").contains("(new)"),
        "{:?}",
        first.cert_line
    );
    let der = CertificateDer::from_pem_file(&cert).expect("PEM certificate");
    assert_eq!(tls::fingerprint(&der), fingerprint);

    // The client trusts it by --ca, and its trace shows what was verified.
    let ca = cert.to_str().expect("utf-8 path");
    let run = run_client(
        first.port,
        &[
            "--tls",
            "--ca",
            ca,
            "--trace",
            "register",
            "--user",
            "bob",
            "--password-stdin",
        ],
        &format!("{GOOD}\n"),
        &[],
    );
    assert_run(&run, 0, "User successfully registered!\n");
    let note = run
        .stderr
        .lines()
        .find(|l| l.starts_with("** TLS"))
        .unwrap_or_else(|| panic!("no TLS line in the trace: {run:#?}"));
    assert!(note.starts_with("** TLS 1.3 (TLS13_"), "{note}");
    assert!(
        note.contains("certificate verified for \"127.0.0.1\""),
        "{note}"
    );
    assert!(note.contains(&fingerprint), "{note}");
    assert!(!run.stderr.contains(GOOD), "{run:#?}");
    drop(first);

    // A restart reuses the certificate: the same --ca still works.
    let second = ServerProc::start(dir.path(), true, &[]);
    assert!(
        second
            .cert_line
            .as_deref()
            .unwrap_or("")
            .contains("(reused)"),
        "{:?}",
        second.cert_line
    );
    assert_eq!(second.cert.clone().expect("cert").1, fingerprint);
    assert_run(
        &tls_act(second.port, &cert, "login", "bob", GOOD),
        0,
        "Successfully login\nAccess granted!\n",
    );
}

#[test]
fn a_wrong_ca_fails_verification_with_one_line() {
    let (s, _dir) = tls_server();
    let other = tempfile::tempdir().expect("temp dir");
    let stranger = tls::ensure_self_signed(other.path(), "127.0.0.1").expect("stranger cert");
    let run = tls_act(s.port, &stranger.files.cert, "login", "alice", GOOD);
    // Both self-signed certificates carry rcgen's issuer name, so this is a bad
    // signature rather than an unknown issuer; either way: not trusted.
    assert_one_line_error(&run, "TLS: the server's certificate is not trusted (");
    assert!(
        run.stderr.contains(&format!(
            "--ca {} holds neither the server's certificate nor its CA",
            stranger.files.cert.display()
        )),
        "{run:#?}"
    );
    // The server goes on serving.
    assert_eq!(tls_act(s.port, &s.cert(), "login", "alice", GOOD).code, 1);
}

#[test]
fn the_server_name_is_checked_and_can_be_overridden() {
    let (s, _dir) = tls_server();
    let ca = s.cert();
    let ca = ca.to_str().expect("utf-8 path");
    let register = ["register", "--user", "carol", "--password-stdin"];
    let stdin = format!("{GOOD}\n");

    let wrong = [
        &["--tls", "--ca", ca, "--server-name", "example.com"][..],
        &register,
    ]
    .concat();
    let run = run_client(s.port, &wrong, &stdin, &[]);
    assert_one_line_error(
        &run,
        "TLS: the certificate is not valid for name \"example.com\"",
    );
    assert!(
        run.stderr
            .contains("(it names localhost, 127.0.0.1; use --server-name)"),
        "{run:#?}"
    );

    // --server-name implies --tls; the certificate names localhost.
    let right = [&["--ca", ca, "--server-name", "localhost"][..], &register].concat();
    assert_run(
        &run_client(s.port, &right, &stdin, &[]),
        0,
        "User successfully registered!\n",
    );
}

#[test]
fn the_system_store_is_used_without_ca_and_an_empty_one_says_so() {
    let (s, dir) = tls_server();
    let cert = s.cert();
    let login = ["--tls", "login", "--user", "dave", "--password-stdin"];
    let stdin = format!("{GOOD}\n");

    // rustls-native-certs reads SSL_CERT_FILE when it is set: make the server's
    // certificate the whole "system" store.
    let store = cert.to_str().expect("utf-8 path");
    let run = run_client(s.port, &login, &stdin, &[("SSL_CERT_FILE", store)]);
    assert_run(&run, 1, "User or password incorrect\n");

    // A store that does not know the server: the hint is --ca.
    let other = tempfile::tempdir().expect("temp dir");
    let stranger = tls::ensure_self_signed(other.path(), "127.0.0.1").expect("stranger cert");
    let store = stranger.files.cert.to_str().expect("utf-8 path");
    let run = run_client(s.port, &login, &stdin, &[("SSL_CERT_FILE", store)]);
    assert_one_line_error(&run, "TLS: the server's certificate is not trusted (");
    assert!(
        run.stderr
            .ends_with("; pass the server's certificate with --ca FILE\n"),
        "{run:#?}"
    );

    // An empty or unreadable store is a clear error, found before connecting:
    // the same error with no server at all.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let empty = empty.to_str().expect("utf-8 path");
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8 path");
    for store in [empty, missing] {
        for port in [s.port, dead_port] {
            let run = run_client(port, &login, &stdin, &[("SSL_CERT_FILE", store)]);
            assert_one_line_error(
                &run,
                "TLS: no trusted root certificates in the system store",
            );
            assert!(run.stderr.contains("--ca FILE"), "{run:#?}");
        }
    }
}

#[test]
fn environment_turns_tls_on() {
    let (s, _dir) = tls_server();
    let cert = s.cert();
    let ca = cert.to_str().expect("utf-8 path");
    let register = ["register", "--user", "erin", "--password-stdin"];
    let stdin = format!("{GOOD}\n");
    let run = run_client(
        s.port,
        &register,
        &stdin,
        &[("DCCN_TLS", "1"), ("DCCN_TLS_CA", ca)],
    );
    assert_run(&run, 0, "User successfully registered!\n");
    // DCCN_TLS_CA alone implies TLS too.
    let login = ["login", "--user", "erin", "--password-stdin"];
    let run = run_client(s.port, &login, &stdin, &[("DCCN_TLS_CA", ca)]);
    assert_run(&run, 0, "Successfully login\nAccess granted!\n");
}

#[test]
fn tls_against_a_plain_server_fails_fast_and_says_why() {
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let plain = ServerProc::start(plain_dir.path(), false, &[]);
    let other = tempfile::tempdir().expect("temp dir");
    let some_ca = tls::ensure_self_signed(other.path(), "127.0.0.1").expect("cert");
    let run = tls_act(plain.port, &some_ca.files.cert, "login", "alice", GOOD);
    assert_one_line_error(&run, "TLS: the server did not answer in TLS");
    assert!(run.stderr.contains("(drop --tls)"), "{run:#?}");
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
}

#[test]
fn a_plain_client_on_the_tls_port_is_told_to_use_tls() {
    let (s, _dir) = tls_server();
    let run = run_client(
        s.port,
        &["login", "--user", "alice", "--password-stdin"],
        &format!("{GOOD}\n"),
        &[],
    );
    assert_one_line_error(&run, "TLS required");
    assert!(run.stderr.contains("add --tls"), "{run:#?}");
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out() {
    // Accepts and says nothing: the handshake must end at --timeout, at connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = thread::spawn(move || {
        // Keep the connection open (unread) until the client gives up or the
        // deadline passes.
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut sink = Vec::new();
        let _ = sock.read_to_end(&mut sink);
    });
    let other = tempfile::tempdir().expect("temp dir");
    let some_ca = tls::ensure_self_signed(other.path(), "127.0.0.1").expect("cert");
    let ca = some_ca.files.cert.to_str().expect("utf-8 path");
    let run = run_client(
        port,
        &[
            "--tls",
            "--ca",
            ca,
            "--timeout",
            "1",
            "login",
            "--user",
            "alice",
            "--password-stdin",
        ],
        &format!("{GOOD}\n"),
        &[],
    );
    assert_one_line_error(
        &run,
        "TLS: the server did not complete the handshake within 1 s",
    );
    assert!(
        run.took >= Duration::from_millis(900) && run.took < Duration::from_secs(5),
        "took {:?}",
        run.took
    );
    holder.join().expect("holder");
}

/// Holds a TLS session open (greeting read) on `port`, trusting `ca`.
fn hold_session(port: u16, ca: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(cert.expect("cert")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut greeting = [0u8; 19];
    stream.read_exact(&mut greeting).expect("greeting");
    assert_eq!(&greeting, b"Connected to server");
    stream
}

#[test]
fn a_full_tls_server_is_reported_as_busy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = ServerProc::start(dir.path(), true, &["--max-sessions", "1"]);
    let _held = hold_session(s.port, &s.cert());
    let run = tls_act(s.port, &s.cert(), "login", "alice", GOOD);
    // The plain-text `Error: server busy` usually arrives before the server's
    // close; if the close (a reset, since our ClientHello is unread) wins the
    // race, the client can only say the connection closed during the handshake.
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("server busy")
            || run
                .stderr
                .contains("closed the connection during the handshake"),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
}
