//! The terminal client: everything `run_client` does, below its flags.
//!
//! This module owns the client side of wire protocol v1 (`docs/PROTOCOL.md`):
//!
//! - the connection: TCP with connect, read and write timeouts, behind a
//!   [`Stream`] trait object; with [`ClientConfig::tls`] set, the socket is
//!   wrapped in TLS at connect time ([`crate::client_tls`]), and the dialogue
//!   never learns which stream it has ([`Client::connect`], [`Client::over`]);
//! - reading the server's lines ([`ServerLine`], bounded by the codec's line
//!   limit) and computing challenge responses locally ([`Challenge::answer`]):
//!   after `__nonce__:<salt>:<nonce>` the password never leaves the machine;
//! - the scripted dialogue ([`Client::run`] with a [`Request`]): it answers
//!   `__type__` with the right command words, logs in first where needed, and
//!   judges the result only by the protocol's exact outcome lines, never by menus;
//! - the interactive dialogue ([`Client::interact`] with a [`Terminal`]): it
//!   follows the server's prompts as the original client did;
//! - the trace of the exchange ([`Trace`]): every line with its direction, and
//!   the hashes of each challenge, never a password;
//! - the terminal's safety: passwords are read hidden, and Ctrl-C restores echo
//!   ([`install_interrupt_handler`]).
//!
//! Exit codes, shared with the binary: [`EXIT_OK`], [`EXIT_REFUSED`],
//! [`EXIT_ERROR`], [`EXIT_INTERRUPTED`].

use crate::client_tls::{TlsConnector, TlsSettings};
use crate::codec::{LineConn, ReadError};
use crate::config::{MAX_LINE_BYTES, WRITE_TIMEOUT};
use crate::crypto;
use crate::session::{control, outcome};
use crate::transport::{timed_out, Transport};
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The action was done.
pub const EXIT_OK: u8 = 0;
/// The server refused: wrong password, name taken, password rule, throttled,
/// or `Server error, try again later` (the store failed; trying later may work).
pub const EXIT_REFUSED: u8 = 1;
/// Usage, connection or protocol error: nothing was decided by the server.
pub const EXIT_ERROR: u8 = 2;
/// Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Longest wait for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the server's next line after a reply. The server answers
/// at once (its slowest step is a durable commit), so this only catches a dead
/// or wrong peer; it is not the time a person has to type.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What is shown in the trace instead of a password sent in clear.
const HIDDEN_PASSWORD: &str = "******** (password, hidden)";
/// Prefix of the server's fatal lines (`Error: <reason>`, then `__quit__`).
const ERROR_PREFIX: &str = "Error: ";
/// The reason a TLS port gives a plain-text client (`Error: TLS required`).
const TLS_REQUIRED: &str = "TLS required";

// ---- errors ---------------------------------------------------------------

/// Everything that can stop the client before the server decided anything.
/// Each message is one line a person can act on.
#[derive(Debug)]
pub enum ClientError {
    /// Bad input on the command line (a name with a line break, ...).
    Usage(String),
    /// A password could not be read (no terminal, end of input, ...).
    Input(String),
    /// The host name did not resolve.
    Resolve { host: String, reason: String },
    /// No TCP connection could be made.
    Connect { target: String, reason: String },
    /// The connection failed or closed in the middle of the dialogue.
    Lost(String),
    /// The server said nothing for this long.
    TimedOut(Duration),
    /// The server sent something the protocol does not allow here.
    Protocol(String),
    /// The server ended the session with `Error: <reason>`.
    ServerSaid(String),
    /// TLS could not be set up, or the handshake failed (untrusted certificate,
    /// wrong name, a server that does not speak TLS, ...).
    Tls(String),
    /// Ctrl-C.
    Interrupted,
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Interrupted => EXIT_INTERRUPTED,
            _ => EXIT_ERROR,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Usage(msg) | ClientError::Input(msg) => f.write_str(msg),
            ClientError::Resolve { host, reason } => {
                write!(f, "cannot resolve the host name {host:?}: {reason}")
            }
            ClientError::Connect { target, reason } => {
                write!(f, "cannot connect to {target}: {reason}")
            }
            ClientError::Lost(why) => write!(f, "connection lost: {why}"),
            ClientError::TimedOut(d) => write!(
                f,
                "the server sent nothing for {} s (is it a run_server, and is it alive?)",
                d.as_secs()
            ),
            ClientError::Protocol(why) => write!(f, "protocol error: {why}"),
            ClientError::ServerSaid(reason) if reason == TLS_REQUIRED => write!(
                f,
                "the server ended the session: {reason} (this port speaks TLS: add --tls, \
                 and --ca FILE if its certificate is self-signed)"
            ),
            ClientError::ServerSaid(reason) => write!(f, "the server ended the session: {reason}"),
            ClientError::Tls(msg) => write!(f, "TLS: {msg}"),
            ClientError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for ClientError {}

type Result<T, E = ClientError> = std::result::Result<T, E>;

// ---- the protocol's lines ---------------------------------------------------

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
fn fatal_reason(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(ERROR_PREFIX))
        .map(str::to_string)
}

