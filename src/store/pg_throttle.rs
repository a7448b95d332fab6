//! Brute-force throttling shared by every server on one PostgreSQL database
//! (issue 14): the same policy as the in-memory [`Throttle`](crate::throttle::Throttle),
//! with its counters in the database.
//!
//! ```sql
//! THROTTLE_PAIR (login BYTEA, addr TEXT, consecutive_failures, pending,
//!                pending_since, blocked_until, last_failure)   -- UNLOGGED
//! THROTTLE_ADDR (addr TEXT PRIMARY KEY, failures TIMESTAMPTZ[], pending,
//!                pending_since, blocked_until)                  -- UNLOGGED
//! ```
//!
//! - UNLOGGED: the counters are worth no WAL flush; a crash of PostgreSQL
//!   empties them, as a restart empties the in-memory throttle.
//! - The database's clock only (`clock_timestamp()`): servers whose clocks
//!   disagree still share one window.
//! - Each step is one statement calling a PL/pgSQL function, so one round trip:
//!   `dccn_throttle_decide` decides and counts the try as pending under the row
//!   locks of the address and the pair (always taken in that order, so two
//!   servers never deadlock), exactly as [`Throttle::begin`](crate::throttle::Throttle::begin)
//!   does under its mutex; `dccn_throttle_failed` / `dccn_throttle_settle`
//!   settle it. Tries racing on several servers therefore get no more checks
//!   than tries arriving one by one.
//! - `dccn_throttle_decide` answers `allowed`, `refused` (a window is open) or
//!   `busy` (only the tries in flight could refuse it): a busy try is asked
//!   again after a short pause until it is decided or
//!   [`THROTTLE_IN_FLIGHT_WAIT`](crate::config::THROTTLE_IN_FLIGHT_WAIT) has
//!   passed ([`SharedThrottle::begin_waiting`]).
//! - Upgrade: an older server's `dccn_throttle_begin` (BOOLEAN: tries in flight
//!   refuse) is left in place rather than dropped, so servers of both versions
//!   can share one database during a rolling upgrade (both keep the same
//!   counters; an old server's `row.get::<bool>` would break on a changed
//!   return type). Nothing of this version calls it.
//! - A pending try whose server died never settles: pending counts older than
//!   [`PG_THROTTLE_PENDING_STALE`] are ignored, so such a source is not locked
//!   out for good.
//! - The name is passed as BYTEA (a name with a NUL byte is still counted).
//! - As in memory, a pair with no failure within [`ADDR_FAILURE_SPAN`] and no
//!   open window starts afresh, and a pair reset by a success with nothing
//!   pending is deleted. Each checked failure also deletes up to
//!   [`PRUNE_PER_FAILURE`] expired rows (oldest failure first, by index), so
//!   the tables hold about the failures of the last span, not all time's.

use crate::address::AddressKey;
use crate::config::{
    ADDR_FAILURE_SPAN, ADDR_FREE_FAILURES, PAIR_FREE_FAILURES, PG_THROTTLE_PENDING_STALE,
    THROTTLE_BASE_WINDOW, THROTTLE_MAX_WINDOW,
};
use crate::store::StoreError;
use crate::throttle::{Decision, SharedThrottle};
use postgres::types::Type;
use postgres::{GenericClient, NoTls};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

type Manager = PostgresConnectionManager<NoTls>;

/// Failures per address remembered at most (past 20 + 9 the window is at its cap).
const ADDR_FAILURES_KEPT: i32 = 32;

/// Expired rows deleted at most per checked failure (two per failure keep
/// the tables bounded; more catch up after a burst).
const PRUNE_PER_FAILURE: i32 = 16;

/// The tables and functions; run under the store's schema lock.
pub(crate) const SCHEMA: &str = r#"
CREATE UNLOGGED TABLE IF NOT EXISTS THROTTLE_ADDR (
    addr          TEXT PRIMARY KEY,
    failures      TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    pending       INTEGER NOT NULL DEFAULT 0,
    pending_since TIMESTAMPTZ,
    blocked_until TIMESTAMPTZ,
    last_failure  TIMESTAMPTZ);
