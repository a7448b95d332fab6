//! The SCRAM checks shared by the property tests (`tests/fuzz_scram.rs`) and the
//! cargo-fuzz target (`fuzz/fuzz_targets/scram.rs`): any client-first and
//! client-final, at the message layer and through a whole session over memory,
//! end in one `e=` reply with a word of the spec's table, never a panic.

use dccn_auth::codec::LineConn;
use dccn_auth::protocol::{control, outcome, scram_error, MAIN_MENU};
use dccn_auth::scram::message;
use dccn_auth::session::{Services, Session};
use dccn_auth::transport::MemoryTransport;
use std::net::IpAddr;

/// The `e=` words the server may send.
pub const SERVER_ERRORS: [&str; 7] = [
    scram_error::INVALID_ENCODING,
    scram_error::CHANNEL_BINDING_NOT_SUPPORTED,
    scram_error::EXTENSIONS_NOT_SUPPORTED,
    scram_error::INVALID_USERNAME_ENCODING,
    scram_error::CHANNEL_BINDINGS_DONT_MATCH,
    scram_error::INVALID_PROOF,
    scram_error::OTHER_ERROR,
];

/// A fixed server nonce for the message-layer check.
const S_NONCE: &str = "c2VydmVyLW5vbmNlLWRlbW8x";

/// Removes what the line codec would treat as a line end, and keeps the line
/// within the 1024-byte limit (at a character boundary).
pub fn as_line(s: &str) -> String {
    let mut line: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    let mut end = line.len().min(1024);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line
}

/// The message layer: both parsers of each side return a value for any input,
/// and what they accept has the shape the spec gives.
pub fn check_messages(first: &str, last: &str) -> Result<(), String> {
    // The client side's parsers must not panic either.
    let _ = message::parse_server_first(first, "abc");
    let _ = message::parse_server_first(last, "");
    let _ = message::parse_server_final(last);
    let parsed = match message::parse_client_first(first) {
        Err(e) => {
            return match SERVER_ERRORS.contains(&e.code()) {
                true => Ok(()),
                false => Err(format!("unknown error word {e}")),
            }
        }
        Ok(parsed) => parsed,
    };
    if format!("{}{}", parsed.gs2_header, parsed.bare) != first {
        return Err(format!("header + bare != message for {first:?}"));
    }
    if !matches!(parsed.gs2_header, "n,," | "y,,") {
        return Err(format!("gs2 header {:?} accepted", parsed.gs2_header));
    }
    let nonce_ok = (1..=255).contains(&parsed.nonce.len())
        && parsed
            .nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',');
    if !nonce_ok {
        return Err(format!("c-nonce {:?} accepted", parsed.nonce));
    }
    let nonce = format!("{}{S_NONCE}", parsed.nonce);
    match message::parse_client_final(last, parsed.gs2_header, &nonce) {
        Err(e) if !SERVER_ERRORS.contains(&e.code()) => Err(format!("unknown error word {e}")),
        Err(_) => Ok(()),
        Ok(f) => {
            let again = message::format_client_final(f.without_proof, &f.proof);
            match again == last {
                true => Ok(()),
                false => Err(format!("client-final {last:?} re-formats as {again:?}")),
            }
        }
    }
}

/// The bytes a client sends for one `login_scram` with these two messages (the
/// second only if the server will ask for it: a refused client-first ends the
/// exchange).
pub fn session_input(first: &str, last: &str) -> Vec<u8> {
    match message::parse_client_first(first) {
        Ok(_) => format!("login_scram\n{first}\n{last}\nquit\n").into_bytes(),
        Err(_) => format!("login_scram\n{first}\nquit\n").into_bytes(),
    }
}

/// Runs one session over memory with `input`; returns what the server wrote.
pub fn run_session(services: &Services, input: &[u8], ip: IpAddr) -> Vec<u8> {
    let mut session = Session::new(LineConn::new(MemoryTransport::new(input)), services, ip);
    session.run();
    std::mem::take(&mut session.into_conn().transport_mut().output)
}

/// The server's lines for `session_input(first, last)`: `__scram_first__`, then
/// either an `e=` right away or the challenge and then one `e=`, then
/// `User or password incorrect` and the main menu; then the goodbye.
pub fn check_session_output(first: &str, output: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(output).map_err(|e| format!("output not UTF-8: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == control::SCRAM_FIRST)
        .ok_or("no __scram_first__")?;
    let mut i = start + 1;
    let accepted_first = message::parse_client_first(first).is_ok();
    if accepted_first {
        let challenge = lines.get(i).ok_or("no challenge")?;
        if !challenge.starts_with(control::SCRAM_CHALLENGE_PREFIX) {
            return Err(format!("expected a challenge, got {challenge:?}"));
        }
        i += 1;
    }
    let finals = lines
        .iter()
        .filter(|l| l.starts_with(control::SCRAM_FINAL_PREFIX))
        .count();
    if finals != 1 {
        return Err(format!("{finals} __scram_final__ lines"));
    }
    let last = lines.get(i).ok_or("no __scram_final__")?;
    let word = last
        .strip_prefix(control::SCRAM_FINAL_PREFIX)
        .and_then(|m| m.strip_prefix("e="))
        .ok_or_else(|| format!("expected __scram_final__:e=..., got {last:?}"))?;
    if !SERVER_ERRORS.contains(&word) {
        return Err(format!("unknown error word {word:?}"));
    }
    let rest = &lines[i + 1..];
    let want = [
        outcome::LOGIN_FAILED,
        MAIN_MENU,
        control::TYPE,
        control::QUIT,
    ];
    if rest != want {
        return Err(format!("after the e= line: {rest:?}"));
    }
    Ok(())
}
