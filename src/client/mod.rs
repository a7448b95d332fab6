//! The terminal client: everything `run_client` does, below its flags.
//!
//! This module owns the client side of wire protocol v1 (`docs/PROTOCOL.md`):
//!
//! - the connection: TCP with connect, read and write timeouts, behind a
//!   [`Stream`] trait object; with [`ClientConfig::tls`] set, the socket is
//!   wrapped in TLS at connect time ([`tls`]), and the dialogue never learns
//!   which stream it has ([`Client::connect`], [`Client::over`]);
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
//!
//! One file per concept:
//!
//! - `error.rs`: [`ClientError`], what stops the client, and the exit codes;
//! - `request.rs`: passwords and the scripted [`Request`]s, read by
//!   [`read_request`] from a [`PasswordSource`];
//! - `connection.rs`: [`ClientConfig`], TCP connect with its timeouts, and the
//!   [`Stream`] the dialogue runs over;
//! - `tls.rs` ([`tls`]): the client's TLS, trust and handshake;
//! - `lines.rs`: the protocol's lines, [`ServerLine`], [`Challenge`] and its
//!   [`Answer`], and which outcome lines are refusals ([`is_refusal`]);
//! - `dialogue.rs`: the [`Client`] itself: connect, lines, turns up to a prompt;
//! - `scripted.rs`: a scripted [`Request`] run to its [`Outcome`];
//! - `interactive.rs`: a person at a [`Terminal`], to the session's [`Ended`];
//! - `chat.rs` ([`chat`]): chat mode, full duplex: the pump, the scripted
//!   `run_client chat` and the interactive room on a line editor;
//! - `scram.rs`: the client's side of a SCRAM-SHA-256 exchange ([`Mechanism`]);
//! - `trace.rs`: the [`Trace`] of the exchange;
//! - `terminal.rs`: the person's side: [`Terminal`], [`StdTerminal`], hidden
//!   passwords and the Ctrl-C handler;
//! - `visible.rs`: server text made safe for a terminal ([`visible`]).

pub mod chat;
mod connection;
mod dialogue;
mod error;
mod interactive;
mod lines;
mod request;
mod scram;
mod scripted;
mod terminal;
pub mod tls;
mod trace;
mod visible;

pub use connection::{ClientConfig, Stream, CONNECT_TIMEOUT, REPLY_TIMEOUT};
pub use dialogue::Client;
pub use error::{ClientError, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED};
pub use interactive::{converse, Dropped, Ended};
pub use lines::{is_refusal, Answer, Challenge, ServerLine};
pub use request::{read_request, Action, NewPassword, Password, PasswordSource, Request};
pub use scram::IMPOSTOR;
pub use scripted::{Mechanism, Outcome};
pub use terminal::{install_interrupt_handler, StdTerminal, Terminal, Typed};
pub use trace::Trace;
pub use visible::visible;
