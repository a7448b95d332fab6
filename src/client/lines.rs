//! The protocol's lines as the client sees them: each server line classified
//! ([`ServerLine`]), the login challenge and its answer computed here
//! ([`Challenge`], [`Answer`]), and the outcome lines that are refusals
//! ([`is_refusal`]) or fatal errors.

use super::error::{ClientError, Result};
use crate::crypto;
use crate::protocol::{control, error::PREFIX as ERROR_PREFIX, outcome};

/// A login or re-authentication challenge: `__nonce__:<salt>:<nonce>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub salt: String,
    pub nonce: String,
}

/// The two hashes of a challenge's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `hex(SHA-256(salt || password))`, what the server stores.
    pub verifier: String,
    /// `hex(SHA-256(nonce || verifier))`, what is sent.
    pub response: String,
}

impl Challenge {
    /// Parses a whole `__nonce__:<salt>:<nonce>` line; `None` if it is not one
    /// or if salt or nonce are not 32 lowercase hex digits.
    pub fn parse(line: &str) -> Option<Challenge> {
        let rest = line.strip_prefix(control::NONCE_PREFIX)?;
        let (salt, nonce) = rest.split_once(':')?;
        if !crypto::is_token(salt) || !crypto::is_token(nonce) {
            return None;
        }
        Some(Challenge {
            salt: salt.to_string(),
            nonce: nonce.to_string(),
        })
    }

    /// Computes the response locally, as the protocol says.
    pub fn answer(&self, password: &str) -> Answer {
        let verifier = crypto::verifier(&self.salt, password);
        let response = crypto::response(&self.nonce, &verifier);
        Answer { verifier, response }
    }
}

/// One line from the server, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    Type,
    Username,
    Password,
    Challenge(Challenge),
    Quit,
    /// Anything else is display text for a person (outcome lines included).
    Text(String),
}

impl ServerLine {
    /// Classifies one line. Only a malformed `__nonce__:` line is an error: every
    /// unknown line is display text, as the protocol says.
    pub fn parse(line: &str) -> Result<ServerLine> {
        Ok(match line {
            control::TYPE => ServerLine::Type,
            control::USERNAME => ServerLine::Username,
            control::PASSWORD => ServerLine::Password,
            control::QUIT => ServerLine::Quit,
            l if l.starts_with(control::NONCE_PREFIX) => match Challenge::parse(l) {
                Some(c) => ServerLine::Challenge(c),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "malformed challenge {l:?} (expected __nonce__:<32 hex>:<32 hex>)"
                    )))
                }
            },
            other => ServerLine::Text(other.to_string()),
        })
    }
}

/// True for the outcome lines by which the server refuses an action
/// (exit code 1). Matched exactly, or by prefix where the protocol says an
/// explanation may follow.
pub fn is_refusal(line: &str) -> bool {
    line == outcome::LOGIN_FAILED
        || line == outcome::NAME_TAKEN
        || line.starts_with(outcome::NAME_INVALID)
        || line.starts_with(outcome::PASSWORD_INVALID)
        || line == outcome::PASSWORDS_DIFFER
        || line == outcome::TOO_MANY_ATTEMPTS
        || line == outcome::SERVER_ERROR
}

/// The reason of the first `Error: <reason>` line among `lines`.
pub(super) fn fatal_reason(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(ERROR_PREFIX))
        .map(str::to_string)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    // The protocol's test vector (`docs/PROTOCOL.md`), also used by the
    // dialogue's tests.
    pub(crate) const SALT: &str = "6d5da35ec7a5497e9b96ce8e88562747";
    pub(crate) const NONCE: &str = "9f1c2b7e44d0a3b58e6f7a1c0d2e3f41";
    pub(crate) const PASSWORD: &str = "Passw0rdDemo";
    pub(crate) const VERIFIER: &str =
        "4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029";
    pub(crate) const RESPONSE: &str =
        "0fcc62b2f3faa9b521b798dd47a8ae5060962cdb845bbb6f3b68a438b3a6baf6";

    pub(crate) fn nonce_line() -> String {
        format!("__nonce__:{SALT}:{NONCE}")
    }

    #[test]
    fn response_matches_the_protocol_test_vector() {
        let c = Challenge {
            salt: SALT.into(),
            nonce: NONCE.into(),
        };
        let a = c.answer(PASSWORD);
        assert_eq!(a.verifier, VERIFIER);
        assert_eq!(a.response, RESPONSE);
    }

    #[test]
    fn nonce_lines_parse_only_when_well_formed() {
        assert_eq!(
            ServerLine::parse(&nonce_line()).unwrap(),
            ServerLine::Challenge(Challenge {
                salt: SALT.into(),
                nonce: NONCE.into()
            })
        );
        for bad in [
            "__nonce__:".to_string(),
            format!("__nonce__:{SALT}"),
            format!("__nonce__:{SALT}:"),
            format!("__nonce__:{SALT}:{NONCE}:extra"),
            format!("__nonce__:{}:{NONCE}", SALT.to_uppercase()),
            format!("__nonce__:{}:{NONCE}", &SALT[1..]),
        ] {
            assert!(
                matches!(ServerLine::parse(&bad), Err(ClientError::Protocol(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn control_tokens_and_text_are_told_apart() {
        assert_eq!(ServerLine::parse("__type__").unwrap(), ServerLine::Type);
        assert_eq!(
            ServerLine::parse("__username__").unwrap(),
            ServerLine::Username
        );
        assert_eq!(
            ServerLine::parse("__password__").unwrap(),
            ServerLine::Password
        );
        assert_eq!(ServerLine::parse("__quit__").unwrap(), ServerLine::Quit);
        // Only exact tokens are controls.
        assert_eq!(
            ServerLine::parse(" __type__").unwrap(),
            ServerLine::Text(" __type__".into())
        );
        assert_eq!(
            ServerLine::parse("__other__").unwrap(),
            ServerLine::Text("__other__".into())
        );
    }

    #[test]
    fn refusals_are_the_protocol_lines() {
        for line in [
            "User or password incorrect",
            "Username already taken, try something else",
            "Username is invalid: it is empty",
            "Password is invalid: at least 8 characters",
            "Passwords are not the same, try again",
            "Too many attempts",
            "Server error, try again later",
        ] {
            assert!(is_refusal(line), "{line}");
        }
        for line in [
            "User successfully registered!",
            "Access granted!",
            "What do you want to do? (register/login/quit)",
            "Connected to server",
        ] {
            assert!(!is_refusal(line), "{line}");
        }
    }
}
