//! The server's counters, and their rendering in the Prometheus text format.
//!
//! Every counter is an atomic, so counting costs a session one uncontended
//! atomic add and never waits for a scrape; a scrape reads each value once
//! ([`Metrics::render`]), so a family may be a moment older than another but
//! each value is one that was true. [`crate::metrics_http`] serves the text.

use crate::config::LOGIN_SECONDS_BUCKETS;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Which session cap turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyCap {
    Global,
    Address,
    /// Out of file descriptors.
    Files,
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok,
    /// Wrong password or unknown name, checked.
    Failed,
    /// Refused unchecked by the throttle.
    Throttled,
}

/// Which login mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Classic,
    Scram,
}

/// How one `register` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// Acknowledged: durable on disk.
    Ok,
    /// Gave up on a taken name (3 tries), or lost the race at commit.
    Taken,
    /// Gave up on an invalid name or password (3 tries).
    Invalid,
    /// The address's quota was used up.
    Limited,
    /// Registration is closed.
    Closed,
}

const BUSY_CAPS: [(BusyCap, &str); 3] = [
    (BusyCap::Global, "global"),
    (BusyCap::Address, "address"),
    (BusyCap::Files, "files"),
];
const MECHANISMS: [(Mechanism, &str); 2] =
    [(Mechanism::Classic, "classic"), (Mechanism::Scram, "scram")];
const LOGIN_OUTCOMES: [(LoginOutcome, &str); 3] = [
    (LoginOutcome::Ok, "ok"),
    (LoginOutcome::Failed, "failed"),
    (LoginOutcome::Throttled, "throttled"),
];
const REGISTRATION_OUTCOMES: [(RegistrationOutcome, &str); 5] = [
    (RegistrationOutcome::Ok, "ok"),
    (RegistrationOutcome::Taken, "taken"),
    (RegistrationOutcome::Invalid, "invalid"),
    (RegistrationOutcome::Limited, "limited"),
    (RegistrationOutcome::Closed, "closed"),
];

