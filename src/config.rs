//! Defaults and limits, in one place.
//!
//! Every number the server or the client relies on is a named constant here, so
//! that a reader can find (and a deployer can change) each limit without hunting
//! through the code. `run_server` and `run_client` take these as the defaults of
//! their flags; each flag can also be set by an environment variable.

use crate::proxy_protocol::TrustedProxies;
use std::path::PathBuf;
use std::time::Duration;

/// Address the server binds and the client connects to by default.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The original design's port.
pub const DEFAULT_PORT: u16 = 7886;
/// SQLite file holding the `USERS` table.
pub const DEFAULT_DB_PATH: &str = "users.db";
/// Listen backlog of the original design (std's `TcpListener::bind` would use 128).
pub const DEFAULT_BACKLOG: i32 = 8;
/// Sessions served at once; one more hears `Error: server busy`.
pub const DEFAULT_MAX_SESSIONS: usize = 1024;
/// Sessions served at once from one source address (IPv6: one /64), logged in
/// or not; one more hears `Error: server busy`. 0 turns this cap off.
pub const DEFAULT_MAX_SESSIONS_PER_ADDRESS: usize = 64;
/// The whole part of a session before login (connect to `Access granted!`, and
/// again from `logout`) lasts at most this long, however often the client replies.
pub const DEFAULT_LOGIN_GRACE: Duration = Duration::from_secs(120);
/// Deadline for each reply line before login.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for each reply line once logged in.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest line, in bytes, not counting the LF or a CR right before it.
pub const MAX_LINE_BYTES: usize = 1024;
/// Tries at a repeated prompt (username or password at register / change_password).
pub const MAX_PROMPT_TRIES: u32 = 3;
/// How long one write may block before the peer is given up on (a client that
/// never reads must not pin a thread).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The total time one turn's output may take to be written: a peer that stops
/// reading loses its session after this, however the writes trickle.
pub const TURN_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Kernel send buffer of a session's socket (`SO_SNDBUF`; Linux doubles it for
/// its bookkeeping). A turn's output is a few hundred bytes, so this bounds what
/// a peer that never reads can pin in the server's kernel without slowing anyone.
pub const SESSION_SEND_BUFFER_BYTES: usize = 32 * 1024;
/// Write timeout for the best-effort `Error: server busy` sent by the accept loop.
pub const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Threads blocked in `accept` on the listener: while one hands a client off,
/// the next is already waiting (see `server.rs`).
pub const ACCEPT_THREADS: usize = 2;
/// At shutdown, how long the accept threads are woken (by connecting to the
/// listener) until every one has seen the shutdown.
pub const ACCEPT_WAKE_LIMIT: Duration = Duration::from_secs(2);
/// The accept loop writes at most one warning of a kind (refused, accept
/// failed) this often, with the count of those folded into it.
pub const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(1);
/// At close, how long and how much of the peer's unread input is drained so the
/// goodbye lines are not destroyed by a reset.
pub const LINGER_TIME: Duration = Duration::from_millis(200);
pub const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Stack of each session thread: sessions are shallow, and thousands of idle ones
/// should cost little memory.
pub const SESSION_STACK_BYTES: usize = 256 * 1024;
/// Session threads kept waiting for a next client at most, and how long each
/// waits before it exits (see `threads.rs`).
pub const MAX_IDLE_THREADS: usize = 64;
pub const IDLE_THREAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Registration quota: acknowledged registrations per source address (IPv6:
/// one /64) within [`REGISTRATION_QUOTA_SPAN`]. 0 turns it off.
pub const DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS: usize = 100;
/// Registration quota: the window it counts over.
pub const REGISTRATION_QUOTA_SPAN: Duration = Duration::from_secs(600);
/// Registration quota: addresses kept in memory at most.
pub const REGISTRATION_QUOTA_MAX_KEYS: usize = 100_000;

/// Metrics endpoint: connections served at once; one more hears 503.
pub const METRICS_MAX_CONNECTIONS: usize = 4;
/// Metrics endpoint: the whole request (line and headers) must arrive within this.
pub const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Metrics endpoint: write timeout of the answer.
pub const METRICS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Metrics endpoint: how long the accepting thread drains a refused (503)
/// connection's request before closing, so the refusal is not lost to a reset.
pub const METRICS_REFUSAL_LINGER: Duration = Duration::from_millis(50);
/// Metrics endpoint: largest request head (line and headers) read, in bytes.
pub const METRICS_MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Metrics endpoint: most headers parsed in one request.
pub const METRICS_MAX_HEADERS: usize = 32;
/// Metrics: upper bounds (seconds) of the `dccn_login_seconds` histogram buckets.
pub const LOGIN_SECONDS_BUCKETS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

/// PostgreSQL store: connections in the pool at most (each session thread
/// takes one per query, so this bounds the database's load from one server).
pub const PG_POOL_MAX_CONNECTIONS: u32 = 16;
/// PostgreSQL store: connections kept open while idle.
pub const PG_POOL_MIN_IDLE: u32 = 2;
/// PostgreSQL store: longest wait for a new connection, and for a pooled one.
pub const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL store: `lock_timeout` and `statement_timeout` of every
/// connection (the spec's "at most 5 s", then `Server error, try again later`).
pub const PG_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
pub const PG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the SQLite database when another process holds its lock.
pub const STORE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// On a TLS port, a client that sends no TLS handshake within this time is taken
/// for a plain-text client (which waits for the greeting) and told so.
pub const PLAIN_CLIENT_PROBE: Duration = Duration::from_secs(1);
/// Names of the `--tls-self-signed` files, made in the database's folder.
pub const SELF_SIGNED_CERT_FILE: &str = "server-cert.pem";
pub const SELF_SIGNED_KEY_FILE: &str = "server-key.pem";

/// Username rule: length in characters.
pub const USERNAME_MAX_CHARS: usize = 32;
/// Password rule: minimum length in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;

/// Throttling: consecutive failures of one (username, address) pair before its window.
pub const PAIR_FREE_FAILURES: u32 = 5;
/// Throttling: failures from one address, over all names, before its window.
pub const ADDR_FREE_FAILURES: u32 = 20;
/// Throttling: the per-address counter looks back this far.
pub const ADDR_FAILURE_SPAN: Duration = Duration::from_secs(600);
/// Throttling: first window, doubled with each further checked failure.
pub const THROTTLE_BASE_WINDOW: Duration = Duration::from_secs(1);
/// Throttling: the window never grows past this.
pub const THROTTLE_MAX_WINDOW: Duration = Duration::from_secs(300);
/// Throttling: keys kept in memory at most (expired keys go first, then the
/// oldest with no open window; a key with an open window is never dropped).
pub const THROTTLE_MAX_KEYS: usize = 100_000;
/// Throttling: how long a try waits for tries in flight (allowed, not yet
/// settled) whose outcome decides it: one that could only be refused because
/// they might fail (no window open) waits for them to settle, then is decided
/// again. A check takes milliseconds; past this the try is refused unchecked,
/// as throttled, and not counted. Queueing, not a punishment: a try that no
/// try in flight could refuse never waits.
pub const THROTTLE_IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);
/// Shared throttling (in the database, PostgreSQL): the first pause before a
/// try kept waiting by tries in flight asks again, doubled after each ask up
/// to [`THROTTLE_BUSY_PAUSE_MAX`] (the database cannot wake a waiter, so it
/// asks again; in memory a waiter is woken when a try settles instead).
pub const THROTTLE_BUSY_PAUSE_MIN: Duration = Duration::from_millis(5);
pub const THROTTLE_BUSY_PAUSE_MAX: Duration = Duration::from_millis(50);
/// Shared throttling (PostgreSQL): a try still pending after this long is
/// taken as abandoned (its server died before settling it), so it stops
/// counting as a failure to come. A try settles within the store timeout.
pub const PG_THROTTLE_PENDING_STALE: Duration = Duration::from_secs(60);
/// Shared registration quota (PostgreSQL): a reservation older than the login
/// grace plus this was left by a server that died (a live registration ends
/// within the grace, which covers everything before login, plus the store's
/// timeouts and the password hashing), so it stops counting. With the default
/// grace: 3 minutes.
pub const PG_QUOTA_STALE_AFTER_GRACE: Duration = Duration::from_secs(60);

