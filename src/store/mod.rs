//! The user store: what the sessions and the admin commands ask of it ([`Store`]),
//! the rows it returns, and its engines.
//!
//! ```sql
//! USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT)   -- password = verifier or NULL
//! SCRAM_SHA_256 (login TEXT PRIMARY KEY, iterations INTEGER NOT NULL,
//!                stored_key TEXT NOT NULL, server_key TEXT NOT NULL)
//! ```
//!
//! `USERS` keeps the original schema; `USERS.password` NULL means "no classic
//! verifier". A `SCRAM_SHA_256` row is written in the same transaction as its
//! `USERS` row (register, change_password) and removed with it (delete). A store
//! only keeps and returns rows: what they mean is the mechanisms' business, and
//! the mechanisms do not know which engine holds them.
//!
//! Engines: [`sqlite`] ([`UserStore`], the embedded default: one file, one
//! connection behind a mutex) and [`postgres`] ([`PgUserStore`]: one database
//! for several servers, behind a connection pool). [`open`] picks one from
//! `--db`: a `postgres://` or `postgresql://` URL, else a file path.

pub mod copy;
pub mod pg_chat;
pub mod pg_quota;
pub mod pg_throttle;
pub mod postgres;
pub mod sqlite;

pub use postgres::{is_postgres_url, PgUserStore};
pub use sqlite::{exposed_files, UserStore};
use std::fmt;
use std::sync::Arc;

/// The tables every engine keeps, in SQL both accept: `USERS` exactly as the
/// original, and `SCRAM_SHA_256` beside it. (Each engine adds its own
/// `SERVER_SECRET`, whose byte type differs: BLOB, BYTEA.)
pub const USER_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT);
    CREATE TABLE IF NOT EXISTS SCRAM_SHA_256 (
        login      TEXT PRIMARY KEY,
        iterations INTEGER NOT NULL,
        stored_key TEXT NOT NULL,
        server_key TEXT NOT NULL);";

/// Opens the store `--db` names: PostgreSQL for a `postgres://` or
/// `postgresql://` URL, else the SQLite file at that path (created if missing).
pub fn open(db: &str) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres_url(db) {
        Ok(Arc::new(PgUserStore::open(db)?))
    } else {
        Ok(Arc::new(UserStore::open(std::path::Path::new(db))?))
    }
}

/// How `db` is named in messages and logs: a URL without its password.
pub fn display_name(db: &str) -> String {
    if !is_postgres_url(db) {
        return db.to_string();
    }
    // postgres://user:secret@host/db -> postgres://user:***@host/db
    match (db.find("://"), db.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &db[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &db[..scheme_end + 3], &db[at..]),
                None => db.to_string(),
            }
        }
        _ => db.to_string(),
    }
}

/// What a session, a migration or an admin command needs of a store. Every
/// method is one short transaction; none is held across socket I/O.
pub trait Store: Send + Sync {
    /// The random key of the fake salts, made once and kept in the store (the
    /// same for every server on the store).
    fn secret(&self) -> &[u8];
    /// The throttle every server on this store shares, if the engine keeps one
    /// (PostgreSQL); `None`: each server throttles in memory (SQLite).
    fn shared_throttle(&self) -> Option<Arc<dyn crate::throttle::SharedThrottle>> {
        None
    }
    /// The bus a chat room shared by every server on this store travels on,
    /// if the engine has one (PostgreSQL's LISTEN/NOTIFY); `None`: each
    /// server's room is its own (SQLite).
    fn chat_bus(&self) -> Option<Arc<dyn crate::chat::bus::ChatBus>> {
        None
    }
    /// The registration quota every server on this store shares, if the engine
    /// keeps one (PostgreSQL): `limit` (at least 1) registrations per address
    /// per span, a reservation older than `stale` taken as left by a dead
    /// server. `None`: each server counts in memory (SQLite). See
    /// [`registration_quota::for_store`](crate::registration_quota::for_store).
    fn shared_registration_quota(
        &self,
        _limit: usize,
        _stale: std::time::Duration,
    ) -> Option<Arc<dyn crate::registration_quota::RegistrationQuota>> {
        None
    }
    /// The user named exactly `login` (admin, migration).
    fn find(&self, login: &str) -> Result<Option<UserRecord>, StoreError>;
    /// The user named exactly `login` as the classic challenge sees it: its row
    /// checked by [`ClassicVerifier::parse`].
    fn find_classic(&self, login: &str) -> Result<Option<StoredUser>, StoreError>;
    /// The SCRAM lookup: the user's salt and SCRAM row; `None`: no such user.
    fn find_scram(&self, login: &str) -> Result<Option<ScramLookup>, StoreError>;
    fn exists(&self, login: &str) -> Result<bool, StoreError>;
    /// Adds a user (and its SCRAM row, in the same transaction); returns once
    /// durable. Exactly one of two racing registrations of a name wins.
    fn register(
        &self,
        record: UserRecord,
        scram: Option<ScramRow>,
    ) -> Result<Registration, StoreError>;
    /// Replaces the credentials of `login`; false if there is no such user.
    fn change_password(
        &self,
        login: &str,
        verifier: Option<&str>,
        salt: &str,
        scram: Option<&ScramRow>,
    ) -> Result<bool, StoreError>;
    /// Removes the user and its SCRAM row; false if there was none.
    fn delete(&self, login: &str) -> Result<bool, StoreError>;
    /// Every user, sorted by name, with its row checked (admin listing).
    fn list(&self) -> Result<Vec<StoredUser>, StoreError>;
    /// Every `USERS` row with its SCRAM row (the migration).
    fn list_with_scram(&self) -> Result<Vec<UserWithScram>, StoreError>;
    /// Writes SCRAM rows and drops classic verifiers, each only where the
    /// `USERS` row is unchanged since it was read (compare-and-set).
    fn put_scram_rows(
        &self,
        writes: &[(UserRecord, ScramRow)],
        drops: &[(UserRecord, ScramRow)],
    ) -> Result<ScramWrites, StoreError>;
}

