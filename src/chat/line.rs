//! The chat's lines: what a client line means, the text rules, and the exact
//! lines the server sends.
//!
//! Injection is closed here, in three steps (the spec's Security section):
//! framing gives one client line per LF; [`check_text`] refuses (never cleans)
//! every character some line reader or terminal takes as a line break, a
//! control or a bidi override; and every relayed line begins with a prefix the
//! server chooses ([`room_message`], [`echo`], [`private_in`], [`private_out`]),
//! so text never begins a line and no relayed line begins with `__`.

use crate::config::CHAT_MAX_TEXT_BYTES;
use crate::protocol::chat::*;
use crate::rules::Username;

/// What one client line in chat mode asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ChatLine<'a> {
    /// Ignored; only resets the timeout.
    Empty,
    Leave,
    Quit,
    Who,
    Ping,
    /// `/msg <user> <text>`, syntax checked (the text rules are not).
    Msg {
        to: &'a str,
        text: &'a str,
    },
    /// `/msg` without a valid user or without text.
    MsgUsage,
    /// A message to the room (`//x` already unescaped to `/x`).
    Say(&'a str),
    Unknown,
}

/// Reads one client line (without its LF or CR LF).
pub fn parse(line: &str) -> ChatLine<'_> {
    if line.is_empty() {
        return ChatLine::Empty;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return ChatLine::Say(line);
    };
    if rest.starts_with('/') {
        return ChatLine::Say(rest);
    }
    if line == MSG || line.starts_with("/msg ") {
        return parse_msg(&line[MSG.len()..]);
    }
    match line.trim_end_matches(' ') {
        LEAVE => ChatLine::Leave,
        QUIT => ChatLine::Quit,
        WHO => ChatLine::Who,
        PING => ChatLine::Ping,
        _ => ChatLine::Unknown,
    }
}

/// After `/msg`: exactly one space, a valid username, one space, at least one
/// character of text (taken exactly, spaces kept).
fn parse_msg(after: &str) -> ChatLine<'_> {
    let Some(args) = after.strip_prefix(' ') else {
        return ChatLine::MsgUsage;
    };
    let Some((to, text)) = args.split_once(' ') else {
        return ChatLine::MsgUsage;
    };
    if text.is_empty() || Username::parse(to).is_err() {
        return ChatLine::MsgUsage;
    }
    ChatLine::Msg { to, text }
}

/// Why a text cannot be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum TextRefusal {
    ControlCharacter,
    TooLong,
}

impl TextRefusal {
    /// The answer to the sender.
    pub fn answer(&self) -> &'static str {
        match self {
            TextRefusal::ControlCharacter => NOT_SENT_CONTROL,
            TextRefusal::TooLong => NOT_SENT_TOO_LONG,
        }
    }
}

/// A character no relayed text may hold: C0 controls, DEL and C1 controls (NEL
/// included), the line and paragraph separators, bidi embeddings, overrides and
/// isolates.
pub fn is_forbidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1F}'
        | '\u{7F}'..='\u{9F}'
        | '\u{2028}' | '\u{2029}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}')
}

/// The text rules, in the spec's order: forbidden characters, then length.
pub fn check_text(text: &str) -> Result<(), TextRefusal> {
    if text.chars().any(is_forbidden) {
        return Err(TextRefusal::ControlCharacter);
    }
    if text.len() > CHAT_MAX_TEXT_BYTES {
        return Err(TextRefusal::TooLong);
    }
    Ok(())
}

