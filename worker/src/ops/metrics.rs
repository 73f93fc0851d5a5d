//! The job system in Prometheus's text format: queue depth by state, the oldest ready item's
//! age and the pauses (read from the stores at each scrape, the same on every process), and
//! this process's own jobs and sends (counted in memory). A worker serves it on its own
//! listener (`METRICS_PORT`); the api adds the queue families to its `/metrics`.

use std::{
    convert::Infallible,
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;

use super::{Activity, QueueSummary, activity::BUCKETS};
use crate::{
    jobs::Deps,
    platform::shutdown::{Shutdown, stopped},
};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Queue depth by state, lag and pauses, for every queue.
pub fn render_queues(out: &mut String, queues: &[QueueSummary], now: DateTime<Utc>) {
    family(
        out,
        "honeydrop_queue_items",
        "gauge",
        "Items of each queue by state.",
    );
    for q in queues {
        let name = q.queue.name;
        for (state, n) in [
            ("ready", q.ready),
            ("scheduled", q.scheduled),
            ("in_flight", q.in_flight),
            ("retrying", q.retrying),
            ("failed", q.failed),
        ] {
            let _ = writeln!(
                out,
                "honeydrop_queue_items{{queue=\"{name}\",state=\"{state}\"}} {n}"
            );
        }
    }
    family(
        out,
        "honeydrop_queue_oldest_ready_seconds",
        "gauge",
        "Age of each queue's oldest ready item (its lag); 0 when none waits. Scale workers on it.",
    );
    for q in queues {
        let age = q.oldest_ready_at.map_or(0.0, |at| {
            ((now - at).num_milliseconds().max(0) as f64) / 1000.0
        });
        let _ = writeln!(
            out,
            "honeydrop_queue_oldest_ready_seconds{{queue=\"{}\"}} {age}",
            q.queue.name
        );
    }
    family(
        out,
        "honeydrop_queue_paused",
        "gauge",
        "1 while an operator has paused the queue.",
    );
    for q in queues {
        let _ = writeln!(
            out,
            "honeydrop_queue_paused{{queue=\"{}\"}} {}",
            q.queue.name,
            u8::from(q.paused.is_some())
        );
    }
}

/// This process's jobs and sends: totals by outcome, run times, items in flight.
pub fn render_activity(out: &mut String, activity: &Activity) {
    family(
        out,
        "honeydrop_jobs_total",
        "counter",
        "Jobs (and emails, queue=\"mail\") this process finished, by outcome. A failed job is retried until its attempts run out.",
    );
    for (queue, a) in activity.iter() {
        for (outcome, n) in [
            ("done", a.done.load(Relaxed)),
            ("failed", a.failed.load(Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "honeydrop_jobs_total{{queue=\"{queue}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    family(
        out,
        "honeydrop_jobs_in_flight",
        "gauge",
        "Items this process holds now, by queue.",
    );
    for (queue, a) in activity.iter() {
        let _ = writeln!(
            out,
            "honeydrop_jobs_in_flight{{queue=\"{queue}\"}} {}",
            a.in_flight.load(Relaxed)
        );
    }
    family(
        out,
        "honeydrop_job_duration_seconds",
        "histogram",
        "How long each job ran, by queue.",
    );
    for (queue, a) in activity.iter().filter(|(q, _)| *q != super::MAIL) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += a.histogram[i].load(Relaxed);
            let _ = writeln!(
                out,
                "honeydrop_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += a.histogram[BUCKETS.len()].load(Relaxed);
        let sum = a.run_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "honeydrop_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "honeydrop_job_duration_seconds_sum{{queue=\"{queue}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "honeydrop_job_duration_seconds_count{{queue=\"{queue}\"}} {cumulative}"
        );
    }
}

/// What a worker's listener answers: the queues, then this process's activity.
async fn render(deps: &Deps) -> String {
    let now = Utc::now();
    let mut out = String::new();
    match super::summary(&deps.db, &deps.queue, now).await {
        Ok(queues) => render_queues(&mut out, &queues, now),
        Err(error) => tracing::warn!(%error, "cannot read the queues for /metrics"),
    }
    render_activity(&mut out, &deps.activity);
    out
}

/// Serves `GET /metrics` on `addr` until `shutdown`. With `METRICS_TOKEN` set it asks for
/// `Authorization: Bearer <token>`, as the api's does.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(deps: Arc<Deps>, addr: SocketAddr, shutdown: Shutdown) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "worker metrics at http://{addr}/metrics");
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener cannot accept");
                    continue;
                }
            },
        };
        let deps = deps.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(deps.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<B>(deps: Arc<Deps>, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "not found: GET /metrics\n".into(),
        ));
    }
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !deps.settings.http.may_read_metrics(given) {
        return Ok(reply(StatusCode::UNAUTHORIZED, "unauthorized\n".into()));
    }
    let mut response = reply(StatusCode::OK, render(&deps).await);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
