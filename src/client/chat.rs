//! Chat mode on the client (`shared/protocol-chat.md`): after `__chat__` both
//! sides send lines at any time.
//!
//! The client has one connection, and over TLS its state cannot be shared by
//! two threads, so one thread (the pump, [`Client::chat_pump`]) owns it: it
//! reads with a short deadline ([`CHAT_CLIENT_POLL`]) and, between reads,
//! sends the lines the person or the script gave it through a channel. The
//! cost is up to one poll interval before a typed line leaves, nothing for
//! incoming lines; for one person at a keyboard that is invisible.
//!
//! Two front ends feed the pump:
//! - [`chat_scripted`] (`run_client chat --user NAME`): standard input lines
//!   in, room lines out on standard output; at the end of input it says
//!   `/quit` and waits for `__quit__`.
//! - `Client::chat_interactive` (`chat` typed at the interactive client's
//!   menu): a rustyline editor with history and line editing; incoming lines
//!   are printed by rustyline's external printer above the prompt, which is
//!   then redrawn with what was being typed.

use super::dialogue::Client;
use super::error::{ClientError, Result, EXIT_OK, EXIT_REFUSED};
use super::lines::ServerLine;
use super::request::{read_one_line, Password};
use super::visible::visible;
use crate::codec::ReadError;
use crate::config::{CHAT_MAX_TEXT_BYTES, MAX_LINE_BYTES};
use crate::protocol::{chat, control, error, outcome};
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// How long the pump waits for a server line before it looks for lines to send.
pub const CHAT_CLIENT_POLL: Duration = Duration::from_millis(20);
/// After this long without sending anything the client sends `/ping`, so the
/// server's logged-in timeout (10 min) does not end a session that only listens
/// (the spec asks for half the timeout).
pub const CHAT_CLIENT_PING_AFTER: Duration = Duration::from_secs(300);

/// What the person or the script gives the pump.
pub enum Input {
    Line(String),
    /// No more input: say `/quit`.
    End,
}

/// How chat mode ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEnd {
    /// `__endchat__`: back at the logged-in menu (lockstep again).
    Left,
    /// `__quit__` (after `/quit`, or after `Error: <reason>`, kept here).
    Quit { error: Option<String> },
    /// The connection ended without `__quit__`.
    Closed,
}

impl Client {
    /// Runs chat mode until it ends: lines from `input` are sent, every room
    /// line is handed to `show`, its control characters escaped. Sends `/ping` after a quiet
    /// [`CHAT_CLIENT_PING_AFTER`] (and hides its `* pong`).
    pub fn chat_pump(
        &mut self,
        input: &Receiver<Input>,
        show: &mut dyn FnMut(&str),
    ) -> Result<ChatEnd> {
        let mut last_sent = Instant::now();
        let mut hidden_pongs = 0usize;
        let mut fatal: Option<String> = None;
        let mut input_open = true;
        loop {
            while input_open {
                match input.try_recv() {
                    Ok(Input::Line(line)) => self.send(&line),
                    Ok(Input::End) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.send(chat::QUIT);
                        input_open = false;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
                last_sent = Instant::now();
            }
            if input_open && last_sent.elapsed() >= CHAT_CLIENT_PING_AFTER {
                self.send(chat::PING);
                hidden_pongs += 1;
                last_sent = Instant::now();
            }
            let line = match self.conn.read_line(CHAT_CLIENT_POLL) {
                Ok(line) => line,
                Err(ReadError::TimedOut) => continue,
                Err(ReadError::Closed) => {
                    return match fatal {
                        Some(reason) => Err(ClientError::ServerSaid(reason)),
                        None => Ok(ChatEnd::Closed),
                    }
                }
                Err(e) => return Err(ClientError::Lost(e.to_string())),
            };
            self.trace.received(&line);
            match line.as_str() {
                control::ENDCHAT => return Ok(ChatEnd::Left),
                control::QUIT => return Ok(ChatEnd::Quit { error: fatal }),
                chat::PONG if hidden_pongs > 0 => hidden_pongs -= 1,
                other => match other.strip_prefix(error::PREFIX) {
                    Some(reason) => fatal = Some(reason.to_string()),
                    // A hostile server could send escape sequences (set the
                    // window title, clear the screen): shown escaped, as every
                    // other server line is (`visible`). Our server refuses
                    // control characters in chat text, so its lines pass as
                    // they are.
                    None => show(&visible(other)),
                },
            }
        }
    }

    /// Sends `chat` at a `__type__` prompt and reads up to `__chat__`. `Ok(None)`:
    /// chat mode began; `Ok(Some(line))`: refused with `line` (the server is at
    /// its logged-in `__type__` again, and `quit` was said).
    fn enter_chat(&mut self) -> Result<Option<String>> {
        self.send(chat::ENTER);
        let mut said = Vec::new();
        loop {
            let Some(line) = self.recv()? else {
                return Err(ClientError::Lost("the server closed the connection".into()));
            };
            match line {
                ServerLine::Text(t) if t == control::CHAT => return Ok(None),
                ServerLine::Text(t) => said.push(t),
                ServerLine::Type => {
                    self.send("quit");
                    let _ = self.recv();
                    let refusal = said
                        .into_iter()
                        .find(|l| {
                            [
                                outcome::CHAT_FULL,
                                outcome::CHAT_ALREADY_IN,
                                outcome::CHAT_NOT_FOR_NAME,
                                outcome::SERVER_ERROR,
                                outcome::UNRECOGNIZED,
                            ]
                            .contains(&l.as_str())
                        })
                        .unwrap_or_else(|| "the server did not enter the chat".into());
                    return Ok(Some(refusal));
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected __chat__ after chat, got {other:?}"
                    )))
                }
            }
        }
    }
}

