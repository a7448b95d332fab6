//! The deployment of docs/SCALE-OUT.md end to end: the real HAProxy with the
//! shipped `contrib/haproxy.cfg` (TCP, leastconn, send-proxy, a health check
//! that needs the greeting) in front of two `run_server` processes on one
//! PostgreSQL database. Through the one address, the two behave as one
//! server: an account made through the front logs in through it, two members
//! who landed on different servers chat in one room, and a dead server is
//! stepped around. Skipped (said once) without HAProxy or PostgreSQL; under
//! `CI=true` they must be there (`.ci/run` installs them).

use crate::chat::enter;
use crate::common::{start_server_binary_with, ChildGuard, TestClient};
use crate::pg_cluster::{test_db, TestDb};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";
const BIN: &str = env!("CARGO_BIN_EXE_run_server");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/haproxy.cfg");

fn haproxy_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file());
    if on_path.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but haproxy is not found: install it (.ci/run does)");
        }
        static SAID: Once = Once::new();
        SAID.call_once(|| eprintln!("haproxy tests skipped: haproxy is not installed"));
    }
    on_path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy on the shipped configuration, two servers behind it trusting its
/// PROXY header, on one database.
struct Front {
    addr: SocketAddr,
    servers: Vec<ChildGuard>,
    _haproxy: ChildGuard,
    _dir: tempfile::TempDir,
    db: TestDb,
}

fn front() -> Option<Front> {
    let haproxy = haproxy_binary()?;
    let db = test_db()?;
    let trust = [("DCCN_TRUSTED_PROXY", "127.0.0.1/32")];
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let (mut child, addr) = start_server_binary_with(BIN, Path::new(&db.url()), "off", &trust);
        drop(child.stderr.take());
        servers.push(child);
        ports.push(addr.port());
    }
    let port = free_port();
    let config = std::fs::read_to_string(CONFIG)
        .unwrap()
        .replace("@DEMO_PORT@", &port.to_string())
        .replace("@S1_PORT@", &ports[0].to_string())
        .replace("@S2_PORT@", &ports[1].to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let haproxy = ChildGuard(
        Command::new(haproxy)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !greets(addr) {
        assert!(Instant::now() < deadline, "no greeting through HAProxy");
        thread::sleep(Duration::from_millis(100));
    }
    Some(Front {
        addr,
        servers,
        _haproxy: haproxy,
        _dir: dir,
        db,
    })
}

/// Whether a connection to `addr` hears the greeting.
fn greets(addr: SocketAddr) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("Connected to server")
}

fn client(addr: SocketAddr) -> TestClient {
    let mut c = TestClient::connect(addr);
    c.expect_greeting();
    c
}

#[test]
fn two_servers_behind_haproxy_behave_as_one() {
    let Some(front) = front() else { return };
    let mut c = client(front.addr);
    for name in ["alice", "bob"] {
        let out = c.register(name, PW);
        assert_eq!(out[0], "User successfully registered!", "{out:?}");
    }
    c.send("register");
    c.expect_prompt("__username__");
    c.send("alice");
    let out = c.expect_prompt("__username__");
    assert_eq!(out, ["Username already taken, try something else"]);
    drop(c);

    // Two sessions at once: leastconn puts the second on the other server.
    let mut alice = client(front.addr);
    alice.login_ok("alice", PW);
    let mut bob = client(front.addr);
    bob.login_ok("bob", PW);
    enter(&mut alice);
    assert_eq!(enter(&mut bob), ["alice", "bob"]);
    assert_eq!(alice.line(), "* bob joined");
    let servers: i64 = front
        .db
        .connect()
        .query_one("SELECT count(DISTINCT server) FROM CHAT_MEMBERS", &[])
        .unwrap()
        .get(0);
    assert_eq!(servers, 2, "alice and bob should sit on different servers");

    alice.send("hello from one server");
    assert_eq!(alice.line(), "> hello from one server");
    assert_eq!(bob.line(), "alice: hello from one server");
    bob.send("/msg alice and from the other");
    assert_eq!(bob.line(), "[private to alice] and from the other");
    assert_eq!(alice.line(), "[private] bob: and from the other");
    bob.send("/quit");
    assert_eq!(bob.line(), "__quit__");
    assert_eq!(alice.line(), "* bob left");
}

#[test]
fn a_dead_server_is_stepped_around() {
    let Some(mut front) = front() else { return };
    let mut c = client(front.addr);
    let out = c.register("carol", PW);
    assert_eq!(out[0], "User successfully registered!", "{out:?}");
    c.quit();
    let dead = &mut front.servers[0];
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    // At once, before any health check noticed: a refused connect is
    // redispatched to the server that lives, so every client gets in.
    for _ in 0..6 {
        let mut c = client(front.addr);
        c.login_ok("carol", PW);
        c.quit();
    }
}
