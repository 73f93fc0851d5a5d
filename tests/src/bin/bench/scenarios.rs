//! One function per scenario of issues #6 and #11; each returns its figures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::accounts::Role;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    Figure,
    load::{self, Socket, percentile_ms},
    socketio,
    store::Store,
};

const CONNECTIONS: usize = 256;

pub(crate) async fn create_drop(
    client: &reqwest::Client,
    store: &Store,
    admin: &str,
    stock: i32,
) -> anyhow::Result<i64> {
    let answer: Value = client
        .post(format!("{}/api/admin/drops", store.base))
        .bearer_auth(admin)
        .json(&json!({"name": format!("Bench {}", uuid::Uuid::new_v4().simple()), "priceCents": 9900, "totalStock": stock}))
        .send()
        .await?
        .json()
        .await?;
    answer["id"]
        .as_i64()
        .with_context(|| format!("drop not created: {answer}"))
}

pub async fn footprint() -> anyhow::Result<Vec<Figure>> {
    let store = Store::start(&[]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let figures = vec![
        Figure::new(
            "footprint",
            "api start to ready",
            store.start_to_ready.as_secs_f64() * 1000.0,
            "ms",
            "<= 1000",
        ),
        Figure::new(
            "footprint",
            "idle api resident memory",
            store.rss_mb(&store.api),
            "MB",
            "<= 60",
        ),
        Figure::new(
            "footprint",
            "idle worker resident memory",
            store.rss_mb(&store.worker),
            "MB",
            "<= 60",
        ),
    ];
    store.stop();
    Ok(figures)
}

pub async fn flash_sale() -> anyhow::Result<Vec<Figure>> {
    const BUYERS: usize = 5_000;
    const UNITS: i32 = 500;
    let store = Store::start(&[]).await?;
    let client = load::client(CONNECTIONS)?;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let drop_id = create_drop(&client, &store, &admin, UNITS).await?;
    let buyers = store.users("buyer", BUYERS, Role::Customer).await?;

    // Open the load generator's connections first: the sale measures reserves, not TCP
    // handshakes.
    let health = format!("{}/healthz", store.base);
    load::run_all(&client, CONNECTIONS, vec![(); CONNECTIONS], move |c, ()| {
        c.get(&health)
    })
    .await;

    let url = format!("{}/api/drops/{drop_id}/reserve", store.base);
    let reserves = load::run_all(
        &client,
        CONNECTIONS,
        buyers,
        move |c, (_, token): (i64, String)| c.post(&url).bearer_auth(token),
    )
    .await;
    let won: Vec<_> = reserves
        .iter()
        .filter(|(_, s)| s.status == StatusCode::CREATED)
        .collect();
    let sold_out_after = won.iter().map(|(_, s)| s.at).max().unwrap_or_default();
    let mut latencies: Vec<Duration> = reserves.iter().map(|(_, s)| s.latency).collect();
    let reserve_5xx = reserves
        .iter()
        .filter(|(_, s)| s.status.is_server_error())
        .count();

    let purchases: Vec<(String, i64)> = won
        .iter()
        .filter_map(|((_, token), s)| {
            let body: Value = serde_json::from_str(&s.body).ok()?;
            Some((token.clone(), body["id"].as_i64()?))
        })
        .collect();
    let base = store.base.clone();
    let bought = load::run_all(
        &client,
        CONNECTIONS,
        purchases,
        move |c, (token, id): (String, i64)| {
            c.post(format!("{base}/api/drops/{id}/purchase"))
                .bearer_auth(token)
        },
    )
    .await;
    let bought_ok = bought
        .iter()
        .filter(|(_, s)| s.status == StatusCode::CREATED)
        .count();
    let purchase_5xx = bought
        .iter()
        .filter(|(_, s)| s.status.is_server_error())
        .count();
    let audit = entity::drops::audit(&store.db, drop_id).await?;

    // Sold-out stampede on the same drop.
    let loser = store.users("late", 1, Role::Customer).await?.remove(0).1;
    let stampede = load::run_for(
        &client,
        CONNECTIONS,
        Duration::from_secs(10),
        Method::POST,
        format!("{}/api/drops/{drop_id}/reserve", store.base),
        Some(loser),
    )
    .await;
    let rejected = stampede
        .iter()
        .filter(|s| s.status == StatusCode::CONFLICT)
        .count();
    let stampede_span = stampede
        .iter()
        .map(|s| s.at)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let stampede_5xx = stampede
        .iter()
        .filter(|s| s.status.is_server_error())
        .count();
    let mut stampede_latencies: Vec<Duration> = stampede.iter().map(|s| s.latency).collect();

    let figures = vec![
        Figure::new(
            "flash-sale",
            "buyers / units",
            BUYERS as f64 / f64::from(UNITS),
            "x",
            "5000 users, 500 units",
        ),
        Figure::new(
            "flash-sale",
            "successful reserves",
            won.len() as f64,
            "",
            "= 500",
        ),
        Figure::new(
            "flash-sale",
            "time to sell out",
            sold_out_after.as_secs_f64() * 1000.0,
            "ms",
            "",
        ),
        Figure::new(
            "flash-sale",
            "successful reserves per second",
            won.len() as f64 / sold_out_after.as_secs_f64().max(1e-9),
            "/s",
            ">= 3000",
        ),
        Figure::new(
            "flash-sale",
            "reserve p50 (256 connections)",
            percentile_ms(&mut latencies, 50.0),
            "ms",
            "",
        ),
        Figure::new(
            "flash-sale",
            "reserve p99 (256 connections)",
            percentile_ms(&mut latencies, 99.0),
            "ms",
            "<= 100",
        ),
        Figure::new(
            "flash-sale",
            "purchases completed",
            bought_ok as f64,
            "",
            "= 500",
        ),
        Figure::new(
            "flash-sale",
            "oversold units",
            (audit.purchases + audit.active_holds - i64::from(UNITS)).max(0) as f64,
            "",
            "= 0",
        ),
        Figure::new(
            "flash-sale",
            "invariant holds (1 = yes)",
            f64::from(u8::from(audit.holds())),
            "",
            "= 1",
        ),
        Figure::new(
            "flash-sale",
            "5xx answers",
            (reserve_5xx + purchase_5xx + stampede_5xx) as f64,
            "",
            "= 0",
        ),
        Figure::new(
            "sold-out",
            "rejections per second",
            rejected as f64 / stampede_span.max(1e-9),
            "/s",
            ">= 15000",
        ),
        Figure::new(
            "sold-out",
            "rejection p99",
            percentile_ms(&mut stampede_latencies, 99.0),
            "ms",
            "<= 20",
        ),
    ];
    store.stop();
    Ok(figures)
}

pub async fn catalog_read() -> anyhow::Result<Vec<Figure>> {
    let store = Store::start(&[]).await?;
    let client = load::client(CONNECTIONS)?;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let buyers = store.users("browser", 30, Role::Customer).await?;
    for i in 0..10 {
        let drop_id = create_drop(&client, &store, &admin, 50).await?;
        for (_, token) in buyers.iter().skip(i).take(3) {
            client
                .post(format!("{}/api/drops/{drop_id}/reserve", store.base))
                .bearer_auth(token)
                .send()
                .await?;
        }
    }
    // A catalog worth listing: 20 products, half of them in stock.
    for i in 0..20 {
        let product = json!({
            "name": format!("Bench honey {i}"),
            "description": "Raw, from a single apiary.",
            "priceCents": 1_200 + i,
            "inStock": i % 2 == 0,
            "stockQuantity": if i % 2 == 0 { 10 } else { 0 },
        });
        let created = client
            .post(format!("{}/api/admin/products", store.base))
            .bearer_auth(&admin)
            .json(&product)
            .send()
            .await?;
        anyhow::ensure!(created.status().is_success(), "product not created");
    }
    let mut figures = Vec::new();
    let mut rates = std::collections::HashMap::new();
    for (path, label) in [
        ("/healthz", "GET /healthz"),
        ("/api/drops", "GET /api/drops"),
        ("/api/products", "GET /api/products"),
    ] {
        let probe = client
            .get(format!("{}{path}", store.base))
            .send()
            .await?
            .status();
        if probe != StatusCode::OK {
            continue;
        }
        let samples = load::run_for(
            &client,
            128,
            Duration::from_secs(10),
            Method::GET,
            format!("{}{path}", store.base),
            None,
        )
        .await;
        let ok = samples
            .iter()
            .filter(|s| s.status == StatusCode::OK)
            .count();
        let span = samples
            .iter()
            .map(|s| s.at)
            .max()
            .unwrap_or_default()
            .as_secs_f64();
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        let rate = ok as f64 / span.max(1e-9);
        rates.insert(path, rate);
        figures.push(Figure::new(
            "catalog-read",
            &format!("{label} requests/s"),
            rate,
            "/s",
            if path == "/healthz" { "" } else { ">= 10000" },
        ));
        figures.push(Figure::new(
            "catalog-read",
            &format!("{label} p99"),
            percentile_ms(&mut latencies, 99.0),
            "ms",
            "",
        ));
    }
    if let (Some(products), Some(health)) = (rates.get("/api/products"), rates.get("/healthz")) {
        figures.push(Figure::new(
            "catalog-read",
            "GET /api/products ÷ GET /healthz",
            products / health,
            "x",
            ">= 0.5",
        ));
    }
    store.stop();
    Ok(figures)
}

async fn connect_ws(port: u16) -> anyhow::Result<Socket> {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await?;
    Ok(socket)
}

/// 1,000 holds of a 2 s TTL, nobody buying.
pub async fn expiry() -> anyhow::Result<Vec<Figure>> {
    expiry_of("expiry", 1_000, 2).await
}

/// 10,000 holds falling due together (taken as fast as the store takes them, a 3 s TTL).
pub async fn expiry_10k() -> anyhow::Result<Vec<Figure>> {
    expiry_of("expiry-10k", 10_000, 3).await
}

async fn expiry_of(
    scenario: &'static str,
    hold_count: usize,
    ttl_secs: u64,
) -> anyhow::Result<Vec<Figure>> {
    const PROBES: usize = 20;
    let ttl = ttl_secs.to_string();
    let store = Store::start(&[("RESERVATION_TTL_SECS", ttl.as_str())]).await?;
    let client = load::client(CONNECTIONS)?;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let drop_id = create_drop(&client, &store, &admin, hold_count as i32).await?;
    let probe_drop = create_drop(&client, &store, &admin, PROBES as i32).await?;
    let holders = store.users("holder", hold_count, Role::Customer).await?;
    let probe_holders = store.users("pholder", PROBES, Role::Customer).await?;
    let probers = store.users("prober", PROBES, Role::Customer).await?;

    let mut socket = connect_ws(store.port).await?;
    socket
        .send(Message::Text(
            json!({"event": "subscribe", "data": {"drops": [drop_id]}})
                .to_string()
                .into(),
        ))
        .await?;

    let url = format!("{}/api/drops/{drop_id}/reserve", store.base);
    let holds = load::run_all(
        &client,
        CONNECTIONS,
        holders,
        move |c, (_, t): (i64, String)| c.post(&url).bearer_auth(t),
    )
    .await;
    let mut expiries: Vec<DateTime<Utc>> = holds
        .iter()
        .filter_map(|(_, s)| {
            serde_json::from_str::<Value>(&s.body).ok()?["expiresAt"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    expiries.sort_unstable();
    let probe_url = format!("{}/api/drops/{probe_drop}/reserve", store.base);
    let mut probe_expiries = Vec::new();
    for (_, token) in &probe_holders {
        let body: Value = client
            .post(&probe_url)
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        probe_expiries.push(
            body["expiresAt"]
                .as_str()
                .unwrap_or_default()
                .parse::<DateTime<Utc>>()?,
        );
    }

    // Each prober asks for a unit of the sold-out probe drop at the instant one hold ends.
    let mut probes = Vec::new();
    for ((_, token), at) in probers.into_iter().zip(probe_expiries) {
        let (client, url) = (client.clone(), probe_url.clone());
        probes.push(tokio::spawn(async move {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let answer = client.post(&url).bearer_auth(token).send().await;
            let (status, body) = match answer {
                Ok(r) => (Some(r.status()), r.text().await.unwrap_or_default()),
                Err(e) => (None, e.to_string()),
            };
            if status != Some(StatusCode::CREATED) {
                eprintln!(
                    "probe at {at} refused after {:?}: {status:?} {body}",
                    Utc::now() - at
                );
            }
            (status == Some(StatusCode::CREATED), Utc::now() - at)
        }));
    }

    // Read stock_update frames until every hold has come back (or 15 s after the last is due).
    let deadline =
        expiries.last().copied().unwrap_or_else(Utc::now) + chrono::Duration::seconds(15);
    let mut back_at: Vec<Option<DateTime<Utc>>> = vec![None; expiries.len() + 1];
    let mut highest = 0usize;
    while highest < expiries.len() && Utc::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(500), socket.next()).await
        else {
            continue;
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        if frame["event"] != "stock_update" || frame["data"]["dropId"] != drop_id {
            continue;
        }
        let available = frame["data"]["availableStock"].as_u64().unwrap_or(0) as usize;
        let now = Utc::now();
        // Only count frames after the last hold was taken (stock rising from zero).
        if available > highest && now > expiries[0] {
            for slot in back_at.iter_mut().take(available + 1).skip(highest + 1) {
                *slot = Some(now);
            }
            highest = available;
        }
    }
    let mut late: Vec<Duration> = expiries
        .iter()
        .enumerate()
        .filter_map(|(k, due)| {
            back_at[k + 1].map(|seen| (seen - *due).to_std().unwrap_or_default())
        })
        .collect();
    let broadcast = late.len();
    let mut probe_ok = 0;
    let mut probe_delays = Vec::new();
    for probe in probes {
        let (ok, delay) = probe.await?;
        probe_ok += usize::from(ok);
        probe_delays.push(delay.to_std().unwrap_or_default());
    }
    let figures = vec![
        Figure::new(
            scenario,
            &format!("holds ({ttl_secs} s TTL, nobody buys)"),
            expiries.len() as f64,
            "",
            &hold_count.to_string(),
        ),
        Figure::new(
            scenario,
            "holds whose return was broadcast",
            broadcast as f64,
            "",
            &format!("= {hold_count}"),
        ),
        Figure::new(
            scenario,
            "stock_update after expiresAt, p50",
            percentile_ms(&mut late, 50.0),
            "ms",
            "",
        ),
        Figure::new(
            scenario,
            "stock_update after expiresAt, p99",
            percentile_ms(&mut late, 99.0),
            "ms",
            "<= 500",
        ),
        Figure::new(
            scenario,
            "reserve at a hold's expiresAt succeeds",
            probe_ok as f64 / PROBES as f64 * 100.0,
            "%",
            "= 100",
        ),
        Figure::new(
            scenario,
            "that reserve's answer after expiresAt, p50",
            percentile_ms(&mut probe_delays, 50.0),
            "ms",
            "",
        ),
    ];
    store.stop();
    Ok(figures)
}

/// A kind of client the fan-out scenarios open.
#[derive(Clone, Copy)]
enum ClientKind {
    /// The store's own WebSocket, `/ws`.
    Ws,
    /// The Socket.IO endpoint over its WebSocket transport, as `socket.io-client` speaks it.
    SocketIo,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            Self::Ws => "/ws",
            Self::SocketIo => "Socket.IO",
        }
    }

    async fn connect(self, port: u16) -> anyhow::Result<Socket> {
        match self {
            Self::Ws => connect_ws(port).await,
            Self::SocketIo => socketio::connect(port, "/socket.io").await,
        }
    }
}

/// What one fan-out client saw of the drop's changes.
struct Seen {
    /// `stock_update`s of a version the benchmark sent.
    delivered: usize,
    /// From each change being sent to its `stock_update` arriving.
    latencies: Vec<Duration>,
    newest: usize,
}

/// Reads the drop's `stock_update`s until 5 s pass without a message once the last change
/// (version `last`) has been sent; before that silence only means the others are still
/// connecting.
async fn read_updates(
    kind: ClientKind,
    mut socket: Socket,
    drop_id: i64,
    sent: Arc<Vec<AtomicI64>>,
    last: usize,
) -> Seen {
    const QUIET: Duration = Duration::from_secs(5);
    let mut seen = Seen {
        delivered: 0,
        latencies: Vec::new(),
        newest: 0,
    };
    loop {
        let message = match tokio::time::timeout(QUIET, socket.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => break,
            Err(_) => {
                let last_sent = sent.get(last).map_or(0, |at| at.load(Relaxed));
                let quiet_for = Utc::now().timestamp_micros() - last_sent;
                if last_sent > 0 && quiet_for >= QUIET.as_micros() as i64 {
                    break;
                }
                continue;
            }
        };
        let Message::Text(text) = message else {
            continue;
        };
        let now = Utc::now().timestamp_micros();
        let (name, data) = match kind {
            ClientKind::Ws => {
                let mut frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                (frame["event"].take(), frame["data"].take())
            }
            ClientKind::SocketIo => match socketio::decode(text.as_str()) {
                socketio::Packet::Event(name, data) => (Value::String(name), data),
                socketio::Packet::Ping => {
                    if socket.send(Message::text(socketio::PONG)).await.is_err() {
                        break;
                    }
                    continue;
                }
                socketio::Packet::Other => continue,
            },
        };
        if name != "stock_update" || data["dropId"] != drop_id {
            continue;
        }
        let version = data["version"].as_u64().unwrap_or(0) as usize;
        seen.newest = seen.newest.max(version);
        if let Some(at) = sent
            .get(version)
            .map(|a| a.load(Relaxed))
            .filter(|at| *at > 0)
        {
            seen.latencies
                .push(Duration::from_micros(u64::try_from(now - at).unwrap_or(0)));
            seen.delivered += 1;
        }
    }
    seen
}

/// 5,000 `/ws` clients watch one drop while it changes 50 times a second for 10 s.
pub async fn ws_fanout() -> anyhow::Result<Vec<Figure>> {
    fanout("ws-fanout", &[(ClientKind::Ws, 5_000)]).await
}

/// As `ws-fanout`, with half the clients on Socket.IO: 2,500 `/ws` and 2,500 Socket.IO
/// clients watch the same drop at the same time; each kind's figures are reported apart.
pub async fn ws_fanout_mixed() -> anyhow::Result<Vec<Figure>> {
    fanout(
        "ws-fanout-mixed",
        &[(ClientKind::Ws, 2_500), (ClientKind::SocketIo, 2_500)],
    )
    .await
}

/// Connects each group of clients in turn (noting the api's memory after each), then sends
/// 50 stock changes a second for 10 s to one drop and measures how each group received them.
/// With one group the figures carry no prefix; with several, each group's carry its kind.
async fn fanout(
    scenario: &'static str,
    groups: &[(ClientKind, usize)],
) -> anyhow::Result<Vec<Figure>> {
    const RATE_PER_SEC: u64 = 50;
    const SECONDS: u64 = 10;
    let store = Store::start(&[]).await?;
    let client = load::client(16)?;
    let admin = store.users("admin", 1, Role::Admin).await?.remove(0).1;
    let drop_id = create_drop(&client, &store, &admin, 1).await?;
    let changes = (RATE_PER_SEC * SECONDS) as usize;
    // sent[v]: when the change that produced version v was sent (µs since the Unix epoch).
    let sent: Arc<Vec<AtomicI64>> =
        Arc::new((0..=changes + 1).map(|_| AtomicI64::new(0)).collect());

    let mut memory = vec![Figure::new(
        scenario,
        "api memory before clients",
        store.rss_mb(&store.api),
        "MB",
        "",
    )];
    let mut readers: Vec<Vec<_>> = Vec::with_capacity(groups.len());
    for (i, &(kind, clients)) in groups.iter().enumerate() {
        let mut group = Vec::with_capacity(clients);
        for _ in 0..clients {
            let socket = kind
                .connect(store.port)
                .await
                .with_context(|| format!("cannot connect a {} client", kind.name()))?;
            group.push(tokio::spawn(read_updates(
                kind,
                socket,
                drop_id,
                sent.clone(),
                changes,
            )));
        }
        readers.push(group);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let more = if i == 0 { "" } else { "+ " };
        memory.push(Figure::new(
            scenario,
            &format!(
                "api memory, {more}{clients} {} clients connected",
                kind.name()
            ),
            store.rss_mb(&store.api),
            "MB",
            "",
        ));
    }

    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SEC));
    let mut rss_peak = memory.last().map_or(0.0, |f| f.value);
    let patch = format!("{}/api/admin/drops/{drop_id}", store.base);
    let mut inflight = Vec::new();
    for version in 1..=changes {
        tick.tick().await;
        sent[version].store(Utc::now().timestamp_micros(), Relaxed);
        let (client, patch, admin) = (client.clone(), patch.clone(), admin.clone());
        inflight.push(tokio::spawn(async move {
            client
                .patch(&patch)
                .bearer_auth(admin)
                .json(&json!({"addStock": 1}))
                .send()
                .await
                .map(|r| r.status())
        }));
        if version % 50 == 0 {
            rss_peak = rss_peak.max(store.rss_mb(&store.api));
        }
    }
    for change in inflight {
        let _ = change.await;
    }

    let total: usize = groups.iter().map(|(_, clients)| clients).sum();
    let mut figures = vec![
        Figure::new(
            scenario,
            "connected clients",
            total as f64,
            "",
            &total.to_string(),
        ),
        Figure::new(
            scenario,
            "stock changes",
            changes as f64,
            "",
            "50/s for 10 s",
        ),
    ];
    for (&(kind, clients), group) in groups.iter().zip(readers) {
        let prefix = if groups.len() == 1 {
            String::new()
        } else {
            format!("{}: ", kind.name())
        };
        let mut all = Vec::new();
        let mut delivered = 0usize;
        let mut caught_up = 0usize;
        for reader in group {
            let seen = reader.await?;
            delivered += seen.delivered;
            caught_up += usize::from(seen.newest == changes);
            all.extend(seen.latencies);
        }
        if groups.len() > 1 {
            figures.push(Figure::new(
                scenario,
                &format!("{prefix}connected clients"),
                clients as f64,
                "",
                &clients.to_string(),
            ));
        }
        figures.extend([
            Figure::new(
                scenario,
                &format!("{prefix}clients that reached the last version"),
                caught_up as f64 / clients as f64 * 100.0,
                "%",
                "= 100",
            ),
            Figure::new(
                scenario,
                &format!("{prefix}frames delivered / changes x clients (stale ones skipped)"),
                delivered as f64 / (clients * changes) as f64 * 100.0,
                "%",
                "",
            ),
            Figure::new(
                scenario,
                &format!("{prefix}delivery after the change was sent, p50"),
                percentile_ms(&mut all, 50.0),
                "ms",
                "",
            ),
            Figure::new(
                scenario,
                &format!("{prefix}delivery after the change was sent, p99"),
                percentile_ms(&mut all, 99.0),
                "ms",
                "<= 250",
            ),
        ]);
    }
    figures.extend(memory);
    figures.push(Figure::new(
        scenario,
        "api memory, peak during fan-out",
        rss_peak,
        "MB",
        "<= 250",
    ));
    store.stop();
    Ok(figures)
}
