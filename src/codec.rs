//! Line framing: the protocol's only unit is one line ending in LF.
//!
//! [`LineConn`] turns a [`Transport`] into lines and enforces the framing rules
//! *while reading*: at most [`MAX_LINE_BYTES`] per line (so a 1 MiB line without a
//! newline is refused after about 1 KiB, never buffered whole), valid UTF-8, and
//! one deadline per reply that trickling bytes do not extend. Lines the peer sent
//! early (pipelining) wait in the buffer, in order.
//!
//! Output is buffered: [`LineConn::send`] only appends, and everything written in
//! one turn goes out in one write right before the next read (one write per turn,
//! so Nagle and delayed ACKs never stall a reply).

use crate::config::{MAX_LINE_BYTES, TURN_WRITE_LIMIT};
use crate::protocol::error;
use crate::transport::Transport;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// Room for one maximal line plus what the peer pipelined behind it.
const READ_BUF_BYTES: usize = 4096;

/// Why no line could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (bytes after the last LF are dropped).
    Closed,
    /// More than [`MAX_LINE_BYTES`] before the LF.
    TooLong,
    /// The line is not UTF-8.
    InvalidUtf8,
    /// The deadline for this reply passed.
    TimedOut,
    /// The stream failed (reset, TLS error, ...).
    Io(io::Error),
}

impl ReadError {
    /// The reason sent after `Error: ` when this ends a session, if one is owed.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            ReadError::TooLong => Some(error::LINE_TOO_LONG),
            ReadError::InvalidUtf8 => Some(error::INVALID_UTF8),
            ReadError::TimedOut => Some(error::TIMED_OUT),
            ReadError::Closed | ReadError::Io(_) => None,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed by peer"),
            ReadError::TooLong => write!(f, "line longer than {MAX_LINE_BYTES} bytes"),
            ReadError::InvalidUtf8 => f.write_str("line is not valid UTF-8"),
            ReadError::TimedOut => f.write_str("timed out waiting for a reply"),
            ReadError::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// A line-oriented connection over any [`Transport`].
pub struct LineConn<T> {
    io: T,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// The total time one turn's output may take to be written.
    write_limit: Duration,
}

impl<T: Transport> LineConn<T> {
    pub fn new(io: T) -> Self {
        LineConn {
            io,
            buf: vec![0; READ_BUF_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            write_limit: TURN_WRITE_LIMIT,
        }
    }

    /// Sets the total time one turn's output may take ([`TURN_WRITE_LIMIT`]
    /// unless changed).
    pub fn set_write_limit(&mut self, limit: Duration) {
        self.write_limit = limit;
    }

    /// Queues one line (the LF is added); nothing is written until [`flush`](Self::flush).
    pub fn send(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    /// Writes everything queued in one go, within the write limit counted from
    /// now (a deadline for the whole turn, not for each write call).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io
                .set_write_deadline(Some(Instant::now() + self.write_limit));
            let result = self.io.write_all(&self.out).and_then(|()| self.io.flush());
            self.out.clear();
            result?;
        }
        Ok(())
    }

