//! `run_server`: parse the flags, start the server (or run an offline admin
//! command on the database), report, exit. The work is in the library.

use clap::{Parser, Subcommand};
use dccn_auth::config::{
    self, ChatLimits, RegistrationMode, ServerConfig, TlsFiles, MAX_LINE_BYTES,
};
use dccn_auth::new_account::{self, NewAccount, Storage};
use dccn_auth::proxy_protocol::{Cidr, TrustedProxies};
use dccn_auth::server::Server;
use dccn_auth::store::{self, Registration, Store};
use dccn_auth::tls;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Seconds sessions get to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

#[derive(Parser)]
#[command(
    name = "run_server",
    version,
    about = "Password authentication server (wire protocol v1, see docs/PROTOCOL.md).",
    long_about = "Password authentication server (wire protocol v1, see docs/PROTOCOL.md).\n\n\
        Thread per client over TCP; users are kept in the SQLite file given by --db, \
        table USERS (login, SHA-256(salt+password), salt). Every flag can also be set \
        by the environment variable shown. Log level: DCCN_LOG (error, warn, info, debug).",
    after_help = "Examples:\n  run_server                          serve on 127.0.0.1:7886 with ./users.db\n  \
        run_server --port 0 --db /tmp/t.db  serve on a free port\n  \
        run_server list-users               who is registered (name and salt)\n  \
        run_server delete-user alice        remove a user (offline)\n  \
        run_server migrate-scram --drop-classic --db users.db\n  \
                                            give every user SCRAM credentials, drop classic verifiers\n  \
        run_server --classic-login off      serve SCRAM logins only (after migrate-scram --drop-classic)\n  \
        run_server add-user alice           add a user (offline; asks the password twice)\n  \
        run_server copy-db --from users.db --to postgres://dccn@localhost/dccn\n                                      \
        move the SQLite users (and SCRAM rows) to PostgreSQL\n  \
        run_server --registration closed --metrics 127.0.0.1:9186\n                                      \
        accounts only by add-user; counters at http://127.0.0.1:9186/metrics"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "DCCN_HOST", default_value = config::DEFAULT_HOST)]
    host: String,
    /// Port to listen on (0 picks a free port; the address is printed).
    #[arg(long, env = "DCCN_PORT", default_value_t = config::DEFAULT_PORT)]
    port: u16,
    /// The store: an SQLite database file (created if missing), or a PostgreSQL
    /// URL (postgres://user:password@host:port/database) shared by several servers.
    #[arg(long, env = "DCCN_DB", default_value = config::DEFAULT_DB_PATH, global = true)]
    db: PathBuf,
    /// Listen backlog: connections waiting to be accepted.
    #[arg(long, env = "DCCN_BACKLOG", default_value_t = config::DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(i32).range(1..=65535))]
    backlog: i32,
    /// Sessions served at once; one more hears "Error: server busy".
    #[arg(long, env = "DCCN_MAX_SESSIONS", default_value_t = config::DEFAULT_MAX_SESSIONS,
          value_parser = parse_positive)]
    max_sessions: usize,
    /// Sessions served at once from one source address (IPv6: one /64), logged in
    /// or not; one more hears "Error: server busy". 0 turns this cap off.
    #[arg(long, env = "DCCN_MAX_SESSIONS_PER_ADDRESS",
          default_value_t = config::DEFAULT_MAX_SESSIONS_PER_ADDRESS)]
    max_sessions_per_address: usize,
    /// Seconds the part of a session before login may last in all (from connect,
    /// and again from logout, to "Access granted!"), however often the client replies.
    #[arg(long, env = "DCCN_LOGIN_GRACE", value_name = "SECS",
          default_value_t = config::DEFAULT_LOGIN_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    login_grace: u64,
    /// Session threads kept waiting for a next client (0: a new thread for every
    /// client, none kept).
    #[arg(long, env = "DCCN_IDLE_THREADS", default_value_t = config::MAX_IDLE_THREADS)]
    idle_threads: usize,
    /// Seconds a session thread waits for a next client before it exits.
    #[arg(long, env = "DCCN_IDLE_THREAD_SECS", value_name = "SECS",
          default_value_t = config::IDLE_THREAD_TIMEOUT.as_secs_f64())]
    idle_thread_secs: f64,
    /// Seconds to wait for each reply before login.
    #[arg(long, env = "DCCN_LOGIN_TIMEOUT", value_name = "SECS",
          default_value_t = config::DEFAULT_LOGIN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    login_timeout: u64,
    /// Seconds to wait for each reply once logged in.
    #[arg(long, env = "DCCN_SESSION_TIMEOUT", value_name = "SECS",
          default_value_t = config::DEFAULT_SESSION_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    session_timeout: u64,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "DCCN_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "DCCN_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate for localhost, 127.0.0.1 and --host,
    /// made at first start in the database's folder and reused later; its path and
    /// SHA-256 fingerprint are printed (give the file to clients: run_client --tls --ca).
    #[arg(long, env = "DCCN_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Chat: members in the room at once; one more hears "Chat is full, try again later".
    #[arg(long, env = "DCCN_CHAT_MAX_MEMBERS", value_name = "N",
          default_value_t = config::DEFAULT_CHAT_MAX_MEMBERS, value_parser = parse_positive)]
    chat_max_members: usize,
    /// Chat: lines per second each session may send (token refill rate).
    #[arg(long, env = "DCCN_CHAT_RATE", value_name = "R",
          default_value_t = config::DEFAULT_CHAT_RATE, value_parser = parse_rate)]
    chat_rate: f64,
    /// Chat: burst, the token bucket's size in lines.
    #[arg(long, env = "DCCN_CHAT_BURST", value_name = "B",
          default_value_t = config::DEFAULT_CHAT_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    chat_burst: u32,
    /// Chat: outbound queue per member in lines; a member whose queue would pass it
    /// is dropped ("Error: too slow"). At least --chat-max-members + 8.
    #[arg(long, env = "DCCN_CHAT_QUEUE", value_name = "N",
          default_value_t = config::DEFAULT_CHAT_QUEUE, value_parser = parse_positive)]
    chat_queue: usize,
    /// Classic (v1 salt/nonce) logins: "off" makes them always fail and stores no
    /// classic verifier at register and change_password (SCRAM only).
    #[arg(long, env = "DCCN_CLASSIC_LOGIN", value_name = "on|off", default_value = "on",
          value_parser = parse_on_off, global = true)]
    classic_login: bool,
    /// PBKDF2 iterations of new SCRAM credentials (register, change_password,
    /// migrate-scram) and of the answers to unknown users.
    #[arg(long, env = "DCCN_SCRAM_ITERATIONS", value_name = "N", global = true,
          default_value_t = config::DEFAULT_SCRAM_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(
              i64::from(config::SCRAM_MIN_ITERATIONS)..=i64::from(config::SCRAM_MAX_ITERATIONS)))]
    scram_iterations: u32,
    /// Who may create accounts: "open" (anyone, by register, under the
    /// per-address quota) or "closed" (register answers "Registration is closed";
    /// accounts are made offline with add-user).
    #[arg(long, env = "DCCN_REGISTRATION", value_name = "open|closed",
          default_value = "open", value_parser = parse_registration)]
    registration: RegistrationMode,
    /// Successful registrations per source address (IPv6: one /64) within 10
    /// minutes; past it, register answers "Too many registrations from your
    /// address, try again later". 0 turns the quota off.
    #[arg(long, env = "DCCN_MAX_REGISTRATIONS_PER_ADDRESS",
          default_value_t = config::DEFAULT_MAX_REGISTRATIONS_PER_ADDRESS)]
    max_registrations_per_address: usize,
    /// Serve GET /metrics (Prometheus text format) on this address, e.g.
    /// 127.0.0.1:9186. Off unless given. Keep it off public interfaces.
    #[arg(long, env = "DCCN_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// A load balancer's address or network (CIDR, e.g. 10.0.0.5 or 10.0.0.0/24)
    /// whose connections must start with a PROXY protocol header (v1 or v2) giving
    /// the client's real address; repeatable (the environment variable takes a
    /// comma-separated list). Nobody else can set an address this way.
    #[arg(
        long = "trusted-proxy",
        env = "DCCN_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    trusted_proxy: Vec<Cidr>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Offline administration of the database file (no server needs to run).