/// Reads standard input lines into `tx` (then [`Input::End`]). Lines the
/// server would refuse by framing (over the line limit) are reported and
/// skipped, so a script cannot end its own session by accident.
fn feed_stdin(tx: Sender<Input>) {
    let mut stdin = io::stdin().lock();
    loop {
        match read_one_line(&mut stdin) {
            Ok(Some(line)) if line.len() > MAX_LINE_BYTES => {
                eprintln!("run_client: line of {} bytes not sent (limit {CHAT_MAX_TEXT_BYTES} for a message)", line.len());
            }
            Ok(Some(line)) => {
                if tx.send(Input::Line(line)).is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => {
                let _ = tx.send(Input::End);
                return;
            }
        }
    }
}

/// `run_client chat --user NAME`: log in, enter the room, standard input lines
/// in, room lines out. The password is the first line of standard input with
/// `--password-stdin`, else asked hidden on the terminal. Exit codes: 0 after
/// `/quit` (at the end of input), 1 refused (login or `chat`), 2 errors
/// (`Error: too slow`, a lost connection, ...).
pub fn chat_scripted(client: &mut Client, user: &str, password_stdin: bool) -> Result<u8> {
    let password = if password_stdin {
        // Straight from the locked stdin: a BufReader of its own would take
        // the chat lines behind the password too.
        read_stdin_password(&mut io::stdin().lock())?
    } else {
        match super::terminal::read_hidden("Password: ")? {
            Some(p) => Password::new(p),
            None => return Err(ClientError::Input("no password given".into())),
        }
    };
    if let Some(refusal) = client.log_in(user, &password)? {
        println!("{refusal}");
        return Ok(EXIT_REFUSED);
    }
    if let Some(refusal) = client.enter_chat()? {
        println!("{refusal}");
        return Ok(EXIT_REFUSED);
    }
    let (tx, rx) = mpsc::channel();
    // Detached: it blocks on standard input and ends with the process.
    thread::spawn(move || feed_stdin(tx));
    let mut out = io::stdout().lock();
    let end = client.chat_pump(&rx, &mut |line| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })?;
    match end {
        ChatEnd::Quit { error: None } => Ok(EXIT_OK),
        ChatEnd::Quit {
            error: Some(reason),
        } => Err(ClientError::ServerSaid(reason)),
        ChatEnd::Left => Err(ClientError::Protocol(
            "left the chat (/leave); a script ends with the end of its input".into(),
        )),
        ChatEnd::Closed => Err(ClientError::Lost("the server closed the connection".into())),
    }
}

