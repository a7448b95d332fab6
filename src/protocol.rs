//! The protocol's words, shared by the server, the client and the load generator.
//!
//! Everything a peer matches on is here, once: the control lines, the outcome
//! lines, the menus and the reasons of `Error: <reason>` frames. Menus are
//! display text (their wording may change, the command words may not); every
//! other string is part of the contract in `docs/PROTOCOL.md` and must not
//! change without it.

pub const MAIN_MENU: &str = "What do you want to do? (register/login/quit)";
pub const USER_MENU: &str =
    "What do you want to do? (ls/whoami/change_password/logout/delete_account/quit)";
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
    pub const REGISTRATIONS_LIMITED: &str =
        "Too many registrations from your address, try again later";
    pub const REGISTRATION_CLOSED: &str = "Registration is closed";
}

/// Control lines (server -> client).
pub mod control {
    pub const TYPE: &str = "__type__";
    pub const USERNAME: &str = "__username__";
    pub const PASSWORD: &str = "__password__";
    pub const NONCE_PREFIX: &str = "__nonce__:";
    pub const QUIT: &str = "__quit__";
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
