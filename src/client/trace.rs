//! The trace of an exchange (`--trace`): every line with its direction, and the
//! computation of each challenge's answer, never a password.

use super::lines::{Answer, Challenge};
use std::io::{self, Write};

/// Shows what crosses the wire: `S> line` from the server, `C> line` from the
/// client, and the hashes of each challenge. Passwords sent in clear are shown
/// as stars; the password itself never appears.
pub struct Trace {
    out: Option<Box<dyn Write + Send>>,
}

impl Trace {
    pub fn off() -> Self {
        Trace { out: None }
    }

    pub fn to(out: Box<dyn Write + Send>) -> Self {
        Trace { out: Some(out) }
    }

    /// The binary's choice: standard error, so standard output stays the outcome.
    pub fn stderr() -> Self {
        Self::to(Box::new(io::stderr()))
    }

    /// True when tracing; lets callers skip building text nobody will see.
    pub fn is_on(&self) -> bool {
        self.out.is_some()
    }

    /// A note about the connection (not a line of the dialogue): `** text`.
    pub fn note(&mut self, text: &str) {
        self.emit(&format!("** {text}"));
    }

    fn emit(&mut self, text: &str) {
        if let Some(out) = &mut self.out {
            // A trace that cannot be written must not end the dialogue.
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub(super) fn received(&mut self, line: &str) {
        if self.out.is_some() {
            self.emit(&format!("S> {}", super::visible::visible(line)));
        }
    }

    pub(super) fn sent(&mut self, line: &str) {
        if self.out.is_some() {
            self.emit(&format!("C> {line}"));
        }
    }

    /// The computation of a response, with a way to check it by hand.
    ///
    /// The verifier is password-equivalent (it answers any later challenge),
    /// so only its ends are shown: enough to compare with the stored row by
    /// eye. The hand check reads the password hidden into a shell variable,
    /// never onto a command line (history, process list).
    pub(super) fn challenge(&mut self, c: &Challenge, a: &Answer) {
        if self.out.is_none() {
            return;
        }
        let text = format!(
            "   salt     = {salt}\n\
             \x20  nonce    = {nonce}\n\
             \x20  verifier = SHA256(salt + password) = {verifier}\n\
             \x20             (its ends only: the whole answers any challenge; compare with the \
             stored row, run_server list-users --show-hashes)\n\
             \x20  response = SHA256(nonce + verifier) = {response}\n\
             \x20  check, in bash (the password is typed hidden, never on a command line):\n\
             \x20    read -rs pw; v=$(printf '%s%s' {salt} \"$pw\" | sha256sum | cut -c1-64); unset pw\n\
             \x20    echo \"${{v:0:8}}...${{v:56}}\"; printf '%s%s' {nonce} \"$v\" | sha256sum",
            salt = c.salt,
            nonce = c.nonce,
            verifier = shortened(&a.verifier),
            response = a.response,
        );
        self.emit(&text);
    }
}

/// Hex digits shown at each end of a verifier in a trace.
const VERIFIER_ENDS: usize = 8;

/// `first8...last8` of a verifier (a short one is masked whole).
fn shortened(verifier: &str) -> String {
    match (
        verifier.get(..VERIFIER_ENDS),
        verifier.get(verifier.len().saturating_sub(VERIFIER_ENDS)..),
    ) {
        (Some(head), Some(tail)) if verifier.len() > 2 * VERIFIER_ENDS => {
            format!("{head}...{tail}")
        }
        _ => "...".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_shows_its_ends_only() {
        let v = "0123456789abcdef".repeat(4);
        assert_eq!(shortened(&v), "01234567...89abcdef");
        assert_eq!(shortened("short"), "...");
    }
}
