//! The smaller hardening points of issue 28: HTML answers say what they may load and who
//! may frame them, the big files travel compressed, an email the mailer would refuse is
//! refused at the door, and a JSON body that names a key twice is refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Smtp, link_token, store_with};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::{Backend, both_backends, spawn_app};

async fn every_html_answer_carries_its_security_headers(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &[]).await;
    let admin = store.app.admin().await;
    let created = store
        .app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Clover Honey", "priceCents": 800, "inStock": false}),
        )
        .await;
    let id = created.body["id"].as_i64().unwrap();
    store.notify_me(id, "ann@example.com").await;
    let email = store.smtp.wait_for("ann@example.com", 1).await.remove(0);
    let confirm = link_token(&email, "/api/subscriptions/confirm?token=");
    let unsubscribe = link_token(&email, "/api/subscriptions/unsubscribe?token=");

    for (method, path) in [
        (Method::GET, "/".to_owned()),
        (Method::GET, "/ops".to_owned()),
        (Method::GET, "/docs".to_owned()),
        (
            Method::GET,
            format!("/api/subscriptions/confirm?token={confirm}"),
        ),
        (
            Method::GET,
            format!("/api/subscriptions/unsubscribe?token={unsubscribe}"),
        ),
        (
            Method::POST,
            format!("/api/subscriptions/confirm?token={confirm}"),
        ),
    ] {
        let answer = store
            .app
            .client
            .request(method.clone(), format!("{}{path}", store.app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{method} {path}");
        let headers = answer.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with("text/html"), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy:?}"
        );
        assert!(policy.contains("default-src"), "{path}: {policy:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
}

async fn the_docs_and_the_storefronts_files_travel_compressed(backend: Backend) {
    let app = spawn_app(backend).await;
    for (path, encoding) in [
        ("/docs", "br"),
        ("/docs", "gzip"),
        ("/", "gzip"),
        ("/static/storefront.js", "br"),
    ] {
        let answer = app
            .client
            .get(format!("{}{path}", app.address))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        assert_eq!(
            answer
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(encoding),
            "{path}"
        );
        if path == "/docs" {
            let size = answer.bytes().await.unwrap().len();
            assert!(
                size < 800_000,
                "/docs is {size} bytes compressed as {encoding}"
            );
        }
    }
    let plain = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
}

async fn an_address_the_mailer_would_refuse_is_refused_at_the_door(backend: Backend) {
    let store = store_with(backend, Smtp::Accepting, &[]).await;
    let admin = store.app.admin().await;
    let created = store
        .app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Clover Honey", "priceCents": 800, "inStock": false}),
        )
        .await;
    let id = created.body["id"].as_i64().unwrap();

    let notify = store
        .app
        .post(
            &format!("/api/products/{id}/notify-me"),
            None,
            json!({"email": "a..b@example.com"}),
        )
        .await;
    let signup = store
        .app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "a..b@example.com", "password": "a long password"}),
        )
        .await;

    for answer in [notify, signup] {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
        assert_eq!(answer.code(), "validation_failed");
    }
    assert!(store.ledger().await.is_empty(), "an email was queued");
}

async fn a_json_body_naming_a_key_twice_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let body =
        r#"{"email":"ann@example.com","password":"a long password","email":"bob@example.com"}"#;

    let answer = tests::answer(
        app.client
            .post(format!("{}/api/auth/signup", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.code(), "duplicate_json_key");
    assert!(answer.body["message"].as_str().unwrap().contains("email"));
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "bob@example.com", "password": "a long password"}),
        )
        .await;
    assert_eq!(
        login.status,
        StatusCode::UNAUTHORIZED,
        "an account was made"
    );
    let nested = tests::answer(
        app.client
            .post(format!("{}/api/auth/login", app.address))
            .header("content-type", "application/json")
            .body(r#"{"email":"a@example.com","password":"x","extra":{"k":1,"k":2}}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(nested.code(), "duplicate_json_key");
}

both_backends!(
    every_html_answer_carries_its_security_headers,
    the_docs_and_the_storefronts_files_travel_compressed,
    an_address_the_mailer_would_refuse_is_refused_at_the_door,
    a_json_body_naming_a_key_twice_is_refused,
);
