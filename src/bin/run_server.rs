//! `run_server`: parse the flags, start the server (or run an offline admin
//! command on the database), report, exit. The work is in the library.

use clap::{Parser, Subcommand};
use dccn_auth::config::{self, ServerConfig};
use dccn_auth::proxy_protocol::{Cidr, TrustedProxies};
use dccn_auth::server::Server;
use dccn_auth::store::UserStore;
use dccn_auth::tls::{self, TlsFiles};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
        run_server delete-user alice        remove a user (offline)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "DCCN_HOST", default_value = config::DEFAULT_HOST)]
    host: String,
    /// Port to listen on (0 picks a free port; the address is printed).
    #[arg(long, env = "DCCN_PORT", default_value_t = config::DEFAULT_PORT)]
    port: u16,
    /// SQLite database file (created if missing).
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
}

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
        max_sessions_per_address: cli.max_sessions_per_address,
        session_timeout: Duration::from_secs(cli.session_timeout),
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
        config.db_path.display(),
        config.backlog,
        server.max_sessions(),
        match server.max_sessions() < config.max_sessions {
            true => format!(
                ", lowered from {} to fit the open-files limit",
                config.max_sessions
            ),
            false => String::new(),
        }
    );
    let _ = std::io::stdout().flush();
    server.run();
    // The accept loop ends only through the signal handler: wait for its grace.
    let _ = stopped_rx.recv_timeout(SHUTDOWN_GRACE + Duration::from_secs(1));
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn open_store(db: &Path) -> Result<UserStore, String> {
    if !db.exists() {
        return Err(format!("no database at {}", db.display()));
    }
    UserStore::open(db).map_err(|e| e.to_string())
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

fn delete_user(db: &Path, name: &str) -> Result<ExitCode, String> {
    if open_store(db)?.delete(name).map_err(|e| e.to_string())? {
        println!("deleted user {name:?}");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("no user named {name:?} in {}", db.display()))
    }
}
