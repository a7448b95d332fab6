//! Defaults and limits, in one place.
//!
//! Every number the server or the client relies on is a named constant here, so
//! that a reader can find (and a deployer can change) each limit without hunting
//! through the code. `run_server` and `run_client` take these as the defaults of
//! their flags; each flag can also be set by an environment variable.

use crate::proxy_protocol::TrustedProxies;
use crate::tls::TlsFiles;
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
/// PROXY protocol: the longest v1 header line, CRLF included (the
/// specification's own bound).
pub const PROXY_V1_MAX_BYTES: usize = 107;
/// PROXY protocol: the longest v2 payload (addresses and TLVs) accepted after
/// the 16-byte prefix; the addresses take at most 216, a proxy's usual TLVs a
/// few dozen more.
pub const PROXY_V2_MAX_PAYLOAD: usize = 1024;
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

/// Logs: characters of a name (escaped) one log line shows at most.
pub const LOG_NAME_MAX_CHARS: usize = 48;
/// Logs: warnings written per source address (IPv6 by /64) per window; the rest
/// are folded into one summary line.
pub const LOG_WARN_BURST: u32 = 10;
pub const LOG_WARN_WINDOW: Duration = Duration::from_secs(60);
/// Logs: sources whose warnings are counted apart at most (the rest share one count).
pub const LOG_LIMIT_MAX_SOURCES: usize = 10_000;

/// Client: longest wait for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Client: longest wait for the server's next line after a reply. The server
/// answers at once (its slowest step is a durable commit), so this only catches
/// a dead or wrong peer; it is not the time a person has to type.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Client: display lines accepted between two prompts; past this the server is
/// taken for a broken or hostile peer (its lines are kept until the prompt).
pub const MAX_DISPLAY_LINES_PER_TURN: usize = 1000;

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
    /// Serve TLS with these files instead of plain TCP.
    pub tls: Option<TlsFiles>,
    /// Peers that must send a PROXY header (and alone may); empty: none.
    pub trusted_proxies: TrustedProxies,
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
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            tls: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}
