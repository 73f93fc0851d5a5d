//! Socket.IO, as a frontend sees it: the real npm `socket.io-client` 4.x, run by Node from
//! `tests/socketio/` (installed by `scripts/services.sh` with `npm ci`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{Backend, TestApp, both_backends, spawn_app, spawn_app_with};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
};

/// A Node process running `tests/socketio/<script>`, read line by line (each a JSON object).
struct Node {
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every line read so far, in order.
    seen: Vec<Value>,
    stdin: Option<ChildStdin>,
    _child: Child,
}

impl Node {
    fn start(script: &str, args: &[String]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio");
        let how = "the Socket.IO tests run socket.io-client under Node: run `bash scripts/services.sh` \
                   (it runs `npm ci` in tests/socketio)";
        assert!(
            dir.join("node_modules/socket.io-client").is_dir(),
            "tests/socketio/node_modules is missing; {how}"
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}); {how}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"type": "unparsed", "line": line}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
            stdin,
            _child: child,
        }
    }

    /// A socket.io-client connected to `base_url` with these options (`io(url, options)`).
    fn client(base_url: &str, options: Value) -> Self {
        Self::start("probe.mjs", &[base_url.to_owned(), options.to_string()])
    }

    /// The first line, seen before or arriving within `within`, for which `matches` holds.
    async fn find(&mut self, within: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return Some(line.clone());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            self.seen.push(line.clone());
            if matches(&line) {
                return Some(line);
            }
        }
    }

    /// The data of the first `event` for which `matches` holds.
    async fn event(
        &mut self,
        event: &str,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.find(within, |l| {
            l["type"] == "event" && l["event"] == event && matches(&l["data"])
        })
        .await
        .map(|l| l["data"].clone())
    }

    async fn connected(&mut self) -> Value {
        let line = self
            .find(Duration::from_secs(15), |l| {
                l["type"] == "connect" || l["type"] == "connect_error"
            })
            .await
            .expect("socket.io-client neither connected nor failed");
        assert_eq!(line["type"], "connect", "{line}; all: {:?}", self.seen);
        line
    }

    async fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("command sent");
        stdin.flush().await.expect("flushed");
    }

    /// `socket.emit(event, data, ack)`: the acknowledgement's data.
    async fn emit_with_ack(&mut self, id: u64, event: &str, data: Value) -> Value {
        self.send(json!({"id": id, "emit": event, "data": data}))
            .await;
        let ack = self
            .find(Duration::from_secs(10), |l| {
                l["type"] == "ack" && l["id"] == id
            })
            .await
            .expect("acknowledged");
        assert!(ack["error"].is_null(), "ack failed: {ack}");
        ack["data"].clone()
    }
}

/// Where clients connect: a second api instance in distributed mode, so what they hear was
/// relayed from the instance that made the change; the same instance when embedded.
async fn listening_instance(app: &TestApp) -> (String, Option<tests::SecondInstance>) {
    match app.backend {
        Backend::PostgresRedis => {
            let other = app.spawn_instance().await;
            (other.address.clone(), Some(other))
        }
        Backend::Embedded => (app.address.clone(), None),
    }
}

async fn reserve(app: &TestApp, token: &str, drop_id: i64) -> tests::Answer {
    let answer = app
        .post(
            &format!("/api/drops/{drop_id}/reserve"),
            Some(token),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer
}

async fn default_options_poll_then_upgrade_and_hear_a_reserve_made_elsewhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let (url, _other) = listening_instance(&app).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 5).await;

    let mut client = Node::client(&url, json!({}));
    let opened = client
        .find(Duration::from_secs(15), |l| l["type"] == "open")
        .await
        .expect("engine opened");
    assert_eq!(
        opened["transport"], "polling",
        "default options start polling"
    );
    client.connected().await;
    let upgraded = client
        .find(Duration::from_secs(15), |l| l["type"] == "upgrade")
        .await;
    assert_eq!(
        upgraded.expect("upgraded to WebSocket")["transport"],
        "websocket"
    );
    let snapshot = client
        .event("snapshot", Duration::from_secs(5), |_| true)
        .await
        .expect("snapshot on connect");
    assert!(
        snapshot["drops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["dropId"] == drop_id && d["availableStock"] == 5),
        "{snapshot}"
    );

    reserve(&app, &app.customer("poller").await.token, drop_id).await;
    let update = client
        .event("stock_update", Duration::from_secs(10), |d| {
            d["dropId"] == drop_id && d["version"].as_i64() >= Some(1)
        })
        .await
        .expect("stock_update after the reserve");
    assert_eq!(
        update,
        json!({"dropId": drop_id, "availableStock": 4, "version": 1})
    );
}

