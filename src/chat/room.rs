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
//! On one server the room decides and delivers ([`Room::local`]). Across
//! servers (`shared.rs`) each server keeps a replica of the room that only
//! delivers: the decisions and the order come from the chat bus, and a seat
//! whose member sits on another server has no outbox here
//! ([`Room::replica`]).
//!
//! A member whose outbox would overflow is dropped right there. On one server
//! it is removed, its waiting lines discarded, and `* <name> left` goes to the
//! others right after the line that overflowed (which may drop another; this
//! settles because each round removes a member). In a replica it is only
//! stopped: its leave must take its place in the bus's order, for every
//! server alike, so the caller publishes it.

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
    /// The room could not be reached (the chat bus failed): `Server error`.
    Unavailable,
}

/// The room failed while handling a member's line (the chat bus is down);
/// the member's session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where a `/msg` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whisper {
    Delivered,
    NotMember,
}

/// What the session asks of a room, one server's or one shared by several.
/// A member is its name and its outbox (a name may return with a new one).
pub trait ChatRoom: Send + Sync {
    fn limits(&self) -> &ChatLimits;
    /// Enters `name`: the member list goes to it, `* <name> joined` to the others.
    fn join(&self, name: &str, outbox: &Arc<Outbox>) -> Result<(), JoinRefusal>;
    /// A room message: `<name>: <text>` to the others, `> <text>` to the sender.
    fn say(&self, name: &str, outbox: &Arc<Outbox>, text: &str) -> Result<(), Unavailable>;
    /// A private message; the sender hears where it went.
    fn whisper(
        &self,
        from: &str,
        outbox: &Arc<Outbox>,
        to: &str,
        text: &str,
    ) -> Result<(), Unavailable>;
    /// The member list, to the asker only.
    fn who(&self, name: &str, outbox: &Arc<Outbox>);
    /// An answer to one member, in its place among the room's lines.
    fn tell(&self, name: &str, outbox: &Arc<Outbox>, answer: &str);
    /// `name` leaves (any way out); `* <name> left` to the others, once.
    fn leave(&self, name: &str, outbox: &Arc<Outbox>);
}

/// Who sits in a seat, across servers: the server's bus identity and the
/// member's outbox id there. Zero on a room of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SeatKey {
    pub server: u64,
    pub member: u64,
}

/// A member's place in the room.
#[derive(Clone)]
pub struct Seat {
    pub key: SeatKey,
    /// Its outbox if the member is on this server; `None`: on another one.
    pub here: Option<Arc<Outbox>>,
}

/// What a round does with a member that overflowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Remove it and tell the others now (one server).
    Remove,
    /// Stop it only; the caller publishes its leave (a replica).
    Report,
}

type Members = BTreeMap<String, Seat>;

pub struct Room {
    limits: ChatLimits,
    overflow: Overflow,
    members: Mutex<Members>,
}

/// Members dropped as too slow by one event: their names and seats. Logged by
/// [`log_dropped`] once the room lock is released: logging is I/O, and no I/O
/// may happen under the room lock.
pub type Dropped = Vec<(String, SeatKey)>;

pub fn log_dropped(dropped: &Dropped) {
    for (name, _) in dropped {
        log::warn!("chat: {name} too slow, dropped");
    }
}

