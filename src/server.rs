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

use crate::address::AddressKey;
use crate::chat;
use crate::codec::LineConn;
use crate::config::{
    ServerConfig, ACCEPT_THREADS, ACCEPT_WAKE_LIMIT, ACCEPT_WARNING_EVERY, BUSY_WRITE_TIMEOUT,
    SESSION_SEND_BUFFER_BYTES, WRITE_TIMEOUT,
};
use crate::descriptors::{self, is_out_of_descriptors, SpareDescriptor};
use crate::metrics::{BusyCap, Metrics};
use crate::metrics_http::MetricsEndpoint;
use crate::protocol::error;
use crate::proxy_protocol::{self, ProxyError, ProxyHeader, TrustedProxies};
use crate::registration_quota;
use crate::session::{End, Services, Session};
use crate::store::{self, StoreError};
use crate::threads::{Job, SessionThreads};
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
    /// Settings that cannot work together.
    Config(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Store(e) => write!(f, "{e}"),
            ServerError::Tls(e) => write!(f, "{e}"),
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::BadAddress(addr) => write!(f, "cannot resolve the address {addr}"),
            ServerError::Config(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Store(e) => Some(e),
            ServerError::Tls(e) => Some(e),
            ServerError::Bind(_, e) => Some(e),
            ServerError::BadAddress(_) | ServerError::Config(_) => None,
        }
    }
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// Sessions running now, per source address too, and a way to reach each
/// one's socket.
///
/// The global count is atomic so the accepting thread never waits on a lock (a
/// session thread holding it while descheduled would stall the accept loop);
/// the per-address counts take a lock held for one map update.
#[derive(Default)]
struct Sessions {
    count: AtomicUsize,
    next_id: AtomicU64,
    /// Sessions per source address ([`AddressKey`]: IPv6 by /64); only
    /// addresses with at least one session are kept.
    per_address: Mutex<HashMap<AddressKey, usize>>,
    /// Each session's socket (the same descriptor its transport reads),
    /// registered once its thread is up, so shutdown can wake it.
    sockets: Mutex<HashMap<u64, Arc<TcpStream>>>,
    /// Signalled (under `sockets`) when the count drops to 0.
    all_ended: Condvar,
    /// Accept loops still running (shutdown wakes them until none is left).
    accept_loops: AtomicUsize,
    /// Where the session gauge is kept (the services' counters).
    metrics: Arc<Metrics>,
}

impl Sessions {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<TcpStream>>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn per_address(&self) -> std::sync::MutexGuard<'_, HashMap<AddressKey, usize>> {
        self.per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// The session caps a new connection must fit under.
#[derive(Debug, Clone, Copy)]
struct Caps {
    global: usize,
    /// 0: off.
    per_address: usize,
}

/// Which cap turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Global,
    Address,
    /// Out of file descriptors.
    Files,
}

/// One running session's place under the caps; released on drop.
struct SessionSlot {
    id: u64,
    address: Option<AddressKey>,
    sessions: Arc<Sessions>,
}

impl SessionSlot {
    /// Takes a slot unless `caps.global` are taken, or `caps.per_address` from
    /// this source address.
    fn claim(sessions: &Arc<Sessions>, caps: Caps, from: IpAddr) -> Result<SessionSlot, Cap> {
        let mut slot = Self::claim_global(sessions, caps.global)?;
        slot.claim_address(caps.per_address, from)?;
        Ok(slot)
    }

