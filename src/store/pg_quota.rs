//! The registration quota shared by every server on one PostgreSQL database
//! (issue 15): the same reservations as the in-memory
//! [`InMemoryQuota`](crate::registration_quota::InMemoryQuota), with the
//! counts in the database, so N registrations per address per 10 minutes hold
//! across all servers together.
//!
//! ```sql
//! REGISTRATION_QUOTA (addr TEXT PRIMARY KEY, acknowledged INTEGER,
//!                     reserved TIMESTAMPTZ[], expires TIMESTAMPTZ)   -- UNLOGGED
//! REGISTRATION_QUOTA_ACK (addr TEXT, at TIMESTAMPTZ)                 -- UNLOGGED
//! ```
//!
//! - UNLOGGED: the counts are worth no WAL flush; a crash of PostgreSQL empties
//!   them, as a restart empties the in-memory quota.
//! - The database's clock only (`clock_timestamp()`): servers whose clocks
//!   disagree still share one window.
//! - Each step is one statement calling a PL/pgSQL function, so one round trip:
//!   `dccn_quota_reserve` counts and reserves under the address's row lock
//!   (servers racing on one address queue on it, so the acknowledged plus the
//!   reserved never pass the limit), `dccn_quota_settle` acknowledges or
//!   releases one reservation.
//! - A reservation is its time on the database's clock; it is removed by that
//!   value, and one older than the stale time (its server died before settling
//!   it) stops counting: see [`PG_QUOTA_STALE_AFTER_GRACE`](crate::config::PG_QUOTA_STALE_AFTER_GRACE).
//! - One row per address holds its count and its reservations in progress (few:
//!   at most its sessions); each acknowledgement is a row of its own in
//!   `REGISTRATION_QUOTA_ACK`, so a step costs the same whatever the limit (an
//!   array of acknowledgement times rewritten at every step cost O(limit):
//!   pgbench, 8 clients on one address, 485 steps/s at 1,900 acknowledgements
//!   against 4,700 with none; this way 3,000 at 12,000).
//! - Bounded: every step of an address first drops its acknowledgements older
//!   than the span (by index) and its stale reservations, and deletes a row
//!   that holds nothing; each reservation also deletes up to
//!   [`PRUNE_PER_RESERVE`] expired rows of other addresses with their
//!   acknowledgements (oldest first, by index), so the tables hold about the
//!   registrations of the last span.

use crate::address::AddressKey;
use crate::config::REGISTRATION_QUOTA_SPAN;
use crate::registration_quota::{RegistrationQuota, Reservation};
use crate::store::StoreError;
use postgres::types::Type;
use postgres::{GenericClient, NoTls};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;
use std::time::{Duration, SystemTime};

type Manager = PostgresConnectionManager<NoTls>;

/// Expired rows of other addresses deleted at most per reservation (more than
/// one per new row keeps the table bounded; more catch up after a burst).
const PRUNE_PER_RESERVE: i32 = 16;

/// The table and functions; run under the store's schema lock.
pub(crate) const SCHEMA: &str = r#"
CREATE UNLOGGED TABLE IF NOT EXISTS REGISTRATION_QUOTA (
    addr         TEXT PRIMARY KEY,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    reserved     TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    expires      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS REGISTRATION_QUOTA_EXPIRES ON REGISTRATION_QUOTA (expires);
CREATE UNLOGGED TABLE IF NOT EXISTS REGISTRATION_QUOTA_ACK (
    addr TEXT NOT NULL,
    at   TIMESTAMPTZ NOT NULL);
CREATE INDEX IF NOT EXISTS REGISTRATION_QUOTA_ACK_ADDR_AT ON REGISTRATION_QUOTA_ACK (addr, at);

-- The address's acknowledgements older than the span are dropped (oldest
-- first, by index); returns how many. The caller holds the address's row lock.
CREATE OR REPLACE FUNCTION dccn_quota_forget(p_addr TEXT, t TIMESTAMPTZ,
        span INTERVAL) RETURNS INTEGER
LANGUAGE plpgsql AS $f$
DECLARE
    n INTEGER;
