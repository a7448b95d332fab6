//! The dialogue: a [`Client`] connected to a server reads its lines up to each
//! prompt ([`Turn`]) and answers them. What it answers lives beside this file:
//! for a script in `scripted.rs` (a request, judged only by the protocol's
//! outcome lines: [`Outcome`](super::Outcome)), for a person at a terminal in
//! `interactive.rs` ([`Ended`](super::Ended)).

use super::connection::{open_tcp, ClientConfig, Stream, Wire};
use super::error::{ClientError, Result};
use super::lines::{fatal_reason, Challenge, ServerLine};
use super::tls::TlsConnector;
use super::trace::Trace;
use crate::codec::{LineConn, ReadError};
use crate::config::{MAX_DISPLAY_LINES_PER_TURN, MAX_LINE_BYTES, WRITE_TIMEOUT};
use crate::protocol::control;
use std::io;
use std::net::TcpStream;
use std::time::Duration;

/// What is shown in the trace instead of a password sent in clear.
const HIDDEN_PASSWORD: &str = "******** (password, hidden)";

/// What the server sent before its next prompt, and that prompt.
#[derive(Debug)]
pub(super) struct Turn {
    pub(super) lines: Vec<String>,
    pub(super) prompt: Prompt,
}

/// A control line that asks something of the client (a challenge is merged with
/// the `__password__` that follows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Prompt {
    Type,
    Username,
    Password,
    Challenge(Challenge),
    Quit,
}

impl Prompt {
    pub(super) fn token(&self) -> &'static str {
        match self {
            Prompt::Type => control::TYPE,
            Prompt::Username => control::USERNAME,
            Prompt::Password => control::PASSWORD,
            Prompt::Challenge(_) => "__nonce__ + __password__",
            Prompt::Quit => control::QUIT,
        }
    }
}

/// A client connected to a server, at any point of the dialogue.
pub struct Client {
    pub(super) conn: LineConn<Wire>,
    pub(super) trace: Trace,
    pub(super) reply_timeout: Duration,
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
    pub(super) fn send_password(&mut self, password: &str) {
        self.trace.sent(HIDDEN_PASSWORD);
        self.conn.send(password);
    }

    /// Answers a challenge with the response computed here: the password itself
    /// is not sent.
    pub(super) fn send_response(&mut self, challenge: &Challenge, password: &str) {
        let answer = challenge.answer(password);
        self.trace.challenge(challenge, &answer);
        self.send(&answer.response);
    }

    /// The socket's descriptor, to watch for the server's goodbye while the
    /// person types (`None` over a stream without a socket, in tests).
    pub(super) fn watch_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.conn.transport().socket.as_ref().map(|s| s.as_raw_fd())
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> Result<()> {
        self.conn
            .flush()
            .map_err(|e| ClientError::Lost(e.to_string()))
    }

    /// Reads up to the next prompt, keeping the display lines before it.
    pub(super) fn turn(&mut self) -> Result<Turn> {
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
                    // A server that never prompts must not grow our memory.
                    if lines.len() == MAX_DISPLAY_LINES_PER_TURN {
                        return Err(ClientError::Protocol(format!(
                            "the server sent more than {MAX_DISPLAY_LINES_PER_TURN} lines without a prompt"
                        )));
                    }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::lines::tests::{nonce_line, PASSWORD, RESPONSE, VERIFIER};
    use crate::client::{Ended, NewPassword, Password, Request, Terminal, EXIT_OK, EXIT_REFUSED};
    use crate::client::{EXIT_ERROR, REPLY_TIMEOUT};
    use crate::transport::MemoryTransport;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn a_server_that_never_prompts_is_a_protocol_error() {
        let flood = vec!["display text"; MAX_DISPLAY_LINES_PER_TURN + 1];
        let (mut client, _, _) = scripted(&flood);
        let request = Request::Login {
            user: "alice".into(),
            password: Password::new(PASSWORD),
        };
        let err = client.run(&request).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert_eq!(err.exit_code(), EXIT_ERROR);
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
        let ends = format!("{}...{}", &VERIFIER[..8], &VERIFIER[56..]);
        assert!(trace.contains("verifier = SHA256(salt + password)   (not shown"));
        assert!(!trace.contains(&ends), "not even its ends");
        assert!(
            !trace.contains(VERIFIER),
            "the whole verifier answers any challenge"
        );
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
}
