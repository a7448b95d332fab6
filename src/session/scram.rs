//! The SCRAM-SHA-256 mechanism, server side: `login_scram` and the
//! re-authentication of a session that logged in with it
//! (`__scram_first__`, `__scram_challenge__:`, `__scram_final__:`).
//!
//! Every exchange that starts with `__scram_first__` ends with exactly one
//! `__scram_final__:` line (unless the connection ends first). The checks run in
//! the spec's order; only a checked proof counts for throttling, with the same
//! counters as classic. Unknown users, users without a usable SCRAM row and
//! legacy salts get the same exchange with mock keys, refused by a flag (never by
//! the comparison happening to fail: the mock keys' secret is in the database).

use super::{Session, Step};
use crate::log_limit;
use crate::metrics::{LoginOutcome, Mechanism};
use crate::protocol::{control, outcome};
use crate::rules::Username;
use crate::scram::keys::{self, salt_bytes, ScramCredentials};
use crate::scram::message::{self, ScramError};
use crate::transport::Transport;
use std::time::Instant;

/// How a SCRAM exchange ended (the `__scram_final__:` line is already sent).
enum Exchange {
    Accepted(Username),
    Refused,
    /// Refused unchecked by the throttle (the same `e=invalid-proof` on the wire).
    Throttled,
    StoreFailed,
}

/// The credentials an exchange runs with, real or mock.
struct Credentials {
    salt: [u8; keys::SALT_LEN],
    keys: ScramCredentials,
    /// False for mock values: the proof is still checked, then refused.
    real: bool,
}

impl<T: Transport> Session<'_, T> {
    /// `login_scram` from the main menu.
    pub(super) fn login_scram(&mut self) -> Step {
        // The login's time for the metrics: from `login_scram` (the name comes in
        // the client-first-message) to the outcome line.
        let started = Instant::now();
        let counted = match self.scram_exchange(None)? {
            Exchange::Accepted(name) => {
                log::info!("{} login_scram ok user={name}", self.peer);
                self.say(outcome::LOGIN_OK);
                self.say(outcome::ACCESS_GRANTED);
                self.user = Some(name);
                self.by_scram = true;
                Some(LoginOutcome::Ok)
            }
            Exchange::Refused => {
                self.say(outcome::LOGIN_FAILED);
                Some(LoginOutcome::Failed)
            }
            Exchange::Throttled => {
                self.say(outcome::LOGIN_FAILED);
                Some(LoginOutcome::Throttled)
            }
            // Counted as a store error, not as a login.
            Exchange::StoreFailed => {
                self.say(outcome::SERVER_ERROR);
                None
            }
        };
        if let Some(outcome) = counted {
            let took = started.elapsed();
            self.svc.metrics.login(Mechanism::Scram, outcome, took);
        }
        Ok(())
    }

    /// Re-authentication of a session that logged in with SCRAM; a refusal is
    /// said here and the session stays logged in.
    pub(super) fn reauthenticate_scram(&mut self) -> Step<bool> {
        let name = self.current_user();
        Ok(match self.scram_exchange(Some(&name))? {
            Exchange::Accepted(_) => true,
            Exchange::Refused | Exchange::Throttled => {
                self.say(outcome::LOGIN_FAILED);
                false
            }
            Exchange::StoreFailed => {
                self.say(outcome::SERVER_ERROR);
                false
            }
        })
    }

    fn scram_final(&mut self, line: &str) {
        self.say(&format!("{}{line}", control::SCRAM_FINAL_PREFIX));
    }

    fn scram_refuse(&mut self, error: ScramError) -> Exchange {
        self.scram_final(&message::format_server_final_error(error));
        Exchange::Refused
    }

    /// One exchange, `__scram_first__` to `__scram_final__:`. `session_user`: the
    /// re-authentication's user, whom `n=` must name.
    fn scram_exchange(&mut self, session_user: Option<&str>) -> Step<Exchange> {
        let first_line = self.ask(control::SCRAM_FIRST)?;
        let first = match message::parse_client_first(&first_line) {
            Ok(first) => first,
            Err(e) => return Ok(self.scram_refuse(e)),
        };
        let name = first.username.clone();
        if session_user.is_some_and(|u| u != name.as_str()) {
            return Ok(self.scram_refuse(ScramError::OtherError));
        }
        let Some(creds) = self.scram_credentials(name.as_str()) else {
            self.scram_final(&message::format_server_final_error(ScramError::OtherError));
            return Ok(Exchange::StoreFailed);
        };
        let nonce = format!("{}{}", first.nonce, message::new_nonce());
        let server_first = message::format_server_first(&nonce, &creds.salt, creds.keys.iterations);
        let challenge = format!("{}{server_first}", control::SCRAM_CHALLENGE_PREFIX);
        let final_line = self.ask(&challenge)?;
        let client_final = match message::parse_client_final(&final_line, first.gs2_header, &nonce)
        {
            Ok(f) => f,
            Err(e) => return Ok(self.scram_refuse(e)),
        };
        // Decided when the answer is in (as classic), and counted as pending
        // under the same lock: nothing is checked if throttled.
        let Some(attempt) = self.begin_try(name.as_str()) else {
            self.warn(format!(
                "{} throttled: SCRAM try for user={} refused unchecked",
                self.peer,
                log_limit::shorten(name.as_str())
            ));
            self.scram_refuse(ScramError::InvalidProof);
            return Ok(Exchange::Throttled);
        };
        let auth_message =
            message::auth_message(first.bare, &server_first, client_final.without_proof);
        let proof_ok = creds.keys.verify_proof(&auth_message, &client_final.proof);
        if proof_ok && creds.real {
            attempt.succeeded();
            let signature = creds.keys.server_signature(&auth_message);
            self.scram_final(&message::format_server_final_ok(&signature));
            Ok(Exchange::Accepted(name))
        } else {
            attempt.failed(Instant::now());
            self.warn(format!(
                "{} SCRAM authentication failed for user={}",
                self.peer,
                log_limit::shorten(name.as_str())
            ));
            Ok(self.scram_refuse(ScramError::InvalidProof))
        }
    }

    /// One store lookup, and the mock values derived on every attempt; `None`:
    /// the store failed (logged here).
    fn scram_credentials(&self, name: &str) -> Option<Credentials> {
        let lookup = match self.svc.store.find_scram(name) {
            Ok(lookup) => lookup,
            Err(e) => {
                log::error!("{} SCRAM lookup failed: {e}", self.peer);
                self.svc.metrics.store_error();
                return None;
            }
        };
        // Classic's fake salt and a mock key pair from the server secret.
        let fake_salt = salt_bytes(&self.svc.fakes.salt(name)).unwrap_or_default();
        let mock_seed = self.svc.fakes.verifier(name);
        let mock = ScramCredentials {
            iterations: self.svc.scram_iterations,
            stored_key: keys::hmac(mock_seed.as_bytes(), b"mock StoredKey"),
            server_key: keys::hmac(mock_seed.as_bytes(), b"mock ServerKey"),
        };
        let mock_with = |salt| Credentials {
            salt,
            keys: mock.clone(),
            real: false,
        };
        Some(match lookup {
            None => mock_with(fake_salt),
            Some(found) => match salt_bytes(&found.salt) {
                None => mock_with(fake_salt),
                Some(salt) => {
                    let row = found.scram.and_then(|r| {
                        ScramCredentials::from_row(r.iterations, &r.stored_key, &r.server_key)
                    });
                    match row {
                        Some(keys) => Credentials {
                            salt,
                            keys,
                            real: true,
                        },
                        None => mock_with(salt),
                    }
                }
            },
        })
    }
}
