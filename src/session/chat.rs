//! `chat`: the session's side of the room.
//!
//! On `chat` the session joins the room with a fresh [`Outbox`], says the
//! welcome and `__chat__` itself (lockstep, one write), then hands the socket's
//! write half to the member's [`Writer`] and from then on only reads: one line
//! at a time, each with the logged-in timeout, answered through the room so
//! every answer takes its place in the member's stream. Every way out (`/leave`,
//! `/quit`, an error, EOF, a panic) goes through [`Membership`], whose `Drop`
//! leaves the room once, so the others hear `* <name> left` exactly once. The
//! writer is then joined, so the lines queued before leaving are written before
//! anything the session writes again (`__endchat__`, `Error: ...`, `__quit__`).

use super::{End, Session, Step};
use crate::chat::line::{self, ChatLine};
use crate::chat::{ChatRoom, JoinRefusal, Outbox, TokenBucket, Writer, WriterEnd};
use crate::metrics::Metrics;
use crate::protocol::{chat, control, error, outcome};
use crate::transport::Transport;
use std::sync::Arc;
use std::time::Instant;

/// How chat mode ended, as seen by the reading side.
enum Exit {
    Leave,
    Quit,
    /// `Error: <reason>` is owed.
    Fatal(&'static str),
    Gone(String),
}

/// This session's place in the room; leaving happens on drop, whatever the way out.
struct Membership<'r> {
    room: &'r dyn ChatRoom,
    name: String,
    outbox: Arc<Outbox>,
    /// The `dccn_chat_members` gauge, counted down on drop as it was counted up.
    metrics: &'r Metrics,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.room.leave(&self.name, &self.outbox);
        self.outbox.finish();
        self.metrics.chat_member_left();
    }
}

impl<T: Transport> Session<'_, T> {
    pub(super) fn chat(&mut self) -> Step {
        let name = self.current_user();
        if !line::name_may_chat(&name) {
            self.say(outcome::CHAT_NOT_FOR_NAME);
            return Ok(());
        }
        let sink = match self.conn.transport_mut().split_writer() {
            Ok(sink) => sink,
            Err(e) => {
                log::error!("{} chat: cannot split the connection: {e}", self.peer);
                self.say(outcome::SERVER_ERROR);
                return Ok(());
            }
        };
        let room = self.svc.room.as_ref();
        let outbox = Outbox::new(room.limits().queue);
        match room.join(&name, &outbox) {
            Ok(()) => {}
            Err(JoinRefusal::Full) => {
                self.say(outcome::CHAT_FULL);
                return Ok(());
            }
            Err(JoinRefusal::AlreadyIn) => {
                self.say(outcome::CHAT_ALREADY_IN);
                return Ok(());
            }
            Err(JoinRefusal::Unavailable) => {
                self.say(outcome::SERVER_ERROR);
                return Ok(());
            }
        }
        self.svc.metrics.chat_member_joined();
        let membership = Membership {
            room,
            name,
            outbox,
            metrics: &self.svc.metrics,
        };
        // The bucket is the session's: full at the first entry, then kept.
        let limits = *room.limits();
        self.chat_bucket
            .get_or_insert_with(|| TokenBucket::full(&limits, Instant::now()));
        // The session writes this much itself; the writer takes over after it.
        self.say(chat::WELCOME);
        self.say(control::CHAT);
        if let Err(e) = self.conn.flush() {
            return Err(End::Gone(format!("connection error: {e}")));
        }
        let writer = Writer::spawn(membership.outbox.clone(), sink, &membership.name)
            .map_err(|e| End::Gone(format!("cannot start the chat writer: {e}")))?;
        let exit = self.chat_lines(&membership);
        let dropped = membership.outbox.dropped();
        drop(membership);
        let writer_end = writer.join();
        if let Some(reason) = dropped {
            return Err(End::Gone(format!("dropped from the chat: {reason}")));
        }
        if writer_end == WriterEnd::Cut {
            return Err(End::Gone("chat connection cut while writing".into()));
        }
        match exit {
            Exit::Leave => {
                self.say(control::ENDCHAT);
                Ok(())
            }
            Exit::Quit => Err(End::Quit),
            Exit::Fatal(reason) => Err(End::Fatal(reason)),
            Exit::Gone(why) => Err(End::Gone(why)),
        }
    }

    /// Reads and handles the member's lines until it leaves.
    fn chat_lines(&mut self, me: &Membership<'_>) -> Exit {
        let room = me.room;
        let (name, outbox) = (me.name.as_str(), &me.outbox);
        loop {
            if let Some(reason) = outbox.dropped() {
                return Exit::Gone(reason.into());
            }
            let read = self.conn.read_line(self.svc.session_timeout);
            if self.svc.is_shutting_down() {
                return Exit::Fatal(error::SHUTTING_DOWN);
            }
            let text = match read {
                Ok(text) => text,
                Err(e) => {
                    return match e.reason() {
                        Some(reason) => Exit::Fatal(reason),
                        None => Exit::Gone(e.to_string()),
                    }
                }
            };
            let parsed = line::parse(&text);
            match parsed {
                ChatLine::Empty => continue,
                ChatLine::Leave => return Exit::Leave,
                ChatLine::Quit => return Exit::Quit,
                _ => {}
            }
            let allowed = self
                .chat_bucket
                .as_mut()
                .is_none_or(|bucket| bucket.take(Instant::now()));
            if !allowed {
                room.tell(name, outbox, chat::RATE_LIMITED);
                continue;
            }
            match parsed {
                ChatLine::Who => room.who(name, outbox),
                ChatLine::Ping => room.tell(name, outbox, chat::PONG),
                ChatLine::Unknown => room.tell(name, outbox, chat::UNKNOWN_COMMAND),
                ChatLine::MsgUsage => room.tell(name, outbox, chat::USAGE_MSG),
                ChatLine::Msg { to, text } => match line::check_text(text) {
                    Err(refusal) => room.tell(name, outbox, refusal.answer()),
                    Ok(()) if to == name => room.tell(name, outbox, chat::NOT_SENT_SELF),
                    Ok(()) => {
                        if room.whisper(name, outbox, to, text).is_err() {
                            return Exit::Fatal(error::CHAT_UNAVAILABLE);
                        }
                    }
                },
                ChatLine::Say(text) => match line::check_text(text) {
                    Err(refusal) => room.tell(name, outbox, refusal.answer()),
                    Ok(()) => {
                        if room.say(name, outbox, text).is_err() {
                            return Exit::Fatal(error::CHAT_UNAVAILABLE);
                        }
                    }
                },
                ChatLine::Empty | ChatLine::Leave | ChatLine::Quit => {}
            }
        }
    }
}
