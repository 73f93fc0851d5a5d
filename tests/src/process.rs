//! Real binaries and a Redis server of the test's own, for tests that kill, restart and
//! flush them.

use std::{
    collections::HashMap,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use reqwest::StatusCode;

use crate::{binary, free_port};

/// Every test's buyers come from 127.0.0.1: the per-address limits of a drop day are set out
/// of the way unless the test sets them.
fn generous_limits(env: &HashMap<&str, String>) -> Vec<(&'static str, &'static str)> {
    [
        "SIGNUPS_PER_ADDRESS_PER_HOUR",
        "HOLDS_PER_DROP_PER_ADDRESS",
        "NOTIFY_ME_PER_ADDRESS_PER_HOUR",
        "NOTIFY_ME_EMAILS_PER_MAILBOX_PER_DAY",
        "LIVE_MAX_SOCKETS_PER_ADDRESS",
        "LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE",
    ]
    .into_iter()
    .filter(|name| !env.contains_key(name))
    .map(|name| (name, "100000"))
    .collect()
}

/// A running binary of this workspace; killed when dropped.
pub struct Process(Child);

impl Process {
    /// Starts a binary; `capture` keeps its log (stdout) for the test to read.
    pub fn start(name: &str, env: &HashMap<&str, String>, capture: bool) -> Self {
        let child = Command::new(binary(name))
            .env_clear()
            .envs(generous_limits(env))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .spawn()
            .expect("process starts");
        Self(child)
    }

    /// Starts a binary whose log (stdout and stderr) goes to `log`, for a test to show when
    /// it fails.
    pub fn start_logging_to(
        name: &str,
        env: &HashMap<&str, String>,
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(binary(name))
            .env_clear()
            .envs(generous_limits(env))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("process starts");
        Self(child)
    }

    /// Pauses it (SIGSTOP), as a long GC pause or a stalled VM would.
    pub fn pause(&self) {
        signal(self.0.id(), "-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.0.id(), "-CONT");
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("wait")
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub async fn terminate(mut self) -> ExitStatus {
        signal(self.0.id(), "-TERM");
        for _ in 0..200 {
            if let Some(status) = self.exited() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not stop within 20 s of SIGTERM", self.0.id());
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill_hard(mut self) {
        signal(self.0.id(), "-KILL");
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a binary that is expected to refuse to start: its exit status and everything it
/// wrote (stdout, then stderr). `None` for the status if it was still running after `within`
/// (it is killed then).
pub async fn run_to_exit(
    name: &str,
    env: &HashMap<&str, String>,
    within: Duration,
) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(binary(name))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("process starts");
    let deadline = tokio::time::Instant::now() + within;
    let mut status = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(exited) = child.try_wait().expect("wait") {
            status = Some(exited);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (status, text)
}

fn signal(pid: u32, which: &str) {
    Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
}

/// Waits for `/readyz` to answer 200.
pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

/// A `redis-server` on a free port that the test may stop, restart and flush; never the
/// shared one.
pub struct RedisServer {
    pub port: u16,
    process: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            process: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is Redis installed? bash scripts/services.sh)");
        self.process = Some(child);
        for _ in 0..100 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    /// Kills it (SIGKILL, as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    pub async fn flush(&self) {
        let _: () = redis::cmd("FLUSHDB")
            .query_async(&mut self.connection().await)
            .await
            .expect("FLUSHDB");
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Postgres cluster of the test's own — `initdb` into a temporary directory, listening on
/// a free port — that the test may crash, stop, restart and fill; never the shared one.
/// Run as the `postgres` OS user when the test runs as root (Postgres refuses root).
pub struct PostgresServer {
    pub port: u16,
    bin: std::path::PathBuf,
    /// Holds the data directory, the socket and the server's log; removed when dropped.
    dir: tempfile::TempDir,
}

/// How `pg_ctl stop` ends the server.
#[derive(Clone, Copy, Debug)]
pub enum StopMode {
    /// Every backend killed at once, no checkpoint: a crash, recovered from the WAL at the
    /// next start.
    Immediate,
    /// Sessions terminated ("terminating connection due to administrator command"), then a
    /// clean shutdown.
    Fast,
}

impl PostgresServer {
    /// Creates the cluster (`max_connections` as given) and starts it.
    pub async fn start(max_connections: u32) -> Self {
        let bin = postgres_bin_dir();
        let dir = server_dir("honeydrop-pg-");
        let server = Self {
            port: free_port(),
            bin,
            dir,
        };
        if is_root() {
            run_checked(Command::new("chown").args(["postgres:postgres", &server.path()]));
        }
        let data = server.data_dir();
        server.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let settings = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = {max_connections}\nshared_buffers = '32MB'\n\
             superuser_reserved_connections = 0\nlog_min_messages = warning\n",
            server.port,
            server.path(),
        );
        let conf = format!("{data}/postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf).expect("postgresql.conf");
        existing.push_str(&settings);
        std::fs::write(&conf, existing).expect("write postgresql.conf");
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) and returns once it accepts connections.
    pub async fn restart(&self) {
        let (data, log) = (self.data_dir(), format!("{}/server.log", self.path()));
        let started = self
            .pg_async(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
            )
            .await;
        assert!(started, "pg_ctl start failed; see {log}");
    }

    /// Stops it the given way and returns once it is down.
    pub async fn stop(&self, mode: StopMode) {
        let mode = match mode {
            StopMode::Immediate => "immediate",
            StopMode::Fast => "fast",
        };
        let data = self.data_dir();
        let stopped = self
            .pg_async("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"])
            .await;
        assert!(stopped, "pg_ctl stop -m {mode} failed");
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn data_dir(&self) -> String {
        format!("{}/data", self.path())
    }

    /// `program` of Postgres's bin directory, as the `postgres` user when we are root.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn pg(&self, program: &str, args: &[&str]) {
        run_checked(&mut self.command(program, args));
    }

    async fn pg_async(&self, program: &str, args: &[&str]) -> bool {
        let command = self.command(program, args);
        tokio::process::Command::from(command)
            .status()
            .await
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run_checked(command: &mut Command) {
    let status = command.status().expect("command runs");
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Where `initdb` and `pg_ctl` are: `PG_BIN` if set, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`), else `PATH`.
fn postgres_bin_dir() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return bin.into();
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .max_by_key(|bin| {
            bin.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
    newest.unwrap_or_default()
}

/// A PgBouncer of the test's own (Debian's `pgbouncer`, run by `scripts/services.sh`'s
/// install) in transaction mode in front of a Postgres, on a free port, with its
/// configuration and log in a temporary directory; killed when dropped.
pub struct PgBouncer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Child,
}

impl PgBouncer {
    /// Fronts the server of `postgres_url` for every database on it, with at most
    /// `server_connections` server connections per database (`default_pool_size`). Trusts
    /// the user of `postgres_url`, as the local Postgres trusts it. Configured as README's
    /// "Connection budgets and PgBouncer" says a production bouncer must be for
    /// `DATABASE_POOL_MODE=transaction`.
    pub async fn start(postgres_url: &str, server_connections: u32) -> Self {
        use std::str::FromStr;
        let upstream = sea_orm::sqlx::postgres::PgConnectOptions::from_str(postgres_url)
            .expect("a postgres:// URL");
        let dir = server_dir("honeydrop-pgbouncer-");
        let port = free_port();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{}\" \"\"\n", upstream.get_username()))
            .expect("write users.txt");
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={host} port={upstream_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\n\
                 pool_mode = transaction\ndefault_pool_size = {server_connections}\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 server_reset_query = DEALLOCATE ALL\nserver_reset_query_always = 1\n",
                host = upstream.get_host(),
                upstream_port = upstream.get_port(),
                users = users.display(),
            ),
        )
        .expect("write pgbouncer.ini");
        let log = std::fs::File::create(dir.path().join("pgbouncer.log")).expect("log file");
        // Debian installs it in /usr/sbin, off an ordinary user's PATH.
        let sbin = std::path::Path::new("/usr/sbin/pgbouncer");
        let mut command = Command::new(if sbin.exists() {
            sbin
        } else {
            std::path::Path::new("pgbouncer")
        });
        // PgBouncer refuses to run as root; `-u` drops to the postgres user first.
        if is_root() {
            command.args(["-u", "postgres"]);
        }
        let process = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pgbouncer starts (is it installed? bash scripts/services.sh)");
        let bouncer = Self { port, dir, process };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pgbouncer did not listen on {port}: {}", bouncer.log());
    }

    /// `postgres_url` with the bouncer in place of the server.
    pub fn url_for(&self, postgres_url: &str) -> String {
        use std::str::FromStr;
        let options = sea_orm::sqlx::postgres::PgConnectOptions::from_str(postgres_url)
            .expect("a postgres:// URL");
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            options.get_username(),
            self.port,
            options.get_database().unwrap_or("postgres"),
        )
    }

    /// What it logged so far, for a failing test to show.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The last `lines` lines of every `*.log` file in `dir`, each under its path: what a failed
/// assertion about several processes shows.
pub fn log_tails(dir: &std::path::Path, lines: usize) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).expect("logs").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            all.push_str(&format!("\n--- {}\n", path.display()));
            all.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
        }
    }
    all
}

/// One JSON call to a process's API: its status and JSON body (`null` when it has none).
pub async fn call_json(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("api answers");
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Two apis and two workers started on `env` (each api on a free port; every process logs
/// to `logs/<name>-<i>.log`), returned once both apis are ready: the processes (stopped when
/// dropped) and the apis' addresses.
pub async fn two_apis_two_workers(
    env: &HashMap<&str, String>,
    logs: &std::path::Path,
) -> (Vec<Process>, [String; 2]) {
    let mut processes = Vec::new();
    let mut apis = Vec::new();
    for (i, name) in ["api", "api", "worker", "worker"].into_iter().enumerate() {
        let mut env = env.clone();
        let port = free_port();
        env.insert("PORT", port.to_string());
        let log = logs.join(format!("{name}-{i}.log"));
        processes.push(Process::start_logging_to(name, &env, &log));
        if name == "api" {
            apis.push(format!("http://127.0.0.1:{port}"));
        }
    }
    for base in &apis {
        wait_ready(base).await;
    }
    let apis = <[String; 2]>::try_from(apis).expect("two apis");
    (processes, apis)
}

/// A temporary directory for a server that runs as `postgres` (Postgres, PgBouncer): it must
/// reach its directory, so the directory is world-readable (0755).
fn server_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    dir
}
