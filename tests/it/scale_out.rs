//! Two `run_server` processes on one PostgreSQL database (`--db postgres://`),
//! as behind a load balancer: they behave as one server for accounts. Skipped
//! (said once) without PostgreSQL, as the other PostgreSQL tests.

use crate::common::{start_server_binary, ChildGuard, TestClient};
use crate::pg_cluster::test_db;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

const PW: &str = "Passw0rd1";
const BIN: &str = env!("CARGO_BIN_EXE_run_server");

/// Two servers on the database at `url`, their stderr dropped.
fn two_servers(url: &str) -> [(ChildGuard, SocketAddr); 2] {
    [0, 1].map(|_| {
        let (mut child, addr) = start_server_binary(BIN, Path::new(url), "off");
        drop(child.stderr.take());
        (child, addr)
    })
}

fn client(addr: SocketAddr) -> TestClient {
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    c
}

#[test]
fn a_user_registered_on_one_server_logs_in_on_the_other() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    let mut on_a = client(a);
    let out = on_a.register("ann", PW);
    assert_eq!(out[0], "User successfully registered!", "{out:?}");
    on_a.quit();
    let mut on_b = client(b);
    on_b.login_ok("ann", PW);
    on_b.send("whoami");
    assert_eq!(on_b.expect_prompt("__type__")[0], "You are ann");
    on_b.quit();
}

#[test]
fn an_unknown_name_gets_the_same_fake_salt_from_both_servers() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    let salt_from = |addr| {
        let mut c = client(addr);
        c.send("login");
        c.expect_prompt("__username__");
        c.send("nobody_here");
        let (salt, _nonce) = c.expect_challenge();
        salt
    };
    assert_eq!(salt_from(a), salt_from(b));
}

#[test]
fn a_name_race_across_two_servers_has_one_winner() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    const ROUNDS: usize = 10;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [a, b]
        .into_iter()
        .map(|addr| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                (0..ROUNDS)
                    .map(|round| {
                        let mut c = client(addr);
                        c.send("register");
                        c.expect_prompt("__username__");
                        // Both servers see the name free, then both commit.
                        c.send(&format!("race{round}"));
                        c.expect_prompt("__password__");
                        c.send(PW);
                        c.expect_prompt("__password__");
                        barrier.wait();
                        c.send(PW);
                        let out = c.expect_prompt("__type__");
                        c.quit();
                        out[0] == "User successfully registered!"
                    })
                    .collect::<Vec<bool>>()
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    for round in 0..ROUNDS {
        let winners = results.iter().filter(|r| r[round]).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
    }
}
