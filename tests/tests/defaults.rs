//! Safe by default, told once: mail that reaches nobody is never `sent`, the demo store,
//! and the live protocol, token lifetime, reserve answers and CORS as documented.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use entity::models::email_messages::{self, MessageStatus};
use reqwest::{Method, StatusCode};
use sea_orm::EntityTrait;
use serde_json::json;
use tests::{
    Backend, both_backends, eventually, next_frame, send_frame, spawn_app, spawn_app_with,
};

// ---------------------------------------------------------------- mail that reaches nobody

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_mail_in_distributed_mode_is_written_but_never_recorded_sent() {
    // The harness runs distributed workers with MAIL_TRANSPORT=outbox.
    let app = spawn_app(Backend::PostgresRedis).await;
    let admin = app.admin().await;
    let product = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Heather Honey", "priceCents": 1250, "inStock": false}),
        )
        .await;
    let id = product.body["id"].as_i64().unwrap();
    let asked = app
        .post(
            &format!("/api/products/{id}/notify-me"),
            None,
            json!({"email": "ann@example.com"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{:?}", asked.body);

    let email = eventually(Duration::from_secs(20), || async {
        let rows = email_messages::Entity::find().all(&app.db).await.unwrap();
        rows.into_iter().find(|m| m.status != MessageStatus::Queued)
    })
    .await
    .expect("the confirmation email was handled");

    assert_eq!(email.status, MessageStatus::Failed, "{email:?}");
    let reason = email.last_error.unwrap_or_default();
    assert!(reason.contains("not delivered"), "{reason}");
    assert!(reason.contains("MAIL_TRANSPORT=outbox"), "{reason}");
    let outbox = std::path::Path::new(&app.vars["DATA_DIR"]).join("outbox");
    assert_eq!(
        std::fs::read_dir(&outbox).map(Iterator::count).unwrap_or(0),
        1,
        "the file is still written, for a developer to read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_endpoint_says_where_distributed_mail_goes() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let admin = app.admin().await;

    let answer = app.get("/api/admin/outbox", Some(&admin.token)).await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "outbox_disabled");
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("each worker process") && message.contains("own disk"),
        "{message}"
    );
}

// ---------------------------------------------------------------- the demo store

async fn demo_store(backend: Backend) {
    let app = spawn_app_with(backend, &[("DEMO_DATA", "true")]).await;

    let drops = app.get("/api/drops", None).await;
    let drops = drops.body.as_array().expect("a list of drops");
    let status_of = |name: &str| {
        drops
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["status"].clone())
    };
    assert_eq!(
        status_of("Golden Hive Runner"),
        Some(json!("live")),
        "{drops:?}"
    );
    assert_eq!(
        status_of("Midnight Bee Hi-Top"),
        Some(json!("upcoming")),
        "{drops:?}"
    );
    let draw = drops
        .iter()
        .find(|d| d["name"] == "Queen's Reserve (draw)")
        .expect("the draw is listed");
    assert_eq!(draw["mode"], "draw", "{draw}");
    let products = app.get("/api/products", None).await;
    let products = products
        .body
        .as_array()
        .expect("a list of products")
        .clone();
    assert_eq!(products.len(), 4, "{products:?}");
    let sold_out = products
        .iter()
        .find(|p| p["inStock"] == false)
        .expect("one product is sold out");
    let id = sold_out["id"].as_i64().unwrap();
    let notify = app
        .post(
            &format!("/api/products/{id}/notify-me"),
            None,
            json!({"email": "ann@example.com"}),
        )
        .await;
    assert_eq!(notify.status, StatusCode::ACCEPTED, "{:?}", notify.body);

    let saved = std::fs::read_to_string(
        std::path::Path::new(&app.vars["DATA_DIR"]).join(api::dev::demo::PASSWORD_FILE),
    )
    .expect("the admin password is kept");
    let password = saved.lines().nth(1).expect("email, then password");
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": api::dev::demo::ADMIN_EMAIL, "password": password}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    assert_eq!(login.body["user"]["role"], "admin", "{:?}", login.body);
}

both_backends!(demo_store);

// ---------------------------------------------------------------- the live protocol

