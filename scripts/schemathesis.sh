#!/usr/bin/env bash
# Fuzzes the API against its own OpenAPI document with schemathesis, every check on
# (`--checks all`), and fails on any failure: the document must say what the server does.
#
# Starts the `api` binary (release build; SCHEMATHESIS_PROFILE=debug uses the debug one) in
# embedded mode on a free port with a fresh DATA_DIR and an admin account, signs up a
# customer, creates a product, a drop and a draw, then runs schemathesis for SCHEMATHESIS_MAX_TIME
# seconds (default 240) with the customer's token, and the admin's on /api/admin/.
# Needs schemathesis from `bash scripts/services.sh` (or SCHEMATHESIS=/path/to/schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${SCHEMATHESIS_PROFILE:-release}"
max_time="${SCHEMATHESIS_MAX_TIME:-240}"
st="${SCHEMATHESIS:-target/tools/schemathesis/bin/schemathesis}"
target_dir="${CARGO_TARGET_DIR:-target}"
say() { printf 'schemathesis.sh: %s\n' "$*"; }

[ -x "$st" ] || { say "$st not found: run bash scripts/services.sh"; exit 1; }
if [ "$profile" = release ]; then
  cargo build --release -p api --bin api
  api="$target_dir/release/api"
else
  # The same build as the test command's, so after it this links nothing new (`-p api`
  # alone unifies features differently and recompiles api, worker and tower-http).
  cargo build --workspace --bins
  api="$target_dir/debug/api"
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin_email="admin@schemathesis.test"
admin_password="schemathesis-admin-password"
metrics_token="schemathesis-metrics-token"
# With a secret the webhook is on (without one it answers every request 503 by design), so
# the fuzzer reaches its signature check.
webhook_secret="schemathesis-webhook-secret-0123456789abcdef"

# The fuzzer sends thousands of requests from one address and many failed logins: the auth
# rate limit, the login lockout and the notify-me limits (tested elsewhere) would turn most
# of its run into 429s.
env -i PATH="$PATH" HOME="${HOME:-/tmp}" RUST_LOG=warn \
  HOST=127.0.0.1 PORT="$port" DATA_DIR="$work/data" DEMO_DATA=false \
  ADMIN_EMAIL="$admin_email" ADMIN_PASSWORD="$admin_password" \
  AUTH_RATE_LIMIT_PER_MINUTE=1000000 LOGIN_MAX_FAILURES=1000000 \
  NOTIFY_ME_PER_ADDRESS_PER_HOUR=100000000 \
  SIGNUPS_PER_ADDRESS_PER_HOUR=1000000 HOLDS_PER_DROP_PER_ADDRESS=1000000 \
  ACCESS_TOKEN_TTL_SECS=3600 METRICS_TOKEN="$metrics_token" \
  CONTENTFUL_WEBHOOK_SECRET="$webhook_secret" \
  "$api" >"$work/api.log" 2>&1 &
api_pid=$!
cleanup() {
  kill "$api_pid" 2>/dev/null || true
  wait "$api_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { cat "$work/api.log"; say "the api did not start"; exit 1; }
  sleep 0.2
done

# POSTs JSON, prints the answer's field $3 (a dotted path).
post() {
  curl -fsS -X POST "$base$1" -H 'content-type: application/json' ${4:+-H "authorization: Bearer $4"} -d "$2" \
    | python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$3"
}
admin_token="$(post /api/auth/login "{\"email\": \"$admin_email\", \"password\": \"$admin_password\"}" accessToken)"
customer='{"email": "customer@schemathesis.test", "password": "customer-password"}'
customer_token="$(post /api/auth/signup "$customer" accessToken)"
# Signing out ends the session it is sent with: it gets a session of its own.
logout_token="$(post /api/auth/login "$customer" accessToken)"
post /api/admin/products '{"name": "Wildflower honey", "priceCents": 1200, "inStock": false, "stockQuantity": 0}' id "$admin_token" >/dev/null
post /api/admin/drops '{"name": "Comb honey", "priceCents": 2500, "totalStock": 50}' id "$admin_token" >/dev/null
# A draw taking entries for the whole run, so the entry and draw endpoints meet real data.
entries_close="$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(hours=2)).isoformat())')"
post /api/admin/drops "{\"name\": \"Raffle honey\", \"priceCents\": 4000, \"totalStock\": 5, \"mode\": \"draw\", \"entriesCloseAt\": \"$entries_close\"}" id "$admin_token" >/dev/null

cat >"$work/schemathesis.toml" <<EOF
headers = { Authorization = "Bearer $customer_token" }

[[operations]]
include-path-regex = "^/api/admin/"
headers = { Authorization = "Bearer $admin_token" }

[[operations]]
include-path = "/api/auth/logout"
headers = { Authorization = "Bearer $logout_token" }

[[operations]]
include-path = "/metrics"
headers = { Authorization = "Bearer $metrics_token" }

# A drop's endsAt must be after its startsAt (the one sent, or the drop's own in a PATCH),
# and a draw's entriesCloseAt between them: rules between fields, which OpenAPI 3.0 cannot
# state (the fields' descriptions do).
# A body that breaks it is schema-valid and rightly refused with 400 validation_failed.
[[operations]]
include-path-regex = "^/api/admin/drops"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]

# Answers that depend on what happened before, not on the request's shape, and that the
# document lists: a hold that has expired or was released is 410 (purchase, release), and an
# Idempotency-Key already used for another request is 422 (as the IETF Idempotency-Key draft
# says). The fuzzer reuses keys and ids across cases, so it meets both with valid requests.
[[operations]]
include-path-regex = '^/api/(drops/[{]reserveId[}]/purchase|reservations/[{]id[}])$'
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "422", "429"]
EOF

say "fuzzing $base for up to ${max_time}s"
# Run from the report directory: schemathesis keeps a cache in its working directory. One
# worker: with two threads, hypothesis on Python 3.11 now and then fails on its own with
# "AST constructor recursion depth mismatch" (CPython's ast is not thread-safe there).
out="$target_dir/schemathesis"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
st="$(cd "$(dirname "$st")" && pwd)/$(basename "$st")"
status=0
(cd "$out" && "$st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
  --checks all \
  --max-time "$max_time" \
  --workers 1 \
  --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
  --generation-database "$out/examples" \
  --report junit --report-dir "$out" \
  --no-color) || status=$?
if [ "$status" != 0 ]; then
  say "failures above; the api's log:"
  tail -n 50 "$work/api.log"
fi
exit "$status"
