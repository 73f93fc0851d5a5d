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