// ---- passwords and requests -------------------------------------------------

/// A password held in memory; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// A new password and its repetition, sent at register / change_password.
#[derive(Debug, Clone)]
pub struct NewPassword {
    pub first: Password,
    pub repeat: Password,
}

impl NewPassword {
    /// The same password twice (what a script means).
    pub fn same(p: Password) -> Self {
        NewPassword {
            repeat: p.clone(),
            first: p,
        }
    }
}

/// What a scripted run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Register,
    Login,
    ChangePassword,
    DeleteAccount,
}

/// One scripted action with everything it needs.
#[derive(Debug, Clone)]
pub enum Request {
    Register {
        user: String,
        password: NewPassword,
    },
    Login {
        user: String,
        password: Password,
    },
    ChangePassword {
        user: String,
        current: Password,
        new: NewPassword,
    },
    DeleteAccount {
        user: String,
        password: Password,
    },
}

/// Where scripted passwords come from.
pub enum PasswordSource {
    /// A hidden prompt on the terminal.
    Prompt,
    /// One password per line (`--password-stdin`).
    Lines(Box<dyn BufRead>),
}

impl PasswordSource {
    pub fn stdin() -> Self {
        PasswordSource::Lines(Box::new(io::BufReader::new(io::stdin())))
    }

    /// The next password: `prompt` on the terminal, or the next line.
    fn next(&mut self, prompt: &str, what: &str) -> Result<Password> {
        match self {
            PasswordSource::Prompt => match read_hidden(prompt)? {
                Some(p) => Ok(Password(p)),
                None => Err(ClientError::Input(format!("no {what} given"))),
            },
            PasswordSource::Lines(input) => match read_one_line(input.as_mut()) {
                Ok(Some(p)) => Ok(Password(p)),
                Ok(None) => Err(ClientError::Input(format!(
                    "expected the {what} on standard input, found its end"
                ))),
                Err(e) => Err(ClientError::Input(format!(
                    "cannot read the {what} from standard input: {e}"
                ))),
            },
        }
    }

    fn is_prompt(&self) -> bool {
        matches!(self, PasswordSource::Prompt)
    }

