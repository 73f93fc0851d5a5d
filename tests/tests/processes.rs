//! The real binaries, as an operator runs them: `api` alone (embedded), and `api` beside two
//! `worker` processes on Postgres and Redis.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{
    free_port, fresh_postgres_database,
    process::{Process, wait_ready},
    test_redis_url,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_serves_docs_stops_on_sigterm_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = HashMap::from([
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
    ]);
    let client = reqwest::Client::new();

    let mut first = Process::start("api", &env, true);
    let stdout = first.child().stdout.take().expect("stdout");
    wait_ready(&base).await;
    assert_eq!(
        client
            .get(format!("{base}/docs/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let signup = client
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": "keeper@example.com", "password": "password one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);
    assert!(first.terminate().await.success(), "SIGTERM must exit 0");
    let log = std::io::read_to_string(stdout).unwrap_or_default();
    assert!(
        log.contains(&format!("Swagger UI at {base}/docs")),
        "start-up log does not show the Swagger UI URL: {log}"
    );
    assert!(
        log.contains("Embedded"),
        "start-up log does not say the mode: {log}"
    );

    let second = Process::start("api", &env, false);
    wait_ready(&base).await;
    let login = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "keeper@example.com", "password": "password one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK, "data lost across a restart");
    assert!(second.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_two_worker_processes_run_each_job_exactly_once() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let prefix = format!("hdtest:{}", uuid::Uuid::new_v4().simple());
    let database = fresh_postgres_database().await;
    let env = HashMap::from([
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("DATABASE_URL", database.url().to_owned()),
        ("MAIL_TRANSPORT", "outbox".to_owned()),
        ("REDIS_URL", test_redis_url()),
        ("REDIS_PREFIX", prefix.clone()),
        (
            "JWT_ACCESS_SECRET",
            "a-shared-secret-of-at-least-32-bytes!!".to_owned(),
        ),
        ("ADMIN_EMAIL", "ops@example.com".to_owned()),
        ("ADMIN_PASSWORD", "ops password".to_owned()),
    ]);
    let api = Process::start("api", &env, false);
    let workers = [
        Process::start("worker", &env, false),
        Process::start("worker", &env, false),
    ];
    wait_ready(&base).await;

    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "ops@example.com", "password": "ops password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"]
        .as_str()
        .expect("admin token")
        .to_owned();

    let redis = redis::Client::open(test_redis_url()).unwrap();
    let mut pubsub = redis.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}:events")).await.unwrap();
    let mut messages = pubsub.into_on_message();

    let mut answered_by = Vec::new();
    for _ in 0..10 {
        let ping = client
            .post(format!("{base}/api/admin/worker-ping"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ping.status(), StatusCode::OK);
        let body: Value = ping.json().await.unwrap();
        answered_by.push(body["worker"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pongs = 0;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), messages.next()).await
    {
        let event: Value = serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
        pongs += usize::from(event["event"] == "worker_pong");
    }
    assert_eq!(pongs, 10, "every job ran exactly once");
    assert!(
        answered_by.iter().all(|w| w.starts_with("worker-")),
        "answered by {answered_by:?}"
    );

    for worker in workers {
        assert!(
            worker.terminate().await.success(),
            "worker must exit 0 on SIGTERM"
        );
    }
    assert!(
        api.terminate().await.success(),
        "api must exit 0 on SIGTERM"
    );
    tests::delete_redis_prefix(&test_redis_url(), &prefix)
        .await
        .expect("the test's own keys are removed");
}
