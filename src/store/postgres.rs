//! The user store on PostgreSQL: the same tables, methods and semantics as the
//! SQLite [`UserStore`](crate::store::UserStore), shared by every server of a
//! scaled-out deployment (issue 14).
//!
//! ```sql
//! USERS (login TEXT PRIMARY KEY, password TEXT, salt TEXT)   -- the original table
//! SCRAM_SHA_256 (login TEXT PRIMARY KEY, iterations INTEGER NOT NULL,
//!                stored_key TEXT NOT NULL, server_key TEXT NOT NULL)
//! SERVER_SECRET (id INTEGER PRIMARY KEY CHECK (id = 1), secret BYTEA NOT NULL)
//! ```
//!
//! It implements [`Store`], so the session, the mechanisms and the admin
//! commands run on it unchanged; a SCRAM row is written in the same transaction
//! as its `USERS` row and removed with it, as in SQLite.
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
//! [`register`]: Store::register

use crate::config::{
    PG_CONNECT_TIMEOUT, PG_LOCK_TIMEOUT, PG_POOL_MAX_CONNECTIONS, PG_POOL_MIN_IDLE,
    PG_STATEMENT_TIMEOUT,
};
use crate::store::pg_chat::{self, PgChatBus};
use crate::store::pg_throttle::{self, PgThrottle};
use crate::store::{
    hex_column, ClassicVerifier, Column, Registration, ScramLookup, ScramRow, ScramWrites, Store,
    StoreError, StoredUser, UserRecord, UserWithScram, SALT_HEX_LEN,
};
use crate::throttle::SharedThrottle;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, Row};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use std::sync::Arc;

type Manager = PostgresConnectionManager<NoTls>;

/// A key for `pg_advisory_xact_lock`: servers starting together create the
/// tables one after the other (concurrent `CREATE TABLE IF NOT EXISTS` can
/// fail on PostgreSQL's catalog).
const SCHEMA_LOCK_KEY: i64 = 0x6463_636e_5553_4552; // "dccnUSER"

/// The users table in a PostgreSQL database, behind a connection pool.
pub struct PgUserStore {
    pool: Pool<Manager>,
    secret: Vec<u8>,
    /// The shared throttle, on the same pool.
    throttle: Arc<PgThrottle>,
    /// The chat bus: the pool, and its own listening connection per server.
    chat: Arc<PgChatBus>,
}

pub(crate) fn db_error(e: postgres::Error) -> StoreError {
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

pub(crate) fn pool_error(e: r2d2::Error) -> StoreError {
    StoreError(format!("PostgreSQL: no connection: {e}"))
}

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A column as [`ClassicVerifier::parse`] reads it.
fn column(value: &Option<String>) -> Column<'_> {
    match value {
        Some(text) => Column::Text(text.as_bytes()),
        None => Column::Null,
    }
}

fn stored_user(login: String, password: Option<String>, salt: Option<String>) -> StoredUser {
    StoredUser {
        classic: ClassicVerifier::parse(column(&password), column(&salt)),
        salt: hex_column(column(&salt), SALT_HEX_LEN).ok(),
        login,
    }
}

/// `login, password, salt` at columns 0..3 (a NULL salt reads as "", as in SQLite).
fn user_record(r: &Row) -> UserRecord {
    UserRecord {
        login: r.get(0),
        verifier: r.get(1),
        salt: r.get::<_, Option<String>>(2).unwrap_or_default(),
    }
}

/// The SCRAM columns from `first` on (`iterations, stored_key, server_key`);
/// `None` where the LEFT JOIN found no row.
fn scram_columns(r: &Row, first: usize) -> Option<ScramRow> {
    let iterations: Option<i32> = r.get(first);
    let stored_key: Option<String> = r.get(first + 1);
    let server_key: Option<String> = r.get(first + 2);
    Some(ScramRow {
        iterations: i64::from(iterations?),
        stored_key: stored_key?,
        server_key: server_key?,
    })
}

/// Writes (or replaces) the SCRAM row of `login`.
fn put_scram_row(
    tx: &mut impl GenericClient,
    login: &str,
    row: &ScramRow,
) -> Result<(), StoreError> {
    let iterations = i32::try_from(row.iterations)
        .map_err(|_| StoreError(format!("iteration count {} out of range", row.iterations)))?;
    tx.query_typed(
        "INSERT INTO SCRAM_SHA_256 (login, iterations, stored_key, server_key)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (login) DO UPDATE SET iterations = EXCLUDED.iterations,
             stored_key = EXCLUDED.stored_key, server_key = EXCLUDED.server_key",
        &[
            (&login, Type::TEXT),
            (&iterations, Type::INT4),
            (&row.stored_key, Type::TEXT),
            (&row.server_key, Type::TEXT),
        ],
    )
    .map_err(db_error)?;
    Ok(())
}