CREATE INDEX IF NOT EXISTS THROTTLE_ADDR_LAST_FAILURE ON THROTTLE_ADDR (last_failure);
CREATE UNLOGGED TABLE IF NOT EXISTS THROTTLE_PAIR (
    login                BYTEA NOT NULL,
    addr                 TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    pending              INTEGER NOT NULL DEFAULT 0,
    pending_since        TIMESTAMPTZ,
    blocked_until        TIMESTAMPTZ,
    last_failure         TIMESTAMPTZ,
    PRIMARY KEY (login, addr));
CREATE INDEX IF NOT EXISTS THROTTLE_PAIR_LAST_FAILURE ON THROTTLE_PAIR (last_failure);

-- base * 2^(failures - free), capped.
CREATE OR REPLACE FUNCTION dccn_throttle_window(n INTEGER, free INTEGER,
        base_ms DOUBLE PRECISION, max_ms DOUBLE PRECISION) RETURNS INTERVAL
LANGUAGE sql IMMUTABLE AS $f$
    SELECT make_interval(secs => least(base_ms * power(2, least(greatest(n - free, 0), 20)),
                                       max_ms) / 1000.0)
$f$;

-- 'allowed' (counted as pending), 'refused' (a window is open) or 'busy'
-- (no window, but failures + tries in flight could open one: ask again).
CREATE OR REPLACE FUNCTION dccn_throttle_decide(p_login BYTEA, p_addr TEXT,
        pair_free INTEGER, addr_free INTEGER, span INTERVAL, stale INTERVAL)
        RETURNS TEXT
LANGUAGE plpgsql AS $f$
DECLARE
    t  TIMESTAMPTZ := clock_timestamp();
    a  THROTTLE_ADDR%ROWTYPE;
    p  THROTTLE_PAIR%ROWTYPE;
    a_pending INTEGER;
    p_pending INTEGER;
    recent INTEGER;
BEGIN
    -- An upsert locks the row and returns it in one step, even if another
    -- server deletes or inserts it meanwhile.
    INSERT INTO THROTTLE_ADDR AS x (addr) VALUES (p_addr)
        ON CONFLICT (addr) DO UPDATE SET addr = x.addr RETURNING * INTO a;
    INSERT INTO THROTTLE_PAIR AS x (login, addr) VALUES (p_login, p_addr)
        ON CONFLICT (login, addr) DO UPDATE SET login = x.login RETURNING * INTO p;
    a_pending := CASE WHEN a.pending_since < t - stale THEN 0 ELSE a.pending END;
    p_pending := CASE WHEN p.pending_since < t - stale THEN 0 ELSE p.pending END;
    SELECT count(*) INTO recent FROM unnest(a.failures) f WHERE f >= t - span;
    -- As the in-memory throttle forgets a pair with no failure within the span
    -- and no open window.
    IF p.last_failure < t - span AND coalesce(p.blocked_until <= t, true) THEN
        p.consecutive_failures := 0;
    END IF;
    IF coalesce(a.blocked_until > t, false) OR coalesce(p.blocked_until > t, false) THEN
        RETURN 'refused';
    END IF;
    IF (p_pending > 0 AND p.consecutive_failures + p_pending >= pair_free)
       OR (a_pending > 0 AND recent + a_pending >= addr_free) THEN
        RETURN 'busy';
    END IF;
    UPDATE THROTTLE_ADDR SET pending = a_pending + 1, pending_since = t WHERE addr = p_addr;
    UPDATE THROTTLE_PAIR SET pending = p_pending + 1, pending_since = t,
        consecutive_failures = p.consecutive_failures
        WHERE login = p_login AND addr = p_addr;
    RETURN 'allowed';
END
$f$;

CREATE OR REPLACE FUNCTION dccn_throttle_failed(p_login BYTEA, p_addr TEXT,
        pair_free INTEGER, addr_free INTEGER, span INTERVAL, kept INTEGER,
        base_ms DOUBLE PRECISION, max_ms DOUBLE PRECISION, stale INTERVAL,
        prune INTEGER) RETURNS VOID
