//! The chat room over real sockets (`shared/protocol-chat.md`): exact formats,
//! one global order with concurrent senders, a member that never reads is cut
//! off while the others go on, injection attempts, abrupt disconnects, the
//! refusals, 50 members at once, TLS, and the scripted client.

use crate::child::run_with_deadline;
use crate::common::*;
use dccn_auth::config::ChatLimits;
use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

const PW: &str = "Passw0rd1";
const WELCOME: &str = dccn_auth::protocol::chat::WELCOME;

fn app_with_chat(limits: ChatLimits) -> TestApp {
    spawn_app_with(|c| c.chat = limits, |_| {})
}

/// Registers each name and returns a logged-in client for each.
fn logged_in_all(app: &TestApp, names: &[&str]) -> Vec<TestClient> {
    names
        .iter()
        .map(|n| {
            app.register(n, PW);
            logged_in(app, n, PW)
        })
        .collect()
}

/// `chat` from the logged-in menu: the welcome, `__chat__`, the member list.
/// Returns the names listed.
pub(crate) fn enter(c: &mut TestClient) -> Vec<String> {
    c.send("chat");
    assert_eq!(c.line(), WELCOME);
    assert_eq!(c.line(), "__chat__");
    read_list(c)
}

fn read_list(c: &mut TestClient) -> Vec<String> {
    let header = c.line();
    let n: usize = header
        .strip_prefix("* members: ")
        .unwrap_or_else(|| panic!("expected a member list, got {header:?}"))
        .parse()
        .unwrap();
    (0..n)
        .map(|_| {
            let l = c.line();
            l.strip_prefix("* member: ")
                .unwrap_or_else(|| panic!("expected a member line, got {l:?}"))
                .to_string()
        })
        .collect()
}

/// Reads lines until one equals `want`; returns those before it.
fn until(c: &mut TestClient, want: &str) -> Vec<String> {
    let mut before = Vec::new();
    for _ in 0..100_000 {
        let l = c.line();
        if l == want {
            return before;
        }
        before.push(l);
    }
    panic!("never got {want:?}");
}

#[test]
fn enter_talk_whisper_who_and_leave_in_the_exact_formats() {
    let app = spawn_app();
    let mut c = logged_in_all(&app, &["bob", "alice", "carol"]);
    let (mut alice, mut bob) = (c.remove(1), c.remove(0));
    assert_eq!(enter(&mut bob), ["bob"]);
    assert_eq!(enter(&mut alice), ["alice", "bob"]);
    assert_eq!(bob.line(), "* alice joined");

    alice.send("hello all");
    assert_eq!(alice.line(), "> hello all");
    assert_eq!(bob.line(), "alice: hello all");
    // Spaces are kept exactly; `//` escapes a leading slash.
    alice.send("  two  spaces  ");
    assert_eq!(bob.line(), "alice:   two  spaces  ");
    alice.send("//who");
    assert_eq!(bob.line(), "alice: /who");
    assert_eq!(alice.line(), ">   two  spaces  ");
    assert_eq!(alice.line(), "> /who");

    bob.send("/msg alice hi you");
    assert_eq!(alice.line(), "[private] bob: hi you");
    assert_eq!(bob.line(), "[private to alice] hi you");
    bob.send("/msg carol are you there");
    assert_eq!(bob.line(), "* not sent: carol is not in the chat");
    bob.send("/msg nobody x");
    assert_eq!(bob.line(), "* not sent: nobody is not in the chat");
    bob.send("/msg bob me");
    assert_eq!(bob.line(), "* not sent: cannot /msg yourself");
    bob.send("/msg alice");
    assert_eq!(bob.line(), "* usage: /msg <user> <text>");
    bob.send("/msg b@d hi");
    assert_eq!(bob.line(), "* usage: /msg <user> <text>");
    bob.send("/ping");
    assert_eq!(bob.line(), "* pong");
    bob.send("/who x");
    assert_eq!(
        bob.line(),
        "* unknown command (commands: /who /msg /ping /leave /quit)"
    );
    bob.send("/");
    assert_eq!(
        bob.line(),
        "* unknown command (commands: /who /msg /ping /leave /quit)"
    );
    bob.send("");
    alice.send("/who");
    assert_eq!(read_list(&mut alice), ["alice", "bob"]);

    alice.send("/leave  ");
    assert_eq!(alice.line(), "__endchat__");
    assert_eq!(alice.expect_prompt("__type__"), [USER_MENU]);
    assert_eq!(bob.line(), "* alice left");
    alice.send("whoami");
    assert_eq!(
        alice.expect_prompt("__type__"),
        ["You are alice", USER_MENU]
    );
    // Re-entry works, and the empty line above got no answer.
    assert_eq!(enter(&mut alice), ["alice", "bob"]);
    assert_eq!(bob.line(), "* alice joined");
    bob.send("/quit");
    assert_eq!(bob.line(), "__quit__");
    assert_eq!(bob.try_line(), None);
    assert_eq!(alice.line(), "* bob left");
    alice.send("/quit");
    assert_eq!(alice.rest(), ["__quit__"]);
}

