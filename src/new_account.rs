//! The one way an account is made: online by `register`, offline by
//! `run_server add-user`. Both go through [`create`], so both write the same
//! rows (a fresh salt from the OS, the verifier, a durable commit), and a
//! credential added later (a SCRAM row) is written by both alike.

use crate::crypto;
use crate::rules::{check_password, Username};
use crate::store::{Registration, StoreError, UserRecord, UserStore};
use std::fmt;

/// A new account's credentials, already checked against the rules.
pub struct NewAccount<'a> {
    name: &'a Username,
    password: &'a str,
}

/// Why credentials were refused before reaching the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleBroken {
    Username(String),
    Password(&'static str),
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
pub fn create(store: &UserStore, account: NewAccount<'_>) -> Result<Registration, StoreError> {
    let salt = crypto::new_salt();
    let record = UserRecord {
        login: account.name.to_string(),
        verifier: crypto::verifier(&salt, account.password),
        salt,
    };
    store.register(record)
}
