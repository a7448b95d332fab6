//! The benchmark client behind `run_bench`: drives any server that speaks wire
//! protocol v1 (`docs/PROTOCOL.md`) with a fixed number of connections for a
//! fixed time, and reports rate, outcome counts and latency percentiles.
//!
//! Modes ([`Mode`]), each a closed loop per worker thread:
//! - `login`: connect, greeting, login (salt/nonce challenge), logout, quit; one
//!   cycle per connection.
//! - `login-scram`: the same cycle with `login_scram` (SCRAM-SHA-256), the
//!   server signature checked each time. Like any SCRAM client may, each worker
//!   keeps the keys derived for a (salt, iteration count), so PBKDF2 runs once
//!   per worker and the rate measures the server's work (a few HMACs).
//! - `session`: log in once per connection, then `whoami` round trips, each
//!   checked for `You are <user>`.
//! - `register`: one full registration per connection, with fresh names
//!   `<prefix><worker>x<n>`.
//! - `chat`: N members in the chat room, room messages at a given rate;
//!   delivered lines/s and delivery latency at the receivers (in `bench/chat.rs`).
//! - `idle`: first open and hold `hold` sessions that have read the greeting,
//!   then run login cycles; at the end, count how many held sessions are still
//!   open.
//!
//! Every line the server sends is checked against the protocol: an unexpected
//! control line, an error line, a bad greeting or challenge, or an I/O failure is
//! an *error* (a protocol violation); a login refused with
//! `User or password incorrect`, or a name already taken, is a *failure* (a valid
//! answer that is not the one wanted). Only successful cycles give latencies.
//!
//! The client follows the protocol's rules for its own side: TCP_NODELAY, one
//! write per reply, every read bounded by a timeout, every loop by the deadline.

use dccn_auth::config::MAX_DISPLAY_LINES_PER_TURN;
use dccn_auth::crypto;
use dccn_auth::protocol::{control, outcome};
use dccn_auth::rules::{check_password, Username};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest line accepted from the server, without its LF (the protocol's limit).
const MAX_LINE_BYTES: u64 = dccn_auth::config::MAX_LINE_BYTES as u64;
/// Pause after an error, so a broken server is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Errors printed to stderr as they happen; the rest are only counted.
const ERRORS_PRINTED: u64 = 3;
/// Stack of each worker thread (the workers are shallow).
const WORKER_STACK_BYTES: usize = 256 * 1024;
/// Registrations per worker at most, so generated names stay bounded in length.
pub const MAX_REGISTRATIONS_PER_WORKER: u64 = 9_999_999;

/// What each worker does in its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Connect, greeting, login, logout, quit: one cycle per connection.
    Login,
    /// The login cycle with SCRAM-SHA-256 (`login_scram`).
    LoginScram,
    /// Log in once per connection, then `whoami` round trips.
    Session,
    /// One full registration per connection, with fresh names.
    Register,
    /// Hold `--hold` greeted sessions open, then run login cycles.
    Idle,
    /// Connect, greeting, quit: no login, so the login rate can be stated as a
    /// fraction of a bare connect and close on the same machine.
    Connect,
    /// N members in the chat room, messages at `--rate` (see `bench/chat.rs`).
    Chat,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Login => "login",
            Mode::LoginScram => "login-scram",
            Mode::Session => "session",
            Mode::Register => "register",
            Mode::Idle => "idle",
            Mode::Connect => "connect",
            Mode::Chat => "chat",
        }
    }
}

/// Everything one benchmark run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub mode: Mode,
    /// Worker threads, each with its own connection.
    pub conns: usize,
    /// How long the workers start new operations.
    pub duration: Duration,
    /// Account used by `login`, `session` and `idle`.
    pub user: String,
    /// Password of `user`, and of every account `register` creates.
    pub password: String,
    /// Start of the names `register` creates.
    pub prefix: String,
    /// Sessions held open by `idle`.
    pub hold: usize,
    /// Limit for connecting and for each read and write.
    pub timeout: Duration,
}

