//! Password authentication over sockets: the reference implementation of the
//! DCCN mini project's design, made correct, secure and fast.
//!
//! The data path, one module per step:
//!
//! ```text
//! socket ──> transport ──> codec ──> session ──> store
//!            (TCP, TLS,    (lines,   (protocol   (SQLite USERS table,
//!             memory;       limits)   state       one Mutex<Connection>)
//!             deadlines)              machine)
//! ```
//!
//! What both sides use:
//! - [`protocol`]: the protocol's words (control and outcome lines, menus, `Error:`
//!   reasons), used by server, client and load generator alike.
//! - [`config`]: defaults and limits, every one a named constant.
//! - [`transport`]: the byte streams a session runs over, with read deadlines.
//! - [`codec`]: line framing: length limit, UTF-8, deadlines, one write per turn.
//! - [`crypto`]: salts, nonces, verifiers, responses, fake salts, constant-time compare.
//! - [`scram`](mod@scram): SCRAM-SHA-256 messages, key derivation and the offline migration.
//! - [`rules`]: the username and password rules.
//!
//! The server:
//! - [`server`]: the accept loop, the session caps, thread per client, shutdown.
//! - [`threads`]: a thread per client, kept for the next client when it is done.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) from `--trusted-proxy`
//!   networks: the real client address behind a load balancer.
//! - [`new_account`]: the one way an account is made (online `register` and
//!   the offline `add-user` alike): salt, verifier, durable row.
//! - [`registration_quota`]: acknowledged registrations per address per 10 min
//!   (in memory, or shared in PostgreSQL by every server on the database).
//! - [`metrics`]: the counters (atomics) and their Prometheus text rendering;
//!   [`metrics_http`]: the bounded `GET /metrics` endpoint on its own thread.
//! - [`descriptors`]: the open-files limit, the session cap that fits under it,
//!   and the spare descriptor that lets a refused client hear why.
//! - [`address`]: the source-address key of every per-address limit (IPv6 by /64).
//! - [`session`]: the dialogue of one client (wire protocol, `docs/PROTOCOL.md`):
//!   the menus, and a file per flow (account, classic, SCRAM, chat).
//! - [`chat`](mod@chat): the chat room: members, one global order, outbound
//!   queues and their writer threads, the rate limit, the line formats.
//! - [`store`]: the `USERS` and `SCRAM_SHA_256` tables, durable registrations
//!   with group commit: the `Store` trait and its engines, SQLite (the embedded
//!   default) and PostgreSQL (a pool of the sync `postgres` client, for several
//!   servers on one database).
//! - [`throttle`]: brute-force throttling per (name, address) and per address.
//! - [`log_limit`]: bounded warning logs (names shortened, per-source rate limit).
//! - [`tls`]: the server's TLS (rustls, ring): configs, self-signed setup,
//!   handshake, a transport chat can split.
//!
//! The client:
//! - [`client`]: the terminal client's dialogue (scripted and interactive, SCRAM,
//!   chat), trace, timeouts; one file per concept under `src/client/`, among them
//!   [`client::tls`]: the client's TLS: trust (`--ca` or the system's roots), the
//!   handshake at connect, its failures in words.
//!
//! The binaries are thin: `src/bin/run_server.rs`, `src/bin/run_client.rs`, and
//! `src/bin/run_bench/` (the load generator: `loadgen.rs`, and `chat.rs` for the
//! chat room's fan-out), each on this library's protocol words and rules.

pub mod address;
pub mod chat;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod descriptors;
pub mod log_limit;
pub mod metrics;
pub mod metrics_http;
pub mod new_account;
pub mod protocol;
pub mod proxy_protocol;
pub mod registration_quota;
pub mod rules;
pub mod scram;
pub mod server;
pub mod session;
pub mod store;
pub mod threads;
pub mod throttle;
pub mod tls;
pub mod transport;
