//! `run_client` end to end: the built binary against the real server (started
//! in-process on a free port), against small fake servers that follow the
//! protocol in their own words, and, for the interactive mode, inside a
//! pseudo-terminal. Every child process runs under a deadline; everything talks
//! to 127.0.0.1 only.

use crate::child;
use crate::pty::PtyChild;

use child::{run_with_deadline, Run};
use dccn_auth::config::ServerConfig;
use dccn_auth::crypto;
use dccn_auth::server::{Server, ServerHandle};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const CLIENT: &str = env!("CARGO_BIN_EXE_run_client");
/// No client run in these tests should come near this.
const DEADLINE: Duration = Duration::from_secs(30);
const GOOD: &str = "Passw0rdDemo";

struct TestServer {
    handle: ServerHandle,
    _dir: TempDir,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = ServerConfig {
            port: 0,
            db_path: dir.path().join("users.db"),
            ..Default::default()
        };
        tweak(&mut cfg);
        let handle = Server::bind(&cfg).expect("bind").spawn();
        TestServer { handle, _dir: dir }
    }

    fn port(&self) -> u16 {
        self.handle.addr().port()
    }
}

/// A `run_client` command with no host or port from the environment.
fn client_command() -> Command {
    let mut cmd = Command::new(CLIENT);
    cmd.env_remove("DCCN_HOST").env_remove("DCCN_PORT");
    cmd
}

fn run_command(cmd: Command, stdin: &str) -> Run {
    run_with_deadline(cmd, stdin, DEADLINE)
}

/// `run_client --host 127.0.0.1 --port <port> <args...>` with `stdin`.
fn client(port: u16, args: &[&str], stdin: &str) -> Run {
    let mut cmd = client_command();
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args);
    run_command(cmd, stdin)
}

/// A scripted action with `--password-stdin`.
fn act(port: u16, action: &str, user: &str, stdin: &str) -> Run {
    client(
        port,
        &[action, "--user", user, "--password-stdin"],
        &format!("{stdin}\n"),
    )
}

fn assert_run(run: &Run, code: i32, stdout: &str) {
    assert_eq!(run.code, code, "{run:#?}");
    assert_eq!(run.stdout, stdout, "{run:#?}");
}

// ---- scripted, against the real server ---------------------------------------

#[test]
fn register_then_taken() {
    let s = TestServer::start();
    assert_run(
        &act(s.port(), "register", "alice", GOOD),
        0,
        "User successfully registered!\n",
    );
    assert_run(
        &act(s.port(), "register", "alice", GOOD),
        1,
        "Username already taken, try something else\n",
    );
}

#[test]
fn register_refused_by_the_rules_stops_at_once() {
    let s = TestServer::start();
    let run = act(s.port(), "register", "bob", "short");
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("Password is invalid"), "{run:#?}");
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    let run = act(s.port(), "register", "bad name!", GOOD);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("Username is invalid"), "{run:#?}");
}

#[test]
fn login_ok_wrong_password_unknown_user() {
    let s = TestServer::start();
    assert_eq!(act(s.port(), "register", "carol", GOOD).code, 0);
    assert_run(
        &act(s.port(), "login", "carol", GOOD),
        0,
        "Successfully login\nAccess granted!\n",
    );
    assert_run(
        &act(s.port(), "login", "carol", "Wr0ngPassword"),
        1,
        "User or password incorrect\n",
    );
    assert_run(
        &act(s.port(), "login", "nobody", GOOD),
        1,
        "User or password incorrect\n",
    );
}

