//! Password authentication over sockets: the reference implementation of the
//! DCCN mini project's design, made correct, secure and fast.
//!
//! The data path, one module per step:
//!
//! ```text
//! socket ──> transport ──> codec ──> session ──> store
//!            (TCP/memory,  (lines,   (protocol   (SQLite USERS table,
//!             deadlines)    limits)   state       one Mutex<Connection>)
//!                                     machine)
//! ```
//!
//! - [`config`]: defaults and limits, every one a named constant.
//! - [`transport`]: the byte streams a session runs over, with read deadlines.
//! - [`codec`]: line framing: length limit, UTF-8, deadlines, one write per turn.
//! - [`crypto`]: salts, nonces, verifiers, responses, fake salts, constant-time compare.
//! - [`rules`]: the username and password rules.
//! - [`store`]: the `USERS` table, durable registrations with group commit.
//! - [`throttle`]: brute-force throttling per (name, address) and per address.
//! - [`session`]: the dialogue of one client (wire protocol v1, `docs/PROTOCOL.md`).
//! - [`server`]: the accept loop, the session cap, thread per client, shutdown.

pub mod bench;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod throttle;
pub mod transport;
