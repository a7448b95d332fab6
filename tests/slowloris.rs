//! Slowloris: 1,000 clients trickling bytes are all cut off by the login
//! timeout, a normal user's logins stay fast meanwhile, and the process's file
//! descriptors return to their baseline. A test binary of its own, so that no
//! other test's sockets are counted with this one's.

#[allow(dead_code)] // this binary uses a part of the shared helpers
#[path = "it/common.rs"]
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";

#[test]
fn slowloris_clients_are_all_cut_off_and_logins_stay_fast() {
    // A deep backlog: this test is about held connections, not about the queue
    // of 8 (a SYN dropped there costs the test a 1 s retry, nothing more).
    let app = spawn_app_with(
        |c| {
            c.login_timeout = Duration::from_secs(2);
            c.backlog = 1024;
        },
        |_| {},
    );
    app.register("steady", PW);
    let fds_before = open_fds();
    const SLOW: usize = 1000;
    // From 20 addresses, 50 each: under the per-address session cap (64), so
    // every slow client holds a session and must be cut off by its deadline.
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let s = connect_from(app.addr, [127, 0, 1, 1 + (i % 20) as u8]);
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            s
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    // A normal user logs in again and again meanwhile.
    let addr = app.addr;
    let steady = {
        let done = done.clone();
        thread::spawn(move || {
            let mut lat = Vec::new();
            let mut c = TestClient::connect(addr);
            c.expect_greeting();
            while !done.load(Ordering::Relaxed) && lat.len() < 2000 {
                let t = Instant::now();
                c.login_ok("steady", PW);
                c.send("logout");
                c.expect_prompt("__type__");
                lat.push(t.elapsed());
            }
            lat
        })
    };
    // One byte per slow client every 500 ms, never a newline.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for s in &mut slow {
            let _ = s.write_all(b"x");
        }
        thread::sleep(Duration::from_millis(500));
    }
    done.store(true, Ordering::Relaxed);
    let mut lat = steady.join().unwrap();
    // Every slow client was told and closed.
    let mut cut_off = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.ends_with(b"Error: timed out\n__quit__\n") {
            cut_off += 1;
        }
    }
    drop(slow);
    wait_for_sessions_at_most(&app, 0, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(100));
    let fds_after = open_fds();
    lat.sort();
    let p99 = percentile(&lat, 99);
    eprintln!(
        "slowloris: {cut_off}/{SLOW} trickling clients cut off; {} logins meanwhile, p99 {p99:?}; fds {fds_before} -> {fds_after}",
        lat.len()
    );
    assert_eq!(cut_off, SLOW);
    assert!(lat.len() >= 10, "logins went on");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(
        fds_after <= fds_before + 2,
        "fds {fds_before} -> {fds_after}"
    );
}

/// Open file descriptors of this process (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A connection to `addr` from the loopback address `source`.
fn connect_from(addr: std::net::SocketAddr, source: [u8; 4]) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from((source, 0)).into())
        .unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}
