//! The one way an account is made: online by `register`, offline by
//! `run_server add-user`. Both go through [`create`], so both write the same
//! rows (a fresh salt from the OS, the classic verifier unless classic login
//! is off, the SCRAM row, one durable commit). [`credentials`] is what a new
//! password is stored as, for `change_password` too.

use crate::crypto;
use crate::rules::{check_password, Username};
use crate::scram::keys::{salt_bytes, ScramCredentials};
use crate::store::{Registration, ScramRow, Store, StoreError, UserRecord};
use std::fmt;

/// How new passwords are stored: the SCRAM iteration count, and whether the
/// classic verifier is kept (`--classic-login off`: not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    pub scram_iterations: u32,
    pub classic: bool,
}

/// A new password's stored form for `salt`: the classic verifier (`None` when
/// classic login is off) and the SCRAM row.
pub fn credentials(
    password: &str,
    salt: &str,
    storage: Storage,
) -> (Option<String>, Option<ScramRow>) {
    let verifier = crypto::verifier(salt, password);
    let scram = scram_row(&verifier, salt, storage.scram_iterations);
    (storage.classic.then_some(verifier), scram)
}

/// The SCRAM row for a classic verifier (P) and its salt (PBKDF2 here: the
/// server's cost of a new password); `None` for a salt that is not hex.
pub fn scram_row(verifier: &str, salt_hex: &str, iterations: u32) -> Option<ScramRow> {
    let salt = salt_bytes(salt_hex)?;
    let c = ScramCredentials::derive(verifier, &salt, iterations);
    let (stored_key, server_key) = c.encoded_keys();
    Some(ScramRow {
        iterations: i64::from(c.iterations),
        stored_key,
        server_key,
    })
}

/// A new account's credentials, already checked against the rules.
pub struct NewAccount<'a> {
    name: &'a Username,
    password: &'a str,
}

/// Why credentials were refused before reaching the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleBroken {
    Username(String),
    Password(crate::rules::PasswordRule),
}

impl fmt::Display for RuleBroken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleBroken::Username(why) => write!(f, "username is invalid: {why}"),
            RuleBroken::Password(why) => write!(f, "password is invalid: {why}"),
        }
    }
}

impl<'a> NewAccount<'a> {
    /// Checks `password` against the password rule (the name was parsed already).
    pub fn new(name: &'a Username, password: &'a str) -> Result<Self, RuleBroken> {
        check_password(password).map_err(RuleBroken::Password)?;
        Ok(NewAccount { name, password })
    }
}

/// Parses a username given offline (a command-line argument) by the same rule.
pub fn parse_username(raw: &str) -> Result<Username, RuleBroken> {
    Username::parse(raw).map_err(|why| RuleBroken::Username(why.to_string()))
}

/// Writes the account; returns once it is durable (or the name was taken).
pub fn create(
    store: &dyn Store,
    account: NewAccount<'_>,
    storage: Storage,
) -> Result<Registration, StoreError> {
    let salt = crypto::new_salt();
    let (verifier, scram) = credentials(account.password, &salt, storage);
    let record = UserRecord {
        login: account.name.to_string(),
        verifier,
        salt,
    };
    store.register(record, scram)
}
