//! The protocol's words, shared by the server, the client and the load generator.
//!
//! Everything a peer matches on is here, once: the control lines, the outcome
//! lines, the menus and the reasons of `Error: <reason>` frames. Menus are
//! display text (their wording may change, the command words may not); every
//! other string is part of the contract in `docs/PROTOCOL.md` and must not
//! change without it.

pub const MAIN_MENU: &str = "What do you want to do? (register/login/login_scram/quit)";
pub const USER_MENU: &str =
    "What do you want to do? (ls/whoami/chat/change_password/logout/delete_account/quit)";
/// The original's fixed demo listing for `ls` (never user data).
pub const LS_LISTING: &str = "root home etc lib media mnt";

/// Outcome lines: exact text, matched by automated clients.
pub mod outcome {
    pub const CONNECTED: &str = "Connected to server";
    pub const REPEAT_PASSWORD: &str = "Repeat password";
    pub const NAME_TAKEN: &str = "Username already taken, try something else";
    pub const NAME_INVALID: &str = "Username is invalid";
    pub const PASSWORDS_DIFFER: &str = "Passwords are not the same, try again";
    pub const PASSWORD_INVALID: &str = "Password is invalid";
    pub const TOO_MANY_ATTEMPTS: &str = "Too many attempts";
    pub const REGISTERED: &str = "User successfully registered!";
    pub const LOGIN_OK: &str = "Successfully login";
    pub const ACCESS_GRANTED: &str = "Access granted!";
    pub const LOGIN_FAILED: &str = "User or password incorrect";
    pub const PASSWORD_CHANGED: &str = "Password successfully changed";
    pub const ACCOUNT_REMOVED: &str = "Your account was removed from system";
    pub const UNRECOGNIZED: &str = "Unrecognized type";
    pub const SERVER_ERROR: &str = "Server error, try again later";
    /// `chat` refused (the session stays at the logged-in menu).
    pub const CHAT_FULL: &str = "Chat is full, try again later";
    pub const CHAT_ALREADY_IN: &str = "You are already in the chat in another session";
    pub const CHAT_NOT_FOR_NAME: &str = "Chat is not available for this username";
    pub const REGISTRATIONS_LIMITED: &str =
        "Too many registrations from your address, try again later";
    pub const REGISTRATION_CLOSED: &str = "Registration is closed";
}

/// The chat room (`docs/` and `shared/protocol-chat.md`): what the client types
/// and the exact lines the server sends in chat mode.
pub mod chat {
    /// The logged-in menu's word that enters the room.
    pub const ENTER: &str = "chat";
    /// Display line before `__chat__` (wording may change).
    pub const WELCOME: &str =
        "Welcome to the chat room: type to talk to everyone, /msg <user> <text> to whisper, /who, /ping, /leave, /quit";

    /// Client commands.
    pub const LEAVE: &str = "/leave";
    pub const QUIT: &str = "/quit";
    pub const WHO: &str = "/who";
    pub const PING: &str = "/ping";
    pub const MSG: &str = "/msg";

    /// Server lines: fixed ones.
    pub const PONG: &str = "* pong";
    pub const NOT_SENT_SELF: &str = "* not sent: cannot /msg yourself";
    pub const USAGE_MSG: &str = "* usage: /msg <user> <text>";
    pub const NOT_SENT_CONTROL: &str = "* not sent: control characters are not allowed";
    pub const NOT_SENT_TOO_LONG: &str = "* not sent: message too long";
    pub const RATE_LIMITED: &str = "* rate limit: line dropped";
    pub const UNKNOWN_COMMAND: &str = "* unknown command (commands: /who /msg /ping /leave /quit)";
    /// Reason of `Error: too slow`.
    pub const TOO_SLOW: &str = "too slow";

    /// Server lines: the parts around names and texts.
    pub const MEMBERS_PREFIX: &str = "* members: ";
    pub const MEMBER_PREFIX: &str = "* member: ";
    pub const NOTICE_PREFIX: &str = "* ";
    pub const JOINED_SUFFIX: &str = " joined";
    pub const LEFT_SUFFIX: &str = " left";
    pub const ECHO_PREFIX: &str = "> ";
    pub const PRIVATE_PREFIX: &str = "[private] ";
    pub const PRIVATE_TO_PREFIX: &str = "[private to ";
    pub const NOT_MEMBER_PREFIX: &str = "* not sent: ";
    pub const NOT_MEMBER_SUFFIX: &str = " is not in the chat";
}

