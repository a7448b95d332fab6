//! Test helpers: a real server on 127.0.0.1:0 with a fresh SQLite file, and a
//! protocol client that talks to it over a real socket.

use dccn_auth::config::ServerConfig;
use dccn_auth::crypto;
use dccn_auth::server::{Server, ServerHandle};
use dccn_auth::session::Services;
use dccn_auth::store::UserStore;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long a test client waits for any line before failing the test.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub const MAIN_MENU: &str = "What do you want to do? (register/login/login_scram/quit)";
pub const USER_MENU: &str =
    "What do you want to do? (ls/whoami/chat/change_password/logout/delete_account/quit)";

/// A running server and the temporary directory that holds its database.
pub struct TestApp {
    pub handle: ServerHandle,
    /// The server's SQLite store itself (for what only SQLite has: the page cap).
    pub sqlite: std::sync::Arc<UserStore>,
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    /// Deleted with the app; kept only for that.
    _dir: tempfile::TempDir,
}

pub fn config_for(db_path: PathBuf) -> ServerConfig {
    ServerConfig {
        port: 0,
        db_path,
        ..ServerConfig::default()
    }
}

/// A server with default settings on a fresh database.
pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, |_| {})
}

/// A server on a fresh database, with the config and services adjusted first.
pub fn spawn_app_with(
    tweak_config: impl FnOnce(&mut ServerConfig),
    tweak_services: impl FnOnce(&mut Services),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("users.db");
    let mut config = config_for(db_path.clone());
    tweak_config(&mut config);
    let (handle, sqlite) = start_sqlite(&config, tweak_services);
    TestApp {
        addr: handle.addr(),
        handle,
        sqlite,
        db_path,
        _dir: dir,
    }
}

/// Starts a server for `config` (e.g. on an existing database).
pub fn start(config: &ServerConfig, tweak_services: impl FnOnce(&mut Services)) -> ServerHandle {
    start_sqlite(config, tweak_services).0
}

/// [`start`], also returning the server's store.
pub fn start_sqlite(
    config: &ServerConfig,
    tweak_services: impl FnOnce(&mut Services),
) -> (ServerHandle, std::sync::Arc<UserStore>) {
    let store = std::sync::Arc::new(UserStore::open(&config.db_path).expect("open store"));
    let mut services =
        Services::with_store(store.clone(), config.login_timeout, config.session_timeout);
    tweak_services(&mut services);
    let handle = Server::bind_with(config, services)
        .expect("bind on port 0")
        .spawn();
    (handle, store)
}

impl TestApp {
    pub fn client(&self) -> TestClient {
        TestClient::connect(self.addr)
    }

    /// A client whose connection comes from another loopback address (the
    /// whole 127.0.0.0/8 range reaches the server on Linux).
    pub fn client_from(&self, source: [u8; 4]) -> TestClient {
        TestClient::connect_from(self.addr, IpAddr::from(source))
    }

    /// Registers `name` with `password` on a connection of its own.
    pub fn register(&self, name: &str, password: &str) {
        let mut c = self.client();
        c.expect_greeting();
        let out = c.register(name, password);
        assert!(
            out.contains(&"User successfully registered!".to_string()),
            "{out:?}"
        );
        c.quit();
    }
}

/// Any byte stream a test client can talk over (TCP or TLS).
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A protocol client for tests: reads lines, answers prompts.
pub struct TestClient {
    pub reader: BufReader<Box<dyn Stream>>,
    /// The TCP socket underneath (for raw writes from another thread).
    pub tcp: TcpStream,
}

