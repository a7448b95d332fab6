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

/// A client of the server at `addr` connecting from `source` (127.0.0.0/8).
fn client_from(addr: SocketAddr, source: [u8; 4]) -> TestClient {
    let mut c = TestClient::connect_from(addr, std::net::IpAddr::from(source));
    c.expect_greeting();
    c
}

#[test]
fn five_failures_on_one_server_close_the_window_on_the_other_and_a_success_resets() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    const SOURCE: [u8; 4] = [127, 0, 14, 1];
    client_from(a, SOURCE).register("tim", PW);
    let mut on_a = client_from(a, SOURCE);
    for _ in 0..5 {
        on_a.login_refused("tim", "Wrong0pass");
    }
    // Inside the 1 s window B refuses even the right password (unchecked).
    let mut on_b = client_from(b, SOURCE);
    on_b.login_refused("tim", PW);
    // Another address is not affected.
    client_from(b, [127, 0, 14, 2]).login_ok("tim", PW);
    thread::sleep(std::time::Duration::from_millis(1300));
    // Past the window a success on B resets the pair: 4 more failures on A
    // leave the 5th try free (without the reset they would be 9 in a row).
    on_b.login_ok("tim", PW);
    on_b.quit();
    for _ in 0..4 {
        on_a.login_refused("tim", "Wrong0pass");
    }
    client_from(b, SOURCE).login_ok("tim", PW);
}

#[test]
fn the_per_address_counter_adds_failures_on_both_servers() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url());
    const SOURCE: [u8; 4] = [127, 0, 14, 3];
    client_from(a, [127, 0, 14, 4]).register("una", PW);
    // 10 failures on each server, each for another name: no pair reaches 5.
    for (server, first) in [(a, 0), (b, 10)] {
        let mut c = client_from(server, SOURCE);
        for n in first..first + 10 {
            c.login_refused(&format!("name{n}"), "Wrong0pass");
        }
    }
    // 20 from the address in all: its window is open on both servers.
    client_from(a, SOURCE).login_refused("una", PW);
    client_from(b, SOURCE).login_refused("una", PW);
    client_from(b, [127, 0, 14, 5]).login_ok("una", PW);
}

#[test]
fn a_throttle_the_database_cannot_answer_refuses_the_try() {
    let Some(db) = test_db() else { return };
    let [(_a, a), _] = two_servers(&db.url());
    client(a).register("val", PW);
    db.connect()
        .batch_execute("DROP TABLE THROTTLE_PAIR CASCADE")
        .unwrap();
    // Fails closed: even the right password is refused, and the server lives on.
    let mut c = client(a);
    c.login_refused("val", PW);
    c.quit();
}
