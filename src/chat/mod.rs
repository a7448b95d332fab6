//! The chat room (`shared/protocol-chat.md`): logged-in users talk to everyone
//! in one room and whisper to one member.
//!
//! - [`room`]: membership, the one global order (one lock), `/who`, the member
//!   cap, one membership per username, dropping members that are too slow.
//! - [`member`]: a member's bounded outbound queue and its writer thread.
//! - [`rate`]: the per-session token bucket.
//! - [`line`](mod@line): what a client line means, the text rules (no control-line
//!   injection), and the exact lines the server sends.
//!
//! The session's side (reading the member's lines, the commands) is in
//! `session/chat.rs`; this module knows outboxes, not sockets, except for the
//! writer, which is handed a [`SplitWriter`](crate::transport::SplitWriter).

pub mod line;
pub mod member;
pub mod rate;
pub mod room;

pub use member::{Outbox, Writer, WriterEnd};
pub use rate::TokenBucket;
pub use room::{JoinRefusal, Room, Whisper};
