//! `migrate-scram`: gives an existing database SCRAM credentials without knowing
//! any password, since the SCRAM password is the stored classic verifier.
//!
//! Rows it derives: name under the username rule, salt of 32 lowercase hex
//! digits, verifier of 64 lowercase hex digits. Missing SCRAM rows are made,
//! stale ones (a server that ignores `SCRAM_SHA_256` changed the password) are
//! re-derived, matching ones are left alone; every other row is skipped and
//! counted. `--drop-classic` then sets the verifier to NULL where the SCRAM row
//! matches. All writes are compare-and-set in one transaction (see
//! [`Store::put_scram_rows`]), so it is safe beside a live server, and a
//! second run changes nothing.

use super::keys::{salt_bytes, ScramCredentials};
use crate::rules::Username;
use crate::store::{ScramRow, Store, StoreError, UserRecord};
use std::fmt;

/// What one run found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationSummary {
    pub users: usize,
    /// Had no SCRAM row; one was derived.
    pub derived: usize,
    /// Had a stale or corrupt SCRAM row; it was re-derived.
    pub rederived: usize,
    /// Had a matching SCRAM row already.
    pub current: usize,
    /// Cannot use SCRAM (name outside the rule, legacy salt or verifier).
    pub skipped: usize,
    /// Have no classic verifier (dropped before): nothing to derive from.
    pub without_verifier: usize,
    /// SCRAM rows actually written (fewer than derived + rederived if a live
    /// server changed a row meanwhile).
    pub written: usize,
    /// Classic verifiers set to NULL (`--drop-classic`).
    pub dropped: usize,
}

impl fmt::Display for MigrationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migrate-scram: {} users: {} derived, {} re-derived (stale), {} already current, \
             {} skipped (cannot use SCRAM), {} without classic verifier; {} rows written, \
             {} classic verifiers dropped",
            self.users,
            self.derived,
            self.rederived,
            self.current,
            self.skipped,
            self.without_verifier,
            self.written,
            self.dropped
        )
    }
}

fn is_verifier(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn to_row(c: &ScramCredentials) -> ScramRow {
    let (stored_key, server_key) = c.encoded_keys();
    ScramRow {
        iterations: i64::from(c.iterations),
        stored_key,
        server_key,
    }
}

/// Runs the migration on `store`; new and re-derived rows get `iterations`.
pub fn migrate(
    store: &dyn Store,
    iterations: u32,
    drop_classic: bool,
) -> Result<MigrationSummary, StoreError> {
    let rows = store.list_with_scram()?;
    let mut summary = MigrationSummary {
        users: rows.len(),
        ..Default::default()
    };
    let mut writes: Vec<(UserRecord, ScramRow)> = Vec::new();
    let mut matching: Vec<(UserRecord, ScramRow)> = Vec::new();
    for entry in rows {
        let user = entry.user;
        let Some(verifier) = user.verifier.as_deref() else {
            summary.without_verifier += 1;
            continue;
        };
        let salt = salt_bytes(&user.salt);
        let (Some(salt), true, true) = (
            salt,
            Username::parse(&user.login).is_ok(),
            is_verifier(verifier),
        ) else {
            summary.skipped += 1;
            continue;
        };
        let existing = entry
            .scram
            .as_ref()
            .and_then(|r| ScramCredentials::from_row(r.iterations, &r.stored_key, &r.server_key));
        let row = match existing {
            Some(have) if ScramCredentials::derive(verifier, &salt, have.iterations) == have => {
                summary.current += 1;
                to_row(&have)
            }
            stale => {
                match (stale, &entry.scram) {
                    (None, None) => summary.derived += 1,
                    _ => summary.rederived += 1,
                }
                let row = to_row(&ScramCredentials::derive(verifier, &salt, iterations));
                writes.push((user.clone(), row.clone()));
                row
            }
        };
        matching.push((user, row));
    }
    if !drop_classic {
        matching.clear();
    }
    let done = store.put_scram_rows(&writes, &matching)?;
    summary.written = done.written;
    summary.dropped = done.dropped;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Registration, UserStore};

    fn user(login: &str, salt: &str, password: &str) -> UserRecord {
        UserRecord {
            login: login.into(),
            verifier: Some(crate::crypto::verifier(salt, password)),
            salt: salt.into(),
        }
    }

    #[test]
    fn derives_the_spec_row_skips_legacy_rows_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("u.db")).unwrap();
        let demo = user("demo", "6d5da35ec7a5497e9b96ce8e88562747", "Passw0rdDemo");
        let orig = user(
            "orig_user",
            "00112233445566778899aabbccddeeff",
            "Pässwört9X",
        );
        let legacy_salt = user("legacy", "NOT-HEX", "Passw0rdDemo");
        let legacy_name = user("bad name", "00112233445566778899aabbccddeeff", "x");
        for u in [&demo, &orig, &legacy_salt, &legacy_name] {
            assert_eq!(
                store.register(u.clone(), None).unwrap(),
                Registration::Registered
            );
        }
        let first = migrate(&store, 4096, false).unwrap();
        assert_eq!(
            (first.users, first.derived, first.skipped, first.written),
            (4, 2, 2, 2)
        );
        let row = store.find_scram("demo").unwrap().unwrap().scram.unwrap();
        assert_eq!(
            (
                row.iterations,
                row.stored_key.as_str(),
                row.server_key.as_str()
            ),
            (
                4096,
                "e4B7Cx7dSagxfLPK4vkQOwAGI5gmzbp+Vb8PS1e+2pk=",
                "JTEFvXjJ50BnezRtydFHVBHjtIPgE2bh5QWL9p64w0c="
            )
        );
        let row = store
            .find_scram("orig_user")
            .unwrap()
            .unwrap()
            .scram
            .unwrap();
        assert_eq!(
            row.stored_key,
            "cw2D1j4aUta95Op0yn3Qjbc9g/89h7giVtDNO0hqNUg="
        );
        let second = migrate(&store, 4096, false).unwrap();
        assert_eq!((second.current, second.written, second.dropped), (2, 0, 0));

        // A server that ignores SCRAM_SHA_256 changes demo's password: stale row.
        let changed = user("demo", "6d5da35ec7a5497e9b96ce8e88562747", "OtherPass1");
        // Its change kept the old SCRAM row: now stale.
        let old_row = store.find_scram("demo").unwrap().unwrap().scram;
        store
            .change_password(
                "demo",
                changed.verifier.as_deref(),
                &changed.salt,
                old_row.as_ref(),
            )
            .unwrap();
        let third = migrate(&store, 4096, true).unwrap();
        assert_eq!(
            (third.rederived, third.current, third.written, third.dropped),
            (1, 1, 1, 2)
        );
        assert_eq!(store.find("demo").unwrap().unwrap().verifier, None);
        assert!(store.find("legacy").unwrap().unwrap().verifier.is_some());
        let fourth = migrate(&store, 4096, true).unwrap();
        assert_eq!(
            (fourth.without_verifier, fourth.written, fourth.dropped),
            (2, 0, 0)
        );
    }
}
