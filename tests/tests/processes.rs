//! The real binaries, as an operator runs them: `api` alone (embedded), and `api` beside two
//! `worker` processes on Postgres and Redis.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{
    free_port, fresh_postgres_database,
    process::{Process, run_to_exit, wait_ready},
    test_database_url, test_redis_url,
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

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

/// What a process refused with: it exited non-zero within 20 s, and said why.
async fn refused(name: &str, env: &HashMap<&str, String>) -> String {
    let (status, output) = run_to_exit(name, env, Duration::from_secs(20)).await;
    let status = status.unwrap_or_else(|| panic!("{name} kept running: {output}"));
    assert!(!status.success(), "{name} exited 0: {output}");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_processes_refuse_a_database_that_is_not_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = format!("sqlite://{}/split.db?mode=rwc", dir.path().display());
    for name in ["api", "worker", "migration"] {
        for database_url in [None, Some(sqlite.clone())] {
            let mut env = HashMap::from([
                ("PORT", free_port().to_string()),
                ("DATA_DIR", dir.path().display().to_string()),
                ("REDIS_URL", test_redis_url()),
                ("JWT_ACCESS_SECRET", SECRET.to_owned()),
                ("SMTP_URL", "smtp://127.0.0.1:2525".to_owned()),
            ]);
            if let Some(url) = &database_url {
                env.insert("DATABASE_URL", url.clone());
            }

            let output = refused(name, &env).await;

            assert!(
                output.contains("DATABASE_URL"),
                "{name} with {database_url:?}: {output}"
            );
        }
    }
    assert!(
        !dir.path().join("split.db").exists(),
        "no private SQLite file was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_worker_refuses_to_start_without_a_way_to_send_mail() {
    let dir = tempfile::tempdir().expect("dir");
    let env = HashMap::from([
        ("PORT", free_port().to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("REDIS_URL", test_redis_url()),
        // Never reached: the settings are refused first.
        ("DATABASE_URL", test_database_url()),
        ("JWT_ACCESS_SECRET", SECRET.to_owned()),
    ]);
    let mut embedding = env.clone();
    embedding.insert("EMBED_WORKER", "true".to_owned());

    for (name, env) in [("worker", &env), ("api", &embedding)] {
        let output = refused(name, env).await;

        assert!(output.contains("SMTP_URL"), "{name}: {output}");
        assert!(output.contains("MAIL_TRANSPORT=outbox"), "{name}: {output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_embedded_start_seeds_a_demo_store_once_and_prints_its_admin() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = HashMap::from([
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
    ]);
    let client = reqwest::Client::new();
    let count = |path: &'static str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let list: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            list.as_array().map_or(0, Vec::len)
        }
    };

    let mut first = Process::start("api", &env, true);
    let stdout = first.child().stdout.take().expect("stdout");
    wait_ready(&base).await;
    let drops = count("/api/drops").await;
    let products = count("/api/products").await;
    assert!(first.terminate().await.success());
    let log = std::io::read_to_string(stdout).unwrap_or_default();

    assert_eq!((drops, products), (3, 4), "the demo store is listed");
    let line = log
        .lines()
        .find(|l| l.contains("admin sign-in"))
        .unwrap_or_else(|| panic!("no admin line in the log: {log}"));
    let password = line
        .split(&format!("{} / ", api::dev::demo::ADMIN_EMAIL))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the password follows the address");
    let file = dir.path().join(api::dev::demo::PASSWORD_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the password file is the owner's only");
    let secret = dir.path().join("jwt_access_secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&secret.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "so is the generated secret");

    let mut second = Process::start("api", &env, true);
    let stdout = second.child().stdout.take().expect("stdout");
    wait_ready(&base).await;
    let login = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": api::dev::demo::ADMIN_EMAIL, "password": password}))
        .send()
        .await
        .unwrap();
    let (drops, products) = (count("/api/drops").await, count("/api/products").await);
    assert!(second.terminate().await.success());
    let log = std::io::read_to_string(stdout).unwrap_or_default();

    assert_eq!(
        login.status(),
        StatusCode::OK,
        "the printed password signs in"
    );
    assert_eq!(
        (drops, products),
        (3, 4),
        "a second start seeds nothing more"
    );
    assert!(
        !log.contains("admin sign-in"),
        "the password is shown once: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_mode_seeds_no_demo_unless_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let prefix = format!("hdtest:{}", uuid::Uuid::new_v4().simple());
    let database = fresh_postgres_database().await;
    let env = HashMap::from([
        ("PORT", port.to_string()),
        ("DATA_DIR", dir.path().display().to_string()),
        ("DATABASE_URL", database.url().to_owned()),
        ("REDIS_URL", test_redis_url()),
        ("REDIS_PREFIX", prefix.clone()),
        ("JWT_ACCESS_SECRET", SECRET.to_owned()),
    ]);

    let api = Process::start("api", &env, false);
    wait_ready(&base).await;
    let drops: Value = reqwest::get(format!("{base}/api/drops"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api.terminate().await.success());
    tests::delete_redis_prefix(&test_redis_url(), &prefix)
        .await
        .expect("the test's own keys are removed");

    assert_eq!(drops, json!([]), "nothing seeded");
    assert!(!dir.path().join(api::dev::demo::PASSWORD_FILE).exists());
}

/// README starts the development SMTP sink with `&`: a background job's stdin is at its end
/// from the start, and the sink must keep serving until it is signalled.
#[tokio::test]
async fn the_development_smtp_sink_keeps_serving_in_the_background() {
    let dir = tempfile::tempdir().expect("dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp/smtp_server.py");
    let mut sink = std::process::Command::new("python3")
        .arg(script)
        .arg("--out")
        .arg(dir.path().join("mail.jsonl"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs (with aiosmtpd: bash scripts/services.sh)");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = sink.try_wait().expect("wait").is_none();
    let _ = sink.kill();
    let _ = sink.wait();

    assert!(running, "the sink stopped as soon as it started");
}
