//! `run_client`: parse the flags, run the dialogue (interactive, or one scripted
//! action), print the outcome, exit with its code. The work is in
//! `dccn_auth::client`.

use clap::{Args, Parser, Subcommand};
use dccn_auth::client::tls::TlsSettings;
use dccn_auth::client::{
    self, Action, Client, ClientConfig, ClientError, Ended, Mechanism, PasswordSource, StdTerminal,
    Trace,
};
use dccn_auth::config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "run_client",
    version,
    about = "Password authentication client (wire protocol v1, see docs/PROTOCOL.md).",
    long_about = "Password authentication client (wire protocol v1, see docs/PROTOCOL.md).\n\n\
        Without a subcommand it follows the server's prompts, as the original client did: \
        '>> ' asks for a command word, 'Username: ' for a name, and passwords are read \
        hidden. At login the password never crosses the wire: the client answers the \
        server's challenge with SHA256(nonce + SHA256(salt + password)).\n\n\
        With a subcommand it does one action without questions (for scripts) and prints \
        the server's outcome line. Exit codes: 0 done; 1 refused by the server (wrong \
        password, name taken, password rule, throttled, or 'Server error, try again \
        later'); 2 usage, connection or protocol error; 130 Ctrl-C.\n\n\
        Host and port can also be set by the environment variables shown; flags win.\n\n\
        TLS (see docs/TLS.md): --tls verifies the server's certificate against the \
        system's trusted roots, or with --ca FILE against the certificates in FILE (e.g. \
        the server-cert.pem that run_server --tls-self-signed made); --ca and \
        --server-name imply --tls. A failed verification is exit code 2. There is no \
        way to skip verification.",
    after_help = "Examples:\n  \
        run_client                                   interactive, on 127.0.0.1:7886\n  \
        run_client register --user alice             asks the new password twice, hidden\n  \
        printf '%s\\n' 'S3cretPass' | run_client login --user alice --password-stdin\n  \
        run_client --trace login --user alice        show every line and the hashes\n  \
        run_client chat --user alice --password-stdin < lines   chat from a script\n  \
        run_client login --scram --user alice        SCRAM-SHA-256: the server proves itself too\n  \
        run_client --tls --ca server-cert.pem        TLS, trusting a self-signed server\n  \
        run_client --tls --host auth.example.org     TLS, verified by the system's roots"
)]
struct Cli {
    /// Server address.
    #[arg(long, env = "DCCN_HOST", default_value = config::DEFAULT_HOST, global = true)]
    host: String,
    /// Server port.
    #[arg(long, env = "DCCN_PORT", default_value_t = config::DEFAULT_PORT, global = true)]
    port: u16,
    /// Print every line sent (C>) and received (S>), and the hashes of each
    /// challenge, to standard error. Passwords are never printed.
    #[arg(long, global = true)]
    trace: bool,
    /// Seconds to wait for each line from the server, and for the whole TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = client::REPLY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    timeout: u64,
    /// Connect with TLS, verifying the server's certificate against the system's
    /// trusted roots (or --ca).
    #[arg(long, env = "DCCN_TLS", global = true,
          value_parser = clap::builder::FalseyValueParser::new())]
    tls: bool,
    /// Trust only the certificates in this PEM file (e.g. the server's self-signed
    /// server-cert.pem) instead of the system's roots. Implies --tls.
    #[arg(long, env = "DCCN_TLS_CA", value_name = "PEM", global = true)]
    ca: Option<PathBuf>,
    /// The name the server's certificate must carry [default: the --host value;
    /// an IP address is checked against the certificate's IP addresses]. Implies --tls.
    #[arg(long, value_name = "NAME", global = true)]
    server_name: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The TLS settings, if TLS is on (--tls, or implied by --ca / --server-name).
    fn tls(&self) -> Option<TlsSettings> {
        let on = self.tls || self.ca.is_some() || self.server_name.is_some();
        on.then(|| TlsSettings {
            ca: self.ca.clone(),
            server_name: self.server_name.clone(),
        })
    }
}

/// One action, without questions. The password comes from a hidden prompt, or
/// with --password-stdin from standard input; never from an argument.
#[derive(Subcommand)]
enum Command {
    /// Create an account (the new password is sent twice, as the server asks).
    Register(ActionArgs),
    /// Log in (proves the password by the challenge; it is not sent).
    Login(ActionArgs),
    /// Log in, then change the password. With --password-stdin: two lines,
    /// the current password then the new one.
    ChangePassword(ActionArgs),
    /// Log in, then delete the account.
    DeleteAccount(ActionArgs),
    /// Log in and enter the chat room: standard input lines are sent (messages,
    /// /msg, /who, ...), room lines are printed; at the end of input the client
    /// says /quit. With --password-stdin the first line is the password.
    Chat(ActionArgs),
}

#[derive(Args)]
struct ActionArgs {
    /// The username (exact, case-sensitive).
    #[arg(long, short)]
    user: String,
    /// Read the password from standard input, one line (LF or CR LF stripped).
    #[arg(long)]
    password_stdin: bool,
    /// Log in (and re-authenticate) with SCRAM-SHA-256 (login_scram): the server
    /// must prove it knows your credentials, or the client stops with exit code 2.
    /// Never falls back to classic login.
    #[arg(long)]
    scram: bool,
}

impl Command {
    fn split(&self) -> (Action, &ActionArgs) {
        match self {
            Command::Register(a) => (Action::Register, a),
            Command::Login(a) => (Action::Login, a),
            Command::ChangePassword(a) => (Action::ChangePassword, a),
            Command::DeleteAccount(a) => (Action::DeleteAccount, a),
            Command::Chat(_) => unreachable!("chat is not a scripted action"),
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 here, with clap's message.
    let cli = Cli::parse();
    if let Err(e) = client::install_interrupt_handler() {
        eprintln!("run_client: warning: {e}");
    }
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("run_client: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

fn run(cli: &Cli) -> Result<u8, ClientError> {
    let mut config = ClientConfig::new(&cli.host, cli.port);
    config.reply_timeout = Duration::from_secs(cli.timeout);
    config.tls = cli.tls();
    let trace = || match cli.trace {
        true => Trace::stderr(),
        false => Trace::off(),
    };
    let Some(command) = &cli.command else {
        let ended = client::converse(&config, &trace, &mut StdTerminal)?;
        if ended == Ended::Closed {
            // Clean for us, but a server that follows the protocol says __quit__ first.
            eprintln!("run_client: the server closed the connection");
        }
        return Ok(client::EXIT_OK);
    };
    if let Command::Chat(args) = command {
        let mut client = Client::connect(&config, trace())?;
        return client::chat::chat_scripted(&mut client, &args.user, args.password_stdin);
    }
    let (action, args) = command.split();
    let mechanism = match (args.scram, action) {
        (false, _) => Mechanism::Classic,
        (true, Action::Register) => {
            return Err(ClientError::Usage(
                "--scram applies to login, change-password and delete-account".into(),
            ))
        }
        (true, _) => Mechanism::Scram,
    };
    let mut source = match args.password_stdin {
        true => PasswordSource::stdin(),
        false => PasswordSource::Prompt,
    };
    // Passwords first: a person typing must not make the server time out.
    let request = client::read_request(action, &args.user, &mut source)?;
    let outcome = Client::connect(&config, trace())?.run_with(&request, mechanism)?;
    for line in &outcome.lines {
        // Refusal texts carry the server's words: shown with controls escaped.
        println!("{}", client::visible(line));
    }
    Ok(outcome.exit_code())
}