/// Logs: characters of a name (escaped) one log line shows at most.
pub const LOG_NAME_MAX_CHARS: usize = 48;
/// Logs: warnings written per source address (IPv6 by /64) per window; the rest
/// are folded into one summary line.
pub const LOG_WARN_BURST: u32 = 10;
pub const LOG_WARN_WINDOW: Duration = Duration::from_secs(60);
/// Logs: sources whose warnings are counted apart at most (the rest share one count).
pub const LOG_LIMIT_MAX_SOURCES: usize = 10_000;
/// How often a session end looks through every source for summaries due
/// (a source gone quiet still has its folded count told).
pub const LOG_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// SCRAM-SHA-256: the default PBKDF2 iteration count (RFC 7677 section 4's floor),
/// for new rows and for the mock answers to unknown users.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
/// SCRAM: counts below this are a downgrade (server refuses to start, client refuses).
pub const SCRAM_MIN_ITERATIONS: u32 = 4096;
/// SCRAM: counts above this are a client-side denial of service.
pub const SCRAM_MAX_ITERATIONS: u32 = 10_000_000;
/// SCRAM: longest client nonce, in characters (all printable ASCII).
pub const SCRAM_C_NONCE_MAX_CHARS: usize = 255;
/// SCRAM: random bytes in a server or client nonce (24 base64 characters).
pub const SCRAM_NONCE_BYTES: usize = 18;

