//! Honeydrop's benchmarks: drive a store running in distributed mode (release `api` and
//! `worker` processes on Postgres and Redis) and print the figures as a table and as one JSON
//! line. Nothing here asserts a figure; targets are printed beside what was measured.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p tests --bin bench                 # every scenario
//! cargo run --release -p tests --bin bench -- flash-sale   # some of them
//! ```

mod load;
mod mail;
mod ops;
mod scenarios;
mod socketio;
mod store;
mod sustained;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: String,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        metric: &str,
        value: f64,
        unit: &'static str,
        target: &str,
    ) -> Self {
        Self {
            scenario,
            metric: metric.into(),
            value,
            unit,
            target: target.into(),
        }
    }
}

const SCENARIOS: [&str; 12] = [
    "footprint",
    "flash-sale",
    "sustained",
    "catalog-read",
    "expiry",
    "expiry-10k",
    "ws-fanout",
    "ws-fanout-mixed",
    "restock-fanout",
    "restock-kill",
    "idle-worker",
    "ops-console",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let asked: Vec<String> = std::env::args().skip(1).collect();
    for name in &asked {
        if !SCENARIOS.contains(&name.as_str()) {
            anyhow::bail!("unknown scenario {name:?}; choose from {SCENARIOS:?}");
        }
    }
    let wanted = |name: &str| asked.is_empty() || asked.iter().any(|a| a == name);
    let mut figures = Vec::new();
    if wanted("footprint") {
        figures.extend(scenarios::footprint().await?);
    }
    if wanted("flash-sale") {
        figures.extend(scenarios::flash_sale().await?);
    }
    if wanted("sustained") {
        figures.extend(sustained::sustained_reserve().await?);
    }
    if wanted("catalog-read") {
        figures.extend(scenarios::catalog_read().await?);
    }
    if wanted("expiry") {
        figures.extend(scenarios::expiry().await?);
    }
    if wanted("expiry-10k") {
        figures.extend(scenarios::expiry_10k().await?);
    }
    if wanted("ws-fanout") {
        figures.extend(scenarios::ws_fanout().await?);
    }
    if wanted("ws-fanout-mixed") {
        figures.extend(scenarios::ws_fanout_mixed().await?);
    }
    if wanted("restock-fanout") {
        figures.extend(mail::restock_fanout().await?);
    }
    if wanted("restock-kill") {
        figures.extend(mail::restock_kill().await?);
    }
    if wanted("idle-worker") {
        figures.extend(mail::idle_queries().await?);
    }
    if wanted("ops-console") {
        figures.extend(ops::console_reads().await?);
    }
    // The last scenario's store leaves nothing behind either.
    store::clear_earlier_stores().await?;
    print_table(&figures);
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

fn print_table(figures: &[Figure]) {
    let header = format!(
        "{:<16} {:<44} {:>12} {:<4} target",
        "scenario", "metric", "value", "unit"
    );
    println!("\n{header}\n{}", "-".repeat(header.len() + 12));
    for f in figures {
        let value = if f.value.fract() == 0.0 {
            format!("{:.0}", f.value)
        } else {
            format!("{:.2}", f.value)
        };
        println!(
            "{:<16} {:<44} {:>12} {:<4} {}",
            f.scenario, f.metric, value, f.unit, f.target
        );
    }
    println!();
}
