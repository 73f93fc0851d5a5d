//! What the store shows to whom: which browser origins may read its answers (CORS, REST and
//! Socket.IO alike) and who may read `/metrics`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use tests::{Backend, TestApp, both_backends, spawn_app, spawn_app_with};

const SHOP: &str = "https://shop.example.com";
const ELSEWHERE: &str = "https://evil.example.net";

/// The `Access-Control-Allow-Origin` a preflight and a plain GET from `origin` get on `path`.
async fn allowed_origin(app: &TestApp, path: &str, origin: &str) -> [Option<String>; 2] {
    let url = format!("{}{path}", app.address);
    let preflight = app
        .client
        .request(Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    let get = app
        .client
        .get(&url)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert!(
        get.status().is_success(),
        "{path} from {origin}: a request from any origin is still served, got {}",
        get.status()
    );
    [preflight, get].map(|answer| {
        answer
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    })
}

const PATHS: [&str; 2] = ["/api/drops", "/socket.io/?EIO=4&transport=polling"];

async fn any_origin_embedded_none_distributed_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in PATHS {
        let answers = allowed_origin(&app, path, SHOP).await;
        match backend {
            Backend::Embedded => assert_eq!(answers, [Some(SHOP.into()), Some(SHOP.into())]),
            Backend::PostgresRedis => assert_eq!(answers, [None, None], "{path}"),
        }
    }
}

async fn only_the_listed_origins_may_read_answers(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[(
            "CORS_ALLOWED_ORIGINS",
            "https://shop.example.com,http://localhost:5173",
        )],
    )
    .await;
    for path in PATHS {
        assert_eq!(
            allowed_origin(&app, path, SHOP).await,
            [Some(SHOP.into()), Some(SHOP.into())],
            "{path}"
        );
        assert_eq!(
            allowed_origin(&app, path, ELSEWHERE).await,
            [None, None],
            "{path}"
        );
    }
}

async fn metrics_need_the_token_when_one_is_set(backend: Backend) {
    let token = "metrics-token-0123456789abcdef";
    let app = spawn_app_with(backend, &[("METRICS_TOKEN", token)]).await;
    let metrics = |auth: Option<&'static str>| {
        let mut request = app.client.get(format!("{}/metrics", app.address));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789abcdef"),
        Some("Bearer metrics-token-0123456789abcde"),
        Some("Basic bWV0cmljcy10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm"),
    ] {
        let answer = tests::answer(metrics(auth).await.unwrap()).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{auth:?}"
        );
    }
    let answer = metrics(Some("Bearer metrics-token-0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("honeydrop_http_responses_total")
    );
}

both_backends!(
    any_origin_embedded_none_distributed_by_default,
    only_the_listed_origins_may_read_answers,
    metrics_need_the_token_when_one_is_set,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_without_a_token() {
    let app = spawn_app(Backend::Embedded).await;
    let answer = app.get("/metrics", None).await;
    assert_eq!(answer.status, StatusCode::OK);
}

/// A distributed store is on a network: its sales figures are not for anyone who asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_closed_in_distributed_mode_without_a_token() {
    let app = spawn_app_with(Backend::PostgresRedis, &[("METRICS_TOKEN", "")]).await;
    let answer = app.get("/metrics", None).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{:?}",
        answer.body
    );
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("METRICS_TOKEN")
    );
}

/// Any local user could read a world-readable secret and mint an admin token, or read the
/// database or the links in the outbox: an embedded store's files are its owner's alone.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_stores_secret_database_and_outbox_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let data_dir = data.display().to_string();
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("DATA_DIR", &data_dir),
            ("DATABASE_URL", ""),
            ("JWT_ACCESS_SECRET", ""),
        ],
    )
    .await;
    let admin = app.admin().await;
    let created = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            serde_json::json!({"name": "Clover Honey", "priceCents": 800, "inStock": false}),
        )
        .await;
    let id = created.body["id"].as_i64().unwrap();
    let answer = app
        .post(
            &format!("/api/products/{id}/notify-me"),
            None,
            serde_json::json!({"email": "ann@example.com"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let outbox = data.join("outbox");
    let mail = tests::eventually(std::time::Duration::from_secs(20), || async {
        std::fs::read_dir(&outbox)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "eml"))
    })
    .await
    .expect("an email in the outbox");

    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&outbox), 0o700, "the outbox directory");
    for file in [
        data.join("jwt_access_secret"),
        data.join("honeydrop.db"),
        mail,
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    for extra in ["honeydrop.db-wal", "honeydrop.db-shm"] {
        let path = data.join(extra);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