async fn websocket_only_clients_hear_a_reserve_made_elsewhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let (url, _other) = listening_instance(&app).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 3).await;

    let mut client = Node::client(&url, json!({"transports": ["websocket"]}));
    assert_eq!(client.connected().await["transport"], "websocket");
    client
        .event("snapshot", Duration::from_secs(5), |_| true)
        .await
        .expect("snapshot on connect");

    reserve(&app, &app.customer("ws-only").await.token, drop_id).await;
    let update = client
        .event("stock_update", Duration::from_secs(10), |d| {
            d["dropId"] == drop_id
        })
        .await
        .expect("stock_update after the reserve");
    assert_eq!(update["availableStock"], 2);
    assert_eq!(update["version"], 1);
}

async fn a_token_in_auth_hears_its_own_expiry_and_nobody_elses(backend: Backend) {
    let app = spawn_app_with(backend, &[("RESERVATION_TTL_SECS", "1")]).await;
    let (url, _other) = listening_instance(&app).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 3).await;
    let (owner, stranger) = (app.customer("owner").await, app.customer("stranger").await);
    let mut owners = Node::client(&url, json!({"auth": {"token": owner.token}}));
    let mut strangers = Node::client(&url, json!({"auth": {"token": stranger.token}}));
    let mut anonymous = Node::client(&url, json!({}));
    for client in [&mut owners, &mut strangers, &mut anonymous] {
        client.connected().await;
        client
            .event("snapshot", Duration::from_secs(5), |_| true)
            .await
            .expect("snapshot");
    }

    let hold = reserve(&app, &owner.token, drop_id).await.body["id"]
        .as_i64()
        .unwrap();
    let heard = owners
        .event("reservation_expired", Duration::from_secs(10), |d| {
            d["reservationId"] == hold
        })
        .await
        .expect("the owner is told their hold expired");
    assert_eq!(
        heard,
        json!({"reservationId": hold, "dropId": drop_id, "userId": owner.id})
    );
    // The stock coming back reaches everyone; by then any stray expiry would have too.
    for client in [&mut strangers, &mut anonymous] {
        client
            .event("stock_update", Duration::from_secs(10), |d| {
                d["dropId"] == drop_id && d["availableStock"] == 3
            })
            .await
            .expect("everyone sees the unit come back");
        let overheard = client
            .event("reservation_expired", Duration::from_millis(1500), |_| true)
            .await;
        assert!(
            overheard.is_none(),
            "someone else's expiry was overheard: {overheard:?}"
        );
    }
}

async fn a_bad_token_is_refused_with_connect_error_saying_why(backend: Backend) {
    let app = spawn_app(backend).await;
    let refused = |options: Value| {
        let url = app.address.clone();
        async move {
            let mut client = Node::client(&url, options);
            let line = client
                .find(Duration::from_secs(15), |l| {
                    l["type"] == "connect" || l["type"] == "connect_error"
                })
                .await
                .expect("an answer to the handshake");
            assert_eq!(line["type"], "connect_error", "{line}");
            line["message"].as_str().unwrap_or_default().to_owned()
        }
    };

    let garbage = refused(json!({"auth": {"token": "not-a-token"}})).await;
    assert_eq!(garbage, "unauthorized: invalid or expired access token");

    let user = app.customer("leaver").await;
    let logout = app
        .request(Method::POST, "/api/auth/logout", Some(&user.token), None)
        .await;
    assert!(logout.status.is_success(), "{:?}", logout.body);
    let ended = refused(json!({"auth": {"token": user.token}})).await;
    assert_eq!(ended, "unauthorized: this session has ended; sign in again");

    let malformed = refused(json!({"auth": {"token": 42}})).await;
    assert!(
        malformed.starts_with("unreadable auth payload"),
        "{malformed}"
    );

    // The same socket.io-client with a good token, or none, is let in.
    let good = app.customer("stayer").await;
    Node::client(&app.address, json!({"auth": {"token": good.token}}))
        .connected()
        .await;
    Node::client(&app.address, json!({"auth": {"token": null}}))
        .connected()
        .await;
}

