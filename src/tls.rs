//! Optional TLS for the server (rustls with the ring provider; no OpenSSL).
//!
//! The protocol runs unchanged inside TLS. The stream type is chosen at the edge:
//! [`accept`] turns an accepted [`TcpTransport`] into a [`TlsTransport`], and the
//! session runs over either without knowing which. The read deadline still lives
//! on the TCP socket underneath, so timeouts and line limits hold exactly as in
//! plain TCP, the handshake included.
//!
//! [`ensure_self_signed`] makes (once) and reuses a self-signed certificate for
//! demos, naming `localhost`, `127.0.0.1` and the listening host.
//!
//! Private keys: a new one is written only into a file this start creates
//! (`O_EXCL`, mode 0600 from the first byte), never into a file someone may have
//! planted; and no key (self-signed or `--tls-key`) is used while its group or
//! others may read or write it: the server refuses to start and names the file
//! and the fix, as ssh does.

use crate::config::{TlsFiles, PLAIN_CLIENT_PROBE, SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE};
use crate::transport::{SplitWriter, TcpTransport, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConnection, StreamOwned};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A TLS stream over a deadline-aware TCP socket, splittable for chat mode.
///
/// rustls keeps one connection state for both directions, so it cannot be cut
/// in two halves like a socket. Here the state sits behind a mutex that is
/// held only to move bytes in and out of it, never across socket I/O: a read
/// takes raw bytes from the socket with no lock held, then locks to decrypt;
/// a write locks to encrypt, unlocks, then writes the records. Chat's writer
/// thread ([`SplitWriter`]) does the same through a socket clone, so a member
/// that stops reading blocks only its own writer, never its session thread.
/// TLS bytes a read produces (a key update's answer) stay queued in the state
/// and leave with the next write, whichever thread makes it, so records reach
/// the socket in the order they were made.
pub struct TlsTransport {
    state: Arc<Mutex<ServerConnection>>,
    tcp: TcpTransport,
    /// Raw bytes read from the socket, not yet handed to rustls.
    scratch: Box<[u8]>,
}

/// Raw bytes taken from the socket per read: one maximal line and then some.
const TLS_READ_CHUNK: usize = 4096;

