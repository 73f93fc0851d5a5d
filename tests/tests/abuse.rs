//! Abuse on drop day: real client addresses behind proxies, and fairness against bots.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use sea_orm::EntityTrait;
use serde_json::json;
use tests::{Backend, TestApp, TestUser, both_backends, spawn_app, spawn_app_with};

/// `POST /api/auth/refresh` with a token that never existed, as if from `forwarded_for`: a
/// cheap request every per-address auth limit counts.
async fn refresh_from(app: &TestApp, forwarded_for: &str) -> StatusCode {
    app.client
        .post(format!("{}/api/auth/refresh", app.address))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"refreshToken": "no-such-token"}))
        .send()
        .await
        .expect("request sent")
        .status()
}

async fn a_forwarded_address_from_a_peer_nobody_trusts_is_ignored(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTH_RATE_LIMIT_PER_MINUTE", "2")]).await;
    assert_eq!(
        refresh_from(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_from(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );
    // A new claimed address each time is still the same peer.
    assert_eq!(
        refresh_from(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn a_trusted_proxy_names_the_client(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("AUTH_RATE_LIMIT_PER_MINUTE", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(refresh_from(&app, client).await, StatusCode::UNAUTHORIZED);
        assert_eq!(refresh_from(&app, client).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        refresh_from(&app, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "one client is still limited"
    );
}

async fn the_rightmost_untrusted_hop_is_the_client(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("AUTH_RATE_LIMIT_PER_MINUTE", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8"),
        ],
    )
    .await;
    // The client writes whatever it likes on the left; our proxies append the real address.
    assert_eq!(
        refresh_from(&app, "1.1.1.1, 203.0.113.9, 10.0.0.7").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_from(&app, "2.2.2.2, 203.0.113.9").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_from(&app, "3.3.3.3, 203.0.113.9, 10.200.0.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed left part made a new client"
    );
    // IPv6 clients are counted per /64.
    assert_eq!(
        refresh_from(&app, "2001:db8:1:2::1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_from(&app, "2001:db8:1:2:ffff::2").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_from(&app, "2001:db8:1:2:abcd::3").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a new address in the same /64 made a new client"
    );
}

async fn create_draw(app: &TestApp, admin: &TestUser, units: i32) -> i64 {
    let answer = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({
                "name": "Golden Jar draw",
                "priceCents": 4_200,
                "totalStock": units,
                "mode": "draw",
                "entriesCloseAt": Utc::now() + chrono::Duration::hours(1),
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    answer.body["id"].as_i64().unwrap()
}

/// Every call a signed-in buyer can make, with `user`'s token: (what, status).
async fn everything_a_buyer_does(
    app: &TestApp,
    user: &TestUser,
    drop_id: i64,
    sold_out_id: i64,
    draw_id: i64,
) -> Vec<(String, StatusCode)> {
    let token = Some(user.token.as_str());
    let calls = [
        (Method::POST, format!("/api/drops/{drop_id}/reserve")),
        (Method::POST, format!("/api/drops/{sold_out_id}/waitlist")),
        (Method::GET, format!("/api/drops/{sold_out_id}/waitlist")),
        (Method::POST, format!("/api/drops/{draw_id}/entries")),
        (Method::GET, format!("/api/drops/{draw_id}/entries/me")),
        (Method::POST, "/api/drops/1/purchase".to_owned()),
        (Method::DELETE, "/api/reservations/1".to_owned()),
        (Method::GET, "/api/reservations".to_owned()),
        (Method::GET, "/api/purchases".to_owned()),
        (Method::GET, "/api/auth/me".to_owned()),
    ];
    let mut answers = Vec::new();
    for (method, path) in calls {
        let body = (method == Method::POST).then(|| json!({}));
        let answer = app.request(method.clone(), &path, token, body).await;
        answers.push((format!("{method} {path}"), answer.status));
    }
    answers
}

async fn a_deleted_accounts_token_is_refused_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;
    let sold_out_id = app.create_drop(&admin, 1).await;
    let draw_id = create_draw(&app, &admin, 1).await;
    let first = app.customer("first").await;
    let held = app
        .post(
            &format!("/api/drops/{sold_out_id}/reserve"),
            Some(&first.token),
            json!({}),
        )
        .await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");

    // Deleted before its first request to this process, and deleted after it was used here.
    let never_used = app.customer("never-used").await;
    let used = app.customer("used").await;
    assert_eq!(
        app.get("/api/auth/me", Some(&used.token)).await.status,
        StatusCode::OK
    );
    for user in [&never_used, &used] {
        entity::models::users::Entity::delete_by_id(user.id)
            .exec(&app.db)
            .await
            .unwrap();
    }

    // A write is refused at once, whether or not the session was used here: the account's
    // rows are gone, so its foreign key fails (401, not 500).
    for user in [&used, &never_used] {
        let reserve = app
            .post(
                &format!("/api/drops/{drop_id}/reserve"),
                Some(&user.token),
                json!({}),
            )
            .await;
        assert_eq!(
            (reserve.status, reserve.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "reserve for an account deleted a moment ago"
        );
    }
    // Within a second every instance has read the deletion's tombstone: every call is 401.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for user in [&used, &never_used] {
        loop {
            let answers = everything_a_buyer_does(&app, user, drop_id, sold_out_id, draw_id).await;
            if answers.iter().all(|(_, s)| *s == StatusCode::UNAUTHORIZED) {
                break;
            }
            assert!(
                answers.iter().all(|(_, s)| !s.is_server_error()),
                "a deleted account's request failed on our side: {answers:?}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "still accepted after 5 s: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        app.audit(drop_id).await.available_stock,
        5,
        "nothing was held"
    );
}

async fn display_names_are_neutral_and_visible(backend: Backend) {
    let app = spawn_app(backend).await;
    let signup = app
        .post(
            "/api/auth/signup",
            None,
            json!({"email": "secret.name@example.com", "password": "password one"}),
        )
        .await;
    assert_eq!(signup.status, StatusCode::CREATED, "{signup:?}");
    let name = signup.body["user"]["displayName"].as_str().unwrap();
    assert!(!name.contains("secret"), "the email leaked into {name:?}");
    assert!(name.starts_with("Buyer "), "{name:?}");

    for sneaky in [
        "Ann\u{202E}nimda",
        "Ad\u{200B}min",
        "\u{2066}Bob\u{2069}",
        "Zoe\u{FEFF}",
        "x\u{200D}y",
    ] {
        let refused = app
            .post(
                "/api/auth/signup",
                None,
                json!({"email": format!("{}@example.com", uuid_like(sneaky)), "password": "password one", "displayName": sneaky}),
            )
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, "validation_failed"),
            "{sneaky:?} was accepted: {refused:?}"
        );
    }
}

/// A distinct address per test input.
fn uuid_like(seed: &str) -> String {
    format!("u{}", seed.chars().map(u32::from).sum::<u32>())
}

/// What a request from `client` (behind the trusted proxy on 127.0.0.1) answers.
async fn from_client(
    app: &TestApp,
    client: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> tests::Answer {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("X-Forwarded-For", client)
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    tests::answer(request.send().await.expect("request sent")).await
}

async fn signup_from(app: &TestApp, client: &str, email: &str) -> tests::Answer {
    from_client(
        app,
        client,
        "/api/auth/signup",
        None,
        json!({"email": email, "password": "password one"}),
    )
    .await
}

async fn forty_bots_from_one_address_hold_at_most_the_cap(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("HOLDS_PER_DROP_PER_ADDRESS", "3"),
        ],
    )
    .await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 30).await;
    let bot_address = "203.0.113.66";
    let mut bots = Vec::new();
    for n in 0..40 {
        let answer = signup_from(&app, bot_address, &format!("bot{n}@example.com")).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        bots.push(tests::user_from(&answer.body));
    }

    let path = format!("/api/drops/{drop_id}/reserve");
    let answers = futures::future::join_all(
        bots.iter()
            .map(|bot| from_client(&app, bot_address, &path, Some(&bot.token), json!({}))),
    )
    .await;
    let held = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(held, 3, "one address held {held} units");
    for refused in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::TOO_MANY_REQUESTS, "address_limit_reached"),
            "{refused:?}"
        );
        assert!(refused.headers.contains_key("retry-after"));
    }

    let buyer = signup_from(&app, "198.51.100.7", "real.buyer@example.com").await;
    let buyer = tests::user_from(&buyer.body);
    let bought = from_client(&app, "198.51.100.7", &path, Some(&buyer.token), json!({})).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{bought:?}");
    let audit = app.audit(drop_id).await;
    assert_eq!(audit.available_stock, 26, "{audit:?}");
}

async fn signups_are_limited_per_address(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SIGNUPS_PER_ADDRESS_PER_HOUR", "2"),
        ],
    )
    .await;
    for n in 0..2 {
        let made = signup_from(&app, "203.0.113.5", &format!("s{n}@example.com")).await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    }
    let refused = signup_from(&app, "203.0.113.5", "s2@example.com").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    );
    // The same /64 is the same address.
    let v6 = signup_from(&app, "2001:db8:5:5::1", "v6a@example.com").await;
    assert_eq!(v6.status, StatusCode::CREATED);
    let v6 = signup_from(&app, "2001:db8:5:5::2", "v6b@example.com").await;
    assert_eq!(v6.status, StatusCode::CREATED);
    let v6 = signup_from(&app, "2001:db8:5:5:ffff::3", "v6c@example.com").await;
    assert_eq!(v6.status, StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = signup_from(&app, "198.51.100.9", "s3@example.com").await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{elsewhere:?}");
}

/// The verification email's link to `email`, from the outbox (the mail pump writes it).
async fn verification_link(app: &TestApp, email: &str) -> String {
    let dir = std::path::PathBuf::from(&app.vars["DATA_DIR"]).join("outbox");
    tests::eventually(Duration::from_secs(15), || {
        let dir = dir.clone();
        async move {
            api::dev::outbox::latest(&dir, 100)
                .ok()?
                .into_iter()
                .find(|m| m.to.contains(email) && m.subject.contains("Verify"))?
                .links
                .into_iter()
                .find(|l| l.contains("/api/auth/verify-email?token="))
        }
    })
    .await
    .map(|link| {
        // Links are built from PUBLIC_BASE_URL, which the test store leaves at port 0.
        let path = &link[link.find("/api/").expect("a link into the API")..];
        format!("{}{path}", app.address)
    })
    .unwrap_or_else(|| panic!("no verification email to {email}"))
}

/// Follows the verification link as a person does: the page, then its button.
async fn verify(app: &TestApp, email: &str) {
    let link = verification_link(app, email).await;
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let pressed = app.client.post(&link).send().await.unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);
}

async fn a_draw_requiring_verification_refuses_unverified_entries(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let draw_id = create_draw(&app, &admin, 1).await;
    let drop = app.get(&format!("/api/drops/{draw_id}"), None).await;
    assert_eq!(
        drop.body["requireVerified"], true,
        "a draw requires it by default"
    );
    let ann = app
        .signup("Ann.Lee+drops@example.com", "password one")
        .await;
    let me = app.get("/api/auth/me", Some(&ann.token)).await;
    assert_eq!(me.body["emailVerified"], false);

    let entries = format!("/api/drops/{draw_id}/entries");
    let refused = app.post(&entries, Some(&ann.token), json!({})).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "email_unverified")
    );

    // Scanners that GET or HEAD the link change nothing.
    let link = verification_link(&app, "ann.lee+drops@example.com").await;
    let head = app.client.head(&link).send().await.unwrap().status();
    assert!(
        head.is_success() || head == StatusCode::METHOD_NOT_ALLOWED,
        "{head}"
    );
    let page = app
        .client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<form method=\"post\""), "{page}");
    let me = app.get("/api/auth/me", Some(&ann.token)).await;
    assert_eq!(me.body["emailVerified"], false, "a GET verified");

    let pressed = app.client.post(&link).send().await.unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);
    let me = app.get("/api/auth/me", Some(&ann.token)).await;
    assert_eq!(me.body["emailVerified"], true);
    assert_eq!(
        app.post(&entries, Some(&ann.token), json!({})).await.status,
        StatusCode::CREATED
    );

    // Another account on the same mailbox is the same person.
    let again = app.signup("ann.lee+more@example.com", "password one").await;
    let resend = app
        .post("/api/auth/verification", Some(&again.token), json!({}))
        .await;
    assert_eq!(resend.status, StatusCode::ACCEPTED, "{resend:?}");
    let soon = app
        .post("/api/auth/verification", Some(&again.token), json!({}))
        .await;
    assert_eq!(soon.status, StatusCode::TOO_MANY_REQUESTS);
    verify(&app, "ann.lee+more@example.com").await;
    let twice = app.post(&entries, Some(&again.token), json!({})).await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::CONFLICT, "already_entered")
    );
    let done = app
        .post("/api/auth/verification", Some(&ann.token), json!({}))
        .await;
    assert_eq!(
        (done.status, done.code()),
        (StatusCode::CONFLICT, "already_verified")
    );
    let forged = link.replace("token=", "token=1");
    assert_eq!(
        app.client.post(&forged).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

async fn a_waitlist_offer_passes_over_accounts_without_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let holder = app.customer("holder").await;
    let held = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(&holder.token),
            json!({}),
        )
        .await;
    assert_eq!(held.status, StatusCode::CREATED);
    let bot = app.signup("fresh.bot@example.com", "password one").await;
    let real = app.customer("real").await;
    let line = format!("/api/drops/{drop_id}/waitlist");
    for user in [&bot, &real] {
        let joined = app.post(&line, Some(&user.token), json!({})).await;
        assert_eq!(joined.status, StatusCode::CREATED, "{joined:?}");
    }

    let released = app
        .request(
            Method::DELETE,
            &format!("/api/reservations/{}", held.body["id"]),
            Some(&holder.token),
            None,
        )
        .await;
    assert!(released.status.is_success(), "{released:?}");

    let offered = app.get(&line, Some(&real.token)).await;
    assert_eq!(offered.body["status"], "offered", "{offered:?}");
    let passed = app.get(&line, Some(&bot.token)).await;
    assert_eq!(passed.body["status"], "waiting", "{passed:?}");
    assert_eq!(passed.body["position"], 1, "it keeps its place");
}