async fn subscribing_narrows_stock_updates_with_an_acknowledgement(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let (watched, ignored) = (
        app.create_drop(&admin, 5).await,
        app.create_drop(&admin, 5).await,
    );
    let mut client = Node::client(&app.address, json!({}));
    client.connected().await;

    let ack = client
        .emit_with_ack(1, "subscribe", json!({"drops": [watched, watched]}))
        .await;
    assert_eq!(ack, json!({"drops": [watched]}));
    let buyer = app.customer("picky").await;
    reserve(&app, &buyer.token, ignored).await;
    reserve(&app, &buyer.token, watched).await;
    let first = client
        .event("stock_update", Duration::from_secs(10), |_| true)
        .await
        .expect("a stock_update");
    assert_eq!(first["dropId"], watched, "a filtered-out drop got through");

    let refused = client
        .emit_with_ack(2, "subscribe", json!({"drops": "all"}))
        .await;
    assert_eq!(refused["error"]["code"], "bad_request", "{refused}");
    assert_eq!(
        client
            .emit_with_ack(3, "subscribe", json!({"drops": null}))
            .await,
        json!({"drops": null})
    );
    reserve(&app, &app.customer("any").await.token, ignored).await;
    client
        .event("stock_update", Duration::from_secs(10), |d| {
            d["dropId"] == ignored
        })
        .await
        .expect("every drop again after subscribing to all");

    // Catalog restocks reach Socket.IO clients too.
    let product = app
        .post(
            "/api/admin/products",
            Some(&admin.token),
            json!({"name": "Clover Honey", "priceCents": 800, "inStock": false}),
        )
        .await;
    assert_eq!(product.status, StatusCode::CREATED, "{:?}", product.body);
    let product_id = product.body["id"].as_i64().unwrap();
    let restocked = app
        .request(
            Method::PATCH,
            &format!("/api/admin/products/{product_id}"),
            Some(&admin.token),
            Some(json!({"inStock": true})),
        )
        .await;
    assert_eq!(restocked.status, StatusCode::OK, "{:?}", restocked.body);
    let event = client
        .event("product_restocked", Duration::from_secs(10), |d| {
            d["productId"] == product_id
        })
        .await
        .expect("product_restocked");
    assert_eq!(event["name"], "Clover Honey");
}

async fn a_thousand_clients_all_reach_the_last_version_after_200_rapid_changes(backend: Backend) {
    const CLIENTS: usize = 1_000;
    const CHANGES: usize = 200;
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let mut crowd = Node::start(
        "crowd.mjs",
        &[
            app.address.clone(),
            CLIENTS.to_string(),
            drop_id.to_string(),
        ],
    );
    let connected = crowd
        .find(Duration::from_secs(120), |l| {
            l["type"] == "connected" || l["type"] == "failed"
        })
        .await
        .expect("the crowd connected or said why not");
    assert_eq!(connected["type"], "connected", "{connected}");

    let patch = format!("/api/admin/drops/{drop_id}");
    let versions: Vec<i64> = futures::stream::iter(0..CHANGES)
        .map(|_| {
            app.request(
                Method::PATCH,
                &patch,
                Some(&admin.token),
                Some(json!({"addStock": 1})),
            )
        })
        .buffer_unordered(8)
        .map(|answer| {
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
            answer.body["version"].as_i64().expect("version")
        })
        .collect()
        .await;
    let last = versions.into_iter().max().unwrap();
    assert_eq!(last, CHANGES as i64, "every change bumps the version once");

    crowd
        .send(json!({"version": last, "withinMs": 30_000}))
        .await;
    let reached = crowd
        .find(Duration::from_secs(60), |l| l["type"] == "reached")
        .await
        .expect("the crowd reported");
    assert_eq!(
        reached["reached"], CLIENTS,
        "clients short of version {last}: {reached}; other lines: {:?}",
        crowd.seen
    );
}