    /// Flushes the turn, then reads one line within `timeout`, without its LF
    /// (or CR LF).
    pub fn read_line(&mut self, timeout: Duration) -> Result<String, ReadError> {
        self.flush().map_err(ReadError::Io)?;
        let deadline = Instant::now() + timeout;
        let mut deadline_set = false;
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(lf) = pending.iter().position(|&b| b == b'\n') {
                let mut line = &pending[..lf];
                self.start += lf + 1;
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                if line.len() > MAX_LINE_BYTES {
                    return Err(ReadError::TooLong);
                }
                return std::str::from_utf8(line)
                    .map(str::to_owned)
                    .map_err(|_| ReadError::InvalidUtf8);
            }
            // No LF yet: a full line plus a CR is all that may be waiting.
            if pending.len() > MAX_LINE_BYTES + 1 {
                return Err(ReadError::TooLong);
            }
            if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if !deadline_set {
                self.io.set_deadline(Some(deadline));
                deadline_set = true;
            }
            match self.io.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(ReadError::TimedOut),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Flushes what is queued and closes the stream politely (best effort: the
    /// peer may be gone).
    pub fn close(&mut self) {
        let _ = self.flush();
        self.io.close();
    }

    pub fn transport(&self) -> &T {
        &self.io
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryTransport;
    use std::io::Read;

    const T: Duration = Duration::from_secs(1);

    fn conn(input: &[u8]) -> LineConn<MemoryTransport> {
        LineConn::new(MemoryTransport::new(input))
    }

    #[test]
    fn reads_lines_in_order_and_strips_cr() {
        let mut c = conn(b"one\r\ntwo\n\nthree\n");
        assert_eq!(c.read_line(T).unwrap(), "one");
        assert_eq!(c.read_line(T).unwrap(), "two");
        assert_eq!(c.read_line(T).unwrap(), "");
        assert_eq!(c.read_line(T).unwrap(), "three");
        assert!(matches!(c.read_line(T), Err(ReadError::Closed)));
    }

    #[test]
    fn only_one_cr_before_lf_is_dropped() {
        let mut c = conn(b"a\r\r\nb\rc\n");
        assert_eq!(c.read_line(T).unwrap(), "a\r");
        assert_eq!(c.read_line(T).unwrap(), "b\rc");
    }

    #[test]
    fn line_of_exactly_the_limit_passes_with_or_without_cr() {
        let max = "x".repeat(MAX_LINE_BYTES);
        let mut c = conn(format!("{max}\n{max}\r\n").as_bytes());
        assert_eq!(c.read_line(T).unwrap(), max);
        assert_eq!(c.read_line(T).unwrap(), max);
    }

    #[test]
    fn one_byte_over_the_limit_is_too_long() {
        let over = "x".repeat(MAX_LINE_BYTES + 1);
        let mut c = conn(format!("{over}\n").as_bytes());
        assert!(matches!(c.read_line(T), Err(ReadError::TooLong)));
    }

    /// A transport that counts what was read from it, to show a huge line is cut
    /// off early rather than buffered whole.
    struct Endless {
        served: usize,
    }
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(b'a');
            self.served += buf.len();
            Ok(buf.len())
        }
    }
    impl io::Write for Endless {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Transport for Endless {
        fn set_deadline(&mut self, _: Option<Instant>) {}
    }

    #[test]
    fn endless_line_is_refused_after_reading_little() {
        let mut c = LineConn::new(Endless { served: 0 });
        assert!(matches!(c.read_line(T), Err(ReadError::TooLong)));
        assert!(
            c.transport().served <= READ_BUF_BYTES,
            "read {}",
            c.transport().served
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut c = conn(b"ok\n\xff\xfe\n");
        assert_eq!(c.read_line(T).unwrap(), "ok");
        assert!(matches!(c.read_line(T), Err(ReadError::InvalidUtf8)));
    }

    #[test]
    fn bytes_after_last_lf_are_dropped_at_close() {
        let mut c = conn(b"done\npartial");
        assert_eq!(c.read_line(T).unwrap(), "done");
        assert!(matches!(c.read_line(T), Err(ReadError::Closed)));
    }

    #[test]
    fn output_is_queued_until_the_next_read() {
        let mut c = conn(b"reply\n");
        c.send("hello");
        c.send("__type__");
        assert!(c.transport().output.is_empty());
        c.read_line(T).unwrap();
        assert_eq!(c.transport().output, b"hello\n__type__\n");
    }

    #[test]
    fn many_pipelined_lines_cross_buffer_boundaries() {
        let mut input = Vec::new();
        for i in 0..2000 {
            input.extend_from_slice(format!("line number {i}\n").as_bytes());
        }
        let mut c = conn(&input);
        for i in 0..2000 {
            assert_eq!(c.read_line(T).unwrap(), format!("line number {i}"));
        }
    }
}
