#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;
use tests::{Backend, both_backends, spawn_app, spawn_app_with, user_from};

const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

async fn signup_me_refresh_logout_is_a_whole_session(backend: Backend) {
    let app = spawn_app(backend).await;

    let signup = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "Ann@Example.com", "password": "correct horse", "displayName": "Ann"}),
        )
        .await;
    assert_eq!(signup.status, StatusCode::CREATED, "{:?}", signup.body);
    assert_eq!(signup.body["user"]["email"], "ann@example.com");
    assert_eq!(signup.body["user"]["displayName"], "Ann");
    assert_eq!(signup.body["user"]["role"], "customer");
    assert_eq!(signup.body["tokenType"], "Bearer");
    assert_eq!(signup.body["expiresIn"], 900);
    let user = user_from(&signup.body);

    let me = app.get("/api/auth/me", Some(&user.token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], user.id);

    let refreshed = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": user.refresh_token}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    let rotated = user_from(&refreshed.body);
    assert_ne!(
        rotated.refresh_token, user.refresh_token,
        "refresh tokens rotate"
    );
    assert_eq!(
        app.get("/api/auth/me", Some(&rotated.token)).await.status,
        StatusCode::OK
    );

    let logout = app
        .post("/api/auth/logout", Some(&rotated.token), json!({}))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    for token in [&user.token, &rotated.token] {
        let after = app.get("/api/auth/me", Some(token)).await;
        assert_eq!(
            (after.status, after.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let refresh_after = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": rotated.refresh_token}),
        )
        .await;
    assert_eq!(refresh_after.status, StatusCode::UNAUTHORIZED);
}

async fn an_email_registers_once_whatever_its_case(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup("bob@example.com", "password one").await;
    let again = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": " BOB@example.COM", "password": "password two"}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "email_taken")
    );
}

async fn forged_and_expired_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup("carol@example.com", "password one").await;
    let claims: serde_json::Value = {
        let payload = user.token.split('.').nth(1).expect("payload");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
    };

    let sign = |alg: Algorithm, key: &str, claims: &serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("encode")
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut tampered_claims = claims.clone();
    tampered_claims["role"] = json!("admin");
    let tampered = {
        let parts: Vec<&str> = user.token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(tampered_claims.to_string()),
            parts[2]
        )
    };
    let mut expired_claims = claims.clone();
    expired_claims["iat"] = json!(chrono::Utc::now().timestamp() - 3600);
    expired_claims["exp"] = json!(chrono::Utc::now().timestamp() - 60);
    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("someone-else");

    let cases = [
        ("alg none", unsigned),
        ("another algorithm", sign(Algorithm::HS512, SECRET, &claims)),
        (
            "wrong key",
            sign(
                Algorithm::HS256,
                "another-secret-that-is-32-bytes-long!!",
                &claims,
            ),
        ),
        ("tampered payload", tampered),
        ("expired", sign(Algorithm::HS256, SECRET, &expired_claims)),
        (
            "wrong audience",
            sign(Algorithm::HS256, SECRET, &wrong_audience),
        ),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (what, token) in cases {
        let answer = app.get("/api/auth/me", Some(&token)).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{what} was accepted"
        );
    }
    // The genuine article still works.
    assert_eq!(
        app.get(
            "/api/auth/me",
            Some(&sign(Algorithm::HS256, SECRET, &claims))
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/auth/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_replayed_refresh_token_ends_the_whole_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signup("dave@example.com", "password one").await;
    let first = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": user.refresh_token}),
        )
        .await;
    let rotated = user_from(&first.body);

    let replay = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": user.refresh_token}),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);

    let successor = app
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": rotated.refresh_token}),
        )
        .await;
    assert_eq!(
        successor.status,
        StatusCode::UNAUTHORIZED,
        "the thief's token must die with the session"
    );
    let me = tests::eventually(Duration::from_secs(2), || async {
        (app.get("/api/auth/me", Some(&rotated.token)).await.status == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    assert!(
        me.is_some(),
        "access token still accepted after reuse detection"
    );
}

async fn wrong_password_and_unknown_email_look_the_same(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup("erin@example.com", "password one").await;

    let mut timings = [Vec::new(), Vec::new()];
    let mut answers = Vec::new();
    for _ in 0..3 {
        for (i, email) in ["erin@example.com", "nobody@example.com"]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let answer = app
                .post(
                    "/api/auth/login",
                    None,
                    json!({"email": email, "password": "wrong password"}),
                )
                .await;
            timings[i].push(started.elapsed());
            answers.push(answer);
        }
    }
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body, answers[0].body, "bodies differ");
    }
    assert_eq!(answers[0].code(), "invalid_credentials");
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[1]
    };
    let (known, unknown) = (median(&mut timings[0]), median(&mut timings[1]));
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (0.25..4.0).contains(&ratio),
        "timing gives it away: known {known:?} vs unknown {unknown:?}"
    );
}

