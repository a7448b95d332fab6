//! The classic mechanism: login and re-authentication by the salt/nonce
//! challenge (`__nonce__:<salt>:<nonce>`, `__password__`, the response).

use super::{Proof, Session, Step};
use crate::crypto;
use crate::log_limit;
use crate::metrics::{LoginOutcome, Mechanism};
use crate::protocol::{control, outcome};
use crate::rules::Username;
use crate::transport::Transport;
use std::time::Instant;

impl<T: Transport> Session<'_, T> {
    pub(super) fn login(&mut self) -> Step {
        let raw = self.ask(control::USERNAME)?;
        // The login's time runs from the username reply to the outcome line.
        let started = Instant::now();
        let proof = self.challenge(&raw)?;
        match proof {
            Proof::Accepted => {
                // Only stored names can pass, and stored names obey the rule,
                // except rows from an older database: those still log in.
                let name = Username::parse(&raw).unwrap_or_else(|_| Username::legacy(&raw));
                log::info!("{} login ok user={name}", self.peer);
                self.say(outcome::LOGIN_OK);
                self.say(outcome::ACCESS_GRANTED);
                self.user = Some(name);
                self.by_scram = false;
            }
            Proof::Refused | Proof::Throttled => self.say(outcome::LOGIN_FAILED),
            Proof::StoreFailed => {}
        }
        let counted = match proof {
            Proof::Accepted => Some(LoginOutcome::Ok),
            Proof::Refused => Some(LoginOutcome::Failed),
            Proof::Throttled => Some(LoginOutcome::Throttled),
            // Counted as a store error, not as a login.
            Proof::StoreFailed => None,
        };
        if let Some(outcome) = counted {
            let took = started.elapsed();
            self.svc.metrics.login(Mechanism::Classic, outcome, took);
        }
        Ok(())
    }

    /// The salt/nonce challenge for `name`: `__nonce__:<salt>:<nonce>`,
    /// `__password__`, then the response is checked in constant time.
    ///
    /// Unknown names get a stable fake salt and take the same work as real ones;
    /// throttled tries go through the same flow but are not checked.
    fn challenge(&mut self, name: &str) -> Step<Proof> {
        let record = match self.svc.store.find_classic(name) {
            Ok(record) => record,
            Err(e) => {
                self.store_failed("login lookup failed", &e);
                return Ok(Proof::StoreFailed);
            }
        };
        // Computed for every name, so unknown and known names cost the same.
        let fake_salt = self.svc.fakes.salt(name);
        let fake_verifier = self.svc.fakes.verifier(name);
        // A row that cannot pass the classic challenge (an odd row of an old
        // database, see `ClassicVerifier::parse`) is an unknown name here: same
        // lines, same work, counted for throttling. A user without a classic
        // verifier (NULL: SCRAM only), or classic login off: the flow runs with
        // the real salt (the one SCRAM shows too) and fails like a wrong
        // password (refused by `usable`, not by the comparison).
        let (salt, verifier, usable) = match record {
            Some(user) => match (user.classic, user.salt) {
                (Ok(c), _) => (c.salt, c.verifier, self.svc.classic_login),
                (Err(_), Some(salt)) => (salt, fake_verifier, false),
                (Err(_), None) => (fake_salt, fake_verifier, false),
            },
            None => (fake_salt, fake_verifier, false),
        };
        let nonce = crypto::new_nonce();
        self.say(&format!("{}{salt}:{nonce}", control::NONCE_PREFIX));
        let answer = self.ask(control::PASSWORD)?;
        // Decided when the answer is in, not when the challenge went out: else
        // many connections holding open challenges would all be checked. The
        // decision counts the try as pending at once (one lock), so answers
        // arriving together get no more checks than answers one by one.
        let Some(attempt) = self.begin_try(name) else {
            self.warn(format!(
                "{} throttled: try for user={} refused unchecked",
                self.peer,
                log_limit::shorten(name)
            ));
            return Ok(Proof::Throttled);
        };
        let expected = crypto::response(&nonce, &verifier);
        let matches = crypto::secrets_equal(&expected, &answer);
        if matches && usable {
            attempt.succeeded();
            Ok(Proof::Accepted)
        } else {
            attempt.failed(Instant::now());
            self.warn(format!(
                "{} authentication failed for user={}",
                self.peer,
                log_limit::shorten(name)
            ));
            Ok(Proof::Refused)
        }
    }

    /// Re-authentication of the logged-in user; a refusal is said here.
    pub(super) fn reauthenticate_classic(&mut self) -> Step<bool> {
        let name = self.current_user();
        Ok(match self.challenge(&name)? {
            Proof::Accepted => true,
            Proof::Refused | Proof::Throttled => {
                self.say(outcome::LOGIN_FAILED);
                false
            }
            Proof::StoreFailed => false,
        })
    }
}
