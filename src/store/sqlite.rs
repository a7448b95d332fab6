//! The SQLite store: the original `USERS` table in one SQLite file.
//!
//! ```sql
//! USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT)   -- password = verifier or NULL
//! SCRAM_SHA_256 (login TEXT PRIMARY KEY, iterations INTEGER NOT NULL,
//!                stored_key TEXT NOT NULL, server_key TEXT NOT NULL)
//! ```
//!
//! `USERS` keeps the original schema; `USERS.password` NULL means "no classic
//! verifier". A `SCRAM_SHA_256` row is written in the same transaction as its
//! `USERS` row (register, change_password) and removed with it (delete). The
//! store only keeps and returns rows: what they mean is the mechanisms' business.
//!
//! All sessions share one [`rusqlite::Connection`] for writes behind a [`Mutex`]
//! (and a second one for the lookups of a login, so they never wait behind a
//! registration's disk sync); each lock is
//! held for one statement or one transaction, never across socket I/O or hashing.
//! A second table, `SERVER_SECRET`, keeps the key of the fake salts, so they stay
//! the same across restarts; a database written by the original Python server
//! opens as it is.
//!
//! Durability: the database runs in WAL mode with `synchronous = FULL`, so a commit
//! returns only after the write-ahead log is synced to disk; a registration is
//! acknowledged only after its commit. Concurrent registrations share one commit
//! (group commit, see [`UserStore::register`]), so many of them cost one sync.

use super::{
    hex_column, ClassicVerifier, Column, Registration, ScramLookup, ScramRow, ScramWrites, Store,
    StoreError, StoredUser, UserRecord, UserWithScram, SALT_HEX_LEN,
};
use crate::config::STORE_BUSY_TIMEOUT;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Reads the SCRAM columns of a joined row; `None` if absent or of another type.
fn scram_columns(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<ScramRow>> {
    let iterations: Value = r.get(first)?;
    let stored: Value = r.get(first + 1)?;
    let server: Value = r.get(first + 2)?;
    Ok(match (iterations, stored, server) {
        (Value::Integer(iterations), Value::Text(stored_key), Value::Text(server_key)) => {
            Some(ScramRow {
                iterations,
                stored_key,
                server_key,
            })
        }
        _ => None,
    })
}

/// Reads `login, password, salt` at columns 0..3, NULLs and all.
fn user_columns(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        login: r.get(0)?,
        verifier: text_or_none(r.get(1)?),
        salt: text_or_none(r.get(2)?).unwrap_or_default(),
    })
}

/// A text column as text; NULL or a value of another type (a hand-edited
/// database) as `None`, so that no row can crash a reader.
fn text_or_none(v: Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

/// A column as the engine-neutral [`Column`].
fn column(value: ValueRef<'_>) -> Column<'_> {
    match value {
        ValueRef::Text(bytes) => Column::Text(bytes),
        ValueRef::Null => Column::Null,
        ValueRef::Blob(_) => Column::Other("a BLOB"),
        ValueRef::Integer(_) => Column::Other("an integer"),
        ValueRef::Real(_) => Column::Other("a real number"),
    }
}

fn stored_user(login: String, r: &Row<'_>, first: usize) -> rusqlite::Result<StoredUser> {
    let classic = ClassicVerifier::parse(column(r.get_ref(first)?), column(r.get_ref(first + 1)?));
    let salt = hex_column(column(r.get_ref(first + 1)?), SALT_HEX_LEN).ok();
    Ok(StoredUser {
        login,
        classic,
        salt,
    })
}

/// A registration waiting for the next group commit.
struct Pending {
    ticket: u64,
    record: UserRecord,
    scram: Option<ScramRow>,
}

/// Registrations queued for a commit, and the results of those already done.
#[derive(Default)]
struct CommitQueue {
    next_ticket: u64,
    waiting: Vec<Pending>,
    done: HashMap<u64, Result<Registration, StoreError>>,
}

/// The users table behind one shared connection.
pub struct UserStore {
    /// Every write, and the admin reads.
    db: Mutex<Connection>,
    /// The lookups of a login (`find_classic`, `find_scram`, `exists`): a second
    /// connection, so a login never waits behind a registration holding `db`
    /// through its commit and disk sync (WAL lets readers run beside the writer,
    /// and they see every commit that returned before they started).
    reader: Mutex<Connection>,
    queue: Mutex<CommitQueue>,
    secret: Vec<u8>,
}

/// Creates the database file readable and writable by its owner only, if it
/// does not exist yet. SQLite then gives its `-wal` and `-shm` files the same
/// mode, so the verifiers (password-equivalent in v1) are not left readable by
/// every local account under the usual umask.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Warnings for database files (the file, its `-wal` and `-shm`) that other
/// accounts can read or write, each naming the file and the fix, as ssh warns
/// of an unprotected key. Empty when all are private (or absent).
pub fn exposed_files(path: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "{} is accessible by other users (mode {mode:o}): anyone who can read it \
                 can log in as its users; fix: chmod 600 {}",
                file.display(),
                file.display()
            ));
        }
    }
    warnings
}