async fn five_failures_lock_the_account_until_the_lockout_ends(backend: Backend) {
    let app = spawn_app_with(backend, &[("LOGIN_LOCKOUT_SECS", "2")]).await;
    app.signup("fay@example.com", "password one").await;
    for attempt in 1..=5 {
        let answer = app
            .post(
                "/api/auth/login",
                None,
                json!({"email": "fay@example.com", "password": "nope nope"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let locked = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "fay@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(
        (locked.status, locked.code()),
        (StatusCode::TOO_MANY_REQUESTS, "account_locked")
    );
    let retry_after: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let unlocked = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "fay@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{:?}", unlocked.body);
}

async fn auth_endpoints_are_rate_limited_per_address(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTH_RATE_LIMIT_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        let answer = app
            .post(
                "/api/auth/login",
                None,
                json!({"email": "x@example.com", "password": "whatever1"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "y@example.com", "password": "whatever1"}),
        )
        .await;
    assert_eq!(
        (limited.status, limited.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    assert!(limited.headers.contains_key("retry-after"));
}

async fn admin_routes_refuse_customers(backend: Backend) {
    let app = spawn_app(backend).await;
    let customer = app.signup("gus@example.com", "password one").await;
    let admin = app.admin().await;

    let refused = app.get("/api/admin/drops", Some(&customer.token)).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let create = app
        .post(
            "/api/admin/drops",
            Some(&customer.token),
            json!({"name": "x", "priceCents": 1, "totalStock": 1}),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/admin/drops", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/admin/drops", Some(&admin.token)).await.status,
        StatusCode::OK
    );
}

async fn bad_signup_input_gets_a_4xx_and_creates_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        json!({}),
        json!({"email": "hank@example.com"}),
        json!({"email": 42, "password": "password one"}),
        json!({"email": "not-an-email", "password": "password one"}),
        json!({"email": "hank@example.com", "password": "short"}),
        json!({"email": "hank@example.com", "password": "x".repeat(129)}),
        json!({"email": "hank@example.com", "password": "password one", "displayName": "   "}),
        json!({"email": "hank@example.com", "password": "password one", "displayName": "n".repeat(300)}),
        json!({"email": format!("{}@example.com", "h".repeat(300)), "password": "password one"}),
    ];
    for body in cases {
        let answer = app.post("/api/auth/signup", None, body.clone()).await;
        assert!(
            answer.status.is_client_error(),
            "{body} → {}",
            answer.status
        );
        assert!(
            !answer.code().is_empty(),
            "{body} → no code: {:?}",
            answer.body
        );
    }
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "hank@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(
        login.status,
        StatusCode::UNAUTHORIZED,
        "a refused signup created an account"
    );
}

both_backends!(
    signup_me_refresh_logout_is_a_whole_session,
    an_email_registers_once_whatever_its_case,
    forged_and_expired_tokens_are_refused,
    a_replayed_refresh_token_ends_the_whole_session,
    wrong_password_and_unknown_email_look_the_same,
    five_failures_lock_the_account_until_the_lockout_ends,
    auth_endpoints_are_rate_limited_per_address,
    admin_routes_refuse_customers,
    bad_signup_input_gets_a_4xx_and_creates_nothing,
);

/// Instances share Postgres and Redis: a logout through one is honoured by the other within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_refused_by_another() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    let user = app.signup("ivy@example.com", "password one").await;
    let me_on_other = || {
        let client = app.client.clone();
        let url = format!("{}/api/auth/me", other.address);
        let token = user.token.clone();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("sent")
                .status()
        }
    };
    assert_eq!(me_on_other().await, StatusCode::OK);
    assert_eq!(
        app.post("/api/auth/logout", Some(&user.token), json!({}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(me_on_other().await, StatusCode::UNAUTHORIZED);
}

/// The lockout counter lives in Redis: failures through one instance lock the account on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_holds_across_instances() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let other = app.spawn_instance().await;
    app.signup("jay@example.com", "password one").await;
    for _ in 0..5 {
        app.post(
            "/api/auth/login",
            None,
            json!({"email": "jay@example.com", "password": "nope nope"}),
        )
        .await;
    }
    let on_other = app
        .client
        .post(format!("{}/api/auth/login", other.address))
        .json(&json!({"email": "jay@example.com", "password": "password one"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(on_other.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_hash_is_upgraded_at_the_next_login() {
    use argon2::PasswordHasher;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};

    let app = spawn_app(Backend::Embedded).await;
    let user = app.signup("kim@example.com", "password one").await;
    let weak = argon2::Argon2::from(argon2::Params::new(8, 1, 1, None).unwrap())
        .hash_password(b"password one")
        .unwrap()
        .to_string();
    entity::models::users::ActiveModel {
        id: Set(user.id),
        password_hash: Set(weak.clone()),
        ..Default::default()
    }
    .update(&app.db)
    .await
    .unwrap();

    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "kim@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let stored = entity::models::users::Entity::find_by_id(user.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert_ne!(stored, weak);
    assert!(
        stored.starts_with("$argon2id$") && stored.contains("m=19456,t=2,p=1"),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_admin_exists_after_start() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[
            ("ADMIN_EMAIL", "boss@example.com"),
            ("ADMIN_PASSWORD", "admin password"),
        ],
    )
    .await;
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "boss@example.com", "password": "admin password"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    assert_eq!(login.body["user"]["role"], "admin");
    let token = login.body["accessToken"].as_str().unwrap();
    assert_eq!(
        app.get("/api/admin/drops", Some(token)).await.status,
        StatusCode::OK
    );
}
