//! The SCRAM parser, from arbitrary bytes.
//!
//! Input: up to the first NUL byte, the client-first-message; after it, the
//! client-final-message (both lossily UTF-8). Both go through the message layer
//! and through one `login_scram` of a session over memory; every one must end in
//! exactly one `__scram_final__:e=<word of the spec's table>`, never a panic
//! (`tests/fuzz_support/scram.rs`).
#![no_main]

#[path = "../../tests/fuzz_support/scram.rs"]
mod scram_support;

use dccn_auth::session::Services;
use dccn_auth::store::UserStore;
use libfuzzer_sys::fuzz_target;
use scram_support::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::Duration;

/// One store for the run (no user is ever registered: every name is unknown).
fn services() -> &'static Services {
    static SERVICES: OnceLock<(Services, tempfile::TempDir)> = OnceLock::new();
    &SERVICES
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = UserStore::open(&dir.path().join("fuzz.db")).expect("open store");
            let services =
                Services::new(store, Duration::from_secs(30), Duration::from_secs(600));
            (services, dir)
        })
        .0
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let first = String::from_utf8_lossy(&data[..split]);
    let last = String::from_utf8_lossy(data.get(split + 1..).unwrap_or_default());
    if let Err(e) = check_messages(&first, &last) {
        panic!("{e}");
    }
    let (first, last) = (as_line(&first), as_line(&last));
    let out = run_session(services(), &session_input(&first, &last), IpAddr::V4(Ipv4Addr::LOCALHOST));
    if let Err(e) = check_session_output(&first, &out) {
        panic!("{e}\n{}", String::from_utf8_lossy(&out));
    }
});
