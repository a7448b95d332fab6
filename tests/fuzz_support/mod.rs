//! Oracles shared by `tests/fuzz_session.rs` (proptest) and the cargo-fuzz
//! targets in `fuzz/` (included there with `#[path]`): what a well-formed server
//! output looks like, a reference model of the line codec, and two in-memory
//! transports (chunked reads; a live peer that answers challenges).
//!
//! Only `dccn_auth` and `std`: the fuzz crate has no other dependency to offer.
#![allow(dead_code)] // each user needs a different part of this module

use dccn_auth::codec::{LineConn, ReadError};
use dccn_auth::config::MAX_LINE_BYTES;
use dccn_auth::crypto;
use dccn_auth::protocol::{control, outcome, LS_LISTING, MAIN_MENU, USER_MENU};
use dccn_auth::rules::Username;
use dccn_auth::session::End;
use dccn_auth::transport::Transport;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The reasons an `Error: ` line may carry (protocol.md, outcome lines).
pub const ERROR_REASONS: [&str; 5] = [
    "line too long",
    "invalid UTF-8",
    "timed out",
    "server busy",
    "server shutting down",
];

/// The only reasons a session over memory can die of: no clock, no shutdown.
pub const MEMORY_ERROR_REASONS: [&str; 2] = ["line too long", "invalid UTF-8"];

/// Control lines after which the server reads exactly one reply.
pub const PROMPTS: [&str; 3] = [control::TYPE, control::USERNAME, control::PASSWORD];

/// The display line that opens the new-password part of change_password.
/// (A literal in session.rs, not a protocol outcome line.)
pub const CHOOSE_NEW_PASSWORD: &str = "Choose a new password";

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `(salt, nonce)` if `line` is a well-formed `__nonce__:<32 hex>:<32 hex>`.
pub fn parse_nonce(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(control::NONCE_PREFIX)?;
    let (salt, nonce) = rest.split_once(':')?;
    (is_hex32(salt) && is_hex32(nonce)).then_some((salt, nonce))
}

/// A control line after which the server reads one reply: the v1 prompts, and
/// SCRAM's `__scram_first__` and `__scram_challenge__:<server-first>`.
pub fn is_prompt(line: &str) -> bool {
    PROMPTS.contains(&line)
        || line == control::SCRAM_FIRST
        || line
            .strip_prefix(control::SCRAM_CHALLENGE_PREFIX)
            .is_some_and(|m| m.starts_with("r=") && m.contains(",s=") && m.contains(",i="))
}

/// `__scram_final__:v=<base64>` or `__scram_final__:e=<a word of the spec's table>`.
pub fn is_scram_final(line: &str) -> bool {
    const ERRORS: [&str; 7] = [
        "invalid-encoding",
        "channel-binding-not-supported",
        "extensions-not-supported",
        "invalid-username-encoding",
        "channel-bindings-dont-match",
        "invalid-proof",
        "other-error",
    ];
    line.strip_prefix(control::SCRAM_FINAL_PREFIX)
        .is_some_and(|m| match m.strip_prefix("e=") {
            Some(word) => ERRORS.contains(&word),
            None => m.strip_prefix("v=").is_some_and(|sig| sig.len() == 44),
        })
}

fn is_control(line: &str) -> bool {
    is_prompt(line) || line == control::QUIT || parse_nonce(line).is_some() || is_scram_final(line)
}

