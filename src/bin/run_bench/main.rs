//! `run_bench`: load a server that speaks wire protocol v1 and report rate and
//! latency. Parses flags, reads the password, checks the server answers, runs
//! the benchmark (the work is in `loadgen.rs`, and `chat.rs` for the chat room) and prints the report.

use clap::Parser;
mod chat;
mod loadgen;

use chat::ChatBenchConfig;
use loadgen::{self as bench, BenchConfig, Mode};
use std::io::{BufRead, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Environment variable holding the password when --password-stdin is not given.
const PASSWORD_ENV: &str = "DCCN_BENCH_PASSWORD";

/// Exit code for a bad command line or a server that cannot be reached.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "run_bench",
    version,
    about = "Benchmark a password-authentication server speaking wire protocol v1.",
    long_about = "Benchmark a password-authentication server speaking wire protocol v1 \
        (docs/PROTOCOL.md): N connections, each a closed loop, for S seconds; then \
        rate, outcome counts and latency percentiles (p50/p90/p99/max).\n\n\
        Modes:\n  \
        login     connect, greeting, login (salt/nonce challenge), logout, quit\n  \
        login-scram  the same cycle with login_scram (SCRAM-SHA-256), server signature \
        checked; keys derived once per worker (PBKDF2 is the client's cost)\n  \
        session   log in once per connection, then `whoami` round trips\n  \
        register  one registration per connection, names <prefix><worker>x<n>\n  \
        idle      hold --hold greeted sessions open, run login cycles, then count \
        the held sessions still open\n  \
        connect   connect, greeting, quit: the bare cost of a connection, to state \
        login as a fraction of it (no password needed)\n  \
        chat      --conns members (accounts <prefix><i>x0, registered if missing) enter \
        the chat room; room messages at --rate per second in all, round-robin over the \
        members, for --secs; delivered lines/s and delivery latency at the receivers\n\n\
        The password is never a command-line argument: give it on stdin with \
        --password-stdin (one line) or in the environment variable DCCN_BENCH_PASSWORD. \
        In register mode it is the password of every account created.\n\n\
        Protocol violations (unexpected or error lines, I/O errors, timeouts) count as \
        errors, and the first 3 are printed to stderr; a refused login or a taken name \
        counts as failed. A progress line is shown on stderr once a second when it is \
        a terminal.",
    after_help = "Exit status: 0 when the run had no errors and at least one success, \
        1 when it had errors or no success, 2 for a usage error or a server that cannot \
        be reached.\n\n\
        Examples:\n  \
        echo Passw0rd1 | run_bench --addr 127.0.0.1:7886 --password-stdin --mode register --conns 1 --secs 0.01 --prefix u\n  \
        DCCN_BENCH_PASSWORD=Passw0rd1 run_bench --addr 127.0.0.1:7886 --mode login --conns 8 --secs 5 --user u0x0\n  \
        DCCN_BENCH_PASSWORD=Passw0rd1 run_bench --addr 127.0.0.1:7886 --mode idle --hold 500 --user u0x0 --json"
)]
struct Cli {
    /// Server address, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// What each connection does.
    #[arg(long, value_enum, default_value = "login")]
    mode: Mode,
    /// Concurrent connections (one worker thread each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    conns: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0, value_parser = parse_secs)]
    secs: f64,
    /// Account for login, session and idle modes.
    #[arg(long, default_value = "u0x0")]
    user: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Start of the usernames register mode creates: `<prefix><worker>x<n>`.
    #[arg(long, default_value = "b")]
    prefix: String,
    /// Idle mode: sessions to open and hold while the logins run.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    hold: u32,
    /// Seconds allowed for connecting and for each read or write.
    #[arg(long, default_value_t = 10.0, value_parser = parse_secs)]
    timeout: f64,
    /// Chat mode: room messages per second, all members together (the server's
    /// --chat-rate caps each member's share).
    #[arg(long, default_value_t = 50.0, value_parser = parse_secs)]
    rate: f64,
    /// Print one JSON line on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err(format!(
            "expected seconds above 0 and at most 86400, got {s:?}"
        )),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("run_bench: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let mut line = String::new();
    if from_stdin {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        if line.ends_with('\n') {
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
        }
        if line.is_empty() {
            return Err("--password-stdin: standard input gave no password".into());
        }
        Ok(line)
    } else {
        std::env::var(PASSWORD_ENV)
            .map_err(|_| format!("no password: use --password-stdin or set {PASSWORD_ENV}"))
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad --addr {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr:?} resolves to no address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let password = match (cli.mode, read_password(cli.password_stdin)) {
        (_, Ok(p)) => p,
        (Mode::Connect, Err(_)) => String::new(),
        (_, Err(e)) => return usage_error(&e),
    };
    let addr = match resolve(&cli.addr) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    let cfg = BenchConfig {
        addr,
        mode: cli.mode,
        conns: cli.conns as usize,
        duration: Duration::from_secs_f64(cli.secs),
        user: cli.user,
        password,
        prefix: cli.prefix,
        hold: cli.hold as usize,
        timeout: Duration::from_secs_f64(cli.timeout),
    };
    if let Err(e) = cfg.validate() {
        return usage_error(&e);
    }
    if cfg.mode == Mode::Chat {
        return run_chat(&cfg, cli.rate, cli.json);
    }
    if let Err(e) = bench::probe(&cfg) {
        return usage_error(&format!("cannot reach a protocol v1 server at {addr}: {e}"));
    }

    let report = bench::run(&cfg, std::io::stderr().is_terminal());
    if cli.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    if report.errors == 0 && report.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--mode chat`: the room's fan-out (see `chat.rs`).
fn run_chat(cfg: &BenchConfig, rate: f64, json: bool) -> ExitCode {
    let chat = ChatBenchConfig {
        addr: cfg.addr,
        members: cfg.conns,
        rate,
        duration: cfg.duration,
        password: cfg.password.clone(),
        prefix: cfg.prefix.clone(),
        timeout: cfg.timeout,
    };
    if let Err(e) = chat::validate(&chat) {
        return usage_error(&e);
    }
    if let Err(e) = bench::probe(cfg) {
        return usage_error(&format!(
            "cannot reach a protocol v1 server at {}: {e}",
            cfg.addr
        ));
    }
    match chat::run(&chat) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.table());
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("run_bench: {e}");
            ExitCode::from(1)
        }
    }
}
