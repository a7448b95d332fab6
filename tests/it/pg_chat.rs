//! Chat across servers (issue 14): two `run_server` processes on one
//! PostgreSQL database are one room. Messages reach members on both servers
//! in one order; `/who`, `/msg`, the member cap and one membership per name
//! hold across them; the members of a server that dies leave the room.
//! Skipped (said once) without PostgreSQL, as the other PostgreSQL tests.

use crate::chat::{assert_one_order, enter, talk_concurrently};
use crate::common::{start_server_binary_with, ChildGuard, TestClient};
use crate::pg_cluster::test_db;
use dccn_auth::config::{CHAT_HEARTBEAT, CHAT_SERVER_STALE};
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";
const BIN: &str = env!("CARGO_BIN_EXE_run_server");

/// Two servers on the database at `url` with `env`, their stderr dropped.
fn two_servers(url: &str, env: &[(&str, &str)]) -> [(ChildGuard, SocketAddr); 2] {
    [0, 1].map(|_| {
        let (mut child, addr) = start_server_binary_with(BIN, Path::new(url), "off", env);
        drop(child.stderr.take());
        (child, addr)
    })
}

fn logged_in(addr: SocketAddr, name: &str) -> TestClient {
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    c.login_ok(name, PW);
    c
}

/// Registers every name (on server `addr`: the store is shared).
fn register_all(addr: SocketAddr, names: &[&str]) {
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    for name in names {
        let out = c.register(name, PW);
        assert_eq!(out[0], "User successfully registered!", "{out:?}");
    }
    c.quit();
}

/// Sends `chat` and returns the one line that refuses it (the menu follows).
fn refused(c: &mut TestClient) -> String {
    c.send("chat");
    let out = c.expect_prompt("__type__");
    out[0].clone()
}

#[test]
fn chat_reaches_members_on_both_servers_in_one_order() {
    let Some(db) = test_db() else { return };
    let fast = [("DCCN_CHAT_RATE", "10000"), ("DCCN_CHAT_BURST", "1000")];
    let [(_a, a), (_b, b)] = two_servers(&db.url(), &fast);
    let names = ["m0", "m1", "m2", "m3"];
    register_all(a, &names);
    // m0 and m2 on server A, m1 and m3 on server B, entering in name order.
    let mut clients: Vec<TestClient> = names
        .iter()
        .enumerate()
        .map(|(i, n)| logged_in(if i % 2 == 0 { a } else { b }, n))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            enter(c),
            names[..=i],
            "the list {} sees on entering",
            names[i]
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for n in &names[i + 1..] {
            assert_eq!(c.line(), format!("* {n} joined"));
        }
    }
    const PER_SENDER: usize = 100;
    let streams = talk_concurrently(clients, &names, names.len(), PER_SENDER);
    assert_one_order(&streams, PER_SENDER);
}

/// alice on server `a` and bob on server `b`, both in the room.
fn alice_and_bob_in_the_room(a: SocketAddr, b: SocketAddr) -> (TestClient, TestClient) {
    register_all(a, &["alice", "bob"]);
    let mut alice = logged_in(a, "alice");
    let mut bob = logged_in(b, "bob");
    assert_eq!(enter(&mut alice), ["alice"]);
    assert_eq!(enter(&mut bob), ["alice", "bob"]);
    assert_eq!(alice.line(), "* bob joined");
    (alice, bob)
}

