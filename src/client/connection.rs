//! The connection: where to connect and with which timeouts ([`ClientConfig`]),
//! the TCP connect with its errors in words, and the [`Stream`] the dialogue
//! runs over, with its read deadlines (`Wire`).

use super::error::{ClientError, Result};
use super::tls::TlsSettings;
use crate::transport::{timed_out, Transport};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use crate::config::{CONNECT_TIMEOUT, REPLY_TIMEOUT};

/// Any byte stream the dialogue can run over: a TCP socket, or a TLS stream
/// wrapping it.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Host, port, timeouts, and TLS.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    /// Also bounds the whole TLS handshake.
    pub reply_timeout: Duration,
    /// `Some`: speak TLS, verifying the server as these settings say.
    pub tls: Option<TlsSettings>,
}

impl ClientConfig {
    pub fn new(host: &str, port: u16) -> Self {
        ClientConfig {
            host: host.to_string(),
            port,
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
            tls: None,
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The stream plus, when it runs over TCP, a handle on the socket so reads can be
/// bounded by a deadline whatever layer (plain or TLS) sits on top.
pub(super) struct Wire {
    pub(super) io: Box<dyn Stream>,
    pub(super) socket: Option<TcpStream>,
    pub(super) deadline: Option<Instant>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(sock), Some(deadline)) = (&self.socket, self.deadline) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            sock.set_read_timeout(Some(left))?;
        }
        match self.io.read(buf) {
            // A receive timeout shows up as EAGAIN on Unix.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

impl Transport for Wire {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// Resolves `host` and connects to the first address that answers.
pub(super) fn open_tcp(cfg: &ClientConfig) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Resolve {
            host: cfg.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, cfg.connect_timeout) {
            Ok(sock) => return Ok(sock),
            Err(e) => last_error = Some(e),
        }
    }
    let reason = match last_error {
        Some(e) => describe_connect_error(&e, cfg.connect_timeout),
        None => "the name has no address".to_string(),
    };
    Err(ClientError::Connect {
        target: cfg.target(),
        reason,
    })
}

fn describe_connect_error(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is run_server running?)".to_string()
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "no answer within {} s (wrong host or port, or a firewall?)",
            timeout.as_secs()
        ),
        _ => e.to_string(),
    }
}
