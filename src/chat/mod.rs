//! The chat room (`shared/protocol-chat.md`): logged-in users talk to everyone
//! in one room and whisper to one member.
//!
//! - [`room`]: membership, the one global order (one lock), `/who`, the member
//!   cap, one membership per username, dropping members that are too slow;
//!   the [`ChatRoom`] the session talks to.
//! - [`shared`]: one room across several servers: each keeps a replica of it
//!   and delivers the events of a [`bus::ChatBus`] (PostgreSQL's
//!   LISTEN/NOTIFY, `store/pg_chat.rs`) in the bus's one order.
//! - [`event`]: the room's events as they travel on the bus.
//! - [`bus`]: what a bus must do (the engine's side of `shared`).
//! - [`member`]: a member's bounded outbound queue and its writer thread.
//! - [`rate`]: the per-session token bucket.
//! - [`line`](mod@line): what a client line means, the text rules (no control-line
//!   injection), and the exact lines the server sends.
//!
//! The session's side (reading the member's lines, the commands) is in
//! `session/chat.rs`; this module knows outboxes, not sockets, except for the
//! writer, which is handed a [`SplitWriter`](crate::transport::SplitWriter).

pub mod bus;
pub mod event;
pub mod line;
pub mod member;
pub mod rate;
pub mod room;
pub mod shared;

pub use member::{Outbox, Writer, WriterEnd};
pub use rate::TokenBucket;
pub use room::{ChatRoom, JoinRefusal, Room, Unavailable, Whisper};
pub use shared::SharedRoom;

use crate::config::ChatLimits;
use std::sync::Arc;

/// The room for a server: its own, or one shared with every server on `bus`.
pub fn open_room(limits: ChatLimits, bus: Option<Arc<dyn bus::ChatBus>>) -> Box<dyn ChatRoom> {
    match bus {
        Some(bus) => Box::new(SharedRoom::start(limits, bus)),
        None => Box::new(Room::local(limits)),
    }
}
