//! TLS for the terminal client (rustls with the ring provider; no OpenSSL).
//!
//! [`crate::client::Client::connect`] makes a [`TlsConnector`] before connecting
//! (so unreadable trust anchors are reported before any connection), runs
//! [`TlsConnector::handshake`] on the TCP socket, and hands the dialogue the TLS
//! stream it returns: the session code never learns which stream it has.
//!
//! - Trust: the certificates of a PEM file (`--ca`, e.g. the server's
//!   self-signed certificate), or else the system's store, read by
//!   `rustls-native-certs` (which honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
//! - Name: the certificate must name `--server-name`, by default the host the
//!   client connects to; an IP address is checked against the IP SANs.
//! - The handshake runs at connect, under one deadline, so every TLS failure
//!   shows up there as one line ([`ClientError::Tls`]), never at the first read.
//! - A peer that does not speak TLS is recognised by the first bytes it sent:
//!   our plain server's greeting, or the plain-text `Error: server busy` that a
//!   TLS port writes before any handshake when it is full.

use super::error::ClientError;
use super::trace::Trace;
use crate::protocol::error;
use crate::tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TLS stream over the client's TCP socket.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// What the client checks the server's certificate against.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Trust the certificates in this PEM file only; `None`: the system's store.
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry; `None`: the host connected to.
    pub server_name: Option<String>,
}

/// How many of the peer's first bytes are kept to explain a failed handshake.
const SEEN_BYTES: usize = 80;

/// TLS record content types (change_cipher_spec .. heartbeat): the first byte a
/// TLS server sends is one of these; text never is.
const TLS_RECORD_TYPES: std::ops::RangeInclusive<u8> = 0x14..=0x18;

fn tls_error(msg: impl Into<String>) -> ClientError {
    ClientError::Tls(msg.into())
}

// ---- trust ----------------------------------------------------------------------

/// The trust anchors: the `--ca` file's certificates, or the system's.
fn roots(settings: &TlsSettings) -> Result<RootCertStore, ClientError> {
    match &settings.ca {
        Some(path) => roots_from_pem(path),
        None => system_roots(),
    }
}

fn roots_from_pem(path: &Path) -> Result<RootCertStore, ClientError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| tls_error(format!("cannot read --ca {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "no certificate in --ca {} (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            tls_error(format!(
                "certificate {} in --ca {} cannot be trusted: {e}",
                i + 1,
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The system's trusted roots. Unreadable entries are skipped as long as some
/// root was found; none at all is an error that says what to do instead.
fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(tls_error(format!(
            "no trusted root certificates in the system store{why}; \
             pass the server's certificate (or its CA) with --ca FILE"
        )));
    }
    Ok(roots)
}

fn client_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ---- the handshake ---------------------------------------------------------------

/// The socket during the handshake: reads end at the deadline, and the peer's
/// first bytes are kept, to tell "not TLS" and "server busy" from real TLS errors.
struct Watched<'a> {
    sock: &'a mut TcpStream,
    deadline: Instant,
    seen: Vec<u8>,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        self.sock.set_read_timeout(Some(left))?;
        let n = match self.sock.read(buf) {
            // A receive timeout shows up as EAGAIN on Unix.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::from(io::ErrorKind::TimedOut))
            }
            other => other?,
        };
        let keep = n.min(SEEN_BYTES.saturating_sub(self.seen.len()));
        self.seen.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

impl Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Everything the handshake needs, made before connecting: trust anchors that
/// cannot be read and a name that cannot be checked are errors before any
/// connection is tried.
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// The name checked, as given (for messages and the trace).
    name: String,
    settings: TlsSettings,
}

impl TlsConnector {
    /// `host` is the host connected to: the name checked unless
    /// `settings.server_name` says otherwise.
    pub fn new(host: &str, settings: &TlsSettings) -> Result<TlsConnector, ClientError> {
        let name = settings.server_name.as_deref().unwrap_or(host).to_string();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            ClientError::Usage(format!(
                "TLS: {name:?} is not a DNS name or an IP address to check the certificate \
                 against; give one with --server-name"
            ))
        })?;
        Ok(TlsConnector {
            config: client_config(roots(settings)?)?,
            server_name,
            name,
            settings: settings.clone(),
        })
    }

    /// Runs the TLS handshake on a connected socket, within `timeout`, verifying
    /// the server's certificate. On success the trace gets the protocol, the
    /// cipher suite, the name checked and the certificate's fingerprint.
    pub fn handshake(
        &self,
        mut sock: TcpStream,
        timeout: Duration,
        trace: &mut Trace,
    ) -> Result<TlsStream, ClientError> {
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| tls_error(format!("setup: {e}")))?;
        let deadline = Instant::now() + timeout;
        let mut watched = Watched {
            sock: &mut sock,
            deadline,
            seen: Vec::new(),
        };
        while conn.is_handshaking() {
            // Each step reads or writes under the deadline; this bounds the loop
            // even if a step made no progress.
            if Instant::now() >= deadline {
                return Err(timed_out(timeout));
            }
            if let Err(e) = conn.complete_io(&mut watched) {
                return Err(explain(
                    &e,
                    &watched.seen,
                    &self.name,
                    &self.settings,
                    timeout,
                ));
            }
        }
        if trace.is_on() {
            trace.note(&describe(&conn, &self.name, &self.settings));
        }
        Ok(StreamOwned::new(conn, sock))
    }
}

