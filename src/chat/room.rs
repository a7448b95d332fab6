//! The room: who is in it, and the one global order of its events.
//!
//! Members are kept by name in a `BTreeMap` (so `/who` lists them in byte
//! order) behind one mutex. Every event (a join, a message, a private message,
//! an answer, a leave) takes that lock, pushes its lines into every concerned
//! member's [`Outbox`], and releases it: that makes one order that every
//! member's stream agrees with. Pushing never blocks (a full outbox refuses),
//! and the lock is never held across socket I/O: the room knows outboxes, not
//! sockets.
//!
//! A member whose outbox would overflow is dropped right there: removed, its
//! waiting lines discarded, and `* <name> left` goes to the others right after
//! the line that overflowed (which may drop another; this settles because each
//! round removes a member).

use super::line;
use super::member::{Line, Outbox};
use crate::config::ChatLimits;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why `chat` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    Full,
    AlreadyIn,
}

/// Where a `/msg` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whisper {
    Delivered,
    NotMember,
}

type Members = BTreeMap<String, Arc<Outbox>>;

pub struct Room {
    limits: ChatLimits,
    members: Mutex<Members>,
}

impl Room {
    pub fn new(limits: ChatLimits) -> Room {
        Room {
            limits,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn limits(&self) -> &ChatLimits {
        &self.limits
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn member_count(&self) -> usize {
        self.members().len()
    }

    /// Enters `name` with `outbox`: the member list goes to it, `* <name>
    /// joined` to the others.
    pub fn join(&self, name: &str, outbox: &Arc<Outbox>) -> Result<(), JoinRefusal> {
        let mut members = self.members();
        if members.contains_key(name) {
            return Err(JoinRefusal::AlreadyIn);
        }
        if members.len() >= self.limits.max_members {
            return Err(JoinRefusal::Full);
        }
        members.insert(name.to_string(), outbox.clone());
        let mut round = Round::new(&mut members);
        round.broadcast_except(name, line::joined(name));
        round.send_list(name);
        let dropped = round.settle();
        let count = members.len();
        drop(members);
        drop(dropped);
        log::info!("chat: {name} joined ({count} members)");
        Ok(())
    }

    /// A room message: `<name>: <text>` to the others, `> <text>` to the sender.
    pub fn say(&self, name: &str, outbox: &Arc<Outbox>, text: &str) {
        let mut members = self.members();
        if !is_current(&members, name, outbox) {
            return;
        }
        let mut round = Round::new(&mut members);
        round.broadcast_except(name, line::room_message(name, text));
        round.send(name, &[Arc::from(line::echo(text))]);
        let dropped = round.settle();
        drop(members);
        drop(dropped);
    }

    /// A private message; the sender hears where it went.
    pub fn whisper(&self, from: &str, outbox: &Arc<Outbox>, to: &str, text: &str) -> Whisper {
        let mut members = self.members();
        if !is_current(&members, from, outbox) {
            return Whisper::NotMember;
        }
        let mut round = Round::new(&mut members);
        let outcome = if round.members.contains_key(to) && to != from {
            round.send(to, &[Arc::from(line::private_in(from, text))]);
            round.send(from, &[Arc::from(line::private_out(to, text))]);
            Whisper::Delivered
        } else {
            round.send(from, &[Arc::from(line::not_member(to))]);
            Whisper::NotMember
        };
        let dropped = round.settle();
        drop(members);
        drop(dropped);
        outcome
    }

    /// The member list, to the asker only.
    pub fn who(&self, name: &str, outbox: &Arc<Outbox>) {
        let mut members = self.members();
        if !is_current(&members, name, outbox) {
            return;
        }
        let mut round = Round::new(&mut members);
        round.send_list(name);
        let dropped = round.settle();
        drop(members);
        drop(dropped);
    }

    /// An answer to one member, in its place among the room's lines.
    pub fn tell(&self, name: &str, outbox: &Arc<Outbox>, answer: &str) {
        let mut members = self.members();
        if !is_current(&members, name, outbox) {
            return;
        }
        let mut round = Round::new(&mut members);
        round.send(name, &[Arc::from(answer)]);
        let dropped = round.settle();
        drop(members);
        drop(dropped);
    }

    /// `name` leaves (any way out); `* <name> left` to the others. Does nothing
    /// if it is no longer the member with this outbox (dropped already).
    pub fn leave(&self, name: &str, outbox: &Arc<Outbox>) {
        let mut members = self.members();
        if !is_current(&members, name, outbox) {
            return;
        }
        members.remove(name);
        let mut round = Round::new(&mut members);
        round.broadcast_except(name, line::left(name));
        let dropped = round.settle();
        let count = members.len();
        drop(members);
        drop(dropped);
        log::info!("chat: {name} left ({count} members)");
    }
}

/// Members dropped as too slow by one event. Logged on drop, which callers
/// let happen after the room lock is released: logging is I/O, and no I/O may
/// happen under the room lock.
#[must_use]
struct Dropped(Vec<String>);

impl Drop for Dropped {
    fn drop(&mut self) {
        for name in &self.0 {
            log::warn!("chat: {name} too slow, dropped");
        }
    }
}

fn is_current(members: &Members, name: &str, outbox: &Arc<Outbox>) -> bool {
    members.get(name).is_some_and(|o| Arc::ptr_eq(o, outbox))
}

/// One event's deliveries under the room lock, and the members they overflowed.
struct Round<'a> {
    members: &'a mut Members,
    too_slow: Vec<String>,
}

impl<'a> Round<'a> {
    fn new(members: &'a mut Members) -> Self {
        Round {
            members,
            too_slow: Vec::new(),
        }
    }

    fn send(&mut self, to: &str, lines: &[Line]) {
        if let Some(outbox) = self.members.get(to) {
            if !outbox.push(lines) {
                outbox.drop_too_slow();
                self.too_slow.push(to.to_string());
            }
        }
    }

    fn broadcast_except(&mut self, except: &str, text: String) {
        let lines = [Line::from(text)];
        for (name, outbox) in self.members.iter() {
            if name != except && !self.too_slow.contains(name) && !outbox.push(&lines) {
                outbox.drop_too_slow();
                self.too_slow.push(name.clone());
            }
        }
    }

    /// `* members: <n>` and the n names, as one push (consecutive lines).
    fn send_list(&mut self, to: &str) {
        let mut lines: Vec<Line> = Vec::with_capacity(self.members.len() + 1);
        lines.push(Arc::from(line::members_header(self.members.len())));
        lines.extend(self.members.keys().map(|n| Line::from(line::member(n))));
        self.send(to, &lines);
    }

    /// Removes the members found too slow (the others hear that they left)
    /// and returns their names, to be logged once the room lock is released.
    fn settle(mut self) -> Dropped {
        let mut done = 0;
        while done < self.too_slow.len() {
            let name = self.too_slow[done].clone();
            done += 1;
            if self.members.remove(&name).is_some() {
                self.broadcast_except(&name, line::left(&name));
            }
        }
        Dropped(self.too_slow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_members: usize, queue: usize) -> ChatLimits {
        ChatLimits {
            max_members,
            queue,
            ..ChatLimits::default()
        }
    }

    fn drain(o: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while o.waiting() > 0 {
            let mut plain = Vec::new();
            o.finish();
            super::super::member::tests_support::next(o, &mut plain);
            out.extend(
                String::from_utf8(plain)
                    .unwrap()
                    .lines()
                    .map(str::to_string),
            );
        }
        out
    }

    #[test]
    fn join_lists_members_and_tells_the_others() {
        let room = Room::new(limits(4, 64));
        let (a, b) = (Outbox::new(64), Outbox::new(64));
        room.join("bob", &b).unwrap();
        room.join("alice", &a).unwrap();
        assert_eq!(
            drain(&a),
            ["* members: 2", "* member: alice", "* member: bob"]
        );
        assert_eq!(
            drain(&b),
            ["* members: 1", "* member: bob", "* alice joined"]
        );
    }

    #[test]
    fn full_room_and_second_membership_are_refused() {
        let room = Room::new(limits(1, 64));
        let a = Outbox::new(64);
        room.join("alice", &a).unwrap();
        assert_eq!(
            room.join("alice", &Outbox::new(64)),
            Err(JoinRefusal::AlreadyIn)
        );
        assert_eq!(room.join("bob", &Outbox::new(64)), Err(JoinRefusal::Full));
        room.leave("alice", &a);
        assert_eq!(room.member_count(), 0);
    }

    #[test]
    fn overflow_drops_the_member_and_tells_the_others_once() {
        let room = Room::new(limits(4, 4));
        let (a, slow) = (Outbox::new(64), Outbox::new(4));
        room.join("slow", &slow).unwrap(); // 2 lines waiting
        room.join("alice", &a).unwrap(); // + joined = 3
        room.say("alice", &a, "one"); // 4
        room.say("alice", &a, "two"); // 5: too slow
        assert!(slow.is_too_slow());
        assert_eq!(room.member_count(), 1);
        room.leave("slow", &slow); // no second notice
        assert_eq!(
            drain(&a),
            [
                "* members: 2",
                "* member: alice",
                "* member: slow",
                "> one",
                "> two",
                "* slow left"
            ]
        );
    }
}
