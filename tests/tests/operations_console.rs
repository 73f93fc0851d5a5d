//! The operations console in a browser (headless Chromium driving `tests/browser/ops.mjs`),
//! on the distributed backend with real `worker` processes and a real SMTP sink: an operator
//! pauses mail through a restock and resumes it, retries alerts a broken SMTP server
//! refused, quiets a worker, and sees a killed one gone.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use common::{Smtp, Store, link_token, store_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, TestApp, TestUser, eventually, process::Process};

/// The password every test user has (see `tests::mint_user`).
const PASSWORD: &str = "test-password";
/// Heartbeats every half second: a killed worker is gone after 1.5 s.
const HEARTBEAT: (&str, &str) = ("WORKER_HEARTBEAT_MS", "500");

/// Runs one scenario of `tests/browser/ops.mjs` and fails with its output unless it passed.
async fn browser(scenario: &str, app: &TestApp, admin: &TestUser, mut args: Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let how = "the browser tests need Node.js, Debian's chromium and `npm ci` in tests/browser: \
               run `bash scripts/services.sh`";
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir(),
        "puppeteer-core is not installed; {how}"
    );
    args["admin"] = json!(admin.email);
    args["adminPassword"] = json!(PASSWORD);
    let run = tokio::process::Command::new("node")
        .arg(dir.join("ops.mjs"))
        .arg(scenario)
        .arg(&app.address)
        .arg(args.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("the {scenario} scenario did not finish in 2 minutes"))
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {how}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the {scenario} scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// The in-process worker of the test harness makes way for `n` real `worker` processes.
async fn worker_processes(app: &mut TestApp, n: usize) -> Vec<Process> {
    if let Some(worker) = app.worker.take() {
        worker.stop().await;
    }
    let env: HashMap<&str, String> = app
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    (0..n)
        .map(|_| Process::start("worker", &env, false))
        .collect()
}

/// The name a worker process reports under, found by its pid.
async fn worker_name(app: &TestApp, admin: &TestUser, process: &mut Process) -> String {
    let pid = i64::from(process.child().id());
    eventually(Duration::from_secs(20), || async {
        let workers = app
            .get("/api/admin/ops/workers", Some(&admin.token))
            .await
            .body;
        workers
            .as_array()?
            .iter()
            .find(|w| w["pid"] == pid && w["state"] == "running")?["name"]
            .as_str()
            .map(str::to_owned)
    })
    .await
    .expect("the worker process reports in")
}

fn product(slug: &str, in_stock: bool) -> Value {
    json!({"name": format!("Honey {slug}"), "slug": slug, "price": 9.5, "inStock": in_stock})
}

/// `n` confirmed subscribers of a new sold-out product, with their confirmations delivered.
async fn subscribers(store: &Store, entry: &str, n: usize) -> (i64, Vec<String>) {
    let id = store.publish(entry, 1, product(entry, false)).await.body["productId"]
        .as_i64()
        .unwrap();
    let emails: Vec<String> = (0..n).map(|i| format!("{entry}-{i}@example.com")).collect();
    for email in &emails {
        store.confirmed_subscriber(id, email).await;
    }
    (id, emails)
}

