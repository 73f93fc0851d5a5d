#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, both_backends, spawn_app, spawn_app_with};

async fn health_readiness_and_docs_are_served(backend: Backend) {
    let app = spawn_app(backend).await;

    let health = app.get("/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");

    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    assert_eq!(ready.body["database"], "ok");
    let expected_mode = if backend == Backend::Embedded {
        "embedded"
    } else {
        "distributed"
    };
    assert_eq!(ready.body["mode"], expected_mode);
    if backend == Backend::PostgresRedis {
        assert_eq!(ready.body["redis"], "ok");
    }

    let spec = app.get("/openapi.json", None).await;
    assert_eq!(spec.status, StatusCode::OK);
    for path in [
        "/api/auth/signup",
        "/api/drops",
        "/api/drops/{dropId}/reserve",
        "/api/drops/{reserveId}/purchase",
    ] {
        assert!(
            spec.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        spec.body["components"]["securitySchemes"]["BearerAuth"].is_object(),
        "bearer scheme not declared"
    );
    let codes = &spec.body["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(
        codes
            .as_array()
            .is_some_and(|c| c.contains(&json!("sold_out"))),
        "error codes not listed: {codes}"
    );

    let docs = app
        .client
        .get(format!("{}/docs/", app.address))
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap_or_default().contains("swagger"),
        "Swagger UI not served"
    );
}

async fn poems_own_errors_use_the_json_error_shape(backend: Backend) {
    let app = spawn_app(backend).await;

    let unknown = app.get("/no/such/route", None).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let wrong_method = app.request(Method::DELETE, "/healthz", None, None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    let malformed = tests::answer(
        app.client
            .post(format!("{}/api/auth/signup", app.address))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    assert!(
        malformed.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let huge = "x".repeat(200 * 1024);
    let oversized = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "a@example.com", "password": huge}),
        )
        .await;
    assert_eq!(
        (oversized.status, oversized.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // Chunked bodies have no Content-Length to check up front; they are cut off all the same.
    let stream = futures::stream::iter((0..33).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096])));
    let chunked = tests::answer(
        app.client
            .post(format!("{}/api/auth/signup", app.address))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (chunked.status, chunked.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let echoed = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let fresh = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("sent");
    assert!(
        fresh
            .headers()
            .get("x-request-id")
            .is_some_and(|v| v.len() >= 32)
    );
}

async fn the_app_shuts_down_gracefully(backend: Backend) {
    let app = spawn_app(backend).await;
    let address = app.address.clone();
    app.stop().await.expect("clean shutdown");
    let after = reqwest::Client::new()
        .get(format!("{address}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(after.is_err(), "still serving after shutdown");
}

both_backends!(
    health_readiness_and_docs_are_served,
    poems_own_errors_use_the_json_error_shape,
    every_response_carries_a_request_id,
    the_app_shuts_down_gracefully,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().display().to_string();
    let db = format!("sqlite://{}/honeydrop.db?mode=rwc", data_dir);
    let overrides = [
        ("DATA_DIR", data_dir.as_str()),
        ("DATABASE_URL", db.as_str()),
    ];

    let first = spawn_app_with(Backend::Embedded, &overrides).await;
    first
        .signup("persistent@example.com", "a good password")
        .await;
    first.stop().await.expect("stops");

    let second = spawn_app_with(Backend::Embedded, &overrides).await;
    let login = second
        .post(
            "/api/auth/login",
            None,
            json!({"email": "persistent@example.com", "password": "a good password"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
}

/// Two workers share the queue; every job goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_the_api_runs_on_exactly_one_of_two_workers() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let second = app.spawn_worker().await;
    let admin = app.admin().await;

    // Listen to the raw Redis channel, as a third process would, and count every answer.
    let prefix = app.vars["REDIS_PREFIX"].clone();
    let client = redis::Client::open(tests::test_redis_url()).expect("redis");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(format!("{prefix}:events"))
        .await
        .expect("subscribe");
    let mut messages = pubsub.into_on_message();

    let mut workers = std::collections::HashSet::new();
    for _ in 0..12 {
        let ping = app
            .post("/api/admin/worker-ping", Some(&admin.token), json!({}))
            .await;
        assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
        workers.insert(
            ping.body["worker"]
                .as_str()
                .unwrap_or_default()
                .split("-ping")
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Give any duplicate delivery time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pongs: Vec<Value> = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), messages.next()).await
    {
        let event: Value =
            serde_json::from_str(&message.get_payload::<String>().unwrap_or_default())
                .unwrap_or_default();
        if event["event"] == "worker_pong" {
            pongs.push(event["data"].clone());
        }
    }
    assert_eq!(
        pongs.len(),
        12,
        "each ping answered exactly once: {pongs:?}"
    );
    let distinct: std::collections::HashSet<_> = pongs
        .iter()
        .map(|p| p["token"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(distinct.len(), 12);
    assert!(
        workers.iter().all(|w| w.starts_with("test-worker-")),
        "{workers:?}"
    );
    second.stop().await;
}

async fn metrics_count_what_happened(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let (a, b) = (app.customer("m1").await, app.customer("m2").await);
    app.post(
        &format!("/api/drops/{drop_id}/reserve"),
        Some(&a.token),
        json!({}),
    )
    .await;
    app.post(
        &format!("/api/drops/{drop_id}/reserve"),
        Some(&b.token),
        json!({}),
    )
    .await;
    app.get("/nowhere", None).await;
    let text = app.metrics().await;
    assert!(
        text.contains("honeydrop_reservations_total{outcome=\"created\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("honeydrop_reservations_total{outcome=\"sold_out\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("honeydrop_http_responses_total{class=\"4xx\"} 0"),
        "{text}"
    );
}

both_backends!(metrics_count_what_happened);
