#!/usr/bin/env bash
# Runs every test against real Postgres, Redis and SMTP: the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
# The process tests start every binary of the workspace (api, worker, migration); nextest
# builds only the ones whose crates have tests, so a fresh clone builds them all first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace "$@"
else
  echo "cargo-nextest not found; using cargo test (install it with: cargo install cargo-nextest --locked)"
  cargo test --workspace "$@"
fi
