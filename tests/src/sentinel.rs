//! A Redis primary, its replica and three sentinels of the test's own, on free ports, so a
//! test can kill the primary and watch the sentinels promote the replica; never the shared
//! Redis.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::free_port;

/// The master's name the sentinels monitor.
pub const MASTER_NAME: &str = "honeydrop";

pub struct SentinelGroup {
    pub primary_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    primary: Option<Child>,
    others: Vec<Child>,
    /// The sentinels' configuration files, which they rewrite.
    dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the primary, the replica (synced) and three sentinels (quorum 2, a master
    /// silent for a second is down), and waits until the sentinels know the replica.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (primary_port, replica_port) = (free_port(), free_port());
        // Replicas write the primary's snapshot to their directory: the temporary one.
        let here = dir.path().display().to_string();
        let primary = redis_server(primary_port, &["--dir", &here]);
        let replica = redis_server(
            replica_port,
            &[
                "--dir",
                &here,
                "--replicaof",
                "127.0.0.1",
                &primary_port.to_string(),
            ],
        );
        let mut group = Self {
            primary_port,
            replica_port,
            sentinel_ports: Vec::new(),
            primary: Some(primary),
            others: vec![replica],
            dir,
        };
        group
            .wait_until(
                "the replica is in sync",
                replica_port,
                |info| info.contains("master_link_status:up"),
                "INFO replication",
            )
            .await;
        for i in 0..3 {
            let port = free_port();
            let config = group.dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    group.dir.path().display(),
                ),
            )
            .expect("sentinel config");
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            group.others.push(child);
            group.sentinel_ports.push(port);
        }
        for port in group.sentinel_ports.clone() {
            group
                .wait_until(
                    "every sentinel knows the replica and the other sentinels",
                    port,
                    |info| info.contains("slaves=1") && info.contains("sentinels=3"),
                    "INFO sentinel",
                )
                .await;
        }
        group
    }

    /// `REDIS_SENTINELS` for the store.
    pub fn sentinels(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills the primary (SIGKILL, as a crash would).
    pub fn kill_primary(&mut self) {
        if let Some(mut child) = self.primary.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns once the replica has everything the primary has so far.
    pub async fn wait_until_replicated(&self) {
        let offset = |info: &str, field: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        let mut primary = self.connection(self.primary_port).await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut primary)
            .await
            .expect("INFO");
        let target = offset(&info, "master_repl_offset:").expect("master_repl_offset");
        self.wait_until(
            "the replica caught up",
            self.replica_port,
            |info| offset(info, "slave_repl_offset:").is_some_and(|o| o >= target),
            "INFO replication",
        )
        .await;
    }

    /// The port of the master the sentinels name now.
    pub async fn master_port(&self) -> Option<u16> {
        for port in &self.sentinel_ports {
            let Ok(mut conn) = connection(*port).await else {
                continue;
            };
            let named: Result<(String, String), _> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut conn)
                .await;
            if let Ok((_, port)) = named {
                return port.parse().ok();
            }
        }
        None
    }

    /// A connection to the server on `port` (the replica, once promoted).
    pub async fn connection(&self, port: u16) -> redis::aio::MultiplexedConnection {
        connection(port).await.expect("redis connection")
    }

    async fn wait_until(&self, what: &str, port: u16, done: impl Fn(&str) -> bool, command: &str) {
        let mut words = command.split(' ');
        let name = words.next().unwrap_or_default();
        for _ in 0..200 {
            if let Ok(mut conn) = connection(port).await {
                let mut cmd = redis::cmd(name);
                for word in words.clone() {
                    cmd.arg(word);
                }
                if let Ok(info) = cmd.query_async::<String>(&mut conn).await
                    && done(&info)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: not within 20 s (port {port})");
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        self.kill_primary();
        for child in &mut self.others {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connection(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await
}

/// `redis-server` on `port` with no persistence and the given extra arguments.
fn redis_server(port: u16, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts (is Redis installed? bash scripts/services.sh)")
}