/// Lock a mutex even if a panicking session poisoned it: every critical section
/// here leaves the data consistent (SQLite rolls back an unfinished transaction),
/// so one session's panic must not take the store away from the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UserStore {
    /// Opens (or creates) the database file, the `USERS` table and the server secret.
    pub fn open(path: &Path) -> Result<UserStore, StoreError> {
        create_private(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(STORE_BUSY_TIMEOUT)?;
        // WAL + FULL: a commit is durable when it returns, with one sync of the log.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Query planner stability: without it SQLite re-prepared the SCRAM
        // lookup's join (LEFT JOIN on the bound name) on every call, a SQL parse
        // per login (seen in a profile of run_bench --mode login-scram).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.execute_batch(super::USER_TABLES)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS SERVER_SECRET (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 secret BLOB NOT NULL);",
        )?;
        let secret = Self::load_or_make_secret(&conn)?;
        let reader = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        reader.busy_timeout(STORE_BUSY_TIMEOUT)?;
        // Reads only, whatever a bug may try.
        reader.pragma_update(None, "query_only", true)?;
        reader.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        Ok(UserStore {
            db: Mutex::new(conn),
            reader: Mutex::new(reader),
            queue: Mutex::new(CommitQueue::default()),
            secret,
        })
    }

    fn load_or_make_secret(conn: &Connection) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError(format!("no OS randomness: {e}")))?;
        // OR IGNORE: if another process made it first, theirs is kept and read back.
        conn.execute(
            "INSERT OR IGNORE INTO SERVER_SECRET (id, secret) VALUES (1, ?1)",
            params![&fresh[..]],
        )?;
        Ok(
            conn.query_row("SELECT secret FROM SERVER_SECRET WHERE id = 1", [], |r| {
                r.get(0)
            })?,
        )
    }

    /// Caps the database file at `pages` pages (SQLite's `max_page_count`): writes
    /// past it fail with "database or disk is full", as on a full disk. Lets an
    /// operator bound the file, and tests reproduce a full disk.
    pub fn set_max_pages(&self, pages: i64) -> Result<(), StoreError> {
        lock(&self.db).pragma_update(None, "max_page_count", pages)?;
        Ok(())
    }

    /// Pages the database file has now.
    pub fn page_count(&self) -> Result<i64, StoreError> {
        Ok(lock(&self.db).pragma_query_value(None, "page_count", |r| r.get(0))?)
    }
}

impl Store for UserStore {
    /// The random key of the fake salts, made once and kept in the database.
    fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The user named exactly `login`, if any.
    fn find(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let db = lock(&self.db);
        let mut stmt =
            db.prepare_cached("SELECT login, password, salt FROM USERS WHERE login = ?1")?;
        Ok(stmt.query_row(params![login], user_columns).optional()?)
    }

    /// The user named exactly `login` as the classic challenge sees it: its
    /// row checked by [`ClassicVerifier::parse`].
    fn find_classic(&self, login: &str) -> Result<Option<StoredUser>, StoreError> {
        let db = lock(&self.reader);
        let mut stmt = db.prepare_cached("SELECT password, salt FROM USERS WHERE login = ?1")?;
        let row = stmt
            .query_row(params![login], |r| stored_user(login.to_string(), r, 0))
            .optional()?;
        Ok(row)
    }

