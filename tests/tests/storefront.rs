//! The storefront at `/`: its files and headers, the endpoints written for it (product stats,
//! the development outbox), and the page itself driven in headless Chromium.
//!
//! The browser scenarios are in `tests/browser/storefront.mjs` (puppeteer-core pointed at
//! Debian's `chromium`; `bash scripts/services.sh` installs both). Each test here starts the
//! real app, seeds it through the API, and runs one scenario against it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use common::{Smtp, link_token, store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, TestApp, TestUser, both_backends, eventually, spawn_app, spawn_app_with};

const ADMIN_PASSWORD: &str = "test-password";

// ---------------------------------------------------------------- the page's files

#[tokio::test]
async fn the_page_is_served_at_the_root_with_a_strict_content_policy() {
    let app = spawn_app(Backend::Embedded).await;

    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), StatusCode::OK);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let etag = header("etag");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/static/storefront.js" defer></script>"#));
    assert!(
        html.contains(r#"href="/docs""#),
        "the page links to Swagger UI"
    );

    let again = app
        .client
        .get(format!("{}/", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn the_page_files_are_served_and_unknown_ones_get_the_error_shape() {
    let app = spawn_app(Backend::Embedded).await;

    for (path, content_type) in [
        ("/static/storefront.js", "text/javascript; charset=utf-8"),
        ("/static/storefront.css", "text/css; charset=utf-8"),
        ("/static/icon.svg", "image/svg+xml"),
        ("/static/comb.svg", "image/svg+xml"),
    ] {
        let file = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), StatusCode::OK, "{path}");
        assert_eq!(
            file.headers()["content-type"].to_str().unwrap(),
            content_type
        );
    }
    let missing = app.get("/static/%2e%2e%2fCargo.toml", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = app.get("/static/nothing.js", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "not_found");
    // What was there before the page still is.
    for path in ["/docs", "/openapi.json", "/healthz", "/api/drops"] {
        assert_eq!(app.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    let not_a_page = app.post("/", None, json!({})).await;
    assert_eq!(not_a_page.code(), "not_found");
}

#[tokio::test]
async fn the_new_endpoints_and_their_error_code_are_in_the_openapi_document() {
    let app = spawn_app(Backend::Embedded).await;

    let spec = app.get("/openapi.json", None).await.body;

    let stats = &spec["paths"]["/api/admin/products/{id}/stats"]["get"];
    let outbox = &spec["paths"]["/api/admin/outbox"]["get"];
    for operation in [stats, outbox] {
        assert!(operation["summary"].is_string(), "{operation}");
        for status in ["401", "403", "404"] {
            assert!(operation["responses"][status].is_object(), "{status}");
        }
    }
    let codes = spec["components"]["schemas"]["ErrorCode"]["enum"].to_string();
    assert!(codes.contains("\"outbox_disabled\""), "{codes}");
}

// ---------------------------------------------------------------- product stats

async fn product(app: &TestApp, admin: &TestUser, body: Value) -> i64 {
    let created = app
        .post("/api/admin/products", Some(&admin.token), body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body["id"].as_i64().unwrap()
}

async fn stats(app: &TestApp, admin: &TestUser, product_id: i64) -> Value {
    let answer = app
        .get(
            &format!("/api/admin/products/{product_id}/stats"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

async fn product_stats_count_subscribers_and_alerts(backend: Backend) {
    let store = store(backend, Smtp::Accepting).await;
    let app = &store.app;
    let admin = app.admin().await;
    let id = product(
        app,
        &admin,
        json!({"name": "Acacia Honey", "priceCents": 990, "inStock": false}),
    )
    .await;
    let empty = stats(app, &admin, id).await;
    assert_eq!(empty["confirmationRate"], Value::Null);
    assert_eq!(empty["restockCount"], 0);

    store.confirmed_subscriber(id, "ann@example.com").await;
    store.confirmed_subscriber(id, "bob@example.com").await;
    store.notify_me(id, "cy@example.com").await;
    let waiting = stats(app, &admin, id).await;
    assert_eq!(
        waiting["subscribers"],
        json!({"pending": 1, "confirmed": 2, "notified": 0, "unsubscribed": 0})
    );
    let rate = waiting["confirmationRate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");

    let restocked = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/admin/products/{id}"),
            Some(&admin.token),
            Some(json!({"inStock": true})),
        )
        .await;
    assert_eq!(restocked.status, StatusCode::OK, "{:?}", restocked.body);
    let sent = eventually(Duration::from_secs(20), || async {
        let s = stats(app, &admin, id).await;
        (s["alerts"]["sent"] == 2 && s["confirmations"]["sent"] == 3).then_some(s)
    })
    .await
    .expect("both alerts counted as sent");

    assert_eq!(
        sent["subscribers"],
        json!({"pending": 1, "confirmed": 0, "notified": 2, "unsubscribed": 0})
    );
    assert_eq!(sent["alerts"], json!({"queued": 0, "sent": 2, "failed": 0}));
    assert_eq!(sent["confirmations"]["sent"], 3);
    assert_eq!(sent["restockCount"], 1);
    let restocks = sent["recentRestocks"].as_array().unwrap();
    assert_eq!(restocks.len(), 1);
    assert_eq!(
        restocks[0]["alerts"],
        json!({"queued": 0, "sent": 2, "failed": 0})
    );
    let other = product(
        app,
        &admin,
        json!({"name": "Heather Honey", "priceCents": 1250, "inStock": false}),
    )
    .await;
    assert_eq!(
        stats(app, &admin, other).await["alerts"],
        json!({"queued": 0, "sent": 0, "failed": 0}),
        "another product's alerts are not counted"
    );
}

both_backends!(product_stats_count_subscribers_and_alerts);

#[tokio::test]
async fn product_stats_are_for_admins_and_known_products_only() {
    let app = spawn_app(Backend::Embedded).await;
    let admin = app.admin().await;
    let customer = app.customer("carol").await;
    let id = product(
        &app,
        &admin,
        json!({"name": "Acacia Honey", "priceCents": 990, "inStock": false}),
    )
    .await;
    let path = format!("/api/admin/products/{id}/stats");

    let anonymous = app.get(&path, None).await;
    let as_customer = app.get(&path, Some(&customer.token)).await;
    let unknown = app
        .get("/api/admin/products/999999/stats", Some(&admin.token))
        .await;

    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.code(), "unauthorized");
    assert_eq!(as_customer.status, StatusCode::FORBIDDEN);
    assert_eq!(as_customer.code(), "forbidden");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "product_not_found");
}

// ---------------------------------------------------------------- the development outbox

#[tokio::test]
async fn the_outbox_lists_the_latest_emails_with_links_that_work() {
    let app = spawn_app(Backend::Embedded).await;
    let admin = app.admin().await;
    let id = product(
        &app,
        &admin,
        json!({"name": "Acacia Honey", "priceCents": 990, "inStock": false}),
    )
    .await;
    for email in ["ann@example.com", "bob@example.com"] {
        let answer = app
            .post(
                &format!("/api/products/{id}/notify-me"),
                None,
                json!({ "email": email }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }

    let mails = eventually(Duration::from_secs(20), || async {
        let answer = app.get("/api/admin/outbox", Some(&admin.token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let mails = answer.body.as_array().cloned().unwrap_or_default();
        (mails.len() == 2).then_some(mails)
    })
    .await
    .expect("two confirmation emails in the outbox");

    let newest = &mails[0];
    assert!(
        newest["id"].as_i64() > mails[1]["id"].as_i64(),
        "newest first"
    );
    assert_eq!(
        newest["subject"],
        "Confirm: tell me when Acacia Honey is back"
    );
    assert!(newest["to"].as_str().unwrap().contains("bob@example.com"));
    assert!(newest["date"].is_string());
    assert!(newest["text"].as_str().unwrap().contains("Acacia Honey"));
    let confirm = newest["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.contains("/api/subscriptions/confirm?token="))
        .expect("a confirm link");
    let token = link_token(
        &json!({ "text": confirm }),
        "/api/subscriptions/confirm?token=",
    );
    let confirmed = app
        .request(
            reqwest::Method::POST,
            &format!("/api/subscriptions/confirm?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    let one = app
        .get("/api/admin/outbox?limit=1", Some(&admin.token))
        .await;
    assert_eq!(one.body.as_array().map(Vec::len), Some(1));
    let too_many = app
        .get("/api/admin/outbox?limit=1000", Some(&admin.token))
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_outbox_is_for_admins_only() {
    let app = spawn_app(Backend::Embedded).await;
    let customer = app.customer("carol").await;

    let anonymous = app.get("/api/admin/outbox", None).await;
    let as_customer = app.get("/api/admin/outbox", Some(&customer.token)).await;

    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(as_customer.status, StatusCode::FORBIDDEN);
    assert_eq!(as_customer.code(), "forbidden");
}

#[tokio::test]
async fn there_is_no_outbox_when_mail_goes_over_smtp() {
    let store = store(Backend::Embedded, Smtp::Accepting).await;
    let admin = store.app.admin().await;

    let answer = store.app.get("/api/admin/outbox", Some(&admin.token)).await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "outbox_disabled");
}

#[tokio::test]
async fn there_is_no_outbox_in_distributed_mode() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let admin = app.admin().await;

    let answer = app.get("/api/admin/outbox", Some(&admin.token)).await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "outbox_disabled");
}

// ---------------------------------------------------------------- in the browser

/// A store on a known port (links in its emails point at it), with an admin account.
async fn storefront(extra: &[(&str, &str)]) -> (TestApp, TestUser) {
    let port = tests::free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let mut vars = vec![("PORT", port.as_str()), ("PUBLIC_BASE_URL", base.as_str())];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(Backend::Embedded, &vars).await;
    let admin = app.admin().await;
    (app, admin)
}

/// The drops and products the scenarios (and the README's screenshot) use.
async fn seed(app: &TestApp, admin: &TestUser) {
    let in_three_hours = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    for drop in [
        json!({"name": "Honeycomb Runner", "description": "Knit upper in amber and black, a numbered run.", "priceCents": 18_000, "totalStock": 12}),
        json!({"name": "Amber Hi-Top", "description": "Suede hi-top with waxed laces.", "priceCents": 14_000, "totalStock": 3}),
        json!({"name": "Night Hive Low", "description": "Reflective panels for late walks.", "priceCents": 16_000, "totalStock": 20, "startsAt": in_three_hours}),
    ] {
        let created = app.post("/api/admin/drops", Some(&admin.token), drop).await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }
    for item in [
        json!({"name": "Acacia Honey", "description": "Pale and mild; slow to crystallise.", "priceCents": 990, "inStock": false, "stockQuantity": 0}),
        json!({"name": "Heather Honey", "description": "Dark and floral, from moorland hives.", "priceCents": 1250, "inStock": true, "stockQuantity": 14}),
        json!({"name": "Wildflower Comb", "description": "Cut comb in a wooden frame.", "priceCents": 1800, "inStock": true}),
    ] {
        product(app, admin, item).await;
    }
}

/// Runs one scenario of `tests/browser/storefront.mjs` against the app and fails with its
/// output unless it passed.
async fn browser(scenario: &str, app: &TestApp, args: Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let how = "the browser tests need Node.js, Debian's chromium and `npm ci` in tests/browser: \
               run `bash scripts/services.sh`";
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir(),
        "puppeteer-core is not installed; {how}"
    );
    let run = tokio::process::Command::new("node")
        .arg(dir.join("storefront.mjs"))
        .arg(scenario)
        .arg(&app.address)
        .arg(args.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("the {scenario} scenario did not finish in 3 minutes"))
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {how}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the {scenario} scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// Where the README's screenshot is written: `docs/storefront.png`.
fn screenshot_path() -> String {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).expect("docs directory");
    docs.join("storefront.png").display().to_string()
}

#[tokio::test]
async fn a_buyer_signs_up_reserves_sees_the_countdown_and_buys_while_others_watch_live() {
    let (app, admin) = storefront(&[]).await;
    seed(&app, &admin).await;

    browser(
        "buy",
        &app,
        json!({"drop": "Honeycomb Runner", "other": "Amber Hi-Top", "screenshot": screenshot_path()}),
    )
    .await;

    let audit = app.audit(1).await;
    assert_eq!(
        (audit.purchases, audit.active_holds, audit.holds()),
        (1, 0, true),
        "one unit bought through the page, none held: {audit:?}"
    );
}

#[tokio::test]
async fn a_buyer_joins_the_line_gets_the_returned_unit_and_wins_a_draw_in_the_page() {
    let (app, admin) = storefront(&[]).await;
    let one = json!({"name": "Last Pair", "priceCents": 9_000, "totalStock": 1});
    let created = app.post("/api/admin/drops", Some(&admin.token), one).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let close = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let draw = json!({"name": "Raffle Runner", "priceCents": 20_000, "totalStock": 1, "mode": "draw", "entriesCloseAt": close});
    let created = app.post("/api/admin/drops", Some(&admin.token), draw).await;
    assert_eq!(created.status, StatusCode::CREATED);

    browser(
        "fairness",
        &app,
        json!({"drop": "Last Pair", "draw": "Raffle Runner", "adminToken": admin.token}),
    )
    .await;
}

#[tokio::test]
async fn a_drop_asking_for_proof_of_work_is_reserved_through_the_page() {
    let (app, admin) = storefront(&[("ALTCHA_COST", "50")]).await;
    let guarded = json!({"name": "Guarded Jar", "priceCents": 1_000, "totalStock": 2, "requireChallenge": true});
    let created = app
        .post("/api/admin/drops", Some(&admin.token), guarded)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let drop_id = created.body["id"].as_i64().unwrap();

    browser("challenge", &app, json!({"drop": "Guarded Jar"})).await;

    assert_eq!(
        app.audit(drop_id).await.available_stock,
        1,
        "the page's solution was accepted"
    );
}

#[tokio::test]
async fn a_hold_left_to_run_out_ends_with_a_message() {
    let (app, admin) = storefront(&[("RESERVATION_TTL_SECS", "8")]).await;
    seed(&app, &admin).await;

    browser("expire", &app, json!({"drop": "Amber Hi-Top"})).await;
}

#[tokio::test]
async fn notify_me_the_confirmation_link_a_restock_and_the_alert_all_in_the_browser() {
    let (app, admin) = storefront(&[]).await;
    seed(&app, &admin).await;

    browser(
        "restock",
        &app,
        json!({"product": "Acacia Honey", "admin": admin.email, "adminPassword": ADMIN_PASSWORD, "email": "dora@example.com"}),
    )
    .await;
}

#[tokio::test]
async fn admin_controls_are_absent_for_a_customer_and_work_for_an_admin() {
    let (app, admin) = storefront(&[]).await;
    seed(&app, &admin).await;

    browser(
        "roles",
        &app,
        json!({"admin": admin.email, "adminPassword": ADMIN_PASSWORD}),
    )
    .await;
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_without_the_buyer_noticing() {
    let (app, admin) = storefront(&[("ACCESS_TOKEN_TTL_SECS", "1")]).await;
    seed(&app, &admin).await;

    browser("refresh", &app, json!({"drop": "Honeycomb Runner"})).await;
}