LANGUAGE plpgsql AS $f$
DECLARE
    t  TIMESTAMPTZ := clock_timestamp();
    kept_failures TIMESTAMPTZ[];
    n  INTEGER;
BEGIN
    -- Upserts lock the row even where it exists, so no delete elsewhere can
    -- slip in before the update below.
    INSERT INTO THROTTLE_ADDR AS x (addr) VALUES (p_addr)
        ON CONFLICT (addr) DO UPDATE SET addr = x.addr;
    SELECT array(SELECT f FROM (SELECT f FROM unnest(failures) f WHERE f >= t - span
                                ORDER BY f DESC LIMIT kept - 1) newest ORDER BY f) || t
        INTO kept_failures FROM THROTTLE_ADDR WHERE addr = p_addr FOR UPDATE;
    n := cardinality(kept_failures);
    UPDATE THROTTLE_ADDR SET failures = kept_failures, last_failure = t,
        pending = greatest(pending - 1, 0),
        blocked_until = CASE WHEN n >= addr_free
            THEN t + dccn_throttle_window(n, addr_free, base_ms, max_ms)
            ELSE blocked_until END
        WHERE addr = p_addr;
    -- Locks the row even if it exists (a success elsewhere cannot delete it
    -- between this and the update).
    INSERT INTO THROTTLE_PAIR AS x (login, addr) VALUES (p_login, p_addr)
        ON CONFLICT (login, addr) DO UPDATE SET login = x.login;
    -- A pair forgotten (no failure within the span, no open window) starts at 0.
    UPDATE THROTTLE_PAIR SET consecutive_failures = 0
        WHERE login = p_login AND addr = p_addr AND last_failure < t - span
          AND coalesce(blocked_until <= t, true);
    UPDATE THROTTLE_PAIR SET consecutive_failures = consecutive_failures + 1,
        pending = greatest(pending - 1, 0), last_failure = t,
        blocked_until = CASE WHEN consecutive_failures + 1 >= pair_free
            THEN t + dccn_throttle_window(consecutive_failures + 1, pair_free, base_ms, max_ms)
            ELSE blocked_until END
        WHERE login = p_login AND addr = p_addr;
    -- Rows expired (no failure within the span, so no open window either;
    -- nothing pending) are deleted a few at a time, oldest first, by index:
    -- the tables stay bounded by the failures of the last span.
    DELETE FROM THROTTLE_PAIR WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM THROTTLE_PAIR WHERE last_failure < t - span
            AND (pending = 0 OR pending_since < t - stale)
        ORDER BY last_failure LIMIT prune FOR UPDATE SKIP LOCKED));
    DELETE FROM THROTTLE_ADDR WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM THROTTLE_ADDR WHERE last_failure < t - span
            AND (pending = 0 OR pending_since < t - stale)
        ORDER BY last_failure LIMIT prune FOR UPDATE SKIP LOCKED));
END
$f$;

-- succeeded: the pair starts afresh (the address counter does not);
-- abandoned: the try only stops being pending.
CREATE OR REPLACE FUNCTION dccn_throttle_settle(p_login BYTEA, p_addr TEXT,
        succeeded BOOLEAN) RETURNS VOID
LANGUAGE plpgsql AS $f$
BEGIN
    UPDATE THROTTLE_ADDR SET pending = greatest(pending - 1, 0) WHERE addr = p_addr;
    UPDATE THROTTLE_PAIR SET pending = greatest(pending - 1, 0),
        consecutive_failures = CASE WHEN succeeded THEN 0 ELSE consecutive_failures END,
        blocked_until = CASE WHEN succeeded THEN NULL ELSE blocked_until END
        WHERE login = p_login AND addr = p_addr;
    -- A pair reset with nothing pending is kept no longer (as in memory), nor
    -- rows that never saw a failure once nothing is pending.
    DELETE FROM THROTTLE_PAIR WHERE login = p_login AND addr = p_addr AND pending = 0
        AND (succeeded OR last_failure IS NULL);
    DELETE FROM THROTTLE_ADDR WHERE addr = p_addr AND pending = 0 AND last_failure IS NULL;