    /// Takes a slot under the global cap only (a trusted proxy's connection,
    /// whose client address is not known yet).
    fn claim_global(sessions: &Arc<Sessions>, global: usize) -> Result<SessionSlot, Cap> {
        sessions
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < global).then_some(n + 1)
            })
            .map_err(|_| Cap::Global)?;
        sessions.metrics.session_started();
        // From here on the slot exists, so an early return releases it.
        Ok(SessionSlot {
            id: sessions.next_id.fetch_add(1, Ordering::Relaxed),
            address: None,
            sessions: sessions.clone(),
        })
    }

    /// Counts this slot for `from` too, unless `per_address` (0: no cap) are
    /// taken from there. Once per slot.
    fn claim_address(&mut self, per_address: usize, from: IpAddr) -> Result<(), Cap> {
        debug_assert!(self.address.is_none());
        if per_address > 0 {
            let key = AddressKey::of(from);
            let mut counts = self.sessions.per_address();
            let held = counts.entry(key).or_insert(0);
            if *held >= per_address {
                return Err(Cap::Address);
            }
            *held += 1;
            self.address = Some(key);
        }
        Ok(())
    }

    fn register_socket(&self, sock: Arc<TcpStream>) {
        self.sessions.sockets().insert(self.id, sock);
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(key) = self.address {
            let mut per_address = self.sessions.per_address();
            if let Some(held) = per_address.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    per_address.remove(&key);
                }
            }
        }
        self.sessions.metrics.session_ended();
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
    caps: Caps,
    tls: Option<Arc<rustls::ServerConfig>>,
    trusted_proxies: Arc<TrustedProxies>,
    threads: SessionThreads,
    /// `GET /metrics`, when `--metrics` asked for it; stops when the server is dropped.
    metrics_endpoint: Option<MetricsEndpoint>,
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
        let db = config.db_path.to_string_lossy();
        if !store::is_postgres_url(&db) {
            for warning in store::exposed_files(&config.db_path) {
                log::warn!("{warning}");
            }
        }
        let store = store::open(&db)?;
        let mut services =
            Services::with_store(store, config.login_timeout, config.session_timeout);
        services.scram_iterations = config.scram_iterations;
        services.classic_login = config.classic_login;
        Self::bind_with(config, services)
    }

    /// Binds with services built by the caller (tests set hooks on them); the
    /// chat room is made from `config.chat`.
    pub fn bind_with(config: &ServerConfig, mut services: Services) -> Result<Server, ServerError> {
        match config.chat.check() {
            Err(why) => return Err(ServerError::Config(why)),
            Ok(Some(warning)) => log::warn!("{warning}"),
            Ok(None) => {}
        }
        services.room = chat::open_room(config.chat, services.store.chat_bus());
        services.login_grace = config.login_grace;
        services.registration = config.registration;
        services.registration_quota = registration_quota::for_store(
            services.store.as_ref(),
            config.max_registrations_per_address,
            config.login_grace,
        );
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
        let open_files = descriptors::raise_open_files_limit();
        let by_files = descriptors::fit_sessions(config.max_sessions, open_files);
        if by_files < config.max_sessions {
            log::warn!(
                "session cap lowered from {} to {by_files}: the open-files limit is {} \
                 (one per session, {} kept for the server); raise it (ulimit -n, LimitNOFILE)",
                config.max_sessions,
                open_files.unwrap_or_default(),
                descriptors::RESERVED_DESCRIPTORS
            );
        }
        let max_maps = descriptors::max_map_count();
        let global = descriptors::fit_threads(by_files, max_maps);
        if global < by_files {
            log::warn!(
                "session cap lowered from {by_files} to {global}: vm.max_map_count is {} \
                 ({} memory maps per session thread, {} kept for the server); raise it \
                 (sysctl vm.max_map_count)",
                max_maps.unwrap_or_default(),
                descriptors::MAPS_PER_SESSION_THREAD,
                descriptors::RESERVED_MAPS
            );
        }
        let metrics_endpoint = match &config.metrics {
            Some(addr) => Some(
                MetricsEndpoint::start(addr, services.metrics.clone())
                    .map_err(|e| ServerError::Bind(addr.clone(), e))?,
            ),
            None => None,
        };
        Ok(Server {
            listener,
            sessions: Arc::new(Sessions {
                accept_loops: AtomicUsize::new(ACCEPT_THREADS),
                metrics: services.metrics.clone(),
                ..Sessions::default()
            }),
            services: Arc::new(services),
            metrics_endpoint,
            caps: Caps {
                global,
                per_address: config.max_sessions_per_address,
            },
            tls,
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            threads: SessionThreads::with_policy(config.idle_threads, config.idle_thread_timeout),
        })
    }

    /// The session cap in force: the configured one, or fewer where the
    /// open-files limit cannot hold that many.
    pub fn max_sessions(&self) -> usize {
        self.caps.global
    }

    /// The address `GET /metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint.as_ref().map(MetricsEndpoint::addr)
    }

    /// The address actually listened on (port 0 picks a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts clients until [`ServerHandle::shutdown`] is called, on
    /// [`ACCEPT_THREADS`] threads blocked in `accept` on the one listener (this
    /// one among them): while one hands off, another is already waiting, so
    /// the small backlog drains even when a core is busy with sessions.
    pub fn run(&self) {
        thread::scope(|scope| {
            for n in 1..ACCEPT_THREADS {
                let spawned = thread::Builder::new()
                    .name(format!("accept-{n}"))
                    .spawn_scoped(scope, || self.accept_loop());
                if let Err(e) = spawned {
                    self.sessions.accept_loops.fetch_sub(1, Ordering::AcqRel);
                    log::warn!("cannot start another accept thread: {e}");
                }
            }
            self.accept_loop();
        });
    }

    fn accept_loop(&self) {
        // Counted from `bind` on, so a shutdown before this thread ran waits for it.
        self.accept_until_shutdown();
        self.sessions.accept_loops.fetch_sub(1, Ordering::AcqRel);
    }

    fn accept_until_shutdown(&self) {
        // Called outside the log macro: a macro skips its arguments when its
        // level is off, and the priority must be set at every log level.
        let priority = prioritise_accept_thread();
        log::debug!("accept loop: {priority}");
        let mut spare = SpareDescriptor::new();
        let mut warnings = AcceptWarnings::default();
        loop {
            let accepted = self.listener.accept();
            if self.services.is_shutting_down() {
                if let Ok((sock, _)) = accepted {
                    say_goodbye(sock, error::SHUTTING_DOWN_FRAME);
                }
                self.turn_away_waiting();
                break;
            }
            if accepted.is_ok() {
                self.services.metrics.connection_accepted();
            }
            match accepted {
                Ok((sock, peer)) => {
                    if let Err(cap) = self.hand_off(sock, peer) {
                        warnings.busy(&self.services, peer, cap);
                    }
                }
                Err(e) if is_out_of_descriptors(&e) => {
                    // Free the spare descriptor for the client that waits, so it
                    // hears why, rather than waiting in the backlog for nothing.
                    let refused = spare.lend(|| {
                        let (sock, peer) = self.listener.accept().ok()?;
                        self.services.metrics.connection_accepted();
                        say_goodbye(sock, error::SERVER_BUSY_FRAME);
                        Some(peer)
                    });
                    match refused.flatten() {
                        Some(peer) => warnings.busy(&self.services, peer, Cap::Files),
                        None => {
                            warnings.accept_failed(&e);
                            // Give sessions a moment to end rather than spin,
                            // all the more as this thread may run at real-time
                            // priority.
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                Err(e) => {
                    warnings.accept_failed(&e);
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        warnings.flush();
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
    /// Over a cap, the client hears `Error: server busy` at once.
    ///
    /// From a trusted proxy only the global slot is taken here: the client's
    /// address comes with the PROXY header, read in the session thread, which
    /// then claims the per-address slot (see [`crate::proxy_protocol`]).
    fn hand_off(&self, sock: TcpStream, peer: SocketAddr) -> Result<(), Cap> {
        let ip = peer.ip().to_canonical();
        let proxied = self.trusted_proxies.contains(ip);
        let claimed = if proxied {
            SessionSlot::claim_global(&self.sessions, self.caps.global)
        } else {
            SessionSlot::claim(&self.sessions, self.caps, ip)
        };
        let slot = match claimed {
            Ok(slot) => slot,
            Err(cap) => {
                say_goodbye(sock, error::SERVER_BUSY_FRAME);
                return Err(cap);
            }
        };
        let services = self.services.clone();
        let tls = self.tls.clone();
        let front = proxied.then_some(self.caps.per_address);
        self.threads.run(Box::new(ClientJob {
            sock,
            slot,
            services,
            tls,
            front,
        }));
        Ok(())
    }

    /// Runs the accept loop on its own thread; the handle stops it.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let metrics_addr = self.metrics_addr();
        let services = self.services.clone();
        let sessions = self.sessions.clone();
        let accept_thread = thread::Builder::new()
            .name("accept".into())
            .spawn(move || self.run())
            .expect("cannot start the accept thread");
        ServerHandle {
            addr,
            metrics_addr,
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
            metrics_addr: self.metrics_addr(),
            services: self.services.clone(),
            sessions: self.sessions.clone(),
            accept_thread: None,
        }
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }
}

/// One client's session, handed to a session thread.
struct ClientJob {
    sock: TcpStream,
    slot: SessionSlot,
    services: Arc<Services>,
    tls: Option<Arc<rustls::ServerConfig>>,
    front: Option<usize>,
}

impl Job for ClientJob {
    fn run(self: Box<Self>) {
        let ClientJob {
            sock,
            slot,
            services,
            tls,
            front,
        } = *self;
        serve_client(sock, slot, &services, tls.as_ref(), front)
    }

    /// No thread for it: the client hears `Error: server busy`, as for a cap,
    /// rather than a silent close (the slot is freed as the job drops).
    fn refuse(self: Box<Self>) {
        self.services.metrics.busy(BusyCap::Global);
        say_goodbye(self.sock, error::SERVER_BUSY_FRAME);
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

/// The accept loop's warnings. A refusal is rate-limited per source like a
/// session's warnings ([`LogLimit`](crate::log_limit::LogLimit)); accept
/// failures (no source to blame) at most one line per [`ACCEPT_WARNING_EVERY`],
/// with the count of those folded into it. A flood of connections must not
/// become a flood of log lines.
#[derive(Default)]
struct AcceptWarnings {
    failed_last: Option<Instant>,
    failed_folded: u64,
}

impl AcceptWarnings {
    fn busy(&mut self, services: &Services, peer: SocketAddr, cap: Cap) {
        services.metrics.busy(match cap {
            Cap::Global => BusyCap::Global,
            Cap::Address => BusyCap::Address,
            Cap::Files => BusyCap::Files,
        });
        let line = match cap {
            Cap::Global => format!("session cap reached: refused {peer}"),
            Cap::Address => format!(
                "per-address session cap reached for {}: refused {peer}",
                AddressKey::of(peer.ip())
            ),
            Cap::Files => format!("out of file descriptors: refused {peer}"),
        };
        services.log_limit.warn(peer.ip().to_canonical(), line);
    }

    fn accept_failed(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .failed_last
            .is_some_and(|last| now.duration_since(last) < ACCEPT_WARNING_EVERY)
        {
            self.failed_folded += 1;
            return;
        }
        self.failed_last = Some(now);
        match std::mem::take(&mut self.failed_folded) {
            0 => log::warn!("accept failed: {e}"),
            n => log::warn!("accept failed: {e} (and {n} more since the last such line)"),
        }
    }

    /// The count of failures folded since the last line, at the end.
    fn flush(&mut self) {
        if self.failed_folded > 0 {
            log::warn!(
                "{} more accept failures not logged one by one",
                self.failed_folded
            );
        }
    }
}

/// Writes a last message from the accepting thread with a short timeout (best
/// effort: the accept loop must not wait on a client), then closes.
fn say_goodbye(mut sock: TcpStream, lines: &[u8]) {
    let _ = sock.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let _ = sock.write_all(lines);
}

/// The body of a session thread: socket setup, the PROXY header from a
/// trusted proxy (`proxied`: `Some(per-address cap)`, claimed then for the
/// client's address), the TLS handshake if any, the session, and one log line
/// for how it ended.
fn serve_client(
    sock: TcpStream,
    mut slot: SessionSlot,
    services: &Services,
    tls: Option<&Arc<rustls::ServerConfig>>,
    proxied: Option<usize>,
) {
    let peer = match sock.peer_addr() {
        Ok(a) => a,
        Err(e) => {
            log::debug!("connection gone before its session started: {e}");
            return;
        }
    };
    // Replies are one write per turn; Nagle would only delay them.
    let _ = sock.set_nodelay(true);
    // Writes are bounded per turn by the transport's write deadline (see
    // `LineConn::flush`); this timeout only covers the TLS handshake's writes.
    let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
    // A peer that never reads pins at most this much of the kernel's memory.
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SESSION_SEND_BUFFER_BYTES);
    let sock = Arc::new(sock);
    slot.register_socket(sock.clone());
    // Shutdown may have begun before the socket was registered.
    if services.is_shutting_down() {
        let _ = sock.shutdown(Shutdown::Read);
    }
    let started = Instant::now();
    let peer = match proxied {
        None => peer,
        Some(per_address) => match client_behind_proxy(&sock, peer, services, started) {
            Some(client) => {
                if slot
                    .claim_address(per_address, client.ip().to_canonical())
                    .is_err()
                {
                    let mut writer = &*sock;
                    let _ = writer.write_all(error::SERVER_BUSY_FRAME);
                    let line = format!(
                        "per-address session cap reached for {}: refused {client} (via {peer})",
                        AddressKey::of(client.ip())
                    );
                    services.log_limit.warn(client.ip().to_canonical(), line);
                    return;
                }
                log::debug!("{client} comes through the proxy {peer}");
                client
            }
            None => return,
        },
    };
    let ip: IpAddr = peer.ip().to_canonical();
    let mode = if tls.is_some() { "TLS" } else { "TCP" };
    log::debug!("{peer} connected ({mode})");
    let tcp = TcpTransport::shared(sock);
    let outcome = match tls {
        None => run_session(tcp, services, ip),
        Some(config) => match tls::accept(config, tcp, started + services.login_timeout) {
            Ok(stream) => run_session(stream, services, ip),
            Err(e) => {
                services.log_limit.warn(ip, format!("{peer} {e}"));
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
            let line = format!("{peer} {mode} session of {lasted:.1}s: closed, {reason}");
            services.log_limit.warn(ip, line);
        }
        Err(_) => log::error!("{peer} {mode} session panicked; other sessions go on"),
    }
    drop(slot);
}

/// The client's address from the PROXY header a trusted proxy (`proxy`) must
/// send first, read by the login timeout; `None` (the reason logged, rate
/// limited per proxy) when there is none or it is malformed: the connection is
/// then closed without a word, since the peer is a proxy, not a client.
fn client_behind_proxy(
    sock: &TcpStream,
    proxy: SocketAddr,
    services: &Services,
    started: Instant,
) -> Option<SocketAddr> {
    match proxy_protocol::read_header(sock, started + services.login_timeout) {
        Ok(ProxyHeader::Client(client)) => Some(client),
        Ok(ProxyHeader::Local) => Some(proxy),
        Err(ProxyError::Closed) => {
            log::debug!("{proxy} closed before its PROXY header");
            None
        }
        Err(e) => {
            let line = format!("{proxy} (trusted proxy) closed: {e}");
            services.log_limit.warn(proxy.ip().to_canonical(), line);
            None
        }
    }
}

/// Runs one session over any transport; a panic inside stays inside.
fn run_session<T: Transport>(io: T, services: &Services, ip: IpAddr) -> thread::Result<End> {
    let mut conn = LineConn::new(io);
    conn.set_write_limit(services.turn_write_limit);
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
    metrics_addr: Option<SocketAddr>,
    services: Arc<Services>,
    sessions: Arc<Sessions>,
    accept_thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served, if `--metrics` asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
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
        // Wake the accept threads with connections of our own, until none is
        // left blocked in `accept` (one thread's drain of the backlog may take
        // the connection meant for another).
        let wake_until = Instant::now() + ACCEPT_WAKE_LIMIT;
        loop {
            let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_millis(200));
            if self.sessions.accept_loops.load(Ordering::Acquire) == 0
                || Instant::now() > wake_until
            {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
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
