#!/usr/bin/env bash
# Makes sure the services the tests talk to are running: PostgreSQL on 127.0.0.1:5432
# (user postgres, trust auth) and Redis on 127.0.0.1:6379. Starts them where installed;
# on Debian as root, installs them first; otherwise says what to install. Also makes sure
# Python's aiosmtpd is importable: the catalog tests start it as their SMTP server; and that
# PgBouncer is installed (not running: tests/tests/pgbouncer.rs starts its own). The
# storefront's browser tests need Debian's chromium and puppeteer-core (npm ci in tests/browser),
# the Socket.IO tests run socket.io-client under Node (npm ci in tests/socketio), the
# frontend-contract tests run linters and a generated TypeScript client (npm ci in tests/client), and
# scripts/schemathesis.sh runs schemathesis from a venv under target/tools/.
set -euo pipefail

say() { printf 'services: %s\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }
can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_postgres() {
  if command -v pg_isready >/dev/null && postgres_up; then say "postgres is up"; return; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    if can_apt; then
      say "installing postgresql"
      apt_install postgresql
    else
      say "PostgreSQL is not installed: install it (Debian: apt-get install postgresql) and start it on 127.0.0.1:5432"
      exit 1
    fi
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  # Tests connect as postgres over TCP without a password: trust local connections.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if is_root && [ -f "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  say "starting postgres $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  for _ in $(seq 1 30); do postgres_up && { say "postgres is up"; return; }; sleep 1; done
  say "postgres did not come up on 127.0.0.1:5432"
  exit 1
}

ensure_redis() {
  if command -v redis-cli >/dev/null && redis_up; then say "redis is up"; return; fi
  if ! command -v redis-server >/dev/null; then
    if can_apt; then
      say "installing redis"
      apt_install redis-server
    else
      say "Redis is not installed: install it (Debian: apt-get install redis-server) and start it on 127.0.0.1:6379"
      exit 1
    fi
  fi
  say "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 30); do redis_up && { say "redis is up"; return; }; sleep 0.5; done
  say "redis did not come up on 127.0.0.1:6379"
  exit 1
}

ensure_aiosmtpd() {
  if command -v python3 >/dev/null && python3 -c 'import aiosmtpd' 2>/dev/null; then
    say "aiosmtpd is installed"; return
  fi
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    if can_apt; then
      say "installing python3 and pip"
      apt_install python3 python3-pip
    else
      say "python3 with pip is not installed: install it, then: python3 -m pip install aiosmtpd"
      exit 1
    fi
  fi
  say "installing aiosmtpd"
  # Debian marks its Python as externally managed; the test SMTP server is all we add.
  python3 -m pip install --quiet aiosmtpd 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages aiosmtpd
  python3 -c 'import aiosmtpd' || { say "aiosmtpd did not install"; exit 1; }
}

# The OpenAPI fuzzer of scripts/schemathesis.sh, in a venv of its own under target/ (ignored):
# it brings many Python packages, which should not land in a Python the system manages.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv
  venv="$(cd "$(dirname "$0")/.." && pwd)/target/tools/schemathesis"
  if [ -x "$venv/bin/schemathesis" ] \
    && "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    say "schemathesis is installed"; return
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if can_apt; then
      say "installing python3-venv"
      apt_install python3-venv
    else
      say "Python's venv module is not installed: install it (Debian: apt-get install python3-venv)"
      exit 1
    fi
  fi
  say "installing schemathesis $SCHEMATHESIS_VERSION (in target/tools/schemathesis)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  "$venv/bin/schemathesis" --version >/dev/null || { say "schemathesis did not install"; exit 1; }
}

# Debian's package starts a bouncer of its own on 6432 where a service manager runs; the
# test starts one on a free port with its own configuration, so the packaged one is stopped
# and kept from starting at boot.
ensure_pgbouncer() {
  if command -v pgbouncer >/dev/null 2>&1; then say "pgbouncer is installed"; return; fi
  if can_apt; then
    say "installing pgbouncer"
    apt_install pgbouncer
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
      systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/pgbouncer ]; then
      /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
    fi
  else
    say "PgBouncer is not installed: install it (Debian: apt-get install pgbouncer); the PgBouncer test starts its own"
    exit 1
  fi
  command -v pgbouncer >/dev/null 2>&1 || { say "pgbouncer did not install"; exit 1; }
}

ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then say "chromium is installed"; return; fi
  if can_apt; then
    say "installing chromium"
    apt_install chromium
  else
    say "Chromium is not installed: install it (Debian: apt-get install chromium); the storefront tests drive it headless"
    exit 1
  fi
  command -v chromium >/dev/null 2>&1 || { say "chromium did not install"; exit 1; }
}

ensure_browser_driver() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  if ! command -v npm >/dev/null 2>&1; then
    if can_apt; then
      say "installing nodejs and npm"
      apt_install nodejs npm
    else
      say "Node.js with npm is not installed: install it, then run npm ci in tests/browser"
      exit 1
    fi
  fi
  # npm records what it installed in node_modules/.package-lock.json; reinstall when the
  # lockfile is newer than that record.
  if [ -d "$dir/node_modules/puppeteer-core" ] \
    && [ ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    say "puppeteer-core is installed"; return
  fi
  say "installing puppeteer-core (npm ci in tests/browser)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

ensure_socketio_client() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/socketio"
  # npm ci records what it installed in node_modules/.package-lock.json.
  if [ -d "$dir/node_modules/socket.io-client" ] \
    && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    say "socket.io-client is installed"; return
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if can_apt; then
      say "installing nodejs and npm"
      apt_install nodejs npm
    else
      say "Node.js with npm is not installed: install it, then: (cd tests/socketio && npm ci)"
      exit 1
    fi
  fi
  say "installing socket.io-client (npm ci in tests/socketio)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) \
    || { say "npm ci in tests/socketio failed"; exit 1; }
}

# The frontend-contract tools of tests/tests/contract.rs (Spectral, Redocly, the AsyncAPI
# parser, @hey-api/openapi-ts, TypeScript, socket.io-client): npm ci in tests/client.
ensure_client_tools() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/client"
  if [ -d "$dir/node_modules/@hey-api/openapi-ts" ] \
    && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    say "frontend contract tools are installed"; return
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if can_apt; then
      say "installing nodejs and npm"
      apt_install nodejs npm
    else
      say "Node.js (20.19 or newer) with npm is not installed: install it, then: (cd tests/client && npm ci)"
      exit 1
    fi
  fi
  say "installing the frontend contract tools (npm ci in tests/client)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) \
    || { say "npm ci in tests/client failed"; exit 1; }
}

ensure_postgres
ensure_redis
ensure_aiosmtpd
ensure_pgbouncer
ensure_schemathesis
ensure_chromium
ensure_browser_driver
ensure_socketio_client
ensure_client_tools
