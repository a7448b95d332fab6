//! The username and password rules, checked at the edge.
//!
//! A [`Username`] can only be built by [`Username::parse`], so code that holds one
//! knows the name obeys the rule. Passwords are never stored, so they only get a
//! check, [`check_password`].

use crate::config::{PASSWORD_MIN_CHARS, USERNAME_MAX_CHARS};
use std::fmt;
use unicode_general_category::{get_general_category, GeneralCategory};

/// A name that obeys the username rule: 1 to 32 characters from
/// `A-Z a-z 0-9 _ . -`, with no `__` (so no line naming a user can look like a
/// control token). Case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

/// Why a username was refused; the text follows `Username is invalid: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernameError {
    Empty,
    TooLong,
    BadCharacter,
    DoubleUnderscore,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            UsernameError::Empty => "it is empty",
            UsernameError::TooLong => &format!("it is longer than {USERNAME_MAX_CHARS} characters"),
            UsernameError::BadCharacter => "use only A-Z a-z 0-9 _ . -",
            UsernameError::DoubleUnderscore => "it may not contain two underscores in a row",
        };
        write!(
            f,
            "{why} (1 to {USERNAME_MAX_CHARS} characters from A-Z a-z 0-9 _ . -, no '__')"
        )
    }
}

impl Username {
    pub fn parse(s: &str) -> Result<Username, UsernameError> {
        if s.is_empty() {
            return Err(UsernameError::Empty);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(UsernameError::BadCharacter);
        }
        // All ASCII from here, so bytes are characters.
        if s.len() > USERNAME_MAX_CHARS {
            return Err(UsernameError::TooLong);
        }
        if s.contains("__") {
            return Err(UsernameError::DoubleUnderscore);
        }
        Ok(Username(s.to_string()))
    }

    /// A name read back from the database that may predate the rule (a row
    /// written by the original Python server). Only for names that are stored.
    pub fn legacy(stored: &str) -> Username {
        Username(stored.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that breaks the rule; shown as the rule, in one sentence, after
/// `Password is invalid: `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordRule;

impl fmt::Display for PasswordRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "use at least {PASSWORD_MIN_CHARS} characters, with a digit, a lowercase and an uppercase letter"
        )
    }
}

/// Checks the password rule: at least 8 characters (Unicode scalar values), a digit
/// 0-9, a lowercase and an uppercase letter (Unicode cases). The upper bound is the
/// line limit, enforced by the codec.
pub fn check_password(p: &str) -> Result<(), PasswordRule> {
    let long_enough = p.chars().count() >= PASSWORD_MIN_CHARS;
    let digit = p.chars().any(|c| c.is_ascii_digit());
    // Letters of that case (general categories Ll and Lu): `char::is_lowercase`
    // would also accept symbols such as the circled letter U+24D0.
    let lower = p
        .chars()
        .any(|c| get_general_category(c) == GeneralCategory::LowercaseLetter);
    let upper = p
        .chars()
        .any(|c| get_general_category(c) == GeneralCategory::UppercaseLetter);
    if long_enough && digit && lower && upper {
        Ok(())
    } else {
        Err(PasswordRule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_that_pass() {
        for ok in ["a", "Alice", "bob_1", "x.y-z", "a_b_c", &"n".repeat(32)] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok, "{ok}");
        }
    }

    #[test]
    fn usernames_that_fail() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(
            Username::parse(&"n".repeat(33)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(
            Username::parse("__type__"),
            Err(UsernameError::DoubleUnderscore)
        );
        assert_eq!(
            Username::parse("a__b"),
            Err(UsernameError::DoubleUnderscore)
        );
        for bad in ["a b", " a", "a:b", "é", "a\tb", "root;", "ñandú"] {
            assert_eq!(
                Username::parse(bad),
                Err(UsernameError::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_that_pass() {
        for ok in [
            "Passw0rd",
            "Passw0rdDemo",
            "Pässwört9X",
            "ÄÖÜäöü12",
            "aB3aB3aB",
        ] {
            assert!(check_password(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn passwords_that_fail() {
        for bad in ["Passw0r", "password1", "PASSWORD1", "Password", "", "Ab1"] {
            assert!(check_password(bad).is_err(), "{bad}");
        }
        // 8 characters but 10 bytes: lengths count characters.
        assert!(check_password("Äb1xxxxx").is_ok());
        // 7 characters, 9 bytes: too short although 9 bytes.
        assert!(check_password("Äb1xxxé").is_err());
        // A non-ASCII digit is not a digit 0-9.
        assert!(check_password("Passwort٣").is_err());
        // Circled letters and Roman numerals have a case but are not letters.
        assert!(check_password("ⓐⓑⒶⒷ1234").is_err());
        assert!(check_password("abcdⅣ123").is_err());
    }
}
