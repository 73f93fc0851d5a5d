//! The frontend contract, checked with the tools frontend developers use (npm, from
//! `tests/client/`, installed by `scripts/services.sh` with `npm ci`): the served OpenAPI and
//! AsyncAPI documents are the committed ones (`docs/`), pass Spectral, Redocly and the AsyncAPI
//! parser with nothing to report, and a TypeScript client generated from them compiles under
//! `tsc --strict` and buys a drop from a distributed store.
//!
//! After a deliberate change of the API, refresh the committed documents with
//! `UPDATE_CONTRACTS=1 cargo nextest run -p tests --test contract` and review their diff.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{path::PathBuf, process::Output};

use reqwest::StatusCode;
use serde_json::Value;
use tests::{Backend, TestApp, spawn_app};
use tokio::process::Command;

const DOCUMENTS: [(&str, &str); 2] = [
    ("/openapi.json", "openapi.json"),
    ("/asyncapi.json", "asyncapi.json"),
];

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("client")
}

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// An npm tool of `tests/client/`, run there.
fn tool(name: &str) -> Command {
    let bin = client_dir().join("node_modules/.bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/services.sh` (it runs `npm ci` in tests/client)",
        bin.display()
    );
    let mut command = Command::new(bin);
    command.current_dir(client_dir()).kill_on_drop(true);
    command
}

fn node(script: &str) -> Command {
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(client_dir())
        .kill_on_drop(true);
    command
}

/// Runs `command`, failing the test with its output unless it exits 0; returns its stdout.
async fn run(what: &str, command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): is Node.js installed?"));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        status.success(),
        "{what} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

/// The document the app serves at `path`, as committed: pretty JSON and a final newline.
async fn served(app: &TestApp, path: &str) -> String {
    let answer = app.get(path, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}");
    let mut text = serde_json::to_string_pretty(&answer.body).unwrap();
    text.push('\n');
    text
}

/// A unified diff of the committed document against the served one, for review.
fn diff(committed: &str, served: &str) -> String {
    similar::TextDiff::from_lines(committed, served)
        .unified_diff()
        .context_radius(3)
        .header("committed", "served")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_documents_are_the_committed_contracts() {
    let app = spawn_app(Backend::Embedded).await;
    let update = std::env::var("UPDATE_CONTRACTS").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (path, file) in DOCUMENTS {
        let served = served(&app, path).await;
        let committed_path = docs_dir().join(file);
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if served == committed {
            continue;
        }
        if update {
            std::fs::write(&committed_path, &served).unwrap();
            eprintln!("updated docs/{file}");
        } else {
            drifted.push(format!(
                "docs/{file} differs from {path} (- committed, + served):\n{}",
                diff(&committed, &served)
            ));
        }
    }
    assert!(
        drifted.is_empty(),
        "{}\nIf the change is meant, run `UPDATE_CONTRACTS=1 cargo nextest run -p tests --test contract` and commit docs/.",
        drifted.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_in_both_documents_are_one_definition() {
    let app = spawn_app(Backend::Embedded).await;
    let openapi = app.get("/openapi.json", None).await.body;
    let asyncapi = app.get("/asyncapi.json", None).await.body;
    let events = asyncapi["components"]["schemas"].as_object().unwrap();
    let shared: Vec<&String> = openapi["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| events.contains_key(*name))
        .collect();
    for name in ["ErrorBody", "ErrorCode"] {
        assert!(shared.contains(&&name.to_owned()), "{name} is not shared");
    }
    for name in shared {
        assert_eq!(
            events[name],
            api::live::asyncapi::json_schema(openapi["components"]["schemas"][name].clone()),
            "{name} differs between the documents"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_documents_pass_spectral_redocly_and_the_asyncapi_parser() {
    let app = spawn_app(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    for (path, file) in DOCUMENTS {
        std::fs::write(dir.path().join(file), served(&app, path).await).unwrap();
    }
    let openapi = dir.path().join("openapi.json");
    let spectral = run(
        "spectral lint",
        tool("spectral")
            .args([
                "lint",
                "--fail-severity",
                "hint",
                "--ruleset",
                ".spectral.yaml",
            ])
            .arg(&openapi),
    )
    .await;
    assert!(spectral.contains("No results"), "{spectral}");
    // Redocly exits 0 on warnings: read its totals. It reports usage and looks for updates
    // over the network unless told not to; a test sends nothing anywhere.
    let redocly = run(
        "redocly lint",
        tool("redocly")
            .args(["lint", "--config", "redocly.yaml", "--format", "json"])
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
            .arg(&openapi),
    )
    .await;
    let report: Value = serde_json::from_str(&redocly).unwrap_or_default();
    assert_eq!(
        report["totals"],
        serde_json::json!({"errors": 0, "warnings": 0, "ignored": 0}),
        "{redocly}"
    );
    let asyncapi = run(
        "validate-asyncapi.mjs",
        node("validate-asyncapi.mjs").arg(dir.path().join("asyncapi.json")),
    )
    .await;
    assert!(asyncapi.contains("0 not matching"), "{asyncapi}");
}

/// Writes the served documents to `tests/client/build/`, generates the client there and
/// compiles it with the scenario under `tsc --strict` (tsconfig.json).
async fn build_the_client(app: &TestApp) {
    let build = client_dir().join("build");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(build.join("generated")).unwrap();
    for (path, file) in DOCUMENTS {
        std::fs::write(build.join(file), served(app, path).await).unwrap();
    }
    run("npm run generate", &mut npm_run("generate")).await;
    let sdk = std::fs::read_to_string(build.join("generated/api/sdk.gen.ts")).unwrap();
    for function in ["signup", "listDrops", "reserveDrop", "purchaseReservation"] {
        assert!(
            sdk.contains(&format!("export const {function} =")),
            "the generated client has no {function}()"
        );
    }
    run("npm run build", &mut npm_run("build")).await;
    assert!(build.join("dist/scenario.js").is_file());
}

fn npm_run(script: &str) -> Command {
    let mut command = Command::new("npm");
    command
        .args(["run", "--silent", script])
        .current_dir(client_dir())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typescript_client_buys_a_drop_from_a_distributed_store() {
    let app = spawn_app(Backend::PostgresRedis).await;
    let admin = app.admin().await;
    let drop_id = app.create_drop(&admin, 3).await;
    let drop = app.get(&format!("/api/drops/{drop_id}"), None).await.body;
    let name = drop["name"].as_str().unwrap().to_owned();
    build_the_client(&app).await;

    let out = run(
        "the typed client scenario",
        node("build/dist/scenario.js").args([&app.address, &name]),
    )
    .await;
    let steps: Vec<Value> = out
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .map(|s| s["detail"].clone())
            .unwrap_or_else(|| panic!("no {name} step in:\n{out}"))
    };
    let done = step("done");
    assert_eq!(done["dropId"], drop_id, "{out}");
    let update = step("stock_update");
    assert_eq!(update["availableStock"], 2, "{out}");
    let bought = step("purchaseReservation");
    assert_eq!(bought["purchaseId"], bought["retriedId"], "{out}");

    // The store agrees: one unit sold, to the scenario's buyer, once.
    let after = app.get(&format!("/api/drops/{drop_id}"), None).await.body;
    assert_eq!(after["availableStock"], 2);
    assert_eq!(after["version"], update["version"]);
    let audit = app.audit(drop_id).await;
    assert_eq!(audit.purchases, 1, "{audit:?}");
}
