//! The scripted dialogue: one [`Request`] (register, login, change_password,
//! delete_account) run to its outcome, judged only by the protocol's exact
//! outcome lines, never by menus. A refusal stops the action at once.

use super::dialogue::{Client, Prompt, Turn};
use super::error::{ClientError, Result, EXIT_OK, EXIT_REFUSED};
use super::lines::is_refusal;
use super::request::{NewPassword, Password, Request};
use super::scram::{is_credential_refusal, ScramEnd};
use crate::protocol::{command, outcome};

/// How a scripted run logs in, and so re-authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// v1's salt/nonce challenge (`login`).
    #[default]
    Classic,
    /// SCRAM-SHA-256 (`login_scram`): the server must prove it knows the
    /// credentials before the client believes it.
    Scram,
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

impl Client {
    /// Runs one scripted action to its outcome, then says `quit`.
    ///
    /// A refusal stops the action at once (no retry): the client says `quit` if
    /// the server is at a menu, or just closes.
    pub fn run(&mut self, request: &Request) -> Result<Outcome> {
        self.run_with(request, Mechanism::Classic)
    }

    /// [`run`](Self::run), logging in (and re-authenticating) with `mechanism`.
    pub fn run_with(&mut self, request: &Request, mechanism: Mechanism) -> Result<Outcome> {
        match self.script(request, mechanism) {
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
    fn script(&mut self, request: &Request, mech: Mechanism) -> Result<Vec<String>, Halt> {
        match request {
            Request::Register { user, password } => {
                self.command("register")?;
                self.expect(Prompt::Username)?;
                self.send(user);
                self.give_new_password(password)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::REGISTERED])
            }
            Request::Login { user, password } => self.login(user, password, mech),
            Request::ChangePassword { user, current, new } => {
                self.login(user, current, mech)?;
                self.send("change_password");
                self.reauthenticate(user, current, mech)?;
                self.give_new_password(new)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::PASSWORD_CHANGED])
            }
            Request::DeleteAccount { user, password } => {
                self.login(user, password, mech)?;
                self.send("delete_account");
                self.reauthenticate(user, password, mech)?;
                confirmed(&self.expect(Prompt::Type)?, &[outcome::ACCOUNT_REMOVED])
            }
        }
    }

    /// Logs in for chat: `Ok(None)` at the logged-in `__type__` prompt (its
    /// `chat` is the next thing to send), `Ok(Some(line))` refused with `line`
    /// (the client has said `quit` where it could).
    pub(super) fn log_in(&mut self, user: &str, password: &Password) -> Result<Option<String>> {
        match self.login(user, password, Mechanism::Classic) {
            Ok(_) => Ok(None),
            Err(Halt::Refused { line, prompt }) => {
                if prompt == Prompt::Type {
                    self.say_goodbye();
                }
                Ok(Some(line))
            }
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    /// Logs in; on success the server is at its logged-in `__type__` prompt.
    fn login(
        &mut self,
        user: &str,
        password: &Password,
        mech: Mechanism,
    ) -> Result<Vec<String>, Halt> {
        match mech {
            Mechanism::Classic => {
                self.command("login")?;
                self.expect(Prompt::Username)?;
                self.send(user);
                self.answer_challenge(password)?;
            }
            Mechanism::Scram => {
                self.command(command::LOGIN_SCRAM)?;
                self.scram(user, password)?;
            }
        }
        let turn = self.expect(Prompt::Type)?;
        confirmed(&turn, &[outcome::LOGIN_OK, outcome::ACCESS_GRANTED])
    }

    /// Waits for `__type__` and answers with a command word.
    fn command(&mut self, word: &str) -> Result<(), Halt> {
        self.expect(Prompt::Type)?;
        self.send(word);
        Ok(())
    }

    /// Proves the password again, after `change_password` or `delete_account`.
    fn reauthenticate(
        &mut self,
        user: &str,
        password: &Password,
        mech: Mechanism,
    ) -> Result<(), Halt> {
        match mech {
            Mechanism::Classic => self.answer_challenge(password),
            Mechanism::Scram => self.scram(user, password),
        }
    }

    /// A whole SCRAM exchange; `Ok` only when the server proved it knows the
    /// credentials. `e=invalid-proof` is a refusal (exit 1); any other `e=` is
    /// a protocol or usage error (exit 2).
    fn scram(&mut self, user: &str, password: &Password) -> Result<(), Halt> {
        self.expect_scram_first()?;
        match self.scram_exchange(user, password.expose())? {
            ScramEnd::Verified => Ok(()),
            ScramEnd::Refused(word) => {
                let turn = self.turn()?;
                let said = turn.lines.first().cloned().unwrap_or_default();
                if is_credential_refusal(&word) && is_refusal(&said) {
                    return Err(Halt::Refused {
                        line: said,
                        prompt: turn.prompt,
                    });
                }
                Err(Halt::Failed(ClientError::Protocol(format!(
                    "the server refused the SCRAM exchange with e={word} ({said:?})"
                ))))
            }
        }
    }

    /// Waits for a challenge and answers it.
    fn answer_challenge(&mut self, password: &Password) -> Result<(), Halt> {
        let turn = self.next_turn()?;
        match &turn.prompt {
            Prompt::Challenge(c) => {
                self.send_response(c, password.expose());
                Ok(())
            }
            // A login password goes out only as the answer to a challenge.
            Prompt::Password => Err(Halt::Failed(ClientError::PasswordWithoutChallenge)),
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
