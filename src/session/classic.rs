//! The classic mechanism: login and re-authentication by the salt/nonce
//! challenge (`__nonce__:<salt>:<nonce>`, `__password__`, the response).

use super::{Proof, Session, Step};
use crate::crypto;
use crate::protocol::{control, outcome};
use crate::rules::Username;
use crate::transport::Transport;
use std::time::Instant;

impl<T: Transport> Session<'_, T> {
    pub(super) fn login(&mut self) -> Step {
        let raw = self.ask(control::USERNAME)?;
        match self.challenge(&raw)? {
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
            Proof::Refused => self.say(outcome::LOGIN_FAILED),
            Proof::StoreFailed => {}
        }
        Ok(())
    }

    /// The salt/nonce challenge for `name`: `__nonce__:<salt>:<nonce>`,
    /// `__password__`, then the response is checked in constant time.
    ///
    /// Unknown names get a stable fake salt and take the same work as real ones;
    /// throttled tries go through the same flow but are not checked.
    fn challenge(&mut self, name: &str) -> Step<Proof> {
        let record = match self.svc.store.find(name) {
            Ok(record) => record,
            Err(e) => {
                self.store_failed("login lookup failed", &e);
                return Ok(Proof::StoreFailed);
            }
        };
        // Computed for every name, so unknown and known names cost the same.
        let fake_salt = self.svc.fakes.salt(name);
        let fake_verifier = self.svc.fakes.verifier(name);
        // A user without a classic verifier (NULL), or classic login off: the
        // flow runs and fails like a wrong password (refused by this flag).
        let (salt, verifier, usable) = match record {
            Some(r) => {
                let usable = r.verifier.is_some() && self.svc.classic_login;
                (r.salt, r.verifier.unwrap_or(fake_verifier), usable)
            }
            None => (fake_salt, fake_verifier, false),
        };
        let nonce = crypto::new_nonce();
        self.say(&format!("{}{salt}:{nonce}", control::NONCE_PREFIX));
        let answer = self.ask(control::PASSWORD)?;
        // Decided when the answer is in, not when the challenge went out: else
        // many connections holding open challenges would all be checked.
        if !self.svc.throttle.allows(name, self.peer, Instant::now()) {
            log::warn!(
                "{} throttled: try for user={name:?} refused unchecked",
                self.peer
            );
            return Ok(Proof::Refused);
        }
        let expected = crypto::response(&nonce, &verifier);
        let matches = crypto::secrets_equal(&expected, &answer);
        if matches && usable {
            self.svc.throttle.record_success(name, self.peer);
            Ok(Proof::Accepted)
        } else {
            self.svc
                .throttle
                .record_failure(name, self.peer, Instant::now());
            log::warn!("{} authentication failed for user={name:?}", self.peer);
            Ok(Proof::Refused)
        }
    }

    /// Re-authentication of the logged-in user; a refusal is said here.
    pub(super) fn reauthenticate_classic(&mut self) -> Step<bool> {
        let name = self.current_user();
        Ok(match self.challenge(&name)? {
            Proof::Accepted => true,
            Proof::Refused => {
                self.say(outcome::LOGIN_FAILED);
                false
            }
            Proof::StoreFailed => false,
        })
    }
}
