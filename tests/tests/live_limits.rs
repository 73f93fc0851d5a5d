//! Live sockets are bounded (issue 28): Socket.IO sessions — which long-polling keeps
//! without a connection of their own — count with `/ws` sockets against a budget per process
//! and per client address, and handshakes are rate-limited, so one client cannot make the
//! api hold thousands of sessions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::Value;
use tests::{
    Backend, TestApp, both_backends, eventually, free_port,
    process::{Process, wait_ready},
    spawn_app_with,
};

/// An Engine.IO long-polling handshake, as `socket.io-client` opens a session: status,
/// error code (if refused) and `Retry-After`.
async fn handshake(client: &reqwest::Client, base: &str) -> (StatusCode, String, Option<String>) {
    let answer = client
        .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .expect("sent");
    let status = answer.status();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = answer.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, retry_after)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_polling_handshakes_is_refused_past_the_cap_and_the_api_stays_small() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = HashMap::from([
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("DEMO_DATA", "false".to_owned()),
        ("LIVE_MAX_SOCKETS_PER_ADDRESS", "100".to_owned()),
        (
            "LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE",
            "1000000".to_owned(),
        ),
    ]);
    let mut api = Process::start("api", &env, false);
    wait_ready(&base).await;
    let pid = api.child().id();
    let before = rss_mb(pid);
    // Eight connections, as the probe used.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .unwrap();

    let answers: Vec<_> = stream::iter(0..3000)
        .map(|_| handshake(&client, &base))
        .buffer_unordered(8)
        .collect()
        .await;

    let opened = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != StatusCode::OK).collect();
    assert_eq!(opened, 100, "sessions opened past the cap");
    assert!(
        refused.iter().all(
            |(status, code, retry_after)| *status == StatusCode::TOO_MANY_REQUESTS
                && code == "too_many_sockets"
                && retry_after.is_some()
        ),
        "{:?}",
        refused.first()
    );
    let after = rss_mb(pid);
    assert!(
        after < 150.0,
        "the api grew from {before:.0} MB to {after:.0} MB"
    );
    // Sessions that never join are closed, and their room is given back.
    let reopened = eventually(Duration::from_secs(40), || async {
        (handshake(&client, &base).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(reopened.is_some(), "the abandoned sessions kept their room");
    let _ = api.terminate().await;
}

async fn app(backend: Backend, per_address: &str, per_minute: &str) -> TestApp {
    spawn_app_with(
        backend,
        &[
            ("LIVE_MAX_SOCKETS_PER_ADDRESS", per_address),
            ("LIVE_HANDSHAKES_PER_ADDRESS_PER_MINUTE", per_minute),
        ],
    )
    .await
}

async fn websockets_and_socket_io_sessions_share_one_budget_per_address(backend: Backend) {
    let app = app(backend, "3", "1000").await;
    let client = reqwest::Client::new();
    assert_eq!(handshake(&client, &app.address).await.0, StatusCode::OK);
    assert_eq!(handshake(&client, &app.address).await.0, StatusCode::OK);
    let (socket, _snapshot) = app.websocket(None).await;

    let polling = handshake(&client, &app.address).await;
    let ws = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", app.port)).await;

    assert_eq!(
        (polling.0, polling.1.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sockets")
    );
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        other => panic!("a fourth socket was let in: {:?}", other.map(|_| ())),
    }
    drop(socket);
    let room = eventually(Duration::from_secs(10), || async {
        (handshake(&client, &app.address).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert!(room.is_some(), "a closed /ws socket kept its room");
}

async fn handshakes_past_the_rate_are_refused(backend: Backend) {
    let app = app(backend, "1000", "5").await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(handshake(&client, &app.address).await.0, StatusCode::OK);
    }

    let (status, code, retry_after) = handshake(&client, &app.address).await;

    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

both_backends!(
    websockets_and_socket_io_sessions_share_one_budget_per_address,
    handshakes_past_the_rate_are_refused,
);