#[test]
fn lines_pipelined_after_chat_and_after_leave_are_handled_in_their_mode() {
    let app = spawn_app();
    let mut c = logged_in_all(&app, &["alice"]).remove(0);
    c.send_raw(b"chat\nfirst\n/leave\nwhoami\n");
    assert_eq!(c.line(), WELCOME);
    assert_eq!(c.line(), "__chat__");
    assert_eq!(read_list(&mut c), ["alice"]);
    assert_eq!(c.line(), "> first");
    assert_eq!(c.line(), "__endchat__");
    assert_eq!(c.expect_prompt("__type__"), [USER_MENU]);
    assert_eq!(c.expect_prompt("__type__"), ["You are alice", USER_MENU]);
}

#[test]
fn refusals_keep_the_session_at_the_menu() {
    let app = app_with_chat(ChatLimits {
        max_members: 1,
        queue: 9,
        ..ChatLimits::default()
    });
    let mut c = logged_in_all(&app, &["alice", "bob"]);
    let (mut bob, mut alice) = (c.remove(1), c.remove(0));
    // Not logged in: `chat` is an unknown word.
    let mut anon = app.client();
    anon.expect_greeting();
    anon.send("chat");
    assert_eq!(
        anon.expect_prompt("__type__"),
        ["Unrecognized type", MAIN_MENU]
    );

    enter(&mut alice);
    bob.send("chat");
    assert_eq!(
        bob.expect_prompt("__type__"),
        ["Chat is full, try again later", USER_MENU]
    );
    let mut alice2 = logged_in(&app, "alice", PW);
    alice2.send("chat");
    assert_eq!(
        alice2.expect_prompt("__type__"),
        ["You are already in the chat in another session", USER_MENU]
    );
    alice.send("/leave");
    until(&mut alice, "__endchat__");
    enter(&mut alice2);
}

#[test]
fn a_name_beginning_with_two_underscores_cannot_chat() {
    let app = spawn_app();
    // v1 registration refuses `__`; an older database may hold such a row.
    use dccn_auth::store::Store;
    let store = dccn_auth::store::UserStore::open(&app.db_path).unwrap();
    let salt = dccn_auth::crypto::new_salt();
    let record = dccn_auth::store::UserRecord {
        login: "__quit__".into(),
        verifier: Some(dccn_auth::crypto::verifier(&salt, PW)),
        salt,
    };
    store.register(record, None).unwrap();
    let mut c = logged_in(&app, "__quit__", PW);
    c.send("chat");
    assert_eq!(
        c.expect_prompt("__type__"),
        ["Chat is not available for this username", USER_MENU]
    );
}