/// Control lines (server -> client).
pub mod control {
    pub const TYPE: &str = "__type__";
    pub const USERNAME: &str = "__username__";
    pub const PASSWORD: &str = "__password__";
    pub const NONCE_PREFIX: &str = "__nonce__:";
    pub const QUIT: &str = "__quit__";
    /// Chat mode begins (full duplex from here).
    pub const CHAT: &str = "__chat__";
    /// Chat mode is over (after `/leave`); the logged-in menu and `__type__` follow.
    pub const ENDCHAT: &str = "__endchat__";
    /// What every control line begins with.
    pub const MARK: &str = "__";
    /// A SCRAM exchange starts; the client answers with its client-first-message.
    pub const SCRAM_FIRST: &str = "__scram_first__";
    /// Followed by the server-first-message; the client answers client-final.
    pub const SCRAM_CHALLENGE_PREFIX: &str = "__scram_challenge__:";
    /// Followed by `v=<signature>` or `e=<error>`; the outcome lines follow.
    pub const SCRAM_FINAL_PREFIX: &str = "__scram_final__:";
}

/// Command words of the menus that need a name in code (the others are literals
/// in the session's match).
pub mod command {
    pub const LOGIN_SCRAM: &str = "login_scram";
}

/// The `e=` values of `__scram_final__:` (RFC 5802 server-error words).
pub mod scram_error {
    pub const INVALID_ENCODING: &str = "invalid-encoding";
    pub const CHANNEL_BINDING_NOT_SUPPORTED: &str = "channel-binding-not-supported";
    pub const EXTENSIONS_NOT_SUPPORTED: &str = "extensions-not-supported";
    pub const INVALID_USERNAME_ENCODING: &str = "invalid-username-encoding";
    pub const CHANNEL_BINDINGS_DONT_MATCH: &str = "channel-bindings-dont-match";
    pub const INVALID_PROOF: &str = "invalid-proof";
    pub const OTHER_ERROR: &str = "other-error";
}

/// `Error: <reason>` frames: the server sends one, then `__quit__`, then closes.
pub mod error {
    /// What starts every error frame.
    pub const PREFIX: &str = "Error: ";
    pub const LINE_TOO_LONG: &str = "line too long";
    pub const INVALID_UTF8: &str = "invalid UTF-8";
    pub const TIMED_OUT: &str = "timed out";
    pub const SERVER_BUSY: &str = "server busy";
    pub const SHUTTING_DOWN: &str = "server shutting down";
    /// Sent in plain text by a TLS-only port to a client that did not start TLS.
    pub const TLS_REQUIRED: &str = "TLS required";
    /// In chat mode, when the room shared by several servers cannot be reached
    /// (PostgreSQL, the chat bus, failed; docs/SCALE-OUT.md). Not in the
    /// single-server protocol, where the room cannot fail.
    pub const CHAT_UNAVAILABLE: &str = "chat unavailable";

    /// The whole frame as bytes, for the accept loop's best-effort writes.
    pub const SERVER_BUSY_FRAME: &[u8] = b"Error: server busy\n__quit__\n";
    pub const SHUTTING_DOWN_FRAME: &[u8] = b"Error: server shutting down\n__quit__\n";
    pub const TLS_REQUIRED_FRAME: &[u8] = b"Error: TLS required\n__quit__\n";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_spell_their_reasons() {
        for (frame, reason) in [
            (error::SERVER_BUSY_FRAME, error::SERVER_BUSY),
            (error::SHUTTING_DOWN_FRAME, error::SHUTTING_DOWN),
            (error::TLS_REQUIRED_FRAME, error::TLS_REQUIRED),
        ] {
            let want = format!("{}{reason}\n{}\n", error::PREFIX, control::QUIT);
            assert_eq!(frame, want.as_bytes());
        }
    }
}
