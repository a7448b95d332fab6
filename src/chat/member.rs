//! A member's outbound side: its bounded queue ([`Outbox`]) and the writer
//! thread that empties it into the member's socket.
//!
//! Why a queue and a writer thread per member: the room pushes lines into
//! queues under its one lock (that is the global order) and must never wait
//! for a socket. The queue is a `Mutex<VecDeque>` with a `Condvar` rather than
//! a bounded channel: "too slow" must discard what waits and queue the error in
//! one step, under the queue's own lock, which a channel cannot do. A push that
//! would pass the bound does not block: it fails, and the room drops the member.
//!
//! The writer takes everything waiting as one batch and writes it in one go
//! (one write per batch, as v1 writes once per turn). Its socket writes time
//! out every [`CHAT_WRITE_POLL`] so it can notice a stop and keep the closing
//! grace; no lock is held while it writes. Under TLS it writes through a
//! [`SplitWriter`] that encrypts under the connection's lock and writes with
//! the lock released (see `tls.rs`), so the session thread keeps reading.
//!
//! Why that TLS shape (option 1 of the spec's implementation notes): it keeps
//! the same two threads and the same queue semantics as plain TCP, so the
//! session and the room cannot tell TLS from TCP; it adds no delay to outgoing
//! lines and no wake-ups for idle members, unlike one thread that alternates
//! short reads with writes (option 2); and it stays within blocking sockets,
//! unlike `poll(2)` with a wake-up pipe (option 3) or kernel TLS (option 4).
//! Its cost is a mutex taken per read and per batch, uncontended but for two
//! threads.

use crate::config::{
    CHAT_CLOSING_GRACE, CHAT_SEND_BUFFER_BYTES, CHAT_WRITER_STACK_BYTES, CHAT_WRITE_POLL,
    WRITE_TIMEOUT,
};
use crate::protocol::{chat, control, error};
use crate::transport::SplitWriter;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// One line for one or many members (shared, so a broadcast allocates once).
pub type Line = Arc<str>;

/// Whether the writer should go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// The member left: write what waits, then end (within the grace).
    Finish {
        since: Instant,
    },
    /// The member is out (too slow, or its room went away): what waits is
    /// discarded; only `Error: <reason>` and `__quit__` follow what is in flight.
    Dropped {
        since: Instant,
        reason: &'static str,
    },
}

struct Queue {
    lines: VecDeque<Line>,
    stop: Stop,
}

/// A member's bounded queue of lines accepted for it but not yet written.
pub struct Outbox {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    /// Unique in this process: names the member on the chat bus
    /// (`shared.rs`), where two sessions of one name may follow each other.
    id: u64,
}