    /// A new password: twice at a prompt (so a typo is caught, by the server),
    /// once from a script, which means the same password twice.
    fn next_new(&mut self, what: &str) -> Result<NewPassword> {
        if self.is_prompt() {
            let first = self.next(&format!("{}: ", capitalise(what)), what)?;
            let repeat = self.next(&format!("Repeat {what}: "), what)?;
            check_sendable_password(&first)?;
            check_sendable_password(&repeat)?;
            Ok(NewPassword { first, repeat })
        } else {
            let p = self.next("", what)?;
            check_sendable_password(&p)?;
            Ok(NewPassword::same(p))
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Reads one line and strips its LF or CR LF (nothing else: passwords are taken
/// exactly). `None` at end of input.
fn read_one_line(input: &mut dyn BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// A value sent as one protocol line must not break the framing.
fn check_line_value(what: &str, value: &str) -> Result<()> {
    if value.contains(['\n', '\r']) {
        return Err(ClientError::Usage(format!(
            "the {what} may not contain a line break"
        )));
    }
    if value.len() > MAX_LINE_BYTES {
        return Err(ClientError::Usage(format!(
            "the {what} is longer than the protocol's {MAX_LINE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Only a password sent in clear (register / change_password) meets the line
/// limit; at login only its hash travels.
fn check_sendable_password(p: &Password) -> Result<()> {
    check_line_value("password", p.expose())
}

/// Builds a request, reading the passwords it needs from `source`: for
/// change-password the current one first, then the new one.
pub fn read_request(action: Action, user: &str, source: &mut PasswordSource) -> Result<Request> {
    check_line_value("username", user)?;
    let user = user.to_string();
    Ok(match action {
        Action::Register => Request::Register {
            password: source.next_new("new password")?,
            user,
        },
        Action::Login => Request::Login {
            password: source.next("Password: ", "password")?,
            user,
        },
        Action::ChangePassword => Request::ChangePassword {
            current: source.next("Current password: ", "current password")?,
            new: source.next_new("new password")?,
            user,
        },
        Action::DeleteAccount => Request::DeleteAccount {
            password: source.next("Password: ", "password")?,
            user,
        },
    })
}

// ---- the trace ----------------------------------------------------------------

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

    fn received(&mut self, line: &str) {
        if self.out.is_some() {
            self.emit(&format!("S> {line}"));
        }
    }

    fn sent(&mut self, line: &str) {
        if self.out.is_some() {
            self.emit(&format!("C> {line}"));
        }
    }

    /// The computation of a response, with a way to check it by hand.
    fn challenge(&mut self, c: &Challenge, a: &Answer) {
        if self.out.is_none() {
            return;
        }
        let text = format!(
            "   salt     = {salt}\n\
             \x20  nonce    = {nonce}\n\
             \x20  verifier = SHA256(salt + password) = {verifier}\n\
             \x20  response = SHA256(nonce + verifier) = {response}\n\
             \x20  check: printf '%s' {salt} 'password' | sha256sum   (type your password for 'password')\n\
             \x20         printf '%s' {nonce} {verifier} | sha256sum",
            salt = c.salt,
            nonce = c.nonce,
            verifier = a.verifier,
            response = a.response,
        );
        self.emit(&text);
    }
}

// ---- the connection -----------------------------------------------------------

/// Any byte stream the dialogue can run over: a TCP socket, or a TLS stream
/// wrapping it.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Host, port, timeouts, and TLS.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    /// Also bounds the whole TLS handshake.
    pub reply_timeout: Duration,
    /// `Some`: speak TLS, verifying the server as these settings say.
    pub tls: Option<TlsSettings>,
}

impl ClientConfig {
    pub fn new(host: &str, port: u16) -> Self {
        ClientConfig {
            host: host.to_string(),
            port,
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
            tls: None,
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The stream plus, when it runs over TCP, a handle on the socket so reads can be
/// bounded by a deadline whatever layer (plain or TLS) sits on top.
struct Wire {
    io: Box<dyn Stream>,
    socket: Option<TcpStream>,
    deadline: Option<Instant>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(sock), Some(deadline)) = (&self.socket, self.deadline) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            sock.set_read_timeout(Some(left))?;
        }
        match self.io.read(buf) {
            // A receive timeout shows up as EAGAIN on Unix.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

impl Transport for Wire {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// Resolves `host` and connects to the first address that answers.
fn open_tcp(cfg: &ClientConfig) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Resolve {
            host: cfg.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, cfg.connect_timeout) {
            Ok(sock) => return Ok(sock),
            Err(e) => last_error = Some(e),
        }
    }
    let reason = match last_error {
        Some(e) => describe_connect_error(&e, cfg.connect_timeout),
        None => "the name has no address".to_string(),
    };
    Err(ClientError::Connect {
        target: cfg.target(),
        reason,
    })
}

fn describe_connect_error(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is run_server running?)".to_string()
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
            "no answer within {} s (wrong host or port, or a firewall?)",
            timeout.as_secs()
        ),
        _ => e.to_string(),
    }
}

/// What the server sent before its next prompt, and that prompt.
#[derive(Debug)]
struct Turn {
    lines: Vec<String>,
    prompt: Prompt,
}

/// A control line that asks something of the client (a challenge is merged with
/// the `__password__` that follows it).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prompt {
    Type,
    Username,
    Password,
    Challenge(Challenge),
    Quit,
}

impl Prompt {
    fn token(&self) -> &'static str {
        match self {
            Prompt::Type => control::TYPE,
            Prompt::Username => control::USERNAME,
            Prompt::Password => control::PASSWORD,
            Prompt::Challenge(_) => "__nonce__ + __password__",
            Prompt::Quit => control::QUIT,
        }
    }
}

/// Why a scripted action stopped early.
enum Halt {
    /// The server refused, with this line, then sent this prompt.
    Refused {
        line: String,
        prompt: Prompt,
    },
    Failed(ClientError),
}

impl From<ClientError> for Halt {
    fn from(e: ClientError) -> Self {
        Halt::Failed(e)
    }
}

/// What a scripted action ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The outcome line(s), to print.
    pub lines: Vec<String>,
    /// True when the server refused the action.
    pub refused: bool,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        if self.refused {
            EXIT_REFUSED
        } else {
            EXIT_OK
        }
    }
}

/// How an interactive session ended (all of them are clean).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server said `__quit__`.
    Quit,
    /// The server closed the connection.
    Closed,
    /// The person left at a prompt (Ctrl-D).
    Left,
}

/// A person at a terminal, for the interactive dialogue.
pub trait Terminal {
    /// Shows a display line.
    fn show(&mut self, line: &str);
    /// Reads a visible line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_line(&mut self, prompt: &str) -> Result<Option<String>>;
    /// Reads a hidden line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>>;
}

/// A client connected to a server, at any point of the dialogue.
pub struct Client {
    conn: LineConn<Wire>,
    trace: Trace,
    reply_timeout: Duration,
}

impl Client {
    /// Connects over TCP with the configured timeouts and, if configured, runs
    /// the TLS handshake at once, so a TLS failure is reported here.
    pub fn connect(cfg: &ClientConfig, mut trace: Trace) -> Result<Client> {
        // Trust anchors and the name to check first: a bad --ca is no reason to
        // connect.
        let tls = match &cfg.tls {
            Some(settings) => Some(TlsConnector::new(&cfg.host, settings)?),
            None => None,
        };
        let sock = open_tcp(cfg)?;
        let lost = |e: io::Error| ClientError::Lost(e.to_string());
        // Replies are short lines; Nagle would only delay them.
        let _ = sock.set_nodelay(true);
        // A server that stops reading must not block the client forever.
        sock.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(lost)?;
        let timer = sock.try_clone().map_err(lost)?;
        // The one place where the stream type is chosen; the dialogue below
        // only ever sees a `Stream`.
        let stream: Box<dyn Stream> = match &tls {
            Some(connector) => {
                Box::new(connector.handshake(sock, cfg.reply_timeout, &mut trace)?)
            }
            None => Box::new(sock),
        };
        Ok(Client::over(stream, Some(timer), cfg.reply_timeout, trace))
    }

    /// Runs the dialogue over any stream. `socket`, when given, is the TCP
    /// socket under it (or a clone), used to enforce `reply_timeout`.
    pub fn over(
        stream: Box<dyn Stream>,
        socket: Option<TcpStream>,
        reply_timeout: Duration,
        trace: Trace,
    ) -> Client {
        let wire = Wire {
            io: stream,
            socket,
            deadline: None,
        };
        Client {
            conn: LineConn::new(wire),
            trace,
            reply_timeout,
        }
    }

    // -- lines ------------------------------------------------------------

    /// The server's next line; `None` when it closed the connection.
    pub fn recv(&mut self) -> Result<Option<ServerLine>> {
        match self.conn.read_line(self.reply_timeout) {
            Ok(line) => {
                self.trace.received(&line);
                ServerLine::parse(&line).map(Some)
            }
            Err(ReadError::Closed) => Ok(None),
            Err(ReadError::TooLong) => Err(ClientError::Protocol(format!(
                "the server sent a line longer than {MAX_LINE_BYTES} bytes"
            ))),
            Err(ReadError::InvalidUtf8) => Err(ClientError::Protocol(
                "the server sent a line that is not UTF-8".to_string(),
            )),
            Err(ReadError::TimedOut) => Err(ClientError::TimedOut(self.reply_timeout)),
            Err(ReadError::Io(e)) => Err(ClientError::Lost(e.to_string())),
        }
    }

    /// Queues one reply line; it goes out before the next read (or [`flush`](Self::flush)).
    pub fn send(&mut self, line: &str) {
        self.trace.sent(line);
        self.conn.send(line);
    }

    /// Sends a password in clear (register / change_password); the trace shows stars.
    fn send_password(&mut self, password: &str) {
        self.trace.sent(HIDDEN_PASSWORD);
        self.conn.send(password);
    }

    /// Answers a challenge with the response computed here: the password itself
    /// is not sent.
    fn send_response(&mut self, challenge: &Challenge, password: &str) {
        let answer = challenge.answer(password);
        self.trace.challenge(challenge, &answer);
        self.send(&answer.response);
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> Result<()> {
        self.conn
            .flush()
            .map_err(|e| ClientError::Lost(e.to_string()))
    }

    /// Reads up to the next prompt, keeping the display lines before it.
    fn turn(&mut self) -> Result<Turn> {
        let mut lines = Vec::new();
        let mut challenge = None;
        loop {
            let Some(line) = self.recv()? else {
                return Err(match fatal_reason(&lines) {
                    Some(reason) => ClientError::ServerSaid(reason),
                    None => ClientError::Lost("the server closed the connection".to_string()),
                });
            };
            let prompt = match line {
                ServerLine::Text(text) => {
                    lines.push(text);
                    continue;
                }
                ServerLine::Challenge(c) => {
                    challenge = Some(c);
                    continue;
                }
                ServerLine::Password => match challenge.take() {
                    Some(c) => Prompt::Challenge(c),
                    None => Prompt::Password,
                },
                ServerLine::Type => Prompt::Type,
                ServerLine::Username => Prompt::Username,
                ServerLine::Quit => Prompt::Quit,
            };
            if challenge.is_some() {
                return Err(ClientError::Protocol(format!(
                    "a __nonce__ line was followed by {} instead of __password__",
                    prompt.token()
                )));
            }
            if prompt == Prompt::Quit {
                if let Some(reason) = fatal_reason(&lines) {
                    return Err(ClientError::ServerSaid(reason));
                }
            }
            return Ok(Turn { lines, prompt });
        }
    }

    // -- scripted ---------------------------------------------------------

    /// Runs one scripted action to its outcome, then says `quit`.
    ///
    /// A refusal stops the action at once (no retry): the client says `quit` if
    /// the server is at a menu, or just closes.
    pub fn run(&mut self, request: &Request) -> Result<Outcome> {
        match self.script(request) {
            Ok(lines) => {
                self.say_goodbye();
                Ok(Outcome {
                    lines,
                    refused: false,
                })
            }
            Err(Halt::Refused { line, prompt }) => {
                if prompt == Prompt::Type {
                    self.say_goodbye();
                }
                Ok(Outcome {
                    lines: vec![line],
                    refused: true,
                })
            }
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    /// The dialogue of each action, ending at a `__type__` prompt; returns the
    /// success lines.
    fn script(&mut self, request: &Request) -> Result<Vec<String>, Halt> {
        match request {
            Request::Register { user, password } => {
                self.command("register")?;
                self.expect(Prompt::Username)?;
                self.send(user);
                self.give_new_password(password)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::REGISTERED])
            }
            Request::Login { user, password } => self.login(user, password),
            Request::ChangePassword { user, current, new } => {
                self.login(user, current)?;
                self.send("change_password");
                self.answer_challenge(current)?;
                self.give_new_password(new)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::PASSWORD_CHANGED])
            }
            Request::DeleteAccount { user, password } => {
                self.login(user, password)?;
                self.send("delete_account");
                self.answer_challenge(password)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::ACCOUNT_REMOVED])
            }
        }
    }

    /// Logs in; on success the server is at its logged-in `__type__` prompt.
    fn login(&mut self, user: &str, password: &Password) -> Result<Vec<String>, Halt> {
        self.command("login")?;
        self.expect(Prompt::Username)?;
        self.send(user);
        self.answer_challenge(password)?;
        let turn = self.expect(Prompt::Type)?;
        confirmed(&turn, &[outcome::LOGIN_OK, outcome::ACCESS_GRANTED])
    }

    /// Waits for `__type__` and answers with a command word.
    fn command(&mut self, word: &str) -> Result<(), Halt> {
        self.expect(Prompt::Type)?;
        self.send(word);
        Ok(())
    }

    /// Waits for a challenge and answers it.
    fn answer_challenge(&mut self, password: &Password) -> Result<(), Halt> {
        let turn = self.next_turn()?;
        match &turn.prompt {
            Prompt::Challenge(c) => {
                self.send_response(c, password.expose());
                Ok(())
            }
            other => Err(unexpected("a challenge (__nonce__, __password__)", other)),
        }
    }

    /// Both `__password__` prompts of a new password.
    fn give_new_password(&mut self, p: &NewPassword) -> Result<(), Halt> {
        self.expect(Prompt::Password)?;
        self.send_password(p.first.expose());
        self.expect(Prompt::Password)?;
        self.send_password(p.repeat.expose());
        Ok(())
    }

    /// The next turn, stopped by any refusal line in it.
    fn next_turn(&mut self) -> Result<Turn, Halt> {
        let turn = self.turn()?;
        if let Some(line) = turn.lines.iter().find(|l| is_refusal(l)) {
            return Err(Halt::Refused {
                line: line.clone(),
                prompt: turn.prompt,
            });
        }
        if turn.lines.iter().any(|l| l == outcome::UNRECOGNIZED) {
            return Err(Halt::Failed(ClientError::Protocol(
                "the server did not recognise a command word (is it a protocol v1 server?)"
                    .to_string(),
            )));
        }
        Ok(turn)
    }

    /// The next turn, which must end with `want`.
    fn expect(&mut self, want: Prompt) -> Result<Turn, Halt> {
        let turn = self.next_turn()?;
        if turn.prompt != want {
            return Err(unexpected(want.token(), &turn.prompt));
        }
        Ok(turn)
    }

    /// Says `quit` at a `__type__` prompt and waits for `__quit__`. Best effort:
    /// the action is already decided, so a failure here changes nothing.
    fn say_goodbye(&mut self) {
        self.send("quit");
        let _ = self.turn();
    }

    // -- interactive --------------------------------------------------------

    /// Follows the server's prompts for a person: display lines are shown,
    /// `>> ` at `__type__`, `Username: ` at `__username__`, a hidden prompt at
    /// `__password__` (after a challenge, the response is sent instead).
    ///
    /// Ctrl-D at `>> ` says `quit`; at another prompt it closes the connection
    /// (a `quit` there would be taken as a name or a password).
    pub fn interact(&mut self, term: &mut dyn Terminal) -> Result<Ended> {
        let mut challenge: Option<Challenge> = None;
        let mut fatal: Option<String> = None;
        let mut quitting = false;
        loop {
            let Some(line) = self.recv()? else {
                return match fatal {
                    Some(reason) => Err(ClientError::ServerSaid(reason)),
                    None => Ok(Ended::Closed),
                };
            };
            match line {
                ServerLine::Text(text) => match text.strip_prefix(ERROR_PREFIX) {
                    // Reported once, as the error the session ends with.
                    Some(reason) => fatal = Some(reason.to_string()),
                    None => term.show(&text),
                },
                ServerLine::Challenge(c) => challenge = Some(c),
                ServerLine::Quit => {
                    return match fatal {
                        Some(reason) => Err(ClientError::ServerSaid(reason)),
                        None => Ok(Ended::Quit),
                    };
                }
                // After our `quit` the server only has `__quit__` left to say.
                _ if quitting => {
                    return Err(ClientError::Protocol(
                        "the server asked for more after quit".to_string(),
                    ))
                }
                ServerLine::Type => match bounded(term, ">> ", false)? {
                    Some(word) => self.send(&word),
                    None => {
                        self.send("quit");
                        quitting = true;
                    }
                },
                ServerLine::Username => match bounded(term, "Username: ", false)? {
                    Some(name) => self.send(&name),
                    None => return Ok(Ended::Left),
                },
                ServerLine::Password => match bounded(term, "Password: ", true)? {
                    Some(password) => match challenge.take() {
                        Some(c) => self.send_response(&c, &password),
                        None => self.send_password(&password),
                    },
                    None => return Ok(Ended::Left),
                },
            }
        }
    }
}

