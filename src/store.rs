//! The user store: the original `USERS` table in one SQLite file.
//!
//! ```sql
//! USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT)   -- password = verifier
//! ```
//!
//! All sessions share one [`rusqlite::Connection`] behind a [`Mutex`]; the lock is
//! held for one statement or one transaction, never across socket I/O or hashing.
//! A second table, `SERVER_SECRET`, keeps the key of the fake salts, so they stay
//! the same across restarts; a database written by the original Python server
//! opens as it is.
//!
//! Durability: the database runs in WAL mode with `synchronous = FULL`, so a commit
//! returns only after the write-ahead log is synced to disk; a registration is
//! acknowledged only after its commit. Concurrent registrations share one commit
//! (group commit, see [`UserStore::register`]), so many of them cost one sync.

use crate::config::STORE_BUSY_TIMEOUT;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A store operation failed (disk full, read-only file, lock not obtained ...).
/// Sessions answer `Server error, try again later`; the message goes to the log.
#[derive(Debug, Clone)]
pub struct StoreError(pub(crate) String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// What the store keeps about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub login: String,
    /// `hex(SHA-256(salt || password))`, never the password.
    pub verifier: String,
    pub salt: String,
}

/// Hex digits of a stored classic verifier (SHA-256) and of a salt (16 bytes).
pub const VERIFIER_HEX_LEN: usize = 64;
pub const SALT_HEX_LEN: usize = 32;

/// A user's row as read back: the name, and its classic credentials if the row
/// can take part in the salt/nonce challenge at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub login: String,
    pub classic: Result<ClassicVerifier, UnusableRow>,
}

/// Classic credentials that passed [`ClassicVerifier::parse`]: a verifier of 64
/// and a salt of 32 lowercase hex digits, what this server and the original write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicVerifier {
    pub verifier: String,
    pub salt: String,
}

/// Why a row cannot log in by the classic challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnusableRow {
    Verifier(ColumnFault),
    Salt(ColumnFault),
}

/// What is wrong with one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnFault {
    Null,
    /// Stored as another SQLite type (`"a BLOB"`, `"an integer"` ...).
    NotText(&'static str),
    /// Text, but not `want` lowercase hex digits; `chars` is its length.
    NotHex {
        want: usize,
        chars: usize,
    },
}

impl ClassicVerifier {
    /// Checks a row's two columns. Anything but lowercase hex of the right length
    /// (empty, NULL, a marker, a salt holding a newline ...) is refused here, so an
    /// odd row can neither be answered with a guessable hash nor inject lines
    /// into the challenge: the session treats it as an unknown name.
    pub fn parse(verifier: ValueRef<'_>, salt: ValueRef<'_>) -> Result<Self, UnusableRow> {
        let verifier = hex_column(verifier, VERIFIER_HEX_LEN).map_err(UnusableRow::Verifier)?;
        let salt = hex_column(salt, SALT_HEX_LEN).map_err(UnusableRow::Salt)?;
        Ok(ClassicVerifier { verifier, salt })
    }
}

fn hex_column(value: ValueRef<'_>, want: usize) -> Result<String, ColumnFault> {
    let bytes = match value {
        ValueRef::Text(bytes) => bytes,
        ValueRef::Null => return Err(ColumnFault::Null),
        ValueRef::Blob(_) => return Err(ColumnFault::NotText("a BLOB")),
        ValueRef::Integer(_) => return Err(ColumnFault::NotText("an integer")),
        ValueRef::Real(_) => return Err(ColumnFault::NotText("a real number")),
    };
    let is_hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    if bytes.len() == want && bytes.iter().all(is_hex) {
        // All ASCII, so valid UTF-8.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(ColumnFault::NotHex {
            want,
            chars: String::from_utf8_lossy(bytes).chars().count(),
        })
    }
}

impl fmt::Display for UnusableRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (column, fault) = match self {
            UnusableRow::Verifier(fault) => ("verifier (password column)", fault),
            UnusableRow::Salt(fault) => ("salt", fault),
        };
        match fault {
            ColumnFault::Null => write!(f, "{column} is NULL"),
            ColumnFault::NotText(kind) => write!(f, "{column} is {kind}, not text"),
            ColumnFault::NotHex { want, chars } => write!(
                f,
                "{column} is not {want} lowercase hex digits ({chars} characters)"
            ),
        }
    }
}

fn stored_user(login: String, r: &Row<'_>, first: usize) -> rusqlite::Result<StoredUser> {
    let classic = ClassicVerifier::parse(r.get_ref(first)?, r.get_ref(first + 1)?);
    Ok(StoredUser { login, classic })
}

/// Result of a registration that reached the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// The name exists (maybe a concurrent registration won the race).
    NameTaken,
}