#[derive(Subcommand)]
enum Command {
    /// List registered users: name and salt (the verifier only with --show-hashes).
    ListUsers {
        /// Also print each stored verifier, SHA-256(salt+password). Treat it as a password.
        #[arg(long)]
        show_hashes: bool,
    },
    /// Delete a user from the database.
    DeleteUser {
        /// The exact (case-sensitive) username.
        name: String,
    },
    /// Give every user SCRAM-SHA-256 credentials, derived from the stored classic
    /// verifier (no password needed). Safe to run twice and beside a live server.
    MigrateScram {
        /// Then set USERS.password to NULL where the SCRAM row matches: with
        /// --classic-login off, a stolen database file no longer logs anyone in.
        #[arg(long)]
        drop_classic: bool,
    },
    /// Add a user to the database (created if missing), under the same rules and
    /// with the same storage as a registration. The password is asked twice
    /// without echo, or read as one line from stdin with --password-stdin.
    /// Exit status: 0 added, 1 not added (name taken, passwords differ, database
    /// error), 2 usage error (a name or password that breaks the rules, bad flags).
    #[command(
        after_help = "Examples:\n  run_server add-user alice --db /var/lib/dccn-auth/users.db\n  \
        printf '%s\\n' \"$PASSWORD\" | run_server add-user alice --password-stdin"
    )]
    AddUser {
        /// The username (1 to 32 of A-Z a-z 0-9 _ . -, no "__").
        name: String,
        /// Read the password as one line from stdin instead of asking twice.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Copy every user (USERS row as it is, with its SCRAM row) from an SQLite
    /// file to a PostgreSQL database, so nobody re-registers. Idempotent: users
    /// already there with the same credentials are left as they are; a name
    /// there with other credentials is reported and left alone. --db is not used.
    /// Exit status: 0 every user is in the target as in the source, 1 a conflict
    /// or an error (said on stderr), 2 usage error.
    #[command(
        after_help = "Example:\n  run_server copy-db --from /var/lib/dccn-auth/users.db \\\n      \
        --to postgres://dccn:secret@db.example/dccn"
    )]
    CopyDb {
        /// The SQLite database file to copy from (must exist).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL database to copy to (postgres://user:password@host:port/database).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

fn parse_registration(s: &str) -> Result<RegistrationMode, String> {
    match s {
        "open" => Ok(RegistrationMode::Open),
        "closed" => Ok(RegistrationMode::Closed),
        _ => Err(format!("expected open or closed, got {s:?}")),
    }
}

/// Exit status of a usage error (as clap's own).
const USAGE_ERROR: u8 = 2;

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a whole number above 0, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("DCCN_LOG", "info")).init();
    // A bug that panics a session is logged as one line; the server goes on.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));

    let result = match &cli.command {
        None => serve(&cli),
        Some(Command::ListUsers { show_hashes }) => list_users(&cli.db, *show_hashes),
        Some(Command::DeleteUser { name }) => delete_user(&cli.db, name),
        Some(Command::MigrateScram { drop_classic }) => {
            migrate_scram(&cli.db, cli.scram_iterations, *drop_classic)
        }
        Some(Command::AddUser {
            name,
            password_stdin,
        }) => add_user(
            &cli.db,
            name,
            *password_stdin,
            Storage {
                scram_iterations: cli.scram_iterations,
                classic: cli.classic_login,
            },
        ),
        Some(Command::CopyDb { from, to }) => copy_db(from, to),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("run_server: {message}");
            ExitCode::from(1)
        }
    }
}