/// Reads a line from the person, asking again while it is over the protocol's
/// line limit (the server would end the session for it).
fn bounded(term: &mut dyn Terminal, prompt: &str, hidden: bool) -> Result<Option<String>> {
    loop {
        let line = match hidden {
            true => term.read_hidden(prompt)?,
            false => term.read_line(prompt)?,
        };
        match line {
            Some(l) if l.len() > MAX_LINE_BYTES => term.show(&format!(
                "(too long: at most {MAX_LINE_BYTES} bytes, try again)"
            )),
            other => return Ok(other),
        }
    }
}

/// The success lines `wanted`, all of which must be in `turn`.
fn confirmed(turn: &Turn, wanted: &[&str]) -> Result<Vec<String>, Halt> {
    for want in wanted {
        if !turn.lines.iter().any(|l| l == want) {
            return Err(Halt::Failed(ClientError::Protocol(format!(
                "the server neither confirmed ({want:?}) nor refused"
            ))));
        }
    }
    Ok(wanted.iter().map(|s| s.to_string()).collect())
}

fn unexpected(want: &str, got: &Prompt) -> Halt {
    Halt::Failed(ClientError::Protocol(format!(
        "expected {want} from the server, got {}",
        got.token()
    )))
}

// ---- the real terminal -------------------------------------------------------

