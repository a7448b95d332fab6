//! The protocol inside TLS: every main flow, the self-signed setup, verification
//! failures, a plain client on the TLS port, and a stalled handshake.

use crate::common;

use common::*;
use dccn_auth::config::TlsFiles;
use dccn_auth::tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

/// A TLS server on a fresh database, with a self-signed certificate beside it.
fn spawn_tls_app(tweak: impl FnOnce(&mut dccn_auth::config::ServerConfig)) -> (TestApp, TlsFiles) {
    let mut files = None;
    let app = spawn_app_with(
        |c| {
            let dir = c.db_path.parent().unwrap().to_path_buf();
            let made = tls::ensure_self_signed(&dir, "127.0.0.1").unwrap();
            files = Some(made.files.clone());
            c.tls = Some(made.files);
            tweak(c);
        },
        |_| {},
    );
    (app, files.unwrap())
}

fn client_config(ca_pem: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_client(addr: SocketAddr, ca_pem: &Path, name: &str) -> TestClient {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(client_config(ca_pem), server_name).unwrap();
    let stream = StreamOwned::new(conn, tcp.try_clone().unwrap());
    TestClient::over(Box::new(stream), tcp)
}

/// Reads from a TLS client until it fails or ends; returns the error, if any.
fn handshake_error(mut c: TestClient) -> Option<std::io::Error> {
    let mut buf = [0u8; 64];
    c.reader.get_mut().read(&mut buf).err()
}

#[test]
fn every_main_flow_over_tls() {
    let (app, files) = spawn_tls_app(|_| {});
    let mut c = tls_client(app.addr, &files.cert, "localhost");
    c.expect_greeting();
    assert_eq!(
        c.register("alice", PW),
        vec!["User successfully registered!", MAIN_MENU]
    );
    c.login_refused("alice", "Wr0ngPassword");
    c.login_ok("alice", PW);
    c.send("change_password");
    c.answer_challenge(PW);
    c.expect_prompt("__password__");
    c.send("N3wPassword");
    c.expect_prompt("__password__");
    c.send("N3wPassword");
    assert_eq!(
        c.expect_prompt("__type__"),
        vec!["Password successfully changed", USER_MENU]
    );
    c.send("logout");
    c.expect_prompt("__type__");
    c.login_ok("alice", "N3wPassword");
    c.quit();
}

#[test]
fn the_certificate_names_localhost_and_127_0_0_1() {
    let (app, files) = spawn_tls_app(|_| {});
    for name in ["localhost", "127.0.0.1"] {
        let mut c = tls_client(app.addr, &files.cert, name);
        c.expect_greeting();
    }
}

#[test]
fn self_signed_files_are_made_once_reused_and_the_key_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = tls::ensure_self_signed(dir.path(), "0.0.0.0").unwrap();
    assert!(first.created);
    assert_eq!(first.files.cert, dir.path().join("server-cert.pem"));
    let second = tls::ensure_self_signed(dir.path(), "0.0.0.0").unwrap();
    assert!(!second.created);
    assert_eq!(first.fingerprint, second.fingerprint);
    let der = CertificateDer::from_pem_file(&first.files.cert).unwrap();
    assert_eq!(tls::fingerprint(&der), first.fingerprint);
    assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.files.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key readable by its owner only");
    }
}

#[test]
fn a_wrong_ca_or_a_wrong_name_fails_verification_and_the_server_goes_on() {
    let (app, files) = spawn_tls_app(|_| {});
    let other = tempfile::tempdir().unwrap();
    let stranger = tls::ensure_self_signed(other.path(), "127.0.0.1").unwrap();

    let err = handshake_error(tls_client(app.addr, &stranger.files.cert, "localhost"))
        .expect("an unknown CA must fail");
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = handshake_error(tls_client(app.addr, &files.cert, "example.com"))
        .expect("a wrong name must fail");
    assert!(err.to_string().contains("certificate"), "{err}");

    let mut good = tls_client(app.addr, &files.cert, "localhost");
    good.expect_greeting();
}

#[test]
fn a_plain_client_on_the_tls_port_is_told_at_once() {
    let (app, files) = spawn_tls_app(|_| {});
    // A plain client waits for the greeting: it hears why within about a second.
    let started = Instant::now();
    let mut waiting = app.client();
    assert_eq!(waiting.rest(), vec!["Error: TLS required", "__quit__"]);
    assert!(started.elapsed() < Duration::from_secs(3));
    // One that speaks first hears it at once.
    let mut talker = app.client();
    talker.send("login");
    assert_eq!(talker.rest(), vec!["Error: TLS required", "__quit__"]);
    // And the server keeps serving TLS.
    let mut good = tls_client(app.addr, &files.cert, "localhost");
    good.expect_greeting();
}

#[test]
fn a_stalled_handshake_is_cut_off_by_the_login_timeout() {
    let (app, _files) = spawn_tls_app(|c| c.login_timeout = Duration::from_secs(2));
    let mut sock = TcpStream::connect(app.addr).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // The start of a TLS record, then nothing.
    sock.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let started = Instant::now();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        app.handle.session_count(),
        1,
        "holds a slot while handshaking"
    );
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    wait_for_sessions_at_most(&app, 0, Duration::from_secs(2));
    assert_eq!(app.handle.session_count(), 0, "the slot is released");
}

#[test]
fn line_limits_and_the_session_cap_hold_under_tls() {
    let (app, files) = spawn_tls_app(|c| c.max_sessions = 1);
    let mut c = tls_client(app.addr, &files.cert, "localhost");
    c.expect_greeting();
    let mut extra = app.client();
    assert_eq!(extra.rest(), vec!["Error: server busy", "__quit__"]);
    c.send(&"x".repeat(1025));
    assert_eq!(c.rest(), vec!["Error: line too long", "__quit__"]);
}

#[test]
fn shutdown_reaches_tls_clients() {
    let (mut app, files) = spawn_tls_app(|_| {});
    let mut c = tls_client(app.addr, &files.cert, "localhost");
    c.expect_greeting();
    assert_eq!(app.handle.shutdown(Duration::from_secs(2)), 0);
    assert_eq!(c.rest(), vec!["Error: server shutting down", "__quit__"]);
}

#[test]
fn a_proxy_header_comes_before_the_tls_handshake() {
    // As HAProxy's send-proxy in TCP mode: the header, then the client's bytes.
    let (app, files) = spawn_tls_app(|c| {
        c.trusted_proxies =
            dccn_auth::proxy_protocol::TrustedProxies::new(vec!["127.0.0.1".parse().unwrap()]);
    });
    let mut tcp = TcpStream::connect(app.addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 7886\r\n")
        .unwrap();
    let server_name = ServerName::try_from("localhost".to_string()).unwrap();
    let conn = ClientConnection::new(client_config(&files.cert), server_name).unwrap();
    let stream = StreamOwned::new(conn, tcp.try_clone().unwrap());
    let mut c = TestClient::over(Box::new(stream), tcp);
    c.expect_greeting();
    c.quit();
}