/// Framing-level well-formedness of everything a session wrote, whatever the
/// input: UTF-8, LF-terminated lines without CR, each at most the line limit,
/// greeting first, `__` only in exact control lines, `Error: <known reason>`
/// then `__quit__` then nothing, nothing after `__quit__`, and an ending that
/// agrees with the session's [`End`].
///
/// Returns the lines (without LF).
pub fn check_output<'a>(out: &'a [u8], end: &End) -> Result<Vec<&'a str>, String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("output is not UTF-8: {e}"))?;
    if !text.ends_with('\n') {
        return Err(format!("output does not end with LF: {text:?}"));
    }
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    if lines[0] != outcome::CONNECTED {
        return Err(format!("first line is {:?}", lines[0]));
    }
    for (i, line) in lines.iter().enumerate() {
        let at = || format!("line {i} {line:?}");
        if line.len() > MAX_LINE_BYTES {
            return Err(format!("{}: longer than {MAX_LINE_BYTES} bytes", at()));
        }
        if line.contains('\r') {
            return Err(format!("{}: contains CR", at()));
        }
        if line.starts_with("__") && !is_control(line) {
            return Err(format!("{}: starts with __ but is no control line", at()));
        }
        if let Some(reason) = line.strip_prefix("Error: ") {
            if !ERROR_REASONS.contains(&reason) {
                return Err(format!("{}: unknown error reason", at()));
            }
            if lines.len() != i + 2 || lines[i + 1] != control::QUIT {
                return Err(format!(
                    "{}: not followed by exactly {}",
                    at(),
                    control::QUIT
                ));
            }
        }
        if *line == control::QUIT && i + 1 != lines.len() {
            return Err(format!("{}: lines follow {}", at(), control::QUIT));
        }
    }
    let last = *lines.last().unwrap();
    let before_last = lines.len().checked_sub(2).map(|i| lines[i]);
    match end {
        End::Quit
            if last != control::QUIT || before_last.is_some_and(|l| l.starts_with("Error: ")) =>
        {
            Err(format!(
                "End::Quit but the output ends {before_last:?}, {last:?}"
            ))
        }
        End::Fatal(reason) if before_last != Some(&format!("Error: {reason}")) => Err(format!(
            "End::Fatal({reason:?}) but the output ends {before_last:?}, {last:?}"
        )),
        // The peer left while the server waited for a reply: the last line asked for one.
        End::Gone(_) if !is_prompt(last) => Err(format!("End::Gone but the last line is {last:?}")),
        _ => Ok(lines),
    }
}

/// Is `line` something the session may print: an outcome line, a menu, the
/// listing, `You are <valid name>`, a rule explanation, or a control/error line?
fn is_known_line(line: &str) -> bool {
    const EXACT: [&str; 17] = [
        outcome::CONNECTED,
        outcome::REPEAT_PASSWORD,
        outcome::NAME_TAKEN,
        outcome::PASSWORDS_DIFFER,
        outcome::TOO_MANY_ATTEMPTS,
        outcome::REGISTERED,
        outcome::LOGIN_OK,
        outcome::ACCESS_GRANTED,
        outcome::LOGIN_FAILED,
        outcome::PASSWORD_CHANGED,
        outcome::ACCOUNT_REMOVED,
        outcome::UNRECOGNIZED,
        outcome::SERVER_ERROR,
        MAIN_MENU,
        USER_MENU,
        LS_LISTING,
        CHOOSE_NEW_PASSWORD,
    ];
    EXACT.contains(&line)
        || is_control(line)
        || line.starts_with("Error: ")
        || line.starts_with(&format!("{}: ", outcome::NAME_INVALID))
        || line.starts_with(&format!("{}: ", outcome::PASSWORD_INVALID))
        || line
            .strip_prefix("You are ")
            .is_some_and(|name| Username::parse(name).is_ok())
}

