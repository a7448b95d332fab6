//! What can stop the client before the server decided anything
//! ([`ClientError`], one line a person can act on), and the process exit codes
//! shared with the binary.

use super::visible::visible;
use std::fmt;
use std::time::Duration;

/// The action was done.
pub const EXIT_OK: u8 = 0;
/// The server refused: wrong password, name taken, password rule, throttled,
/// or `Server error, try again later` (the store failed; trying later may work).
pub const EXIT_REFUSED: u8 = 1;
/// Usage, connection or protocol error: nothing was decided by the server.
pub const EXIT_ERROR: u8 = 2;
/// Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The reason a TLS port gives a plain-text client (`Error: TLS required`).
const TLS_REQUIRED: &str = "TLS required";

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
    /// The server asked for a login password (after `login`, or at the
    /// re-authentication of `change_password` / `delete_account`) with a bare
    /// `__password__`, no challenge before it: the password is not sent.
    PasswordWithoutChallenge,
    /// The server ended the session with `Error: <reason>`.
    ServerSaid(String),
    /// TLS could not be set up, or the handshake failed (untrusted certificate,
    /// wrong name, a server that does not speak TLS, ...).
    Tls(String),
    /// The server's SCRAM challenge was refused (iteration count out of range,
    /// nonce not ours, ...): the client closed without replying.
    ScramRefused(String),
    /// The server did not prove it knows the credentials (SCRAM `v=` wrong or
    /// missing): it may be an impostor.
    ServerNotAuthenticated(String),
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
            // Server text inside (a reason, a line) is made visible: it must
            // not drive the terminal the error is printed on.
            ClientError::Protocol(why) => write!(f, "protocol error: {}", visible(why)),
            ClientError::ServerSaid(reason) if reason == TLS_REQUIRED => write!(
                f,
                "the server ended the session: {reason} (this port speaks TLS: add --tls, \
                 and --ca FILE if its certificate is self-signed)"
            ),
            ClientError::ServerSaid(reason) => {
                write!(f, "the server ended the session: {}", visible(reason))
            }
            ClientError::PasswordWithoutChallenge => f.write_str(
                "protocol error: the server asked for the password without a challenge \
                 (__password__ with no __nonce__ before it); the password was not sent",
            ),
            ClientError::Tls(msg) => write!(f, "TLS: {msg}"),
            ClientError::ScramRefused(msg) => write!(f, "SCRAM: {msg}"),
            ClientError::ServerNotAuthenticated(msg) => write!(f, "SCRAM: {msg}"),
            ClientError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The client's results: an error is a [`ClientError`] unless said otherwise.
pub(super) type Result<T, E = ClientError> = std::result::Result<T, E>;
