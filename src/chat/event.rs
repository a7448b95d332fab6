//! The room's events as they travel on the chat bus between servers
//! (`shared.rs`): one line of text each, so a person can watch them with
//! `LISTEN dccn_chat;` in `psql`.
//!
//! ```text
//! J <server> <member> <seq> <name>                 a member enters
//! L <server> <member> <seq> <name>                 a member leaves
//! S <server> <member> <seq> <name> <text>          a room message
//! W <server> <member> <seq> <from> <to> <text>     a private message
//! ```
//!
//! `<server>` is 16 hex digits (the server's identity on the bus), `<member>`
//! the member's number on that server, `<seq>` the member's count of its own
//! events (its server waits for that number to come back; 0: the event was
//! not the member's, e.g. the leave of a member whose server died). Names are
//! room names (`line::name_may_chat`: no space), so the fields split on
//! spaces; the text is the rest of the line, exactly as sent.
//!
//! A payload is checked as strictly as a client's line: anyone who can write
//! to the database can `NOTIFY`, so a malformed or rule-breaking event is
//! dropped, never relayed.

use super::line;
use super::room::SeatKey;

/// One event of the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Join {
        key: SeatKey,
        seq: u64,
        name: String,
    },
    Leave {
        key: SeatKey,
        seq: u64,
        name: String,
    },
    Say {
        key: SeatKey,
        seq: u64,
        name: String,
        text: String,
    },
    Whisper {
        key: SeatKey,
        seq: u64,
        from: String,
        to: String,
        text: String,
    },
}

impl Event {
    /// The seat the event comes from and the member's count of it.
    pub fn origin(&self) -> (SeatKey, u64) {
        match self {
            Event::Join { key, seq, .. }
            | Event::Leave { key, seq, .. }
            | Event::Say { key, seq, .. }
            | Event::Whisper { key, seq, .. } => (*key, *seq),
        }
    }

    /// The payload to publish.
    pub fn encode(&self) -> String {
        let (key, seq) = self.origin();
        let head = |kind: char| format!("{kind} {:016x} {} {seq}", key.server, key.member);
        match self {
            Event::Join { name, .. } => format!("{} {name}", head('J')),
            Event::Leave { name, .. } => format!("{} {name}", head('L')),
            Event::Say { name, text, .. } => format!("{} {name} {text}", head('S')),
            Event::Whisper { from, to, text, .. } => format!("{} {from} {to} {text}", head('W')),
        }
    }

    /// The event a payload holds, or `None` if it is not one (dropped).
    pub fn decode(payload: &str) -> Option<Event> {
        let mut fields = payload.splitn(5, ' ');
        let kind = fields.next()?;
        let server = fields.next()?;
        if server.len() != 16 {
            return None;
        }
        let key = SeatKey {
            server: u64::from_str_radix(server, 16).ok()?,
            member: number(fields.next()?)?,
        };
        let seq = number(fields.next()?)?;
        let rest = fields.next()?;
        let name_only = |rest: &str| room_name(rest).map(str::to_string);
        let event = match kind {
            "J" => Event::Join {
                key,
                seq,
                name: name_only(rest)?,
            },
            "L" => Event::Leave {
                key,
                seq,
                name: name_only(rest)?,
            },
            "S" => {
                let (name, text) = rest.split_once(' ')?;
                Event::Say {
                    key,
                    seq,
                    name: room_name(name)?.to_string(),
                    text: message(text)?.to_string(),
                }
            }
            "W" => {
                let (from, rest) = rest.split_once(' ')?;
                let (to, text) = rest.split_once(' ')?;
                Event::Whisper {
                    key,
                    seq,
                    from: room_name(from)?.to_string(),
                    to: room_name(to)?.to_string(),
                    text: message(text)?.to_string(),
                }
            }
            _ => return None,
        };
        Some(event)
    }
}

/// A decimal number as `encode` writes it (no sign, no leading zeros but "0").
fn number(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn room_name(s: &str) -> Option<&str> {
    line::name_may_chat(s).then_some(s)
}

fn message(s: &str) -> Option<&str> {
    (!s.is_empty() && line::check_text(s).is_ok()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: SeatKey = SeatKey {
        server: 0x00ab_cdef_0123_4567,
        member: 42,
    };

    #[test]
    fn every_event_survives_the_trip() {
        let events = [
            Event::Join {
                key: KEY,
                seq: 1,
                name: "alice".into(),
            },
            Event::Leave {
                key: KEY,
                seq: 0,
                name: "alice".into(),
            },
            Event::Say {
                key: KEY,
                seq: 7,
                name: "alice".into(),
                text: "  hello, /who __quit__ ".into(),
            },
            Event::Whisper {
                key: KEY,
                seq: 8,
                from: "alice".into(),
                to: "bob".into(),
                text: "hi you".into(),
            },
        ];
        for event in events {
            let payload = event.encode();
            assert_eq!(Event::decode(&payload), Some(event), "{payload}");
        }
        assert_eq!(
            Event::Say {
                key: KEY,
                seq: 7,
                name: "alice".into(),
                text: "hi".into()
            }
            .encode(),
            "S 00abcdef01234567 42 7 alice hi"
        );
    }

    #[test]
    fn malformed_or_rule_breaking_payloads_are_dropped() {
        for bad in [
            "",
            "J",
            "X 00abcdef01234567 42 1 alice",
            "J abcdef01234567 42 1 alice",
            "J 00abcdef0123456z 42 1 alice",
            "J 00abcdef01234567 -1 1 alice",
            "J 00abcdef01234567 042 1 alice",
            "J 00abcdef01234567 42 1 __quit__",
            "J 00abcdef01234567 42 1 al ice",
            "J 00abcdef01234567 42 1 ",
            "S 00abcdef01234567 42 1 alice",
            "S 00abcdef01234567 42 1 alice ",
            "S 00abcdef01234567 42 1 alice bell\u{7}",
            "S 00abcdef01234567 42 1 alice line\nbreak",
            "W 00abcdef01234567 42 1 alice bob",
            "W 00abcdef01234567 42 1 alice b:ob hi",
        ] {
            assert_eq!(Event::decode(bad), None, "{bad:?}");
        }
        let too_long = format!(
            "S 00abcdef01234567 42 1 alice {}",
            "x".repeat(crate::config::CHAT_MAX_TEXT_BYTES + 1)
        );
        assert_eq!(Event::decode(&too_long), None);
    }
}
