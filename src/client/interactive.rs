//! The interactive dialogue: the client follows the server's prompts for a
//! person at a [`Terminal`], as the original client did.
//!
//! While it waits for the person at `>> ` or `Username: `, it also watches the
//! connection: a server that ends an idle session (its reply deadline, its
//! login grace, a shutdown) is reported at once, in one line, not after the
//! person has typed. [`converse`] then carries on over a new connection: before
//! login the next command typed goes over it (nothing was lost); after login
//! the person is back at the main menu of the new connection.

use super::chat::ChatEnd;
use super::connection::ClientConfig;
use super::dialogue::Client;
use super::error::{ClientError, Result};
use super::lines::{Challenge, ServerLine};
use super::scram::{is_credential_refusal, ScramEnd};
use super::terminal::{Terminal, Typed};
use super::trace::Trace;
use crate::config::MAX_LINE_BYTES;
use crate::protocol::{control, error, outcome};

/// How an interactive session ended (all of them are clean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The server said `__quit__`.
    Quit,
    /// The server closed the connection.
    Closed,
    /// The person left at a prompt (Ctrl-D).
    Left,
    /// The server ended the session while the person was idle at a prompt.
    Dropped(Dropped),
}

/// A session the server ended while the client waited for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The reason of its `Error: <reason>` line, if it sent one.
    pub reason: Option<String>,
    /// Whether the person was logged in.
    pub logged_in: bool,
}

impl Dropped {
    /// One line: what happened, and what happens next.
    fn explain(&self) -> String {
        let what = match self.reason.as_deref() {
            Some(error::TIMED_OUT) => {
                "the server ended the session while you were idle (timed out)".to_string()
            }
            Some(reason) => format!("the server ended the session ({reason})"),
            None => "the server closed the connection".to_string(),
        };
        match self.logged_in {
            true => format!("run_client: {what}; you are logged out: a new connection follows."),
            false => format!(
                "run_client: {what}; type your command as usual: it goes over a new connection."
            ),
        }
    }
}

/// The whole interactive run: sessions one after another, over new connections
/// when the server ends an idle one (see the module's doc). Each connection gets
/// a trace from `trace`.
pub fn converse(
    cfg: &ClientConfig,
    trace: &dyn Fn() -> Trace,
    term: &mut dyn Terminal,
) -> Result<Ended> {
    let mut client = Client::connect(cfg, trace())?;
    let mut first_command = None;
    loop {
        let dropped = match client.interact_from(term, first_command.take())? {
            Ended::Dropped(dropped) => dropped,
            other => return Ok(other),
        };
        term.show(&dropped.explain());
        if dropped.logged_in {
            client = Client::connect(cfg, trace())?;
            continue;
        }
        // Nothing to lose before login: the next command typed goes over the
        // new connection, as if typed at its first prompt.
        let Some(word) = bounded(term, ">> ", false)? else {
            return Ok(Ended::Left);
        };
        client = Client::connect(cfg, trace())?;
        term.show("(reconnected to the server)");
        client.skip_to_first_prompt()?;
        first_command = Some(word);
    }
}

impl Client {
    /// Follows the server's prompts for a person: display lines are shown,
    /// `>> ` at `__type__`, `Username: ` at `__username__`, a hidden prompt at
    /// `__password__` (after a challenge, the response is sent instead).
    ///
    /// Ctrl-D at `>> ` says `quit`; at another prompt it closes the connection
    /// (a `quit` there would be taken as a name or a password).
    ///
    /// A password goes out in clear only where the protocol asks for a new one
    /// (after `register`, and after the challenge of `change_password`); any
    /// other bare `__password__` (after `login`, or at the re-authentication of
    /// `change_password` / `delete_account`) is a protocol error, raised before
    /// the person is asked for anything.
    pub fn interact(&mut self, term: &mut dyn Terminal) -> Result<Ended> {
        self.interact_from(term, None)
    }