fn screenshot(name: &str) -> String {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).expect("docs directory");
    docs.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_holds_mail_through_a_restock_and_retries_what_a_broken_server_refused() {
    let mut store = store_with(Backend::PostgresRedis, Smtp::Accepting, &[HEARTBEAT]).await;
    let _workers = worker_processes(&mut store.app, 2).await;
    let admin = store.app.admin().await;

    // Pause: a restock queues every alert and sends none; resume sends each once.
    let (_, first) = subscribers(&store, "acacia", 5).await;
    browser("pause", &store.app, &admin, json!({"queue": "mail"})).await;
    store.publish("acacia", 2, product("acacia", true)).await;
    let queued = eventually(Duration::from_secs(15), || async {
        let ledger = store.ledger().await;
        (ledger.iter().filter(|m| m.sent_at.is_none()).count() == 5).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the fan-out queued five alerts");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        first.iter().all(|e| store.smtp.messages_to(e).len() == 1),
        "no alert left while paused"
    );
    let args = json!({"queue": "mail", "ready": 5, "screenshot": screenshot("ops.png")});
    browser("resume", &store.app, &admin, args).await;
    for email in &first {
        store.smtp.wait_for(email, 2).await;
    }

    // A broken server: every alert fails for good; fixed, Retry all sends each once.
    let (_, second) = subscribers(&store, "heather", 4).await;
    store.smtp.restart_as(Smtp::Rejecting).await;
    store.publish("heather", 2, product("heather", true)).await;
    let failed = eventually(Duration::from_secs(15), || async {
        let ledger = store.ledger().await;
        (ledger
            .iter()
            .filter(|m| m.last_error.as_deref().is_some_and(|e| e.contains("550")))
            .count()
            == 4)
            .then_some(())
    })
    .await;
    assert!(
        failed.is_some(),
        "four alerts failed: {:?}",
        store.ledger().await
    );
    store.smtp.restart_as(Smtp::Accepting).await;
    browser(
        "retry-all",
        &store.app,
        &admin,
        json!({"queue": "mail", "failed": 4}),
    )
    .await;
    for email in &second {
        store.smtp.wait_for(email, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for email in first.iter().chain(&second) {
        let mail = store.smtp.messages_to(email);
        assert_eq!(mail.len(), 2, "{email}: the confirmation and one alert");
        assert!(link_token(&mail[1], "/api/subscriptions/unsubscribe?token=").len() > 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quieted_worker_takes_no_new_work_and_a_killed_one_is_shown_gone() {
    let mut app = tests::spawn_app_with(Backend::PostgresRedis, &[HEARTBEAT]).await;
    let mut workers = worker_processes(&mut app, 2).await;
    let admin = app.admin().await;
    let quiet = worker_name(&app, &admin, &mut workers[0]).await;
    let busy = worker_name(&app, &admin, &mut workers[1]).await;

    browser("quiet", &app, &admin, json!({"worker": quiet})).await;
    for _ in 0..4 {
        let ping = app
            .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
            .await;
        assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
        assert!(
            ping.body["worker"].as_str().unwrap().starts_with(&busy),
            "only the other worker runs jobs: {:?}",
            ping.body
        );
    }

    workers.remove(1).kill_hard();
    browser("gone", &app, &admin, json!({"worker": busy})).await;
    let quieted = app
        .get("/api/admin/ops/workers", Some(&admin.token))
        .await
        .body;
    let still = quieted
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == quiet.as_str())
        .unwrap();
    assert_eq!(
        still["state"], "quiet",
        "the quiet worker lives on, quiet: {still}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_the_figures_to_scale_on() {
    let token = "a-metrics-token-for-the-workers";
    let port = tests::free_port();
    let mut app = tests::spawn_app_with(
        Backend::PostgresRedis,
        &[HEARTBEAT, ("METRICS_TOKEN", token)],
    )
    .await;
    app.vars.insert("METRICS_PORT".into(), port.to_string());
    let mut workers = worker_processes(&mut app, 1).await;
    let admin = app.admin().await;
    worker_name(&app, &admin, &mut workers[0]).await;
    let drop_id = app.create_drop(&admin, 3).await;
    let buyer = app.customer("ann").await;
    let held = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(held.status, StatusCode::CREATED);
    let ping = app
        .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
        .await;
    assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
    app.post(
        "/api/admin/ops/queues/fanout/pause",
        Some(&admin.token),
        json!({}),
    )
    .await;

    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let refused = client.get(&url).send().await.expect("the worker listens");
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "METRICS_TOKEN guards the worker's figures too"
    );
    let text = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "honeydrop_queue_items{queue=\"expiry\",state=\"scheduled\"} 1",
        "honeydrop_queue_paused{queue=\"fanout\"} 1",
        "honeydrop_queue_paused{queue=\"mail\"} 0",
        "honeydrop_jobs_total{queue=\"ping\",outcome=\"done\"} 1",
        "honeydrop_job_duration_seconds_count{queue=\"ping\"} 1",
        "honeydrop_queue_oldest_ready_seconds{queue=\"mail\"}",
        "honeydrop_jobs_in_flight{queue=\"mail\"} 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let api = client
        .get(format!("{}/metrics", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        api.contains("honeydrop_queue_items{queue=\"expiry\",state=\"scheduled\"} 1"),
        "the api shows the queues too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_the_workers_that_obeyed_it() {
    let mut store = store_with(Backend::PostgresRedis, Smtp::Accepting, &[HEARTBEAT]).await;
    let mut workers = worker_processes(&mut store.app, 1).await;
    let admin = store.app.admin().await;
    let id = store
        .publish("clover", 1, product("clover", false))
        .await
        .body["productId"]
        .as_i64()
        .unwrap();
    let paused = store
        .app
        .post(
            "/api/admin/ops/queues/mail/pause",
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK);

    // Every worker is replaced, the old one killed outright. An email is already due when
    // the new one starts: it reads the pause before its mail pump claims anything.
    workers.remove(0).kill_hard();
    store.notify_me(id, "late@example.com").await;
    let env: HashMap<&str, String> = store
        .app
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut fresh = Process::start("worker", &env, false);
    worker_name(&store.app, &admin, &mut fresh).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        store.smtp.messages_to("late@example.com").is_empty(),
        "nothing is sent while paused"
    );

    let resumed = store
        .app
        .post(
            "/api/admin/ops/queues/mail/resume",
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    store.smtp.wait_for("late@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        store.smtp.messages_to("late@example.com").len(),
        1,
        "sent once"
    );
}