fn delete_scram_row(tx: &mut impl GenericClient, login: &str) -> Result<(), StoreError> {
    tx.query_typed(
        "DELETE FROM SCRAM_SHA_256 WHERE login = $1",
        &[(&login, Type::TEXT)],
    )
    .map_err(db_error)?;
    Ok(())
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
            .build(PostgresConnectionManager::new(config.clone(), NoTls))
            .map_err(pool_error)?;
        let mut conn = pool.get().map_err(pool_error)?;
        create_tables(&mut conn)?;
        let secret = load_or_make_secret(&mut conn)?;
        drop(conn);
        let throttle = Arc::new(PgThrottle::new(pool.clone()));
        let chat = Arc::new(PgChatBus::new(pool.clone(), config));
        Ok(PgUserStore {
            pool,
            secret,
            throttle,
            chat,
        })
    }

    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool.get().map_err(pool_error)
    }

    /// The one row `sql` (whose only parameter, `$1`, is the login) finds for
    /// `login`. A login holding a NUL byte, which PostgreSQL's TEXT cannot
    /// store, finds nothing.
    fn row_for(&self, sql: &str, login: &str) -> Result<Option<Row>, StoreError> {
        if login.contains('\0') {
            return Ok(None);
        }
        self.conn()?
            .query_typed_opt(sql, &[(&login, Type::TEXT)])
            .map_err(db_error)
    }
}

impl Store for PgUserStore {
    /// The random key of the fake salts, the same for every server.
    fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Throttle counters in the database, shared by every server on it.
    fn shared_throttle(&self) -> Option<Arc<dyn SharedThrottle>> {
        Some(self.throttle.clone())
    }

    /// Chat across servers: LISTEN/NOTIFY on this database.
    fn chat_bus(&self) -> Option<Arc<dyn crate::chat::bus::ChatBus>> {
        Some(self.chat.clone())
    }

    /// Registration counts in the database, shared by every server on it.
    fn shared_registration_quota(
        &self,
        limit: usize,
        stale: std::time::Duration,
    ) -> Option<Arc<dyn crate::registration_quota::RegistrationQuota>> {
        let quota =
            crate::store::pg_quota::PgRegistrationQuota::new(self.pool.clone(), limit, stale);
        Some(Arc::new(quota))
    }

    fn find(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self.row_for(
            "SELECT login, password, salt FROM USERS WHERE login = $1",
            login,
        )?;
        Ok(row.map(|r| user_record(&r)))
    }

    /// The user named exactly `login`, if any, with its row checked.
    fn find_classic(&self, login: &str) -> Result<Option<StoredUser>, StoreError> {
        let row = self.row_for("SELECT password, salt FROM USERS WHERE login = $1", login)?;
        Ok(row.map(|r| stored_user(login.to_string(), r.get(0), r.get(1))))
    }

    fn find_scram(&self, login: &str) -> Result<Option<ScramLookup>, StoreError> {
        let row = self.row_for(
            "SELECT u.salt, s.iterations, s.stored_key, s.server_key
                 FROM USERS u LEFT JOIN SCRAM_SHA_256 s ON s.login = u.login
                 WHERE u.login = $1",
            login,
        )?;
        Ok(row.map(|r| ScramLookup {
            salt: r.get::<_, Option<String>>(0).unwrap_or_default(),
            scram: scram_columns(&r, 1),
        }))
    }

    fn exists(&self, login: &str) -> Result<bool, StoreError> {
        let row = self.row_for("SELECT 1 FROM USERS WHERE login = $1", login)?;
        Ok(row.is_some())
    }