END
$f$;
"#;

/// The throttle of every server on one PostgreSQL database; shares the store's pool.
pub struct PgThrottle {
    pool: Pool<Manager>,
}

fn db_error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError(format!(
            "PostgreSQL throttle: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => StoreError(format!("PostgreSQL throttle: {e}")),
    }
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration as PostgreSQL's interval text (seconds).
fn interval(d: std::time::Duration) -> String {
    format!("{} seconds", d.as_secs_f64())
}

impl PgThrottle {
    pub(crate) fn new(pool: Pool<Manager>) -> Self {
        PgThrottle { pool }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError(format!("PostgreSQL throttle: no connection: {e}")))
    }

    fn settle(&self, user: &str, addr: AddressKey, succeeded: bool) -> Result<(), StoreError> {
        let addr = addr.to_string();
        self.conn()?
            .query_typed(
                "SELECT dccn_throttle_settle($1, $2, $3)",
                &[
                    (&user.as_bytes(), Type::BYTEA),
                    (&addr, Type::TEXT),
                    (&succeeded, Type::BOOL),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }
}

impl SharedThrottle for PgThrottle {
    fn begin(&self, user: &str, addr: AddressKey) -> Result<Decision, StoreError> {
        let addr = addr.to_string();
        let pair_free = PAIR_FREE_FAILURES as i32;
        let addr_free = ADDR_FREE_FAILURES as i32;
        let row = self
            .conn()?
            .query_typed_one(
                "SELECT dccn_throttle_decide($1, $2, $3, $4, $5::interval, $6::interval)",
                &[
                    (&user.as_bytes(), Type::BYTEA),
                    (&addr, Type::TEXT),
                    (&pair_free, Type::INT4),
                    (&addr_free, Type::INT4),
                    (&interval(ADDR_FAILURE_SPAN), Type::TEXT),
                    (&interval(PG_THROTTLE_PENDING_STALE), Type::TEXT),
                ],
            )
            .map_err(db_error)?;
        let decision: &str = row.try_get(0).map_err(db_error)?;
        match decision {
            "allowed" => Ok(Decision::Allowed),
            "refused" => Ok(Decision::Refused),
            "busy" => Ok(Decision::Busy),
            other => Err(StoreError(format!(
                "PostgreSQL throttle: unexpected decision {other:?}"
            ))),
        }
    }

    fn failed(&self, user: &str, addr: AddressKey) -> Result<(), StoreError> {
        let addr = addr.to_string();
        let pair_free = PAIR_FREE_FAILURES as i32;
        let addr_free = ADDR_FREE_FAILURES as i32;
        self.conn()?
            .query_typed(
                "SELECT dccn_throttle_failed($1, $2, $3, $4, $5::interval, $6, $7, $8,
                                             $9::interval, $10)",
                &[
                    (&user.as_bytes(), Type::BYTEA),
                    (&addr, Type::TEXT),
                    (&pair_free, Type::INT4),
                    (&addr_free, Type::INT4),
                    (&interval(ADDR_FAILURE_SPAN), Type::TEXT),
                    (&ADDR_FAILURES_KEPT, Type::INT4),
                    (&millis(THROTTLE_BASE_WINDOW), Type::FLOAT8),
                    (&millis(THROTTLE_MAX_WINDOW), Type::FLOAT8),
                    (&interval(PG_THROTTLE_PENDING_STALE), Type::TEXT),
                    (&PRUNE_PER_FAILURE, Type::INT4),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn succeeded(&self, user: &str, addr: AddressKey) -> Result<(), StoreError> {
        self.settle(user, addr, true)
    }

    fn abandoned(&self, user: &str, addr: AddressKey) -> Result<(), StoreError> {
        self.settle(user, addr, false)
    }
}

/// Creates the throttle's tables and functions (inside the caller's transaction).
pub(crate) fn create_schema(tx: &mut impl GenericClient) -> Result<(), StoreError> {
    tx.batch_execute(SCHEMA).map_err(db_error)
}
