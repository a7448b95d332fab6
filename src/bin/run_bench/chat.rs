//! `run_bench --mode chat`: the room's fan-out under load.
//!
//! N members (accounts `<prefix><i>x0`, registered unless taken) log in and
//! enter the room; then a pacer sends room messages at a fixed total rate,
//! round-robin over the members, for the run's duration. Every member reads
//! all the time and measures, for each message from another member, the time
//! from its send to its arrival (the text carries the send time): delivered
//! lines per second and delivery latency p50/p90/p99/max, measured at the
//! receivers. Echoes (`> `) count as accepted messages; `* rate limit` answers
//! and members dropped with `Error: ...` are reported, the latter as errors.
//!
//! The server's per-session rate limit (5 lines/s by default) caps what each
//! member may send: offer at most members × that rate, or start the server
//! with a larger `--chat-rate` for a heavier load.

use crate::loadgen::{register_name, Histogram};
use dccn_auth::protocol::{chat, control, outcome};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Marks the benchmark's own messages: `b <send µs> <seq>`.
const MARK: &str = "b ";
/// After the last send, members quit once every delivery is in, or once no
/// delivery has come for this long (a saturated server is still catching up
/// as long as deliveries come).
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// Stack of each member thread.
const MEMBER_STACK_BYTES: usize = 256 * 1024;
/// Longest line read from the server (the protocol's limit plus the LF).
const MAX_LINE: usize = dccn_auth::config::MAX_LINE_BYTES + 1;
/// Members that connect, register and log in at the same time: the listen
/// backlog is 8, and hundreds of handshakes at once would only queue up in
/// SYN retries and time out.
const SETUP_AT_ONCE: usize = 8;
/// Errors printed to stderr; the rest are only counted.
const ERRORS_PRINTED: u64 = 3;

/// A counting semaphore for the setup (std has none).
struct Gate {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Gate {
    fn pass<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        drop(free);
        let out = f();
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.freed.notify_one();
        out
    }
}

#[derive(Debug, Clone)]
pub struct ChatBenchConfig {
    pub addr: SocketAddr,
    pub members: usize,
    /// Room messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub password: String,
    pub prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct ChatReport {
    pub members: usize,
    pub rate: f64,
    pub secs: f64,
    pub sent: u64,
    pub accepted: u64,
    pub rate_limited: u64,
    pub delivered: u64,
    pub expected: u64,
    /// Seconds from the first send to the last delivery.
    pub delivery_secs: f64,
    pub dropped: u64,
    pub errors: u64,
    pub hist: Histogram,
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    rate_limited: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    last_delivery_us: AtomicU64,
}

type Step<T = ()> = Result<T, String>;

/// A member's line reader.
struct Lines {
    reader: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Lines {
    fn next(&mut self) -> Step<Option<String>> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.pop() != Some(b'\n') {
            return Err("a line longer than the protocol allows".into());
        }
        String::from_utf8(std::mem::take(&mut self.buf))
            .map(Some)
            .map_err(|_| "a line that is not UTF-8".into())
    }

    /// Lines up to the next control line other than `__nonce__:`, and that line.
    fn until_control(&mut self) -> Step<(Vec<String>, String)> {
        let mut seen = Vec::new();
        loop {
            match self.next()? {
                Some(l) if l.starts_with("__") && !l.starts_with(control::NONCE_PREFIX) => {
                    return Ok((seen, l))
                }
                Some(l) => seen.push(l),
                None => return Err(format!("closed while waiting for a prompt: {seen:?}")),
            }
        }
    }

    /// Lines up to `want`.
    fn until(&mut self, want: &str) -> Step<Vec<String>> {
        let mut seen = Vec::new();
        loop {
            match self.next()? {
                Some(l) if l == want => return Ok(seen),
                Some(l) => seen.push(l),
                None => return Err(format!("closed while waiting for {want}: {seen:?}")),
            }
        }
    }
}

use std::io::Read as _;

/// Connects, registers `name` if it does not exist, logs in, enters the room.
fn join(cfg: &ChatBenchConfig, name: &str) -> Step<(Lines, TcpStream)> {
    let sock =
        TcpStream::connect_timeout(&cfg.addr, cfg.timeout).map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    let mut w = sock.try_clone().map_err(|e| e.to_string())?;
    let mut r = Lines {
        reader: BufReader::new(sock),
        buf: Vec::with_capacity(MAX_LINE),
    };
    let mut send = |line: &str| -> Step {
        w.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))
    };
    r.until(control::TYPE)?;
    // Register first (a failed login would count against this address in the
    // server's throttle); a taken name is answered with the name again until
    // the server gives up and is back at its menu.
    send("register")?;
    r.until(control::USERNAME)?;
    loop {
        send(name)?;
        let (said, prompt) = r.until_control()?;
        match prompt.as_str() {
            control::USERNAME => continue,
            control::PASSWORD => {
                send(&cfg.password)?;
                r.until(control::PASSWORD)?;
                send(&cfg.password)?;
                let said = r.until(control::TYPE)?;
                if !said.iter().any(|l| l == outcome::REGISTERED) {
                    return Err(format!("register {name}: {said:?}"));
                }
                break;
            }
            control::TYPE => break,
            other => return Err(format!("register {name}: {said:?} then {other}")),
        }
    }
    if !login(&mut r, &mut send, cfg, name)? {
        return Err(format!(
            "login {name} refused (an account of another password?)"
        ));
    }
    send(chat::ENTER)?;
    let said = r.until(control::CHAT)?;
    if said.iter().any(|l| l.starts_with("__")) {
        return Err(format!("chat {name}: refused: {said:?}"));
    }
    Ok((r, w))
}

