//! Crash safety: registrations acknowledged before a SIGKILL are all on disk
//! after a restart, and the database passes `PRAGMA integrity_check`.
//!
//! Rounds: `DCCN_CRASH_ROUNDS` (default 20, what CI runs); each round starts the
//! real `run_server` binary on the same database, drives registrations from 4
//! threads, kills the server with SIGKILL at a random moment, and checks.

#[allow(dead_code)] // this binary uses a part of the shared helpers
#[path = "it/common.rs"]
mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const PW: &str = "Passw0rd1";
const WRITERS: usize = 4;
/// No round may take longer than this, whatever happens.
const ROUND_LIMIT: Duration = Duration::from_secs(20);

fn start(db: &std::path::Path) -> (common::ChildGuard, SocketAddr) {
    // Logs are not read here: a full stderr pipe must not stall the server.
    let (mut child, addr) = common::start_server_binary(BIN, db, "off");
    drop(child.stderr.take());
    (child, addr)
}

/// One pipelined registration; true only if the server acknowledged it.
fn register(addr: SocketAddr, name: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(sock.try_clone()?);
        (&sock).write_all(format!("register\n{name}\n{PW}\n{PW}\nquit\n").as_bytes())?;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(false);
            }
            if line == "User successfully registered!\n" {
                return Ok(true);
            }
        }
    };
    attempt().unwrap_or(false)
}

/// A random duration in [lo, hi) from the OS CSPRNG.
fn random_between(lo: Duration, hi: Duration) -> Duration {
    let token = dccn_auth::crypto::random_token();
    let r = u64::from_str_radix(&token[..12], 16).unwrap();
    lo + Duration::from_micros(r % (hi - lo).as_micros() as u64)
}

#[test]
fn acknowledged_registrations_survive_sigkill() {
    let rounds: usize = std::env::var("DCCN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let mut acknowledged_total = 0usize;

    for round in 0..rounds {
        let round_started = Instant::now();
        let (mut child, addr) = start(&db);
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (acked, stop) = (acked.clone(), stop.clone());
                thread::spawn(move || {
                    for i in 0..100_000 {
                        if stop.load(Ordering::Relaxed) || round_started.elapsed() > ROUND_LIMIT {
                            break;
                        }
                        let name = format!("r{round}t{t}n{i}");
                        if register(addr, &name) {
                            acked.lock().unwrap().push(name);
                        }
                    }
                })
            })
            .collect();
        thread::sleep(random_between(
            Duration::from_millis(20),
            Duration::from_millis(300),
        ));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }

        // Restart on the same file (recovery of the WAL happens here), then check.
        let (mut again, addr) = start(&db);
        let acked = acked.lock().unwrap().clone();
        acknowledged_total += acked.len();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round}");
        let stored: HashSet<String> = conn
            .prepare("SELECT login FROM USERS")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        // The restarted server works.
        assert!(register(addr, &format!("after{round}")));
        again.kill().unwrap();
        again.wait().unwrap();
    }
    eprintln!("{rounds} rounds, {acknowledged_total} acknowledged registrations, none lost");
    assert!(
        acknowledged_total > 0,
        "the test must have registered something"
    );
}