#[test]
fn change_password_then_only_the_new_one_works() {
    let s = TestServer::start();
    assert_eq!(act(s.port(), "register", "dave", GOOD).code, 0);
    let new = "N3wPassword";
    assert_run(
        &act(
            s.port(),
            "change-password",
            "dave",
            &format!("{GOOD}\r\n{new}"),
        ),
        0,
        "Password successfully changed\n",
    );
    assert_eq!(act(s.port(), "login", "dave", new).code, 0);
    assert_eq!(act(s.port(), "login", "dave", GOOD).code, 1);
    // A wrong current password is refused before anything changes.
    let run = act(
        s.port(),
        "change-password",
        "dave",
        &format!("{GOOD}\nAn0therOne"),
    );
    assert_eq!(run.code, 1, "{run:#?}");
    // A new password breaking the rule is refused (once, no retry).
    let run = act(s.port(), "change-password", "dave", &format!("{new}\nweak"));
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("Password is invalid"), "{run:#?}");
    assert_eq!(act(s.port(), "login", "dave", new).code, 0);
}

#[test]
fn delete_account_then_login_fails() {
    let s = TestServer::start();
    assert_eq!(act(s.port(), "register", "erin", GOOD).code, 0);
    assert_run(
        &act(s.port(), "delete-account", "erin", "Wr0ngPassword"),
        1,
        "User or password incorrect\n",
    );
    assert_run(
        &act(s.port(), "delete-account", "erin", GOOD),
        0,
        "Your account was removed from system\n",
    );
    assert_eq!(act(s.port(), "login", "erin", GOOD).code, 1);
}