/// One column as read, whatever the engine: text, NULL, or another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column<'a> {
    Text(&'a [u8]),
    Null,
    /// Another type, named for a person (`"a BLOB"`, `"an integer"` ...).
    Other(&'static str),
}

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

/// What the store keeps about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub login: String,
    /// `hex(SHA-256(salt || password))`, never the password; `None` (NULL): no
    /// classic verifier (dropped by the migration, or classic login is off).
    pub verifier: Option<String>,
    /// As stored; a NULL salt (a legacy row) reads as "".
    pub salt: String,
}

/// A `SCRAM_SHA_256` row but the login, as stored (the columns as text: a corrupt
/// row is returned as it is, and the mechanism decides it is unusable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramRow {
    pub iterations: i64,
    pub stored_key: String,
    pub server_key: String,
}

/// What the SCRAM lookup returns for an existing user: the salt and the SCRAM
/// row, if there is one of the expected types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramLookup {
    pub salt: String,
    pub scram: Option<ScramRow>,
}

/// A `USERS` row with its `SCRAM_SHA_256` row, if any (for the migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserWithScram {
    pub user: UserRecord,
    pub scram: Option<ScramRow>,
}

/// What [`UserStore::put_scram_rows`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScramWrites {
    /// SCRAM rows written (their USERS row was unchanged since it was read).
    pub written: usize,
    /// Classic verifiers set to NULL.
    pub dropped: usize,
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
    /// The salt when it is 32 lowercase hex digits, whatever the verifier: a
    /// user without a classic verifier (SCRAM only) still shows its real salt,
    /// the same one a SCRAM exchange shows.
    pub salt: Option<String>,
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
    /// Stored as another type (`"a BLOB"`, `"an integer"` ...).
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
    pub fn parse(verifier: Column<'_>, salt: Column<'_>) -> Result<Self, UnusableRow> {
        let verifier = hex_column(verifier, VERIFIER_HEX_LEN).map_err(UnusableRow::Verifier)?;
        let salt = hex_column(salt, SALT_HEX_LEN).map_err(UnusableRow::Salt)?;
        Ok(ClassicVerifier { verifier, salt })
    }
}

/// `value` as `want` lowercase hex digits, or what is wrong with it.
pub fn hex_column(value: Column<'_>, want: usize) -> Result<String, ColumnFault> {
    let bytes = match value {
        Column::Text(bytes) => bytes,
        Column::Null => return Err(ColumnFault::Null),
        Column::Other(kind) => return Err(ColumnFault::NotText(kind)),
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

/// Result of a registration that reached the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registered,
    /// The name exists (maybe a concurrent registration won the race).
    NameTaken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            display_name("postgres://dccn:s3cret@db.example:5432/auth"),
            "postgres://dccn:***@db.example:5432/auth"
        );
        assert_eq!(
            display_name("postgresql://dccn@h/d"),
            "postgresql://dccn@h/d"
        );
        assert_eq!(display_name("users.db"), "users.db");
    }
}