/// A registration waiting for the next group commit.
struct Pending {
    ticket: u64,
    record: UserRecord,
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
    db: Mutex<Connection>,
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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT);
             CREATE TABLE IF NOT EXISTS SERVER_SECRET (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 secret BLOB NOT NULL);",
        )?;
        let secret = Self::load_or_make_secret(&conn)?;
        Ok(UserStore {
            db: Mutex::new(conn),
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

    /// The random key of the fake salts, made once and kept in the database.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The user named exactly `login`, if any, with its row checked.
    pub fn find(&self, login: &str) -> Result<Option<StoredUser>, StoreError> {
        let db = lock(&self.db);
        let mut stmt = db.prepare_cached("SELECT password, salt FROM USERS WHERE login = ?1")?;
        let row = stmt
            .query_row(params![login], |r| stored_user(login.to_string(), r, 0))
            .optional()?;
        Ok(row)
    }

    pub fn exists(&self, login: &str) -> Result<bool, StoreError> {
        let db = lock(&self.db);
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
    pub fn register(&self, record: UserRecord) -> Result<Registration, StoreError> {
        let ticket = {
            let mut q = lock(&self.queue);
            q.next_ticket += 1;
            let ticket = q.next_ticket;
            q.waiting.push(Pending { ticket, record });
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

    /// Replaces the verifier and salt of an existing user; false if there is none.
    pub fn change_password(
        &self,
        login: &str,
        verifier: &str,
        salt: &str,
    ) -> Result<bool, StoreError> {
        let db = lock(&self.db);
        let mut stmt =
            db.prepare_cached("UPDATE USERS SET password = ?2, salt = ?3 WHERE login = ?1")?;
        Ok(stmt.execute(params![login, verifier, salt])? == 1)
    }

    /// Removes a user; false if there was none.
    pub fn delete(&self, login: &str) -> Result<bool, StoreError> {
        let db = lock(&self.db);
        let mut stmt = db.prepare_cached("DELETE FROM USERS WHERE login = ?1")?;
        Ok(stmt.execute(params![login])? == 1)
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

    /// Every user, sorted by name, with its row checked (for the offline admin
    /// listing). A name that is not valid UTF-8 is shown with U+FFFD.
    pub fn list(&self) -> Result<Vec<StoredUser>, StoreError> {
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
    use crate::crypto;
    use std::sync::Arc;

    fn record(name: &str) -> UserRecord {
        UserRecord {
            login: name.into(),
            verifier: crypto::verifier("0123456789abcdef0123456789abcdef", name),
            salt: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn found(store: &UserStore, name: &str) -> Option<StoredUser> {
        store.find(name).unwrap()
    }

    #[test]
    fn register_find_change_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("u.db")).unwrap();
        assert_eq!(store.find("ann").unwrap(), None);
        assert_eq!(
            store.register(record("ann")).unwrap(),
            Registration::Registered
        );
        assert_eq!(
            store.register(record("ann")).unwrap(),
            Registration::NameTaken
        );
        let ann = record("ann");
        let classic = ClassicVerifier {
            verifier: ann.verifier.clone(),
            salt: ann.salt.clone(),
        };
        assert_eq!(found(&store, "ann").unwrap().classic, Ok(classic));
        assert!(store.exists("ann").unwrap());
        assert!(!store.exists("Ann").unwrap(), "names are case-sensitive");
        let v2 = "f".repeat(64);
        assert!(store.change_password("ann", &v2, &ann.salt).unwrap());
        assert_eq!(found(&store, "ann").unwrap().classic.unwrap().verifier, v2);
        assert!(store.delete("ann").unwrap());
        assert!(!store.delete("ann").unwrap());
        assert!(!store.change_password("ann", "v3", "s3").unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_is_private_and_an_exposed_one_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let store = UserStore::open(&path).unwrap();
        store.register(record("alice")).unwrap();
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
    fn secret_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let first = UserStore::open(&path).unwrap().secret().to_vec();
        assert_eq!(first.len(), 32);
        assert_eq!(UserStore::open(&path).unwrap().secret(), &first[..]);
    }

    #[test]
    fn concurrent_registrations_each_get_their_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(UserStore::open(&dir.path().join("u.db")).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            // Every name is registered by two threads: one wins.
                            let name = format!("u{}-{i}", t / 2);
                            store.register(record(&name)).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let outcomes: Vec<Registration> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let won = outcomes
            .iter()
            .filter(|o| **o == Registration::Registered)
            .count();
        assert_eq!(won, 4 * 25);
        assert_eq!(outcomes.len() - won, 4 * 25);
        assert_eq!(store.list().unwrap().len(), 100);
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
            let user = found(&store, name).expect(name);
            assert_eq!(user.classic.err(), fault, "{name}");
        }
        assert_eq!(store.list().unwrap().len(), 9, "list reads odd rows too");
        assert_eq!(UnusableRow::Salt(Null).to_string(), "salt is NULL",);
    }
}