#[test]
fn connection_refused_is_exit_2_with_one_clear_line() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let run = act(port, "login", "alice", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        run.stderr,
        format!(
            "run_client: cannot connect to 127.0.0.1:{port}: connection refused (is run_server running?)\n"
        )
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn usage_errors_are_exit_2() {
    let s = TestServer::start();
    let p = s.port();
    // Missing --user.
    assert_eq!(client(p, &["login", "--password-stdin"], "x\n").code, 2);
    // No password on the command line, ever.
    assert_eq!(
        client(p, &["login", "--user", "a", "--password", GOOD], "").code,
        2
    );
    // Unknown subcommand.
    assert_eq!(client(p, &["frobnicate"], "").code, 2);
    // A name that would break the line framing.
    let run = act(p, "login", "alice\nquit", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("line break"), "{run:#?}");
    // --password-stdin with nothing on standard input.
    let run = client(p, &["login", "--user", "alice", "--password-stdin"], "");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("standard input"), "{run:#?}");
    // change-password needs two lines.
    let run = act(p, "change-password", "alice", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    for run in [
        client(p, &["login", "--user", "a", "--password-stdin"], ""),
        client(p, &["frobnicate"], ""),
    ] {
        assert!(!run.stderr.contains("panicked"), "{run:#?}");
    }
}

#[test]
fn help_on_every_subcommand() {
    for sub in ["register", "login", "change-password", "delete-account"] {
        let run = client(1, &[sub, "--help"], "");
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(run.stdout.contains("--password-stdin"), "{run:#?}");
        assert!(run.stdout.contains("--user"), "{run:#?}");
    }
    let run = client(1, &["--help"], "");
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Exit codes"), "{run:#?}");
}

#[test]
fn environment_sets_the_port_and_flags_win() {
    let s = TestServer::start();
    assert_eq!(act(s.port(), "register", "frank", GOOD).code, 0);
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let login = ["login", "--user", "frank", "--password-stdin"];
    let stdin = format!("{GOOD}\n");

    let mut cmd = client_command();
    cmd.env("DCCN_HOST", "127.0.0.1")
        .env("DCCN_PORT", s.port().to_string())
        .args(login);
    assert_eq!(run_command(cmd, &stdin).code, 0);

    let mut cmd = client_command();
    cmd.env("DCCN_PORT", dead_port.to_string())
        .args(login)
        .args(["--port", &s.port().to_string()]);
    assert_eq!(run_command(cmd, &stdin).code, 0);

    let mut cmd = client_command();
    cmd.env("DCCN_PORT", dead_port.to_string()).args(login);
    assert_eq!(run_command(cmd, &stdin).code, 2);
}

/// The value after `<name> ... = ` on the trace line that starts with `name`.
fn traced(trace: &str, name: &str) -> String {
    let line = trace
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{trace}"));
    line.rsplit(" = ").next().unwrap_or_default().to_string()
}

#[test]
fn trace_shows_the_exchange_and_correct_hashes_but_never_the_password() {
    let s = TestServer::start();
    let run = client(
        s.port(),
        &["--trace", "register", "--user", "gina", "--password-stdin"],
        &format!("{GOOD}\n"),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.contains("S> __username__\nC> gina\n"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("C> ******** (password, hidden)"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains(GOOD) && !run.stdout.contains(GOOD));

    let run = client(
        s.port(),
        &["login", "--user", "gina", "--password-stdin", "--trace"],
        &format!("{GOOD}\n"),
    );
    assert_run(&run, 0, "Successfully login\nAccess granted!\n");
    let trace = &run.stderr;
    let salt = traced(trace, "salt");
    let nonce = traced(trace, "nonce");
    assert!(
        crypto::is_token(&salt) && crypto::is_token(&nonce),
        "{trace}"
    );
    assert!(trace.contains(&format!("S> __nonce__:{salt}:{nonce}\n")));
    let verifier = crypto::verifier(&salt, GOOD);
    let response = crypto::response(&nonce, &verifier);
    // The verifier is not shown (password-equivalent, and the SCRAM password),
    // not even its ends; the hand check below computes them from the password.
    let ends = format!("{}...{}", &verifier[..8], &verifier[56..]);
    assert!(
        trace.contains("verifier = SHA256(salt + password)   (not shown"),
        "{trace}"
    );
    assert!(!trace.contains(&ends), "the verifier's ends: {trace}");
    assert!(!trace.contains(&verifier), "the whole verifier: {trace}");
    // The hand check never puts the password on a command line, and works:
    // run in bash with the password typed on its input, it prints the
    // verifier's ends and the response.
    assert!(!trace.contains("'password'"), "{trace}");
    let check: String = trace
        .lines()
        .skip_while(|l| !l.contains("read -rs pw"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    let mut bash = Command::new("bash");
    bash.args(["-c", &check]);
    let by_hand = run_command(bash, &format!("{GOOD}\n"));
    assert_eq!(
        by_hand.stdout,
        format!("{ends}\n{response}  -\n"),
        "{check}\n{by_hand:#?}"
    );
    assert!(
        trace.contains(&format!("response = SHA256(nonce + verifier) = {response}")),
        "{trace}"
    );
    assert!(trace.contains(&format!("C> {response}\n")), "{trace}");
    assert!(trace.contains("sha256sum"), "{trace}");
    assert!(trace.contains("S> Access granted!\n"), "{trace}");
    assert!(!trace.contains(GOOD) && !run.stdout.contains(GOOD));
}

// ---- scripted, against other servers that follow the protocol ----------------

/// One connection of a hand-written server, speaking CR LF to show the client
/// does not depend on our server's line endings.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Peer {
    fn say(&mut self, lines: &[&str]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        self.writer
            .write_all(text.as_bytes())
            .expect("fake server write");
    }

    fn hear(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("fake server read");
        line.trim_end_matches(['\r', '\n']).to_string()
    }
}

/// Serves one connection on a free port with `script`.
fn fake_server(script: impl FnOnce(&mut Peer) + Send + 'static) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut peer = Peer {
            reader: BufReader::new(sock.try_clone().expect("clone")),
            writer: sock,
        };
        script(&mut peer);
    });
    (port, handle)
}

#[test]
fn login_works_against_another_server_with_other_wording() {
    let salt = "00112233445566778899aabbccddeeff";
    let nonce = "ffeeddccbbaa99887766554433221100";
    let (port, server) = fake_server(move |p| {
        p.say(&[
            "Welcome to Zed's auth box",
            "Pick: login | register | quit",
            "__type__",
        ]);
        assert_eq!(p.hear(), "login");
        p.say(&["__username__"]);
        assert_eq!(p.hear(), "zed");
        p.say(&[
            &format!("__nonce__:{salt}:{nonce}"),
            "(prove it)",
            "__password__",
        ]);
        let expected = crypto::response(nonce, &crypto::verifier(salt, GOOD));
        assert_eq!(p.hear(), expected);
        p.say(&[
            "Successfully login",
            "Access granted!",
            "Hello zed, what now?",
            "__type__",
        ]);
        assert_eq!(p.hear(), "quit");
        p.say(&["bye", "__quit__"]);
    });
    let run = act(port, "login", "zed", GOOD);
    assert_run(&run, 0, "Successfully login\nAccess granted!\n");
    server.join().expect("fake server saw the right dialogue");
}

#[test]
fn server_error_line_is_exit_2_and_store_failure_is_exit_1() {
    let (port, server) = fake_server(|p| p.say(&["Error: server busy", "__quit__"]));
    let run = act(port, "login", "zed", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        run.stderr,
        "run_client: the server ended the session: server busy\n"
    );
    server.join().expect("fake server");

    let (port, server) = fake_server(|p| {
        p.say(&["menu", "__type__"]);
        assert_eq!(p.hear(), "register");
        p.say(&["__username__"]);
        assert_eq!(p.hear(), "zed");
        p.say(&["Server error, try again later", "menu", "__type__"]);
        assert_eq!(p.hear(), "quit");
        p.say(&["__quit__"]);
    });
    assert_run(
        &act(port, "register", "zed", GOOD),
        1,
        "Server error, try again later\n",
    );
    server.join().expect("fake server");
}

#[test]
fn protocol_violations_are_exit_2() {
    // A line longer than the protocol allows.
    let (port, _server) = fake_server(|p| p.say(&[&"x".repeat(5000), "__type__"]));
    let run = act(port, "login", "zed", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("longer than 1024 bytes"), "{run:#?}");
    // A malformed challenge.
    let (port, _server) = fake_server(|p| {
        p.say(&["__type__"]);
        p.hear();
        p.say(&["__username__"]);
        p.hear();
        p.say(&["__nonce__:nothex:nothex", "__password__"]);
        p.hear();
    });
    let run = act(port, "login", "zed", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("malformed challenge"), "{run:#?}");
}

#[test]
fn a_silent_server_times_out() {
    let (port, _server) = fake_server(|p| {
        // Connected, then nothing: hold the socket open past the client's timeout.
        thread::sleep(Duration::from_secs(4));
        p.say(&[]);
    });
    let started = Instant::now();
    let run = client(
        port,
        &[
            "--timeout",
            "1",
            "login",
            "--user",
            "zed",
            "--password-stdin",
        ],
        "x\n",
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("sent nothing for 1 s"), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

// ---- interactive, in a pseudo-terminal ----------------------------------------

fn interactive(port: u16) -> PtyChild {
    let mut cmd = client_command();
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    PtyChild::spawn(cmd)
}

#[test]
fn interactive_register_prompts_and_hides_the_password() {
    let s = TestServer::start();
    let secret = "Hidd3nSecret";
    let mut pty = interactive(s.port());
    pty.expect("Connected to server");
    pty.expect(">> ");
    pty.type_line("register");
    pty.expect("Username: ");
    pty.type_line("hana");
    pty.expect("Password: ");
    pty.type_hidden(secret);
    pty.expect("Repeat password");
    pty.expect("Password: ");
    pty.type_hidden(secret);
    pty.expect("User successfully registered!");
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.text());
    assert!(!pty.text().contains(secret), "echoed:\n{}", pty.text());
    // The typed password is the one registered.
    assert_eq!(act(s.port(), "login", "hana", secret).code, 0);
}

#[test]
fn interactive_login_then_ctrl_d_quits_cleanly() {
    let s = TestServer::start();
    assert_eq!(act(s.port(), "register", "ivan", GOOD).code, 0);
    let mut pty = interactive(s.port());
    pty.expect(">> ");
    pty.type_line("login");
    pty.expect("Username: ");
    pty.type_line("ivan");
    pty.expect("Password: ");
    pty.type_hidden(GOOD);
    pty.expect("Access granted!");
    pty.expect(">> ");
    pty.type_line("whoami");
    pty.expect("You are ivan");
    pty.expect(">> ");
    pty.type_keys("\x04"); // Ctrl-D
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.text());
    assert!(!pty.text().contains(GOOD), "echoed:\n{}", pty.text());
}

#[test]
fn ctrl_c_at_the_password_prompt_restores_echo() {
    let s = TestServer::start();
    let mut pty = interactive(s.port());
    pty.expect(">> ");
    pty.type_line("login");
    pty.expect("Username: ");
    pty.type_line("judy");
    pty.expect("Password: ");
    pty.wait_for_echo_off();
    pty.type_keys("Half");
    pty.type_keys("\x03"); // Ctrl-C
    assert_eq!(pty.wait().code(), Some(130), "{}", pty.text());
    assert!(pty.echo_on(), "echo left off after Ctrl-C");
    assert!(!pty.text().contains("Half"), "{}", pty.text());
}

#[test]
fn an_idle_client_hears_at_once_and_its_next_command_goes_over_a_new_connection() {
    let s = TestServer::start_with(|c| c.login_timeout = Duration::from_secs(1));
    let mut pty = interactive(s.port());
    pty.expect(">> ");
    // Nothing typed: the server's deadline passes and the person is told at once.
    pty.expect("the server ended the session while you were idle (timed out)");
    pty.expect("it goes over a new connection");
    pty.type_line("register");
    pty.expect("(reconnected to the server)");
    pty.expect("Username: ");
    pty.type_line("ivy");
    pty.expect("Password: ");
    pty.type_hidden(GOOD);
    pty.expect("Password: ");
    pty.type_hidden(GOOD);
    pty.expect("User successfully registered!");
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.text());
    // The typed command was not lost: the user exists.
    let run = act(s.port(), "login", "ivy", GOOD);
    assert_run(&run, 0, "Successfully login\nAccess granted!\n");
}

#[test]
fn a_logged_in_client_whose_session_ends_is_back_at_a_new_main_menu() {
    let s = TestServer::start_with(|c| c.session_timeout = Duration::from_secs(1));
    let run = act(s.port(), "register", "jon", GOOD);
    assert_eq!(run.code, 0, "{run:?}");
    let mut pty = interactive(s.port());
    pty.expect(">> ");
    pty.type_line("login");
    pty.expect("Username: ");
    pty.type_line("jon");
    pty.expect("Password: ");
    pty.type_hidden(GOOD);
    pty.expect("Access granted!");
    pty.expect(">> ");
    pty.expect("you are logged out: a new connection follows.");
    pty.expect("Connected to server");
    pty.expect(">> ");
    // The main menu of the new connection: whoami is not a command there.
    pty.type_line("whoami");
    pty.expect("Unrecognized type");
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.text());
}