/// The TLS files to serve with, making the self-signed pair if asked.
fn tls_files(cli: &Cli) -> Result<Option<TlsFiles>, String> {
    if cli.tls_self_signed {
        let dir = match cli.db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let made = tls::ensure_self_signed(&dir, &cli.host).map_err(|e| e.to_string())?;
        println!(
            "TLS certificate {} ({}): {}",
            made.files.cert.display(),
            if made.created { "new" } else { "reused" },
            made.fingerprint
        );
        println!(
            "  clients trust it with: run_client --tls --ca {}",
            made.files.cert.display()
        );
        return Ok(Some(made.files));
    }
    Ok(match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    })
}

fn serve(cli: &Cli) -> Result<ExitCode, String> {
    let tls = tls_files(cli)?;
    let config = ServerConfig {
        tls,
        host: cli.host.clone(),
        port: cli.port,
        db_path: cli.db.clone(),
        backlog: cli.backlog,
        max_sessions: cli.max_sessions,
        login_timeout: Duration::from_secs(cli.login_timeout),
        login_grace: Duration::from_secs(cli.login_grace),
        idle_threads: cli.idle_threads,
        idle_thread_timeout: Duration::try_from_secs_f64(cli.idle_thread_secs)
            .map_err(|_| "--idle-thread-secs must be a positive number of seconds".to_string())?,
        max_sessions_per_address: cli.max_sessions_per_address,
        session_timeout: Duration::from_secs(cli.session_timeout),
        chat: ChatLimits {
            max_members: cli.chat_max_members,
            rate: cli.chat_rate,
            burst: cli.chat_burst,
            queue: cli.chat_queue,
        },
        scram_iterations: cli.scram_iterations,
        classic_login: cli.classic_login,
        registration: cli.registration,
        max_registrations_per_address: cli.max_registrations_per_address,
        metrics: cli.metrics.clone(),
        trusted_proxies: TrustedProxies::new(cli.trusted_proxy.clone()),
    };
    let server = Server::bind(&config).map_err(|e| e.to_string())?;
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let mut stopper = server.stopper();
    ctrlc::set_handler(move || {
        let left = stopper.shutdown(SHUTDOWN_GRACE);
        if left > 0 {
            log::warn!("{left} sessions still running at exit");
        }
        let _ = stopped_tx.send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;

    println!(
        "run_server listening on {}{} (database {}, backlog {}, max sessions {}{})",
        server.local_addr(),
        if config.tls.is_some() {
            " with TLS"
        } else {
            ""
        },
        store::display_name(&config.db_path.to_string_lossy()),
        config.backlog,
        server.max_sessions(),
        match server.max_sessions() < config.max_sessions {
            true => format!(
                ", lowered from {} to fit the open-files limit and memory maps",
                config.max_sessions
            ),
            false => String::new(),
        }
    );
    if let Some(addr) = server.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    if config.registration == RegistrationMode::Closed {
        println!("registration closed: add users with run_server add-user NAME");
    }
    let _ = std::io::stdout().flush();
    server.run();
    // The accept loop ends only through the signal handler: wait for its grace.
    let _ = stopped_rx.recv_timeout(SHUTDOWN_GRACE + Duration::from_secs(1));
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The store `--db` names (a file path, or a `postgres://` URL); a missing
/// SQLite file is an error here (the admin commands do not create one).
fn open_store(db: &Path) -> Result<Arc<dyn Store>, String> {
    let name = db.to_string_lossy();
    if !store::is_postgres_url(&name) && !db.exists() {
        return Err(format!("no database at {}", db.display()));
    }
    store::open(&name).map_err(|e| e.to_string())
}

fn list_users(db: &Path, show_hashes: bool) -> Result<ExitCode, String> {
    let users = open_store(db)?.list().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let line = |name: &str, salt: &str, verifier: &str| {
        if show_hashes {
            format!("{name:<32}  {salt:<32}  {verifier}\n")
        } else {
            format!("{name:<32}  {salt}\n")
        }
    };
    let mut text = line("USERNAME", "SALT", "VERIFIER");
    let mut unusable = 0;
    for u in &users {
        // Names come from whoever registered (or from an old database): escaped,
        // so a control character cannot drive the operator's terminal.
        let name = u.login.escape_debug().to_string();
        match &u.classic {
            Ok(c) => text.push_str(&line(&name, &c.salt, &c.verifier)),
            Err(why) => {
                unusable += 1;
                text.push_str(&format!(
                    "{name:<32}  UNUSABLE for the classic login: {why}\n"
                ));
            }
        }
    }
    text.push_str(&format!("{} users", users.len()));
    if unusable > 0 {
        text.push_str(&format!(
            ", {unusable} unusable for the classic login (the unknown-name path)"
        ));
    }
    text.push('\n');
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn migrate_scram(db: &Path, iterations: u32, drop_classic: bool) -> Result<ExitCode, String> {
    let store = open_store(db)?;
    let summary = dccn_auth::scram::migrate::migrate(store.as_ref(), iterations, drop_classic)
        .map_err(|e| e.to_string())?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn delete_user(db: &Path, name: &str) -> Result<ExitCode, String> {
    if open_store(db)?.delete(name).map_err(|e| e.to_string())? {
        println!("deleted user {name:?}");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "no user named {name:?} in {}",
            store::display_name(&db.to_string_lossy())
        ))
    }
}

fn copy_db(from: &Path, to: &str) -> Result<ExitCode, String> {
    let shown = store::display_name(to);
    if !store::is_postgres_url(to) {
        eprintln!(
            "run_server copy-db: --to must be a postgres:// or postgresql:// URL, got {shown:?}"
        );
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    if store::is_postgres_url(&from.to_string_lossy()) {
        eprintln!("run_server copy-db: --from must be an SQLite file, not a URL");
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    if !from.is_file() {
        return Err(format!("no SQLite database at {}", from.display()));
    }
    let source = store::UserStore::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let target = store::PgUserStore::open(to).map_err(|e| format!("{shown}: {e}"))?;
    let report = store::copy::copy_users(&source, &target).map_err(|e| e.to_string())?;
    for name in &report.copied {
        println!("copied {}", name.escape_debug());
    }
    for name in &report.conflicts {
        eprintln!(
            "run_server copy-db: {} is in {shown} with other credentials: left alone",
            name.escape_debug()
        );
    }
    for (name, why) in &report.failed {
        eprintln!(
            "run_server copy-db: {} not copied: {why}",
            name.escape_debug()
        );
    }
    println!(
        "{} copied, {} already there, {} conflicts, {} failed ({} -> {shown})",
        report.copied.len(),
        report.present.len(),
        report.conflicts.len(),
        report.failed.len(),
        from.display()
    );
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A positive, finite number of lines per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// A usage error: said, exit status 2.
fn usage_error(message: &str) -> Result<ExitCode, String> {
    eprintln!("run_server add-user: {message}");
    Ok(ExitCode::from(USAGE_ERROR))
}

/// Reads the new password: one line from stdin, or twice without echo.
fn read_new_password(from_stdin: bool) -> Result<Result<String, String>, String> {
    if from_stdin {
        let mut line = Vec::new();
        // One byte more than a line may hold, to tell a too-long line apart.
        let limit = (MAX_LINE_BYTES + 2) as u64;
        std::io::stdin()
            .lock()
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_LINE_BYTES {
            return Ok(Err(format!(
                "the password is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        return match String::from_utf8(line) {
            Ok(p) if p.is_empty() => Ok(Err("no password on stdin".into())),
            Ok(p) => Ok(Ok(p)),
            Err(_) => Ok(Err("the password is not valid UTF-8".into())),
        };
    }
    if !std::io::stdin().is_terminal() {
        return Ok(Err(
            "stdin is not a terminal: give the password with --password-stdin".into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
    };
    let first = ask("New password: ")?;
    let second = ask("Repeat password: ")?;
    if first != second {
        return Err("the passwords are not the same".into());
    }
    Ok(Ok(first))
}

fn add_user(
    db: &Path,
    raw_name: &str,
    password_stdin: bool,
    storage: Storage,
) -> Result<ExitCode, String> {
    let name = match new_account::parse_username(raw_name) {
        Ok(name) => name,
        Err(why) => return usage_error(&why.to_string()),
    };
    let password = match read_new_password(password_stdin)? {
        Ok(p) => p,
        Err(why) => return usage_error(&why),
    };
    let account = match NewAccount::new(&name, &password) {
        Ok(account) => account,
        Err(why) => return usage_error(&why.to_string()),
    };
    let db_name = db.to_string_lossy();
    let postgres = store::is_postgres_url(&db_name);
    let existed = postgres || db.exists();
    if !postgres {
        for warning in store::exposed_files(db) {
            eprintln!("run_server: warning: {warning}");
        }
    }
    let store = store::open(&db_name).map_err(|e| e.to_string())?;
    match new_account::create(store.as_ref(), account, storage).map_err(|e| e.to_string())? {
        Registration::Registered => {
            let note = if existed { "" } else { " (new database)" };
            println!(
                "added user {:?} to {}{note}",
                name.as_str(),
                store::display_name(&db_name)
            );
            Ok(ExitCode::SUCCESS)
        }
        Registration::NameTaken => Err(format!(
            "a user named {:?} already exists in {}",
            name.as_str(),
            store::display_name(&db_name)
        )),
    }
}