BEGIN
    DELETE FROM REGISTRATION_QUOTA_ACK WHERE addr = p_addr AND at <= t - span;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$f$;

-- Writes an address's counts (the caller holds its row lock); a row that
-- holds nothing is deleted. `expires`: when the last of them stops counting.
CREATE OR REPLACE FUNCTION dccn_quota_store(p_addr TEXT, acked INTEGER,
        held TIMESTAMPTZ[], span INTERVAL, stale INTERVAL) RETURNS VOID
LANGUAGE plpgsql AS $f$
BEGIN
    IF acked = 0 AND cardinality(held) = 0 THEN
        DELETE FROM REGISTRATION_QUOTA WHERE addr = p_addr;
    ELSE
        UPDATE REGISTRATION_QUOTA SET acknowledged = acked, reserved = held,
            expires = greatest(
                (SELECT max(at) FROM REGISTRATION_QUOTA_ACK WHERE addr = p_addr) + span,
                (SELECT max(f) FROM unnest(held) f) + stale)
            WHERE addr = p_addr;
    END IF;
END
$f$;

-- The reservation's time, or NULL when the address's quota is used up.
CREATE OR REPLACE FUNCTION dccn_quota_reserve(p_addr TEXT, lim INTEGER,
        span INTERVAL, stale INTERVAL, prune INTEGER) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql AS $f$
DECLARE
    t       TIMESTAMPTZ := clock_timestamp();
    q       REGISTRATION_QUOTA%ROWTYPE;
    acked   INTEGER;
    held    TIMESTAMPTZ[];
    granted TIMESTAMPTZ;
BEGIN
    -- Expired rows of other addresses (every acknowledgement older than the
    -- span, every reservation stale), a few at a time, oldest first, with
    -- their acknowledgements; rows another server holds are left for later.
    WITH gone AS (
        DELETE FROM REGISTRATION_QUOTA WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM REGISTRATION_QUOTA WHERE expires < t AND addr <> p_addr
            ORDER BY expires LIMIT prune FOR UPDATE SKIP LOCKED))
        RETURNING addr)
    DELETE FROM REGISTRATION_QUOTA_ACK WHERE addr IN (SELECT addr FROM gone);
    -- An upsert locks the row and returns it in one step, even if another
    -- server deletes or inserts it meanwhile: racing servers queue here.
    INSERT INTO REGISTRATION_QUOTA AS x (addr) VALUES (p_addr)
        ON CONFLICT (addr) DO UPDATE SET addr = x.addr RETURNING * INTO q;
    -- (Never below 0: a count the tables disagree on must not grant more.)
    acked := greatest(q.acknowledged - dccn_quota_forget(p_addr, t, span), 0);
    held := array(SELECT f FROM unnest(q.reserved) f WHERE f > t - stale ORDER BY f);
    IF acked + cardinality(held) < lim THEN
        granted := t;
        held := held || t;
    END IF;
    PERFORM dccn_quota_store(p_addr, acked, held, span, stale);
    RETURN granted;
END
$f$;

-- Ends the reservation `token`: acknowledged, it counts from now for the span;
-- else it is only removed. (One already gone stale is not there to remove.)
CREATE OR REPLACE FUNCTION dccn_quota_settle(p_addr TEXT, token TIMESTAMPTZ,
        ack BOOLEAN, span INTERVAL, stale INTERVAL) RETURNS VOID
LANGUAGE plpgsql AS $f$
DECLARE
    t     TIMESTAMPTZ := clock_timestamp();
    q     REGISTRATION_QUOTA%ROWTYPE;
    k     INTEGER;
    acked INTEGER;
    held  TIMESTAMPTZ[];
BEGIN
    INSERT INTO REGISTRATION_QUOTA AS x (addr) VALUES (p_addr)
        ON CONFLICT (addr) DO UPDATE SET addr = x.addr RETURNING * INTO q;
    k := array_position(q.reserved, token);
    held := CASE WHEN k IS NULL THEN q.reserved
                 ELSE q.reserved[:k - 1] || q.reserved[k + 1:] END;
    held := array(SELECT f FROM unnest(held) f WHERE f > t - stale ORDER BY f);
    -- (Never below 0: a count the tables disagree on must not grant more.)
    acked := greatest(q.acknowledged - dccn_quota_forget(p_addr, t, span), 0);
    IF ack THEN
        INSERT INTO REGISTRATION_QUOTA_ACK (addr, at) VALUES (p_addr, t);
        acked := acked + 1;
    END IF;
    PERFORM dccn_quota_store(p_addr, acked, held, span, stale);
