#!/usr/bin/env bash
# Runs every test against real Postgres, Redis and SMTP: the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace "$@"
else
  echo "cargo-nextest not found; using cargo test (install it with: cargo install cargo-nextest --locked)"
  cargo test --workspace "$@"
fi