// ---- a hostile server (issue 11) ---------------------------------------------

/// Sets the window title, clears the screen, overwrites with CR.
const HOSTILE: &str = "\x1b]0;owned\x07\x1b[2J\rfake prompt\u{9b}";
const HOSTILE_SHOWN: &str = r"\u{1b}]0;owned\u{7}\u{1b}[2J\rfake prompt\u{9b}";

#[test]
fn server_text_reaches_the_terminal_with_controls_escaped() {
    // A refusal text (printed on stdout) and a fatal reason (stderr), scripted.
    let (port, server) = fake_server(|p| {
        p.say(&[HOSTILE, "__type__"]);
        assert_eq!(p.hear(), "register");
        p.say(&["__username__"]);
        p.hear();
        p.say(&["__password__"]);
        p.hear();
        p.say(&["Repeat password", "__password__"]);
        p.hear();
        p.say(&[&format!("Password is invalid: {HOSTILE}"), "__password__"]);
    });
    let run = act(port, "register", "zed", GOOD);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        format!("Password is invalid: {HOSTILE_SHOWN}\n")
    );
    let _ = server.join();
    let (port, server) = fake_server(|p| p.say(&[&format!("Error: {HOSTILE}"), "__quit__"]));
    let run = act(port, "login", "zed", GOOD);
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(
        run.stderr,
        format!("run_client: the server ended the session: {HOSTILE_SHOWN}\n")
    );
    let _ = server.join();
    // The trace shows server lines escaped too.
    let (port, server) = fake_server(|p| p.say(&[HOSTILE, "__quit__"]));
    let run = client(
        port,
        &["--trace", "login", "--user", "zed", "--password-stdin"],
        GOOD,
    );
    assert!(!run.stderr.contains('\x1b'), "{run:#?}");
    assert!(
        run.stderr.contains(&format!("S> {HOSTILE_SHOWN}")),
        "{run:#?}"
    );
    let _ = server.join();

    // Display lines in the interactive mode, on a real terminal.
    let (port, server) = fake_server(|p| {
        p.say(&[HOSTILE, "__type__"]);
        assert_eq!(p.hear(), "quit");
        p.say(&["__quit__"]);
    });
    let mut pty = interactive(port);
    pty.expect(HOSTILE_SHOWN);
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.text());
    assert!(!pty.text().contains('\x1b'), "{:?}", pty.text());
    let _ = server.join();
}

