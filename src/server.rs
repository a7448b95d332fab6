//! The accept loop, the session cap, and the thread of each client.
//!
//! The accepting thread does nothing but accept and hand off, so a burst of
//! clients does not overflow the small listen backlog (8, the original design's):
//! per-connection setup (socket options, the session) runs in the client's own
//! session thread (see [`crate::threads`]); where it may, the accepting thread
//! also runs at real-time priority.
//! When [`ServerConfig::max_sessions`] are running, one more connection is told
//! `Error: server busy` by the accept loop itself, best effort, and closed without
//! a session thread.
//!
//! Each session holds a `SessionSlot`; dropping it (however the thread ends,
//! panics included) frees the slot. The slots also let [`ServerHandle::shutdown`]
//! wake every session blocked in a read, so each can tell its client
//! `Error: server shutting down`.

use crate::codec::LineConn;
use crate::config::{ServerConfig, BUSY_WRITE_TIMEOUT, WRITE_TIMEOUT};
use crate::protocol::error;
use crate::session::{End, Services, Session};
use crate::store::{StoreError, UserStore};
use crate::threads::SessionThreads;
use crate::tls::{self, TlsError};
use crate::transport::{TcpTransport, Transport};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The server could not start.
#[derive(Debug)]
pub enum ServerError {
    Store(StoreError),
    Tls(TlsError),
    Bind(String, io::Error),
    BadAddress(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Store(e) => write!(f, "{e}"),
            ServerError::Tls(e) => write!(f, "{e}"),
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::BadAddress(addr) => write!(f, "cannot resolve the address {addr}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// Sessions running now, and a way to reach each one's socket.
///
/// The count is atomic so the accepting thread never waits on a lock (a session
/// thread holding it while descheduled would stall the accept loop).
#[derive(Default)]
struct Sessions {
    count: AtomicUsize,
    next_id: AtomicU64,
    /// A clone of each session's socket, registered once its thread is up.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    /// Signalled (under `sockets`) when the count drops to 0.
    all_ended: Condvar,
}

impl Sessions {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One running session's place under the cap; released on drop.
struct SessionSlot {
    id: u64,
    sessions: Arc<Sessions>,
}

impl SessionSlot {
    /// Takes a slot unless `max` are taken.
    fn claim(sessions: &Arc<Sessions>, max: usize) -> Option<SessionSlot> {
        sessions
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(SessionSlot {
            id: sessions.next_id.fetch_add(1, Ordering::Relaxed),
            sessions: sessions.clone(),
        })
    }

    fn register_socket(&self, sock: TcpStream) {
        self.sessions.sockets().insert(self.id, sock);
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        // Under the lock, so a shutdown waiting for the count cannot miss it.
        let mut sockets = self.sessions.sockets();
        sockets.remove(&self.id);
        if self.sessions.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.sessions.all_ended.notify_all();
        }
    }
}

/// A bound server, ready to accept.
pub struct Server {
    listener: TcpListener,
    services: Arc<Services>,
    sessions: Arc<Sessions>,
    max_sessions: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    threads: SessionThreads,
}

/// Binds `addr` with an explicit listen backlog (std's `bind` always asks for 128).
fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must not fail with "address in use" because of old
    // connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

impl Server {
    /// Opens the store and binds the listening socket.
    pub fn bind(config: &ServerConfig) -> Result<Server, ServerError> {
        let store = UserStore::open(&config.db_path)?;
        let mut services = Services::new(store, config.login_timeout, config.session_timeout);
        services.scram_iterations = config.scram_iterations;
        services.classic_login = config.classic_login;
        Self::bind_with(config, services)
    }

    /// Binds with services built by the caller (tests set hooks on them).
    pub fn bind_with(config: &ServerConfig, services: Services) -> Result<Server, ServerError> {
        let wanted = format!("{}:{}", config.host, config.port);
        let addr = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|_| ServerError::BadAddress(wanted.clone()))?
            .next()
            .ok_or_else(|| ServerError::BadAddress(wanted.clone()))?;
        let tls = match &config.tls {
            Some(files) => Some(tls::server_config(files).map_err(ServerError::Tls)?),
            None => None,
        };
        let listener = listen(addr, config.backlog).map_err(|e| ServerError::Bind(wanted, e))?;
        Ok(Server {
            listener,
            services: Arc::new(services),
            sessions: Arc::new(Sessions::default()),
            max_sessions: config.max_sessions,
            tls,
            threads: SessionThreads::new(),
        })
    }

    /// The address actually listened on (port 0 picks a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts clients until [`ServerHandle::shutdown`] is called.
    pub fn run(&self) {
        log::info!("accept loop: {}", prioritise_accept_thread());
        for stream in self.listener.incoming() {
            if self.services.is_shutting_down() {
                if let Ok(sock) = stream {
                    say_goodbye(sock, error::SHUTTING_DOWN_FRAME);
                }
                self.turn_away_waiting();
                break;
            }
            match stream {
                Ok(sock) => self.hand_off(sock),
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // Out of file descriptors (or any failure that repeats):
                    // give sessions a moment to end rather than spin, all the
                    // more as this thread may have real-time priority.
                    let pause = match e.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE) => 10,
                        _ => 1,
                    };
                    thread::sleep(Duration::from_millis(pause));
                }
            }
        }
    }

    /// At shutdown: connections still waiting in the backlog hear why they are
    /// closed, like every connected client.
    fn turn_away_waiting(&self) {
        if self.listener.set_nonblocking(true).is_err() {
            return;
        }
        while let Ok((sock, _)) = self.listener.accept() {
            let _ = sock.set_nonblocking(false);
            say_goodbye(sock, error::SHUTTING_DOWN_FRAME);
        }
    }

    /// Takes a slot and passes the socket to a session thread; all the accepting
    /// thread does per client, so it is back in `accept` within microseconds.
    fn hand_off(&self, sock: TcpStream) {
        let Some(slot) = SessionSlot::claim(&self.sessions, self.max_sessions) else {
            refuse_busy(sock);
            return;
        };
        let services = self.services.clone();
        let tls = self.tls.clone();
        self.threads.run(Box::new(move || {
            serve_client(sock, slot, &services, tls.as_ref())
        }));
    }

    /// Runs the accept loop on its own thread; the handle stops it.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let services = self.services.clone();
        let sessions = self.sessions.clone();
        let accept_thread = thread::Builder::new()
            .name("accept".into())
            .spawn(move || self.run())
            .expect("cannot start the accept thread");
        ServerHandle {
            addr,
            services,
            sessions,
            accept_thread: Some(accept_thread),
        }
    }

    /// A handle that can stop this server from another thread (a signal handler),
    /// while [`run`](Self::run) keeps the current thread.
    pub fn stopper(&self) -> ServerHandle {
        ServerHandle {
            addr: self.local_addr(),
            services: self.services.clone(),
            sessions: self.sessions.clone(),
            accept_thread: None,
        }
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }
}