/// Standard input and output, with hidden passwords read from the terminal.
#[derive(Default)]
pub struct StdTerminal;

impl Terminal for StdTerminal {
    fn show(&mut self, line: &str) {
        println!("{line}");
    }

    fn read_line(&mut self, prompt: &str) -> Result<Option<String>> {
        print!("{prompt}");
        let _ = io::stdout().flush();
        let line = read_one_line(&mut io::stdin().lock())
            .map_err(|e| ClientError::Input(format!("cannot read standard input: {e}")))?;
        if line.is_none() {
            // Ctrl-D leaves the cursor after the prompt.
            println!();
        }
        Ok(line)
    }

    fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>> {
        let _ = io::stdout().flush();
        read_hidden(prompt)
    }
}

/// A hidden line from the terminal (`/dev/tty`), whatever standard input is.
fn read_hidden(prompt: &str) -> Result<Option<String>> {
    match rpassword::prompt_password(prompt) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(ClientError::Interrupted),
        Err(e) => Err(ClientError::Input(format!(
            "cannot read a hidden password from the terminal ({e}); \
             in a script, use a subcommand with --password-stdin"
        ))),
    }
}

/// Makes Ctrl-C (and SIGTERM, SIGHUP) leave the terminal as it was: a hidden
/// password prompt turns echo off, and a process killed there would leave the
/// shell blind. The handler puts back the terminal settings saved now, then
/// exits with [`EXIT_INTERRUPTED`].
pub fn install_interrupt_handler() -> Result<()> {
    tty::save();
    ctrlc::set_handler(|| {
        tty::restore();
        let _ = writeln!(io::stderr());
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    })
    .map_err(|e| ClientError::Input(format!("cannot install the Ctrl-C handler: {e}")))
}