/// Solves a challenge from the store, as a client would, into an `X-Altcha` value.
async fn solved_challenge(app: &TestApp) -> String {
    use base64::Engine;
    let challenge = app.get("/api/challenge", None).await;
    assert_eq!(challenge.status, StatusCode::OK, "{challenge:?}");
    let parsed: altcha::Challenge = serde_json::from_value(challenge.body.clone()).unwrap();
    let solution = altcha::solve_challenge(altcha::SolveChallengeOptions::new(&parsed))
        .unwrap()
        .expect("solved in time");
    let payload = json!({"challenge": challenge.body, "solution": solution});
    base64::engine::general_purpose::STANDARD.encode(payload.to_string())
}

async fn a_replayed_challenge_solution_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, &[("ALTCHA_COST", "20")]).await;
    let admin = app.admin().await;
    let created = app
        .post(
            "/api/admin/drops",
            Some(&admin.token),
            json!({"name": "Guarded", "priceCents": 100, "totalStock": 5, "requireChallenge": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["requireChallenge"], true);
    let drop_id = created.body["id"].as_i64().unwrap();
    let path = format!("{}/api/drops/{drop_id}/reserve", app.address);
    let reserve = |user: &TestUser, solution: Option<&str>| {
        let mut request = app.client.post(&path).bearer_auth(&user.token);
        if let Some(solution) = solution {
            request = request.header("X-Altcha", solution);
        }
        async move { tests::answer(request.send().await.unwrap()).await }
    };
    let (ann, bob) = (app.customer("ann").await, app.customer("bob").await);

    let bare = reserve(&ann, None).await;
    assert_eq!(
        (bare.status, bare.code()),
        (StatusCode::FORBIDDEN, "challenge_required")
    );
    let garbage = reserve(&ann, Some("bm90IGEgc29sdXRpb24")).await;
    assert_eq!(
        (garbage.status, garbage.code()),
        (StatusCode::FORBIDDEN, "challenge_failed")
    );
    let solution = solved_challenge(&app).await;
    assert_eq!(
        reserve(&ann, Some(&solution)).await.status,
        StatusCode::CREATED
    );
    let replayed = reserve(&bob, Some(&solution)).await;
    assert_eq!(
        (replayed.status, replayed.code()),
        (StatusCode::FORBIDDEN, "challenge_failed"),
        "a spent solution was accepted again"
    );
    let fresh = solved_challenge(&app).await;
    assert_eq!(
        reserve(&bob, Some(&fresh)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.audit(drop_id).await.available_stock, 3);
}

async fn signup_can_require_a_solved_challenge(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("ALTCHA_ON_SIGNUP", "true"), ("ALTCHA_COST", "20")],
    )
    .await;
    let body = json!({"email": "pow@example.com", "password": "password one"});
    let bare = app.post("/api/auth/signup", None, body.clone()).await;
    assert_eq!(
        (bare.status, bare.code()),
        (StatusCode::FORBIDDEN, "challenge_required")
    );
    let solution = solved_challenge(&app).await;
    let signup = |solution: String| {
        let request = app
            .client
            .post(format!("{}/api/auth/signup", app.address))
            .header("X-Altcha", solution)
            .json(&body);
        async move { tests::answer(request.send().await.unwrap()).await }
    };
    assert_eq!(signup(solution.clone()).await.status, StatusCode::CREATED);
    let replayed = signup(solution).await;
    assert_eq!(
        (replayed.status, replayed.code()),
        (StatusCode::FORBIDDEN, "challenge_failed")
    );
}

both_backends!(
    signup_can_require_a_solved_challenge,
    forty_bots_from_one_address_hold_at_most_the_cap,
    signups_are_limited_per_address,
    a_draw_requiring_verification_refuses_unverified_entries,
    a_waitlist_offer_passes_over_accounts_without_history,
    a_replayed_challenge_solution_is_refused,
    a_deleted_accounts_token_is_refused_everywhere,
    display_names_are_neutral_and_visible,
    a_forwarded_address_from_a_peer_nobody_trusts_is_ignored,
    a_trusted_proxy_names_the_client,
    the_rightmost_untrusted_hop_is_the_client,
);
