//! Account flows: register, change_password, delete_account.
//!
//! Each asks for a new name or password under the rules (3 tries), then writes
//! to the store; a re-authentication comes first where the account exists.
//! `register` first checks that registration is open and takes a unit of the
//! address's quota (`registration_quota.rs`); the account itself is made by
//! `new_account::create`, the same function `run_server add-user` uses.

use super::{Session, Step};
use crate::config::{RegistrationMode, MAX_PROMPT_TRIES};
use crate::crypto;
use crate::metrics::RegistrationOutcome;
use crate::new_account::{self, NewAccount};
use crate::protocol::{control, outcome};
use crate::rules::{check_password, Username};
use crate::store::Registration;
use crate::transport::Transport;

/// Why a registration's prompts ended without an account.
enum GaveUp {
    /// The last try named a taken name.
    Taken,
    /// The last try broke a rule (or the passwords differed).
    Invalid,
    /// The store failed (already said and counted).
    StoreFailed,
}

impl<T: Transport> Session<'_, T> {
    /// `register`: closed or over the address's quota, it says so at once and
    /// asks nothing; else the prompts, then the durable write. Each command is
    /// counted once in `dccn_registrations_total`, by how it ended.
    pub(super) fn register(&mut self) -> Step {
        let metrics = self.svc.metrics.clone();
        if self.svc.registration == RegistrationMode::Closed {
            metrics.registration(RegistrationOutcome::Closed);
            self.say(outcome::REGISTRATION_CLOSED);
            return Ok(());
        }
        // Held until acknowledged; released on every other way out (`?` included).
        // The quota's counts unreadable (a shared quota's store failed): no
        // registration, rather than one the quota never saw.
        let reservation = match self.svc.registration_quota.reserve(self.peer.into()) {
            Ok(Some(reservation)) => reservation,
            Ok(None) => {
                metrics.registration(RegistrationOutcome::Limited);
                self.warn(format!("{} registration quota used up", self.peer));
                self.say(outcome::REGISTRATIONS_LIMITED);
                return Ok(());
            }
            Err(e) => {
                self.store_failed("registration quota failed", &e);
                return Ok(());
            }
        };
        let gave_up = |why: GaveUp| match why {
            GaveUp::Taken => metrics.registration(RegistrationOutcome::Taken),
            GaveUp::Invalid => metrics.registration(RegistrationOutcome::Invalid),
            GaveUp::StoreFailed => {}
        };
        let name = match self.new_username()? {
            Ok(name) => name,
            Err(why) => {
                gave_up(why);
                return Ok(());
            }
        };
        let Some(password) = self.new_password()? else {
            gave_up(GaveUp::Invalid);
            return Ok(());
        };
        let account = match NewAccount::new(&name, &password) {
            Ok(account) => account,
            Err(_) => {
                // new_password checked the rule already; kept for safety.
                self.say(outcome::PASSWORD_INVALID);
                gave_up(GaveUp::Invalid);
                return Ok(());
            }
        };
        match new_account::create(self.svc.store.as_ref(), account, self.svc.storage()) {
            Ok(Registration::Registered) => {
                reservation.acknowledged();
                metrics.registration(RegistrationOutcome::Ok);
                log::info!("{} registered user={name}", self.peer);
                self.say(outcome::REGISTERED);
            }
            Ok(Registration::NameTaken) => {
                gave_up(GaveUp::Taken);
                log::info!("{} register lost the race for user={name}", self.peer);
                self.say(outcome::NAME_TAKEN);
            }
            Err(e) => self.store_failed("register failed", &e),
        }
        Ok(())
    }

    /// Asks for a free, valid name, up to 3 tries; on giving up, says why.
    fn new_username(&mut self) -> Step<Result<Username, GaveUp>> {
        let mut last = GaveUp::Invalid;
        for _ in 0..MAX_PROMPT_TRIES {
            let raw = self.ask(control::USERNAME)?;
            let name = match Username::parse(&raw) {
                Ok(name) => name,
                Err(why) => {
                    self.say(&format!("{}: {why}", outcome::NAME_INVALID));
                    last = GaveUp::Invalid;
                    continue;
                }
            };
            match self.svc.store.exists(name.as_str()) {
                Ok(false) => return Ok(Ok(name)),
                Ok(true) => {
                    self.say(outcome::NAME_TAKEN);
                    last = GaveUp::Taken;
                }
                Err(e) => {
                    self.store_failed("register lookup failed", &e);
                    return Ok(Err(GaveUp::StoreFailed));
                }
            }
        }
        self.say(outcome::TOO_MANY_ATTEMPTS);
        Ok(Err(last))
    }

    /// Asks for a new password twice, up to 3 tries. The mismatch check comes
    /// before the rule. `None`: gave up (already said why).
    fn new_password(&mut self) -> Step<Option<String>> {
        for _ in 0..MAX_PROMPT_TRIES {
            let first = self.ask(control::PASSWORD)?;
            self.say(outcome::REPEAT_PASSWORD);
            let second = self.ask(control::PASSWORD)?;
            if first != second {
                self.say(outcome::PASSWORDS_DIFFER);
            } else if let Err(rule) = check_password(&first) {
                self.say(&format!("{}: {rule}", outcome::PASSWORD_INVALID));
            } else {
                return Ok(Some(first));
            }
        }
        self.say(outcome::TOO_MANY_ATTEMPTS);
        Ok(None)
    }

    pub(super) fn change_password(&mut self) -> Step {
        if !self.reauthenticate()? {
            return Ok(());
        }
        self.say("Choose a new password");
        let Some(password) = self.new_password()? else {
            return Ok(());
        };
        let name = self.current_user();
        let salt = crypto::new_salt();
        let (verifier, scram) = new_account::credentials(&password, &salt, self.svc.storage());
        match self
            .svc
            .store
            .change_password(&name, verifier.as_deref(), &salt, scram.as_ref())
        {
            Ok(true) => {
                log::info!("{} password changed user={name}", self.peer);
                self.say(outcome::PASSWORD_CHANGED);
            }
            Ok(false) => {
                // Removed meanwhile (by another session or the admin command).
                self.say(outcome::LOGIN_FAILED);
                self.user = None;
            }
            Err(e) => self.store_failed("change_password failed", &e),
        }
        Ok(())
    }

    pub(super) fn delete_account(&mut self) -> Step {
        if !self.reauthenticate()? {
            return Ok(());
        }
        let name = self.current_user();
        match self.svc.store.delete(&name) {
            Ok(true) => {
                log::info!("{} deleted account user={name}", self.peer);
                self.say(outcome::ACCOUNT_REMOVED);
                self.user = None;
            }
            Ok(false) => {
                // Removed meanwhile (by another session or the admin command),
                // as change_password handles it: this session is logged out.
                self.say(outcome::LOGIN_FAILED);
                self.user = None;
            }
            Err(e) => self.store_failed("delete_account failed", &e),
        }
        Ok(())
    }
}