fn read_stdin_password(input: &mut dyn BufRead) -> Result<Password> {
    match read_one_line(input) {
        Ok(Some(p)) => Ok(Password::new(p)),
        Ok(None) => Err(ClientError::Input(
            "expected the password on standard input, found its end".into(),
        )),
        Err(e) => Err(ClientError::Input(format!(
            "cannot read the password from standard input: {e}"
        ))),
    }
}

/// Whether a typed line ends chat mode (the server's rule: the whole line,
/// trailing spaces ignored).
fn ends_chat(line: &str) -> bool {
    matches!(line.trim_end_matches(' '), chat::LEAVE | chat::QUIT)
}

impl Client {
    /// Chat mode for a person (after `__chat__` in the interactive client):
    /// a rustyline editor reads what they type (line editing, history) while
    /// the pump prints room lines above the prompt through rustyline's external
    /// printer, which redraws the prompt and the half-typed line. Ctrl-D says
    /// `/leave` (back to the menu), Ctrl-C says `/quit`. When the server ends
    /// the chat (an error, its timeout), the person is told why at once and
    /// presses Enter: rustyline's `readline` cannot be ended from another thread.
    pub(super) fn chat_interactive(&mut self) -> Result<ChatEnd> {
        let input_error = |e: ReadlineError| ClientError::Input(format!("line editor: {e}"));
        let mut editor = DefaultEditor::new().map_err(input_error)?;
        let mut printer = editor.create_external_printer().map_err(input_error)?;
        println!("(chat: type to talk, /msg <user> <text>, /who, /ping, /leave or Ctrl-D back to the menu, /quit)");
        let (tx, rx) = mpsc::channel();
        // Set by the editor loop before it sends the line (or the Ctrl-C)
        // that ends the chat: then it no longer reads, and nobody is left to
        // press Enter.
        let person_ended = AtomicBool::new(false);
        let person_ended = &person_ended;
        thread::scope(|scope| {
            let pump = scope.spawn(move || {
                let end = self.chat_pump(&rx, &mut |line| {
                    let _ = printer.print(format!("{line}\n"));
                });
                // The server ended it (an error, a timeout, a closed
                // connection) while the editor waits for a line: told at once,
                // with the reason; the editor returns at the next Enter.
                if !person_ended.load(Ordering::SeqCst) {
                    let why = match &end {
                        Ok(ChatEnd::Quit {
                            error: Some(reason),
                        }) => ClientError::ServerSaid(reason.clone()).to_string(),
                        Ok(ChatEnd::Quit { error: None }) => "the server said goodbye".into(),
                        Ok(ChatEnd::Closed) => "the server closed the connection".into(),
                        Ok(ChatEnd::Left) => "the server ended chat mode".into(),
                        Err(e) => e.to_string(),
                    };
                    let _ = printer.print(format!("(the chat is over: {why}; press Enter)\n"));
                }
                end
            });
            loop {
                let typed = editor.readline("chat> ");
                if pump.is_finished() {
                    break;
                }
                let line = match typed {
                    Ok(line) => line,
                    Err(ReadlineError::Eof) => chat::LEAVE.to_string(),
                    Err(_) => {
                        person_ended.store(true, Ordering::SeqCst);
                        let _ = tx.send(Input::End);
                        break;
                    }
                };
                if line.len() > CHAT_MAX_TEXT_BYTES {
                    eprintln!(
                        "(not sent: {} bytes, a message has at most {CHAT_MAX_TEXT_BYTES})",
                        line.len()
                    );
                    continue;
                }
                if !line.is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let last = ends_chat(&line);
                if last {
                    person_ended.store(true, Ordering::SeqCst);
                }
                if tx.send(Input::Line(line)).is_err() || last {
                    break;
                }
            }
            pump.join()
                .unwrap_or_else(|_| Err(ClientError::Protocol("the chat pump panicked".into())))
        })
    }
}
