//! `run_server copy-db`: moves the users of one store into another (a team
//! that started on SQLite moves to PostgreSQL) without anyone re-registering.
//!
//! Every `USERS` row is copied as it is (a NULL verifier stays NULL), with its
//! SCRAM row, in one transaction per user (the target's `register`), so a
//! copy cut short leaves whole users only. Idempotent: a user already in the
//! target with the same row (and SCRAM row) is left as it is and counted as
//! present; a name in the target with other credentials is a conflict,
//! reported and left alone (never overwritten). A rerun copies nothing new
//! and changes nothing.

use crate::store::{Registration, Store, StoreError, UserWithScram};
use std::collections::HashMap;

/// What a copy did, user by user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Names copied now.
    pub copied: Vec<String>,
    /// Names already in the target with the same credentials.
    pub present: Vec<String>,
    /// Names in the target with other credentials: left alone.
    pub conflicts: Vec<String>,
    /// Names the target refused to store, with why.
    pub failed: Vec<(String, String)>,
}

impl CopyReport {
    /// True when every source user is now in the target as it is in the source.
    pub fn complete(&self) -> bool {
        self.conflicts.is_empty() && self.failed.is_empty()
    }
}

/// Copies every user of `from` missing in `to`. An error reading either
/// store ends the copy; a user the target refuses is reported and skipped.
pub fn copy_users(from: &dyn Store, to: &dyn Store) -> Result<CopyReport, StoreError> {
    let source = from.list_with_scram()?;
    let mut target: HashMap<String, UserWithScram> = to
        .list_with_scram()?
        .into_iter()
        .map(|u| (u.user.login.clone(), u))
        .collect();
    let mut report = CopyReport::default();
    for user in source {
        let name = user.user.login.clone();
        if let Some(there) = target.remove(&name) {
            if there == user {
                report.present.push(name);
            } else {
                report.conflicts.push(name);
            }
            continue;
        }
        match to.register(user.user.clone(), user.scram.clone()) {
            Ok(Registration::Registered) => report.copied.push(name),
            // Registered in the target meanwhile (a live server): compare again.
            Ok(Registration::NameTaken) => match to.find(&name)? {
                Some(record) if record == user.user => report.present.push(name),
                _ => report.conflicts.push(name),
            },
            Err(e) => report.failed.push((name, e.to_string())),
        }
    }
    Ok(report)
}
