//! Real binaries and a Redis server of the test's own, for tests that kill, restart and
//! flush them.

use std::{
    collections::HashMap,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use reqwest::StatusCode;

use crate::{binary, free_port};

/// A running binary of this workspace; killed when dropped.
pub struct Process(Child);

impl Process {
    /// Starts a binary; `capture` keeps its log (stdout) for the test to read.
    pub fn start(name: &str, env: &HashMap<&str, String>, capture: bool) -> Self {
        let child = Command::new(binary(name))
            .env_clear()
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