/// A fake server where the client says `chat` at the first `__type__` (after
/// logging `zed` in, when `login_first`): it sends a room line carrying
/// [`HOSTILE`], then expects `ends_with` (`/leave` or `/quit`) and ends.
fn hostile_room(login_first: bool, ends_with: &'static str) -> (u16, JoinHandle<()>) {
    fake_server(move |p| {
        p.say(&["menu", "__type__"]);
        if login_first {
            let salt = "00112233445566778899aabbccddeeff";
            let nonce = "ffeeddccbbaa99887766554433221100";
            assert_eq!(p.hear(), "login");
            p.say(&["__username__"]);
            assert_eq!(p.hear(), "zed");
            p.say(&[&format!("__nonce__:{salt}:{nonce}"), "__password__"]);
            p.hear();
            p.say(&["Successfully login", "Access granted!", "menu", "__type__"]);
        }
        assert_eq!(p.hear(), "chat");
        let hostile = format!("eve: {HOSTILE}");
        p.say(&[
            "welcome",
            "__chat__",
            "* members: 1",
            "* member: zed",
            &hostile,
        ]);
        assert_eq!(p.hear(), ends_with);
        if ends_with == "/leave" {
            p.say(&["__endchat__", "menu", "__type__"]);
            assert_eq!(p.hear(), "quit");
        }
        p.say(&["__quit__"]);
    })
}

