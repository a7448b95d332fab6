//! One room across several servers (issue 14): every server keeps a replica
//! of the room ([`Room::replica`]) and delivers the events of a
//! [`ChatBus`] to its own members, in the bus's one order.
//!
//! Why every event goes out and comes back, even between two members of the
//! same server: the bus's order is the only order all servers share. A
//! server that delivered its own members' messages at once and the others'
//! when they arrive would show its members an order nobody else sees. So a
//! member's line is published, and its server delivers it (the echo to the
//! sender, the line to the others) when the bus hands it back, as every
//! other server does.
//!
//! Per-sender order: the session waits until its own event has come back
//! before it reads the member's next line (at most [`CHAT_BUS_WAIT`]), so a
//! `* pong` or a `/who` list that follows a message in the member's stream
//! follows its echo too. `/who` and the other answers to one member are
//! served from the replica, which holds every join and leave this member
//! has been told of, and no other.
//!
//! Membership is the bus's (its table): a join is decided there (the cap,
//! one seat per name) in the same step that publishes it; the listener
//! thread seats the member in the replica when the event comes back, and
//! only then is the member list sent. A server's members are the seats whose
//! key names this server's identity; that identity is new each time the
//! listener connects, so a server that lost the bus and came back never
//! confuses its old members with its new ones.
//!
//! Failures: if the listening connection fails, this server's members are
//! dropped with `Error: chat unavailable` (they could no longer hear the
//! room), the replica is emptied, and the listener reconnects every
//! [`CHAT_BUS_RETRY`]; meanwhile `chat` answers `Server error, try again
//! later`. The members of a server that died are unseated by the others'
//! heartbeats (see `config::CHAT_SERVER_STALE`), which publish their leaves.