async fn the_documented_ping_is_answered_with_or_without_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut socket, _) = app.websocket(None).await;

    for ping in [
        json!({"event": "ping", "data": {}}),
        json!({"event": "ping"}),
        json!({"event": "ping", "data": null}),
    ] {
        send_frame(&mut socket, ping.clone()).await;
        let answer = next_frame(&mut socket, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(answer["event"], "pong", "{ping} got {answer}");
    }
}

both_backends!(the_documented_ping_is_answered_with_or_without_data);

/// README and the Swagger description show the one generated table of events, and the
/// description says this server's own durations.
#[tokio::test]
async fn readme_and_swagger_list_the_same_events_and_the_configured_durations() {
    let table = worker::events::events_table();
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&table),
        "README's event table is not worker::events::events_table():\n{table}"
    );
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("RESERVATION_TTL_SECS", "90"),
            ("ACCESS_TOKEN_TTL_SECS", "1800"),
        ],
    )
    .await;
    let spec = app.get("/openapi.json", None).await;
    let description = spec.body["info"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(description.contains(&table), "{description}");
    for event in [
        "subscribed",
        "authenticated",
        "error",
        "hold_offered",
        "draw_result",
    ] {
        assert!(description.contains(&format!("`{event}`")), "{event}");
    }
    assert!(description.contains("90 s"), "{description}");
    assert!(description.contains("30 minutes"), "{description}");
    assert!(!description.contains("60 s"), "{description}");
}

async fn an_access_token_is_refused_once_it_expires(backend: Backend) {
    let app = spawn_app_with(backend, &[("ACCESS_TOKEN_TTL_SECS", "1")]).await;
    let user = app.signup("brief@example.com", "password one").await;
    assert_eq!(
        app.get("/api/auth/me", Some(&user.token)).await.status,
        StatusCode::OK
    );

    // `exp` is in whole seconds: a 1 s token is past it within 2 s of being issued.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let late = app.get("/api/auth/me", Some(&user.token)).await;

    assert_eq!(late.status, StatusCode::UNAUTHORIZED, "{:?}", late.body);
}

both_backends!(an_access_token_is_refused_once_it_expires);

// ---------------------------------------------------------------- one answer, both backends

async fn the_holder_of_the_last_unit_who_reserves_again_is_told_already_reserved(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let buyer = app.customer("last").await;
    let path = format!("/api/drops/{drop_id}/reserve");
    let first = app.post(&path, Some(&buyer.token), json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);

    let again = app.post(&path, Some(&buyer.token), json!({})).await;
    let other = app.customer("other").await;
    let someone_else = app.post(&path, Some(&other.token), json!({})).await;

    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.code(), "already_reserved");
    assert_eq!(someone_else.code(), "sold_out");
    assert!(app.audit(drop_id).await.holds());
}

both_backends!(the_holder_of_the_last_unit_who_reserves_again_is_told_already_reserved);

async fn a_refused_preflight_carries_no_cors_grant(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("CORS_ALLOWED_ORIGINS", "https://shop.example.com")],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/api/drops", app.address))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };

    let refused = preflight("https://evil.example.net").await.unwrap();
    let allowed = preflight("https://shop.example.com").await.unwrap();

    let granted: Vec<String> = refused
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    assert!(granted.is_empty(), "a refused origin got {granted:?}");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(
        allowed
            .headers()
            .contains_key("access-control-allow-methods")
    );
}

both_backends!(a_refused_preflight_carries_no_cors_grant);

// ---------------------------------------------------------------- clean after itself

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_test_app_leaves_no_database_or_redis_keys_behind() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 2).await;
    let buyer = app.customer("cleaner").await;
    let hold = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&buyer.token),
            json!({}),
        )
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{:?}", hold.body);
    let database = app.vars["DATABASE_URL"]
        .rsplit_once('/')
        .map(|(_, name)| name.to_owned())
        .unwrap();
    let prefix = app.vars["REDIS_PREFIX"].clone();
    let mut redis = redis::Client::open(tests::test_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Another store's key in the same Redis, which must survive.
    let neighbour = format!("hdtest:{}:kept", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("SET")
        .arg(&neighbour)
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let scanner = redis.clone();
    let keys = |pattern: String| {
        let mut redis = scanner.clone();
        async move {
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            found
        }
    };
    assert!(
        !keys(format!("{prefix}:*")).await.is_empty(),
        "the app made keys"
    );

    app.stop().await.unwrap();

    let admin_db = sea_orm::Database::connect(tests::test_database_url())
        .await
        .unwrap();
    let left = sea_orm::ConnectionTrait::query_all_raw(
        &admin_db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT datname FROM pg_database WHERE datname = '{database}'"),
        ),
    )
    .await
    .unwrap();
    assert!(left.is_empty(), "{database} is still there");
    assert_eq!(keys(format!("{prefix}:*")).await, Vec::<String>::new());
    let listed: Vec<String> = redis::cmd("ZRANGE")
        .arg("core:apalis:queues:list")
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        !listed.iter().any(|q| q.starts_with(&prefix)),
        "its queues are still listed"
    );
    assert_eq!(keys(neighbour.clone()).await, vec![neighbour.clone()]);
    let _: () = redis::cmd("DEL")
        .arg(&neighbour)
        .query_async(&mut redis)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- README as a user's guide