/// A histogram with fixed buckets ([`LOGIN_SECONDS_BUCKETS`]); the sum is kept
/// in nanoseconds so that it is an atomic integer.
#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus one for +Inf.
    buckets: [AtomicU64; LOGIN_SECONDS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = LOGIN_SECONDS_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LOGIN_SECONDS_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter the server keeps, shared by the accept loop and the sessions.
#[derive(Default)]
pub struct Metrics {
    sessions: AtomicI64,
    connections: AtomicU64,
    busy: [AtomicU64; BUSY_CAPS.len()],
    logins: [[AtomicU64; LOGIN_OUTCOMES.len()]; MECHANISMS.len()],
    registrations: [AtomicU64; REGISTRATION_OUTCOMES.len()],
    store_errors: AtomicU64,
    chat_members: AtomicI64,
    login_seconds: Histogram,
}

fn index<T: PartialEq>(table: &[(T, &str)], wanted: T) -> usize {
    table.iter().position(|(t, _)| *t == wanted).unwrap_or(0)
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session started (its slot was taken).
    pub fn session_started(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended (its slot was freed).
    pub fn session_ended(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was accepted (served or turned away).
    pub fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn busy(&self, cap: BusyCap) {
        self.busy[index(&BUSY_CAPS, cap)].fetch_add(1, Ordering::Relaxed);
    }

    /// A login ended; `took` runs from the username reply to the outcome line.
    /// Each mechanism calls this with its own name.
    pub fn login(&self, mechanism: Mechanism, outcome: LoginOutcome, took: Duration) {
        self.logins[index(&MECHANISMS, mechanism)][index(&LOGIN_OUTCOMES, outcome)]
            .fetch_add(1, Ordering::Relaxed);
        self.login_seconds.observe(took);
    }

    pub fn registration(&self, outcome: RegistrationOutcome) {
        self.registrations[index(&REGISTRATION_OUTCOMES, outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// The store failed a query (the client heard `Server error, try again later`).
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Chat room members now: set, or moved by one as members join and leave.
    pub fn set_chat_members(&self, n: i64) {
        self.chat_members.store(n, Ordering::Relaxed);
    }

    pub fn chat_member_joined(&self) {
        self.chat_members.fetch_add(1, Ordering::Relaxed);
    }

    pub fn chat_member_left(&self) {
        self.chat_members.fetch_sub(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        header(
            w,
            "dccn_sessions",
            "gauge",
            "Sessions running now (logged in or not).",
        );
        let _ = writeln!(
            w,
            "dccn_sessions {}",
            self.sessions.load(Ordering::Relaxed).max(0)
        );
        header(
            w,
            "dccn_connections_total",
            "counter",
            "Connections accepted, served or turned away.",
        );
        let _ = writeln!(w, "dccn_connections_total {}", get(&self.connections));
        header(
            w,
            "dccn_busy_total",
            "counter",
            "Connections turned away with \"Error: server busy\", by the cap that was full.",
        );
        for (i, (_, cap)) in BUSY_CAPS.iter().enumerate() {
            let _ = writeln!(w, "dccn_busy_total{{cap=\"{cap}\"}} {}", get(&self.busy[i]));
        }
        header(
            w,
            "dccn_logins_total",
            "counter",
            "Logins (not re-authentications) by mechanism and outcome.",
        );
        for (m, (_, mechanism)) in MECHANISMS.iter().enumerate() {
            for (o, (_, outcome)) in LOGIN_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "dccn_logins_total{{mechanism=\"{mechanism}\",outcome=\"{outcome}\"}} {}",
                    get(&self.logins[m][o])
                );
            }
        }
        header(
            w,
            "dccn_registrations_total",
            "counter",
            "register commands by how they ended (one count per command).",
        );
        for (i, (_, outcome)) in REGISTRATION_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                w,
                "dccn_registrations_total{{outcome=\"{outcome}\"}} {}",
                get(&self.registrations[i])
            );
        }
        header(
            w,
            "dccn_store_errors_total",
            "counter",
            "Store failures answered with \"Server error, try again later\".",
        );
        let _ = writeln!(w, "dccn_store_errors_total {}", get(&self.store_errors));
        header(
            w,
            "dccn_chat_members",
            "gauge",
            "Members in the chat room now.",
        );
        let _ = writeln!(
            w,
            "dccn_chat_members {}",
            self.chat_members.load(Ordering::Relaxed).max(0)
        );
        header(
            w,
            "dccn_login_seconds",
            "histogram",
            "Login time, from the username reply to the outcome line.",
        );
        let h = &self.login_seconds;
        let mut cumulative = 0;
        for (i, le) in LOGIN_SECONDS_BUCKETS.iter().enumerate() {
            cumulative += get(&h.buckets[i]);
            let _ = writeln!(w, "dccn_login_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += get(&h.buckets[LOGIN_SECONDS_BUCKETS.len()]);
        let _ = writeln!(w, "dccn_login_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = get(&h.sum_nanos) as f64 / 1e9;
        let _ = writeln!(w, "dccn_login_seconds_sum {sum}");
        // The count is the +Inf bucket, so the two always agree within one scrape.
        let _ = writeln!(w, "dccn_login_seconds_count {cumulative}");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = Metrics::new().render();
        for name in [
            "dccn_sessions",
            "dccn_connections_total",
            "dccn_busy_total",
            "dccn_logins_total",
            "dccn_registrations_total",
            "dccn_store_errors_total",
            "dccn_chat_members",
            "dccn_login_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn counters_move_by_what_was_counted() {
        let m = Metrics::new();
        m.login(
            Mechanism::Classic,
            LoginOutcome::Ok,
            Duration::from_millis(3),
        );
        m.login(
            Mechanism::Scram,
            LoginOutcome::Throttled,
            Duration::from_secs(100),
        );
        m.busy(BusyCap::Files);
        m.registration(RegistrationOutcome::Limited);
        m.chat_member_joined();
        let t = m.render();
        assert_eq!(
            value(
                &t,
                "dccn_logins_total{mechanism=\"classic\",outcome=\"ok\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                "dccn_logins_total{mechanism=\"scram\",outcome=\"throttled\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                "dccn_logins_total{mechanism=\"classic\",outcome=\"failed\"}"
            ),
            0.0
        );
        assert_eq!(value(&t, "dccn_busy_total{cap=\"files\"}"), 1.0);
        assert_eq!(
            value(&t, "dccn_registrations_total{outcome=\"limited\"}"),
            1.0
        );
        assert_eq!(value(&t, "dccn_chat_members"), 1.0);
        assert_eq!(value(&t, "dccn_login_seconds_bucket{le=\"0.001\"}"), 0.0);
        assert_eq!(value(&t, "dccn_login_seconds_bucket{le=\"0.005\"}"), 1.0);
        assert_eq!(value(&t, "dccn_login_seconds_bucket{le=\"30\"}"), 1.0);
        assert_eq!(value(&t, "dccn_login_seconds_bucket{le=\"+Inf\"}"), 2.0);
        assert_eq!(value(&t, "dccn_login_seconds_count"), 2.0);
        assert!((value(&t, "dccn_login_seconds_sum") - 100.003).abs() < 1e-6);
    }
}
