//! The interactive client's chat room as a person uses it: the real
//! `run_client` binary in a pseudo-terminal (its rustyline editor needs a real
//! terminal), the real server in-process on a SQLite file, and a second member
//! as a protocol client in the same room. Lines from the room must appear
//! above the `chat> ` prompt while the person is typing, without losing what
//! was typed.

use crate::chat::enter;
use crate::common::*;
use crate::pty::PtyChild;
use dccn_auth::config::CHAT_MAX_TEXT_BYTES;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_run_client");
const PW: &str = "Passw0rdChat";

/// `run_client` at 127.0.0.1:`port`, interactive, in a pty.
fn interactive(port: u16) -> PtyChild {
    let mut cmd = Command::new(CLIENT);
    cmd.env_remove("DCCN_HOST").env_remove("DCCN_PORT").args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    PtyChild::spawn(cmd)
}

/// At the first `>> `: logs `name` in as a person types it (the command word,
/// the name, the password at the hidden prompt); ends at the logged-in `>> `.
fn log_in_at_the_terminal(pty: &mut PtyChild, name: &str, password: &str) {
    pty.expect(">> ");
    pty.type_line("login");
    pty.expect("Username: ");
    pty.type_line(name);
    pty.expect("Password: ");
    pty.type_hidden(password);
    pty.expect_line("Access granted!");
    pty.expect(USER_MENU);
    pty.expect(">> ");
}

#[test]
fn a_person_chats_in_a_terminal_while_room_lines_arrive_above_the_half_typed_line() {
    let app = spawn_app();
    app.register("alice", PW);
    app.register("bob", PW);
    let mut bob = logged_in(&app, "bob", PW);
    let mut pty = interactive(app.addr.port());
    log_in_at_the_terminal(&mut pty, "alice", PW);
    assert!(!pty.text().contains(PW), "the password was echoed");

    // alice enters first and sees herself; bob's entry is announced to her.
    pty.type_line("chat");
    pty.expect_line("* members: 1");
    pty.expect_line("* member: alice");
    pty.expect("chat> ");
    assert_eq!(enter(&mut bob), ["alice", "bob"]);
    pty.expect_line("* bob joined");

    // A line arrives while alice has typed "hal" without Enter: it is shown,
    // and the editor redraws the prompt with "hal" after it.
    pty.type_keys("hal");
    // Echoed after a redraw of the prompt that ends with a cursor move, which
    // the matcher drops: on the screen it stands after `chat> `.
    pty.expect("hal");
    bob.send("hi alice");
    assert_eq!(bob.line(), "> hi alice");
    pty.expect_line("bob: hi alice");
    pty.expect("chat> hal");
    // The half-typed line was kept: finishing it sends the whole of it.
    pty.type_line("lo");
    assert_eq!(bob.line(), "alice: hallo");
    pty.expect_line("> hallo");

    // Text beyond ASCII goes out as typed; a line over the text limit is
    // kept back by the client (the server would refuse it), and says so.
    pty.type_line("grüß dich, 日本");
    assert_eq!(bob.line(), "alice: grüß dich, 日本");
    pty.expect_line("> grüß dich, 日本");
    pty.type_line(&"y".repeat(CHAT_MAX_TEXT_BYTES + 1));
    pty.expect(&format!("(not sent: {} bytes", CHAT_MAX_TEXT_BYTES + 1));
    pty.type_line("short again");
    assert_eq!(bob.line(), "alice: short again");
    pty.expect_line("> short again");

    // bob cannot make a bidi override reach alice's terminal: the server
    // refuses it, and the next line shows that nothing came before it.
    bob.send("/msg alice x\u{202e}y");
    assert_eq!(bob.line(), "* not sent: control characters are not allowed");
    bob.send("after the refusal");
    assert_eq!(bob.line(), "> after the refusal");
    pty.expect_line("bob: after the refusal");
    assert!(!pty.text().contains('\u{202e}'), "{:?}", pty.text());
    assert!(!pty.screen().contains("[private]"), "{}", pty.screen());

    // /leave: back at the logged-in menu, in lockstep again.
    pty.type_line("/leave");
    assert_eq!(bob.line(), "* alice left");
    pty.expect_line(USER_MENU);
    pty.expect(">> ");
    pty.type_line("whoami");
    pty.expect_line("You are alice");
    pty.expect(">> ");

    // Back in again: a new editor, and the room still reaches it.
    pty.type_line("chat");
    pty.expect_line("* members: 2");
    pty.expect_line("* member: alice");
    pty.expect_line("* member: bob");
    assert_eq!(bob.line(), "* alice joined");
    bob.send("welcome back");
    assert_eq!(bob.line(), "> welcome back");
    pty.expect_line("bob: welcome back");
    pty.type_line("thanks");
    assert_eq!(bob.line(), "alice: thanks");
    pty.expect_line("> thanks");
    // Up arrow: the line typed before is there to send again.
    pty.type_keys("\x1b[A");
    pty.expect("thanks");
    pty.type_keys("\r");
    assert_eq!(bob.line(), "alice: thanks");
    pty.expect_line("> thanks");
    pty.type_line("/leave");
    assert_eq!(bob.line(), "* alice left");
    pty.expect_line(USER_MENU);
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.screen());
    bob.send("/quit");
    assert_eq!(bob.rest(), ["__quit__"]);
}

/// At the first `>> `: logs `name` in and enters the chat, alone in the room.
fn alone_in_the_chat(pty: &mut PtyChild, name: &str) {
    log_in_at_the_terminal(pty, name, PW);
    pty.type_line("chat");
    pty.expect_line("* members: 1");
    pty.expect_line(&format!("* member: {name}"));
    pty.expect("chat> ");
}

#[test]
fn ctrl_d_leaves_the_chat_and_ctrl_c_or_quit_end_the_client_at_once() {
    let app = spawn_app();
    app.register("alice", PW);
    // Ctrl-D is /leave: back at the logged-in menu.
    let mut pty = interactive(app.addr.port());
    alone_in_the_chat(&mut pty, "alice");
    pty.type_keys("\x04");
    pty.expect_line(USER_MENU);
    pty.expect(">> ");
    pty.type_line("quit");
    assert_eq!(pty.wait().code(), Some(0), "{}", pty.screen());
    // Ctrl-C and /quit end the session and the client, with nothing left to
    // press: the person asked for it.
    for keys in ["\x03", "/quit\r"] {
        let mut pty = interactive(app.addr.port());
        alone_in_the_chat(&mut pty, "alice");
        pty.type_keys(keys);
        assert_eq!(pty.wait().code(), Some(0), "{keys:?}: {}", pty.screen());
        assert!(
            !pty.screen().contains("press Enter"),
            "{keys:?}: {}",
            pty.screen()
        );
    }
}

#[test]
fn a_chat_the_server_ends_is_reported_at_once_with_its_reason() {
    let app = spawn_app_with(|c| c.session_timeout = Duration::from_secs(2), |_| {});
    app.register("alice", PW);
    let mut pty = interactive(app.addr.port());
    alone_in_the_chat(&mut pty, "alice");
    // Nothing typed: the server's timeout ends the session while the editor
    // waits for the person, who is told why and what to do.
    pty.expect("(the chat is over: the server ended the session: timed out; press Enter)");
    pty.type_line("");
    pty.expect_line("run_client: the server ended the session: timed out");
    assert_eq!(pty.wait().code(), Some(2), "{}", pty.screen());
}