impl BenchConfig {
    /// Checks what can be checked before any connection: the numbers, the
    /// names register mode will make, and the password rule where it applies.
    pub fn validate(&self) -> Result<(), String> {
        if self.conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--secs must be above 0".into());
        }
        if self.password.is_empty() && self.mode != Mode::Connect {
            return Err("the password is empty".into());
        }
        if self.password.contains(['\n', '\r']) {
            return Err("the password must be one line".into());
        }
        match self.mode {
            Mode::Register | Mode::Chat => {
                // The longest name this run can make must obey the username rule.
                let longest = register_name(
                    &self.prefix,
                    self.conns - 1,
                    MAX_REGISTRATIONS_PER_WORKER - 1,
                );
                Username::parse(&longest).map_err(|e| {
                    format!(
                        "--prefix {:?} makes invalid names like {longest:?}: {e}",
                        self.prefix
                    )
                })?;
                check_password(&self.password)
                    .map_err(|rule| format!("the password breaks the server's rule: {rule}"))?;
            }
            Mode::Connect => {}
            Mode::Login | Mode::LoginScram | Mode::Session | Mode::Idle => {
                if self.user.is_empty() || self.user.contains(['\n', '\r']) {
                    return Err("--user must be a non-empty single line".into());
                }
            }
        }
        if self.mode != Mode::Idle && self.hold > 0 {
            return Err("--hold only applies to --mode idle".into());
        }
        Ok(())
    }
}

/// The `n`-th name registered by `worker`: `<prefix><worker>x<n>`.
pub fn register_name(prefix: &str, worker: usize, n: u64) -> String {
    format!("{prefix}{worker}x{n}")
}

// ---- latency histogram --------------------------------------------------

/// Values below this many microseconds get a bucket each.
const EXACT_US: u64 = 128;
/// Buckets per power of two above that (relative precision 1/64).
const SUB_BUCKETS: u64 = 64;
/// Shifts run from 1 (values 128..256) to 57 (the top of `u64`).
const BUCKETS: usize = (EXACT_US + 57 * SUB_BUCKETS) as usize;

/// Latencies in microseconds, in log-linear buckets: exact below 128 µs, within
/// 1/64 above. Fixed size however long the run.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let msb = 63 - u64::from(us.leading_zeros()); // >= 7
    let shift = msb - 6;
    let top = us >> shift; // 64..128
    let i = EXACT_US + (shift - 1) * SUB_BUCKETS + (top - SUB_BUCKETS);
    (i as usize).min(BUCKETS - 1)
}

/// The middle of bucket `i`, in microseconds.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT_US {
        return i;
    }
    let shift = (i - EXACT_US) / SUB_BUCKETS + 1;
    let top = (i - EXACT_US) % SUB_BUCKETS + SUB_BUCKETS;
    (top << shift) + (1 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    #[cfg(test)]
    fn count(&self) -> u64 {
        self.total
    }

    /// The `p`-quantile (0 < p <= 1) in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_value(i).min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_ms()
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

// ---- report ---------------------------------------------------------------

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub conns: usize,
    pub secs: f64,
    /// From the start of the workers until the last one finished.
    pub elapsed: Duration,
    /// Cycles (or round trips) that got the wanted answer.
    pub ok: u64,
    /// Valid but unwanted answers: login refused, name taken.
    pub failed: u64,
    /// Protocol violations and I/O errors.
    pub errors: u64,
    pub latency: Histogram,
    /// Idle mode: sessions asked for, opened, and still open at the end.
    pub hold: usize,
    pub held: usize,
    pub held_open: usize,
}

impl Report {
    /// Successful operations per second over the whole run.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        let l = &self.latency;
        format!(
            "{{\"tool\":\"run_bench\",\"mode\":\"{}\",\"addr\":\"{}\",\"conns\":{},\"secs\":{},\
             \"elapsed_s\":{:.3},\"ok\":{},\"failed\":{},\"errors\":{},\"rate_per_s\":{:.1},\
             \"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\
             \"hold\":{},\"held\":{},\"held_open\":{}}}",
            self.mode.name(),
            self.addr,
            self.conns,
            self.secs,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.failed,
            self.errors,
            self.rate(),
            l.percentile_ms(0.50),
            l.percentile_ms(0.90),
            l.percentile_ms(0.99),
            l.max_ms(),
            self.hold,
            self.held,
            self.held_open,
        )
    }

    /// A table for a person.
    pub fn table(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "run_bench {} on {}: {} connections, {:.2} s",
            self.mode.name(),
            self.addr,
            self.conns,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "{:>10} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "rate/s", "ok", "failed", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let _ = writeln!(
            s,
            "{:>10.1} {:>9} {:>7} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            self.rate(),
            self.ok,
            self.failed,
            self.errors,
            l.percentile_ms(0.50),
            l.percentile_ms(0.90),
            l.percentile_ms(0.99),
            l.max_ms()
        );
        if self.mode == Mode::Idle {
            let _ = writeln!(
                s,
                "held sessions: {} asked, {} opened, {} still open at the end",
                self.hold, self.held, self.held_open
            );
        }
        s
    }
}

