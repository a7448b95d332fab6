//! The byte streams a session can run over, chosen at the edge.
//!
//! A session reads lines through [`crate::codec::LineConn`], which needs only
//! [`Transport`]: a `Read + Write` stream whose reads can be bounded by a
//! deadline. Plain TCP ([`TcpTransport`]) and in-memory bytes
//! ([`MemoryTransport`], for tests and fuzzing) implement it; the session code
//! never learns which one it has.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// A stream whose reads fail with `ErrorKind::TimedOut` once a deadline passes.
pub trait Transport: Read + Write + Send {
    /// Every read from now on must finish before `deadline` (`None`: no limit).
    fn set_deadline(&mut self, deadline: Option<Instant>);
}

/// A TCP socket whose reads honour a deadline.
///
/// Before each read the socket's receive timeout is set to the time left, so
/// bytes trickling in one at a time cannot stretch a reply past its deadline.
pub struct TcpTransport {
    sock: TcpStream,
    deadline: Option<Instant>,
}

impl TcpTransport {
    pub fn new(sock: TcpStream) -> Self {
        TcpTransport {
            sock,
            deadline: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// The error a read gives once its deadline has passed.
pub fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

impl Read for TcpTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            self.sock.set_read_timeout(Some(left))?;
        }
        match self.sock.read(buf) {
            // A receive timeout shows up as EAGAIN on Unix.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

impl Write for TcpTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Transport for TcpTransport {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// Bytes in memory: the peer's whole input up front, the server's output kept.
/// Lets tests and fuzzers drive the codec and the session without a socket.
#[derive(Debug, Default)]
pub struct MemoryTransport {
    input: io::Cursor<Vec<u8>>,
    /// Everything written to the transport so far.
    pub output: Vec<u8>,
}

impl MemoryTransport {
    pub fn new(input: impl Into<Vec<u8>>) -> Self {
        MemoryTransport {
            input: io::Cursor::new(input.into()),
            output: Vec::new(),
        }
    }
}

impl Read for MemoryTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for MemoryTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn set_deadline(&mut self, _deadline: Option<Instant>) {}
}
