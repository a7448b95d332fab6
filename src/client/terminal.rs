//! The person's side: the [`Terminal`] the interactive dialogue talks to, the
//! real one ([`StdTerminal`]), hidden password reading, and the Ctrl-C handler
//! that gives the terminal its echo back ([`install_interrupt_handler`]).

use super::error::{ClientError, Result, EXIT_INTERRUPTED};
use super::request::read_one_line;
use super::visible::visible;
use std::io::{self, Write};

/// A person at a terminal, for the interactive dialogue.
pub trait Terminal {
    /// Shows a display line.
    fn show(&mut self, line: &str);
    /// Reads a visible line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_line(&mut self, prompt: &str) -> Result<Option<String>>;
    /// Reads a hidden line after `prompt`; `None` at end of input (Ctrl-D).
    fn read_hidden(&mut self, prompt: &str) -> Result<Option<String>>;
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
