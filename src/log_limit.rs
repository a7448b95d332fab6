//! Bounded warning logs: what a hostile peer can make the server write.
//!
//! Every refused or failed login writes a warning with the name tried, and a
//! peer can pipeline thousands of tries a second with 1,024-byte names of
//! control bytes (each escaped to six bytes). Unbounded, one connection grew
//! the log by 15 MB in 3,000 tries. Two bounds keep a flood small while a
//! person still learns who, from where and how many:
//! - [`shorten`]: a name in a log line is escaped and cut to
//!   [`LOG_NAME_MAX_CHARS`] characters, with the length it had;
//! - [`LogLimit`]: per source ([`AddressKey`]: IPv4, or IPv6 /64), at most
//!   [`LOG_WARN_BURST`] warnings per [`LOG_WARN_WINDOW`]; the rest are folded
//!   into a summary line (how many, over how long, and the last of them),
//!   written when the source's window has passed (at its next warning or
//!   session end, or at anyone's session end: a sweep at most every
//!   [`LOG_SWEEP_EVERY`]), and once per window early, when one of its
//!   sessions ends. Only once: a peer that reconnects for every try ends a
//!   session per try, and a summary per session end would be a line per try
//!   again (7,728 lines in 2 s, measured, before this rule).
//!
//! At most [`LOG_LIMIT_MAX_SOURCES`] sources are tracked; past that, warnings
//! of untracked sources share one bucket, summarised the same way.

