//! The byte streams a session can run over, chosen at the edge.
//!
//! A session reads lines through [`crate::codec::LineConn`], which needs only
//! [`Transport`]: a `Read + Write` stream whose reads can be bounded by a
//! deadline. Plain TCP ([`TcpTransport`]) and in-memory bytes
//! ([`MemoryTransport`], for tests and fuzzing) implement it; the session code
//! never learns which one it has.
//!
//! Chat mode needs one more thing: a second thread that writes to the socket
//! while the session thread reads it. [`Transport::split_writer`] hands out that
//! write half as a [`SplitWriter`]: the socket (a clone) plus a way to turn
//! plaintext into wire bytes (itself for TCP, TLS records for TLS).

use crate::config::{LINGER_MAX_BYTES, LINGER_TIME};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stream whose reads fail with `ErrorKind::TimedOut` once a deadline passes.
pub trait Transport: Read + Write + Send {
    /// Every read from now on must finish before `deadline` (`None`: no limit).
    fn set_deadline(&mut self, deadline: Option<Instant>);

    /// Every write from now on must finish before `deadline`, however many
    /// calls it takes (`None`: the socket's own timeout, if any). Streams in
    /// memory never block and ignore it.
    fn set_write_deadline(&mut self, _deadline: Option<Instant>) {}

    /// Ends the stream politely once the last line is flushed (TLS sends its
    /// close_notify here); plain streams have nothing to do.
    fn close(&mut self) {}

    /// The write half for another thread (chat mode). While it is in use the
    /// session thread only reads; it writes again once that thread has ended.
    /// Streams that are not sockets cannot be split.
    fn split_writer(&mut self) -> io::Result<Box<dyn SplitWriter>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this stream cannot be written from another thread",
        ))
    }
}

/// The write half of a split connection: seal plaintext into wire bytes, then
/// write those to [`socket`](Self::socket) with no lock held.
pub trait SplitWriter: Send {
    /// Appends the wire bytes for `plain` to `wire`.
    fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()>;
    /// The socket the wire bytes go to (a clone of the session's).
    fn socket(&self) -> &TcpStream;
}

/// Plain TCP: the wire bytes are the plaintext.
/// Shares the session's socket (no second descriptor per chat member).
struct TcpSplitWriter(Arc<TcpStream>);

impl SplitWriter for TcpSplitWriter {
    fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        wire.extend_from_slice(plain);
        Ok(())
    }
    fn socket(&self) -> &TcpStream {
        &self.0
    }
}

/// A TCP socket whose reads honour a deadline.
///
/// Before each read the socket's receive timeout is set to the time left, so
/// bytes trickling in one at a time cannot stretch a reply past its deadline.
pub struct TcpTransport {
    /// Shared, not cloned: the server keeps another handle on the same
    /// descriptor to wake the session at shutdown (one descriptor per session).
    sock: Arc<TcpStream>,
    deadline: Option<Instant>,
    /// The receive timeout the socket has now (`None`: none set).
    armed: Option<Duration>,
    write_deadline: Option<Instant>,
}

/// How far a read may overrun its deadline before the socket's receive timeout
/// is set again. Lets the common case (a fresh deadline, the same timeout as
/// last time) skip a `setsockopt` per read.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

impl TcpTransport {
    pub fn new(sock: TcpStream) -> Self {
        Self::shared(Arc::new(sock))
    }

    /// Over a socket someone else holds too (`Read` and `Write` work on
    /// `&TcpStream`, and `shutdown` needs no second descriptor).
    pub fn shared(sock: Arc<TcpStream>) -> Self {
        TcpTransport {
            sock,
            deadline: None,
            armed: None,
            write_deadline: None,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The write half of this socket for another thread (see [`SplitWriter`]).
    pub fn split_tcp(&self) -> io::Result<Box<dyn SplitWriter>> {
        Ok(Box::new(TcpSplitWriter(self.sock.clone())))
    }

    /// Another handle on this socket (the same descriptor).
    pub fn shared_socket(&self) -> Arc<TcpStream> {
        self.sock.clone()
    }

    /// The next byte, left unread, within the deadline; `None` if the peer closed.
    pub fn peek_byte(&mut self) -> io::Result<Option<u8>> {
        self.arm_deadline()?;
        let mut byte = [0u8; 1];
        match self.sock.peek(&mut byte) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(byte[0])),
            Err(e) => Err(map_timeout(e)),
        }
    }

    /// Makes the next read end by the deadline: the socket's receive timeout is
    /// set to the time left, unless the one it has would end at most
    /// [`DEADLINE_SLACK`] later (so a trickling peer is still cut off on time).
    fn arm_deadline(&mut self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            if self.armed.is_some() {
                self.sock.set_read_timeout(None)?;
                self.armed = None;
            }
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let close_enough = self
            .armed
            .is_some_and(|armed| armed >= left && armed - left <= DEADLINE_SLACK);
        if !close_enough {
            self.sock.set_read_timeout(Some(left))?;
            self.armed = Some(left);
        }
        Ok(())
    }
}

/// The error a read gives once its deadline has passed.
pub fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

/// A receive timeout shows up as EAGAIN (`WouldBlock`) on Unix.
fn map_timeout(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        e
    }
}

impl Read for TcpTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm_deadline()?;
        (&*self.sock).read(buf).map_err(map_timeout)
    }
}

impl Write for TcpTransport {
    /// Each call may block only for what is left of the write deadline, so a
    /// peer reading a byte at a time cannot stretch a turn by renewing a
    /// per-call timeout.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(deadline) = self.write_deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            self.sock.set_write_timeout(Some(left))?;
        }
        (&*self.sock).write(buf).map_err(map_timeout)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.sock).flush()
    }
}

impl Transport for TcpTransport {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write_deadline = deadline;
    }

    /// Sends FIN, then reads and discards what the peer still sends, briefly.
    ///
    /// Closing a socket with unread input makes the kernel send a reset, and a
    /// reset can destroy the goodbye (`Error: line too long`, `__quit__`) before
    /// the peer reads it. Draining first lets it arrive. Bounded in time and bytes.
    fn close(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Write);
        self.deadline = Some(Instant::now() + LINGER_TIME);
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_MAX_BYTES {
            match self.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }

    fn split_writer(&mut self) -> io::Result<Box<dyn SplitWriter>> {
        self.split_tcp()
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
