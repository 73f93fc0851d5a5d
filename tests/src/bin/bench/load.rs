//! A small closed-loop load generator: a fixed number of connections, each sending its next
//! request as soon as the previous answer arrives; and the WebSocket clients' stream type.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;

/// A benchmark's WebSocket client (`/ws`, or Socket.IO's WebSocket transport).
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone, Debug)]
pub struct Sample {
    pub status: StatusCode,
    pub latency: Duration,
    /// When the answer arrived, from the start of the run.
    pub at: Duration,
    pub body: String,
}

pub fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?)
}

/// Sends one request per item of `work`, `connections` at a time, keeping every answer with
/// the item it answers.
pub async fn run_all<T, F>(
    client: &reqwest::Client,
    connections: usize,
    work: Vec<T>,
    make: F,
) -> Vec<(T, Sample)>
where
    T: Clone + Send + 'static,
    F: Fn(&reqwest::Client, T) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    run_until(client, connections, work, None, make).await
}

/// [`run_all`], but no request is sent once `until` has passed since the start.
pub async fn run_until<T, F>(
    client: &reqwest::Client,
    connections: usize,
    work: Vec<T>,
    until: Option<Duration>,
    make: F,
) -> Vec<(T, Sample)>
where
    T: Clone + Send + 'static,
    F: Fn(&reqwest::Client, T) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let queue = Arc::new(Mutex::new(work.into_iter()));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (queue, make, client) = (queue.clone(), make.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if until.is_some_and(|until| started.elapsed() >= until) {
                    break;
                }
                let Some(item) = queue.lock().await.next() else {
                    break;
                };
                let sent = Instant::now();
                let (status, body) = match make(&client, item.clone()).send().await {
                    Ok(r) => {
                        let status = r.status();
                        (status, r.text().await.unwrap_or_default())
                    }
                    Err(_) => (StatusCode::BAD_GATEWAY, String::new()),
                };
                samples.push((
                    item,
                    Sample {
                        status,
                        latency: sent.elapsed(),
                        at: started.elapsed(),
                        body,
                    },
                ));
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all
}

/// Hammers one URL for `duration` over `connections` connections; returns the samples.
pub async fn run_for(
    client: &reqwest::Client,
    connections: usize,
    duration: Duration,
    method: Method,
    url: String,
    token: Option<String>,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, token, method) =
            (client.clone(), url.clone(), token.clone(), method.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while started.elapsed() < duration {
                let sent = Instant::now();
                let mut req = client.request(method.clone(), &url);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let status = match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        status
                    }
                    Err(_) => StatusCode::BAD_GATEWAY,
                };
                samples.push(Sample {
                    status,
                    latency: sent.elapsed(),
                    at: started.elapsed(),
                    body: String::new(),
                });
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all
}

/// The `p`-th percentile (0–100) in milliseconds.
pub fn percentile_ms(latencies: &mut [Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
    latencies[rank.min(latencies.len() - 1)].as_secs_f64() * 1000.0
}
