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