/// Client: longest wait for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Client: longest wait for the server's next line after a reply. The server
/// answers at once (its slowest step is a durable commit), so this only catches
/// a dead or wrong peer; it is not the time a person has to type.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Client: display lines accepted between two prompts; past this the server is
/// taken for a broken or hostile peer (its lines are kept until the prompt).
pub const MAX_DISPLAY_LINES_PER_TURN: usize = 1000;

/// The certificate chain and private key files to serve TLS with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Chat: members in the room at once; one more hears `Chat is full, try again later`.
pub const DEFAULT_CHAT_MAX_MEMBERS: usize = 64;
/// Chat: tokens refilled per second in each session's bucket (lines per second).
pub const DEFAULT_CHAT_RATE: f64 = 5.0;
/// Chat: bucket size, the longest burst of lines a session may send.
pub const DEFAULT_CHAT_BURST: u32 = 10;
/// Chat: lines waiting for one member's writer; one more makes it too slow.
pub const DEFAULT_CHAT_QUEUE: usize = 1024;
/// Chat: bytes the server adds around a text at most, kept free in every line
/// (`[private to <32-char name>] ` is 46), so the text limit is the line limit
/// less this (960 bytes).
pub const CHAT_PREFIX_RESERVE: usize = 64;
/// Chat: the longest message text, in UTF-8 bytes.
pub const CHAT_MAX_TEXT_BYTES: usize = MAX_LINE_BYTES - CHAT_PREFIX_RESERVE;
/// Chat: the queue must hold at least max members + this many lines (a join
/// notice from everyone plus a `/who` list and a few answers).
pub const CHAT_QUEUE_MIN_OVER_MEMBERS: usize = 8;
/// Chat: how long a leaving or dropped member's writer may still try to hand it
/// its last lines (`Error: too slow`, `__quit__`) before the socket is shut.
pub const CHAT_CLOSING_GRACE: Duration = Duration::from_secs(5);
/// Chat: a member's writer blocks at most this long per write before it looks
/// again at its stop flag and its grace deadline.
pub const CHAT_WRITE_POLL: Duration = Duration::from_millis(200);
/// Chat: send buffer of a member's socket (Linux doubles it), so that a member
/// that stops reading costs little kernel memory and is found out after about
/// 100 KiB plus its queue instead of megabytes.
pub const CHAT_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// Chat: stack of each member's writer thread (it only copies lines to a socket).
pub const CHAT_WRITER_STACK_BYTES: usize = 128 * 1024;

/// The room's numbers, set by `run_server` flags (defaults above).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChatLimits {
    pub max_members: usize,
    /// Tokens per second.
    pub rate: f64,
    pub burst: u32,
    /// Outbound queue per member, in lines.
    pub queue: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_members: DEFAULT_CHAT_MAX_MEMBERS,
            rate: DEFAULT_CHAT_RATE,
            burst: DEFAULT_CHAT_BURST,
            queue: DEFAULT_CHAT_QUEUE,
        }
    }
}