/// May this (authenticated) name enter the room? Names beginning with `__`
/// may not (so no relayed line begins with `__`); neither may legacy names
/// outside the username alphabet or length (a space or `:` in a name would
/// blur where the name ends), which only old databases can hold.
pub fn name_may_chat(name: &str) -> bool {
    !name.starts_with("__")
        && !name.is_empty()
        && name.len() <= crate::config::USERNAME_MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn room_message(from: &str, text: &str) -> String {
    format!("{from}: {text}")
}

pub fn echo(text: &str) -> String {
    format!("{ECHO_PREFIX}{text}")
}

pub fn private_in(from: &str, text: &str) -> String {
    format!("{PRIVATE_PREFIX}{from}: {text}")
}

pub fn private_out(to: &str, text: &str) -> String {
    format!("{PRIVATE_TO_PREFIX}{to}] {text}")
}

pub fn not_member(to: &str) -> String {
    format!("{NOT_MEMBER_PREFIX}{to}{NOT_MEMBER_SUFFIX}")
}

pub fn joined(name: &str) -> String {
    format!("{NOTICE_PREFIX}{name}{JOINED_SUFFIX}")
}

pub fn left(name: &str) -> String {
    format!("{NOTICE_PREFIX}{name}{LEFT_SUFFIX}")
}

pub fn members_header(n: usize) -> String {
    format!("{MEMBERS_PREFIX}{n}")
}

pub fn member(name: &str) -> String {
    format!("{MEMBER_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_LINE_BYTES;

    #[test]
    fn commands_are_whole_lines_with_trailing_spaces_ignored() {
        assert_eq!(parse("/leave"), ChatLine::Leave);
        assert_eq!(parse("/leave  "), ChatLine::Leave);
        assert_eq!(parse("/quit"), ChatLine::Quit);
        assert_eq!(parse("/who"), ChatLine::Who);
        assert_eq!(parse("/ping "), ChatLine::Ping);
        assert_eq!(parse("/who x"), ChatLine::Unknown);
        assert_eq!(parse("/WHO"), ChatLine::Unknown);
        assert_eq!(parse("/"), ChatLine::Unknown);
        assert_eq!(parse(" /who"), ChatLine::Say(" /who"));
        assert_eq!(parse(""), ChatLine::Empty);
        assert_eq!(parse(" "), ChatLine::Say(" "));
    }

    #[test]
    fn double_slash_escapes_a_message() {
        assert_eq!(parse("//who"), ChatLine::Say("/who"));
        assert_eq!(parse("//"), ChatLine::Say("/"));
    }

    #[test]
    fn msg_syntax() {
        assert_eq!(
            parse("/msg bob hi  there "),
            ChatLine::Msg {
                to: "bob",
                text: "hi  there "
            }
        );
        assert_eq!(
            parse("/msg bob  "),
            ChatLine::Msg {
                to: "bob",
                text: " "
            }
        );
        for bad in [
            "/msg",
            "/msg ",
            "/msg bob",
            "/msg bob ",
            "/msg  bob hi",
            "/msg b@d hi",
        ] {
            assert_eq!(parse(bad), ChatLine::MsgUsage, "{bad:?}");
        }
        assert_eq!(parse("/msgbob hi"), ChatLine::Unknown);
    }

    #[test]
    fn forbidden_characters_are_refused() {
        for c in [
            '\r', '\n', '\t', '\u{1b}', '\u{b}', '\u{c}', '\u{1c}', '\u{7f}', '\u{85}', '\u{9f}',
            '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{2069}', '\0',
        ] {
            let text = format!("a{c}b");
            assert_eq!(
                check_text(&text),
                Err(TextRefusal::ControlCharacter),
                "{c:?}"
            );
        }
        assert_eq!(check_text("héllo wörld ✓ 日本"), Ok(()));
        assert_eq!(check_text("\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}"), Ok(()));
    }

    #[test]
    fn text_limit_is_in_bytes() {
        assert_eq!(check_text(&"x".repeat(CHAT_MAX_TEXT_BYTES)), Ok(()));
        assert_eq!(
            check_text(&"x".repeat(CHAT_MAX_TEXT_BYTES + 1)),
            Err(TextRefusal::TooLong)
        );
        assert_eq!(check_text(&"é".repeat(481)), Err(TextRefusal::TooLong));
    }

    #[test]
    fn the_longest_relayed_line_fits_the_line_limit() {
        let name = "n".repeat(32);
        let text = "x".repeat(CHAT_MAX_TEXT_BYTES);
        assert!(private_out(&name, &text).len() <= MAX_LINE_BYTES);
        assert!(private_in(&name, &text).len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn names_beginning_with_two_underscores_cannot_chat() {
        assert!(!name_may_chat("__quit__"));
        assert!(!name_may_chat("a b"));
        assert!(name_may_chat("_alice"));
        assert!(name_may_chat("bob.k-9"));
    }

    #[test]
    fn relayed_lines_never_begin_with_control_marks() {
        assert_eq!(room_message("alice", "__quit__"), "alice: __quit__");
        assert_eq!(echo("__quit__"), "> __quit__");
    }
}
