//! The chat bus on PostgreSQL (issue 14): LISTEN/NOTIFY carries the room's
//! events between servers, two UNLOGGED tables say who is in the room and
//! which servers are alive. The room's side is `chat/shared.rs`.
//!
//! ```sql
//! CHAT_SERVERS (server BIGINT PRIMARY KEY, listener_pid, listener_start, seen)  -- UNLOGGED
//! CHAT_MEMBERS (name TEXT PRIMARY KEY, server BIGINT, member BIGINT)          -- UNLOGGED
//! ```
//!
//! - **One order**: every event is a `NOTIFY dccn_chat` (`pg_notify`), and
//!   PostgreSQL hands notifications to every listener in the order their
//!   transactions committed. Each server listens on one connection of its
//!   own, outside the pool (a pooled connection goes back to the pool; a
//!   listening one must stay), and delivers from that stream only.
//! - **One membership**: a join checks the cap and the name, inserts the
//!   member and publishes the join in one transaction, under an advisory lock
//!   that leaves take too (`dccn_chat_join`, `dccn_chat_leave`: one round
//!   trip each), so two servers never both seat the 64th member or one name
//!   twice, and the table's order of joins and leaves is the stream's.
//! - **Dead servers**: each server's heartbeat (every `CHAT_HEARTBEAT`)
//!   updates its row and unseats the members of servers that are dead,
//!   publishing their leaves: a server is dead when it has not beaten for
//!   `CHAT_SERVER_STALE`, or at once when its listening connection is gone
//!   from `pg_stat_activity` (a server process that dies closes it).
//! - UNLOGGED: who is in the room is not worth a WAL flush; a crash of
//!   PostgreSQL empties the tables, and every server, having lost its
//!   listening connection, drops its members and starts afresh.
//! - Messages are not stored in tables. PostgreSQL keeps notifications in
//!   its notification queue (memory, spilling to `pg_notify/` under the data
//!   directory) until every listener has read them; they are not in the WAL.

use super::postgres::{db_error, pool_error};
use crate::chat::bus::{Announce, BusError, ChatBus, ChatFeed, JoinVerdict, Listening};
use crate::chat::room::SeatKey;
use crate::config::{CHAT_SERVER_STALE, PG_CONNECT_TIMEOUT};
use crate::store::StoreError;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;
use std::time::Duration;

type Manager = PostgresConnectionManager<NoTls>;

/// The notification channel.
const CHANNEL: &str = "dccn_chat";

/// `pg_advisory_xact_lock` key ("dccnCHAT") that orders joins, leaves and sweeps.
const CHAT_LOCK_KEY: i64 = 0x6463_636e_4348_4154;

/// The tables and functions; run under the store's schema lock.
const SCHEMA: &str = r#"
CREATE UNLOGGED TABLE IF NOT EXISTS CHAT_SERVERS (
    server         BIGINT PRIMARY KEY,
    listener_pid   INTEGER NOT NULL,
    listener_start TIMESTAMPTZ,
    seen           TIMESTAMPTZ NOT NULL);
CREATE UNLOGGED TABLE IF NOT EXISTS CHAT_MEMBERS (
    name   TEXT PRIMARY KEY,
    server BIGINT NOT NULL,
    member BIGINT NOT NULL);

