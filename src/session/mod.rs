//! One client's dialogue: the protocol's state machine.
//!
//! A [`Session`] drives the conversation as the original server did: display
//! lines, then a control line (`__type__`, `__username__`, `__password__`,
//! `__nonce__:<salt>:<nonce>`, `__quit__`), then one reply. It talks to a
//! [`LineConn`] and to the shared [`Services`]; it does not know whether the bytes
//! travel over TCP, TLS or memory, and the store does not know about sockets.
//!
//! The flows live in files of their own: `account.rs` (register,
//! change_password, delete_account) and `classic.rs` (the salt/nonce login and
//! re-authentication), `scram.rs` (SCRAM-SHA-256 login and re-authentication),
//! `chat.rs` (the chat room's session side).
//!
//! Every way a session can end is an [`End`], carried by `?`: the peer quit or
//! left, a framing rule was broken, or the server is shutting down.

mod account;
mod attempt;
mod chat;
mod classic;
mod scram;

use crate::chat::{ChatRoom, Room, TokenBucket};
use crate::codec::LineConn;
use crate::config::{
    ChatLimits, RegistrationMode, DEFAULT_LOGIN_GRACE, DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS,
    DEFAULT_SCRAM_ITERATIONS, TURN_WRITE_LIMIT,
};
use crate::crypto::FakeCredentials;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::new_account::Storage;
use crate::protocol::{command, control, error, outcome, LS_LISTING, MAIN_MENU, USER_MENU};
use crate::registration_quota::{self, RegistrationQuota};
use crate::rules::Username;
use crate::store::{Store, StoreError};
use crate::throttle::{SharedThrottle, Throttle};
use crate::transport::Transport;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every session shares: the store, the throttle, the fake-salt key, the
/// timeouts, the chat room and the shutdown flag.
pub struct Services {
    /// The store, whatever its engine.
    pub store: Arc<dyn Store>,
    /// The in-memory throttle (SQLite); unused when `shared_throttle` is set.
    pub throttle: Throttle,
    /// The throttle every server on the store shares (PostgreSQL), from
    /// [`Store::shared_throttle`]; when set, it decides instead of `throttle`.
    pub shared_throttle: Option<Arc<dyn SharedThrottle>>,
    /// Rate limit of the warnings a peer can cause.
    pub log_limit: LogLimit,
    pub fakes: FakeCredentials,
    pub login_timeout: Duration,
    /// How long the part of a session before login may last in all.
    pub login_grace: Duration,
    pub session_timeout: Duration,
    /// The total time one turn's output may take ([`TURN_WRITE_LIMIT`] in
    /// every real server; shorter in tests).
    pub turn_write_limit: Duration,
    /// PBKDF2 iterations of new SCRAM rows and of mock answers.
    pub scram_iterations: u32,
    /// `--classic-login off` makes this false: classic logins always fail and new
    /// passwords get no classic verifier.
    pub classic_login: bool,
    pub shutting_down: AtomicBool,
    /// The chat room (its limits come from `ServerConfig::chat`).
    pub room: Box<dyn ChatRoom>,
    /// Whether `register` is open to clients.
    pub registration: RegistrationMode,
    /// Acknowledged registrations per source address per 10 minutes: shared
    /// by every server on the store where the engine can (PostgreSQL), else
    /// in memory ([`registration_quota::for_store`]).
    pub registration_quota: Arc<dyn RegistrationQuota>,
    /// The counters `--metrics` serves (shared with the accept loop).
    pub metrics: Arc<Metrics>,
    /// Test hook: this command word panics the session (to show a panic stays
    /// inside one session). Only with the `test-hooks` feature, which only the
    /// tests turn on.
    #[cfg(feature = "test-hooks")]
    pub panic_word: Option<String>,
}

impl Services {
    pub fn new(
        store: impl Store + 'static,
        login_timeout: Duration,
        session_timeout: Duration,
    ) -> Self {
        Self::with_store(Arc::new(store), login_timeout, session_timeout)
    }

