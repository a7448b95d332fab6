//! The person's side: the [`Terminal`] the interactive dialogue talks to, the
//! real one ([`StdTerminal`]), hidden password reading, and the Ctrl-C handler
//! that gives the terminal its echo back ([`install_interrupt_handler`]).

use super::error::{ClientError, Result, EXIT_INTERRUPTED};
use super::visible::visible;
use std::io::{self, Write};
use std::os::fd::RawFd;

/// What came first while the client waited at a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// The person's line; `None` at end of input (Ctrl-D).
    Line(Option<String>),
    /// The connection became readable (the server spoke or closed) first.
    ServerSpoke,
}

/// A person at a terminal, for the interactive dialogue.
pub trait Terminal {
    /// Shows a display line.
    fn show(&mut self, line: &str);
    /// Reads a visible line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_line(&mut self, prompt: &str) -> Result<Option<String>>;
    /// Reads a hidden line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>>;
    /// Reads a visible line after `prompt`, unless `socket` becomes readable
    /// first. Without a socket to watch (or a terminal that cannot), it is
    /// [`read_line`](Self::read_line).
    fn read_watching(&mut self, prompt: &str, socket: Option<RawFd>) -> Result<Typed> {
        let _ = socket;
        Ok(Typed::Line(self.read_line(prompt)?))
    }
}

/// Standard input and output, with hidden passwords read from the terminal.
#[derive(Default)]
pub struct StdTerminal;

impl Terminal for StdTerminal {
    /// The line may come from the server: its control characters are shown
    /// escaped, so it cannot drive the terminal.
    fn show(&mut self, line: &str) {
        println!("{}", visible(line));
    }

    fn read_line(&mut self, prompt: &str) -> Result<Option<String>> {
        match self.read_watching(prompt, None)? {
            Typed::Line(line) => Ok(line),
            Typed::ServerSpoke => unreachable!("nothing was watched"),
        }
    }

    fn read_watching(&mut self, prompt: &str, socket: Option<RawFd>) -> Result<Typed> {
        print!("{prompt}");
        let _ = io::stdout().flush();
        if let Some(socket) = socket {
            if stdin_waits_behind(socket)? {
                // The prompt's line is left unfinished; the news starts a new one.
                println!();
                return Ok(Typed::ServerSpoke);
            }
        }
        let line = read_stdin_line()
            .map_err(|e| ClientError::Input(format!("cannot read standard input: {e}")))?;
        if line.is_none() {
            // Ctrl-D leaves the cursor after the prompt.
            println!();
        }
        Ok(Typed::Line(line))
    }

    fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>> {
        let _ = io::stdout().flush();
        read_hidden(prompt)
    }
}

/// Waits until standard input or `socket` is readable; true when the socket
/// is (it wins a tie: a line typed just as the server hung up is then read at
/// the next prompt, over a new connection, instead of being lost).
fn stdin_waits_behind(socket: RawFd) -> Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: socket,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two initialised pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(ClientError::Input(format!("cannot wait for input: {e}")));
        }
    }
    Ok(fds[1].revents != 0)
}

/// Longest line kept from standard input; the rest of a longer line is read
/// and dropped (the dialogue asks again for anything over the line limit).
const STDIN_LINE_CAP: usize = 64 * 1024;

/// One line from standard input, read byte by byte from the descriptor: no
/// buffer may hold typed-ahead lines that a later `poll` would not see.
/// `None` at end of input. A CR before the LF is dropped.
fn read_stdin_line() -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(libc::STDIN_FILENO, byte.as_mut_ptr().cast(), 1) };
        match n {
            1 if byte[0] == b'\n' => break,
            1 => {
                if line.len() < STDIN_LINE_CAP {
                    line.push(byte[0]);
                }
            }
            0 if line.is_empty() => return Ok(None),
            0 => break,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// A hidden line from the terminal (`/dev/tty`), whatever standard input is.
pub(super) fn read_hidden(prompt: &str) -> Result<Option<String>> {
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
