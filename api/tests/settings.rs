//! The real binaries refuse bad configuration: non-zero exit, and a message naming the variable.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn run_api(vars: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
    cmd.env_clear()
        .current_dir(dir.path())
        .env("DATA_DIR", dir.path())
        .env("PORT", "0");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("api binary runs")
}

fn assert_refused(output: &Output, variable: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exited 0 despite a bad {variable}"
    );
    assert!(
        stderr.contains(variable),
        "the error does not name {variable}: {stderr}"
    );
}

#[test]
fn a_malformed_port_stops_the_api() {
    assert_refused(&run_api(&[("PORT", "eighty")]), "PORT");
}

#[test]
fn a_malformed_database_url_stops_the_api() {
    assert_refused(
        &run_api(&[("DATABASE_URL", "mysql://nope")]),
        "DATABASE_URL",
    );
}

#[test]
fn distributed_mode_without_a_jwt_secret_stops_the_api() {
    let output = run_api(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        ),
    ]);
    assert_refused(&output, "JWT_ACCESS_SECRET");
}

#[test]
fn a_short_jwt_secret_stops_the_api() {
    assert_refused(
        &run_api(&[("JWT_ACCESS_SECRET", "short")]),
        "JWT_ACCESS_SECRET",
    );
}

#[test]
fn a_bad_reservation_ttl_stops_the_api() {
    assert_refused(
        &run_api(&[("RESERVATION_TTL_SECS", "0")]),
        "RESERVATION_TTL_SECS",
    );
}

#[test]
fn an_unreachable_database_stops_the_api() {
    let output = run_api(&[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "JWT_ACCESS_SECRET",
            "a-secret-that-is-at-least-32-bytes-long!",
        ),
    ]);
    assert_refused(&output, "DATABASE_URL");
}