    /// The SCRAM lookup, one query: the user's salt joined with its SCRAM row.
    /// `None`: no such user (an orphan SCRAM row is ignored).
    fn find_scram(&self, login: &str) -> Result<Option<ScramLookup>, StoreError> {
        let db = lock(&self.reader);
        let mut stmt = db.prepare_cached(
            "SELECT u.salt, s.iterations, s.stored_key, s.server_key
             FROM USERS u LEFT JOIN SCRAM_SHA_256 s ON s.login = u.login
             WHERE u.login = ?1",
        )?;
        let row = stmt
            .query_row(params![login], |r| {
                Ok(ScramLookup {
                    salt: text_or_none(r.get(0)?).unwrap_or_default(),
                    scram: scram_columns(r, 1)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    fn exists(&self, login: &str) -> Result<bool, StoreError> {
        let db = lock(&self.reader);
        let mut stmt = db.prepare_cached("SELECT 1 FROM USERS WHERE login = ?1")?;
        Ok(stmt.exists(params![login])?)
    }

    /// Adds a user; returns once the row is durable on disk (or was refused).
    ///
    /// Group commit: each caller queues its row, then takes the database lock.
    /// Whoever gets the lock writes *every* row queued so far in one transaction,
    /// one sync for all, and leaves each caller its result. A caller whose row was
    /// written by someone else finds its result as soon as it gets the lock. While
    /// one batch is being synced, the next batch gathers in the queue.
    /// The SCRAM row, if given, is written in the same transaction.
    fn register(
        &self,
        record: UserRecord,
        scram: Option<ScramRow>,
    ) -> Result<Registration, StoreError> {
        let ticket = {
            let mut q = lock(&self.queue);
            q.next_ticket += 1;
            let ticket = q.next_ticket;
            q.waiting.push(Pending {
                ticket,
                record,
                scram,
            });
            ticket
        };
        let mut db = lock(&self.db);
        let batch = {
            let mut q = lock(&self.queue);
            if let Some(result) = q.done.remove(&ticket) {
                return result;
            }
            std::mem::take(&mut q.waiting)
        };
        let results = write_batch(&mut db, &batch);
        // Publish before the database lock is released, so every caller in this
        // batch finds its result when it gets the lock.
        let mut q = lock(&self.queue);
        let mut mine = None;
        for (pending, result) in batch.iter().zip(results) {
            if pending.ticket == ticket {
                mine = Some(result);
            } else {
                q.done.insert(pending.ticket, result);
            }
        }
        mine.unwrap_or_else(|| Err(StoreError("registration lost from the commit queue".into())))
    }

    /// Replaces the verifier (or NULL) and salt of an existing user and, in the
    /// same transaction, its SCRAM row (made if missing); false if there is no user.
    fn change_password(
        &self,
        login: &str,
        verifier: Option<&str>,
        salt: &str,
        scram: Option<&ScramRow>,
    ) -> Result<bool, StoreError> {
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let changed = tx
            .prepare_cached("UPDATE USERS SET password = ?2, salt = ?3 WHERE login = ?1")?
            .execute(params![login, verifier, salt])?
            == 1;
        if changed {
            match scram {
                Some(row) => put_scram_row(&tx, login, row)?,
                // No new SCRAM row: the old one belongs to the old salt.
                None => delete_scram_row(&tx, login)?,
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Removes a user and its SCRAM row in one transaction; false if there was none.
    fn delete(&self, login: &str) -> Result<bool, StoreError> {
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let removed = tx
            .prepare_cached("DELETE FROM USERS WHERE login = ?1")?
            .execute(params![login])?
            == 1;
        delete_scram_row(&tx, login)?;
        tx.commit()?;
        Ok(removed)
    }

    /// Every `USERS` row with its SCRAM row, if any, sorted by name.
    fn list_with_scram(&self) -> Result<Vec<UserWithScram>, StoreError> {
        let db = lock(&self.db);
        let mut stmt = db.prepare(
            "SELECT u.login, u.password, u.salt, s.iterations, s.stored_key, s.server_key
             FROM USERS u LEFT JOIN SCRAM_SHA_256 s ON s.login = u.login
             ORDER BY u.login",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UserWithScram {
                user: user_columns(r)?,
                scram: scram_columns(r, 3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// In one transaction, compare-and-set on (login, password, salt) as read in
    /// `writes` and `drops`: writes each SCRAM row whose `USERS` row is unchanged,
    /// then sets `USERS.password` to NULL for each of `drops` whose `USERS` row is
    /// unchanged and whose SCRAM row is the one given. Safe beside a live server:
    /// a row changed meanwhile is left alone.
    fn put_scram_rows(
        &self,
        writes: &[(UserRecord, ScramRow)],
        drops: &[(UserRecord, ScramRow)],
    ) -> Result<ScramWrites, StoreError> {
        let mut db = lock(&self.db);
        let tx = db.transaction()?;
        let mut done = ScramWrites::default();
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO SCRAM_SHA_256 (login, iterations, stored_key, server_key)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS
                   (SELECT 1 FROM USERS WHERE login = ?1 AND password = ?5 AND salt = ?6)",
            )?;
            for (u, row) in writes {
                done.written += put.execute(params![
                    u.login,
                    row.iterations,
                    row.stored_key,
                    row.server_key,
                    u.verifier,
                    u.salt
                ])?;
            }
            let mut drop = tx.prepare_cached(
                "UPDATE USERS SET password = NULL
                 WHERE login = ?1 AND password = ?2 AND salt = ?3 AND EXISTS
                   (SELECT 1 FROM SCRAM_SHA_256 WHERE login = ?1 AND iterations = ?4
                      AND stored_key = ?5 AND server_key = ?6)",
            )?;
            for (u, row) in drops {
                done.dropped += drop.execute(params![
                    u.login,
                    u.verifier,
                    u.salt,
                    row.iterations,
                    row.stored_key,
                    row.server_key
                ])?;
            }
        }
        tx.commit()?;
        Ok(done)
    }

    /// Every user, sorted by name, with its row checked (for the offline admin
    /// listing). A name that is not valid UTF-8 is shown with U+FFFD.
    fn list(&self) -> Result<Vec<StoredUser>, StoreError> {
        let db = lock(&self.db);
        let mut stmt = db.prepare("SELECT login, password, salt FROM USERS ORDER BY login")?;
        let rows = stmt.query_map([], |r| {
            let login = match r.get_ref(0)? {
                ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{:?}", other.data_type()),
            };
            stored_user(login, r, 1)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Writes a batch of new users in one transaction: each row is `Registered` or
/// `NameTaken`; if the transaction fails, every row gets the error.
fn write_batch(db: &mut Connection, batch: &[Pending]) -> Vec<Result<Registration, StoreError>> {
    match insert_all(db, batch) {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
    }
}

fn put_scram_row(tx: &Connection, login: &str, row: &ScramRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO SCRAM_SHA_256 (login, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        login,
        row.iterations,
        row.stored_key,
        row.server_key
    ])?;
    Ok(())
}

fn delete_scram_row(tx: &Connection, login: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM SCRAM_SHA_256 WHERE login = ?1")?
        .execute(params![login])?;
    Ok(())
}

fn insert_all(db: &mut Connection, batch: &[Pending]) -> Result<Vec<Registration>, StoreError> {
    let tx = db.transaction()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO USERS (login, password, salt) VALUES (?1, ?2, ?3)",
        )?;
        for p in batch {
            let r = &p.record;
            let added = insert.execute(params![r.login, r.verifier, r.salt])?;
            outcomes.push(if added == 1 {
                match &p.scram {
                    // Replaces an orphan row left by a server that ignores the table.
                    Some(row) => put_scram_row(&tx, &r.login, row)?,
                    None => delete_scram_row(&tx, &r.login)?,
                }
                Registration::Registered
            } else {
                Registration::NameTaken
            });
        }
    }
    // The commit syncs the log: only after this are the rows acknowledged.
    tx.commit()?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ColumnFault, UnusableRow};

    fn record(name: &str) -> UserRecord {
        UserRecord {
            login: name.into(),
            verifier: Some(format!("v-{name}")),
            salt: format!("s-{name}"),
        }
    }

    #[test]
    fn secret_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let first = UserStore::open(&path).unwrap().secret().to_vec();
        assert_eq!(first.len(), 32);
        assert_eq!(UserStore::open(&path).unwrap().secret(), &first[..]);
    }

    #[test]
    fn corrupt_scram_rows_and_null_columns_do_not_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("u.db")).unwrap();
        {
            let db = lock(&store.db);
            db.execute_batch(
                "INSERT INTO USERS VALUES ('n', NULL, NULL);
                 INSERT INTO USERS VALUES ('x', x'07', 'salt');
                 INSERT INTO SCRAM_SHA_256 VALUES ('x', 'many', 'a', 'b');
                 INSERT INTO SCRAM_SHA_256 VALUES ('orphan', 4096, 'a', 'b');",
            )
            .unwrap();
        }
        let n = store.find("n").unwrap().unwrap();
        assert_eq!((n.verifier, n.salt.as_str()), (None, ""));
        assert_eq!(store.find("x").unwrap().unwrap().verifier, None);
        assert_eq!(store.find_scram("x").unwrap().unwrap().scram, None);
        assert_eq!(store.find_scram("orphan").unwrap(), None);
        assert_eq!(store.list_with_scram().unwrap().len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_is_private_and_an_exposed_one_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let store = UserStore::open(&path).unwrap();
        store.register(record("alice"), None).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        assert!(exposed_files(&path).is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = exposed_files(&path);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("mode 644"), "{}", warnings[0]);
        assert!(warnings[0].contains("chmod 600"), "{}", warnings[0]);
    }

    #[test]
    fn odd_rows_are_unusable_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("u.db")).unwrap();
        let good_v = "a".repeat(64);
        let good_s = "b".repeat(32);
        {
            let db = lock(&store.db);
            let put = |name: &str, v: rusqlite::types::Value, s: rusqlite::types::Value| {
                db.execute("INSERT INTO USERS VALUES (?1, ?2, ?3)", params![name, v, s])
                    .unwrap();
            };
            use rusqlite::types::Value::{Blob, Integer, Null, Text};
            put("good", Text(good_v.clone()), Text(good_s.clone()));
            put("empty", Text(String::new()), Text(good_s.clone()));
            put("marker", Text("!".into()), Text(good_s.clone()));
            put("upper", Text(good_v.to_uppercase()), Text(good_s.clone()));
            put("nullv", Null, Text(good_s.clone()));
            put(
                "blobv",
                Blob(good_v.clone().into_bytes()),
                Text(good_s.clone()),
            );
            put("nulls", Text(good_v.clone()), Null);
            put("ints", Text(good_v.clone()), Integer(7));
            let injected = format!("{}\nAccess granted!", &good_s[..16]);
            put("newline", Text(good_v.clone()), Text(injected));
        }
        use ColumnFault::*;
        let want = [
            ("good", None),
            (
                "empty",
                Some(UnusableRow::Verifier(NotHex { want: 64, chars: 0 })),
            ),
            (
                "marker",
                Some(UnusableRow::Verifier(NotHex { want: 64, chars: 1 })),
            ),
            (
                "upper",
                Some(UnusableRow::Verifier(NotHex {
                    want: 64,
                    chars: 64,
                })),
            ),
            ("nullv", Some(UnusableRow::Verifier(Null))),
            ("blobv", Some(UnusableRow::Verifier(NotText("a BLOB")))),
            ("nulls", Some(UnusableRow::Salt(Null))),
            // TEXT affinity stores the integer 7 as the text "7".
            (
                "ints",
                Some(UnusableRow::Salt(NotHex { want: 32, chars: 1 })),
            ),
            (
                "newline",
                Some(UnusableRow::Salt(NotHex {
                    want: 32,
                    chars: 32,
                })),
            ),
        ];
        for (name, fault) in want {
            let user = store.find_classic(name).unwrap().expect(name);
            assert_eq!(user.classic.err(), fault, "{name}");
        }
        assert_eq!(store.list().unwrap().len(), 9, "list reads odd rows too");
        assert_eq!(UnusableRow::Salt(Null).to_string(), "salt is NULL",);
    }
}
