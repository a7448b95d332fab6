//! A child process in a pseudo-terminal, driven as a person at a keyboard
//! would: the interactive `run_client` needs a real terminal (its hidden
//! password prompt opens /dev/tty, its chat line editor puts the terminal in
//! raw mode), so its tests type into a pty and read what it shows.
//!
//! Matching is done on the output with terminal escape sequences removed
//! ([`strip_escapes`]): rustyline redraws its prompt and the half-typed line
//! with cursor moves and erasures, so a line it printed is contiguous text only
//! without them. Every wait is bounded by [`EXPECT_WITHIN`], and the child is
//! killed when the `PtyChild` is dropped (a failing test leaves nothing behind).

use crate::common::ChildGuard;
use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long one expectation (a text to appear, the child to exit, echo to
/// turn off) may take before the test fails.
pub const EXPECT_WITHIN: Duration = Duration::from_secs(10);
/// How often a wait looks at the output again.
const POLL: Duration = Duration::from_millis(10);

/// A child process on a pseudo-terminal it has as its controlling terminal (so
/// the hidden prompt, which opens /dev/tty, works as for a person).
pub struct PtyChild {
    master: File,
    child: ChildGuard,
    /// Everything the child wrote to the terminal, as raw bytes.
    output: Arc<Mutex<Vec<u8>>>,
    /// How far the matchers have read, in the stripped text.
    seen: usize,
}

impl PtyChild {
    pub fn spawn(mut cmd: Command) -> PtyChild {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;

        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers to two ints; a null name and termios are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty gave us these two descriptors; each is owned once.
        let master = unsafe { File::from_raw_fd(master) };
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A new session whose controlling terminal is the pty (fd 0).
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = ChildGuard(cmd.spawn().expect("spawn on pty"));
        // Closes the parent's copies of the slave, so the reader sees EOF at exit.
        drop(cmd);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("clone master");
        let sink = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child and its terminal are gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock()
                    .expect("output lock")
                    .extend_from_slice(&buf[..n]);
            }
        });
        PtyChild {
            master,
            child,
            output,
            seen: 0,
        }
    }

    /// Everything shown so far, raw (escape sequences included).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned()
    }

    /// Everything shown so far, with escape sequences removed.
    pub fn screen(&self) -> String {
        strip_escapes(&self.text())
    }

    /// Waits until `needle` appears after what was already matched.
    pub fn expect(&mut self, needle: &str) {
        self.expect_where(needle, |_, _| true);
    }

    /// Waits until `line` appears as a whole line after what was already
    /// matched: between line breaks (CR or LF), so `> hallo` is the echo line,
    /// not the end of the typed `chat> hallo`.
    pub fn expect_line(&mut self, line: &str) {
        let is_break = |c: Option<char>| matches!(c, Some('\r' | '\n'));
        self.expect_where(line, |before, after| {
            (before.is_empty() || is_break(before.chars().next_back()))
                && is_break(after.chars().next())
        });
    }

    /// Waits until `needle` appears after what was already matched, at a place
    /// where `fits(text before, text after)`; fails the test after
    /// [`EXPECT_WITHIN`], showing what the terminal showed.
    fn expect_where(&mut self, needle: &str, fits: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + EXPECT_WITHIN;
        loop {
            let screen = self.screen();
            let rest = screen.get(self.seen..).unwrap_or("");
            let found = rest.match_indices(needle).map(|(at, _)| at).find(|&at| {
                let end = self.seen + at + needle.len();
                fits(&screen[..self.seen + at], &screen[end..])
            });
            if let Some(at) = found {
                self.seen += at + needle.len();
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{needle:?} never appeared within {EXPECT_WITHIN:?}; after the \
                     last match the terminal showed:\n{rest}\n---- raw output:\n{:?}",
                    self.text()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Whether the terminal echoes what is typed (off at a hidden prompt).
    pub fn echo_on(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: an open pty master (Linux reports the pair's settings) and a
        // termios-sized buffer; read only after tcgetattr succeeded.
        unsafe {
            assert_eq!(
                libc::tcgetattr(self.master.as_raw_fd(), term.as_mut_ptr()),
                0
            );
            term.assume_init().c_lflag & libc::ECHO != 0
        }
    }

    /// Waits (bounded) until the terminal no longer echoes: a hidden prompt is
    /// printed a moment before the terminal is switched.
    pub fn wait_for_echo_off(&self) {
        let deadline = Instant::now() + EXPECT_WITHIN;
        while self.echo_on() {
            assert!(Instant::now() < deadline, "echo never turned off");
            thread::sleep(POLL);
        }
    }

    /// Types a line, as Enter sends it (CR).
    pub fn type_line(&mut self, text: &str) {
        self.type_keys(&format!("{text}\r"));
    }

    /// Types keys without Enter.
    pub fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("write pty");
    }

    /// At a hidden prompt: waits until echo is really off, then types a line.
    pub fn type_hidden(&mut self, text: &str) {
        self.wait_for_echo_off();
        self.type_line(text);
    }

    /// Waits (bounded) for the child to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + EXPECT_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not exit; output:\n{}", self.screen());
            }
            thread::sleep(POLL);
        }
    }
}

/// `raw` without terminal escape sequences: CSI (`ESC [` parameters, then a
/// final byte in `@`..=`~`), OSC (`ESC ]` up to BEL or `ESC \`), and any other
/// two-character `ESC x`. An unfinished sequence at the end is dropped, so
/// the stripped text of a growing output only grows (the matchers' offsets
/// stay valid). Line breaks and all other text are kept.
pub fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn strip_escapes_keeps_the_text_and_drops_the_sequences() {
    assert_eq!(
        strip_escapes(
            "\r\x1b[Kbob: hi\n\x1b[?2026hchat> hal\x1b[3D\x1b]0;t\x07x\x1b]2;u\x1b\\y\x1b7z"
        ),
        "\rbob: hi\nchat> halxyz"
    );
    // An unfinished sequence at the end is dropped until it is complete.
    assert_eq!(strip_escapes("ab\x1b[1"), "ab");
    assert_eq!(strip_escapes("ab\x1b"), "ab");
    assert_eq!(strip_escapes("ab\x1b]0;ti"), "ab");
}
