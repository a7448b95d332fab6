//! Server text made safe for a terminal.
//!
//! Display lines, `Error:` reasons and refusal texts come from the server, and a
//! hostile one could send escape sequences: set the window title, clear the
//! screen, move the cursor, overwrite a line with CR. Everything the client
//! prints that came from the server goes through [`visible`], which writes each
//! control character (Unicode category Cc: C0, DEL, C1) as a visible escape
//! (`\u{1b}`, `\r`, `\t` ...) and leaves all other text as it is. So are the
//! other characters the chat protocol forbids in text
//! ([`is_forbidden`](crate::chat::line::is_forbidden)): the line and paragraph
//! separators (a line break for some terminals) and the bidi overrides and
//! isolates (they reorder what the person reads).

use crate::chat::line::is_forbidden;
use std::borrow::Cow;

fn unsafe_char(c: char) -> bool {
    c.is_control() || is_forbidden(c)
}

/// `text` with its control characters escaped; borrowed when there are none.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_left_as_it_is() {
        assert!(matches!(
            visible("Access granted! é ü 日本"),
            Cow::Borrowed(_)
        ));
        assert_eq!(visible(r"a \ backslash"), r"a \ backslash");
    }

    #[test]
    fn control_characters_are_made_visible() {
        // Window title (OSC ... BEL), clear screen (CSI), CR overwrite, DEL, C1 CSI.
        assert_eq!(
            visible("\x1b]0;owned\x07hi\x1b[2J\rX\x7f\u{9b}"),
            r"\u{1b}]0;owned\u{7}hi\u{1b}[2J\rX\u{7f}\u{9b}"
        );
        assert_eq!(visible("a\tb\n"), r"a\tb\n");
        // Bidi override (reorders what is read) and line separator.
        assert_eq!(visible("pay \u{202e}0001"), r"pay \u{202e}0001");
        assert_eq!(visible("a\u{2028}b"), r"a\u{2028}b");
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let c = char::from_u32(c).unwrap();
            assert!(
                !visible(&c.to_string()).chars().any(char::is_control),
                "{c:?}"
            );
        }
    }
}