// ---- one client connection --------------------------------------------------

type Step<T = ()> = Result<T, String>;

/// Display lines that never appear on the paths this tool drives.
fn is_bad_display(line: &str) -> bool {
    line.starts_with(dccn_auth::protocol::error::PREFIX)
        || line == outcome::UNRECOGNIZED
        || line == outcome::SERVER_ERROR
        || line == outcome::TOO_MANY_ATTEMPTS
        || line == outcome::NAME_TAKEN
        || line.starts_with(outcome::NAME_INVALID)
        || line.starts_with(outcome::PASSWORD_INVALID)
        || line == outcome::PASSWORDS_DIFFER
}

struct Conn {
    r: BufReader<TcpStream>,
    line: String,
    out: Vec<u8>,
    /// Display lines seen since the last line waited for.
    seen: Vec<String>,
}

impl Conn {
    fn connect(cfg: &BenchConfig) -> Step<Conn> {
        let s = TcpStream::connect_timeout(&cfg.addr, cfg.timeout)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        s.set_read_timeout(Some(cfg.timeout))
            .and_then(|()| s.set_write_timeout(Some(cfg.timeout)))
            .map_err(|e| format!("timeout: {e}"))?;
        Ok(Conn {
            r: BufReader::with_capacity(4096, s),
            line: String::with_capacity(256),
            out: Vec::with_capacity(128),
            seen: Vec::new(),
        })
    }

    /// Connects and reads the greeting up to the main menu's `__type__`.
    fn greeted(cfg: &BenchConfig) -> Step<Conn> {
        let mut c = Conn::connect(cfg)?;
        let first = c.read_line()?.to_string();
        if first != outcome::CONNECTED {
            return Err(format!("bad greeting {first:?}"));
        }
        c.expect(control::TYPE)?;
        Ok(c)
    }