use crate::address::AddressKey;
use crate::config::{
    LOG_LIMIT_MAX_SOURCES, LOG_NAME_MAX_CHARS, LOG_SWEEP_EVERY, LOG_WARN_BURST, LOG_WARN_WINDOW,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// `name` as a log line shows it: in quotes, escaped (`{:?}` style), and cut
/// between two characters once [`LOG_NAME_MAX_CHARS`] escaped characters are
/// reached, with its byte length then.
pub fn shorten(name: &str) -> String {
    let mut out = String::from("\"");
    let mut shown = 0;
    for c in name.chars() {
        let escaped = c.escape_debug();
        if shown + escaped.len() > LOG_NAME_MAX_CHARS {
            let _ = write!(out, "\"...(name of {} bytes)", name.len());
            return out;
        }
        shown += escaped.len();
        out.extend(escaped);
    }
    out.push('"');
    out
}

/// Warnings written and folded for one source in its current window.
#[derive(Debug)]
struct Source {
    window_start: Instant,
    written: u32,
    folded: u64,
    /// The last folded warning, for the summary.
    last_folded: String,
    /// A session end summarised this window early already.
    told_early: bool,
}

impl Source {
    fn new(now: Instant) -> Self {
        Source {
            window_start: now,
            written: 0,
            folded: 0,
            last_folded: String::new(),
            told_early: false,
        }
    }

    fn window_passed(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= LOG_WARN_WINDOW
    }

    /// The summary line of what was folded so far.
    fn folded_line(&self, who: &str, now: Instant) -> String {
        format!(
            "{who}: {} more warnings folded over {:.0}s; the last: {}",
            self.folded,
            now.saturating_duration_since(self.window_start)
                .as_secs_f64(),
            self.last_folded
        )
    }

    /// The summary of what was folded, if anything was; the window restarts.
    fn summary(&mut self, who: &str, now: Instant) -> Option<String> {
        let line = (self.folded > 0).then(|| self.folded_line(who, now));
        *self = Source::new(now);
        line
    }
}

#[derive(Default)]
struct State {
    sources: HashMap<AddressKey, Source>,
    /// Warnings of sources not tracked because the table was full.
    overflow: Option<Source>,
    /// When the sources were last swept for summaries due.
    last_sweep: Option<Instant>,
}

/// Per-source rate limit of warning lines, shared by all sessions.
#[derive(Default)]
pub struct LogLimit {
    state: Mutex<State>,
}

const OVERFLOW_WHO: &str = "other sources (too many to track)";

impl LogLimit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `message` (which names `peer` itself) as a warning, unless the
    /// source has used its burst: then it is folded into a later summary.
    pub fn warn(&self, peer: IpAddr, message: String) {
        for line in self.note(AddressKey::of(peer), Instant::now(), message) {
            log::warn!("{line}");
        }
    }

    /// The session from `peer` ended: its folded warnings are summarised now
    /// rather than at its source's next warning (which may never come).
    pub fn flush(&self, peer: IpAddr) {
        for line in self.flush_at(AddressKey::of(peer), Instant::now()) {
            log::warn!("{line}");
        }
    }

    /// The lines to write for one warning (none, one, or a summary and one).
    fn note(&self, key: AddressKey, now: Instant, message: String) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines = Vec::new();
        if !state.sources.contains_key(&key) && state.sources.len() >= LOG_LIMIT_MAX_SOURCES {
            // Sources whose window has passed with nothing folded say nothing more.
            state.sources.retain(|_, s| {
                s.folded > 0 || now.saturating_duration_since(s.window_start) < LOG_WARN_WINDOW
            });
        }
        let full = state.sources.len() >= LOG_LIMIT_MAX_SOURCES;
        let tracked = !full || state.sources.contains_key(&key);
        let (who, source) = if tracked {
            let source = state.sources.entry(key).or_insert_with(|| Source::new(now));
            (key.to_string(), source)
        } else {
            let source = state.overflow.get_or_insert_with(|| Source::new(now));
            (OVERFLOW_WHO.to_string(), source)
        };
        if source.window_passed(now) {
            lines.extend(source.summary(&who, now));
        }
        if source.written < LOG_WARN_BURST {
            source.written += 1;
            lines.push(message);
        } else {
            source.folded += 1;
            source.last_folded = message;
        }
        lines
    }

    /// The lines a session end of `key` writes: its summary if its window has
    /// passed, or an early one if none was told this window; and the
    /// summaries due of every source, at most every [`LOG_SWEEP_EVERY`].
    fn flush_at(&self, key: AddressKey, now: Instant) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines = Vec::new();
        if let Some(source) = state.sources.get_mut(&key) {
            if source.window_passed(now) {
                lines.extend(source.summary(&key.to_string(), now));
            } else if source.folded > 0 && !source.told_early {
                // The window goes on (a reconnect must not earn a fresh
                // burst); only the folded count is said and restarted.
                lines.push(source.folded_line(&key.to_string(), now));
                source.folded = 0;
                source.told_early = true;
            }
        }
        if state
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_SWEEP_EVERY)
        {
            state.last_sweep = Some(now);
            for (k, source) in state.sources.iter_mut() {
                if source.folded > 0 && source.window_passed(now) {
                    lines.extend(source.summary(&k.to_string(), now));
                }
            }
            if let Some(source) = state.overflow.as_mut() {
                if source.folded > 0 && source.window_passed(now) {
                    lines.extend(source.summary(OVERFLOW_WHO, now));
                }
            }
        }
        lines
    }

    /// Sources tracked now (for tests).
    pub fn sources(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn key(n: u32) -> AddressKey {
        AddressKey::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(n))))
    }

    #[test]
    fn names_are_escaped_and_cut() {
        assert_eq!(shorten("ann"), "\"ann\"");
        assert_eq!(shorten("a\"b\n"), "\"a\\\"b\\n\"");
        let hostile = "\x01".repeat(1024);
        let short = shorten(&hostile);
        assert!(short.len() < LOG_NAME_MAX_CHARS + 40, "{short}");
        assert!(
            short.ends_with("\\u{1}\"...(name of 1024 bytes)"),
            "{short}"
        );
        assert!(!short.contains('\x01'));
        // Cut on a character boundary.
        let wide = "é".repeat(1000);
        assert!(shorten(&wide).starts_with("\"éé"));
    }

    #[test]
    fn a_burst_is_written_then_folded_into_one_summary() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..1000 {
            written.extend(limit.note(key(1), t0, format!("try {i}")));
        }
        assert_eq!(written.len(), LOG_WARN_BURST as usize);
        // Another source has its own burst.
        assert_eq!(limit.note(key(2), t0, "other".into()), vec!["other"]);
        // After the window, the next warning brings the summary first.
        let later = t0 + LOG_WARN_WINDOW;
        let lines = limit.note(key(1), later, "next".into());
        assert_eq!(lines.len(), 2, "{lines:?}");
        let folded = 1000 - LOG_WARN_BURST as u64;
        assert!(
            lines[0].starts_with(&format!("10.0.0.1: {folded} more warnings folded")),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("the last: try 999"), "{lines:?}");
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn session_end_flushes_the_count_but_not_the_window() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        for i in 0..(LOG_WARN_BURST + 3) {
            limit.note(key(1), t0, format!("try {i}"));
        }
        let lines = limit.flush_at(key(1), t0 + Duration::from_secs(2));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("10.0.0.1: 3 more warnings folded over 2s"),
            "{lines:?}"
        );
        assert!(limit.flush_at(key(1), t0).is_empty(), "said once");
        assert!(
            limit.note(key(1), t0, "again".into()).is_empty(),
            "still folded"
        );
    }

    #[test]
    fn a_peer_that_reconnects_for_every_try_gets_no_line_per_session() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        let mut lines = 0;
        // One warning, then the session ends: 1,000 times within the window.
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            lines += limit.note(key(1), now, format!("try {i}")).len();
            lines += limit.flush_at(key(1), now).len();
        }
        assert_eq!(
            lines,
            LOG_WARN_BURST as usize + 1,
            "the burst and one early summary"
        );
        // The rest is told once the window has passed, at the next session
        // end of anyone (the sweep), even if this source never comes back.
        let later = t0 + LOG_WARN_WINDOW + Duration::from_secs(1);
        let rest = limit.flush_at(key(2), later);
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert!(rest[0].starts_with("10.0.0.1: "), "{rest:?}");
        assert!(rest[0].ends_with("the last: try 999"), "{rest:?}");
        assert!(limit.flush_at(key(1), later).is_empty(), "told once");
    }

    #[test]
    fn sources_are_bounded() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        for n in 0..(LOG_LIMIT_MAX_SOURCES as u32 + 100) {
            limit.note(key(n), t0, "x".into());
        }
        assert_eq!(limit.sources(), LOG_LIMIT_MAX_SOURCES);
        // The untracked share one burst.
        let mut lines = 0;
        for n in 0..100 {
            lines += limit
                .note(key(LOG_LIMIT_MAX_SOURCES as u32 + 1000 + n), t0, "y".into())
                .len();
        }
        assert_eq!(lines, 0, "the overflow bucket's burst was used above");
        // Once the windows pass, old sources make room.
        let later = t0 + LOG_WARN_WINDOW;
        assert_eq!(limit.note(key(0x00ff_0000), later, "z".into()), vec!["z"]);
        assert_eq!(limit.sources(), 1);
    }
}