END
$f$;
"#;

/// The registration quota of every server on one PostgreSQL database; shares
/// the store's pool.
pub struct PgRegistrationQuota {
    pool: Pool<Manager>,
    /// At least 1 ([`for_store`](crate::registration_quota::for_store) keeps 0,
    /// "off", in memory, where it costs nothing).
    limit: usize,
    stale: Duration,
}

fn db_error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError(format!(
            "PostgreSQL registration quota: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => StoreError(format!("PostgreSQL registration quota: {e}")),
    }
}

/// A duration as PostgreSQL's interval text (seconds).
fn interval(d: Duration) -> String {
    format!("{} seconds", d.as_secs_f64())
}

impl PgRegistrationQuota {
    pub(crate) fn new(pool: Pool<Manager>, limit: usize, stale: Duration) -> Self {
        PgRegistrationQuota { pool, limit, stale }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError(format!("PostgreSQL registration quota: no connection: {e}")))
    }

    fn settle(&self, addr: &str, token: SystemTime, acknowledged: bool) -> Result<(), StoreError> {
        self.conn()?
            .query_typed(
                "SELECT dccn_quota_settle($1, $2, $3, $4::interval, $5::interval)",
                &[
                    (&addr, Type::TEXT),
                    (&token, Type::TIMESTAMPTZ),
                    (&acknowledged, Type::BOOL),
                    (&interval(REGISTRATION_QUOTA_SPAN), Type::TEXT),
                    (&interval(self.stale), Type::TEXT),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }
}

impl RegistrationQuota for PgRegistrationQuota {
    fn limit(&self) -> usize {
        self.limit
    }

    fn reserve(&self, from: AddressKey) -> Result<Option<Box<dyn Reservation + '_>>, StoreError> {
        let addr = from.to_string();
        let limit = i32::try_from(self.limit).unwrap_or(i32::MAX);
        let row = self
            .conn()?
            .query_typed_one(
                "SELECT dccn_quota_reserve($1, $2, $3::interval, $4::interval, $5)",
                &[
                    (&addr, Type::TEXT),
                    (&limit, Type::INT4),
                    (&interval(REGISTRATION_QUOTA_SPAN), Type::TEXT),
                    (&interval(self.stale), Type::TEXT),
                    (&PRUNE_PER_RESERVE, Type::INT4),
                ],
            )
            .map_err(db_error)?;
        let granted: Option<SystemTime> = row.get(0);
        Ok(granted.map(|token| {
            Box::new(PgReservation {
                quota: self,
                addr,
                token: Some(token),
            }) as Box<dyn Reservation + '_>
        }))
    }
}

/// One reservation in the database, named by its time there.
struct PgReservation<'a> {
    quota: &'a PgRegistrationQuota,
    addr: String,
    /// `None` once settled.
    token: Option<SystemTime>,
}

impl PgReservation<'_> {
    fn settle(&mut self, acknowledged: bool) {
        let Some(token) = self.token.take() else {
            return;
        };
        if let Err(e) = self.quota.settle(&self.addr, token, acknowledged) {
            // The registration itself stands (or did not happen); the
            // reservation stops counting once stale.
            let what = if acknowledged {
                "acknowledge"
            } else {
                "release"
            };
            log::warn!(
                "{} could not {what} a registration reservation: {e}",
                self.addr
            );
        }
    }
}

impl Reservation for PgReservation<'_> {
    fn acknowledged(mut self: Box<Self>) {
        self.settle(true);
    }
}

impl Drop for PgReservation<'_> {
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// Creates the quota's table and functions (inside the caller's transaction).
pub(crate) fn create_schema(tx: &mut impl GenericClient) -> Result<(), StoreError> {
    tx.batch_execute(SCHEMA).map_err(db_error)
}