use super::bus::{BusError, ChatBus, ChatFeed, JoinVerdict};
use super::event::Event;
use super::member::Outbox;
use super::room::{log_dropped, ChatRoom, Dropped, JoinRefusal, Room, Seat, SeatKey, Unavailable};
use crate::config::{ChatLimits, CHAT_BUS_POLL, CHAT_BUS_RETRY, CHAT_BUS_WAIT, CHAT_HEARTBEAT};
use crate::protocol::error;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The room shared over a bus, and the thread that listens to it.
pub struct SharedRoom {
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

struct Shared {
    limits: ChatLimits,
    bus: Arc<dyn ChatBus>,
    replica: Room,
    state: Mutex<State>,
    /// Signalled when one of this server's events has come back.
    applied: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    /// This server's identity on the bus while it listens; `None`: it does
    /// not (chat is unavailable).
    server: Option<u64>,
    /// This server's members, by outbox id.
    members: HashMap<u64, Local>,
    /// Leaves the bus did not take (it failed); retried at each heartbeat.
    orphans: Vec<(String, SeatKey)>,
    /// The listener has tried to connect at least once.
    tried: bool,
}

/// One of this server's members.
struct Local {
    key: SeatKey,
    outbox: Arc<Outbox>,
    /// Events the member has published, and how many of them came back.
    sent: u64,
    applied: u64,
}

impl SharedRoom {
    /// Starts listening to `bus` in a thread of its own, and waits for its
    /// first try (at most [`CHAT_BUS_WAIT`]), so a server that starts on a
    /// working database can seat its first member at once. While it does not
    /// listen, `chat` is refused as unavailable.
    pub fn start(limits: ChatLimits, bus: Arc<dyn ChatBus>) -> SharedRoom {
        let shared = Arc::new(Shared {
            limits,
            bus,
            replica: Room::replica(limits),
            state: Mutex::new(State::default()),
            applied: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let listener = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("chat-bus".into())
                .spawn(move || shared.listen())
                .map_err(|e| log::error!("chat: cannot start the bus listener: {e}"))
                .ok()
        };
        let deadline = Instant::now() + CHAT_BUS_WAIT;
        let mut state = shared.state();
        while !state.tried && listener.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared
                .applied
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        SharedRoom { shared, listener }
    }

    /// Whether the room is reachable now (the listener is on the bus).
    pub fn is_listening(&self) -> bool {
        self.shared.state().server.is_some()
    }
}

impl Drop for SharedRoom {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
    }
}

fn leave_event(name: &str, key: SeatKey) -> String {
    Event::Leave {
        key,
        seq: 0,
        name: name.to_string(),
    }
    .encode()
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps `d` in short steps, returning early when the server stops.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() && Instant::now() < until {
            thread::sleep(CHAT_BUS_POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// The listener thread: connect, follow the feed, and start afresh
    /// whenever the connection is lost, until the server stops.
    fn listen(&self) {
        let mut down_since: Option<Instant> = None;
        while !self.stopping() {
            let server = match new_server_id() {
                Ok(id) => id,
                Err(e) => {
                    log::error!("chat: {e}");
                    self.pause(CHAT_BUS_RETRY);
                    continue;
                }
            };
            let (mut feed, seats) = match self.bus.listen(server) {
                Ok(opened) => opened,
                Err(e) => {
                    self.state().tried = true;
                    self.applied.notify_all();
                    if down_since.is_none() {
                        log::error!("chat: unavailable until the bus is back: {e}");
                        down_since = Some(Instant::now());
                    }
                    self.pause(CHAT_BUS_RETRY);
                    continue;
                }
            };
            let elsewhere = seats.len();
            self.replica.reseat(
                seats
                    .into_iter()
                    .map(|(name, key)| (name, Seat { key, here: None }))
                    .collect(),
            );
            {
                let mut state = self.state();
                state.server = Some(server);
                state.tried = true;
            }
            self.applied.notify_all();
            match down_since.take() {
                Some(t) => log::info!(
                    "chat: on the bus again as {server:016x} after {:.1} s ({elsewhere} members)",
                    t.elapsed().as_secs_f64()
                ),
                None => log::info!("chat: on the bus as {server:016x} ({elsewhere} members)"),
            }
            let lost = self.follow(feed.as_mut());
            self.lose();
            match lost {
                Ok(()) => {
                    feed.close(&leave_event);
                    break;
                }
                Err(e) => {
                    log::error!("chat: lost the bus, members here dropped: {e}");
                    down_since = Some(Instant::now());
                }
            }
        }
    }

    /// Applies the feed's events, with a heartbeat every [`CHAT_HEARTBEAT`].
    /// `Ok`: the server is stopping; `Err`: the feed is lost.
    fn follow(&self, feed: &mut dyn ChatFeed) -> Result<(), BusError> {
        let mut next_beat = Instant::now();
        while !self.stopping() {
            if Instant::now() >= next_beat {
                if !feed.heartbeat(&leave_event)? {
                    return Err(BusError("this server was taken for dead".into()));
                }
                self.retry_orphans();
                next_beat = Instant::now() + CHAT_HEARTBEAT;
            }
            if let Some(payload) = feed.next(CHAT_BUS_POLL)? {
                self.apply(&payload);
            }
        }
        Ok(())
    }

    /// This server is off the bus: its members are dropped (they would hear
    /// nothing more), the replica is emptied, and waiting sessions wake.
    fn lose(&self) {
        let mut state = self.state();
        state.server = None;
        state.orphans.clear();
        for local in state.members.values() {
            local.outbox.drop_member(error::CHAT_UNAVAILABLE);
        }
        state.members.clear();
        drop(state);
        self.applied.notify_all();
        self.replica.reseat(Vec::new());
    }

    /// Delivers one event from the bus to this server's members.
    fn apply(&self, payload: &str) {
        let Some(event) = Event::decode(payload) else {
            log::warn!("chat: a malformed event on the bus was dropped");
            return;
        };
        let (key, seq) = event.origin();
        let mine = self.state().server == Some(key.server);
        let dropped = match &event {
            Event::Join { name, .. } => {
                let here = if mine {
                    let state = self.state();
                    state.members.get(&key.member).map(|l| l.outbox.clone())
                } else {
                    None
                };
                let seat = Seat { key, here };
                let (seated, mut dropped) = self.replica.admit(name, seat.clone());
                if !seated {
                    // The replica held an older seat under this name that the
                    // bus no longer has: that member left.
                    if let Some(old) = self.replica.key_of(name) {
                        dropped.extend(self.replica.remove(name, old).1);
                    }
                    dropped.extend(self.replica.admit(name, seat).1);
                }
                dropped
            }
            Event::Leave { name, .. } => {
                let (seat, dropped) = self.replica.remove(name, key);
                // Unseated by the bus, not by the member itself: this server
                // was taken for dead while its member was still here.
                if let (
                    Some(Seat {
                        here: Some(outbox), ..
                    }),
                    0,
                ) = (seat, seq)
                {
                    outbox.drop_member(error::CHAT_UNAVAILABLE);
                }
                dropped
            }
            Event::Say { name, text, .. } => self.replica.relay_say(name, key, text),
            Event::Whisper { from, to, text, .. } => {
                self.replica.relay_whisper(from, key, to, text).1
            }
        };
        if mine && seq > 0 {
            let mut state = self.state();
            if let Some(local) = state.members.get_mut(&key.member) {
                local.applied = local.applied.max(seq);
            }
            drop(state);
            self.applied.notify_all();
        }
        self.eject(dropped);
    }

    /// Publishes the leaves of this server's members that a delivery found
    /// too slow: their leaves take their place in the bus's order like any
    /// other (the replica only stopped them).
    fn eject(&self, dropped: Dropped) {
        log_dropped(&dropped);
        for (name, key) in dropped {
            self.unseat(&name, key, &leave_event(&name, key));
        }
    }

    /// Unseats a member on the bus, or here only if the bus does not have it
    /// (or fails: then the leave is retried at the next heartbeat).
    /// `true`: the bus published the leave.
    fn unseat(&self, name: &str, key: SeatKey, announce: &str) -> bool {
        match self.bus.leave(name, key, announce) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                log::warn!("chat: {name}'s leave not published yet: {e}");
                self.state().orphans.push((name.to_string(), key));
            }
        }
        log_dropped(&self.replica.remove(name, key).1);
        false
    }

    fn retry_orphans(&self) {
        let orphans = std::mem::take(&mut self.state().orphans);
        for (name, key) in orphans {
            self.unseat(&name, key, &leave_event(&name, key));
        }
    }

    /// Counts one more event of the member with `outbox`: its seat and number.
    fn next_event(&self, outbox: &Outbox) -> Result<(SeatKey, u64), Unavailable> {
        let mut state = self.state();
        let server = state.server;
        let local = state.members.get_mut(&outbox.id()).ok_or(Unavailable)?;
        if server != Some(local.key.server) {
            return Err(Unavailable);
        }
        local.sent += 1;
        Ok((local.key, local.sent))
    }

    /// Waits until the member's event `seq` has come back from the bus.
    fn wait_applied(&self, outbox: &Outbox, seq: u64) -> Result<(), Unavailable> {
        let deadline = Instant::now() + CHAT_BUS_WAIT;
        let mut state = self.state();
        loop {
            let server = state.server;
            let local = state.members.get(&outbox.id()).ok_or(Unavailable)?;
            if server != Some(local.key.server) {
                return Err(Unavailable);
            }
            if local.applied >= seq {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "chat: an event did not come back from the bus within {CHAT_BUS_WAIT:?}"
                );
                return Err(Unavailable);
            }
            state = self
                .applied
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Publishes a member's event and waits for it to come back.
    fn publish(
        &self,
        outbox: &Outbox,
        event: impl FnOnce(SeatKey, u64) -> Event,
    ) -> Result<(), Unavailable> {
        let (key, seq) = self.next_event(outbox)?;
        if let Err(e) = self.bus.publish(&event(key, seq).encode()) {
            log::warn!("chat: {e}");
            return Err(Unavailable);
        }
        self.wait_applied(outbox, seq)
    }

    fn forget(&self, outbox: &Outbox) {
        self.state().members.remove(&outbox.id());
    }
}

impl ChatRoom for SharedRoom {
    fn limits(&self) -> &ChatLimits {
        &self.shared.limits
    }

    fn join(&self, name: &str, outbox: &Arc<Outbox>) -> Result<(), JoinRefusal> {
        let s = &self.shared;
        let key = {
            let mut state = s.state();
            let server = state.server.ok_or(JoinRefusal::Unavailable)?;
            let key = SeatKey {
                server,
                member: outbox.id(),
            };
            let local = Local {
                key,
                outbox: outbox.clone(),
                sent: 1,
                applied: 0,
            };
            state.members.insert(outbox.id(), local);
            key
        };
        let announce = Event::Join {
            key,
            seq: 1,
            name: name.to_string(),
        }
        .encode();
        let refusal = match s.bus.join(name, key, s.limits.max_members, &announce) {
            Ok(JoinVerdict::Seated) => {
                if s.wait_applied(outbox, 1).is_ok() {
                    return Ok(());
                }
                self.leave(name, outbox);
                JoinRefusal::Unavailable
            }
            Ok(JoinVerdict::Full) => JoinRefusal::Full,
            Ok(JoinVerdict::Taken) => JoinRefusal::AlreadyIn,
            Err(e) => {
                log::warn!("chat: {name} could not join: {e}");
                JoinRefusal::Unavailable
            }
        };
        s.forget(outbox);
        Err(refusal)
    }

    fn say(&self, name: &str, outbox: &Arc<Outbox>, text: &str) -> Result<(), Unavailable> {
        self.shared.publish(outbox, |key, seq| Event::Say {
            key,
            seq,
            name: name.to_string(),
            text: text.to_string(),
        })
    }

    fn whisper(
        &self,
        from: &str,
        outbox: &Arc<Outbox>,
        to: &str,
        text: &str,
    ) -> Result<(), Unavailable> {
        self.shared.publish(outbox, |key, seq| Event::Whisper {
            key,
            seq,
            from: from.to_string(),
            to: to.to_string(),
            text: text.to_string(),
        })
    }

    fn who(&self, name: &str, outbox: &Arc<Outbox>) {
        self.shared
            .eject(self.shared.replica.who_list(name, outbox));
    }

    fn tell(&self, name: &str, outbox: &Arc<Outbox>, answer: &str) {
        self.shared
            .eject(self.shared.replica.answer_one(name, outbox, answer));
    }

    fn leave(&self, name: &str, outbox: &Arc<Outbox>) {
        let s = &self.shared;
        let Ok((key, seq)) = s.next_event(outbox) else {
            // Not seated through this server now (dropped with the bus).
            s.forget(outbox);
            return;
        };
        let announce = Event::Leave {
            key,
            seq,
            name: name.to_string(),
        }
        .encode();
        if s.unseat(name, key, &announce) && s.wait_applied(outbox, seq).is_err() {
            // The leave is published but did not come back: the replica
            // forgets the member now; the event, when it comes, finds no seat.
            log_dropped(&s.replica.remove(name, key).1);
        }
        s.forget(outbox);
    }
}

/// A fresh identity on the bus, from the OS's randomness (two servers, or
/// two lives of one server, must never share one).
fn new_server_id() -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(u64::from_be_bytes(bytes))
}
