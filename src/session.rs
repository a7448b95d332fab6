//! One client's dialogue: the protocol's state machine.
//!
//! A [`Session`] drives the conversation as the original server did: display
//! lines, then a control line (`__type__`, `__username__`, `__password__`,
//! `__nonce__:<salt>:<nonce>`, `__quit__`), then one reply. It talks to a
//! [`LineConn`] and to the shared [`Services`]; it does not know whether the bytes
//! travel over TCP, TLS or memory, and the store does not know about sockets.
//!
//! Every way a session can end is an [`End`], carried by `?`: the peer quit or
//! left, a framing rule was broken, or the server is shutting down.

use crate::codec::LineConn;
use crate::config::MAX_PROMPT_TRIES;
use crate::crypto::{self, FakeCredentials};
use crate::protocol::{control, error, outcome, LS_LISTING, MAIN_MENU, USER_MENU};
use crate::rules::{check_password, Username};
use crate::store::{Registration, StoreError, UserRecord, UserStore};
use crate::throttle::Throttle;
use crate::transport::Transport;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What every session shares: the store, the throttle, the fake-salt key, the
/// timeouts and the shutdown flag.
pub struct Services {
    pub store: UserStore,
    pub throttle: Throttle,
    pub fakes: FakeCredentials,
    pub login_timeout: Duration,
    pub session_timeout: Duration,
    pub shutting_down: AtomicBool,
    /// Test hook: this command word panics the session (to show a panic stays
    /// inside one session). `None` in every real server.
    pub panic_word: Option<String>,
}

impl Services {
    pub fn new(store: UserStore, login_timeout: Duration, session_timeout: Duration) -> Self {
        let fakes = FakeCredentials::new(store.secret());
        Services {
            store,
            throttle: Throttle::new(),
            fakes,
            login_timeout,
            session_timeout,
            shutting_down: AtomicBool::new(false),
            panic_word: None,
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The client chose `quit`.
    Quit,
    /// The peer went away (or the connection failed) with nothing owed to it.
    Gone(String),
    /// A rule was broken or the server is stopping: `Error: <reason>`, `__quit__`.
    Fatal(&'static str),
}

type Step<T = ()> = Result<T, End>;

/// Result of a salt/nonce challenge.
enum Proof {
    Accepted,
    Refused,
    StoreFailed,
}

pub struct Session<'a, T> {
    conn: LineConn<T>,
    svc: &'a Services,
    peer: IpAddr,
    user: Option<Username>,
}

impl<'a, T: Transport> Session<'a, T> {
    pub fn new(conn: LineConn<T>, svc: &'a Services, peer: IpAddr) -> Self {
        Session {
            conn,
            svc,
            peer,
            user: None,
        }
    }

    /// Runs the dialogue to its end, says goodbye if one is owed, and returns why
    /// it ended. Call it once; it takes `&mut self` so that a test or fuzzer over
    /// memory can still read what was written ([`into_conn`](Self::into_conn)).
    pub fn run(&mut self) -> End {
        self.say(outcome::CONNECTED);
        let end = loop {
            let step = match self.user.is_some() {
                false => self.main_menu(),
                true => self.user_menu(),
            };
            if let Err(end) = step {
                break end;
            }
        };
        match &end {
            End::Quit => self.say(control::QUIT),
            End::Fatal(reason) => {
                self.say(&format!("{}{reason}", error::PREFIX));
                self.say(control::QUIT);
            }
            End::Gone(_) => {}
        }
        self.conn.close();
        end
    }

    /// Hands back the connection (for tests over memory).
    pub fn into_conn(self) -> LineConn<T> {
        self.conn
    }

    fn say(&mut self, line: &str) {
        self.conn.send(line);
    }

    /// Sends a control line and reads the one reply it asks for.
    fn ask(&mut self, control_line: &str) -> Step<String> {
        self.say(control_line);
        let timeout = match self.user {
            None => self.svc.login_timeout,
            Some(_) => self.svc.session_timeout,
        };
        let result = self.conn.read_line(timeout);
        if self.svc.is_shutting_down() {
            return Err(End::Fatal(error::SHUTTING_DOWN));
        }
        result.map_err(|e| match e.reason() {
            Some(reason) => End::Fatal(reason),
            None => End::Gone(e.to_string()),
        })
    }

    /// `__type__`, with the command word trimmed.
    fn ask_command(&mut self, menu: &str) -> Step<String> {
        self.say(menu);
        let word = self.ask(control::TYPE)?;
        let word = word.trim_matches(' ');
        if self.svc.panic_word.as_deref() == Some(word) {
            panic!("test panic requested by the client");
        }
        Ok(word.to_string())
    }

    fn main_menu(&mut self) -> Step {
        match self.ask_command(MAIN_MENU)?.as_str() {
            "register" => self.register(),
            "login" => self.login(),
            "quit" => Err(End::Quit),
            _ => {
                self.say(outcome::UNRECOGNIZED);
                Ok(())
            }
        }
    }

    fn user_menu(&mut self) -> Step {
        match self.ask_command(USER_MENU)?.as_str() {
            "ls" => self.say(LS_LISTING),
            "whoami" => {
                let name = self.user.as_ref().map_or("", |u| u.as_str());
                let line = format!("You are {name}");
                self.say(&line);
            }
            "change_password" => self.change_password()?,
            "delete_account" => self.delete_account()?,
            "logout" => {
                log::debug!("{} logout user={}", self.peer, self.current_user());
                self.user = None;
            }
            "quit" => return Err(End::Quit),
            _ => self.say(outcome::UNRECOGNIZED),
        }
        Ok(())
    }

    fn current_user(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    fn store_failed(&mut self, what: &str, e: &StoreError) {
        log::error!("{} {what}: {e}", self.peer);
        self.say(outcome::SERVER_ERROR);
    }

    // ---- register -------------------------------------------------------

    fn register(&mut self) -> Step {
        let Some(name) = self.new_username()? else {
            return Ok(());
        };
        let Some(password) = self.new_password()? else {
            return Ok(());
        };
        let salt = crypto::new_salt();
        let record = UserRecord {
            login: name.to_string(),
            verifier: crypto::verifier(&salt, &password),
            salt,
        };
        match self.svc.store.register(record) {
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

    // ---- login and re-authentication -------------------------------------

    fn login(&mut self) -> Step {
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
        let known = record.is_some();
        let (salt, verifier) = match record {
            Some(r) => (r.salt, r.verifier),
            None => (fake_salt, fake_verifier),
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
        if matches && known {
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
    fn reauthenticate(&mut self) -> Step<bool> {
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

    fn change_password(&mut self) -> Step {
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
        match self.svc.store.change_password(&name, &verifier, &salt) {
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

    fn delete_account(&mut self) -> Step {
        if !self.reauthenticate()? {
            return Ok(());
        }
        let name = self.current_user();
        match self.svc.store.delete(&name) {
            Ok(_) => {
                log::info!("{} deleted account user={name}", self.peer);
                self.say(outcome::ACCOUNT_REMOVED);
                self.user = None;
            }
            Err(e) => self.store_failed("delete_account failed", &e),
        }
        Ok(())
    }
}
