//! The session state machine over memory, from arbitrary bytes.
//!
//! Input: the first byte picks the transport (even: all bytes at once over
//! `MemoryTransport`, pipelined; odd: one line per read over `LivePeer`, where a
//! line `\x01<password>` is replaced by the correct response to the last
//! challenge, so the fuzzer can log in); the rest is what the peer sends.
//! Every session must end without a panic and pass `fuzz_support::check_session`
//! (well-formed output and the protocol invariants).
//!
//! Each input starts from an empty user table and an empty throttle, so it
//! behaves the same whenever it is replayed (a crash reproduces alone).
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use dccn_auth::codec::LineConn;
use dccn_auth::session::{Services, Session};
use dccn_auth::store::{Store, UserStore};
use dccn_auth::transport::MemoryTransport;
use fuzz_support::{check_session, LivePeer};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Where the database lives; removed when libFuzzer exits normally.
static DB_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_db_dir() {
    if let Some(dir) = DB_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The database file of this run: a real SQLite file, in RAM-backed /dev/shm if
/// there is one (registrations sync to disk; that is all the fuzzer would measure).
fn db_path() -> PathBuf {
    let dir = DB_DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("dccn-fuzz-")
            .tempdir_in(base)
            .expect("temp dir")
            .keep();
        // SAFETY: registers a plain extern "C" fn that captures nothing.
        unsafe { libc::atexit(remove_db_dir) };
        dir
    });
    dir.join("fuzz.db")
}

/// Fresh services for each input: the same database file (emptied after each
/// input), a new throttle. One throttle for the whole run would reach its key
/// limit within a minute and then dominate the run (see fuzz/README.md).
fn services() -> Services {
    let store = UserStore::open(&db_path()).expect("open store");
    Services::new(store, Duration::from_secs(30), Duration::from_secs(600))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let services = services();
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let (end, fed, output) = if mode & 1 == 0 {
        let conn = LineConn::new(MemoryTransport::new(input));
        let mut session = Session::new(conn, &services, ip);
        let end = session.run();
        let output = std::mem::take(&mut session.into_conn().transport_mut().output);
        (end, input.to_vec(), output)
    } else {
        let conn = LineConn::new(LivePeer::new(input.to_vec()));
        let mut session = Session::new(conn, &services, ip);
        let end = session.run();
        let mut conn = session.into_conn();
        let peer = conn.transport_mut();
        (
            end,
            std::mem::take(&mut peer.fed),
            std::mem::take(&mut peer.output),
        )
    };
    if let Err(e) = check_session(&fed, &end, &output) {
        panic!(
            "{e}\n--- ended {end:?}; output ---\n{}",
            String::from_utf8_lossy(&output)
        );
    }
    // Back to an empty table, so the next input starts from the same state.
    for user in services.store.list().expect("list users") {
        services.store.delete(&user.login).expect("delete user");
    }
});