CREATE OR REPLACE FUNCTION dccn_chat_join(p_name TEXT, p_server BIGINT, p_member BIGINT,
        p_max INTEGER, p_event TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_advisory_xact_lock(7233734751713509716);
    IF NOT EXISTS (SELECT 1 FROM CHAT_SERVERS WHERE server = p_server) THEN
        RETURN 'gone';
    END IF;
    IF EXISTS (SELECT 1 FROM CHAT_MEMBERS WHERE name = p_name) THEN
        RETURN 'taken';
    END IF;
    IF (SELECT count(*) FROM CHAT_MEMBERS) >= p_max THEN
        RETURN 'full';
    END IF;
    INSERT INTO CHAT_MEMBERS (name, server, member) VALUES (p_name, p_server, p_member);
    PERFORM pg_notify('dccn_chat', p_event);
    RETURN 'seated';
END
$f$;

CREATE OR REPLACE FUNCTION dccn_chat_leave(p_name TEXT, p_server BIGINT, p_member BIGINT,
        p_event TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_advisory_xact_lock(7233734751713509716);
    DELETE FROM CHAT_MEMBERS WHERE name = p_name AND server = p_server AND member = p_member;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('dccn_chat', p_event);
    RETURN true;
END
$f$;
"#;

/// A server is alive while its row is fresh and its listening connection
/// exists (`backend_start` is NULL where another role's backend is not ours
/// to see; then the pid alone must do, and the heartbeat's age still holds).
const SERVER_ALIVE: &str = "s.seen >= clock_timestamp() - make_interval(secs => $1)
    AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.listener_pid
        AND (a.backend_start IS NULL OR s.listener_start IS NULL
             OR a.backend_start = s.listener_start))";

pub(crate) fn create_schema(tx: &mut impl GenericClient) -> Result<(), StoreError> {
    debug_assert!(SCHEMA.contains(&CHAT_LOCK_KEY.to_string()));
    tx.batch_execute(SCHEMA).map_err(db_error)
}

fn bus_error(e: postgres::Error) -> BusError {
    BusError(db_error(e).0)
}

/// Server and member ids are u64 in Rust, BIGINT in the table (same bits).
fn to_db(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

fn from_db(id: i64) -> u64 {
    u64::from_ne_bytes(id.to_ne_bytes())
}

/// The chat bus of the servers on one PostgreSQL database.
pub struct PgChatBus {
    pool: Pool<Manager>,
    /// How to open a listening connection (the pool's settings).
    config: postgres::Config,
}

impl PgChatBus {
    pub(crate) fn new(pool: Pool<Manager>, config: postgres::Config) -> Self {
        PgChatBus { pool, config }
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, BusError> {
        self.pool.get().map_err(|e| BusError(pool_error(e).0))
    }
}

impl ChatBus for PgChatBus {
    fn listen(&self, server: u64) -> Result<Listening, BusError> {
        let mut config = self.config.clone();
        config.connect_timeout(PG_CONNECT_TIMEOUT);
        let mut client = config.connect(NoTls).map_err(bus_error)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(bus_error)?;
        // After LISTEN: every event committed from here on is in the stream;
        // the seats read below hold every one committed before.
        client
            .query_typed(
                "INSERT INTO CHAT_SERVERS (server, listener_pid, listener_start, seen)
                 SELECT $1, pg_backend_pid(),
                        (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
                        clock_timestamp()",
                &[(&to_db(server), Type::INT8)],
            )
            .map_err(bus_error)?;
        let seats = client
            .query_typed("SELECT name, server, member FROM CHAT_MEMBERS", &[])
            .map_err(bus_error)?
            .iter()
            .map(|r| {
                let key = SeatKey {
                    server: from_db(r.get(1)),
                    member: from_db(r.get(2)),
                };
                (r.get::<_, String>(0), key)
            })
            .collect();
        let feed = PgFeed {
            client,
            server: to_db(server),
        };
        Ok((Box::new(feed), seats))
    }

    fn join(
        &self,
        name: &str,
        seat: SeatKey,
        max_members: usize,
        announce: &str,
    ) -> Result<JoinVerdict, BusError> {
        let max = i32::try_from(max_members).unwrap_or(i32::MAX);
        let row = self
            .conn()?
            .query_typed_one(
                "SELECT dccn_chat_join($1, $2, $3, $4, $5)",
                &[
                    (&name, Type::TEXT),
                    (&to_db(seat.server), Type::INT8),
                    (&to_db(seat.member), Type::INT8),
                    (&max, Type::INT4),
                    (&announce, Type::TEXT),
                ],
            )
            .map_err(bus_error)?;
        match row.get::<_, String>(0).as_str() {
            "seated" => Ok(JoinVerdict::Seated),
            "full" => Ok(JoinVerdict::Full),
            "taken" => Ok(JoinVerdict::Taken),
            _ => Err(BusError("this server is no longer on the bus".into())),
        }
    }

    fn publish(&self, payload: &str) -> Result<(), BusError> {
        self.conn()?
            .query_typed(
                "SELECT pg_notify($1, $2)",
                &[(&CHANNEL, Type::TEXT), (&payload, Type::TEXT)],
            )
            .map_err(bus_error)?;
        Ok(())
    }

    fn leave(&self, name: &str, seat: SeatKey, announce: &str) -> Result<bool, BusError> {
        let row = self
            .conn()?
            .query_typed_one(
                "SELECT dccn_chat_leave($1, $2, $3, $4)",
                &[
                    (&name, Type::TEXT),
                    (&to_db(seat.server), Type::INT8),
                    (&to_db(seat.member), Type::INT8),
                    (&announce, Type::TEXT),
                ],
            )
            .map_err(bus_error)?;
        Ok(row.get(0))
    }
}

/// One server's listening connection.
struct PgFeed {
    client: Client,
    server: i64,
}

impl PgFeed {
    /// Unseats the members `which` selects (with `params`) and publishes
    /// their leaves, in `tx`.
    fn unseat(
        tx: &mut postgres::Transaction<'_>,
        which: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        announce: Announce<'_>,
    ) -> Result<usize, postgres::Error> {
        let gone = tx.query_typed(
            &format!("DELETE FROM CHAT_MEMBERS m WHERE {which} RETURNING name, server, member"),
            params,
        )?;
        for row in &gone {
            let key = SeatKey {
                server: from_db(row.get(1)),
                member: from_db(row.get(2)),
            };
            let payload = announce(row.get(0), key);
            tx.query_typed(
                "SELECT pg_notify($1, $2)",
                &[(&CHANNEL, Type::TEXT), (&payload.as_str(), Type::TEXT)],
            )?;
        }
        Ok(gone.len())
    }

    fn lock(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
        tx.query_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[(&CHAT_LOCK_KEY, Type::INT8)],
        )
        .map(drop)
    }
}

impl ChatFeed for PgFeed {
    fn next(&mut self, wait: Duration) -> Result<Option<String>, BusError> {
        let next = self.client.notifications().timeout_iter(wait).next();
        match next {
            Ok(Some(n)) if n.channel() == CHANNEL => Ok(Some(n.payload().to_string())),
            Ok(Some(_)) => Ok(None),
            Err(e) => Err(bus_error(e)),
            Ok(None) if self.client.is_closed() => {
                Err(BusError("the listening connection closed".into()))
            }
            Ok(None) => Ok(None),
        }
    }

    fn heartbeat(&mut self, announce: Announce<'_>) -> Result<bool, BusError> {
        let server = self.server;
        let stale = CHAT_SERVER_STALE.as_secs_f64();
        let mut tx = self.client.transaction().map_err(bus_error)?;
        Self::lock(&mut tx).map_err(bus_error)?;
        let alive = tx
            .execute(
                "UPDATE CHAT_SERVERS SET seen = clock_timestamp() WHERE server = $1",
                &[&server],
            )
            .map_err(bus_error)?
            == 1;
        let which =
            format!("NOT EXISTS (SELECT 1 FROM CHAT_SERVERS s WHERE s.server = m.server AND {SERVER_ALIVE})");
        let gone = Self::unseat(&mut tx, &which, &[(&stale, Type::FLOAT8)], announce)
            .map_err(bus_error)?;
        tx.query_typed(
            &format!("DELETE FROM CHAT_SERVERS s WHERE NOT ({SERVER_ALIVE})"),
            &[(&stale, Type::FLOAT8)],
        )
        .map_err(bus_error)?;
        tx.commit().map_err(bus_error)?;
        if gone > 0 {
            log::info!("chat: {gone} members of servers that died left the room");
        }
        Ok(alive)
    }

    fn close(mut self: Box<Self>, announce: Announce<'_>) {
        let server = self.server;
        let result = (|| {
            let mut tx = self.client.transaction()?;
            Self::lock(&mut tx)?;
            Self::unseat(&mut tx, "m.server = $1", &[(&server, Type::INT8)], announce)?;
            tx.execute("DELETE FROM CHAT_SERVERS WHERE server = $1", &[&server])?;
            tx.commit()
        })();
        if let Err(e) = result {
            log::warn!("chat: leaving the bus: {}", bus_error(e));
        }
    }
}
