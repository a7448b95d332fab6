//! The interactive dialogue: the client follows the server's prompts for a
//! person at a [`Terminal`], as the original client did.

use super::dialogue::Client;
use super::error::{ClientError, Result};
use super::lines::{Challenge, ServerLine};
use super::scram::{is_credential_refusal, ScramEnd};
use super::terminal::Terminal;
use crate::config::MAX_LINE_BYTES;

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

impl Client {
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
        // The word typed last at `>> ` and the name of the last SCRAM login: a
        // re-authentication names the session's user without asking again.
        let mut last_word = String::new();
        let mut scram_user: Option<String> = None;
        loop {
            let Some(line) = self.recv()? else {
                return match fatal {
                    Some(reason) => Err(ClientError::ServerSaid(reason)),
                    None => Ok(Ended::Closed),
                };
            };
            match line {
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
                        ScramEnd::Verified => scram_user = Some(user),
                        ScramEnd::Refused(word) if is_credential_refusal(&word) => {}
                        ScramEnd::Refused(word) => term.show(&format!(
                            "(SCRAM: the server refused the exchange: e={word})"
                        )),
                    }
                }
                ServerLine::Text(text) => match text.strip_prefix(crate::protocol::error::PREFIX) {
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
                    Some(word) => {
                        self.send(&word);
                        last_word = word;
                    }
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