#[test]
fn the_rate_limit_drops_lines_past_the_burst_and_survives_reentry() {
    let app = spawn_app();
    let mut c = logged_in_all(&app, &["alice"]).remove(0);
    enter(&mut c);
    let burst: String = (0..12).map(|i| format!("m{i}\n")).collect();
    c.send_raw(burst.as_bytes());
    for i in 0..10 {
        assert_eq!(c.line(), format!("> m{i}"));
    }
    assert_eq!(c.line(), "* rate limit: line dropped");
    assert_eq!(c.line(), "* rate limit: line dropped");
    // /leave always works and re-entering does not refill the bucket.
    c.send_raw(b"/leave\nchat\n/ping\n/ping\n/ping\n");
    until(&mut c, "__endchat__");
    assert_eq!(c.expect_prompt("__type__"), [USER_MENU]);
    assert_eq!(c.line(), WELCOME);
    assert_eq!(c.line(), "__chat__");
    read_list(&mut c);
    let answers: Vec<String> = (0..3).map(|_| c.line()).collect();
    assert!(
        answers.iter().any(|l| l == "* rate limit: line dropped"),
        "{answers:?}"
    );
}

#[test]
fn every_member_sees_one_global_order_with_concurrent_senders() {
    let app = app_with_chat(ChatLimits {
        rate: 10_000.0,
        burst: 1000,
        ..ChatLimits::default()
    });
    let names = ["m0", "m1", "m2", "m3", "m4"];
    let mut clients = logged_in_all(&app, &names);
    for c in clients.iter_mut() {
        enter(c);
    }
    // Everyone's join notices first: read them off so the streams start aligned.
    for (i, c) in clients.iter_mut().enumerate() {
        for n in &names[i + 1..] {
            assert_eq!(c.line(), format!("* {n} joined"));
        }
    }
    const PER_SENDER: usize = 200;
    // m0..m3 send, all five read.
    let streams = talk_concurrently(clients, &names, 4, PER_SENDER);
    assert_one_order(&streams, PER_SENDER);
}