impl Room {
    /// The room of one server: it decides and delivers.
    pub fn local(limits: ChatLimits) -> Room {
        Room {
            limits,
            overflow: Overflow::Remove,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// One server's copy of a room shared over a bus: it delivers what the
    /// bus decided, in the bus's order.
    pub fn replica(limits: ChatLimits) -> Room {
        Room {
            overflow: Overflow::Report,
            ..Room::local(limits)
        }
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn member_count(&self) -> usize {
        self.members().len()
    }

    /// The seat `name` holds with `outbox`, if it still does.
    pub fn seat_of(&self, name: &str, outbox: &Arc<Outbox>) -> Option<SeatKey> {
        let members = self.members();
        is_current(&members, name, outbox).then(|| members[name].key)
    }

    /// Seats `name` (the bus decided it may enter): the member list goes to it
    /// if it is here, `* <name> joined` to the others. `false`: the name is
    /// seated already (nothing changes).
    pub fn admit(&self, name: &str, seat: Seat) -> (bool, Dropped) {
        match self.seat_member(name, seat, usize::MAX) {
            Ok(dropped) => (true, dropped),
            Err(_) => (false, Vec::new()),
        }
    }

    /// Checks the cap and the name and seats the member, in one step under
    /// the room lock (so no other join comes between the check and the seat).
    fn seat_member(&self, name: &str, seat: Seat, cap: usize) -> Result<Dropped, JoinRefusal> {
        let mut members = self.members();
        if members.contains_key(name) {
            return Err(JoinRefusal::AlreadyIn);
        }
        if members.len() >= cap {
            return Err(JoinRefusal::Full);
        }
        members.insert(name.to_string(), seat);
        let mut round = Round::new(&mut members, self.overflow);
        round.broadcast_except(name, line::joined(name));
        round.send_list(name);
        let dropped = round.settle();
        let count = members.len();
        drop(members);
        log::info!("chat: {name} joined ({count} members)");
        Ok(dropped)
    }

    /// Delivers a room message from the member in seat `key`.
    pub fn relay_say(&self, name: &str, key: SeatKey, text: &str) -> Dropped {
        let mut members = self.members();
        if !holds(&members, name, key) {
            return Vec::new();
        }
        let mut round = Round::new(&mut members, self.overflow);
        round.broadcast_except(name, line::room_message(name, text));
        round.send(name, &[Arc::from(line::echo(text))]);
        round.settle()
    }

    /// Delivers a private message from the member in seat `key`.
    pub fn relay_whisper(
        &self,
        from: &str,
        key: SeatKey,
        to: &str,
        text: &str,
    ) -> (Whisper, Dropped) {
        let mut members = self.members();
        if !holds(&members, from, key) {
            return (Whisper::NotMember, Vec::new());
        }
        let mut round = Round::new(&mut members, self.overflow);
        let outcome = if round.members.contains_key(to) && to != from {
            round.send(to, &[Arc::from(line::private_in(from, text))]);
            round.send(from, &[Arc::from(line::private_out(to, text))]);
            Whisper::Delivered
        } else {
            round.send(from, &[Arc::from(line::not_member(to))]);
            Whisper::NotMember
        };
        (outcome, round.settle())
    }

    /// Unseats the member in seat `key`; `* <name> left` to the others.
    /// Returns its seat, or `None` if `name` is not in that seat (left already).
    pub fn remove(&self, name: &str, key: SeatKey) -> (Option<Seat>, Dropped) {
        let mut members = self.members();
        if !holds(&members, name, key) {
            return (None, Vec::new());
        }
        let seat = members.remove(name);
        let mut round = Round::new(&mut members, self.overflow);
        round.broadcast_except(name, line::left(name));
        let dropped = round.settle();
        let count = members.len();
        drop(members);
        log::info!("chat: {name} left ({count} members)");
        (seat, dropped)
    }

    /// Replaces every seat, silently (a replica catching up with the bus);
    /// returns the seats that were here before.
    pub fn reseat(&self, seats: Vec<(String, Seat)>) -> Vec<Seat> {
        let mut members = self.members();
        let old = std::mem::replace(&mut *members, seats.into_iter().collect());
        drop(members);
        old.into_values().filter(|s| s.here.is_some()).collect()
    }

    /// The seat `name` holds, whoever holds it.
    pub fn key_of(&self, name: &str) -> Option<SeatKey> {
        self.members().get(name).map(|seat| seat.key)
    }

    fn answer(
        &self,
        name: &str,
        outbox: &Arc<Outbox>,
        deliver: impl FnOnce(&mut Round<'_>),
    ) -> Dropped {
        let mut members = self.members();
        if !is_current(&members, name, outbox) {
            return Vec::new();
        }
        let mut round = Round::new(&mut members, self.overflow);
        deliver(&mut round);
        round.settle()
    }

    /// The member list, to the asker only (a snapshot at its place in the
    /// order).
    pub fn who_list(&self, name: &str, outbox: &Arc<Outbox>) -> Dropped {
        self.answer(name, outbox, |round| round.send_list(name))
    }

    /// An answer to one member, in its place among the room's lines.
    pub fn answer_one(&self, name: &str, outbox: &Arc<Outbox>, answer: &str) -> Dropped {
        self.answer(name, outbox, |round| round.send(name, &[Arc::from(answer)]))
    }
}

impl ChatRoom for Room {
    fn limits(&self) -> &ChatLimits {
        &self.limits
    }

    fn join(&self, name: &str, outbox: &Arc<Outbox>) -> Result<(), JoinRefusal> {
        let seat = Seat {
            key: SeatKey::default(),
            here: Some(outbox.clone()),
        };
        log_dropped(&self.seat_member(name, seat, self.limits.max_members)?);
        Ok(())
    }

    fn say(&self, name: &str, outbox: &Arc<Outbox>, text: &str) -> Result<(), Unavailable> {
        if let Some(key) = self.seat_of(name, outbox) {
            log_dropped(&self.relay_say(name, key, text));
        }
        Ok(())
    }

    fn whisper(
        &self,
        from: &str,
        outbox: &Arc<Outbox>,
        to: &str,
        text: &str,
    ) -> Result<(), Unavailable> {
        if let Some(key) = self.seat_of(from, outbox) {
            log_dropped(&self.relay_whisper(from, key, to, text).1);
        }
        Ok(())
    }

    fn who(&self, name: &str, outbox: &Arc<Outbox>) {
        log_dropped(&self.who_list(name, outbox));
    }

    fn tell(&self, name: &str, outbox: &Arc<Outbox>, answer: &str) {
        log_dropped(&self.answer_one(name, outbox, answer));
    }

    fn leave(&self, name: &str, outbox: &Arc<Outbox>) {
        if let Some(key) = self.seat_of(name, outbox) {
            log_dropped(&self.remove(name, key).1);
        }
    }
}

fn is_current(members: &Members, name: &str, outbox: &Arc<Outbox>) -> bool {
    members
        .get(name)
        .and_then(|seat| seat.here.as_ref())
        .is_some_and(|o| Arc::ptr_eq(o, outbox))
}

fn holds(members: &Members, name: &str, key: SeatKey) -> bool {
    members.get(name).is_some_and(|seat| seat.key == key)
}

/// One event's deliveries under the room lock, and the members they overflowed.
struct Round<'a> {
    members: &'a mut Members,
    overflow: Overflow,
    too_slow: Vec<String>,
}

impl<'a> Round<'a> {
    fn new(members: &'a mut Members, overflow: Overflow) -> Self {
        Round {
            members,
            overflow,
            too_slow: Vec::new(),
        }
    }

    fn send(&mut self, to: &str, lines: &[Line]) {
        if let Some(outbox) = self.members.get(to).and_then(|s| s.here.as_ref()) {
            if !outbox.push(lines) {
                outbox.drop_too_slow();
                self.too_slow.push(to.to_string());
            }
        }
    }

    fn broadcast_except(&mut self, except: &str, text: String) {
        let lines = [Line::from(text)];
        for (name, seat) in self.members.iter() {
            let Some(outbox) = &seat.here else { continue };
            if name != except && !self.too_slow.contains(name) && !outbox.push(&lines) {
                outbox.drop_too_slow();
                self.too_slow.push(name.clone());
            }
        }
    }

    /// `* members: <n>` and the n names, as one push (consecutive lines).
    fn send_list(&mut self, to: &str) {
        if self.members.get(to).is_none_or(|s| s.here.is_none()) {
            return;
        }
        let mut lines: Vec<Line> = Vec::with_capacity(self.members.len() + 1);
        lines.push(Arc::from(line::members_header(self.members.len())));
        lines.extend(self.members.keys().map(|n| Line::from(line::member(n))));
        self.send(to, &lines);
    }

    /// On one server, removes the members found too slow (the others hear
    /// that they left); returns them, to be logged (and in a replica
    /// published) once the room lock is released.
    fn settle(mut self) -> Dropped {
        let mut done = 0;
        let mut dropped = Vec::new();
        while done < self.too_slow.len() {
            let name = self.too_slow[done].clone();
            done += 1;
            let Some(seat) = self.members.get(&name) else {
                continue;
            };
            dropped.push((name.clone(), seat.key));
            if self.overflow == Overflow::Remove {
                self.members.remove(&name);
                self.broadcast_except(&name, line::left(&name));
            }
        }
        dropped
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
        let room = Room::local(limits(4, 64));
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
        let room = Room::local(limits(1, 64));
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
        let room = Room::local(limits(4, 4));
        let (a, slow) = (Outbox::new(64), Outbox::new(4));
        room.join("slow", &slow).unwrap(); // 2 lines waiting
        room.join("alice", &a).unwrap(); // + joined = 3
        room.say("alice", &a, "one").unwrap(); // 4
        room.say("alice", &a, "two").unwrap(); // 5: too slow
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

    #[test]
    fn a_replica_stops_a_slow_member_and_leaves_its_leave_to_the_bus() {
        let room = Room::replica(limits(4, 4));
        let (a, slow) = (Outbox::new(64), Outbox::new(4));
        let key = |member| SeatKey { server: 7, member };
        let here = |o: &Arc<Outbox>, member| Seat {
            key: key(member),
            here: Some(o.clone()),
        };
        let far = Seat {
            key: SeatKey {
                server: 9,
                member: 1,
            },
            here: None,
        };
        assert!(room.admit("slow", here(&slow, 1)).0); // 2 lines waiting
        assert!(room.admit("alice", here(&a, 2)).0); // + joined = 3
        assert!(room.admit("bob", far.clone()).0); // + joined = 4
        assert!(!room.admit("bob", far).0, "one seat per name");
        assert!(room.relay_say("bob", key(5), "not bob's seat").is_empty());
        let dropped = room.relay_say(
            "bob",
            SeatKey {
                server: 9,
                member: 1,
            },
            "hi",
        );
        assert_eq!(dropped, vec![("slow".to_string(), key(1))]);
        assert!(slow.is_too_slow());
        // Still seated until its leave comes back from the bus; then once.
        assert_eq!(room.member_count(), 3);
        let (seat, _) = room.remove("slow", key(1));
        assert!(seat.is_some());
        assert!(room.remove("slow", key(1)).0.is_none());
        assert_eq!(
            drain(&a),
            [
                "* members: 2",
                "* member: alice",
                "* member: slow",
                "* bob joined",
                "bob: hi",
                "* slow left"
            ]
        );
    }
}