impl TestClient {
    pub fn connect(addr: SocketAddr) -> TestClient {
        Self::wrap(TcpStream::connect(addr).expect("connect to test server"))
    }

    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> TestClient {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(source, 0).into()).unwrap();
        sock.connect(&addr.into()).unwrap();
        Self::wrap(sock.into())
    }

    fn wrap(sock: TcpStream) -> TestClient {
        sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        TestClient {
            tcp: sock.try_clone().unwrap(),
            reader: BufReader::new(Box::new(sock)),
        }
    }

    /// A client over any stream whose TCP socket is `tcp`.
    pub fn over(stream: Box<dyn Stream>, tcp: TcpStream) -> TestClient {
        TestClient {
            reader: BufReader::new(stream),
            tcp,
        }
    }

    /// One line without its LF; `None` at EOF.
    pub fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    pub fn line(&mut self) -> String {
        self.try_line().expect("server closed the connection")
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.reader.get_mut();
        w.write_all(bytes)
            .and_then(|()| w.flush())
            .expect("write to server");
    }

    /// Every line up to and including the next control line other than
    /// `__nonce__:` (which always comes right before `__password__`).
    pub fn until_prompt(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            let done = l.starts_with("__") && !l.starts_with("__nonce__:");
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// Reads up to the next prompt and checks it is `control`; returns the lines
    /// before it.
    pub fn expect_prompt(&mut self, control: &str) -> Vec<String> {
        let mut lines = self.until_prompt();
        let last = lines.pop().unwrap();
        assert_eq!(last, control, "lines before it: {lines:?}");
        lines
    }

    pub fn expect_greeting(&mut self) {
        let lines = self.expect_prompt("__type__");
        assert_eq!(lines, vec!["Connected to server", MAIN_MENU]);
    }

    /// From the main menu's `__type__`: the whole register flow. Returns the
    /// lines after the last password, up to the next `__type__` (excluded).
    pub fn register(&mut self, name: &str, password: &str) -> Vec<String> {
        self.send("register");
        self.expect_prompt("__username__");
        self.send(name);
        self.expect_prompt("__password__");
        self.send(password);
        assert_eq!(self.expect_prompt("__password__"), vec!["Repeat password"]);
        self.send(password);
        self.expect_prompt("__type__")
    }

    /// `register` under a registration quota: `true` if `name` was registered,
    /// `false` if the quota refused at once (the refusal line, the menu).
    pub fn register_unless_limited(&mut self, name: &str, password: &str) -> bool {
        self.send("register");
        let lines = self.until_prompt();
        if lines.last().map(String::as_str) != Some("__username__") {
            assert_eq!(
                lines,
                vec![
                    dccn_auth::protocol::outcome::REGISTRATIONS_LIMITED,
                    MAIN_MENU,
                    "__type__"
                ]
            );
            return false;
        }
        self.send(name);
        self.expect_prompt("__password__");
        self.send(password);
        self.expect_prompt("__password__");
        self.send(password);
        self.expect_prompt("__type__")[0] == "User successfully registered!"
    }

    /// Reads `__nonce__:<salt>:<nonce>` and `__password__`; returns (salt, nonce).
    pub fn expect_challenge(&mut self) -> (String, String) {
        let lines = self.expect_prompt("__password__");
        let challenge = lines.last().expect("a challenge line");
        let rest = challenge
            .strip_prefix("__nonce__:")
            .unwrap_or_else(|| panic!("expected a challenge, got {lines:?}"));
        let (salt, nonce) = rest.split_once(':').expect("salt:nonce");
        assert!(crypto::is_token(nonce), "nonce {nonce:?}");
        (salt.to_string(), nonce.to_string())
    }

    /// Answers a challenge with `password`.
    pub fn answer_challenge(&mut self, password: &str) -> (String, String) {
        let (salt, nonce) = self.expect_challenge();
        let response = crypto::response(&nonce, &crypto::verifier(&salt, password));
        self.send(&response);
        (salt, nonce)
    }

    /// From the main menu's `__type__`: login. Returns the lines up to the next
    /// `__type__` (excluded).
    pub fn login(&mut self, name: &str, password: &str) -> Vec<String> {
        self.send("login");
        self.expect_prompt("__username__");
        self.send(name);
        self.answer_challenge(password);
        self.expect_prompt("__type__")
    }

    pub fn login_ok(&mut self, name: &str, password: &str) {
        let out = self.login(name, password);
        assert_eq!(
            out,
            vec!["Successfully login", "Access granted!", USER_MENU]
        );
    }

    pub fn login_refused(&mut self, name: &str, password: &str) {
        let out = self.login(name, password);
        assert_eq!(out, vec!["User or password incorrect", MAIN_MENU]);
    }

    pub fn quit(&mut self) {
        self.send("quit");
        assert_eq!(self.line(), "__quit__");
        assert_eq!(self.try_line(), None, "server closes after __quit__");
    }

    /// Reads until the server closes; returns every line.
    pub fn rest(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(l) = self.try_line() {
            lines.push(l);
        }
        lines
    }

    /// Reads raw bytes until EOF or a reset (after an error the server closes).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.reader.read_to_end(&mut out);
        out
    }
}

/// A new connection at the main menu, logged in as `name`.
pub fn logged_in(app: &TestApp, name: &str, password: &str) -> TestClient {
    let mut c = app.client();
    c.expect_greeting();
    c.login_ok(name, password);
    c
}

/// Resident memory of this process, in KiB (Linux), from /proc/self/status.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the server has at most `n` sessions.
pub fn wait_for_sessions_at_most(app: &TestApp, n: usize, limit: Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = app.handle.session_count();
        if now <= n || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The p-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Starts the real `run_server` binary on a free port with `db`, logging at
/// `log_level` to a piped stderr; returns the child and the address it printed.
/// A child process that is killed (and reaped) when dropped, so a test that
/// fails half-way never leaves a server running.
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the `run_server` binary `bin` on a free port with database `db`;
/// returns it (killed on drop) and the address from its start line.
pub fn start_server_binary(
    bin: &str,
    db: &std::path::Path,
    log_level: &str,
) -> (ChildGuard, SocketAddr) {
    start_server_binary_with(bin, db, log_level, &[])
}

/// As [`start_server_binary`], with these environment variables set last (so
/// they win over the defaults set here).
pub fn start_server_binary_with(
    bin: &str,
    db: &std::path::Path,
    log_level: &str,
    env: &[(&str, &str)],
) -> (ChildGuard, SocketAddr) {
    use std::process::{Command, Stdio};
    let child = Command::new(bin)
        .args(["--port", "0", "--db"])
        .arg(db)
        .env("DCCN_LOG", log_level)
        // Callers drive many registrations from 127.0.0.1 (crash.rs): more than
        // the registration quota allows one address. The quota has its own tests.
        .env("DCCN_MAX_REGISTRATIONS_PER_ADDRESS", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start run_server");
    let mut child = ChildGuard(child);
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    (child, addr)
}