/// The first `senders` of `clients` (named `names`) each send `per_sender`
/// lines `<name> says <k>` at once, while every client reads all of them;
/// returns each client's stream, its own echoes written as `<name>: <text>`,
/// the form the others see.
pub(crate) fn talk_concurrently(
    clients: Vec<TestClient>,
    names: &[&str],
    senders: usize,
    per_sender: usize,
) -> Vec<Vec<String>> {
    let total = senders * per_sender;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let name = names[i].to_string();
            thread::spawn(move || {
                let sender = (i < senders).then(|| {
                    let mut w = c.tcp.try_clone().unwrap();
                    let name = name.clone();
                    thread::spawn(move || {
                        for k in 0..per_sender {
                            w.write_all(format!("{name} says {k}\n").as_bytes())
                                .unwrap();
                        }
                    })
                });
                let stream: Vec<String> = (0..total)
                    .map(|_| {
                        let l = c.line();
                        match l.strip_prefix("> ") {
                            Some(text) => format!("{name}: {text}"),
                            None => l,
                        }
                    })
                    .collect();
                if let Some(sender) = sender {
                    sender.join().unwrap();
                }
                stream
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every member's stream (echoes written as `<own name>: <text>`) is the
/// same, and in it each sender's `<name> says <k>` lines come in order, all
/// `per_sender` of them.
pub(crate) fn assert_one_order(streams: &[Vec<String>], per_sender: usize) {
    for (i, s) in streams.iter().enumerate().skip(1) {
        assert_eq!(
            s, &streams[0],
            "member {i} and member 0 disagree on the order"
        );
    }
    let mut next: HashMap<&str, usize> = HashMap::new();
    for l in &streams[0] {
        let (from, rest) = l.split_once(": ").unwrap();
        let k: usize = rest.rsplit(' ').next().unwrap().parse().unwrap();
        let want = next.entry(from).or_insert(0);
        assert_eq!(k, *want, "{from} out of order");
        *want += 1;
    }
    assert!(next.values().all(|&n| n == per_sender), "{next:?}");
}

#[test]
fn a_member_that_never_reads_is_cut_off_while_the_others_keep_receiving() {
    let app = app_with_chat(ChatLimits {
        max_members: 8,
        rate: 100_000.0,
        burst: 100_000,
        queue: 1024,
    });
    let mut c = logged_in_all(&app, &["alice", "bob", "carol"]);
    let (mut carol, mut bob, mut alice) = (c.remove(2), c.remove(1), c.remove(0));
    enter(&mut carol);
    enter(&mut bob);
    enter(&mut alice);
    assert_eq!(carol.line(), "* bob joined");
    assert_eq!(carol.line(), "* alice joined");
    assert_eq!(bob.line(), "* alice joined");
    // Carol stops reading. Alice sends large messages, each with its send time;
    // bob reads them all and measures how long each took to reach him.
    let text = "x".repeat(900);
    const COUNT: usize = 4000;
    let started = Instant::now();
    let mut w = alice.tcp.try_clone().unwrap();
    let t = text.clone();
    let sender = thread::spawn(move || {
        for k in 0..COUNT {
            let sent = started.elapsed().as_micros();
            w.write_all(format!("{k} {sent} {t}\n").as_bytes()).unwrap();
            // About 5,000 lines/s: the readers keep up, carol does not read.
            if k % 5 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let drain_alice = thread::spawn(move || {
        let mut echoes = 0;
        while echoes < COUNT {
            if alice.line().starts_with("> ") {
                echoes += 1;
            }
        }
        alice
    });
    let mut worst = Duration::ZERO;
    let mut got = 0;
    let mut carol_left_after = None;
    while got < COUNT {
        let l = bob.line();
        if l == "* carol left" {
            carol_left_after = Some(got);
            continue;
        }
        let rest = l.strip_prefix("alice: ").unwrap_or_else(|| panic!("{l:?}"));
        let mut parts = rest.splitn(3, ' ');
        let k: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(k, got, "bob's stream has a gap");
        let sent: u128 = parts.next().unwrap().parse().unwrap();
        let latency = started.elapsed() - Duration::from_micros(sent as u64);
        worst = worst.max(latency);
        got += 1;
    }
    sender.join().unwrap();
    drain_alice.join().unwrap();
    let dropped_at = carol_left_after.expect("carol was never dropped");
    eprintln!(
        "never-reading member dropped after {dropped_at} messages of ~920 bytes; \
         worst delivery latency to a reading member meanwhile: {worst:?}"
    );
    // What carol got is a prefix of her stream, then the error: never a gap.
    let lines = carol.rest();
    let (tail, prefix) = lines.split_at(lines.len() - 2);
    assert_eq!(
        prefix,
        ["Error: too slow", "__quit__"],
        "{:?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    for (k, l) in tail.iter().enumerate() {
        let k_got: usize = l
            .strip_prefix("alice: ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {l:?}"));
        assert_eq!(k_got, k, "carol's stream has a gap");
    }
    assert!(tail.len() < COUNT, "carol got everything: not dropped?");
}

#[test]
fn injection_attempts_are_relayed_harmlessly_or_refused() {
    let app = app_with_chat(ChatLimits {
        rate: 10_000.0,
        burst: 1000,
        ..ChatLimits::default()
    });
    let mut c = logged_in_all(&app, &["alice", "bob"]);
    let (mut bob, mut alice) = (c.remove(1), c.remove(0));
    enter(&mut bob);
    enter(&mut alice);
    assert_eq!(bob.line(), "* alice joined");
    for control in ["__quit__", "__type__", "__password__", "__nonce__:00:00"] {
        alice.send(control);
        assert_eq!(bob.line(), format!("alice: {control}"));
        assert_eq!(alice.line(), format!("> {control}"));
    }
    alice.send("/msg bob __quit__");
    assert_eq!(bob.line(), "[private] alice: __quit__");
    assert_eq!(alice.line(), "[private to bob] __quit__");
    // Every forbidden character is refused, in a room message and in /msg.
    let forbidden = [
        "\r", "\x0b", "\x0c", "\x1b[2J", "\t", "\x1c", "\x1d", "\x1e", "\x00", "\x7f", "\u{85}",
        "\u{9b}", "\u{2028}", "\u{2029}", "\u{202e}", "\u{2066}", "\u{2069}",
    ];
    for f in forbidden {
        alice.send(&format!("hi{f}__quit__"));
        assert_eq!(
            alice.line(),
            "* not sent: control characters are not allowed",
            "{f:?}"
        );
        alice.send(&format!("/msg bob x{f}y"));
        assert_eq!(
            alice.line(),
            "* not sent: control characters are not allowed"
        );
    }
    // A CR right before the LF is framing, not text.
    alice.send_raw(b"framed\r\n");
    assert_eq!(alice.line(), "> framed");
    // 960 bytes pass; 961 and a 1024-byte line are too long; 1025 ends the session.
    let max = "y".repeat(960);
    alice.send(&max);
    assert_eq!(alice.line(), format!("> {max}"));
    alice.send(&"y".repeat(961));
    assert_eq!(alice.line(), "* not sent: message too long");
    alice.send(&"y".repeat(1024));
    assert_eq!(alice.line(), "* not sent: message too long");
    // Nothing of the above reached bob but the relayed lines, none starts with `__`.
    bob.send("/ping");
    let seen = until(&mut bob, "* pong");
    assert_eq!(seen, ["alice: framed".to_string(), format!("alice: {max}")]);
    alice.send_raw(b"bad \xff utf8\n");
    assert_eq!(alice.rest(), ["Error: invalid UTF-8", "__quit__"]);
    assert_eq!(bob.line(), "* alice left");
    let mut carol = logged_in_all(&app, &["carol"]).remove(0);
    enter(&mut carol);
    assert_eq!(bob.line(), "* carol joined");
    carol.send(&"z".repeat(1025));
    assert_eq!(carol.rest(), ["Error: line too long", "__quit__"]);
    assert_eq!(bob.line(), "* carol left");
}

#[test]
fn abrupt_disconnects_leave_the_room_and_half_lines_are_never_relayed() {
    let app = spawn_app();
    let mut c = logged_in_all(&app, &["alice", "bob", "carol"]);
    let (mut carol, mut bob, mut alice) = (c.remove(2), c.remove(1), c.remove(0));
    enter(&mut bob);
    enter(&mut alice);
    enter(&mut carol);
    until(&mut bob, "* carol joined");
    // A half line, then FIN.
    alice.send_raw(b"half a li");
    alice.tcp.shutdown(Shutdown::Both).unwrap();
    drop(alice);
    // A reset (SO_LINGER 0).
    socket2::SockRef::from(&carol.tcp)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(carol);
    let mut left = vec![bob.line(), bob.line()];
    left.sort();
    assert_eq!(left, ["* alice left", "* carol left"]);
    bob.send("/who");
    assert_eq!(read_list(&mut bob), ["bob"]);
    // Both names are free again.
    let mut alice = logged_in(&app, "alice", PW);
    assert_eq!(enter(&mut alice), ["alice", "bob"]);
}

#[test]
fn fifty_members_at_once() {
    let app = spawn_app();
    let names: Vec<String> = (0..50).map(|i| format!("user{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut clients = logged_in_all(&app, &refs);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(enter(c).len(), i + 1);
    }
    clients[0].send("hello fifty");
    for (i, c) in clients.iter_mut().enumerate() {
        let want = if i == 0 {
            "> hello fifty"
        } else {
            "user00: hello fifty"
        };
        let before = until(c, want);
        assert_eq!(before.len(), 49 - i, "join notices before the message");
    }
    clients[49].send("/who");
    assert_eq!(read_list(&mut clients[49]), names);
}

#[test]
fn chat_works_over_tls_and_a_stalled_tls_member_blocks_nobody() {
    use dccn_auth::tls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    let mut files = None;
    let app = spawn_app_with(
        |c| {
            let dir = c.db_path.parent().unwrap().to_path_buf();
            let made = tls::ensure_self_signed(&dir, "127.0.0.1").unwrap();
            files = Some(made.files.clone());
            c.tls = Some(made.files);
            c.chat = ChatLimits {
                rate: 100_000.0,
                burst: 100_000,
                queue: 64,
                max_members: 8,
            };
        },
        |_| {},
    );
    let ca = files.unwrap().cert;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connect = || {
        let tcp = std::net::TcpStream::connect(app.addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let stream = rustls::StreamOwned::new(conn, tcp.try_clone().unwrap());
        TestClient::over(Box::new(stream), tcp)
    };
    let mut clients: Vec<TestClient> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            let mut c = connect();
            c.expect_greeting();
            c.register(n, PW);
            c.login_ok(n, PW);
            enter(&mut c);
            c
        })
        .collect();
    let (_carol, mut bob, mut alice) = (clients.remove(2), clients.remove(1), clients.remove(0));
    assert_eq!(alice.line(), "* bob joined");
    assert_eq!(alice.line(), "* carol joined");
    assert_eq!(bob.line(), "* carol joined");
    // Carol never reads again; alice and bob talk on until carol is dropped.
    let text = "t".repeat(900);
    let mut dropped = false;
    let mut last_sent = 0;
    for k in 0..3000 {
        alice.send(&format!("{k} {text}"));
        last_sent = k;
        let echo = alice.line();
        if echo == "* carol left" {
            dropped = true;
            break;
        }
        assert_eq!(echo, format!("> {k} {text}"));
        assert_eq!(bob.line(), format!("alice: {k} {text}"));
    }
    assert!(dropped, "the stalled TLS member was never dropped");
    // The overflowing line was the one before: its echo came before the notice.
    let k = last_sent;
    assert_eq!(alice.line(), format!("> {k} {text}"));
    assert_eq!(bob.line(), "* carol left");
    assert_eq!(bob.line(), format!("alice: {k} {text}"));
    bob.send("/msg alice still here");
    assert_eq!(alice.line(), "[private] bob: still here");
    // Back to lockstep over the same TLS connection after the writer is gone.
    bob.send("/leave");
    assert_eq!(
        until(&mut bob, "__endchat__"),
        ["[private to alice] still here"]
    );
    assert_eq!(bob.expect_prompt("__type__"), [USER_MENU]);
    bob.send("whoami");
    assert_eq!(bob.expect_prompt("__type__"), ["You are bob", USER_MENU]);
    bob.quit();
    assert_eq!(alice.line(), "* bob left");
}

#[test]
fn the_scripted_client_chats_from_stdin_to_stdout() {
    let app = spawn_app();
    let mut bob = logged_in_all(&app, &["bob", "alice"]).remove(0);
    enter(&mut bob);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run_client"));
    cmd.args([
        "--port",
        &app.addr.port().to_string(),
        "chat",
        "--user",
        "alice",
        "--password-stdin",
    ]);
    // Alice says hello, whispers, then leaves; bob answers in between.
    let bob_side = thread::spawn(move || {
        assert_eq!(bob.line(), "* alice joined");
        assert_eq!(bob.line(), "alice: hello from a script");
        assert_eq!(bob.line(), "[private] alice: psst");
        assert_eq!(bob.line(), "* alice left");
        bob
    });
    let run = run_with_deadline(
        cmd,
        &format!("{PW}\nhello from a script\n/msg bob psst\n"),
        Duration::from_secs(20),
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let out: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        out,
        [
            "* members: 2",
            "* member: alice",
            "* member: bob",
            "> hello from a script",
            "[private to bob] psst",
        ]
    );
    bob_side.join().unwrap();
}

#[test]
fn run_bench_chat_mode_reports_every_delivery() {
    let app = spawn_app();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run_bench"));
    cmd.args([
        "--addr",
        &app.addr.to_string(),
        "--password-stdin",
        "--mode",
        "chat",
        "--conns",
        "4",
        "--rate",
        "10",
        "--secs",
        "0.5",
        "--json",
    ]);
    let run = run_with_deadline(cmd, &format!("{PW}\n"), Duration::from_secs(30));
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let json = run.stdout.trim();
    assert!(
        json.starts_with("{\"mode\":\"chat\",\"members\":4,"),
        "{json}"
    );
    // Every accepted message reached the 3 other members.
    let field = |name: &str| -> u64 {
        let at = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        json[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("accepted") > 0, "{json}");
    assert_eq!(field("delivered"), field("accepted") * 3, "{json}");
    assert_eq!(field("errors"), 0, "{json}");
}

#[test]
fn the_server_refuses_a_queue_smaller_than_members_plus_eight() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path().join("users.db"));
    config.chat = ChatLimits {
        max_members: 64,
        queue: 71,
        ..ChatLimits::default()
    };
    let err = dccn_auth::server::Server::bind(&config)
        .err()
        .expect("a queue of 71 for 64 members must be refused");
    assert!(
        err.to_string().contains("--chat-queue 71 is too small"),
        "{err}"
    );
    config.chat.queue = 72;
    assert!(dccn_auth::server::Server::bind(&config).is_ok());
}

#[test]
fn a_silent_member_times_out_and_the_others_hear_it_left() {
    let mut app = spawn_app_with(|c| c.session_timeout = Duration::from_secs(1), |_| {});
    let mut c = logged_in_all(&app, &["alice", "bob"]);
    let (mut bob, mut alice) = (c.remove(1), c.remove(0));
    enter(&mut alice);
    enter(&mut bob);
    assert_eq!(alice.line(), "* bob joined");
    // Bob keeps his session alive with /ping (any line resets the deadline).
    let mut heard = Vec::new();
    for _ in 0..20 {
        bob.send("/ping");
        let l = bob.line();
        if l == "* alice left" {
            break;
        }
        heard.push(l);
        thread::sleep(Duration::from_millis(300));
    }
    assert!(heard.iter().all(|l| l == "* pong"), "{heard:?}");
    assert_eq!(alice.rest(), ["Error: timed out", "__quit__"]);
    // A server shutdown reaches a member in chat mode too.
    assert_eq!(app.handle.shutdown(Duration::from_secs(5)), 0);
    let rest = bob.rest();
    assert_eq!(
        rest[rest.len() - 2..],
        ["Error: server shutting down", "__quit__"],
        "{rest:?}"
    );
}

#[test]
fn the_scripted_client_chats_over_tls() {
    let mut cert = None;
    let app = spawn_app_with(
        |c| {
            let dir = c.db_path.parent().unwrap().to_path_buf();
            let made = dccn_auth::tls::ensure_self_signed(&dir, "127.0.0.1").unwrap();
            cert = Some(made.files.cert.clone());
            c.tls = Some(made.files);
        },
        |_| {},
    );
    let cert = cert.unwrap();
    let run_client = |args: &[&str], input: String| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run_client"));
        cmd.args(["--port", &app.addr.port().to_string(), "--ca"])
            .arg(&cert)
            .args(["--server-name", "localhost"])
            .args(args);
        run_with_deadline(cmd, &input, Duration::from_secs(20))
    };
    let reg = run_client(
        &["register", "--user", "alice", "--password-stdin"],
        format!("{PW}\n"),
    );
    assert_eq!(reg.code, 0, "{}", reg.stderr);
    let run = run_client(
        &["chat", "--user", "alice", "--password-stdin"],
        format!("{PW}\nover tls\n/who\n"),
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "* members: 1",
            "* member: alice",
            "> over tls",
            "* members: 1",
            "* member: alice"
        ]
    );
}
