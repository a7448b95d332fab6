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
//! - [`protocol`]: the protocol's words (control and outcome lines, menus, `Error:`
//!   reasons), used by server, client and load generator alike.
//! - [`proxy_protocol`]: the PROXY protocol header (v1, v2) from `--trusted-proxy`
//!   networks: the real client address behind a load balancer.
//! - [`address`]: the source-address key of every per-address limit (IPv6 by /64).
//! - [`config`]: defaults and limits, every one a named constant.
//! - [`transport`]: the byte streams a session runs over, with read deadlines.
//! - [`codec`]: line framing: length limit, UTF-8, deadlines, one write per turn.
//! - [`crypto`]: salts, nonces, verifiers, responses, fake salts, constant-time compare.
//! - [`rules`]: the username and password rules.
//! - [`store`]: the `USERS` table, durable registrations with group commit.
//! - [`pg_store`]: the same store on PostgreSQL (a pool of the sync `postgres`
//!   client), for several servers sharing one database; not wired in yet.
//! - [`throttle`]: brute-force throttling per (name, address) and per address.
//! - [`log_limit`]: bounded warning logs (names shortened, per-source rate limit).
//! - [`session`]: the dialogue of one client (wire protocol v1, `docs/PROTOCOL.md`).
//! - [`tls`]: optional TLS (rustls, ring): configs, self-signed setup, handshake.
//! - [`descriptors`]: the open-files limit, the session cap that fits under it,
//!   and the spare descriptor that lets a refused client hear why.
//! - [`threads`]: a thread per client, kept for the next client when it is done.
//! - [`server`]: the accept loop, the session cap, thread per client, shutdown.
//! - [`client`]: the terminal client's dialogue (scripted and interactive), trace,
//!   timeouts; one file per concept under `src/client/`, among them
//!   [`client::tls`]: the client's TLS: trust (`--ca` or the system's roots), the
//!   handshake at connect, its failures in words.
//! - [`bench`](mod@bench): the load generator behind `run_bench`.

pub mod address;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod descriptors;
pub mod log_limit;
pub mod pg_store;
pub mod protocol;
pub mod proxy_protocol;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod threads;
pub mod throttle;
pub mod tls;
pub mod transport;