const README: &str = include_str!("../../README.md");

/// The text of README's `## title` section.
fn section(title: &str) -> &'static str {
    let start = README
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let rest = &README[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[test]
fn the_quick_start_names_what_the_build_needs_and_what_to_look_for() {
    let manifest = include_str!("../../Cargo.toml");
    let rust = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the workspace's rust-version");
    let quick = section("Quick start");
    for needed in [
        format!("Rust {rust} or newer"),
        "C compiler".to_owned(),
        "minutes".to_owned(),
        "cargo run".to_owned(),
        "http://127.0.0.1:3000/docs".to_owned(),
        "admin sign-in:".to_owned(),
        "/api/auth/signup".to_owned(),
        "/api/drops".to_owned(),
        "/reserve".to_owned(),
        "stock_update".to_owned(),
        "/purchase".to_owned(),
    ] {
        assert!(
            quick.contains(&needed),
            "Quick start does not say {needed:?}"
        );
    }
    let procfile = &README[README.find("### Procfile").expect("a Procfile section")..];
    assert!(
        procfile[..400].contains("cargo build --release"),
        "the Procfile section says to build release first"
    );
}

#[test]
fn every_setting_is_in_the_grouped_table_and_the_checklist_says_why() {
    let settings = [
        include_str!("../../worker/src/platform/settings/mod.rs"),
        include_str!("../../worker/src/platform/settings/env.rs"),
        include_str!("../../worker/src/platform/settings/read.rs"),
        include_str!("../../worker/src/platform/settings/abuse.rs"),
        include_str!("../../worker/src/platform/settings/anonymous.rs"),
        include_str!("../../worker/src/platform/settings/database.rs"),
        include_str!("../../worker/src/platform/settings/redis_target.rs"),
        // The api's own settings, read beside the shared ones.
        include_str!("../../api/src/settings.rs"),
    ]
    .concat();
    // The limits on what anyone may do without an account are listed under Security.
    let table = [section("Configuration"), section("Security")].concat();
    let mut names: Vec<&str> = settings
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3 && s.contains('_') && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() > 40, "{names:?}");
    for name in names {
        assert!(
            table.contains(&format!("`{name}`")),
            "{name} is missing from README's configuration table"
        );
    }
    for group in [
        "HTTP",
        "Accounts",
        "Database",
        "Redis",
        "Mail",
        "Jobs",
        "Limits",
        "Observability",
    ] {
        assert!(table.contains(&format!("| **{group}** |")), "{group}");
    }
    assert!(
        table.contains("IP literal"),
        "HOST's IP literal is said where it is listed"
    );
    let checklist = section("Production checklist");
    for name in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_ACCESS_SECRET",
        "SMTP_URL",
        "PUBLIC_BASE_URL",
        "CORS_ALLOWED_ORIGINS",
        "METRICS_TOKEN",
        "CONTENTFUL_WEBHOOK_SECRET",
    ] {
        let row = checklist
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}")))
            .unwrap_or_else(|| panic!("{name} is not in the checklist"));
        assert!(row.len() > 60, "{name} without a why: {row}");
        assert!(
            table.contains(&format!("`{name}` ★")),
            "{name} is not marked ★"
        );
    }
    assert!(checklist.contains("proxy"), "proxies");
    assert!(
        README.lines().count() < 600,
        "README stays a compact user's guide"
    );
}
