//! The client's side of SCRAM-SHA-256 (`login_scram`, and re-authentication in
//! a session that logged in with it), as `protocol-scram.md`'s client rules say:
//!
//! - sends `n,,n=<name>,r=<fresh c-nonce>`;
//! - checks the challenge: `r=` extends our nonce, no `m=`, a 16-byte salt,
//!   4096 <= i <= 10,000,000; otherwise it closes without replying (exit 2);
//! - believes success only after `__scram_final__:v=` carries the server
//!   signature it computed itself (constant time): a wrong or missing one means
//!   the peer does not know the user's credentials (exit 2);
//! - never falls back to classic, and never prints the password, P (the classic
//!   verifier), the salted password, ClientKey or ClientSignature.

use super::dialogue::Client;
use super::error::{ClientError, Result};
use super::lines::ServerLine;
use crate::config::MAX_DISPLAY_LINES_PER_TURN;
use crate::protocol::{control, outcome, scram_error};
use crate::scram::keys::ClientKeys;
use crate::scram::message::{self, ServerFinal, CLIENT_GS2_HEADER};

/// What the client says when the server's proof of knowing the credentials is
/// wrong or missing (the spec's wording).
pub const IMPOSTOR: &str =
    "server signature is wrong: the server does not know your credentials (possible impostor)";

/// How a SCRAM exchange ended, as far as the exchange goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ScramEnd {
    /// `v=` with the right server signature: the server knows the credentials.
    Verified,
    /// `e=<word>`: refused; the outcome lines follow.
    Refused(String),
}

impl Client {
    /// After the command that starts an exchange was sent: reads up to
    /// `__scram_first__`. Anything else (a classic challenge, `Unrecognized
    /// type`, another prompt) is an error: no silent fallback to classic.
    pub(super) fn expect_scram_first(&mut self) -> Result<Vec<String>> {
        let mut shown = Vec::new();
        loop {
            let line = self.recv()?.ok_or_else(|| {
                ClientError::Lost("the server closed the connection before __scram_first__".into())
            })?;
            match line {
                ServerLine::Text(t) if t == control::SCRAM_FIRST => return Ok(shown),
                ServerLine::Text(t) if t == outcome::UNRECOGNIZED => {
                    return Err(ClientError::Protocol(
                        "the server does not offer login_scram (a v1-only server?); \
                         not falling back to classic login"
                            .into(),
                    ))
                }
                ServerLine::Text(t) if shown.len() < MAX_DISPLAY_LINES_PER_TURN => shown.push(t),
                ServerLine::Challenge(_) => {
                    return Err(ClientError::Protocol(
                        "the server sent a classic challenge where SCRAM was expected; \
                         not falling back to classic"
                            .into(),
                    ))
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected __scram_first__ from the server, got {other:?}"
                    )))
                }
            }
        }
    }

    /// The next line, which must be one of the SCRAM control lines with this
    /// prefix; returns the message after it.
    fn scram_line(&mut self, prefixes: &[&'static str]) -> Result<(&'static str, String)> {
        let line = self.recv()?.ok_or_else(|| {
            ClientError::Lost("the server closed the connection in a SCRAM exchange".into())
        })?;
        if let ServerLine::Text(text) = &line {
            for p in prefixes {
                if let Some(rest) = text.strip_prefix(p) {
                    return Ok((p, rest.to_string()));
                }
            }
        }
        Err(ClientError::Protocol(format!(
            "expected {} from the server, got {line:?}",
            prefixes.join(" or ")
        )))
    }

    /// One exchange, after `__scram_first__` was read: sends the client-first,
    /// checks the challenge, sends the proof, checks the server signature. On
    /// success the server has proved it knows the credentials; the outcome lines
    /// follow (read by the caller).
    pub(super) fn scram_exchange(&mut self, user: &str, password: &str) -> Result<ScramEnd> {
        let c_nonce = message::new_nonce();
        let first = message::format_client_first(user, &c_nonce);
        self.send(&first);
        let (prefix, msg) =
            self.scram_line(&[control::SCRAM_CHALLENGE_PREFIX, control::SCRAM_FINAL_PREFIX])?;
        if prefix == control::SCRAM_FINAL_PREFIX {
            return refused_before_challenge(&msg);
        }
        let challenge = message::parse_server_first(&msg, &c_nonce).map_err(|refusal| {
            // Dropping the client closes the connection without a reply.
            ClientError::ScramRefused(refusal.to_string())
        })?;
        let keys = ClientKeys::derive(password, &challenge.salt, challenge.iterations);
        let without_proof =
            message::format_client_final_without_proof(CLIENT_GS2_HEADER, challenge.nonce);
        let bare = &first[CLIENT_GS2_HEADER.len()..];
        let auth_message = message::auth_message(bare, &msg, &without_proof);
        self.trace.scram_derivation(
            &hex::encode(challenge.salt),
            challenge.iterations,
            &auth_message,
        );
        self.send(&message::format_client_final(
            &without_proof,
            &keys.proof(&auth_message),
        ));
        // Anything but __scram_final__ here (e.g. "Successfully login" first) is
        // a server that cannot prove it knows the credentials.
        let (_, last) = self
            .scram_line(&[control::SCRAM_FINAL_PREFIX])
            .map_err(|e| match e {
                ClientError::Protocol(_) => ClientError::ServerNotAuthenticated(format!(
                    "{IMPOSTOR}: no __scram_final__:v= line"
                )),
                other => other,
            })?;
        match message::parse_server_final(&last) {
            ServerFinal::Signature(sig) if keys.server_signature_matches(&auth_message, &sig) => {
                self.trace.scram_verified();
                Ok(ScramEnd::Verified)
            }
            ServerFinal::Error(word) => Ok(ScramEnd::Refused(word)),
            ServerFinal::Signature(_) | ServerFinal::Malformed => {
                Err(ClientError::ServerNotAuthenticated(IMPOSTOR.to_string()))
            }
        }
    }
}

/// `__scram_final__:` right after the client-first: an `e=` refusal; anything
/// else is a protocol error.
fn refused_before_challenge(msg: &str) -> Result<ScramEnd> {
    match message::parse_server_final(msg) {
        ServerFinal::Error(word) => Ok(ScramEnd::Refused(word)),
        _ => Err(ClientError::ServerNotAuthenticated(format!(
            "{IMPOSTOR}: success claimed before any proof"
        ))),
    }
}

/// Is this `e=` word a refusal of the credentials (exit 1), not a protocol or
/// usage error (exit 2)?
pub(super) fn is_credential_refusal(word: &str) -> bool {
    word == scram_error::INVALID_PROOF
}