/// Protocol-level invariants over the lines of one session (on top of
/// [`check_output`]), given the input it was fed:
/// - every line is a known line (no echo of unchecked input);
/// - a menu is followed by `__type__`, and `__type__` follows a menu;
/// - `__nonce__` and `Repeat password` are followed by `__password__`;
/// - `Successfully login` is followed by `Access granted!`, then the user menu;
/// - `You are` and the listing are followed by the user menu;
/// - prompts asked <= complete input lines + 1 (never more questions than
///   replies read, plus the last one left unanswered), with equality when the
///   session ended because the input ran out.
pub fn check_dialogue(lines: &[&str], input: &[u8], end: &End) -> Result<(), String> {
    let next = |i: usize| lines.get(i + 1).copied();
    for (i, &line) in lines.iter().enumerate() {
        let at = || format!("line {i} {line:?}");
        if !is_known_line(line) {
            return Err(format!("{}: not a line the server may print", at()));
        }
        let want_next = if line == MAIN_MENU || line == USER_MENU {
            Some(control::TYPE)
        } else if parse_nonce(line).is_some() || line == outcome::REPEAT_PASSWORD {
            Some(control::PASSWORD)
        } else if line.starts_with(control::SCRAM_FINAL_PREFIX) && line.contains(":e=") {
            // A refused exchange: the refusal, or a store failure.
            match next(i) {
                Some(outcome::LOGIN_FAILED) | Some(outcome::SERVER_ERROR) => None,
                other => return Err(format!("{}: followed by {other:?}", at())),
            }
        } else if line == outcome::LOGIN_OK {
            Some(outcome::ACCESS_GRANTED)
        } else if line == outcome::ACCESS_GRANTED
            || line == LS_LISTING
            || line.starts_with("You are ")
        {
            Some(USER_MENU)
        } else {
            None
        };
        if let Some(want) = want_next {
            if next(i) != Some(want) {
                return Err(format!("{}: followed by {:?}, not {want:?}", at(), next(i)));
            }
        }
        if line == control::TYPE
            && !(i > 0 && (lines[i - 1] == MAIN_MENU || lines[i - 1] == USER_MENU))
        {
            return Err(format!("{}: not preceded by a menu", at()));
        }
    }
    let prompts = lines.iter().filter(|l| is_prompt(l)).count();
    let input_lines = input.iter().filter(|&&b| b == b'\n').count();
    if prompts > input_lines + 1 {
        return Err(format!("{prompts} prompts for {input_lines} input lines"));
    }
    if matches!(end, End::Gone(_)) && prompts != input_lines + 1 {
        return Err(format!(
            "input ran out after {input_lines} lines but {prompts} prompts were sent"
        ));
    }
    Ok(())
}

/// Everything a session over memory must satisfy: [`check_output`],
/// [`check_dialogue`], and no fatal reason that needs a clock or a signal.
pub fn check_session(input: &[u8], end: &End, output: &[u8]) -> Result<(), String> {
    let lines = check_output(output, end)?;
    check_dialogue(&lines, input, end)?;
    match end {
        End::Fatal(reason) if !MEMORY_ERROR_REASONS.contains(reason) => {
            Err(format!("End::Fatal({reason:?}) over memory"))
        }
        _ => Ok(()),
    }
}

/// What [`dccn_auth::codec::LineConn::read_line`] must return for `input`, read
/// until the first error: the reference model of the framing rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Expected {
    Line(String),
    TooLong,
    InvalidUtf8,
    Closed,
}

impl Expected {
    pub fn of(result: &Result<String, ReadError>) -> Option<Expected> {
        Some(match result {
            Ok(line) => Expected::Line(line.clone()),
            Err(ReadError::TooLong) => Expected::TooLong,
            Err(ReadError::InvalidUtf8) => Expected::InvalidUtf8,
            Err(ReadError::Closed) => Expected::Closed,
            Err(_) => return None,
        })
    }
}

/// The reference model: split on LF, drop one CR before it, more than the limit
/// is too long, else it must be UTF-8; bytes after the last LF are dropped at
/// EOF unless they alone already exceed a line plus its CR.
pub fn reference_read(input: &[u8]) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut rest = input;
    loop {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            out.push(if rest.len() > MAX_LINE_BYTES + 1 {
                Expected::TooLong
            } else {
                Expected::Closed
            });
            return out;
        };
        let raw = &rest[..lf];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        rest = &rest[lf + 1..];
        if line.len() > MAX_LINE_BYTES {
            out.push(Expected::TooLong);
            return out;
        }
        match std::str::from_utf8(line) {
            Ok(s) => out.push(Expected::Line(s.to_string())),
            Err(_) => {
                out.push(Expected::InvalidUtf8);
                return out;
            }
        }
    }
}