/// Logs in from the main menu's `__type__`; `false`: refused.
fn login(
    r: &mut Lines,
    send: &mut dyn FnMut(&str) -> Step,
    cfg: &ChatBenchConfig,
    name: &str,
) -> Step<bool> {
    send("login")?;
    r.until(control::USERNAME)?;
    send(name)?;
    let said = r.until(control::PASSWORD)?;
    let challenge = said
        .iter()
        .find_map(|l| l.strip_prefix(control::NONCE_PREFIX))
        .ok_or_else(|| format!("login {name}: no challenge in {said:?}"))?;
    let (salt, nonce) = challenge.split_once(':').ok_or("malformed challenge")?;
    let verifier = dccn_auth::crypto::verifier(salt, &cfg.password);
    send(&dccn_auth::crypto::response(nonce, &verifier))?;
    let said = r.until(control::TYPE)?;
    Ok(said.iter().any(|l| l == outcome::LOGIN_OK))
}

/// Reads a member's stream until `__quit__` (or the end), tallying.
fn receive(mut r: Lines, started: Instant, tally: &Tally) -> Histogram {
    let mut hist = Histogram::default();
    loop {
        let line = match r.next() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                if tally.errors.fetch_add(1, Ordering::Relaxed) < ERRORS_PRINTED {
                    eprintln!("run_bench chat: {e}");
                }
                break;
            }
        };
        if line == control::QUIT {
            break;
        }
        if let Some(text) = line.strip_prefix(chat::ECHO_PREFIX) {
            if text.starts_with(MARK) {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some((_, text)) = line.split_once(": ") {
            if line.starts_with(dccn_auth::protocol::error::PREFIX) {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
                eprintln!("run_bench chat: a member got {line:?}");
                continue;
            }
            let Some(sent) = text
                .strip_prefix(MARK)
                .and_then(|t| t.split(' ').next())
                .and_then(|us| us.parse::<u64>().ok())
            else {
                continue;
            };
            let now = started.elapsed();
            hist.record(now.saturating_sub(Duration::from_micros(sent)));
            tally.delivered.fetch_add(1, Ordering::Relaxed);
            tally
                .last_delivery_us
                .fetch_max(now.as_micros() as u64, Ordering::Relaxed);
        } else if line == chat::RATE_LIMITED {
            tally.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }
    hist
}

pub fn validate(cfg: &ChatBenchConfig) -> Result<(), String> {
    if cfg.members < 2 {
        return Err("--mode chat needs --conns of at least 2 (members)".into());
    }
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    Ok(())
}

/// Runs the chat benchmark.
pub fn run(cfg: &ChatBenchConfig) -> Result<ChatReport, String> {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(cfg.members + 1));
    let writers: Arc<Mutex<Vec<Option<TcpStream>>>> =
        Arc::new(Mutex::new((0..cfg.members).map(|_| None).collect()));
    let failed = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate {
        free: Mutex::new(SETUP_AT_ONCE),
        freed: std::sync::Condvar::new(),
    });
    let mut threads = Vec::with_capacity(cfg.members);
    for i in 0..cfg.members {
        let (cfg, tally, barrier, writers, failed, gate) = (
            cfg.clone(),
            tally.clone(),
            barrier.clone(),
            writers.clone(),
            failed.clone(),
            gate.clone(),
        );
        let t = thread::Builder::new()
            .stack_size(MEMBER_STACK_BYTES)
            .spawn(move || {
                let name = register_name(&cfg.prefix, i, 0);
                let joined = gate.pass(|| join(&cfg, &name));
                let reader = match joined {
                    Ok((r, w)) => {
                        writers.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(w);
                        Some(r)
                    }
                    Err(e) => {
                        if !failed.swap(true, Ordering::Relaxed) {
                            eprintln!("run_bench chat: member {name}: {e}");
                        }
                        None
                    }
                };
                barrier.wait();
                match reader {
                    Some(r) => receive(r, started, &tally),
                    None => Histogram::default(),
                }
            })
            .map_err(|e| format!("cannot start a member thread: {e}"))?;
        threads.push(t);
    }
    barrier.wait();
    let mut writers: Vec<TcpStream> =
        std::mem::take(&mut *writers.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .flatten()
            .collect();
    if failed.load(Ordering::Relaxed) || writers.len() < cfg.members {
        for w in &writers {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        return Err("not every member could enter the room (see above)".into());
    }
    // The pacer: message k leaves at send_start + k / rate, from member k mod N.
    let send_start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut sent = 0u64;
    let mut errors = 0u64;
    while send_start.elapsed() < cfg.duration {
        let due = send_start + interval.mul_f64(sent as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let member = (sent % cfg.members as u64) as usize;
        let line = format!("{MARK}{} {sent}\n", started.elapsed().as_micros());
        if writers[member].write_all(line.as_bytes()).is_err() {
            errors += 1;
        }
        sent += 1;
    }
    let send_secs = send_start.elapsed().as_secs_f64();
    // Let the last deliveries arrive, then everyone quits.
    let mut last_progress = (Instant::now(), 0);
    while last_progress.0.elapsed() < DRAIN_QUIET {
        let accepted = tally.accepted.load(Ordering::Relaxed);
        let delivered = tally.delivered.load(Ordering::Relaxed);
        let answered = accepted + tally.rate_limited.load(Ordering::Relaxed);
        if answered >= sent && delivered >= accepted * (cfg.members as u64 - 1) {
            break;
        }
        if delivered + answered != last_progress.1 {
            last_progress = (Instant::now(), delivered + answered);
        }
        thread::sleep(Duration::from_millis(20));
    }
    for w in writers.iter_mut() {
        let _ = w.write_all(format!("{}\n", chat::QUIT).as_bytes());
    }
    let mut hist = Histogram::default();
    for t in threads {
        if let Ok(h) = t.join() {
            hist.merge(&h);
        }
    }
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let last_us = tally.last_delivery_us.load(Ordering::Relaxed);
    let first_us = send_start.duration_since(started).as_micros() as u64;
    Ok(ChatReport {
        members: cfg.members,
        rate: cfg.rate,
        secs: send_secs,
        sent,
        accepted,
        rate_limited: tally.rate_limited.load(Ordering::Relaxed),
        delivered: tally.delivered.load(Ordering::Relaxed),
        expected: accepted * (cfg.members as u64 - 1),
        delivery_secs: last_us.saturating_sub(first_us) as f64 / 1e6,
        dropped: tally.dropped.load(Ordering::Relaxed),
        errors: errors + tally.errors.load(Ordering::Relaxed),
        hist,
    })
}

impl ChatReport {
    /// Lines delivered per second, from the first send to the last delivery.
    pub fn delivered_per_sec(&self) -> f64 {
        if self.delivery_secs > 0.0 {
            self.delivered as f64 / self.delivery_secs
        } else {
            0.0
        }
    }

    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.dropped == 0 && self.delivered > 0
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mode chat: {} members, {:.0} messages/s offered for {:.1} s",
            self.members, self.rate, self.secs
        );
        let _ = writeln!(
            s,
            "sent {}  accepted {}  rate-limited {}",
            self.sent, self.accepted, self.rate_limited
        );
        let pct = if self.expected > 0 {
            100.0 * self.delivered as f64 / self.expected as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "delivered {} of {} expected ({pct:.2}%): {:.0} lines/s",
            self.delivered,
            self.expected,
            self.delivered_per_sec()
        );
        let h = &self.hist;
        let _ = writeln!(
            s,
            "delivery latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            h.percentile_ms(0.50),
            h.percentile_ms(0.90),
            h.percentile_ms(0.99),
            h.max_ms()
        );
        let _ = writeln!(
            s,
            "members dropped {}  errors {}",
            self.dropped, self.errors
        );
        s
    }

    pub fn to_json(&self) -> String {
        let h = &self.hist;
        format!(
            "{{\"mode\":\"chat\",\"members\":{},\"rate\":{},\"secs\":{:.3},\"sent\":{},\"accepted\":{},\
             \"rate_limited\":{},\"delivered\":{},\"expected\":{},\"delivered_per_sec\":{:.1},\
             \"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"dropped\":{},\"errors\":{}}}",
            self.members,
            self.rate,
            self.secs,
            self.sent,
            self.accepted,
            self.rate_limited,
            self.delivered,
            self.expected,
            self.delivered_per_sec(),
            h.percentile_ms(0.50),
            h.percentile_ms(0.90),
            h.percentile_ms(0.99),
            h.max_ms(),
            self.dropped,
            self.errors
        )
    }
}