    /// [`interact`](Self::interact), at a `__type__` prompt already answered
    /// with `first_command` when it is given.
    fn interact_from(
        &mut self,
        term: &mut dyn Terminal,
        first_command: Option<String>,
    ) -> Result<Ended> {
        let mut challenge: Option<Challenge> = None;
        // The command word the person typed last, and whether the protocol
        // asks for a new password (in clear) now.
        let mut command = String::new();
        let mut new_password_due = false;
        let mut fatal: Option<String> = None;
        let mut quitting = false;
        // The word typed last at `>> ` and the name of the last SCRAM login: a
        // re-authentication names the session's user without asking again.
        let mut last_word = String::new();
        let mut scram_user: Option<String> = None;
        let mut logged_in = false;
        if let Some(word) = first_command {
            command = word.trim_matches(' ').to_string();
            new_password_due = command == "register";
            self.send(&word);
            last_word = word;
        }
        loop {
            let Some(line) = self.recv()? else {
                return match fatal {
                    Some(reason) => Err(ClientError::ServerSaid(reason)),
                    None => Ok(Ended::Closed),
                };
            };
            match line {
                // Chat mode: full duplex until __endchat__ (then lockstep again).
                ServerLine::Text(text) if text == crate::protocol::control::CHAT => {
                    match self.chat_interactive()? {
                        ChatEnd::Left => {}
                        ChatEnd::Quit { error: None } => return Ok(Ended::Quit),
                        ChatEnd::Quit {
                            error: Some(reason),
                        } => return Err(ClientError::ServerSaid(reason)),
                        ChatEnd::Closed => return Ok(Ended::Closed),
                    }
                }
                ServerLine::Text(text) if text == crate::protocol::control::SCRAM_FIRST => {
                    let known = match last_word.trim() == crate::protocol::command::LOGIN_SCRAM {
                        true => None,
                        false => scram_user.clone(),
                    };
                    let user = match known {
                        Some(user) => user,
                        None => match bounded(term, "Username: ", false)? {
                            Some(name) => name,
                            None => return Ok(Ended::Left),
                        },
                    };
                    let Some(password) = bounded(term, "Password: ", true)? else {
                        return Ok(Ended::Left);
                    };
                    match self.scram_exchange(&user, &password)? {
                        ScramEnd::Verified => {
                            scram_user = Some(user);
                            // After change_password's SCRAM proof, the new one.
                            new_password_due = command == "change_password";
                        }
                        ScramEnd::Refused(word) if is_credential_refusal(&word) => {}
                        ScramEnd::Refused(word) => term.show(&format!(
                            "(SCRAM: the server refused the exchange: e={word})"
                        )),
                    }
                }
                ServerLine::Text(text) => match text.strip_prefix(crate::protocol::error::PREFIX) {
                    // Reported once, as the error the session ends with.
                    Some(reason) => fatal = Some(reason.to_string()),
                    None => {
                        match text.as_str() {
                            outcome::ACCESS_GRANTED => logged_in = true,
                            outcome::ACCOUNT_REMOVED => logged_in = false,
                            _ => {}
                        }
                        term.show(&text)
                    }
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
                ServerLine::Type => match self.watching(term, ">> ")? {
                    Typed::Line(Some(word)) => {
                        command = word.trim_matches(' ').to_string();
                        new_password_due = command == "register";
                        if command == "logout" {
                            logged_in = false;
                        }
                        self.send(&word);
                        last_word = word;
                    }
                    Typed::Line(None) => {
                        self.send("quit");
                        quitting = true;
                    }
                    Typed::ServerSpoke => return Ok(self.dropped(logged_in)),
                },
                ServerLine::Username => match self.watching(term, "Username: ")? {
                    Typed::Line(Some(name)) => self.send(&name),
                    Typed::Line(None) => return Ok(Ended::Left),
                    Typed::ServerSpoke => return Ok(self.dropped(logged_in)),
                },
                ServerLine::Password if challenge.is_none() && !new_password_due => {
                    return Err(ClientError::PasswordWithoutChallenge);
                }
                ServerLine::Password => match bounded(term, "Password: ", true)? {
                    Some(password) => match challenge.take() {
                        Some(c) => {
                            self.send_response(&c, &password);
                            // After change_password's challenge, the new one.
                            new_password_due = command == "change_password";
                        }
                        None => self.send_password(&password),
                    },
                    None => return Ok(Ended::Left),
                },
            }
        }
    }
}

impl Client {
    /// A visible line from the person, unless the server speaks first.
    fn watching(&mut self, term: &mut dyn Terminal, prompt: &str) -> Result<Typed> {
        // What we queued (the last reply) must be out before we wait.
        self.flush()?;
        loop {
            match term.read_watching(prompt, self.watch_fd())? {
                Typed::Line(Some(l)) if l.len() > MAX_LINE_BYTES => term.show(&format!(
                    "(too long: at most {MAX_LINE_BYTES} bytes, try again)"
                )),
                other => return Ok(other),
            }
        }
    }

    /// The server spoke while the person was idle: in protocol v1 that can
    /// only be its goodbye (`Error: <reason>`, `__quit__`, close). Reads it,
    /// bounded by the reply timeout, for the reason.
    fn dropped(&mut self, logged_in: bool) -> Ended {
        let mut reason = None;
        for _ in 0..crate::config::MAX_DISPLAY_LINES_PER_TURN {
            match self.recv() {
                Ok(Some(ServerLine::Text(text))) => {
                    if let Some(r) = text.strip_prefix(error::PREFIX) {
                        reason = Some(r.to_string());
                    }
                }
                Ok(Some(ServerLine::Quit)) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
        Ended::Dropped(Dropped { reason, logged_in })
    }

    /// Reads a fresh connection's greeting and menu up to its first `__type__`
    /// without showing them (the person already saw them once).
    fn skip_to_first_prompt(&mut self) -> Result<()> {
        for _ in 0..crate::config::MAX_DISPLAY_LINES_PER_TURN {
            match self.recv()? {
                Some(ServerLine::Type) => return Ok(()),
                Some(ServerLine::Text(text)) => {
                    if let Some(reason) = text.strip_prefix(error::PREFIX) {
                        return Err(ClientError::ServerSaid(reason.to_string()));
                    }
                }
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "a new connection began with {other:?} instead of {}",
                        control::TYPE
                    )))
                }
                None => {
                    return Err(ClientError::Lost(
                        "the server closed the new connection".to_string(),
                    ))
                }
            }
        }
        Err(ClientError::Protocol(
            "the server sent no prompt on the new connection".to_string(),
        ))
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