/// Makes the calling (accepting) thread run as soon as a connection wakes it.
///
/// With a listen backlog of 8, busy session threads that keep the accept loop
/// off the CPU for a couple of milliseconds let 9 handshakes queue up, and the
/// kernel then drops the next ones (with SYN cookies on, some clients are left
/// believing they are connected, waiting for a greeting that never comes).
/// Measured at 32 connections: 50 to 90 such overflows per 5 s with an ordinary
/// thread, none with this. The thread only blocks in `accept` and hands off, so
/// a high priority costs the others next to nothing.
///
/// Best effort, Linux only: real-time priority 1 (`SCHED_FIFO`) where the
/// process may have it (root, CAP_SYS_NICE or RLIMIT_RTPRIO), else a short
/// scheduler slice (0.1 ms; EEVDF, kernel 6.12 and later), else nothing.
fn prioritise_accept_thread() -> &'static str {
    #[cfg(target_os = "linux")]
    {
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: plain system call on the calling thread (0) with a valid param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) } == 0 {
            return "real-time priority (SCHED_FIFO 1)";
        }
        /// `struct sched_attr` of sched_setattr(2).
        #[repr(C)]
        #[derive(Default)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            // SCHED_OTHER; for it, `runtime` is the slice asked for (0.1 ms).
            runtime: 100_000,
            ..SchedAttr::default()
        };
        // SAFETY: a valid, fully initialised sched_attr for the calling thread (0).
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if rc == 0 {
            return "short scheduler slice (0.1 ms)";
        }
    }
    "ordinary scheduling"
}