impl ChatLimits {
    /// Refuses numbers the room cannot work with; `Ok(Some(warning))` for a
    /// queue smaller than one burst from every member (members that read could
    /// then be dropped as too slow).
    pub fn check(&self) -> Result<Option<String>, String> {
        if self.max_members == 0 {
            return Err("--chat-max-members must be at least 1".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("--chat-rate must be a positive number of lines per second".into());
        }
        if self.burst == 0 {
            return Err("--chat-burst must be at least 1".into());
        }
        let minimum = self.max_members + CHAT_QUEUE_MIN_OVER_MEMBERS;
        if self.queue < minimum {
            return Err(format!(
                "--chat-queue {} is too small: it must be at least --chat-max-members + {} = {minimum}",
                self.queue, CHAT_QUEUE_MIN_OVER_MEMBERS
            ));
        }
        let advised = self.max_members.saturating_mul(self.burst as usize + 2);
        Ok((self.queue < advised).then(|| {
            format!(
                "--chat-queue {} is below --chat-max-members x (--chat-burst + 2) = {advised}: \
                 a burst from every member at once could drop members that do read",
                self.queue
            )
        }))
    }
}

/// Everything `run_server` needs to start; built from flags by the binary, or
/// directly by tests.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub db_path: PathBuf,
    pub backlog: i32,
    pub max_sessions: usize,
    /// 0: no per-address cap.
    pub max_sessions_per_address: usize,
    pub login_timeout: Duration,
    pub login_grace: Duration,
    pub session_timeout: Duration,
    /// Session threads kept waiting for a next client, and how long each waits.
    pub idle_threads: usize,
    pub idle_thread_timeout: Duration,
    /// Serve TLS with these files instead of plain TCP.
    pub tls: Option<TlsFiles>,
    /// The chat room's numbers.
    pub chat: ChatLimits,
    /// PBKDF2 iterations of new SCRAM rows and of mock answers.
    pub scram_iterations: u32,
    /// `--classic-login off`: classic logins always fail, new passwords get no
    /// classic verifier (`USERS.password` NULL).
    pub classic_login: bool,
    /// Whether `register` is open to clients (else accounts are made offline).
    pub registration: RegistrationMode,
    /// Acknowledged registrations per address per 10 minutes; 0: no quota.
    pub max_registrations_per_address: usize,
    /// Serve `GET /metrics` on this address (off when `None`).
    pub metrics: Option<String>,
    /// Peers that must send a PROXY header (and alone may); empty: none.
    pub trusted_proxies: TrustedProxies,
}

/// Who may create accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationMode {
    /// Anyone, through `register` (under the per-address quota).
    #[default]
    Open,
    /// Nobody online: `register` answers `Registration is closed`; accounts
    /// are made with `run_server add-user`.
    Closed,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            db_path: PathBuf::from(DEFAULT_DB_PATH),
            backlog: DEFAULT_BACKLOG,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_address: DEFAULT_MAX_SESSIONS_PER_ADDRESS,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            login_grace: DEFAULT_LOGIN_GRACE,
            idle_threads: MAX_IDLE_THREADS,
            idle_thread_timeout: IDLE_THREAD_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            tls: None,
            chat: ChatLimits::default(),
            scram_iterations: DEFAULT_SCRAM_ITERATIONS,
            classic_login: true,
            registration: RegistrationMode::Open,
            max_registrations_per_address: DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS,
            metrics: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Chat across servers (`chat/shared.rs`): how often a server says it is
/// alive on the bus and looks for servers that are not.
pub const CHAT_HEARTBEAT: Duration = Duration::from_secs(2);
/// A server silent this long is dead: its members leave the room. (A server
/// whose listening connection to the database closed is dead at once.) So a
/// dead server's members leave within `CHAT_SERVER_STALE + CHAT_HEARTBEAT`.
pub const CHAT_SERVER_STALE: Duration = Duration::from_secs(10);
/// How long a session waits for its own event to come back from the bus
/// before it gives up (`Error: chat unavailable`); the database's own
/// timeouts are 5 s.
pub const CHAT_BUS_WAIT: Duration = Duration::from_secs(6);
/// How long the bus listener waits for a notification before it checks
/// whether the server is stopping or a heartbeat is due.
pub const CHAT_BUS_POLL: Duration = Duration::from_millis(250);
/// The pause before the listener reconnects after losing the database.
pub const CHAT_BUS_RETRY: Duration = Duration::from_secs(1);
