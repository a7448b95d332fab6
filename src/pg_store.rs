//! The user store on PostgreSQL: the same tables, methods and semantics as the
//! SQLite [`UserStore`](crate::store::UserStore), shared by every server of a
//! scaled-out deployment (issue 14).
//!
//! ```sql
//! USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT)   -- the original table
//! SERVER_SECRET (id INTEGER PRIMARY KEY CHECK (id = 1), secret BYTEA NOT NULL)
//! ```
//!
//! - Connections: an `r2d2` pool of the sync `postgres` client (no async
//!   runtime in our code; the crate runs its own internally). A connection is
//!   checked out per query and returned at once, never held across socket I/O.
//!   No test query at checkout (a broken connection fails its query, which is
//!   then a [`StoreError`], and the pool drops it). Connecting, and waiting for
//!   a pooled connection, take at most [`PG_CONNECT_TIMEOUT`]; every
//!   connection runs with `lock_timeout` and `statement_timeout` of 5 s, so a
//!   stuck database costs a session at most that, then `Server error`.
//! - Durability: `synchronous_commit = on` is set on every connection (a
//!   server-wide `off` must not quietly void the promise), so [`register`]
//!   returns only after its commit is flushed to PostgreSQL's WAL. PostgreSQL
//!   groups concurrent commits itself; no queue of our own is needed.
//! - One winner per name, across servers too: a plain `INSERT`; the loser of
//!   a race waits for the winner's commit and gets SQLSTATE 23505
//!   (`unique_violation`), which is [`Registration::NameTaken`].
//! - The server secret (key of the fake salts) is made once for all servers:
//!   `INSERT ... ON CONFLICT DO NOTHING`, then read back, so every server
//!   answers an unknown name with the same fake salt.
//! - Queries go out with their parameter types ([`Client::query_typed`]): one
//!   round trip each, no prepared statement to cache per connection.
//!
//! Rows are checked by [`ClassicVerifier::parse`] exactly as SQLite's are.
//! A name holding a NUL byte (which PostgreSQL's TEXT cannot store) is simply
//! not there, as it would be in SQLite after the username rule refused it.
//!
//! [`register`]: PgUserStore::register

use crate::config::{
    PG_CONNECT_TIMEOUT, PG_LOCK_TIMEOUT, PG_POOL_MAX_CONNECTIONS, PG_POOL_MIN_IDLE,
    PG_STATEMENT_TIMEOUT,
};
use crate::store::{ClassicVerifier, Registration, StoreError, StoredUser, UserRecord};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use rusqlite::types::ValueRef;

type Manager = PostgresConnectionManager<NoTls>;

/// A key for `pg_advisory_xact_lock`: servers starting together create the
/// tables one after the other (concurrent `CREATE TABLE IF NOT EXISTS` can
/// fail on PostgreSQL's catalog).
const SCHEMA_LOCK_KEY: i64 = 0x6463_636e_5553_4552; // "dccnUSER"

/// The users table in a PostgreSQL database, behind a connection pool.
pub struct PgUserStore {
    pool: Pool<Manager>,
    secret: Vec<u8>,
}

fn db_error(e: postgres::Error) -> StoreError {
    // The server's own message and SQLSTATE where it sent one (the error's
    // Display alone says only "db error"); never the URL or its password.
    match e.as_db_error() {
        Some(db) => StoreError(format!(
            "PostgreSQL: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            StoreError(format!("PostgreSQL: {e}{cause}"))
        }
    }
}

fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError(format!("PostgreSQL: no connection: {e}"))
}

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A column as [`ClassicVerifier::parse`] reads it.
fn column(value: &Option<String>) -> ValueRef<'_> {
    match value {
        Some(text) => ValueRef::Text(text.as_bytes()),
        None => ValueRef::Null,
    }
}

fn stored_user(login: String, password: Option<String>, salt: Option<String>) -> StoredUser {
    StoredUser {
        classic: ClassicVerifier::parse(column(&password), column(&salt)),
        login,
    }
}