    fn read_line(&mut self) -> Step<&str> {
        self.line.clear();
        let limit = MAX_LINE_BYTES + 2; // the line, maybe a CR, the LF
        let n = (&mut self.r)
            .take(limit)
            .read_line(&mut self.line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    "read: timed out".to_string()
                }
                io::ErrorKind::InvalidData => "read: invalid UTF-8".to_string(),
                _ => format!("read: {e}"),
            })?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        if !self.line.ends_with('\n') {
            return Err(if n as u64 == limit {
                format!("line longer than {MAX_LINE_BYTES} bytes")
            } else {
                format!("connection closed inside a line: {:?}", self.line)
            });
        }
        self.line.pop();
        if self.line.ends_with('\r') {
            self.line.pop();
        }
        Ok(&self.line)
    }

    /// One reply, one write.
    fn send(&mut self, reply: &str) -> Step {
        self.out.clear();
        self.out.extend_from_slice(reply.as_bytes());
        self.out.push(b'\n');
        self.r
            .get_ref()
            .write_all(&self.out)
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads until a line equal to one of `targets` (returns its index), or one
    /// starting with `prefix` when `prefix` is given (returns `targets.len()`).
    /// Any other control line, or an error line, is a protocol violation.
    fn wait_for(&mut self, targets: &[&str], prefix: Option<&str>) -> Step<usize> {
        self.seen.clear();
        loop {
            if self.seen.len() == MAX_DISPLAY_LINES_PER_TURN {
                return Err(format!(
                    "more than {MAX_DISPLAY_LINES_PER_TURN} lines without a prompt"
                ));
            }
            let line = self.read_line()?;
            if let Some(i) = targets.iter().position(|t| *t == line) {
                return Ok(i);
            }
            if prefix.is_some_and(|p| line.starts_with(p)) {
                return Ok(targets.len());
            }
            if line.starts_with("__") || is_bad_display(line) {
                let want = prefix.map_or_else(|| targets.join(" | "), |p| format!("{p}..."));
                return Err(format!("unexpected line {line:?} while waiting for {want}"));
            }
            let line = line.to_string();
            self.seen.push(line);
        }
    }

    fn expect_any(&mut self, targets: &[&str]) -> Step<usize> {
        self.wait_for(targets, None)
    }

    fn expect(&mut self, target: &str) -> Step {
        self.wait_for(&[target], None).map(|_| ())
    }

    fn saw(&self, line: &str) -> bool {
        self.seen.iter().any(|l| l == line)
    }

    /// `quit`, `__quit__`, then the server must close: nothing more may come.
    fn quit(mut self) -> Step {
        self.send("quit")?;
        self.expect(control::QUIT)?;
        match self.read_line() {
            Err(e) if e == "connection closed by the server" => Ok(()),
            Err(e) => Err(format!("after __quit__: {e}")),
            Ok(line) => Err(format!("line {line:?} after __quit__")),
        }
    }

    /// Still open, with nothing unread? (no EOF, no `Error: timed out`, no reset)
    fn still_open(&mut self) -> bool {
        if !self.r.buffer().is_empty() {
            return false;
        }
        let sock = self.r.get_mut();
        if sock.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(sock.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// From the main menu's `__type__`: log in. `Ok(true)`: granted, now at the
/// logged-in menu's `__type__`; `Ok(false)`: refused, back at the main menu's.
fn login(c: &mut Conn, cfg: &BenchConfig) -> Step<bool> {
    c.send("login")?;
    c.expect(control::USERNAME)?;
    c.send(&cfg.user)?;
    c.wait_for(&[], Some(control::NONCE_PREFIX))?;
    let challenge = &c.line[control::NONCE_PREFIX.len()..];
    let (salt, nonce) = challenge
        .split_once(':')
        .filter(|(s, n)| crypto::is_token(s) && crypto::is_token(n))
        .ok_or_else(|| format!("bad challenge line {:?}", c.line))?;
    let answer = crypto::response(nonce, &crypto::verifier(salt, &cfg.password));
    c.expect(control::PASSWORD)?;
    c.send(&answer)?;
    let granted = c.expect_any(&[outcome::ACCESS_GRANTED, outcome::LOGIN_FAILED])? == 0;
    if granted && !c.saw(outcome::LOGIN_OK) {
        return Err(format!(
            "`{}` without `{}`",
            outcome::ACCESS_GRANTED,
            outcome::LOGIN_OK
        ));
    }
    c.expect(control::TYPE)?;
    Ok(granted)
}

/// Keys a SCRAM client derived for one (salt, iteration count): PBKDF2 once.
#[derive(Default)]
struct ScramKeyCache {
    salt: [u8; dccn_auth::scram::SALT_LEN],
    iterations: u32,
    keys: Option<dccn_auth::scram::keys::ClientKeys>,
}

/// From the main menu's `__type__`: `login_scram`, the server signature checked.
fn login_scram(c: &mut Conn, cfg: &BenchConfig, cache: &mut ScramKeyCache) -> Step<bool> {
    use dccn_auth::scram::keys::ClientKeys;
    use dccn_auth::scram::message::{self, ServerFinal};
    c.send(dccn_auth::protocol::command::LOGIN_SCRAM)?;
    c.expect(control::SCRAM_FIRST)?;
    let c_nonce = message::new_nonce();
    let first = message::format_client_first(&cfg.user, &c_nonce);
    c.send(&first)?;
    c.wait_for(&[], Some(control::SCRAM_CHALLENGE_PREFIX))?;
    let server_first = c.line[control::SCRAM_CHALLENGE_PREFIX.len()..].to_string();
    let sf = message::parse_server_first(&server_first, &c_nonce)
        .map_err(|e| format!("bad SCRAM challenge {server_first:?}: {e}"))?;
    if cache.keys.is_none() || cache.salt != sf.salt || cache.iterations != sf.iterations {
        cache.keys = Some(ClientKeys::derive(&cfg.password, &sf.salt, sf.iterations));
        (cache.salt, cache.iterations) = (sf.salt, sf.iterations);
    }
    let keys = cache.keys.as_ref().ok_or("no keys")?;
    let without_proof = message::format_client_final_without_proof("n,,", sf.nonce);
    let am = message::auth_message(&first[3..], &server_first, &without_proof);
    c.send(&message::format_client_final(
        &without_proof,
        &keys.proof(&am),
    ))?;
    c.wait_for(&[], Some(control::SCRAM_FINAL_PREFIX))?;
    let granted = match message::parse_server_final(&c.line[control::SCRAM_FINAL_PREFIX.len()..]) {
        ServerFinal::Signature(sig) if keys.server_signature_matches(&am, &sig) => true,
        ServerFinal::Error(e) if e == "invalid-proof" => false,
        _ => return Err(format!("bad or unexpected server-final {:?}", c.line)),
    };
    let want = match granted {
        true => outcome::ACCESS_GRANTED,
        false => outcome::LOGIN_FAILED,
    };
    c.expect(want)?;
    c.expect(control::TYPE)?;
    Ok(granted)
}

/// Connect, greeting, login_scram, logout, quit.
fn login_scram_cycle(cfg: &BenchConfig, cache: &mut ScramKeyCache) -> Step<bool> {
    let mut c = Conn::greeted(cfg)?;
    let granted = login_scram(&mut c, cfg, cache)?;
    if granted {
        c.send("logout")?;
        c.expect(control::TYPE)?;
    }
    c.quit()?;
    Ok(granted)
}

/// Connect, greeting, login, logout, quit.
fn login_cycle(cfg: &BenchConfig) -> Step<bool> {
    let mut c = Conn::greeted(cfg)?;
    let granted = login(&mut c, cfg)?;
    if granted {
        c.send("logout")?;
        c.expect(control::TYPE)?;
    }
    c.quit()?;
    Ok(granted)
}

/// Connect, greeting, quit.
fn connect_cycle(cfg: &BenchConfig) -> Step<bool> {
    Conn::greeted(cfg)?.quit()?;
    Ok(true)
}

/// Connect, greeting, register `name`, quit. `Ok(false)`: the name was taken.
fn register_cycle(cfg: &BenchConfig, name: &str) -> Step<bool> {
    let mut c = Conn::greeted(cfg)?;
    c.send("register")?;
    c.expect(control::USERNAME)?;
    c.send(name)?;
    if c.expect_any(&[control::PASSWORD, outcome::NAME_TAKEN])? == 1 {
        // The server asks for another name; this client just leaves.
        return Ok(false);
    }
    c.send(&cfg.password)?;
    c.expect(control::PASSWORD)?;
    if !c.saw(outcome::REPEAT_PASSWORD) {
        return Err(format!(
            "second __password__ without `{}`",
            outcome::REPEAT_PASSWORD
        ));
    }
    c.send(&cfg.password)?;
    // Losing a race at commit is a valid answer too.
    let registered = c.expect_any(&[outcome::REGISTERED, outcome::NAME_TAKEN])? == 0;
    c.expect(control::TYPE)?;
    c.quit()?;
    Ok(registered)
}

/// Checks that the server answers at all: connect, greeting, quit.
pub fn probe(cfg: &BenchConfig) -> Result<(), String> {
    Conn::greeted(cfg)?.quit()
}

// ---- the run ------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    /// Set while a progress line is on the terminal, so errors start a new line.
    progress_shown: AtomicBool,
}

impl Counters {
    fn error(&self, what: &str) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= ERRORS_PRINTED {
            let nl = if self.progress_shown.load(Ordering::Relaxed) {
                "\n"
            } else {
                ""
            };
            eprintln!("{nl}run_bench error #{n}: {what}");
        }
    }

    fn outcome(&self, result: Step<bool>, started: Instant, hist: &mut Histogram) -> bool {
        match result {
            Ok(true) => {
                hist.record(started.elapsed());
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.error(&e);
                false
            }
        }
    }
}

/// Sleeps after an error, but not past the deadline.
fn backoff(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    thread::sleep(left.min(ERROR_BACKOFF));
}

fn worker(id: usize, cfg: &BenchConfig, n: &Counters, deadline: Instant) -> Histogram {
    let mut hist = Histogram::default();
    match cfg.mode {
        Mode::Login | Mode::Idle => {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if !n.outcome(login_cycle(cfg), t0, &mut hist) {
                    backoff(deadline);
                }
            }
        }
        Mode::Connect => {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if !n.outcome(connect_cycle(cfg), t0, &mut hist) {
                    backoff(deadline);
                }
            }
        }
        Mode::LoginScram => {
            let mut cache = ScramKeyCache::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if !n.outcome(login_scram_cycle(cfg, &mut cache), t0, &mut hist) {
                    backoff(deadline);
                }
            }
        }
        Mode::Register => {
            let mut seq = 0;
            while Instant::now() < deadline && seq < MAX_REGISTRATIONS_PER_WORKER {
                let name = register_name(&cfg.prefix, id, seq);
                seq += 1;
                let t0 = Instant::now();
                let r = register_cycle(cfg, &name).map_err(|e| format!("{name}: {e}"));
                if !n.outcome(r, t0, &mut hist) {
                    backoff(deadline);
                }
            }
        }
        Mode::Session => {
            while Instant::now() < deadline {
                if let Err(e) = session_run(cfg, n, deadline, &mut hist) {
                    n.error(&e);
                    backoff(deadline);
                }
            }
        }
        // Not a closed loop per worker: run_bench runs `chat::run` instead.
        Mode::Chat => {}
    }
    hist
}