/// "TLS 1.3 (TLS13_AES_256_GCM_SHA384), certificate verified for "localhost"
/// against --ca server-cert.pem, SHA-256 AB:CD:..."
fn describe(conn: &ClientConnection, name: &str, settings: &TlsSettings) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_string(),
    };
    let suite = match conn.negotiated_cipher_suite() {
        Some(s) => format!("{:?}", s.suite()),
        None => "unknown suite".to_string(),
    };
    let against = match &settings.ca {
        Some(path) => format!("--ca {}", path.display()),
        None => "the system's roots".to_string(),
    };
    let fingerprint = match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => format!(", SHA-256 {}", tls::fingerprint(cert)),
        None => String::new(),
    };
    format!("{version} ({suite}), certificate verified for {name:?} against {against}{fingerprint}")
}

fn timed_out(timeout: Duration) -> ClientError {
    tls_error(format!(
        "the server did not complete the handshake within {} s (is it a TLS server?)",
        timeout.as_secs()
    ))
}

/// One line a person can act on, for a failed handshake.
fn explain(
    e: &io::Error,
    seen: &[u8],
    name: &str,
    settings: &TlsSettings,
    timeout: Duration,
) -> ClientError {
    // The peer's first bytes say more than the parse error they caused.
    if let Some(&first) = seen.first() {
        if !TLS_RECORD_TYPES.contains(&first) {
            return not_tls(seen);
        }
    }
    if e.kind() == io::ErrorKind::TimedOut {
        return timed_out(timeout);
    }
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => tls_error(
                "the server closed the connection during the handshake \
                 (is it a TLS server? it may also be full: try again)",
            ),
            _ => tls_error(format!("handshake failed: {e}")),
        };
    };
    let msg = match err {
        rustls::Error::InvalidCertificate(cert) => return certificate_error(cert, name, settings),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake (alert: {alert:?})")
        }
        rustls::Error::PeerIncompatible(why) => {
            format!("no TLS version or cipher suite in common with the server ({why:?})")
        }
        other => format!("handshake failed: {other}"),
    };
    tls_error(msg)
}

/// The server answered in plain text.
fn not_tls(seen: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(seen);
    let first_line = text.split(['\r', '\n']).next().unwrap_or_default();
    if let Some(reason) = first_line.strip_prefix(error::PREFIX) {
        // A TLS port that is full says so in plain text, before any handshake.
        if reason == error::SERVER_BUSY {
            return ClientError::ServerSaid(reason.to_string());
        }
    }
    let shown: String = first_line.chars().take(40).collect();
    tls_error(format!(
        "the server did not answer in TLS (it said {shown:?}); \
         is it running without --tls-cert? (drop --tls)"
    ))
}