#[test]
fn who_msg_the_cap_and_one_membership_hold_across_servers() {
    let Some(db) = test_db() else { return };
    let cap = [("DCCN_CHAT_MAX_MEMBERS", "2")];
    let [(_a, a), (_b, b)] = two_servers(&db.url(), &cap);
    register_all(a, &["carol"]);
    let (mut alice, mut bob) = alice_and_bob_in_the_room(a, b);

    bob.send("/who");
    assert_eq!(bob.line(), "* members: 2");
    assert_eq!(bob.line(), "* member: alice");
    assert_eq!(bob.line(), "* member: bob");

    bob.send("/msg alice hi from B");
    assert_eq!(bob.line(), "[private to alice] hi from B");
    assert_eq!(alice.line(), "[private] bob: hi from B");
    alice.send("/msg carol anyone?");
    assert_eq!(alice.line(), "* not sent: carol is not in the chat");

    // The room (2 members over two servers) is full for a third on either.
    let mut carol = logged_in(a, "carol");
    assert_eq!(refused(&mut carol), "Chat is full, try again later");
    // alice is in through server A: not again through server B.
    let mut alice_again = logged_in(b, "alice");
    assert_eq!(
        refused(&mut alice_again),
        "You are already in the chat in another session"
    );

    alice.send("/leave");
    assert_eq!(alice.line(), "__endchat__");
    assert_eq!(bob.line(), "* alice left");
    assert_eq!(enter(&mut carol), ["bob", "carol"]);
    assert_eq!(bob.line(), "* carol joined");
    carol.send("hello bob");
    assert_eq!(carol.line(), "> hello bob");
    assert_eq!(bob.line(), "carol: hello bob");
}

#[test]
fn the_members_of_a_server_that_dies_leave_the_room() {
    let Some(db) = test_db() else { return };
    let [(mut server_a, a), (_b, b)] = two_servers(&db.url(), &[]);
    let (_alice_on_a, mut bob) = alice_and_bob_in_the_room(a, b);

    server_a.0.kill().unwrap();
    server_a.0.wait().unwrap();
    let killed = Instant::now();
    let bound = CHAT_SERVER_STALE + CHAT_HEARTBEAT + Duration::from_secs(2);
    bob.tcp.set_read_timeout(Some(bound)).unwrap();
    assert_eq!(bob.line(), "* alice left");
    let took = killed.elapsed();
    assert!(took < bound, "alice left after {took:?}");
    eprintln!("a killed server's member left the room {took:?} after the kill");

    // Her name is free again: she enters through the server that lives.
    let mut alice = logged_in(b, "alice");
    assert_eq!(enter(&mut alice), ["alice", "bob"]);
    assert_eq!(bob.line(), "* alice joined");
}

#[test]
fn a_server_that_loses_the_bus_drops_its_members_and_comes_back() {
    let Some(db) = test_db() else { return };
    let [(_a, a), (_b, b)] = two_servers(&db.url(), &[]);
    let (mut alice, mut bob) = alice_and_bob_in_the_room(a, b);

    // Cut server A's listening connection, as a database restart would.
    let mut admin = db.connect();
    let cut = admin
        .execute(
            "SELECT pg_terminate_backend(s.listener_pid) FROM CHAT_SERVERS s
             JOIN CHAT_MEMBERS m ON m.server = s.server WHERE m.name = 'alice'",
            &[],
        )
        .unwrap();
    assert_eq!(cut, 1);
    // A's member can no longer hear the room: told so, and the connection ends.
    assert_eq!(alice.line(), "Error: chat unavailable");
    assert_eq!(alice.line(), "__quit__");
    assert_eq!(alice.try_line(), None);
    // B's heartbeat sees A's old listener gone and unseats her.
    let bound = CHAT_HEARTBEAT + Duration::from_secs(3);
    bob.tcp.set_read_timeout(Some(bound)).unwrap();
    assert_eq!(bob.line(), "* alice left");

    // Server A listens again (a new identity) within a few retries.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut alice = logged_in(a, "alice");
    loop {
        alice.send("chat");
        let first = alice.line();
        if first != "Server error, try again later" {
            assert_eq!(first, dccn_auth::protocol::chat::WELCOME);
            assert_eq!(alice.line(), "__chat__");
            break;
        }
        alice.expect_prompt("__type__");
        assert!(
            Instant::now() < deadline,
            "server A never came back to the bus"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(alice.line(), "* members: 2");
    assert_eq!(bob.line(), "* alice joined");
    bob.send("still one room?");
    assert_eq!(bob.line(), "> still one room?");
    alice.line();
    alice.line();
    assert_eq!(alice.line(), "bob: still one room?");
}