static NEXT_OUTBOX_ID: AtomicU64 = AtomicU64::new(1);

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                stop: Stop::No,
            }),
            wake: Condvar::new(),
            capacity,
            id: NEXT_OUTBOX_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `lines` (all or none). `false`: they would pass the bound, so the
    /// member is too slow (nothing was queued). A stopped outbox takes nothing.
    pub fn push(&self, lines: &[Line]) -> bool {
        let mut q = self.queue();
        if q.stop != Stop::No {
            return true;
        }
        if q.lines.len() + lines.len() > self.capacity {
            return false;
        }
        // The writer waits only on an empty queue: wake it only then (a wake is
        // a system call, and the room makes one push per member per event).
        let was_empty = q.lines.is_empty();
        q.lines.extend(lines.iter().cloned());
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// The member is too slow: discard what waits; the writer ends with the error.
    pub fn drop_too_slow(&self) {
        self.drop_member(chat::TOO_SLOW);
    }

    /// The member is out for `reason` (the text after `Error: `): what waits
    /// is discarded, the writer ends with the error. The first reason stays.
    pub fn drop_member(&self, reason: &'static str) {
        let mut q = self.queue();
        q.lines.clear();
        if !matches!(q.stop, Stop::Dropped { .. }) {
            q.stop = Stop::Dropped {
                since: Instant::now(),
                reason,
            };
        }
        drop(q);
        self.wake.notify_one();
    }

    /// The member left: the writer writes what waits, then ends.
    pub fn finish(&self) {
        let mut q = self.queue();
        if q.stop == Stop::No {
            q.stop = Stop::Finish {
                since: Instant::now(),
            };
        }
        drop(q);
        self.wake.notify_one();
    }

    pub fn is_too_slow(&self) -> bool {
        self.dropped() == Some(chat::TOO_SLOW)
    }

    /// Why the member was dropped, if it was.
    pub fn dropped(&self) -> Option<&'static str> {
        match self.queue().stop {
            Stop::Dropped { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Lines waiting now (for tests and logs).
    pub fn waiting(&self) -> usize {
        self.queue().lines.len()
    }

    /// The next batch: every line waiting, or the goodbye of a dropped member,
    /// or `None` once a finished outbox is empty. Blocks while there is nothing.
    fn next_batch(&self, plain: &mut Vec<u8>) -> Option<Batch> {
        let mut q = self.queue();
        while q.lines.is_empty() && q.stop == Stop::No {
            q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        plain.clear();
        match q.stop {
            Stop::Dropped { reason, .. } => {
                q.lines.clear();
                for line in [
                    format!("{}{}", error::PREFIX, reason).as_str(),
                    control::QUIT,
                ] {
                    plain.extend_from_slice(line.as_bytes());
                    plain.push(b'\n');
                }
                Some(Batch::Goodbye)
            }
            Stop::Finish { .. } if q.lines.is_empty() => None,
            _ => {
                for line in q.lines.drain(..) {
                    plain.extend_from_slice(line.as_bytes());
                    plain.push(b'\n');
                }
                Some(Batch::Lines)
            }
        }
    }

    /// The time by which a blocked write must give up, if the member is stopping.
    fn deadline(&self) -> Option<Instant> {
        match self.queue().stop {
            Stop::No => None,
            Stop::Finish { since } | Stop::Dropped { since, .. } => {
                Some(since + CHAT_CLOSING_GRACE)
            }
        }
    }
}

enum Batch {
    Lines,
    /// `Error: <reason>`, `__quit__`: the last batch.
    Goodbye,
}

/// How a writer thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEnd {
    /// Everything queued was written; the session may write again.
    Flushed,
    /// The connection is over (too slow, a failed or stalled write): the
    /// socket was shut down so the session thread's read returns.
    Cut,
}

/// A member's writer thread.
pub struct Writer {
    thread: JoinHandle<WriterEnd>,
}

impl Writer {
    /// Starts the writer for `outbox` on `sink`.
    pub fn spawn(
        outbox: Arc<Outbox>,
        sink: Box<dyn SplitWriter>,
        name: &str,
    ) -> io::Result<Writer> {
        // A member that stops reading should cost little kernel memory and be
        // found out soon (see CHAT_SEND_BUFFER_BYTES).
        let _ = socket2::SockRef::from(sink.socket()).set_send_buffer_size(CHAT_SEND_BUFFER_BYTES);
        sink.socket().set_write_timeout(Some(CHAT_WRITE_POLL))?;
        let thread = thread::Builder::new()
            .name(format!("chat-writer-{name}"))
            .stack_size(CHAT_WRITER_STACK_BYTES)
            .spawn(move || run(&outbox, sink))?;
        Ok(Writer { thread })
    }

    /// Waits for the writer (it ends within the closing grace once the outbox
    /// is finished or dropped).
    pub fn join(self) -> WriterEnd {
        self.thread.join().unwrap_or(WriterEnd::Cut)
    }
}

fn run(outbox: &Outbox, mut sink: Box<dyn SplitWriter>) -> WriterEnd {
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    let end = loop {
        let Some(batch) = outbox.next_batch(&mut plain) else {
            break WriterEnd::Flushed;
        };
        wire.clear();
        if sink.seal(&plain, &mut wire).is_err() {
            break WriterEnd::Cut;
        }
        let written = write_all(sink.as_ref(), &wire, || outbox.deadline());
        if let Batch::Goodbye = batch {
            break WriterEnd::Cut;
        }
        if !written {
            break WriterEnd::Cut;
        }
    };
    match end {
        WriterEnd::Flushed => {
            let _ = sink.socket().set_write_timeout(Some(WRITE_TIMEOUT));
        }
        // Wakes the session thread's blocked read: the connection is over.
        WriterEnd::Cut => {
            let _ = sink.socket().shutdown(Shutdown::Both);
        }
    }
    end
}

/// Writes `wire` to the sink's socket, polling `deadline` whenever a write
/// times out. `false`: the socket failed or the deadline passed.
fn write_all(sink: &dyn SplitWriter, wire: &[u8], deadline: impl Fn() -> Option<Instant>) -> bool {
    let mut sock = sink.socket();
    let mut rest = wire;
    while !rest.is_empty() {
        match sock.write(rest) {
            Ok(0) => return false,
            Ok(n) => rest = &rest[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if deadline().is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Line {
        Arc::from(s)
    }

    #[test]
    fn push_past_the_bound_fails_and_queues_nothing() {
        let o = Outbox::new(3);
        assert!(o.push(&[line("a"), line("b")]));
        assert!(!o.push(&[line("c"), line("d")]));
        assert_eq!(o.waiting(), 2);
        assert!(o.push(&[line("c")]));
        assert_eq!(o.waiting(), 3);
    }

    #[test]
    fn too_slow_discards_what_waits_and_says_goodbye() {
        let o = Outbox::new(8);
        assert!(o.push(&[line("a"), line("b")]));
        o.drop_too_slow();
        assert!(o.is_too_slow());
        assert_eq!(o.waiting(), 0);
        let mut plain = Vec::new();
        assert!(matches!(o.next_batch(&mut plain), Some(Batch::Goodbye)));
        assert_eq!(plain, b"Error: too slow\n__quit__\n");
    }

    #[test]
    fn finish_flushes_what_waits_then_ends() {
        let o = Outbox::new(8);
        assert!(o.push(&[line("a"), line("b")]));
        o.finish();
        assert!(o.push(&[line("ignored")]));
        let mut plain = Vec::new();
        assert!(matches!(o.next_batch(&mut plain), Some(Batch::Lines)));
        assert_eq!(plain, b"a\nb\n");
        assert!(o.next_batch(&mut plain).is_none());
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    use super::Outbox;

    /// One batch's bytes (the room's tests read outboxes with it).
    pub fn next(o: &Outbox, plain: &mut Vec<u8>) {
        let _ = o.next_batch(plain);
    }
}
