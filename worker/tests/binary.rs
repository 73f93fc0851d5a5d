//! The `worker` binary refuses to start without what it needs.
#![allow(clippy::expect_used)]

use std::process::Command;

#[test]
fn a_worker_without_redis_explains_that_embedded_mode_needs_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path())
        .output()
        .expect("worker binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("REDIS_URL"));
}

#[test]
fn a_malformed_redis_url_stops_the_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path())
        .env("REDIS_URL", "http://wrong")
        .output()
        .expect("worker binary runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("REDIS_URL"));
}

/// Runs the worker binary against `database_url` with everything else it needs.
fn worker_with_database(database_url: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path())
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("JWT_ACCESS_SECRET", "k".repeat(32))
        // A worker needs a way to send mail before it gets as far as the database.
        .env("MAIL_TRANSPORT", "outbox")
        .env("DATABASE_URL", database_url)
        .output()
        .expect("worker binary runs")
}

#[test]
fn a_closed_database_port_is_reported_as_refused() {
    // Bound and released: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();

    let output = worker_with_database(&format!("postgres://postgres@127.0.0.1:{port}/honeydrop"));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited successfully: {stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn an_unknown_database_is_named() {
    let name = format!("hd_missing_{}", std::process::id());

    let output = worker_with_database(&format!("postgres://postgres@127.0.0.1:5432/{name}"));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited successfully: {stderr}");
    assert!(
        stderr.contains(&format!("database \"{name}\" does not exist")),
        "{stderr}"
    );
}