#[cfg(unix)]
mod tty {
    use std::fs::{File, OpenOptions};
    use std::os::fd::AsRawFd;
    use std::sync::OnceLock;

    /// The controlling terminal and its settings before any prompt.
    static SAVED: OnceLock<(File, libc::termios)> = OnceLock::new();

    pub fn save() {
        // No terminal (a script, CI): nothing to restore.
        let Ok(tty) = OpenOptions::new().read(true).write(true).open("/dev/tty") else {
            return;
        };
        let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `tty` is an open descriptor and `term` is writable memory of
        // the right type; tcgetattr fills all of it when it returns 0.
        if unsafe { libc::tcgetattr(tty.as_raw_fd(), term.as_mut_ptr()) } == 0 {
            // SAFETY: initialised by the successful tcgetattr above.
            let term = unsafe { term.assume_init() };
            let _ = SAVED.set((tty, term));
        }
    }

    pub fn restore() {
        if let Some((tty, term)) = SAVED.get() {
            // SAFETY: a valid descriptor and a termios filled by tcgetattr.
            unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, term) };
        }
    }
}

#[cfg(not(unix))]
mod tty {
    pub fn save() {}
    pub fn restore() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryTransport;
    use std::sync::{Arc, Mutex};

    const SALT: &str = "6d5da35ec7a5497e9b96ce8e88562747";
    const NONCE: &str = "9f1c2b7e44d0a3b58e6f7a1c0d2e3f41";
    const PASSWORD: &str = "Passw0rdDemo";
    const VERIFIER: &str = "4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029";
    const RESPONSE: &str = "0fcc62b2f3faa9b521b798dd47a8ae5060962cdb845bbb6f3b68a438b3a6baf6";

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A server's whole transcript up front; what the client sends is kept.
    struct Recorded {
        input: MemoryTransport,
        sent: Shared,
    }