/// One logged-in connection doing `whoami` round trips until the deadline.
fn session_run(cfg: &BenchConfig, n: &Counters, deadline: Instant, hist: &mut Histogram) -> Step {
    let mut c = Conn::greeted(cfg)?;
    if !login(&mut c, cfg)? {
        n.failed.fetch_add(1, Ordering::Relaxed);
        backoff(deadline);
        return Ok(());
    }
    let want = format!("You are {}", cfg.user);
    while Instant::now() < deadline {
        let t0 = Instant::now();
        c.send("whoami")?;
        c.expect(control::TYPE)?;
        if !c.saw(&want) {
            return Err(format!("whoami answered {:?}", c.seen));
        }
        hist.record(t0.elapsed());
        n.ok.fetch_add(1, Ordering::Relaxed);
    }
    c.send("logout")?;
    c.expect(control::TYPE)?;
    c.quit()
}

/// Prints `elapsed, ok, rate, failed, errors` on one terminal line once a second
/// until `done`.
fn progress(n: &Counters, started: Instant, done: &AtomicBool, limit: Instant) {
    let mut last_ok = 0;
    let mut last = started;
    while !done.load(Ordering::Acquire) && Instant::now() < limit {
        // Sleep in short steps, so the end of the run is not delayed.
        let next = last + Duration::from_secs(1);
        while !done.load(Ordering::Acquire) && Instant::now() < next {
            thread::sleep(Duration::from_millis(50));
        }
        if done.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let ok = n.ok.load(Ordering::Relaxed);
        let rate = (ok - last_ok) as f64 / now.duration_since(last).as_secs_f64();
        (last_ok, last) = (ok, now);
        eprint!(
            "\r\x1b[K[{:>5.1} s] ok {ok}  {rate:.0}/s  failed {}  errors {}",
            now.duration_since(started).as_secs_f64(),
            n.failed.load(Ordering::Relaxed),
            n.errors.load(Ordering::Relaxed),
        );
        n.progress_shown.store(true, Ordering::Relaxed);
    }
    if n.progress_shown.load(Ordering::Relaxed) {
        eprint!("\r\x1b[K");
    }
}