#[test]
fn chat_lines_from_a_hostile_server_reach_the_terminal_with_controls_escaped() {
    // Scripted chat: room lines on standard output.
    let (port, server) = hostile_room(true, "/quit");
    let run = act(port, "chat", "zed", GOOD);
    assert_run(
        &run,
        0,
        &format!("* members: 1\n* member: zed\neve: {HOSTILE_SHOWN}\n"),
    );
    server.join().expect("the fake server's script");
    // Interactive chat: printed above the `chat> ` prompt by the line editor.
    let (port, server) = hostile_room(false, "/leave");
    let mut pty = interactive(port);
    pty.expect(">> ");
    pty.type_line("chat");
    pty.expect_line(&format!("eve: {HOSTILE_SHOWN}"));
    pty.type_line("/leave");
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.screen());
    // The line editor writes escape sequences of its own; none of these.
    let raw = pty.text();
    for sequence in ["\x1b]0;owned", "\x1b[2J", "\rfake", "\u{9b}"] {
        assert!(!raw.contains(sequence), "{sequence:?} in {raw:?}");
    }
    server.join().expect("the fake server's script");
}

const NO_CHALLENGE: &str = "run_client: protocol error: the server asked for the password \
     without a challenge (__password__ with no __nonce__ before it); the password was not sent\n";