/// A client that stops taking packets fills only its own bounded buffer: the others keep
/// receiving at once, and the laggard is disconnected.
async fn a_client_that_stops_polling_holds_back_nobody_and_is_dropped(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 1).await;
    let mut healthy = Node::client(&app.address, json!({"transports": ["websocket"]}));
    healthy.connected().await;

    // A long-polling session opened by hand that never polls: it answers heartbeats (a pong
    // needs no poll) but takes no packet, so only its full buffer can end it.
    let base = format!("{}/socket.io/?EIO=4&transport=polling", app.address);
    let handshake = app.client.get(&base).send().await.unwrap();
    assert_eq!(handshake.status(), StatusCode::OK);
    let open = handshake.text().await.unwrap();
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    let session = format!("{base}&sid={sid}");
    let joined = app.client.post(&session).body("40").send().await.unwrap();
    assert_eq!(joined.status(), StatusCode::OK);
    let heartbeats = tokio::spawn({
        let (client, session) = (app.client.clone(), session.clone());
        async move {
            loop {
                let pong = client.post(&session).body("3").send().await;
                if !pong.is_ok_and(|p| p.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });
    let metrics_show = |count: i64| {
        let app = &app;
        async move {
            let metrics = app.metrics().await;
            metrics.contains(&format!("honeydrop_socketio_clients {count}\n"))
        }
    };
    assert!(
        tests::eventually(Duration::from_secs(5), || async {
            metrics_show(2).await.then_some(())
        })
        .await
        .is_some(),
        "both sockets counted"
    );

    // More changes than the stuck socket's buffer holds, one at a time.
    let changes = api::live::socketio::SOCKET_BUFFER + 100;
    let patch = format!("/api/admin/drops/{drop_id}");
    for _ in 0..changes {
        let answer = app
            .request(
                Method::PATCH,
                &patch,
                Some(&admin.token),
                Some(json!({"addStock": 1})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let last = healthy
        .event("stock_update", Duration::from_secs(10), |d| {
            d["dropId"] == drop_id && d["version"] == changes
        })
        .await;
    assert!(last.is_some(), "the healthy client was held back");

    // Its buffer is full now; the next heartbeat ping (every 25 s) cannot be queued and
    // ends the session.
    assert!(
        tests::eventually(Duration::from_secs(60), || async {
            metrics_show(1).await.then_some(())
        })
        .await
        .is_some(),
        "the stuck socket was never dropped"
    );
    heartbeats.abort();
    let gone = app.client.get(&session).send().await.unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::BAD_REQUEST,
        "its session still exists"
    );
}

both_backends!(
    default_options_poll_then_upgrade_and_hear_a_reserve_made_elsewhere,
    websocket_only_clients_hear_a_reserve_made_elsewhere,
    a_token_in_auth_hears_its_own_expiry_and_nobody_elses,
    a_bad_token_is_refused_with_connect_error_saying_why,
    subscribing_narrows_stock_updates_with_an_acknowledgement,
    a_thousand_clients_all_reach_the_last_version_after_200_rapid_changes,
    a_client_that_stops_polling_holds_back_nobody_and_is_dropped,
);

/// `SOCKET_IO_PATH` moves the endpoint, and long-polling answers the frontend's origin as the
/// REST API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_is_configurable_and_polling_allows_the_frontends_origin() {
    let app = spawn_app_with(Backend::Embedded, &[("SOCKET_IO_PATH", "/api/socket/")]).await;
    let mut client = Node::client(&app.address, json!({"path": "/api/socket"}));
    client.connected().await;
    let elsewhere = app.get("/socket.io/?EIO=4&transport=polling", None).await;
    assert_eq!(
        (elsewhere.status, elsewhere.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let origin = "https://shop.example.com";
    let preflight = |path: &str| {
        app.client
            .request(Method::OPTIONS, format!("{}{path}", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    for path in ["/api/drops", "/api/socket/?EIO=4&transport=polling"] {
        let answer = preflight(path).await.unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        let headers = answer.headers();
        assert_eq!(headers["access-control-allow-origin"], origin, "{path}");
        assert!(
            headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST"),
            "{path}: {headers:?}"
        );
        assert!(
            headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("content-type"),
            "{path}: {headers:?}"
        );
        assert!(
            headers.get("access-control-allow-credentials").is_none(),
            "{path}"
        );
    }
    let polled = app
        .client
        .get(format!(
            "{}/api/socket/?EIO=4&transport=polling",
            app.address
        ))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), StatusCode::OK);
    assert_eq!(polled.headers()["access-control-allow-origin"], origin);
    assert!(polled.text().await.unwrap().starts_with("0{"));
}

/// Stopping the store closes Socket.IO transports at once, so clients reconnect (to another
/// instance) instead of waiting on a server that is going away; the stop itself stays quick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_when_the_store_stops() {
    let app = spawn_app(Backend::Embedded).await;
    let mut polling = Node::client(&app.address, json!({"transports": ["polling"]}));
    let mut websocket = Node::client(&app.address, json!({"transports": ["websocket"]}));
    polling.connected().await;
    websocket.connected().await;
    let started = tokio::time::Instant::now();
    app.stop().await.expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited on open sockets (the grace period is 15 s): {:?}",
        started.elapsed()
    );
    for client in [&mut polling, &mut websocket] {
        let line = client
            .find(Duration::from_secs(5), |l| l["type"] == "disconnect")
            .await
            .expect("told of the disconnect");
        // The reasons after which socket.io-client reconnects on its own ("io server
        // disconnect" would make it give up).
        assert!(
            ["transport close", "transport error"].contains(&line["reason"].as_str().unwrap_or("")),
            "{line}"
        );
    }
}