/// Reads `input`, served in `chunks`, line by line until the first error, and
/// checks each line (UTF-8 by type, at most the limit, no LF, line plus its
/// terminator is what comes next in the input) and the whole sequence against
/// [`reference_read`].
pub fn check_codec(input: &[u8], chunks: Vec<usize>) -> Result<(), String> {
    let mut conn = LineConn::new(ChunkedTransport::new(input.to_vec(), chunks));
    let mut got = Vec::new();
    let mut consumed = 0usize;
    loop {
        let result = conn.read_line(Duration::from_secs(1));
        let line = match result {
            Ok(line) => line,
            Err(e) => {
                got.push(Expected::of(&Err(e)).ok_or("an I/O error over memory")?);
                break;
            }
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(format!("line of {} bytes", line.len()));
        }
        if line.contains('\n') {
            return Err(format!("line with LF: {line:?}"));
        }
        let rest = &input[consumed..];
        let after = rest
            .strip_prefix(line.as_bytes())
            .ok_or_else(|| format!("line {line:?} is not what follows byte {consumed}"))?;
        consumed += line.len()
            + match after {
                [b'\n', ..] => 1,
                [b'\r', b'\n', ..] => 2,
                _ => return Err(format!("no LF or CR LF after line {line:?}")),
            };
        got.push(Expected::Line(line));
    }
    let want = reference_read(input);
    if got != want {
        return Err(format!("codec read {got:?}\nthe model says {want:?}"));
    }
    Ok(())
}

/// Input served in chunks of the given sizes (cycled; 0 means one
/// `Interrupted` error), to exercise the codec's buffer handling.
pub struct ChunkedTransport {
    input: Vec<u8>,
    pos: usize,
    chunks: Vec<usize>,
    turn: usize,
    pub output: Vec<u8>,
}

impl ChunkedTransport {
    pub fn new(input: Vec<u8>, mut chunks: Vec<usize>) -> Self {
        if chunks.iter().all(|&c| c == 0) {
            chunks.clear(); // all interruptions and no data would never end
        }
        ChunkedTransport {
            input,
            pos: 0,
            chunks,
            turn: 0,
            output: Vec::new(),
        }
    }
}

impl Read for ChunkedTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = match self.chunks.is_empty() {
            true => usize::MAX,
            false => self.chunks[self.turn % self.chunks.len()],
        };
        self.turn += 1;
        if chunk == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = chunk.min(buf.len()).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for ChunkedTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for ChunkedTransport {
    fn set_deadline(&mut self, _: Option<Instant>) {}
}

/// Marks an input line that the [`LivePeer`] replaces, when the server reads it,
/// by the correct challenge response for the password that follows the marker,
/// against the last `__nonce__` the server sent (or by 64 zeros if none yet).
pub const ANSWER_MARK: u8 = 0x01;

/// A peer that hands the server one input line per read, and can answer a
/// challenge it has just seen (lines starting with [`ANSWER_MARK`]): random
/// dialogues can then log in, change passwords and delete accounts.
pub struct LivePeer {
    input: Vec<u8>,
    pos: usize,
    pending: Vec<u8>,
    /// Everything the server wrote, and what it fed the server (after answers
    /// were filled in).
    pub output: Vec<u8>,
    pub fed: Vec<u8>,
}

impl LivePeer {
    pub fn new(input: Vec<u8>) -> Self {
        LivePeer {
            input,
            pos: 0,
            pending: Vec::new(),
            output: Vec::new(),
            fed: Vec::new(),
        }
    }

    fn last_challenge(&self) -> Option<(String, String)> {
        let text = String::from_utf8_lossy(&self.output);
        let line = text.lines().rev().find_map(parse_nonce)?;
        Some((line.0.to_string(), line.1.to_string()))
    }

    /// The next input line, with an answer filled in.
    fn next_line(&mut self) -> Vec<u8> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |lf| lf + 1);
        let raw = rest[..len].to_vec();
        self.pos += len;
        let Some(body) = raw.strip_prefix(&[ANSWER_MARK]) else {
            return raw;
        };
        let (password, ending): (&[u8], &[u8]) = if let Some(p) = body.strip_suffix(b"\r\n") {
            (p, b"\r\n")
        } else if let Some(p) = body.strip_suffix(b"\n") {
            (p, b"\n")
        } else {
            (body, b"")
        };
        let password = String::from_utf8_lossy(password);
        let mut line = match self.last_challenge() {
            Some((salt, nonce)) => crypto::response(&nonce, &crypto::verifier(&salt, &password)),
            None => "0".repeat(64),
        }
        .into_bytes();
        line.extend_from_slice(ending);
        line
    }
}

impl Read for LivePeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            if self.pos == self.input.len() {
                return Ok(0);
            }
            self.pending = self.next_line();
            self.fed.extend_from_slice(&self.pending);
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for LivePeer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for LivePeer {
    fn set_deadline(&mut self, _: Option<Instant>) {}
}