/// `Error: server busy`, written by the accepting thread.
fn refuse_busy(sock: TcpStream) {
    log::warn!(
        "session cap reached: refusing {}",
        sock.peer_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    say_goodbye(sock, error::SERVER_BUSY_FRAME);
}

/// Writes a last message from the accepting thread with a short timeout (best
/// effort: the accept loop must not wait on a client), then closes.
fn say_goodbye(mut sock: TcpStream, lines: &[u8]) {
    let _ = sock.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let _ = sock.write_all(lines);
}

/// The body of a session thread: socket setup, the TLS handshake if any, the
/// session, and one log line for how it ended.
fn serve_client(
    sock: TcpStream,
    slot: SessionSlot,
    services: &Services,
    tls: Option<&Arc<rustls::ServerConfig>>,
) {
    let peer = match sock.peer_addr() {
        Ok(a) => a,
        Err(e) => {
            log::debug!("connection gone before its session started: {e}");
            return;
        }
    };
    let ip: IpAddr = peer.ip().to_canonical();
    // Replies are one write per turn; Nagle would only delay them.
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
    if let Ok(clone) = sock.try_clone() {
        slot.register_socket(clone);
    }
    // Shutdown may have begun before the socket was registered.
    if services.is_shutting_down() {
        let _ = sock.shutdown(Shutdown::Read);
    }
    let mode = if tls.is_some() { "TLS" } else { "TCP" };
    log::debug!("{peer} connected ({mode})");
    let started = Instant::now();
    let tcp = TcpTransport::new(sock);
    let outcome = match tls {
        None => run_session(tcp, services, ip),
        Some(config) => match tls::accept(config, tcp, started + services.login_timeout) {
            Ok(stream) => run_session(stream, services, ip),
            Err(e) => {
                log::warn!("{peer} {e}");
                return;
            }
        },
    };
    // One line per connection, written when it ends (it then says how).
    let lasted = started.elapsed().as_secs_f64();
    match outcome {
        Ok(End::Quit) => log::info!("{peer} {mode} session of {lasted:.1}s: quit"),
        Ok(End::Gone(why)) => log::info!("{peer} {mode} session of {lasted:.1}s: {why}"),
        Ok(End::Fatal(reason)) => {
            log::warn!("{peer} {mode} session of {lasted:.1}s: closed, {reason}")
        }
        Err(_) => log::error!("{peer} {mode} session panicked; other sessions go on"),
    }
    drop(slot);
}

/// Runs one session over any transport; a panic inside stays inside.
fn run_session<T: Transport>(io: T, services: &Services, ip: IpAddr) -> thread::Result<End> {
    let conn = LineConn::new(io);
    panic::catch_unwind(AssertUnwindSafe(|| Session::new(conn, services, ip).run()))
}

/// Reads the number of running sessions (for monitoring and tests).
#[derive(Clone)]
pub struct SessionGauge(Arc<Sessions>);

impl SessionGauge {
    pub fn get(&self) -> usize {
        self.0.count()
    }
}

/// Controls a running server: its address, and a graceful stop.
pub struct ServerHandle {
    addr: SocketAddr,
    services: Arc<Services>,
    sessions: Arc<Sessions>,
    accept_thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Sessions running now.
    pub fn session_count(&self) -> usize {
        self.sessions.count()
    }

    /// A handle to read the session count from another thread.
    pub fn session_gauge(&self) -> SessionGauge {
        SessionGauge(self.sessions.clone())
    }

    /// Stops accepting, tells every session to end (each says
    /// `Error: server shutting down` at its next read; work in progress, such
    /// as a registration being committed, finishes first), and waits up to
    /// `grace` for them. Returns the number of sessions still running.
    pub fn shutdown(&mut self, grace: Duration) -> usize {
        if !self.services.shutting_down.swap(true, Ordering::AcqRel) {
            log::info!("shutting down");
        }
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_millis(200));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let deadline = Instant::now() + grace;
        let mut sockets = self.sessions.sockets();
        for sock in sockets.values() {
            // The blocked read returns at once; writing still works.
            let _ = sock.shutdown(Shutdown::Read);
        }
        while self.sessions.count() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sockets = self
                .sessions
                .all_ended
                .wait_timeout(sockets, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.sessions.count()
    }
}

/// Where to connect to wake a listener bound to `addr` (an unspecified address
/// such as 0.0.0.0 is reached through loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        });
    }
    a
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.accept_thread.is_some() {
            self.shutdown(Duration::from_secs(2));
        }
    }
}
