//! The integration tests, one binary: each module starts the real server on
//! 127.0.0.1:0 with a temporary SQLite file (`common::spawn_app`), or the real
//! binaries as child processes (`child`), and talks to it over real sockets.
//!
//! Kept apart, in binaries of their own, only what needs its own process:
//! `slowloris.rs` (counts the process's file descriptors), `crash.rs` (kills
//! servers with SIGKILL), `fuzz_session.rs` (property tests).

mod child;
mod common;
mod copy_db;
mod pty;

mod bench;
mod chat;
mod chat_terminal;
mod client;
mod faults;
mod haproxy;
mod hostile;
mod limits;
mod ops;
mod pg_chat;
mod pg_cluster;
mod pg_quota;
mod pg_store;
mod pg_throttle;
mod proxy;
mod run_server_cli;
mod scale_out;
mod scram;
mod security;
mod server;
mod store_suite;
mod throttle_wait;
mod tls;
mod tls_client;