fn lock(state: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Encrypts `plain` into records appended to `wire`.
fn seal(conn: &mut ServerConnection, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
    let mut rest = plain;
    loop {
        while conn.wants_write() {
            conn.write_tls(wire)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        let n = conn.writer().write(rest)?;
        if n == 0 {
            return Err(io::Error::other("TLS send buffer full"));
        }
        rest = &rest[n..];
    }
}

impl TlsTransport {
    fn new(conn: ServerConnection, tcp: TcpTransport) -> Self {
        TlsTransport {
            state: Arc::new(Mutex::new(conn)),
            tcp,
            scratch: vec![0; TLS_READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match lock(&self.state).reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext waiting: more records from the socket, lock released.
            let n = self.tcp.read(&mut self.scratch)?;
            if n == 0 {
                return Ok(0);
            }
            let mut conn = lock(&self.state);
            let mut records = &self.scratch[..n];
            while !records.is_empty() {
                conn.read_tls(&mut records)?;
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut wire = Vec::with_capacity(buf.len() + 64);
        seal(&mut lock(&self.state), buf, &mut wire)?;
        self.tcp.write_all(&wire)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Transport for TlsTransport {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.tcp.set_deadline(deadline);
    }

    fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.tcp.set_write_deadline(deadline);
    }

    fn close(&mut self) {
        let mut wire = Vec::new();
        {
            let mut conn = lock(&self.state);
            conn.send_close_notify();
            let _ = seal(&mut conn, &[], &mut wire);
        }
        // Best effort: the peer may be gone already.
        let _ = self.tcp.write_all(&wire);
        self.tcp.close();
    }

    fn split_writer(&mut self) -> io::Result<Box<dyn SplitWriter>> {
        Ok(Box::new(TlsSplitWriter {
            state: self.state.clone(),
            sock: self.tcp.shared_socket(),
        }))
    }
}

/// The TLS write half: encrypt under the lock, write the records without it.
struct TlsSplitWriter {
    state: Arc<Mutex<ServerConnection>>,
    /// The session's socket, shared (no second descriptor per chat member).
    sock: Arc<TcpStream>,
}

impl SplitWriter for TlsSplitWriter {
    fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        seal(&mut lock(&self.state), plain, wire)
    }
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// TLS could not be set up.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider of every TLS config in this project.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server config (TLS 1.3 and 1.2) from PEM files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    check_private(&files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect())
        .map_err(|e| {
            TlsError(format!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "no certificate in {}",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError(format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}

/// A self-signed certificate kept beside the database.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub files: TlsFiles,
    /// SHA-256 of the certificate (DER), as colon-separated uppercase hex.
    pub fingerprint: String,
    /// True if this start made it; false if an earlier one did.
    pub created: bool,
}

/// Makes, at first start, a self-signed certificate and key in `dir` naming
/// `localhost`, `127.0.0.1` and `host`; later starts reuse them. The key file is
/// readable by its owner only.
pub fn ensure_self_signed(dir: &Path, host: &str) -> Result<SelfSigned, TlsError> {
    let files = TlsFiles {
        cert: dir.join(SELF_SIGNED_CERT_FILE),
        key: dir.join(SELF_SIGNED_KEY_FILE),
    };
    let created = !(files.cert.exists() && files.key.exists());
    if !created {
        check_private(&files.key)?;
    }
    if created {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError(format!("cannot make a self-signed certificate: {e}")))?;
        // Both files are new: a leftover or planted one is never written into.
        write_new(
            &files.key,
            made.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_new(&files.cert, made.cert.pem().as_bytes(), 0o644)?;
    }
    let der = CertificateDer::from_pem_file(&files.cert)
        .map_err(|e| TlsError(format!("cannot read {}: {e}", files.cert.display())))?;
    Ok(SelfSigned {
        fingerprint: fingerprint(&der),
        files,
        created,
    })
}

/// Creates `path` (it must not exist: `O_EXCL`, which also refuses a symlink)
/// with `mode` from its creation on, and writes `bytes` into it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(path).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    result.map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => TlsError(format!(
            "{} already exists (left from an earlier setup, or planted): it is not \
             written into; remove it, or give both files with --tls-cert and --tls-key",
            path.display()
        )),
        _ => TlsError(format!("cannot write {}: {e}", path.display())),
    })
}

/// Refuses a private key file its group or others may read or write.
pub fn check_private(key: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(key)
            .map_err(|e| TlsError(format!("cannot read {}: {e}", key.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError(format!(
                "private key {} is open to others (mode {mode:04o}): a key others can \
                 read or write is not a secret; fix it with: chmod 600 {}",
                key.display(),
                key.display()
            )));
        }
    }
    Ok(())
}

/// SHA-256 of a DER certificate, as `AB:CD:...` (the form `openssl x509
/// -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a TLS connection did not become a session.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer spoke plain text (or said nothing) on the TLS port; it was told so.
    PlainClient,
    /// The peer left before a handshake began.
    Closed,
    TimedOut,
    Failed(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::PlainClient => f.write_str("plain-text client on the TLS port"),
            HandshakeError::Closed => f.write_str("closed before the TLS handshake"),
            HandshakeError::TimedOut => f.write_str("TLS handshake timed out"),
            HandshakeError::Failed(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Runs the TLS handshake on an accepted socket, within `deadline`.
///
/// A TLS client speaks first. A plain-text client waits for the greeting, or sends
/// a line: if the first byte is not a TLS handshake record, or nothing comes within
/// [`PLAIN_CLIENT_PROBE`], it is told `Error: TLS required` in plain text.
pub fn accept(
    config: &Arc<rustls::ServerConfig>,
    mut tcp: TcpTransport,
    deadline: Instant,
) -> Result<TlsTransport, HandshakeError> {
    let probe_deadline = deadline.min(Instant::now() + PLAIN_CLIENT_PROBE);
    tcp.set_deadline(Some(probe_deadline));
    match tcp.peek_byte() {
        Ok(Some(TLS_HANDSHAKE_RECORD)) => {}
        Ok(None) => return Err(HandshakeError::Closed),
        Ok(Some(_)) => return Err(tell_plain_client(tcp)),
        Err(e) if e.kind() == io::ErrorKind::TimedOut && probe_deadline < deadline => {
            return Err(tell_plain_client(tcp))
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HandshakeError::TimedOut),
        Err(e) => return Err(HandshakeError::Failed(e)),
    }
    tcp.set_deadline(Some(deadline));
    let conn = ServerConnection::new(config.clone())
        .map_err(|e| HandshakeError::Failed(io::Error::other(e)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            return Err(match e.kind() {
                io::ErrorKind::TimedOut => HandshakeError::TimedOut,
                io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
                _ => HandshakeError::Failed(e),
            });
        }
    }
    let (conn, tcp) = stream.into_parts();
    Ok(TlsTransport::new(conn, tcp))
}

fn tell_plain_client(mut tcp: TcpTransport) -> HandshakeError {
    let _ = tcp.write_all(crate::protocol::error::TLS_REQUIRED_FRAME);
    tcp.close();
    HandshakeError::PlainClient
}