    /// As [`new`](Self::new), over a store the caller keeps a handle on too.
    pub fn with_store(
        store: Arc<dyn Store>,
        login_timeout: Duration,
        session_timeout: Duration,
    ) -> Self {
        let fakes = FakeCredentials::new(store.secret());
        let shared_throttle = store.shared_throttle();
        let registration_quota = registration_quota::for_store(
            store.as_ref(),
            DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS,
            DEFAULT_LOGIN_GRACE,
        );
        Services {
            store,
            throttle: Throttle::new(),
            shared_throttle,
            log_limit: LogLimit::new(),
            fakes,
            login_timeout,
            login_grace: DEFAULT_LOGIN_GRACE,
            session_timeout,
            turn_write_limit: TURN_WRITE_LIMIT,
            scram_iterations: DEFAULT_SCRAM_ITERATIONS,
            classic_login: true,
            shutting_down: AtomicBool::new(false),
            registration: RegistrationMode::Open,
            registration_quota,
            metrics: Arc::new(Metrics::new()),
            room: Box::new(Room::local(ChatLimits::default())),
            #[cfg(feature = "test-hooks")]
            panic_word: None,
        }
    }

    /// How new passwords are stored on this server.
    pub fn storage(&self) -> Storage {
        Storage {
            scram_iterations: self.scram_iterations,
            classic: self.classic_login,
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
    /// Checked and wrong (or an unknown name).
    Refused,
    /// Refused unchecked by the throttle (the client hears the same as `Refused`).
    Throttled,
    StoreFailed,
}

pub struct Session<'a, T> {
    conn: LineConn<T>,
    svc: &'a Services,
    peer: IpAddr,
    user: Option<Username>,
    /// When the part before login must end (the login grace), counted from
    /// connect and again from each return to the main menu.
    grace_ends: Instant,
    /// The chat rate limit, made at the first `chat` and kept for the session.
    chat_bucket: Option<TokenBucket>,
    /// The session logged in with `login_scram`: re-authenticate with SCRAM.
    by_scram: bool,
}

impl<'a, T: Transport> Session<'a, T> {
    pub fn new(conn: LineConn<T>, svc: &'a Services, peer: IpAddr) -> Self {
        Session {
            conn,
            svc,
            peer,
            user: None,
            grace_ends: Instant::now() + svc.login_grace,
            chat_bucket: None,
            by_scram: false,
        }
    }

    /// Runs the dialogue to its end, says goodbye if one is owed, and returns why
    /// it ended. Call it once; it takes `&mut self` so that a test or fuzzer over
    /// memory can still read what was written ([`into_conn`](Self::into_conn)).
    pub fn run(&mut self) -> End {
        self.say(outcome::CONNECTED);
        let end = loop {
            let logged_in = self.user.is_some();
            let step = match logged_in {
                false => self.main_menu(),
                true => self.user_menu(),
            };
            if let Err(end) = step {
                break end;
            }
            if logged_in && self.user.is_none() {
                // Back at the main menu (logout, account removed): a new grace.
                self.grace_ends = Instant::now() + self.svc.login_grace;
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
        self.svc.log_limit.flush(self.peer);
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
            None => {
                // Whichever comes first: this reply's deadline or the grace's end.
                let grace_left = self.grace_ends.saturating_duration_since(Instant::now());
                if grace_left.is_zero() {
                    return Err(End::Fatal(error::TIMED_OUT));
                }
                self.svc.login_timeout.min(grace_left)
            }
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
        #[cfg(feature = "test-hooks")]
        if self.svc.panic_word.as_deref() == Some(word) {
            panic!("test panic requested by the client");
        }
        Ok(word.to_string())
    }

    fn main_menu(&mut self) -> Step {
        match self.ask_command(MAIN_MENU)?.as_str() {
            "register" => self.register(),
            "login" => self.login(),
            command::LOGIN_SCRAM => self.login_scram(),
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
            crate::protocol::chat::ENTER => self.chat()?,
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

    /// Re-authentication of the logged-in user with the mechanism of its login;
    /// a refusal is said by the mechanism.
    fn reauthenticate(&mut self) -> Step<bool> {
        match self.by_scram {
            true => self.reauthenticate_scram(),
            false => self.reauthenticate_classic(),
        }
    }

    fn current_user(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// A warning the peer caused: rate-limited per source (see `log_limit.rs`).
    fn warn(&self, message: String) {
        self.svc.log_limit.warn(self.peer, message);
    }

    fn store_failed(&mut self, what: &str, e: &StoreError) {
        self.svc.metrics.store_error();
        log::error!("{} {what}: {e}", self.peer);
        self.say(outcome::SERVER_ERROR);
    }
}
