//! Account flows: register, change_password, delete_account.
//!
//! Each asks for a new name or password under the rules (3 tries), then writes
//! to the store; a re-authentication comes first where the account exists.

use super::{Session, Step};
use crate::config::MAX_PROMPT_TRIES;
use crate::crypto;
use crate::protocol::{control, outcome};
use crate::rules::{check_password, Username};
use crate::store::{Registration, UserRecord};
use crate::transport::Transport;

impl<T: Transport> Session<'_, T> {
    pub(super) fn register(&mut self) -> Step {
        let Some(name) = self.new_username()? else {
            return Ok(());
        };
        let Some(password) = self.new_password()? else {
            return Ok(());
        };
        let salt = crypto::new_salt();
        let verifier = crypto::verifier(&salt, &password);
        let scram = self.new_scram_row(&verifier, &salt);
        let record = UserRecord {
            login: name.to_string(),
            verifier: self.svc.classic_login.then_some(verifier),
            salt,
        };
        match self.svc.store.register(record, scram) {
            Ok(Registration::Registered) => {
                log::info!("{} registered user={name}", self.peer);
                self.say(outcome::REGISTERED);
            }
            Ok(Registration::NameTaken) => {
                log::info!("{} register lost the race for user={name}", self.peer);
                self.say(outcome::NAME_TAKEN);
            }
            Err(e) => self.store_failed("register failed", &e),
        }
        Ok(())
    }

    /// Asks for a free, valid name, up to 3 tries. `None`: gave up (already said why).
    fn new_username(&mut self) -> Step<Option<Username>> {
        for _ in 0..MAX_PROMPT_TRIES {
            let raw = self.ask(control::USERNAME)?;
            let name = match Username::parse(&raw) {
                Ok(name) => name,
                Err(why) => {
                    self.say(&format!("{}: {why}", outcome::NAME_INVALID));
                    continue;
                }
            };
            match self.svc.store.exists(name.as_str()) {
                Ok(false) => return Ok(Some(name)),
                Ok(true) => self.say(outcome::NAME_TAKEN),
                Err(e) => {
                    self.store_failed("register lookup failed", &e);
                    return Ok(None);
                }
            }
        }
        self.say(outcome::TOO_MANY_ATTEMPTS);
        Ok(None)
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
        let verifier = crypto::verifier(&salt, &password);
        let scram = self.new_scram_row(&verifier, &salt);
        let classic = self.svc.classic_login.then_some(verifier.as_str());
        match self
            .svc
            .store
            .change_password(&name, classic, &salt, scram.as_ref())
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
