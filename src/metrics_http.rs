//! The metrics endpoint: `GET /metrics` over HTTP/1.x, on a thread of its own.
//!
//! Bounded like the protocol port: at most [`METRICS_MAX_CONNECTIONS`] requests
//! served at once (one more hears `503` and is closed), the request head must
//! arrive whole within [`METRICS_REQUEST_TIMEOUT`] and fit in
//! [`METRICS_MAX_REQUEST_BYTES`], answers are written under a timeout, and every
//! connection is closed after its one answer. The request is parsed by
//! `httparse` (the parser under hyper); this file only bounds the reading.
//! Anything but `GET /metrics` (or `HEAD`) is answered politely: `404` for
//! another path, `405` with `Allow` for another method, `400` for what is not
//! HTTP, `431` for a head too large.
//!
//! Sessions never wait for it: it reads atomics ([`Metrics::render`]).

use crate::config::{
    LINGER_MAX_BYTES, LINGER_TIME, METRICS_MAX_CONNECTIONS, METRICS_MAX_HEADERS,
    METRICS_MAX_REQUEST_BYTES, METRICS_REFUSAL_LINGER, METRICS_REQUEST_TIMEOUT,
    METRICS_WRITE_TIMEOUT,
};
use crate::metrics::Metrics;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics endpoint; [`stop`](Self::stop) (or drop) ends its thread.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves `metrics` on a thread of its own.
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> io::Result<MetricsEndpoint> {
        let resolved = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let listener = TcpListener::bind(resolved)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(listener, metrics, stop))?;
        Ok(MetricsEndpoint {
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address listened on (port 0 picks a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (requests being answered finish on their own threads).
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stopping.store(true, Ordering::Release);
            // Wake the blocked accept.
            let _ = TcpStream::connect_timeout(&self.addr, METRICS_WRITE_TIMEOUT);
            let _ = t.join();
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests being answered now; released on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, stopping: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            break;
        }
        let Ok(mut sock) = conn else {
            // Out of descriptors or the like: do not spin.
            thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let _ = sock.set_write_timeout(Some(METRICS_WRITE_TIMEOUT));
        let taken = active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < METRICS_MAX_CONNECTIONS).then_some(n + 1)
        });
        if taken.is_err() {
            let _ = respond(&mut sock, 503, "Service Unavailable", &[], "busy\n", true);
            // Short: this is the accepting thread, and the endpoint is full anyway.
            close_gently(sock, METRICS_REFUSAL_LINGER);
            continue;
        }
        let slot = Slot(active.clone());
        let metrics = metrics.clone();
        let spawned = thread::Builder::new()
            .name("metrics-request".into())
            .spawn(move || {
                let _slot = slot;
                serve(sock, &metrics);
            });
        if let Err(e) = spawned {
            log::warn!("metrics: cannot start a request thread: {e}");
        }
    }
}

/// What the request head said, once parsed.
enum Head {
    Request {
        method: String,
        path: String,
    },
    Malformed,
    TooLarge,
    /// The peer left or was too slow: nothing to answer.
    Gone,
}

/// Reads the request head within the deadline and the size cap.
fn read_head(sock: &mut TcpStream) -> Head {
    let deadline = Instant::now() + METRICS_REQUEST_TIMEOUT;
    let mut buf = vec![0u8; METRICS_MAX_REQUEST_BYTES];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return Head::Gone;
        }
        match sock.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => filled += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; METRICS_MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                return Head::Request {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                }
            }
            Ok(httparse::Status::Partial) if filled == buf.len() => return Head::TooLarge,
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
            Err(_) => return Head::Malformed,
        }
    }
}

fn serve(mut sock: TcpStream, metrics: &Metrics) {
    let _ = match read_head(&mut sock) {
        Head::Gone => return,
        Head::Malformed => respond(&mut sock, 400, "Bad Request", &[], "bad request\n", true),
        Head::TooLarge => respond(
            &mut sock,
            431,
            "Request Header Fields Too Large",
            &[],
            "request too large\n",
            true,
        ),
        Head::Request { method, path } => {
            // The query string, if any, is ignored (Prometheus sends none).
            let path = path.split('?').next().unwrap_or_default();
            let head_only = method == "HEAD";
            if path != "/metrics" {
                respond(
                    &mut sock,
                    404,
                    "Not Found",
                    &[],
                    "not found: try GET /metrics\n",
                    !head_only,
                )
            } else if method != "GET" && !head_only {
                let allow = [("Allow", "GET, HEAD")];
                respond(
                    &mut sock,
                    405,
                    "Method Not Allowed",
                    &allow,
                    "method not allowed\n",
                    true,
                )
            } else {
                let text = metrics.render();
                let ctype = [("Content-Type", TEXT_FORMAT)];
                respond(&mut sock, 200, "OK", &ctype, &text, !head_only)
            }
        }
    };
    close_gently(sock, LINGER_TIME);
}

/// Ends the answer, then reads what the peer still sends (bounded in time and
/// bytes) before closing: closing with unread input would reset the
/// connection, and a reset can destroy the answer before the peer reads it.
fn close_gently(mut sock: TcpStream, linger: Duration) {
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + linger;
    let mut drained = 0;
    let mut buf = [0u8; 1024];
    while drained < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Writes one whole answer (`Connection: close`); the body only if `with_body`.
fn respond(
    sock: &mut TcpStream,
    code: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(name, _)| *name == "Content-Type") {
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if with_body {
        out.push_str(body);
    }
    sock.write_all(out.as_bytes())?;
    sock.flush()
}
