//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary
//! directory, the server on a free port of 127.0.0.1 with its Unix socket
//! inside that directory, password (SCRAM) authentication with a random
//! password, stopped by its PID and deleted when the last test using it is done.
//!
//! Running as root, PostgreSQL refuses to start, so its commands run through
//! `runuser -u postgres` and the directory is handed to that account.
//!
//! Tests share one cluster while any of them runs (it costs an `initdb`, about
//! a second), each in a database of its own ([`TestDb`]); the cluster stops
//! when the last [`TestDb`] is dropped, and a later test starts a new one.
//!
//! Where PostgreSQL's binaries are not found (in `PATH`, then
//! `/usr/lib/postgresql/*/bin`), [`test_db`] returns `None` and the tests are
//! skipped, saying so in one line on stderr; under `CI=true` that is a failure
//! instead (`.ci/run` installs PostgreSQL first).

use postgres::{Client, NoTls};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait for the server to accept connections after it is started.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for a fast shutdown before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);
/// Tries with another free port when the one picked was taken meanwhile.
const START_TRIES: usize = 3;
/// Set (to anything), PostgreSQL counts as not installed.
const HIDE_POSTGRES: &str = "DCCN_TEST_HIDE_POSTGRES";
/// The cluster's superuser.
const SUPERUSER: &str = "postgres";

/// One running cluster.
pub struct PgCluster {
    /// Deleted on drop, after the server has stopped.
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    /// The postmaster's PID (from `postmaster.pid`).
    pid: i32,
    /// What we started: the postmaster, or `runuser` in front of it.
    child: Child,
}

/// The directory PostgreSQL's server binaries are in, if they are installed.
pub fn binaries() -> Option<PathBuf> {
    // Lets a test see how the others behave on a machine without PostgreSQL.
    if std::env::var_os(HIDE_POSTGRES).is_some() {
        return None;
    }
    let has_all = |dir: &Path| ["initdb", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_all(d)) {
            return Some(dir);
        }
    }
    // Debian and Ubuntu keep them out of PATH; take the newest version.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` account.
fn postgres_account() -> Result<(u32, u32), String> {
    let out = Command::new("id")
        .args(["-u", SUPERUSER])
        .output()
        .map_err(|e| format!("id: {e}"))?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    let out = Command::new("id")
        .args(["-g", SUPERUSER])
        .output()
        .map_err(|e| format!("id: {e}"))?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    match (uid, gid) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err("running as root, but there is no 'postgres' account to run PostgreSQL".into()),
    }
}

/// `bin/program`, through `runuser -u postgres` when running as root.
fn command(bin: &Path, program: &str) -> Command {
    let exe = bin.join(program);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SUPERUSER, "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS randomness");
    hex::encode(buf)
}

