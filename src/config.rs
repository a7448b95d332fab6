//! Defaults and limits, in one place.
//!
//! Every number the server or the client relies on is a named constant here, so
//! that a reader can find (and a deployer can change) each limit without hunting
//! through the code. `run_server` and `run_client` take these as the defaults of
//! their flags; each flag can also be set by an environment variable.

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
/// Write timeout for the best-effort `Error: server busy` sent by the accept loop.
pub const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
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
/// Throttling: keys kept in memory at most (the oldest go first).
pub const THROTTLE_MAX_KEYS: usize = 100_000;

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

/// Everything `run_server` needs to start; built from flags by the binary, or
/// directly by tests.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub db_path: PathBuf,
    pub backlog: i32,
    pub max_sessions: usize,
    pub login_timeout: Duration,
    pub session_timeout: Duration,
    /// Serve TLS with these files instead of plain TCP.
    pub tls: Option<TlsFiles>,
    /// PBKDF2 iterations of new SCRAM rows and of mock answers.
    pub scram_iterations: u32,
    /// `--classic-login off`: classic logins always fail, new passwords get no
    /// classic verifier (`USERS.password` NULL).
    pub classic_login: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            db_path: PathBuf::from(DEFAULT_DB_PATH),
            backlog: DEFAULT_BACKLOG,
            max_sessions: DEFAULT_MAX_SESSIONS,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            tls: None,
            scram_iterations: DEFAULT_SCRAM_ITERATIONS,
            classic_login: true,
        }
    }
}
