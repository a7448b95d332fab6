//! What a chat bus must do: the engine's side of a room shared by several
//! servers (`shared.rs`). PostgreSQL's LISTEN/NOTIFY is the one we have
//! (`store/pg_chat.rs`); the room does not know which engine carries it.
//!
//! A bus gives two things. **One order**: every server receives every
//! published event, its own included, in the same order (PostgreSQL delivers
//! notifications in commit order to every listener). **One membership**: who
//! is in the room is decided at one place (a table), so the member cap and
//! "one membership per username" hold across servers, and the members of a
//! server that died are unseated (with their leave published) by the others.

use super::room::SeatKey;
use std::fmt;
use std::time::Duration;

/// The bus failed (the database is unreachable, a query failed or timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusError(pub String);

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chat bus: {}", self.0)
    }
}

impl std::error::Error for BusError {}

/// What the bus said to a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinVerdict {
    /// Seated; the join event is published.
    Seated,
    /// The room holds the maximum number of members.
    Full,
    /// The name is in the room already (through any server).
    Taken,
}

/// Makes the leave event of a member the bus unseats by itself (a member of
/// a dead server): its name and seat in, the payload out.
pub type Announce<'a> = &'a dyn Fn(&str, SeatKey) -> String;

/// What [`ChatBus::listen`] opens: the feed, and who is in the room now
/// (each member's name and seat).
pub type Listening = (Box<dyn ChatFeed>, Vec<(String, SeatKey)>);

/// A chat bus shared by every server on one database.
pub trait ChatBus: Send + Sync {
    /// Starts listening as server `server` (a fresh identity each time) on a
    /// connection of its own, and reads who is in the room now. Events
    /// published after this call are all in the feed; those before it are in
    /// the seats returned (some may be in both: applying them is idempotent).
    fn listen(&self, server: u64) -> Result<Listening, BusError>;
    /// Seats `name` in `seat` unless the room is full or the name is in it,
    /// and publishes `announce` (its join event) in the same step.
    fn join(
        &self,
        name: &str,
        seat: SeatKey,
        max_members: usize,
        announce: &str,
    ) -> Result<JoinVerdict, BusError>;
    /// Publishes one event.
    fn publish(&self, payload: &str) -> Result<(), BusError>;
    /// Unseats `name` from `seat` and publishes `announce` (its leave event)
    /// in the same step. `false`: it was not seated there (nothing published).
    fn leave(&self, name: &str, seat: SeatKey, announce: &str) -> Result<bool, BusError>;
}

/// One server's listening connection.
pub trait ChatFeed: Send {
    /// The next event's payload, waiting at most `wait`; `None`: none yet.
    /// An error means the connection is lost: the feed is over.
    fn next(&mut self, wait: Duration) -> Result<Option<String>, BusError>;
    /// Says this server is alive, and unseats the members of servers that are
    /// not (publishing each leave). `false`: this server was itself taken for
    /// dead meanwhile (its members are unseated): it must start afresh.
    fn heartbeat(&mut self, announce: Announce<'_>) -> Result<bool, BusError>;
    /// A clean stop: unseats this server's members left (publishing their
    /// leaves) and forgets the server.
    fn close(self: Box<Self>, announce: Announce<'_>);
}