    /// Adds a user and its SCRAM row in one transaction; returns once durable
    /// (or refused because the name exists, also when a concurrent
    /// registration, on any server, won the race).
    fn register(
        &self,
        record: UserRecord,
        scram: Option<ScramRow>,
    ) -> Result<Registration, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let params: [(&(dyn ToSql + Sync), Type); 3] = [
            (&record.login, Type::TEXT),
            (&record.verifier, Type::TEXT),
            (&record.salt, Type::TEXT),
        ];
        let inserted = tx.query_typed(
            "INSERT INTO USERS (login, password, salt) VALUES ($1, $2, $3)",
            &params,
        );
        match inserted {
            Ok(_) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Ok(Registration::NameTaken)
            }
            Err(e) => return Err(db_error(e)),
        }
        match &scram {
            // Replaces an orphan row left by a server that ignores the table.
            Some(row) => put_scram_row(&mut tx, &record.login, row)?,
            None => delete_scram_row(&mut tx, &record.login)?,
        }
        tx.commit().map_err(db_error)?;
        Ok(Registration::Registered)
    }

    /// Replaces the credentials of an existing user (and its SCRAM row, in the
    /// same transaction); false if there is none.
    fn change_password(
        &self,
        login: &str,
        verifier: Option<&str>,
        salt: &str,
        scram: Option<&ScramRow>,
    ) -> Result<bool, StoreError> {
        if login.contains('\0') {
            return Ok(false);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let rows = tx
            .query_typed(
                "UPDATE USERS SET password = $2, salt = $3 WHERE login = $1 RETURNING 1",
                &[
                    (&login, Type::TEXT),
                    (&verifier, Type::TEXT),
                    (&salt, Type::TEXT),
                ],
            )
            .map_err(db_error)?;
        if rows.len() != 1 {
            return Ok(false);
        }
        match scram {
            Some(row) => put_scram_row(&mut tx, login, row)?,
            None => delete_scram_row(&mut tx, login)?,
        }
        tx.commit().map_err(db_error)?;
        Ok(true)
    }

    /// Removes a user and its SCRAM row; false if there was none.
    fn delete(&self, login: &str) -> Result<bool, StoreError> {
        if login.contains('\0') {
            return Ok(false);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let rows = tx
            .query_typed(
                "DELETE FROM USERS WHERE login = $1 RETURNING 1",
                &[(&login, Type::TEXT)],
            )
            .map_err(db_error)?;
        delete_scram_row(&mut tx, login)?;
        tx.commit().map_err(db_error)?;
        Ok(rows.len() == 1)
    }

    /// Every user, sorted by name byte by byte (as SQLite sorts), with its
    /// row checked (for the offline admin listing).
    fn list(&self) -> Result<Vec<StoredUser>, StoreError> {
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

    fn list_with_scram(&self) -> Result<Vec<UserWithScram>, StoreError> {
        let rows = self
            .conn()?
            .query_typed(
                "SELECT u.login, u.password, u.salt, s.iterations, s.stored_key, s.server_key
                 FROM USERS u LEFT JOIN SCRAM_SHA_256 s ON s.login = u.login
                 ORDER BY u.login COLLATE \"C\"",
                &[],
            )
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| UserWithScram {
                user: user_record(r),
                scram: scram_columns(r, 3),
            })
            .collect())
    }

    /// Compare-and-set, as SQLite's: a SCRAM row is written only where the
    /// `USERS` row is unchanged, a verifier dropped only where the SCRAM row is
    /// the one the decision was made on; one transaction.
    fn put_scram_rows(
        &self,
        writes: &[(UserRecord, ScramRow)],
        drops: &[(UserRecord, ScramRow)],
    ) -> Result<ScramWrites, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        let mut done = ScramWrites::default();
        for (u, row) in writes {
            let iterations = i32::try_from(row.iterations).unwrap_or(i32::MAX);
            let n = tx
                .query_typed(
                    "INSERT INTO SCRAM_SHA_256 (login, iterations, stored_key, server_key)
                     SELECT $1, $2, $3, $4 WHERE EXISTS
                       (SELECT 1 FROM USERS WHERE login = $1 AND password = $5 AND salt = $6)
                     ON CONFLICT (login) DO UPDATE SET iterations = EXCLUDED.iterations,
                         stored_key = EXCLUDED.stored_key, server_key = EXCLUDED.server_key
                     RETURNING 1",
                    &[
                        (&u.login, Type::TEXT),
                        (&iterations, Type::INT4),
                        (&row.stored_key, Type::TEXT),
                        (&row.server_key, Type::TEXT),
                        (&u.verifier, Type::TEXT),
                        (&u.salt, Type::TEXT),
                    ],
                )
                .map_err(db_error)?
                .len();
            done.written += n;
        }
        for (u, row) in drops {
            let iterations = i32::try_from(row.iterations).unwrap_or(i32::MAX);
            let n = tx
                .query_typed(
                    "UPDATE USERS SET password = NULL
                     WHERE login = $1 AND password = $2 AND salt = $3 AND EXISTS
                       (SELECT 1 FROM SCRAM_SHA_256 WHERE login = $1 AND iterations = $4
                          AND stored_key = $5 AND server_key = $6)
                     RETURNING 1",
                    &[
                        (&u.login, Type::TEXT),
                        (&u.verifier, Type::TEXT),
                        (&u.salt, Type::TEXT),
                        (&iterations, Type::INT4),
                        (&row.stored_key, Type::TEXT),
                        (&row.server_key, Type::TEXT),
                    ],
                )
                .map_err(db_error)?
                .len();
            done.dropped += n;
        }
        tx.commit().map_err(db_error)?;
        Ok(done)
    }
}

fn create_tables(conn: &mut Client) -> Result<(), StoreError> {
    let mut tx = conn.transaction().map_err(db_error)?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&SCHEMA_LOCK_KEY, Type::INT8)],
    )
    .map_err(db_error)?;
    tx.batch_execute(crate::store::USER_TABLES)
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS SERVER_SECRET (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             secret BYTEA NOT NULL);",
    )
    .map_err(db_error)?;
    pg_throttle::create_schema(&mut tx)?;
    pg_chat::create_schema(&mut tx)?;
    crate::store::pg_quota::create_schema(&mut tx)?;
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
