//! What a scripted run asks for: the passwords it needs ([`Password`],
//! [`NewPassword`], never shown by `Debug`), the [`Request`] for each
//! [`Action`], and where the passwords come from ([`PasswordSource`]: a hidden
//! prompt or standard input), checked so they cannot break the line framing.

use super::error::{ClientError, Result};
use super::terminal::read_hidden;
use crate::config::MAX_LINE_BYTES;
use std::fmt;
use std::io::{self, BufRead};

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
pub(super) fn read_one_line(input: &mut dyn BufRead) -> io::Result<Option<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