fn certificate_error(cert: &CertificateError, name: &str, settings: &TlsSettings) -> ClientError {
    let trust_hint = match &settings.ca {
        Some(path) => format!(
            "--ca {} holds neither the server's certificate nor its CA",
            path.display()
        ),
        None => "pass the server's certificate with --ca FILE".to_string(),
    };
    let msg = match cert {
        CertificateError::UnknownIssuer => {
            format!("the server's certificate is not trusted (unknown issuer); {trust_hint}")
        }
        // A trusted certificate has the issuer's name but not its key: typically
        // another self-signed certificate (they all carry the same name), or the
        // server made a new one.
        CertificateError::BadSignature => format!(
            "the server's certificate is not trusted (a trusted certificate has its \
             issuer's name but not its key: another or a remade certificate?); {trust_hint}"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate is not valid for name {name:?} (it names {}; use --server-name)",
            presented
                .iter()
                .map(|p| plain_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CertificateError::NotValidForName => {
            format!("the certificate is not valid for name {name:?} (use --server-name)")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired (or this machine's clock is wrong)".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (or this machine's clock is wrong)"
                .to_string()
        }
        other => format!("the server's certificate was refused: {other}"),
    };
    tls_error(msg)
}

/// rustls shows the names a certificate presents in their `Debug` form
/// (`DnsName("localhost")`, `IpAddress(127.0.0.1)`); a person wants the name.
fn plain_name(presented: &str) -> &str {
    if let Some(dns) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        return dns;
    }
    if let Some(ip) = presented
        .strip_prefix("IpAddress(")
        .and_then(|s| s.strip_suffix(')'))
    {
        return ip;
    }
    presented
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_told_from_tls() {
        let e = io::Error::new(io::ErrorKind::InvalidData, "corrupt");
        let settings = TlsSettings::default();
        let t = Duration::from_secs(3);
        let greeting = explain(&e, b"Connected to server\nWhat", "x", &settings, t);
        assert!(
            greeting.to_string().contains("did not answer in TLS"),
            "{greeting}"
        );
        assert!(greeting.to_string().contains("Connected to server"));
        match explain(&e, b"Error: server busy\n__quit__\n", "x", &settings, t) {
            ClientError::ServerSaid(reason) => assert_eq!(reason, "server busy"),
            other => panic!("{other:?}"),
        }
        // A TLS record start is not mistaken for text.
        let tls = explain(&e, &[0x15, 0x03, 0x03], "x", &settings, t);
        assert!(tls.to_string().contains("handshake failed"), "{tls}");
    }

    #[test]
    fn certificate_errors_say_what_to_do() {
        let s = TlsSettings::default();
        let unknown = certificate_error(&CertificateError::UnknownIssuer, "h", &s);
        assert_eq!(
            unknown.to_string(),
            "TLS: the server's certificate is not trusted (unknown issuer); \
             pass the server's certificate with --ca FILE"
        );
        let name = certificate_error(&CertificateError::NotValidForName, "example.com", &s);
        assert_eq!(
            name.to_string(),
            "TLS: the certificate is not valid for name \"example.com\" (use --server-name)"
        );
        assert_eq!(unknown.exit_code(), crate::client::EXIT_ERROR);
        let named = certificate_error(
            &CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("example.com").unwrap(),
                presented: vec![
                    "DnsName(\"localhost\")".into(),
                    "IpAddress(127.0.0.1)".into(),
                    "Other".into(),
                ],
            },
            "example.com",
            &s,
        );
        assert_eq!(
            named.to_string(),
            "TLS: the certificate is not valid for name \"example.com\" \
             (it names localhost, 127.0.0.1, Other; use --server-name)"
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = roots_from_pem(&empty).unwrap_err().to_string();
        assert!(err.starts_with("TLS: no certificate in --ca"), "{err}");
        let err = roots_from_pem(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("TLS: cannot read --ca"), "{err}");
    }
}
