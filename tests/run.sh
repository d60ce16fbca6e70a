#!/usr/bin/env bash
# Herald's whole test suite, runnable on a fresh machine: installs and starts
# what the tests need (RabbitMQ, Chromium, the JavaScript test packages),
# then runs the Rust tests and the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_updated=""
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
install_debian() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root apt-get install -y -qq "$@" >/dev/null
}

step() { printf '\n== %s\n' "$*"; }

step "RabbitMQ"
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server from Debian's packages"
  install_debian rabbitmq-server
fi
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! rabbit_up; then
  echo "starting rabbitmq-server"
  as_root rabbitmq-server -detached || true
  for _ in $(seq 1 120); do rabbit_up && break; sleep 1; done
fi
rabbit_up || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
echo "RabbitMQ answers on 127.0.0.1:5672"

step "Chromium"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from Debian's packages"
  install_debian chromium
fi
chromium --version

step "nginx"
# tests/nginx.rs runs its own nginx on a free port with the deploy config;
# Debian's default site (port 80) is not needed.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx from Debian's packages"
  install_debian nginx
fi
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  echo "stopping Debian's default nginx service"
  as_root service nginx stop >/dev/null 2>&1 || as_root kill "$(cat /run/nginx.pid)" || true
fi
"$(command -v nginx || echo /usr/sbin/nginx)" -v

step "JavaScript test packages"
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

step "Rust tests (unit, integration, real binary)"
# The greeting example runs as a real service in its test; `--all-targets`
# alone builds examples only in test mode.
cargo build --examples
cargo test --workspace --all-targets

step "Browser and JavaScript-client tests"
cargo build --bin herald
# Where cargo put its builds (CARGO_TARGET_DIR may move them).
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
(cd tests/js && HERALD_BIN="$target_dir/debug/herald" npm test --silent)
