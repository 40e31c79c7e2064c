#!/usr/bin/env bash
# The Redis stock adapter's benchmark: reservations per second through the
# adapter with 64 in flight, next to redis-benchmark running the same
# reserve script with EVALSHA (64 clients) in the same run. BENCHMARKS.md
# records the figures.
#
#   scripts/bench-stock.sh [RESERVATIONS]   # default 100000
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
scripts/services.sh redis
cargo build --release --locked -p sagaflow >&2
export SAGAFLOW_REDIS_URL="${SAGAFLOW_REDIS_URL:-redis://127.0.0.1:6379}"
target/release/sagaflow bench-stock --reservations "$n" --in-flight 64