impl PgCluster {
    /// initdb, then start the server; an error says what failed (with the
    /// server's log when it would not start).
    pub fn start(bin: &Path) -> Result<PgCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("dccn-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let password = random_hex(16);
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{password}\n")).map_err(|e| e.to_string())?;
        fs::create_dir(dir.path().join("socket")).map_err(|e| e.to_string())?;
        if running_as_root() {
            let (uid, gid) = postgres_account()?;
            for p in [dir.path(), &pwfile, &dir.path().join("socket")] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let data = dir.path().join("data");
        let out = command(bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = fs::remove_file(&pwfile);
        let mut last_error = String::new();
        for _ in 0..START_TRIES {
            let port = free_port()?;
            match Self::launch(bin, &data, &dir, port) {
                Ok(child) => {
                    let mut cluster = PgCluster {
                        dir,
                        port,
                        password,
                        pid: 0,
                        child,
                    };
                    cluster.wait_ready()?;
                    return Ok(cluster);
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Starts the postmaster on `port`; returns once it runs (not yet ready),
    /// or the log if it exited at once (the port taken meanwhile, say).
    fn launch(
        bin: &Path,
        data: &Path,
        dir: &tempfile::TempDir,
        port: u16,
    ) -> Result<Child, String> {
        let log_path = dir.path().join("server.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut child = command(bin, "postgres")
            .arg("-D")
            .arg(data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path().join("socket"))
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        // It fails within a moment when it fails at all (port, permissions).
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("postgres exited ({status}): {log}"));
            }
            if data.join("postmaster.pid").exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(child)
    }

    /// Waits until the server accepts a login, and notes its PID.
    fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log()));
            }
            if Client::connect(&self.url("postgres"), NoTls).is_ok() {
                break;
            }
            if Instant::now() > until {
                return Err(format!(
                    "postgres not ready after {START_LIMIT:?}: {}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let pidfile = fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        self.pid = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no PID")?;
        Ok(())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` over TCP on 127.0.0.1, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// The superuser's connection to `database`.
    pub fn connect(&self, database: &str) -> Client {
        Client::connect(&self.url(database), NoTls).expect("connect to the test cluster")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT) of the postmaster, by its PID; killed if it
        // has not stopped in time.
        if self.pid > 0 {
            // SAFETY: a signal to the process we started (its PID read from
            // its own pid file); no memory is involved.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
        }
        let until = Instant::now() + STOP_LIMIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > until => {
                    if self.pid > 0 {
                        // SAFETY: as above.
                        unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    }
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
        // The temporary directory goes with `self.dir`.
    }
}

/// The cluster the running tests share; started by the first of them.
static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// A database of its own for one test, on the shared cluster; dropped with it.
pub struct TestDb {
    pub cluster: Arc<PgCluster>,
    pub name: String,
}

impl TestDb {
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    pub fn connect(&self) -> Client {
        self.cluster.connect(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let mut admin = self.cluster.connect("postgres");
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A fresh database on the shared cluster, or `None` (said once on stderr)
/// when PostgreSQL is not installed; under `CI=true` a missing PostgreSQL
/// fails the test instead.
pub fn test_db() -> Option<TestDb> {
    let Some(bin) = binaries() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but PostgreSQL's binaries are not found (PATH, /usr/lib/postgresql/*/bin): \
                 install PostgreSQL (.ci/run does)"
            );
        }
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            // Straight to stderr, past the test harness's capture, so it shows.
            let _ = writeln!(
                std::io::stderr(),
                "PostgreSQL tests skipped: PostgreSQL's binaries not found (PATH, /usr/lib/postgresql/*/bin)"
            );
        });
        return None;
    };
    let cluster = {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        match shared.upgrade() {
            Some(c) => c,
            None => {
                let c = Arc::new(PgCluster::start(&bin).unwrap_or_else(|e| panic!("{e}")));
                *shared = Arc::downgrade(&c);
                c
            }
        }
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    cluster
        .connect("postgres")
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create the test database");
    Some(TestDb { cluster, name })
}

#[test]
fn the_cluster_starts_serves_and_is_gone_after_drop() {
    let Some(bin) = binaries() else {
        assert!(test_db().is_none());
        return;
    };
    let cluster = PgCluster::start(&bin).unwrap_or_else(|e| panic!("{e}"));
    let (dir, pid) = (cluster.dir.path().to_path_buf(), cluster.pid);
    let mut client = cluster.connect("postgres");
    let row = client.query_one("SELECT 1 + 1", &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // A wrong password is refused: the cluster is not open to anyone.
    let wrong = format!(
        "postgres://{SUPERUSER}:nope@127.0.0.1:{}/postgres",
        cluster.port()
    );
    assert!(Client::connect(&wrong, NoTls).is_err());
    // The Unix socket is inside the directory.
    assert!(dir
        .join(format!("socket/.s.PGSQL.{}", cluster.port()))
        .exists());
    drop(client);
    drop(cluster);
    assert!(!dir.exists(), "directory deleted");
    // SAFETY: signal 0 only checks whether the PID exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "postmaster {pid} still running");
}

#[test]
fn each_test_database_is_its_own_and_dropped_after() {
    let Some(db) = test_db() else { return };
    let mut client = db.connect();
    client.batch_execute("CREATE TABLE t (x INT)").unwrap();
    let other = test_db().unwrap();
    let mut other_client = postgres::Client::connect(&other.url(), NoTls).unwrap();
    assert!(other_client.query("SELECT x FROM t", &[]).is_err(), "apart");
    let name = db.name.clone();
    let cluster = db.cluster.clone();
    drop(client);
    drop(db);
    let mut admin = cluster.connect("postgres");
    let left = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .unwrap();
    assert!(left.is_empty(), "{name} dropped");
}

#[test]
fn without_postgresql_the_tests_say_they_were_skipped_and_fail_under_ci() {
    // This test binary again, running one PostgreSQL test as if PostgreSQL
    // were not installed.
    let run = |ci: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "store_suite::register_find_change_delete::postgres",
            "--exact",
        ])
        .env(HIDE_POSTGRES, "1")
        .env_remove("CI");
        if ci {
            c.env("CI", "true");
        }
        c.output().unwrap()
    };
    let skipped = run(false);
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("PostgreSQL tests skipped").count(),
        1,
        "one line: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&skipped.stdout);
    assert!(stdout.contains("1 passed"), "the test ran: {stdout}");
    let under_ci = run(true);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&under_ci.stdout),
        String::from_utf8_lossy(&under_ci.stderr)
    );
    assert!(!under_ci.status.success(), "{all}");
    assert!(all.contains("CI=true but PostgreSQL"), "{all}");
}
