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

    /// The SCRAM derivation by name: the values that are password-equivalent
    /// (P, SaltedPassword, ClientKey, ClientSignature) are never shown.
    pub(super) fn scram_derivation(&mut self, salt_hex: &str, iterations: u32, auth_message: &str) {
        if self.out.is_none() {
            return;
        }
        let text = format!(
            "   salt            = {salt_hex} (s=), i = {iterations}\n\
             \x20  P               = SHA256(salt_hex + password)          (SCRAM password, not shown)\n\
             \x20  SaltedPassword  = PBKDF2-HMAC-SHA-256(P, salt, i)      (not shown)\n\
             \x20  ClientKey       = HMAC(SaltedPassword, \"Client Key\")  (not shown)\n\
             \x20  StoredKey       = SHA256(ClientKey)\n\
             \x20  AuthMessage     = {auth_message}\n\
             \x20  ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)   (sent as p=)\n\
             \x20  ServerSignature = HMAC(HMAC(SaltedPassword, \"Server Key\"), AuthMessage)   (expected as v=)"
        );
        self.emit(&text);
    }

    /// The server's signature was checked and matches.
    pub(super) fn scram_verified(&mut self) {
        self.emit("   ServerSignature matches: the server knows your credentials");
    }

    /// The computation of a response, with a way to check it by hand.
    ///
    /// The verifier is named, not shown: it is password-equivalent for classic
    /// (it answers any later challenge), and the SCRAM password once SCRAM is
    /// deployed (protocol-scram.md: tools must not show it). The hand check
    /// reads the password hidden into a shell variable, never onto a command
    /// line (history, process list), and prints the verifier's first and last
    /// 8 hex digits, to compare with the stored row by eye.
    pub(super) fn challenge(&mut self, c: &Challenge, a: &Answer) {
        if self.out.is_none() {
            return;
        }
        let text = format!(
            "   salt     = {salt}\n\
             \x20  nonce    = {nonce}\n\
             \x20  verifier = SHA256(salt + password)   (not shown: it is password-equivalent)\n\
             \x20  response = SHA256(nonce + verifier) = {response}\n\
             \x20  check, in bash (the password is typed hidden, never on a command line):\n\
             \x20    read -rs pw; v=$(printf '%s%s' {salt} \"$pw\" | sha256sum | cut -c1-64); unset pw\n\
             \x20    echo \"${{v:0:8}}...${{v:56}}\"; printf '%s%s' {nonce} \"$v\" | sha256sum",
            salt = c.salt,
            nonce = c.nonce,
            response = a.response,
        );
        self.emit(&text);
    }
}