    impl Read for Recorded {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A client reading `server_lines`; returns it, what it sent, and its trace.
    fn scripted(server_lines: &[&str]) -> (Client, Shared, Shared) {
        let mut input = server_lines.join("\n");
        input.push('\n');
        let sent = Shared::default();
        let trace = Shared::default();
        let stream = Recorded {
            input: MemoryTransport::new(input),
            sent: sent.clone(),
        };
        let client = Client::over(
            Box::new(stream),
            None,
            REPLY_TIMEOUT,
            Trace::to(Box::new(trace.clone())),
        );
        (client, sent, trace)
    }

    fn nonce_line() -> String {
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

    #[test]
    fn scripted_login_sends_the_response_and_never_the_password() {
        let nonce = nonce_line();
        let (mut client, sent, trace) = scripted(&[
            "Connected to server",
            "Pick one, any wording",
            "__type__",
            "__username__",
            &nonce,
            "__password__",
            "Successfully login",
            "Access granted!",
            "__type__",
            "__quit__",
        ]);
        let request = Request::Login {
            user: "alice".into(),
            password: Password::new(PASSWORD),
        };
        let outcome = client.run(&request).unwrap();
        assert_eq!(outcome.lines, ["Successfully login", "Access granted!"]);
        assert_eq!(outcome.exit_code(), EXIT_OK);
        assert_eq!(sent.text(), format!("login\nalice\n{RESPONSE}\nquit\n"));
        let trace = trace.text();
        assert!(trace.contains(&format!("S> {nonce}")));
        assert!(trace.contains(&format!("C> {RESPONSE}")));
        assert!(trace.contains(&format!("verifier = SHA256(salt + password) = {VERIFIER}")));
        assert!(!trace.contains(PASSWORD));
    }

    #[test]
    fn scripted_register_stops_at_the_first_refusal() {
        let (mut client, sent, trace) = scripted(&[
            "__type__",
            "__username__",
            "__password__",
            "Repeat password",
            "__password__",
            "Password is invalid: needs a digit",
            "__password__",
        ]);
        let request = Request::Register {
            user: "bob".into(),
            password: NewPassword::same(Password::new("weakpass")),
        };
        let outcome = client.run(&request).unwrap();
        assert!(outcome.refused);
        assert_eq!(outcome.lines, ["Password is invalid: needs a digit"]);
        // Sent twice, once per prompt, and nothing after the refusal.
        assert_eq!(sent.text(), "register\nbob\nweakpass\nweakpass\n");
        assert!(trace.text().contains("C> ******** (password, hidden)"));
        assert!(!trace.text().contains("weakpass"));
    }

    #[test]
    fn refusal_at_a_menu_says_quit() {
        let (mut client, sent, _) = scripted(&[
            "__type__",
            "__username__",
            &nonce_line(),
            "__password__",
            "User or password incorrect",
            "__type__",
            "__quit__",
        ]);
        let request = Request::Login {
            user: "alice".into(),
            password: Password::new("wrong"),
        };
        let outcome = client.run(&request).unwrap();
        assert_eq!(outcome.exit_code(), EXIT_REFUSED);
        assert!(sent.text().ends_with("quit\n"));
    }

    #[test]
    fn server_error_line_then_quit_is_a_session_error() {
        let (mut client, _, _) = scripted(&["Error: server busy", "__quit__"]);
        let request = Request::Login {
            user: "alice".into(),
            password: Password::new(PASSWORD),
        };
        match client.run(&request) {
            Err(e @ ClientError::ServerSaid(_)) => {
                assert_eq!(e.to_string(), "the server ended the session: server busy");
                assert_eq!(e.exit_code(), EXIT_ERROR);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unexpected_prompt_and_early_close_are_errors() {
        let (mut client, _, _) = scripted(&["__type__", "__password__"]);
        let login = Request::Login {
            user: "alice".into(),
            password: Password::new(PASSWORD),
        };
        assert!(matches!(client.run(&login), Err(ClientError::Protocol(_))));
        let (mut client, _, _) = scripted(&["__type__"]);
        assert!(matches!(client.run(&login), Err(ClientError::Lost(_))));
    }

    /// A terminal that types from a list and records what it was shown.
    struct Typist {
        answers: Vec<Option<&'static str>>,
        shown: Vec<String>,
        prompts: Vec<String>,
    }

    impl Terminal for Typist {
        fn show(&mut self, line: &str) {
            self.shown.push(line.to_string());
        }
        fn read_line(&mut self, prompt: &str) -> Result<Option<String>> {
            self.prompts.push(prompt.to_string());
            Ok(self.answers.remove(0).map(str::to_string))
        }
        fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>> {
            self.read_line(&format!("(hidden) {prompt}"))
        }
    }

    #[test]
    fn interactive_follows_the_prompts() {
        let nonce = nonce_line();
        let (mut client, sent, _) = scripted(&[
            "Connected to server",
            "__type__",
            "__username__",
            &nonce,
            "__password__",
            "Access granted!",
            "__type__",
            "__quit__",
        ]);
        let mut term = Typist {
            answers: vec![Some("login"), Some("alice"), Some(PASSWORD), None],
            shown: Vec::new(),
            prompts: Vec::new(),
        };
        assert_eq!(client.interact(&mut term).unwrap(), Ended::Quit);
        assert_eq!(
            term.prompts,
            [">> ", "Username: ", "(hidden) Password: ", ">> "]
        );
        assert_eq!(term.shown, ["Connected to server", "Access granted!"]);
        // Ctrl-D at the menu said quit.
        assert_eq!(sent.text(), format!("login\nalice\n{RESPONSE}\nquit\n"));
    }

    #[test]
    fn password_source_lines_strip_only_the_line_end() {
        let mut source = PasswordSource::Lines(Box::new(io::Cursor::new(
            b" Old Pass1 \r\nNew\tPass2\n".to_vec(),
        )));
        match read_request(Action::ChangePassword, "alice", &mut source).unwrap() {
            Request::ChangePassword { current, new, .. } => {
                assert_eq!(current.expose(), " Old Pass1 ");
                assert_eq!(new.first.expose(), "New\tPass2");
                assert_eq!(new.repeat.expose(), "New\tPass2");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_stdin_line_and_line_breaks_in_names_are_refused() {
        let mut empty = PasswordSource::Lines(Box::new(io::Cursor::new(Vec::new())));
        assert!(matches!(
            read_request(Action::Login, "alice", &mut empty),
            Err(ClientError::Input(_))
        ));
        let mut one = PasswordSource::Lines(Box::new(io::Cursor::new(b"x\n".to_vec())));
        assert!(matches!(
            read_request(Action::Login, "alice\nquit", &mut one),
            Err(ClientError::Usage(_))
        ));
    }

    #[test]
    fn password_debug_hides_it() {
        assert_eq!(format!("{:?}", Password::new("s3cret")), "Password(hidden)");
    }
}