/// A fake server that logs `zed` in with a proper challenge (when `login_first`)
/// and then, after `command`, asks for the password with a bare `__password__`.
/// Returns what it heard after that (nothing, if the client kept its password).
fn skipping_challenge(command: &'static str, login_first: bool) -> (u16, JoinHandle<()>) {
    fake_server(move |p| {
        let salt = "00112233445566778899aabbccddeeff";
        let nonce = "ffeeddccbbaa99887766554433221100";
        p.say(&["menu", "__type__"]);
        if login_first {
            assert_eq!(p.hear(), "login");
            p.say(&["__username__"]);
            assert_eq!(p.hear(), "zed");
            p.say(&[&format!("__nonce__:{salt}:{nonce}"), "__password__"]);
            let expected = crypto::response(nonce, &crypto::verifier(salt, GOOD));
            assert_eq!(p.hear(), expected);
            p.say(&["Successfully login", "Access granted!", "menu", "__type__"]);
        }
        assert_eq!(p.hear(), command);
        if command == "login" {
            p.say(&["__username__"]);
            assert_eq!(p.hear(), "zed");
        }
        p.say(&["__password__"]);
        // The client must hang up rather than answer.
        let mut rest = String::new();
        let _ = p.reader.read_to_string(&mut rest);
        assert!(!rest.contains(GOOD), "the password was sent: {rest:?}");
        assert_eq!(rest, "", "the client answered a bare __password__");
    })
}

#[test]
fn a_bare_password_prompt_where_a_challenge_is_due_is_a_protocol_error() {
    // Scripted: login, and the re-authentication of change_password / delete_account.
    for (action, command, login_first, stdin) in [
        ("login", "login", false, format!("{GOOD}\n")),
        (
            "change-password",
            "change_password",
            true,
            format!("{GOOD}\nN3wPassword\nN3wPassword\n"),
        ),
        (
            "delete-account",
            "delete_account",
            true,
            format!("{GOOD}\n"),
        ),
    ] {
        let (port, server) = skipping_challenge(command, login_first);
        let run = client(port, &[action, "--user", "zed", "--password-stdin"], &stdin);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (2, NO_CHALLENGE),
            "{action}: {run:#?}"
        );
        server
            .join()
            .unwrap_or_else(|_| panic!("{action}: the fake server saw a password"));
    }
    // Interactive: the person is not even asked for the password.
    for (command, login_first) in [
        ("login", false),
        ("delete_account", true),
        ("change_password", true),
    ] {
        let (port, server) = skipping_challenge(command, login_first);
        let mut pty = interactive(port);
        if login_first {
            pty.expect(">> ");
            pty.type_line("login");
            pty.expect("Username: ");
            pty.type_line("zed");
            pty.expect("Password: ");
            pty.type_hidden(GOOD);
        }
        pty.expect(">> ");
        pty.type_line(command);
        if command == "login" {
            pty.expect("Username: ");
            pty.type_line("zed");
        }
        pty.expect("without a challenge");
        assert_eq!(pty.wait().code(), Some(2), "{command}: {}", pty.text());
        let after = pty.text();
        let after = &after[after.rfind(command).unwrap()..];
        assert!(
            !after.contains("Password: "),
            "{command}: asked anyway: {after}"
        );
        server
            .join()
            .unwrap_or_else(|_| panic!("{command}: the fake server saw a password"));
    }
}