/// Runs the benchmark. `show_progress`: a live line on stderr once a second.
pub fn run(cfg: &BenchConfig, show_progress: bool) -> Report {
    let cfg = Arc::new(cfg.clone());
    let counters = Arc::new(Counters::default());

    // Idle mode: open and hold the idle sessions first.
    let mut held: Vec<Conn> = Vec::with_capacity(cfg.hold);
    if cfg.mode == Mode::Idle {
        let hold_limit = Instant::now() + cfg.timeout.max(Duration::from_secs(60));
        for i in 0..cfg.hold {
            if Instant::now() >= hold_limit {
                counters.error(&format!(
                    "gave up holding sessions after {i} of {}",
                    cfg.hold
                ));
                break;
            }
            match Conn::greeted(&cfg) {
                Ok(c) => held.push(c),
                Err(e) => counters.error(&format!("hold #{i}: {e}")),
            }
        }
    }

    let started = Instant::now();
    let deadline = started + cfg.duration;
    let workers: Vec<_> = (0..cfg.conns)
        .map(|id| {
            let (cfg, counters) = (cfg.clone(), counters.clone());
            thread::Builder::new()
                .name(format!("bench-{id}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || worker(id, &cfg, &counters, deadline))
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let ticker = show_progress.then(|| {
        let (counters, done) = (counters.clone(), done.clone());
        // Never outlive the run by more than one timeout.
        let limit = deadline + cfg.timeout * 3;
        thread::spawn(move || progress(&counters, started, &done, limit))
    });

    let mut latency = Histogram::default();
    for w in workers {
        match w {
            Ok(handle) => match handle.join() {
                Ok(h) => latency.merge(&h),
                Err(_) => counters.error("a worker thread panicked"),
            },
            Err(e) => counters.error(&format!("cannot start a worker thread: {e}")),
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    if let Some(t) = ticker {
        let _ = t.join();
    }

    let held_open = held.iter_mut().map(|c| usize::from(c.still_open())).sum();
    Report {
        mode: cfg.mode,
        addr: cfg.addr,
        conns: cfg.conns,
        secs: cfg.duration.as_secs_f64(),
        elapsed,
        ok: counters.ok.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        latency,
        hold: cfg.hold,
        held: held.len(),
        held_open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_128_us_and_close_above() {
        for us in 0..EXACT_US {
            assert_eq!(bucket_value(bucket_of(us)), us);
        }
        for us in [128u64, 129, 1000, 4321, 65_432, 1_000_000, 30_000_000] {
            let v = bucket_value(bucket_of(us));
            let err = (v as f64 - us as f64).abs() / us as f64;
            assert!(err <= 1.0 / 64.0, "{us} -> {v}");
        }
        // Buckets are in order.
        let mut prev = 0;
        for us in 0..200_000u64 {
            let b = bucket_of(us);
            assert!(b >= prev);
            prev = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.02;
        assert!(
            close(h.percentile_ms(0.5), 50.0),
            "{}",
            h.percentile_ms(0.5)
        );
        assert!(close(h.percentile_ms(0.9), 90.0));
        assert!(close(h.percentile_ms(0.99), 99.0));
        assert_eq!(h.max_ms(), 100.0);
        let mut other = Histogram::default();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.count(), 101);
        assert_eq!(h.max_ms(), 2000.0);
        assert_eq!(Histogram::default().percentile_ms(0.99), 0.0);
    }

    fn config(mode: Mode) -> BenchConfig {
        BenchConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
            mode,
            conns: 8,
            duration: Duration::from_secs(1),
            user: "u0x0".into(),
            password: "Passw0rd1".into(),
            prefix: "b".into(),
            hold: 0,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn validation_catches_bad_names_and_passwords() {
        assert!(config(Mode::Register).validate().is_ok());
        let mut c = config(Mode::Register);
        c.prefix = "a__".into();
        assert!(c.validate().is_err());
        c.prefix = "x".repeat(25);
        assert!(c.validate().is_err(), "names would pass 32 characters");
        c.prefix = "sp ace".into();
        assert!(c.validate().is_err());
        let mut c = config(Mode::Register);
        c.password = "weak".into();
        assert!(c.validate().is_err());
        let mut c = config(Mode::Login);
        c.conns = 0;
        assert!(c.validate().is_err());
        let mut c = config(Mode::Login);
        c.hold = 5;
        assert!(c.validate().is_err());
        let mut c = config(Mode::Idle);
        c.hold = 5;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn register_names_obey_the_username_rule() {
        assert_eq!(register_name("u", 0, 0), "u0x0");
        assert!(Username::parse(&register_name("b_", 12, 345)).is_ok());
    }

    #[test]
    fn json_report_is_one_line_with_the_counts() {
        let r = Report {
            mode: Mode::Session,
            addr: "127.0.0.1:21000".parse().unwrap(),
            conns: 8,
            secs: 1.0,
            elapsed: Duration::from_secs(2),
            ok: 10,
            failed: 1,
            errors: 0,
            latency: Histogram::default(),
            hold: 0,
            held: 0,
            held_open: 0,
        };
        let j = r.to_json();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"mode\":\"session\""));
        assert!(j.contains("\"ok\":10,\"failed\":1,\"errors\":0,\"rate_per_s\":5.0"));
        assert!(r.table().contains("rate/s"));
    }
}