impl PgUserStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`),
    /// creates the tables if missing, and reads (or makes) the server secret.
    pub fn open(url: &str) -> Result<PgUserStore, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError(format!("not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(PG_CONNECT_TIMEOUT);
        config.application_name("dccn-auth");
        let ours = format!(
            "-c lock_timeout={} -c statement_timeout={} -c synchronous_commit=on",
            PG_LOCK_TIMEOUT.as_millis(),
            PG_STATEMENT_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(&options);
        let pool = Pool::builder()
            .max_size(PG_POOL_MAX_CONNECTIONS)
            .min_idle(Some(PG_POOL_MIN_IDLE))
            .test_on_check_out(false)
            .connection_timeout(PG_CONNECT_TIMEOUT)
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(pool_error)?;
        let mut conn = pool.get().map_err(pool_error)?;
        create_tables(&mut conn)?;
        let secret = load_or_make_secret(&mut conn)?;
        drop(conn);
        Ok(PgUserStore { pool, secret })
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool.get().map_err(pool_error)
    }

    /// The random key of the fake salts, the same for every server.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The user named exactly `login`, if any, with its row checked.
    pub fn find(&self, login: &str) -> Result<Option<StoredUser>, StoreError> {
        if login.contains('\0') {
            return Ok(None);
        }
        let row = self
            .conn()?
            .query_typed_opt(
                "SELECT password, salt FROM USERS WHERE login = $1",
                &[(&login, Type::TEXT)],
            )
            .map_err(db_error)?;
        Ok(row.map(|r| stored_user(login.to_string(), r.get(0), r.get(1))))
    }

    pub fn exists(&self, login: &str) -> Result<bool, StoreError> {
        if login.contains('\0') {
            return Ok(false);
        }
        let row = self
            .conn()?
            .query_typed_opt(
                "SELECT 1 FROM USERS WHERE login = $1",
                &[(&login, Type::TEXT)],
            )
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// Adds a user; returns once the row is durable (or was refused because
    /// the name exists, also when a concurrent registration, on any server,
    /// won the race).
    pub fn register(&self, record: UserRecord) -> Result<Registration, StoreError> {
        let params: [(&(dyn ToSql + Sync), Type); 3] = [
            (&record.login, Type::TEXT),
            (&record.verifier, Type::TEXT),
            (&record.salt, Type::TEXT),
        ];
        let inserted = self.conn()?.query_typed(
            "INSERT INTO USERS (login, password, salt) VALUES ($1, $2, $3)",
            &params,
        );
        match inserted {
            Ok(_) => Ok(Registration::Registered),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(Registration::NameTaken),
            Err(e) => Err(db_error(e)),
        }
    }

    /// Replaces the verifier and salt of an existing user; false if there is none.
    pub fn change_password(
        &self,
        login: &str,
        verifier: &str,
        salt: &str,
    ) -> Result<bool, StoreError> {
        if login.contains('\0') {
            return Ok(false);
        }
        let rows = self
            .conn()?
            .query_typed(
                "UPDATE USERS SET password = $2, salt = $3 WHERE login = $1 RETURNING 1",
                &[
                    (&login, Type::TEXT),
                    (&verifier, Type::TEXT),
                    (&salt, Type::TEXT),
                ],
            )
            .map_err(db_error)?;
        Ok(rows.len() == 1)
    }

    /// Removes a user; false if there was none.
    pub fn delete(&self, login: &str) -> Result<bool, StoreError> {
        if login.contains('\0') {
            return Ok(false);
        }
        let rows = self
            .conn()?
            .query_typed(
                "DELETE FROM USERS WHERE login = $1 RETURNING 1",
                &[(&login, Type::TEXT)],
            )
            .map_err(db_error)?;
        Ok(rows.len() == 1)
    }

    /// Every user, sorted by name byte by byte (as SQLite sorts), with its
    /// row checked (for the offline admin listing).
    pub fn list(&self) -> Result<Vec<StoredUser>, StoreError> {
        let rows = self
            .conn()?
            .query_typed(
                "SELECT login, password, salt FROM USERS ORDER BY login COLLATE \"C\"",
                &[],
            )
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| stored_user(r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

fn create_tables(conn: &mut Client) -> Result<(), StoreError> {
    let mut tx = conn.transaction().map_err(db_error)?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&SCHEMA_LOCK_KEY, Type::INT8)],
    )
    .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT);
         CREATE TABLE IF NOT EXISTS SERVER_SECRET (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             secret BYTEA NOT NULL);",
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

fn load_or_make_secret(conn: &mut Client) -> Result<Vec<u8>, StoreError> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| StoreError(format!("no OS randomness: {e}")))?;
    let fresh = fresh.to_vec();
    // DO NOTHING: if another server made it first, theirs is kept and read back.
    conn.query_typed(
        "INSERT INTO SERVER_SECRET (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        &[(&fresh, Type::BYTEA)],
    )
    .map_err(db_error)?;
    let row = conn
        .query_typed_one("SELECT secret FROM SERVER_SECRET WHERE id = 1", &[])
        .map_err(db_error)?;
    Ok(row.get(0))
}
