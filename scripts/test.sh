#!/usr/bin/env bash
# The test command (README, second command; .ci/run calls exactly this).
#
# Checks what the tests need and starts or installs only what is missing,
# builds once in release mode, and runs every test against that build:
# format, lints, unit tests, the interpreter and config suites, and the
# end-to-end tests that drive the real `sagaflow` binary (flash-sale demo,
# SIGKILL crash tests, dead-lettering, parking + operator retry, the Service
# Bus trigger against a real AMQP 1.0 broker, a broker restart mid-run).
#
# Servers: scripts/services.sh installs (only when missing) and starts
# Redis on 127.0.0.1:6379 (the Redis stock adapter suite), RabbitMQ with its
# AMQP 1.0 plugin on 127.0.0.1:5672 (the Service Bus tests) and a Temporal
# dev server on 127.0.0.1:7233 (the Temporal half of
# the scenario suite), and installs Debian's chromium and chromedriver (the
# dashboard's tests drive a real headless browser).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run scripts/test.sh again" >&2
  exit 1
fi

step "format (cargo fmt --check)"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  rustup component add rustfmt && cargo fmt --all -- --check
fi

step "lints (cargo clippy -D warnings)"
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy
fi
cargo clippy --release --locked --all-targets -- -D warnings

step "services (start what is missing)"
scripts/services.sh

# --all-targets: the tests' dev-dependencies switch features on (the Cosmos
# emulator); building every target here gives `cargo test` nothing to rebuild.
step "build (release, once)"
cargo build --release --locked --workspace --all-targets

step "deployment files (offline: hadolint, kubernetes-validate, KEDA's CRDs)"
scripts/check-deploy.sh

step "tests"
cargo test --release --locked --workspace
